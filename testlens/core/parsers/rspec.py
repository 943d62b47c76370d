"""Placeholder until the rspec parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
