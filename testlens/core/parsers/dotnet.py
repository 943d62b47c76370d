"""Placeholder until the dotnet parser lands."""

from __future__ import annotations

FORMATS: tuple = ()
