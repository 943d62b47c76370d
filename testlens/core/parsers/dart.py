"""Placeholder until the dart parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
