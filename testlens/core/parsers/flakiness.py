"""Placeholder until the flakiness parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
