"""JSON reports of JavaScript runners: Jest (``--json``), Playwright and Mocha (json reporters).

All three write one JSON document, but they record retries differently, and that is what
matters for flakiness:

* Jest keeps one entry per test with ``invocations`` (runs under ``jest.retryTimes``); the
  earlier runs can only have failed, and only with ``logErrorsBeforeRetry`` does the report
  keep their errors (``retryReasons``).
* Playwright keeps every run as a ``results[]`` entry, per project; the project becomes the
  attempt's environment.
* Mocha keeps only the final run, with ``currentRetry`` saying how many failed runs came
  before it.

Earlier runs that left no details become failed attempts without a duration, so that a
test which passed on its third run still shows as flaky.

Each runner can also fail outside any test: a Jest file that does not load or whose
``afterAll`` throws, a Playwright spec that does not load (which aborts the whole run), a
Mocha ``before``/``after`` hook. Those become errored entries, because dropping them would
turn a broken run into a green or empty one.

Jest and Mocha write absolute file paths, and they are kept as written: nothing in one
report says where the repository begins. Guessing it from the report's own files (their
common directory) would give one test two identities when two shards ran different files;
the upload's ``root`` makes the paths relative instead (see
:func:`testlens.core.identity.relative_to_root`). Playwright paths are already relative to
its ``rootDir``, and so are the files of its run errors here.
"""

from __future__ import annotations

import base64
import re
import textwrap
from collections.abc import Mapping
from typing import Any, TypeVar

from ..identity import path_under
from ..model import Attempt, AttemptStatus, ReportError, TestCase, truncate_output
from . import Format

T = TypeVar("T")

RETRIED = "failed before retry"
# Playwright's own words for a test.fail() test that passed; its report carries no error.
UNEXPECTED_PASS = "Expected to fail, but passed."
# Name of a Playwright run error that points at no file (global setup, config).
RUN_ERROR = "(test run)"
# More retries than any real configuration uses. Earlier runs are expanded into attempts, so
# without a bound a few bytes of hostile JSON could claim a billion of them.
MAX_RETRIES = 100

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STACK_FRAME = re.compile(r"^\s+at ", re.MULTILINE)
# "TypeError: ...", "AssertionError [ERR_ASSERTION]: ..." at the start of an error string.
_ERROR_TYPE = re.compile(r"((?:[A-Za-z_$][\w$]*)?(?:Error|Exception))(?: \[\w+\])?: ")
_JEST_HEADING = re.compile(r"^\s*● .*$", re.MULTILINE)
_MOCHA_TIMEOUT = re.compile(r"^Timeout of \d+ms exceeded")

# "focused" is in Jest's status type but jest-circus never writes it for a test; a focused
# test is one selected with .only, so it ran, and without failure messages it passed.
_JEST_STATUS: dict[str, AttemptStatus] = {
    "passed": "passed",
    "focused": "passed",
    "failed": "failed",
    "pending": "skipped",
    "skipped": "skipped",
    "todo": "skipped",
    "disabled": "skipped",
}
# Playwright result status -> (attempt status, censored).
_PLAYWRIGHT_STATUS: dict[str, tuple[AttemptStatus, bool]] = {
    "passed": ("passed", False),
    "failed": ("failed", False),
    "skipped": ("skipped", False),
    "timedOut": ("failed", True),
    "interrupted": ("error", True),
}


def _lookup(table: Mapping[str, T], status: Any, runner: str) -> T:
    """A status mapping that fails loudly: guessing an unknown status would skew counts."""
    if status not in table:
        raise ReportError(f"unknown {runner} test status {status!r}")
    return table[status]


def _plain(text: str | None) -> str | None:
    """Strip terminal colours (FORCE_COLOR runs embed them in messages); None when empty."""
    if not text:
        return None
    return _ANSI.sub("", text) or None


def _split_error(text: str | None) -> tuple[str | None, str | None, str | None]:
    """(message, error type, stack) of a JavaScript error string ``Type: message\\n    at ...``.

    The runners write the error as one string; the message is what precedes the first stack
    frame, without the ``Type:`` prefix that the error type already says.
    """
    text = _plain(text)
    if text is None:
        return None, None, None
    frame = _STACK_FRAME.search(text)
    head = text[: frame.start()] if frame else text
    typed = _ERROR_TYPE.match(head)
    message = head[typed.end() :] if typed else head
    return (message.strip() or None, typed.group(1) if typed else None, text if frame else None)


def _retry_count(value: Any, field: str) -> int:
    count = max(int(value or 0), 0)
    if count > MAX_RETRIES:
        raise ReportError(f"{field} {count} is more than {MAX_RETRIES} retries")
    return count


