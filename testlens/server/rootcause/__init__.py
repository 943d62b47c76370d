"""Failure signatures, stored at ingest, and each failing test's root cause, recomputed in
the background from its history when new failures arrive (docs/root-causes.md)."""
