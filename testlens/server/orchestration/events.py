"""The event log of builds: every live event of a run, appended in order, the one source the
streams read (docs/orchestration.md, "Live events").

An event is appended in the transaction that caused it (a claim, an upload, a cancel), with
the build's next sequence number, taken by ``UPDATE builds SET event_seq = event_seq + n``:
the row lock it takes orders the events of one build, and a rolled-back transaction leaves
no gap. Once that transaction commits, the processes that serve streams are told which
build moved (:mod:`.live`); they read the log from where each subscriber stands, so a
notification that is lost or merged with another loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session

from ...core.identity import TestKey, class_path
from ...core.model import TestCase as ReportedTest
from ..models import Build, RunEvent

EventType = Literal["run:start", "test:start", "test:batch", "run:end"]
RESULTS_PER_EVENT = 500
"""Results one ``test:batch`` event holds at most: a large upload becomes several events, so
that no message is megabytes long."""
PAGE = 500
"""Events one read of the log returns at most."""

_PENDING = "testlens_events"  # session.info key: builds with new events, for after commit


@dataclass(frozen=True, slots=True)
class Moved:
    """A build whose log grew: what the processes serving streams are told."""

    tenant_id: str
    build_id: str
    seq: int


CommitListener = Callable[[Sequence[Moved]], None]
_listeners: list[CommitListener] = []


def on_commit(listener: CommitListener) -> None:
    """Call ``listener(moved)`` after every commit that appended events (in that thread)."""
    if listener not in _listeners:
        _listeners.append(listener)


def off_commit(listener: CommitListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def _committed(session: Session) -> None:
    moved = session.info.pop(_PENDING, None)
    if moved:
        for listener in list(_listeners):
            listener(list(moved.values()))


def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def append(
    session: Session,
    tenant_id: str,
    build_id: str,
    events: Sequence[tuple[EventType, dict[str, Any]]],
    now: datetime,
) -> int:
    """Append ``events`` to the build's log; the sequence number of the last one."""
    if not events:
        return 0
    last = session.execute(
        update(Build)
        .where(Build.id == build_id)
        .values(event_seq=Build.event_seq + len(events))
        .returning(Build.event_seq)
    ).scalar_one()
    first = last - len(events) + 1
    session.execute(
        insert(RunEvent),
        [
            {
                "tenant_id": tenant_id,
                "build_id": build_id,
                "seq": first + index,
                "type": kind,
                "payload": json.dumps(payload, separators=(",", ":")),
                "at": now,
            }
            for index, (kind, payload) in enumerate(events)
        ],
    )
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = {}
        event.listen(session, "after_commit", _committed, once=True)
        event.listen(session, "after_rollback", _rolled_back, once=True)
    pending[build_id] = Moved(tenant_id, build_id, last)
    return last


@dataclass(frozen=True, slots=True)
class Logged:
    id: int
    build_id: str
    seq: int
    type: str
    payload: str


def read(
    session: Session,
    tenant_id: str,
    *,
    build_id: str | None,
    after: int,
    limit: int = PAGE,
) -> list[Logged]:
    """The log after ``after``: one build's events after its sequence number ``after``, or
    (``build_id`` None) all of the tenant's after the event id ``after``."""
    query = select(RunEvent.id, RunEvent.build_id, RunEvent.seq, RunEvent.type, RunEvent.payload)
    if build_id is not None:
        query = query.where(RunEvent.build_id == build_id, RunEvent.seq > after).order_by(
            RunEvent.seq
        )
    else:
        query = query.where(RunEvent.tenant_id == tenant_id, RunEvent.id > after).order_by(
            RunEvent.id
        )
    return [Logged(*row) for row in session.execute(query.limit(limit))]


def newest_id(session: Session, tenant_id: str) -> int:
    """The id of the tenant's newest event (0: none), where a tenant-wide stream starts."""
    found = session.scalar(
        select(RunEvent.id)
        .where(RunEvent.tenant_id == tenant_id)
        .order_by(RunEvent.id.desc())
        .limit(1)
    )
    return found or 0


def shown_name(key: TestKey) -> tuple[str, str]:
    """``(testFile, testName)`` of a test as the Shifty dialect shows it."""
    return key.location, "::".join(part for part in (class_path(key), key.name) if part)


def result_payload(test_id: str, key: TestKey, test: ReportedTest) -> dict[str, Any]:
    """A result as ``GET /api/v1/runs/{runId}`` lists it, from an uploaded test."""
    status = test.status
    file, name = shown_name(key)
    return {
        "id": test_id,
        "testFile": file,
        "testName": name,
        "status": "failed" if status == "error" else status,
        "durationMs": test.attempts[-1].duration_ms if test.attempts else 0.0,
        "retryCount": max(0, len(test.attempts) - 1),
        "healingAttempted": False,
        "traceUrl": None,
    }


def test_batches(
    build_id: str, results: Sequence[dict[str, Any]]
) -> list[tuple[EventType, dict[str, Any]]]:
    """``test:batch`` events of ``results``, at most :data:`RESULTS_PER_EVENT` each."""
    return [
        (
            "test:batch",
            {"runId": build_id, "results": list(results[start : start + RESULTS_PER_EVENT])},
        )
        for start in range(0, len(results), RESULTS_PER_EVENT)
    ]
