"""Placeholder until the javascript parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
