"""Computing a Durations API job: the uploaded report, each test filled with the predicted
duration of its next run in each of the report's environments.

A claimed job is computed on a thread of the process that claimed it; a process that dies
mid-way leaves the job ``computing``, and it is claimed again once stale (see
:mod:`.jobs`).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import brotli

from ...core.durations import Estimate
from ...core.identity import TestKey
from ...core.parsers.flakiness_io import read_report
from ..database import Database
from ..scoping import repo_id_named
from . import queries
from .service import history, predictions

log = logging.getLogger(__name__)

RESULT_QUALITY = 5
"""Brotli quality of results: 11 costs seconds on a large report for a few percent of size."""


def start(database: Database, job_id: str) -> None:
    threading.Thread(
        target=compute, args=(database, job_id), name=f"durations-{job_id}", daemon=True
    ).start()


def compute(database: Database, job_id: str) -> None:
    """Compute and store a claimed job's result; a failure is recorded for submit to retry."""
    try:
        values: dict[str, Any] = {
            "result": fill(database, job_id),
            "status": "ready",
            "error": None,
        }
    except Exception as exc:  # recorded on the job: the client polls, nobody else would see it
        log.exception("durations job %s failed", job_id)
        values = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    with database.transaction() as session:
        queries.finish_job(session, job_id, values)


def fill(database: Database, job_id: str) -> bytes:
    """The job's report with one attempt per environment where a test has history, carrying
    the predicted p50 (the figure sharding balances on); other tests keep no attempts.

    Report environments map to testlens environments by name, or all to ``""`` when that is
    the only environment the repository has.
    """
    with database.transaction() as session:
        tenant_id, project, report = queries.job_report(session, job_id)
    document, tests = read_report(brotli.decompress(report))
    keys = [TestKey(*case.identity) for _, case in tests]
    names = [environment["name"] for environment in document["environments"]]
    with database.transaction() as session:
        repo_id = repo_id_named(session, tenant_id, project or document["flakinessProject"])
    measured: dict[str, dict[TestKey, Estimate]] = {}
    for name in dict.fromkeys(names):  # one history in memory at a time
        with database.transaction() as session:
            _, known = history(session, repo_id, name)
        measured[name] = {
            key: found
            for key, found in predictions(known, keys).items()
            if found.source == "history"
        }
    for (test, _case), key in zip(tests, keys, strict=True):
        test["attempts"] = [
            {"environmentIdx": index, "duration": measured[name][key].p50_ms}
            for index, name in enumerate(names)
            if key in measured[name]
        ]
    return brotli.compress(
        json.dumps(document, separators=(",", ":")).encode(),
        mode=brotli.MODE_TEXT,
        quality=RESULT_QUALITY,
    )
