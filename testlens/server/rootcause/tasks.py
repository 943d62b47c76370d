"""The root-cause analyser: in every server process, recomputes the root cause of tests
that new failures arrived for, a batch at a time. Several processes may pick the same test;
the second analysis only repeats the first's answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from ..database import DATABASE_DOWN, Database
from ..workers import Outage, Worker, running
from .service import AfterStore, Explainer, analyze_due

log = logging.getLogger("testlens.server.rootcause")

POLL_SECONDS = 2.0
"""How often the analyser looks for tests whose analysis is due, when it found none."""
BATCH = 50
_FIRST_RETRY = 1.0


class Analyser(Worker):
    name = "testlens-rootcause"

    def __init__(
        self,
        database: Database,
        explain: Explainer | None,
        after_store: AfterStore | None = None,
    ) -> None:
        super().__init__()
        self._database = database
        self._explain = explain
        self._after_store = after_store

    def _run(self, stop: threading.Event) -> None:
        outage = Outage(log, "root-cause analysis", _FIRST_RETRY)
        while not stop.is_set():
            try:
                done = analyze_due(self._database, BATCH, self._explain, self._after_store)
            except DATABASE_DOWN as exc:
                stop.wait(outage.failed(exc))
                continue
            except Exception:  # a bug: logged, and tried again at the next poll
                log.exception("root-cause analysis failed")
                done = 0
            else:
                outage.answered()
            if done < BATCH:
                stop.wait(POLL_SECONDS)


@contextmanager
def analyser(app: FastAPI) -> Iterator[Analyser]:
    """Run an :class:`Analyser` while ``app`` serves (the app's lifespan enters this); it
    offers each analysed test a fix pull request when ``app`` opens them."""
    model = app.state.language_model
    explain = None if model is None else model.explain
    pull_requests = app.state.fix_pull_requests
    after_store = None if pull_requests is None else pull_requests.consider
    with running(Analyser(app.state.database, explain, after_store)) as worker:
        yield worker