def _retried(reason: str | None = None) -> Attempt:
    message, error_type, stack = _split_error(reason)
    return Attempt("failed", message=message or RETRIED, error_type=error_type, stack=stack)


# --- Jest ------------------------------------------------------------------------------


def _jest_matches(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and "numTotalTests" in document
        and isinstance(document.get("testResults"), list)
    )


def _jest_test(result: dict[str, Any], file: str) -> TestCase:
    status = _lookup(_JEST_STATUS, result["status"], "jest")
    # Most tests passed at their first run: what they lack is skipped, not read as empty.
    messages = result.get("failureMessages")
    message = error_type = stack = None
    if messages:
        failures = [_plain(m) for m in messages]
        message, error_type, stack = _split_error(failures[0])
        if len(failures) > 1:  # e.g. the test's assertion and its afterEach hook both failed
            stack = "\n\n".join(m for m in failures if m)
    attempts = []
    invocations = result.get("invocations")
    if invocations and invocations != 1:
        reasons = result.get("retryReasons") or []
        earlier = _retry_count((invocations or 1) - 1, "invocations")
        attempts = [_retried(reasons[i] if i < len(reasons) else None) for i in range(earlier)]
    attempts.append(Attempt(status, float(result.get("duration") or 0), message, error_type, stack))
    ancestors = result.get("ancestorTitles") or []
    return TestCase(result["title"], "", " > ".join(ancestors), file, attempts)


def _jest_file_error(file: str, text: str | None) -> TestCase:
    """The failure of a test file itself, named after the file."""
    cleaned = textwrap.dedent(_JEST_HEADING.sub("", _plain(text) or "", count=1)).strip()
    message = cleaned.split("\n\n", 1)[0] or "test file failed"
    return TestCase(
        name=file, file=file, attempts=[Attempt("error", message=message, stack=cleaned or None)]
    )


def _parse_jest(document: dict[str, Any]) -> list[TestCase]:
    tests: list[TestCase] = []
    for test_file in document["testResults"]:
        file = test_file["name"]
        cases = [_jest_test(r, file) for r in test_file.get("assertionResults") or []]
        tests.extend(cases)
        # A failed file whose failure no test carries (it did not load, or a hook outside
        # any test threw) would otherwise vanish from the report.
        if test_file.get("status") == "failed" and not any(
            c.attempts[-1].status == "failed" for c in cases
        ):
            text = test_file.get("message") or test_file.get("failureMessage")
            tests.append(_jest_file_error(file, text))
    return tests


# --- Playwright ------------------------------------------------------------------------


def _playwright_matches(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("config"), dict)
        and isinstance(document.get("suites"), list)
    )


def _output(chunks: list[dict[str, Any]] | None) -> str | None:
    """Join stdout/stderr chunks, which are ``{text}`` or base64 ``{buffer}``."""
    parts = []
    for chunk in chunks or []:
        if "text" in chunk:
            parts.append(chunk["text"])
        elif "buffer" in chunk:
            parts.append(base64.b64decode(chunk["buffer"]).decode("utf-8", "replace"))
    return truncate_output(_plain("".join(parts)))


def _playwright_attempt(result: dict[str, Any], expected: str, env: str | None) -> Attempt:
    raw = result["status"]
    status, censored = _lookup(_PLAYWRIGHT_STATUS, raw, "playwright")
    # Most results passed: what they lack is skipped, not read as empty.
    error = result.get("error")
    if not error:
        errors = result.get("errors")
        error = next(iter(errors), None) if errors else None
    message = error_type = stack = None
    if error:
        message, error_type, stack = _split_error(error.get("stack") or error.get("message"))
    if raw == expected and raw != "skipped":
        # test.fail() and the failure came as declared: the outcome Playwright calls expected.
        status, message, error_type, stack = "passed", None, None, None
    elif expected == "failed" and raw == "passed":
        status, message = "failed", UNEXPECTED_PASS
    stdout = result.get("stdout")
    stderr = result.get("stderr")
    return Attempt(
        status,
        float(result.get("duration") or 0),
        message,
        error_type,
        stack,
        _output(stdout) if stdout else None,
        _output(stderr) if stderr else None,
        env,
        censored,
    )


def _playwright_spec(spec: dict[str, Any], suite: str, file: str) -> TestCase:
    attempts = []
    for test in spec.get("tests") or []:
        env = test.get("projectName") or None
        results = test.get("results") or []
        # A test with no result never started (run aborted, --max-failures); Playwright
        # counts it as skipped.
        attempts.extend(
            [
                _playwright_attempt(r, test.get("expectedStatus", "passed"), env)
                for r in sorted(results, key=lambda r: r.get("retry") or 0)
            ]
            or [Attempt("skipped", environment=env)]
        )
    return TestCase(
        name=spec["title"], suite=suite, file=spec.get("file") or file, attempts=attempts
    )


