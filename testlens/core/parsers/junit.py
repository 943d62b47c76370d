"""Placeholder until the junit parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
