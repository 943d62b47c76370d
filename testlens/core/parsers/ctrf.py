"""Placeholder until the ctrf parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
