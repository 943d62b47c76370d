"""``dart test --reporter json`` (also ``flutter test --machine``) events.

A test's ``name`` repeats its group names (``"Group Inner test"``), and each group's name
repeats its parent's; the suite becomes the path of the groups' own names joined by " > ",
and the name the part after the innermost group. The file is the suite's path and the
environment its platform (``vm``, ``chrome``), so one test run on two platforms is one test
with an attempt per platform.

``hidden`` tests are the runner's own (loading a file, ``setUpAll``/``tearDownAll``): they
only count when they fail, since a file that does not compile runs no test. An ``error``
event can arrive after ``testDone`` ("failed after it had already completed"), so a test that
reported success but has errors failed. A test cut short by the runner's timeout, or never
finished because the run was killed, is an ``error`` with ``censored`` set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import Attempt, AttemptStatus, TestCase, truncate_output
from . import Format

_RESULTS: dict[str, AttemptStatus] = {"success": "passed", "failure": "failed", "error": "error"}
_RUNNER_TIMEOUT = "Test timed out after"


def _matches(document: Any) -> bool:
    return (
        isinstance(document, list)
        and all(isinstance(event, dict) and "type" in event for event in document)
        and any(
            (event["type"] == "start" and "protocolVersion" in event)
            or (event["type"] == "testStart" and isinstance(event.get("test"), dict))
            for event in document
        )
    )


@dataclass(slots=True)
class _Started:
    """Everything the events say about one test, gathered until the stream ends."""

    test: dict[str, Any]
    time: float
    prints: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None


def _parse(events: list[dict[str, Any]]) -> list[TestCase]:
    suites: dict[int, dict[str, Any]] = {}
    groups: dict[int, str] = {}
    started: dict[int, _Started] = {}
    end = 0.0
    for event in events:
        kind = event["type"]
        end = max(end, event.get("time") or 0.0)
        if kind == "suite":
            suites[event["suite"]["id"]] = event["suite"]
        elif kind == "group":
            groups[event["group"]["id"]] = event["group"].get("name") or ""
        elif kind == "testStart":
            started[event["test"]["id"]] = _Started(event["test"], event.get("time") or 0.0)
        elif (test := started.get(event.get("testID", -1))) is not None:
            if kind == "print":
                test.prints.append(event.get("message") or "")
            elif kind == "error":
                test.errors.append(event)
            elif kind == "testDone":
                test.done = event
    cases = (_case(test, suites, groups, end) for test in started.values())
    return [case for case in cases if case is not None]


def _case(
    started: _Started, suites: dict[int, dict[str, Any]], groups: dict[int, str], end: float
) -> TestCase | None:
    attempt = _attempt(started, end)
    if started.done is not None and started.done.get("hidden") and not attempt.is_failure:
        return None
    suite, name = _names(started.test.get("name") or "", started.test.get("groupIDs") or [], groups)
    suite_info = suites.get(started.test.get("suiteID", -1), {})
    attempt.environment = suite_info.get("platform")
    return TestCase(
        name=name,
        suite=suite,
        file=(suite_info.get("path") or "").replace("\\", "/"),
        attempts=[attempt],
    )


def _attempt(started: _Started, end: float) -> Attempt:
    first_error = started.errors[0] if started.errors else {}
    message = first_error.get("error")
    done = started.done
    if done is None:
        status: AttemptStatus = "error"
        finished = end
    elif done.get("skipped"):
        status = "skipped"
        message = (started.test.get("metadata") or {}).get("skipReason")
        finished = done.get("time") or started.time
    else:
        status = _RESULTS[done["result"]]
        if status == "passed" and started.errors:  # errors reported after completion
            status = "failed" if any(e.get("isFailure") for e in started.errors) else "error"
        finished = done.get("time") or started.time
    return Attempt(
        status=status,
        duration_ms=max(finished - started.time, 0.0),
        message=message or ("the test never finished" if done is None else None),
        stack=first_error.get("stackTrace") or None,
        stdout=truncate_output("\n".join(started.prints)),
        censored=done is None or (status == "error" and _RUNNER_TIMEOUT in (message or "")),
    )


def _names(full: str, group_ids: list[int], groups: dict[int, str]) -> tuple[str, str]:
    """(suite path, test name) from names that each repeat their parent group's name."""
    path: list[str] = []
    prefix = ""
    for group_id in group_ids:
        group = groups.get(group_id, "")
        if group:
            path.append(_strip_prefix(group, prefix))
            prefix = group
    return " > ".join(path), _strip_prefix(full, prefix)


def _strip_prefix(name: str, prefix: str) -> str:
    if prefix and name.startswith(prefix + " "):
        return name[len(prefix) + 1 :]
    return name


FORMATS = (Format("dart", "ndjson", _matches, _parse),)
