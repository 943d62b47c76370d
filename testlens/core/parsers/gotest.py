"""Placeholder until the gotest parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
