"""The event log of builds: every live event of a run, appended in order, the one source the
streams read (docs/orchestration.md, "Live events").

An event is appended in the transaction that caused it (a claim, an upload, a cancel), with
the build's next sequence number, taken by ``UPDATE builds SET event_seq = event_seq + n``:
the row lock it takes orders the events of one build, and a rolled-back transaction leaves
no gap. Just before that transaction commits, its events also get the tenant's next
positions (``tenant_seq``, from ``UPDATE tenants SET event_seq = ...``): that row lock, the
transaction's last, is held until the commit, so positions follow the order in which the
transactions of a tenant commit. A tenant-wide stream reads by them and so never passes over
an event that commits after a later one was read, as it could by ids, which are handed out
at insert. Once the transaction commits, the processes that serve streams are told which
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
from ..models import Build, RunEvent, Tenant

EventType = Literal["run:start", "test:start", "test:batch", "run:end"]
RESULTS_PER_EVENT = 500
"""Results one ``test:batch`` event holds at most: a large upload becomes several events, so
that no message is megabytes long."""
PAGE = 500
"""Events one read of the log returns at most."""

_PENDING = "testlens_events"  # session.info key: builds with new events, for after commit
_APPENDED = "testlens_appended"  # session.info key: (tenant, build, first seq, last seq)


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
    session.info.pop(_APPENDED, None)


def _number(session: Session) -> None:
    """Give the transaction's events their tenants' next positions, in the order they were
    appended: the last statements before the commit (see the module's docstring)."""
    appended: list[tuple[str, str, int, int]] = session.info.pop(_APPENDED, [])
    tenants = dict.fromkeys(tenant_id for tenant_id, *_rest in appended)
    for tenant_id in tenants:
        mine = [
            (build, first, last) for tenant, build, first, last in appended if tenant == tenant_id
        ]
        count = sum(last - first + 1 for _build, first, last in mine)
        position = (
            session.execute(
                update(Tenant)
                .where(Tenant.id == tenant_id)
                .values(event_seq=Tenant.event_seq + count)
                .returning(Tenant.event_seq)
            ).scalar_one()
            - count
        )
        for build_id, first, last in mine:
            session.execute(
                update(RunEvent)
                .where(RunEvent.build_id == build_id, RunEvent.seq.between(first, last))
                .values(tenant_seq=RunEvent.seq - first + position + 1)
            )
            position += last - first + 1


def append(
    session: Session,
    tenant_id: str,
    build_id: str,
    events: Sequence[tuple[EventType, dict[str, Any]]],
    now: datetime,
) -> int:
    """Append ``events`` to the build's log; the sequence number of the last one. The
    build counts as active: a run that is publishing is not idle."""
    if not events:
        return 0
    last = session.execute(
        update(Build)
        .where(Build.id == build_id)
        .values(event_seq=Build.event_seq + len(events), active_at=now)
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
        session.info[_APPENDED] = []
        event.listen(session, "before_commit", _number, once=True)
        event.listen(session, "after_commit", _committed, once=True)
        event.listen(session, "after_rollback", _rolled_back, once=True)
    pending[build_id] = Moved(tenant_id, build_id, last)
    session.info[_APPENDED].append((tenant_id, build_id, first, last))
    return last


@dataclass(frozen=True, slots=True)
class Logged:
    tenant_seq: int
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
    (``build_id`` None) all of the tenant's after the position ``after``."""
    query = select(
        RunEvent.tenant_seq, RunEvent.build_id, RunEvent.seq, RunEvent.type, RunEvent.payload
    )
    if build_id is not None:
        query = query.where(RunEvent.build_id == build_id, RunEvent.seq > after).order_by(
            RunEvent.seq
        )
    else:
        query = query.where(RunEvent.tenant_id == tenant_id, RunEvent.tenant_seq > after).order_by(
            RunEvent.tenant_seq
        )
    # Committed events have their position (given just before their commit).
    return [
        Logged(position or 0, build, seq, kind, payload)
        for position, build, seq, kind, payload in session.execute(query.limit(limit))
    ]


def newest_id(session: Session, tenant_id: str) -> int:
    """The position of the tenant's newest event (0: none), where a tenant-wide stream
    starts."""
    return session.scalar(select(Tenant.event_seq).where(Tenant.id == tenant_id)) or 0


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
