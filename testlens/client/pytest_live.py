"""Live events of a pytest session: ``test:start`` as each test starts and, once its last
attempt is done, its result (``test:batch`` marked ``live``), published to a run so that
people watching it see the tests as they run rather than when the report is uploaded.

Queue mode publishes to its orchestrated run. A plain ``--testlens`` run first opens a run
of plain uploads (``POST /api/v1/runs``, the CI run's own when the CI names one, so that
every machine of it shares the run), publishes to it, and names it in its upload, which then
joins that run. Publishing is a courtesy to watchers: it never fails, stops or slows the
tests (see :class:`~.queue_api.LivePublisher`); the upload is what counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from ..core.identity import TestKey
from ..core.model import Attempt, AttemptStatus, TestCase
from .http import Budget, Client
from .queue_api import LivePublisher, shown_name
from .sharding import CLIENT_OPTIONS, ServerTarget, describe_failure

OPEN_SECONDS = 5.0
"""Seconds opening a plain run's live view may take at most: the tests wait for it."""


class LiveTests:
    """Publishes the tests of a session to one run (:attr:`run_id`) as they run."""

    def __init__(self, publisher: LivePublisher, run_id: str) -> None:
        self.run_id = run_id
        self._publisher = publisher

    def started(self, nodeid: str) -> None:
        file, name = shown_name(nodeid)
        self._publisher.publish("test:start", {"testFile": file, "testName": name})

    def finished(self, nodeid: str, attempts: Sequence[tuple[str, float]]) -> None:
        """Publish the result of a test from its attempts' ``(status, seconds)``."""
        if attempts:
            self._publisher.publish(
                "test:batch", {"results": [live_result(nodeid, attempts)], "live": True}
            )

    def flush(self) -> None:
        """Let what was published go out before an upload's authoritative results."""
        self._publisher.flush()


@contextmanager
def publishing(
    url: str, token: str | None, run_id: str, warnings: list[str]
) -> Iterator[LiveTests]:
    """Publish to ``run_id`` while the block runs; a warning in ``warnings`` at the end when
    some events were not published (a server without the endpoint, or too slow for them)."""
    failures: list[Exception] = []
    with LivePublisher(url, token, run_id, on_failure=failures.append) as publisher:
        yield LiveTests(publisher, run_id)
    if publisher.dropped:
        why = describe_failure(failures[0], url) if failures else "too many"
        warnings.append(
            f"{publisher.dropped} live events not published ({why}): watchers saw these "
            "results only once they were uploaded"
        )


def open_run(
    target: ServerTarget, total_tests: int | None, shard: tuple[int, int] | None, budget: Budget
) -> str:
    """Open the run a plain session publishes to and uploads into (``POST /api/v1/runs``);
    its id. The time it takes, at most :data:`OPEN_SECONDS`, comes out of the session's
    ``budget`` for the server. Raises as the server fails or is out of reach."""
    body: dict[str, Any] = {"project": target.repo, "environment": target.environment}
    if target.workflow_run_id:
        body["ciBuildId"] = target.workflow_run_id
    if total_tests is not None:
        body["totalTests"] = total_tests
        if shard is not None:
            body["shardIndex"], body["totalShards"] = shard
    options = {**CLIENT_OPTIONS, "attempts": 1, "timeout": min(OPEN_SECONDS, budget.remaining())}
    with Client(target.url, target.token, budget=budget, **options) as client:
        answer = client.request("POST", "/api/v1/runs", json=body)
    return str(answer.json()["runId"])


def live_result(nodeid: str, attempts: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """A test's result as ``GET /api/v1/runs/{runId}`` lists it, from its attempts'
    ``(status, seconds)``: combined as the server combines an upload's attempts, so that the
    live result and the uploaded one agree."""
    key = TestKey.from_nodeid(nodeid)
    test = TestCase(
        key.name,
        key.classname,
        file=key.file,
        attempts=[
            Attempt(cast(AttemptStatus, status), seconds * 1000) for status, seconds in attempts
        ],
    )
    file, name = shown_name(nodeid)
    status = test.status
    return {
        "id": nodeid,
        "testFile": file,
        "testName": name,
        "status": "failed" if status == "error" else status,
        "durationMs": test.attempts[-1].duration_ms,
        "retryCount": len(test.attempts) - 1,
        "healingAttempted": False,
        "traceUrl": None,
    }
