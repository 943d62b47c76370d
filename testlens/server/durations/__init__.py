"""Predicted test durations over HTTP: a listing, and the Flakiness.io Durations API.

Every answer is computed from the duration history that ingest keeps per (test, environment)
in ``test_states``, with identities from ``test_cases``; the results table is never read, so
answering costs the same after a year of runs as after the first one (:mod:`.service`).
The Durations API's jobs are in :mod:`.jobs`, their computation in :mod:`.tasks`.
"""
