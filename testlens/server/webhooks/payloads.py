"""The events testlens announces, and their payloads in the seed dialect.

``new_flaky_test`` when a test turns flaky (from healthy or broken), ``resolved_flaky_test``
when a flaky test resolves. One event per test and kind, whatever the number of environments
whose state changed in the same run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from ...core import flakiness as detection
from ...core.model import TestCase
from ..models import iso
from .outbox import enqueue


class StateChange(Protocol):
    """A test's transition in a run, and its state after it."""

    @property
    def test_id(self) -> str: ...
    @property
    def state(self) -> detection.TestState: ...
    @property
    def transition(self) -> detection.Transition: ...


def _event(transition: detection.Transition) -> str | None:
    moved = (transition.from_state, transition.to_state)
    if moved[1] == "flaky" and moved[0] in ("healthy", "broken"):
        return "new_flaky_test"
    if moved == ("flaky", "healthy"):
        return "resolved_flaky_test"
    return None


def queue_flaky_events(
    session: Session,
    tenant_id: str,
    repo_name: str,
    suite: dict[str, str],
    commit: str | None,
    changes: Iterable[StateChange],
    tests: Mapping[str, TestCase],
    now: datetime,
) -> int:
    """Queue the events of a run's state changes; return how many deliveries were queued."""
    org, _, name = repo_name.partition("/")
    sent: set[tuple[str, str]] = set()
    queued = 0
    for change in changes:
        event = _event(change.transition)
        if event is None or (change.test_id, event) in sent:
            continue
        sent.add((change.test_id, event))
        test, state = tests[change.test_id], change.state
        payload: dict[str, Any] = {
            "action": event,
            "repository": {"name": name, "org": org},
            "test_suite": suite,
            "test_case": {
                "name": test.name,
                "class_name": test.classname or test.suite,
                "first_occurrence": iso(state.first_flaky_at),
                "last_occurrence": iso(state.last_flaky_at),
                "last_24_hours_count": detection.last_24_hours_count(state, now),
            },
        }
        if event == "new_flaky_test":
            payload["commit_sha"] = commit
        queued += enqueue(session, tenant_id, event, payload)
    return queued
