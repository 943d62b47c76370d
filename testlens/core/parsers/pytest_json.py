"""pytest-json-report: one entry per node id with ``setup``/``call``/``teardown`` phases.

A test's duration is the sum of its phases, as pytest-split stores it.
Outcomes: a failed setup or teardown is an ``error`` (the test body did not fail); ``xfailed``
(failed as expected) and ``xpassed`` (non-strict xfail that passed) both count as passed.

Reruns (pytest-rerunfailures): the plugin keys entries by node id and overwrites the phases on
every run, so a test that failed and then passed on a rerun ends with outcome ``rerun`` and
the phases of its final run; the failed runs leave no details, not even their number. Such an
entry becomes one failed attempt without details followed by the final attempt, which keeps
the flakiness visible. A ``rerun`` entry whose phases show a failure is itself the failed run.
A test that failed on every rerun ends with outcome ``failed`` and its reruns cannot be seen.

A module that fails to import appears only among ``collectors``; it becomes an errored test
named after the collector, as pytest's own JUnit XML does, so a broken file is never silent.

Speed: each entry's phases are walked once for all that is read from them, and output is
joined only when a phase has some, as most have none; a report holds tens of thousands of
entries, and a generator per thing read cost more than ``json.loads`` spent on the entry.
"""

from __future__ import annotations

import ast
from typing import Any

from ..model import Attempt, AttemptStatus, ReportError, TestCase, truncate_output
from . import Format

_PHASES = ("setup", "call", "teardown")
_OUTCOMES: dict[str, AttemptStatus] = {
    "passed": "passed",
    "failed": "failed",
    "error": "error",
    "skipped": "skipped",
    "xfailed": "passed",
    "xpassed": "passed",
}
_UNRECORDED_RERUN = "failed and was rerun; pytest-json-report keeps only the final run's details"


def _matches(document: Any) -> bool:
    return isinstance(document, dict) and {"exitcode", "root", "summary"} <= document.keys()


def _parse(document: dict[str, Any]) -> list[TestCase]:
    if "tests" not in document:
        raise ReportError(
            "the pytest-json report has no 'tests': it was written with "
            "--json-report-summary, which keeps only the counts"
        )
    tests = [_test(entry) for entry in document["tests"]]
    tests.extend(
        _collection_error(collector)
        for collector in document.get("collectors") or ()
        if collector.get("outcome") == "failed"
    )
    return tests


def _test(entry: dict[str, Any]) -> TestCase:
    file, classname, name = _split_nodeid(entry["nodeid"])
    phases: dict[str, dict[str, Any]] = {}
    detail = None  # the phase that explains the outcome: a failure, a skip, an xfail's failure
    for when in _PHASES:
        phase = entry.get(when)
        if isinstance(phase, dict):
            phases[when] = phase
            if detail is None and phase.get("outcome") != "passed":
                detail = phase
    outcome = entry["outcome"]
    final = _final_attempt(outcome, phases, {} if detail is None else detail)
    if outcome == "rerun" and not final.is_failure:
        rerun = Attempt(status="failed", message=_UNRECORDED_RERUN)
        return TestCase(name, classname, "", file, [rerun, final])
    return TestCase(name, classname, "", file, [final])


def _split_nodeid(nodeid: str) -> tuple[str, str, str]:
    """(file, classname, name) from ``path::Class::Inner::test[params]``.

    Only the part before the parameters is split: ``test[a::b]`` is one name.
    """
    base, bracket, params = nodeid.partition("[")
    scopes = base.split("::")
    if len(scopes) == 1:  # an item that is a whole file (some plugins' checks)
        return base, "", nodeid
    return scopes[0], ".".join(scopes[1:-1]), scopes[-1] + bracket + params


def _final_attempt(
    outcome: str, phases: dict[str, dict[str, Any]], detail: dict[str, Any]
) -> Attempt:
    status = _OUTCOMES.get(outcome) or _status_from_phases(phases)
    crash = detail.get("crash") or {}
    traceback = detail.get("traceback") or []
    longrepr = detail.get("longrepr")
    skip_reason = _skip_reason(longrepr)
    seconds: float = 0  # an int, where sum() starts: integer durations still add up to one
    printed = False  # whether any phase has output: most have none
    for phase in phases.values():
        seconds = seconds + (phase.get("duration") or 0.0)
        printed = printed or bool(phase.get("stdout") or phase.get("stderr"))
    return Attempt(
        status,
        seconds * 1000,
        crash.get("message") or skip_reason,
        traceback[-1].get("message") if traceback else None,
        None if skip_reason else longrepr,
        _output(phases, "stdout") if printed else None,
        _output(phases, "stderr") if printed else None,
    )


def _status_from_phases(phases: dict[str, dict[str, Any]]) -> AttemptStatus:
    """Status of a run judged from its phases, for outcomes (``rerun``) that do not say it."""
    for when, phase in phases.items():
        if phase.get("outcome") == "failed":
            return "failed" if when == "call" else "error"
        if phase.get("outcome") == "skipped":
            return "skipped"
    return "passed"


def _skip_reason(longrepr: Any) -> str | None:
    """The reason in a skip's longrepr, which pytest writes as ``(path, line, reason)``."""
    if not isinstance(longrepr, str) or not longrepr.startswith("("):
        return None
    try:
        value = ast.literal_eval(longrepr)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[2], str):
        return value[2]
    return None


def _output(phases: dict[str, dict[str, Any]], stream: str) -> str | None:
    return truncate_output("".join(phase.get(stream) or "" for phase in phases.values()))


def _collection_error(collector: dict[str, Any]) -> TestCase:
    nodeid = collector["nodeid"] or "(session)"
    longrepr = collector.get("longrepr") or ""
    first_line = next((line for line in longrepr.splitlines() if line.strip()), None)
    return TestCase(
        name=nodeid,
        file=nodeid.partition("::")[0],
        attempts=[
            Attempt(
                status="error", message=first_line or "collection failed", stack=longrepr or None
            )
        ],
    )


FORMATS = (Format("pytest-json", "json", _matches, _parse),)
