"""Placeholder until the pytest_json parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