def _playwright_run_error(error: dict[str, Any], root_dir: str | None) -> TestCase:
    """A run error; its file relative to ``rootDir`` like the specs' (else as written)."""
    location = error.get("location") or {}
    file = location.get("file") or ""
    if file and root_dir:
        file = path_under(file, root_dir) or file
    message, error_type, stack = _split_error(error.get("stack") or error.get("message"))
    return TestCase(
        name=file or RUN_ERROR,
        file=file,
        attempts=[Attempt("error", message=message, error_type=error_type, stack=stack)],
    )


def _parse_playwright(document: dict[str, Any]) -> list[TestCase]:
    tests: list[TestCase] = []
    # Top-level suites are files; nested ones are describe blocks. Walked with an explicit
    # stack, oldest first, because report nesting depth is not ours to bound.
    pending: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        (s, ()) for s in reversed(document["suites"])
    ]
    while pending:
        suite, titles = pending.pop()
        file = suite.get("file") or ""
        tests.extend(
            _playwright_spec(s, " > ".join(titles), file) for s in suite.get("specs") or []
        )
        for child in reversed(suite.get("suites") or []):
            title = child.get("title")
            pending.append((child, (*titles, title) if title else titles))
    root_dir = document["config"].get("rootDir")
    tests.extend(_playwright_run_error(e, root_dir) for e in document.get("errors") or [])
    return tests


# --- Mocha -----------------------------------------------------------------------------

_MOCHA_LISTS = ("tests", "passes", "failures", "pending")


def _mocha_matches(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("stats"), dict)
        and all(isinstance(document.get(key), list) for key in _MOCHA_LISTS)
    )


def _mocha_key(entry: dict[str, Any]) -> tuple[str, str]:
    return (entry.get("file") or "", entry["fullTitle"])


def _mocha_test(entry: dict[str, Any], status: AttemptStatus) -> TestCase:
    title, full = entry["title"], entry["fullTitle"]
    # fullTitle is the describe titles and the test title joined by spaces.
    suite = full[: -len(title)].rstrip() if title and full.endswith(title) else ""
    # Most tests passed at their first run: what they lack is skipped, not read as empty.
    err = entry.get("err")
    message = stack = error_type = None
    timed_out = False
    if err:
        message = _plain(err.get("message"))
        stack = _plain(err.get("stack"))
        typed = _ERROR_TYPE.match(stack or "")
        error_type = err.get("name") or (typed.group(1) if typed else None)
        timed_out = err.get("code") == "ERR_MOCHA_TIMEOUT" or bool(
            message and _MOCHA_TIMEOUT.match(message)
        )
    retried = entry.get("currentRetry")
    attempts = [_retried() for _ in range(_retry_count(retried, "currentRetry"))] if retried else []
    attempts.append(
        Attempt(
            status,
            float(entry.get("duration") or 0),
            message,
            error_type,
            stack,
            censored=timed_out,
        )
    )
    return TestCase(title, "", suite, entry.get("file") or "", attempts)


def _parse_mocha(document: dict[str, Any]) -> list[TestCase]:
    """Status comes from the list a test is in; ``tests`` is every test that ended.

    ``failures`` also holds hook failures, which are not in ``tests``: whatever failure no
    test claims is such a hook (or a second failure of one test) and becomes an error.
    """
    failures = document["failures"]
    unclaimed: dict[tuple[str, str], list[int]] = {}
    for index, entry in enumerate(failures):
        unclaimed.setdefault(_mocha_key(entry), []).append(index)
    pending = {_mocha_key(e) for e in document["pending"]}
    claimed: set[int] = set()
    tests: list[TestCase] = []
    for entry in document["tests"]:
        key = _mocha_key(entry)
        if unclaimed.get(key):
            claimed.add(unclaimed[key].pop(0))
            status: AttemptStatus = "failed"
        else:
            status = "skipped" if key in pending else "passed"
        tests.append(_mocha_test(entry, status))
    tests.extend(_mocha_test(e, "error") for i, e in enumerate(failures) if i not in claimed)
    return tests


FORMATS: tuple[Format, ...] = (
    Format("jest", "json", _jest_matches, _parse_jest),
    Format("playwright", "json", _playwright_matches, _parse_playwright),
    Format("mocha", "json", _mocha_matches, _parse_mocha),
)
