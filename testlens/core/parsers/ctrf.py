"""Common Test Report Format (CTRF): ``results.tests[]``, retries in ``retryAttempts[]``.

What is checked is what this parser reads: ``results``, ``tests``, each test's ``name``,
``status`` and ``duration``, and the types of the optional fields it uses. The schema's other
rules (``additionalProperties: false``, ``specVersion`` pattern, summary fields, ids) are not
enforced: a report that breaks them is still read the same way, and producers in the wild add
fields and omit ``reportFormat``/``specVersion`` (older reporters wrote only ``results``).

Status mapping: ``pending`` is a test that did not run, so it is ``skipped``. ``other`` is what
producers write for a runner status CTRF has no word for; jest-ctrf-json-reporter uses it for
``todo``/``disabled`` tests, which never ran, so a plain ``other`` is ``skipped``. An ``other``
that carries a message or trace did run and gave no verdict (a crash, a "broken" test), so
it is ``error``.

Attempts: the top-level test is the final attempt (the spec calls ``status`` "the final
outcome"). Producers disagree on whether ``retryAttempts`` also holds that final attempt:
playwright-ctrf-json-reporter lists only the earlier runs with ``retries`` equal to their
count, while the spec's own examples list every run including the last, with ``retries`` one
less. So the list is taken to include the final attempt when it has more entries than
``retries``, or, without ``retries``, when its last entry has the test's final status.
A report with ``retries`` but no ``retryAttempts`` (jest-ctrf-json-reporter) still says that
earlier runs failed, since a test is only retried after a failure; those become failed
attempts without details so that the flakiness stays visible.

A test's ``browser`` is the environment of its attempts: Playwright reports a test once per
browser project, and runs in two browsers are not retries of each other.

Speed: a report holds tens of thousands of tests, and a call of :func:`field` for each of a
test's fields cost more than ``json.loads`` spent on the whole test. So ``_test`` and
``_attempt`` read each field and check its type in place, and call :func:`field` only for a
value that is not of the expected JSON type, to raise the error that names it; the checks
run in the same order either way, so a report with several faults is refused for the same
one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import Attempt, AttemptStatus, ReportError, TestCase, truncate_output
from . import Format

_NUMBER: tuple[type, ...] = (int, float)
_JSON_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
    bool: "a boolean",
}
# "other" is missing on purpose: it depends on the attempt (see the module docstring).
_STATUSES: dict[str, AttemptStatus] = {
    "passed": "passed",
    "failed": "failed",
    "skipped": "skipped",
    "pending": "skipped",
}
_UNRECORDED_RETRY = "retried after a failure; the report records no details of this attempt"


def field(
    obj: Mapping[str, Any],
    key: str,
    types: type | tuple[type, ...],
    where: str,
    *,
    required: bool = False,
) -> Any:
    """``obj[key]`` checked against ``types``; None when absent or null and not required.

    Reports are untrusted input, so a wrong type must become a ReportError that names the
    place, not a TypeError from deep inside a parser. JSON ``true`` is never a number here.
    """
    value = obj.get(key)
    if value is None:
        if required:
            raise ReportError(f"{where}: required field {key!r} is missing")
        return None
    kind = type(value)  # JSON's values are of these exact types, bool being its own
    if kind is types or (type(types) is tuple and kind in types):
        return value
    allowed = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        expected = " or ".join(_JSON_TYPE_NAMES.get(t, t.__name__) for t in allowed)
        raise ReportError(f"{where}: {key!r} must be {expected}, not {type(value).__name__}")
    return value


def objects(
    obj: Mapping[str, Any], key: str, where: str, *, required: bool = False
) -> list[dict[str, Any]]:
    """The array of objects at ``obj[key]`` (empty when absent and optional)."""
    items = field(obj, key, list, where, required=required) or []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ReportError(f"{where}: {key}[{index}] must be an object")
    return items


def duration(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> float:
    """A non-negative duration (0 when absent and optional)."""
    value = field(obj, key, _NUMBER, where, required=required) or 0
    if value < 0:
        raise ReportError(f"{where}: {key!r} must not be negative")
    return float(value)


def _matches(document: Any) -> bool:
    if not isinstance(document, dict):
        return False
    if "reportFormat" in document:
        return document["reportFormat"] == "CTRF"
    results = document.get("results")
    return isinstance(results, dict) and "tool" in results and "tests" in results


def _parse(document: dict[str, Any]) -> list[TestCase]:
    results = field(document, "results", dict, "CTRF report", required=True)
    tests = objects(results, "tests", "results", required=True)
    return [_test(test, f"results.tests[{index}]") for index, test in enumerate(tests)]


def _test(test: dict[str, Any], where: str) -> TestCase:
    name = test.get("name")
    if type(name) is not str:
        name = field(test, "name", str, where, required=True)
    if not name:
        raise ReportError(f"{where}: 'name' must not be empty")
    final = _attempt(test, where, duration_required=True)
    browser = test.get("browser")
    if browser is not None and type(browser) is not str:
        browser = field(test, "browser", str, where)
    final.environment = browser
    numbered = []
    if test.get("retryAttempts") is not None:
        for index, entry in enumerate(objects(test, "retryAttempts", where)):
            entry_where = f"{where}.retryAttempts[{index}]"
            attempt = _attempt(entry, entry_where)
            attempt.environment = browser
            numbered.append((_attempt_number(entry, entry_where), entry["status"], attempt))
        numbered.sort(key=lambda item: item[0])
    retries = test.get("retries")
    if retries is not None and type(retries) is not int:
        retries = field(test, "retries", int, where)
    if retries is not None and retries < 0:
        raise ReportError(f"{where}: 'retries' must not be negative")
    if not numbered:
        attempts = (
            [
                Attempt(status="failed", message=_UNRECORDED_RETRY, environment=browser)
                for _ in range(retries)
            ]
            if retries
            else []
        )
        attempts.append(final)
    else:
        attempts = [attempt for _, _, attempt in numbered]
        if _lists_final_attempt(len(attempts), retries, numbered[-1][1], test["status"]):
            _fill_from(attempts[-1], final)
        else:
            attempts.append(final)
    suite = _suite(test, where)
    file = test.get("filePath")
    if file is not None and type(file) is not str:
        file = field(test, "filePath", str, where)
    return TestCase(name, "", suite, file or "", attempts)


def _lists_final_attempt(count: int, retries: int | None, last_status: str, status: str) -> bool:
    """Whether ``retryAttempts`` already ends with the run the test-level fields describe."""
    if retries is not None:
        return count > retries
    return last_status == status


def _attempt(entry: dict[str, Any], where: str, *, duration_required: bool = False) -> Attempt:
    message = entry.get("message")
    if message is not None and type(message) is not str:
        message = field(entry, "message", str, where)
    trace = entry.get("trace")
    if trace is not None and type(trace) is not str:
        trace = field(entry, "trace", str, where)
    status = entry.get("status")
    if type(status) is not str:
        status = field(entry, "status", str, where, required=True)
    known = _STATUSES.get(status)
    if known is None:
        known = _status(status, message or trace, where)
    spent = entry.get("duration")
    if (type(spent) is int or type(spent) is float) and spent >= 0:
        spent = float(spent or 0)  # as duration() reads it: -0.0 is 0
    else:
        spent = duration(entry, "duration", where, required=duration_required)
    stdout = None if entry.get("stdout") is None else _lines(entry, "stdout", where)
    stderr = None if entry.get("stderr") is None else _lines(entry, "stderr", where)
    return Attempt(known, spent, message, None, trace, stdout, stderr)


def _attempt_number(entry: dict[str, Any], where: str) -> int:
    number = field(entry, "attempt", int, where, required=True)
    if number < 1:
        raise ReportError(f"{where}: 'attempt' numbers start at 1, got {number}")
    return number


def _status(status: str, details: str | None, where: str) -> AttemptStatus:
    if status == "other":
        return "error" if details else "skipped"
    if status not in _STATUSES:
        raise ReportError(
            f"{where}: unknown status {status!r}; expected one of "
            f"{', '.join([*_STATUSES, 'other'])}"
        )
    return _STATUSES[status]


def _lines(entry: dict[str, Any], key: str, where: str) -> str | None:
    lines = field(entry, key, list, where)
    if not lines:
        return None
    try:
        return truncate_output("\n".join(lines))
    except TypeError:  # join takes strings only
        raise ReportError(f"{where}: {key!r} must be an array of strings") from None


def _suite(test: dict[str, Any], where: str) -> str:
    suite = field(test, "suite", (list, str), where)
    if isinstance(suite, list):
        try:
            return " > ".join(suite)
        except TypeError:  # join takes strings only
            raise ReportError(f"{where}: 'suite' must be an array of strings") from None
    return suite or ""


def _fill_from(last: Attempt, final: Attempt) -> None:
    """The last retry entry is the final run: details given only at test level belong to it."""
    for name in ("message", "stack", "stdout", "stderr"):
        if getattr(last, name) is None:
            setattr(last, name, getattr(final, name))


FORMATS = (Format("ctrf", "json", _matches, _parse),)
