"""JUnit XML in all the dialects real tools write, read as one format.

There is no JUnit XML standard, only Ant's original output and the tools that copied it:
Surefire, pytest, jest-junit, mocha-junit-reporter, go-junit-report, PHPUnit, Catch2, CTest,
cargo-nextest, Bazel, bun, TestNG and others. They agree on ``<testsuite>``/``<testcase>``
with ``<failure>``, ``<error>`` and ``<skipped>`` children and differ in the details this
module reconciles:

* suites may be nested to any depth (PHPUnit, Playwright) or be the document root;
* ``file`` sits on the testcase (pytest, bun) or only on an enclosing suite (PHPUnit, mocha);
* Surefire, Playwright and nextest record reruns inside one testcase: ``<flakyFailure>`` and
  ``<flakyError>`` are failed attempts before the final, passing one; ``<rerunFailure>`` and
  ``<rerunError>`` are failed attempts after the first failure. Each becomes its own Attempt;
* some runners mark tests that never ran with ``status="disabled"`` (CTest, C++ frameworks)
  or ``status="notrun"`` (GoogleTest, CTest) instead of a ``<skipped>`` child;
* durations are seconds, but not always plain numbers: Surefire groups thousands
  (``1,234.5``) and localized writers use a decimal comma.

Runners that write one testcase per attempt, each with its own result (go-junit-report,
testlens's own pytest plugin), need nothing here: the registry merges identical test cases
into retries afterwards.

pytest-rerunfailures 16.6.1 and later write each rerun attempt as a *bare* ``<testcase>``,
with no ``<failure>``/``<error>`` child, before the entry of the final attempt (upstream issue
#170: pytest's JUnit writer ignores the ``rerun`` outcome; 16.6 and 10.2 write only the
final attempt). Read as written, a test that failed and then passed would look like two
passes, and one that failed every time like a flake. The plugin reruns only failures, so such
an entry is read as a failed attempt whose details the report did not record
(``RERUN_NOT_RECORDED``). An entry is reread that way only when all of these hold:

* it reads as a plain pass: no ``<failure>``, ``<error>`` or ``<skipped>`` child, no Surefire
  rerun child and no never-ran ``status`` (output children are allowed: ``junit_logging``);
* a later ``<testcase>`` in the same ``<testsuite>`` element has the same file, classname
  and name, so it is not the test's last entry. Entries in different ``<testsuite>``
  elements (several runs merged into one file, even under one suite name) are never each
  other's reruns, and a testcase that differs in file or classname is another test;
* that ``<testsuite>``'s declared ``tests`` count leaves those entries out: it is short of
  the testcases the element holds by at least the number of entries to reread, yet counts
  every distinct test. pytest counts the attempts it reported a result for, each test's last
  one among them, and the plugin's reruns carry none, so the shortfall is the writer saying
  those entries are not results. Where the count matches the testcases, a repeated bare
  testcase is a real pass of a repeated test and keeps its meaning: jest's same-titled tests,
  TestNG data providers, ``go test -count``, pytest-xdist's ``--dist each``, testlens's own
  plugin. A suite with no usable ``tests`` count (missing, ``0`` for writers that do not
  count) has nothing reread.

The last entry of a test keeps its meaning, and so does every entry with a result child, so
reports where each attempt records its own result read as before.

Reports can hold hundreds of thousands of testcases, so the per-testcase path only reads
attributes; whatever depends on the enclosing suites is worked out once per suite.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from lxml import etree

from ..model import SUITE_SEPARATOR, Attempt, AttemptStatus, TestCase, truncate_output
from . import Format

_ROOT_TAGS = frozenset({"testsuites", "testsuite"})
# testcase status attributes meaning "never ran", whatever result children say.
_NOT_RUN = frozenset({"disabled", "notrun"})
_RESULTS: dict[str, AttemptStatus] = {"failure": "failed", "error": "error"}
_RERUNS_BEFORE: dict[str, AttemptStatus] = {"flakyFailure": "failed", "flakyError": "error"}
_RERUNS_AFTER: dict[str, AttemptStatus] = {"rerunFailure": "failed", "rerunError": "error"}
RERUN_NOT_RECORDED = "rerun: failure details not recorded in the report"
"""Message of a failed attempt known only from a bare rerun entry (pytest-rerunfailures)."""

# Surefire formats durations with grouping ("1,234.567"). A comma that cannot be grouping
# is a decimal comma ("0,5"); a lone "1,234" is ambiguous and read the Surefire way.
_GROUPED_SECONDS = re.compile(r"[1-9]\d{0,2}(?:,\d{3})+(?:\.\d*)?")


class _Suite(NamedTuple):
    """What a testcase inherits from its enclosing suites."""

    path: str
    file: str


_OUTSIDE = _Suite("", "")


def seconds_to_ms(value: str | None) -> float:
    """Read a ``time`` attribute (seconds) as milliseconds; anything unreadable is 0.

    A bad duration must not cost the whole report: the outcome is still worth keeping.
    """
    if not value:
        return 0.0
    try:
        ms = float(value) * 1000.0
    except ValueError:
        text = value.strip()
        text = text.replace(",", "") if _GROUPED_SECONDS.fullmatch(text) else text.replace(",", ".")
        try:
            ms = float(text) * 1000.0
        except ValueError:
            return 0.0
    return ms if 0.0 <= ms < math.inf else 0.0  # NaN, infinities and negatives mean nothing


def _posix(path: str) -> str:
    """Windows runners write backslashes; one spelling keeps a test's identity across OSes."""
    return path.replace("\\", "/")


def _matches(root: etree._Element) -> bool:
    return root.tag in _ROOT_TAGS


def _parse(root: etree._Element) -> list[TestCase]:
    suites: dict[etree._Element, _Suite] = {}

    def suite_of(element: etree._Element | None) -> _Suite:
        """The context ``element`` gives its testcases, worked out once per element."""
        if element is None:
            return _OUTSIDE
        found = suites.get(element)
        if found is None:
            outer = suite_of(element.getparent())
            found = _enter(outer, element) if element.tag == "testsuite" else outer
            suites[element] = found
        return found

    tests: list[TestCase] = []
    append = tests.append
    # (parent, index in tests of its first testcase) per run of sibling testcases
    runs: list[tuple[etree._Element, int]] = []
    parent = None
    path = suite_file = ""
    for case in root.iter("testcase"):
        get = case.get
        if case.getparent() is not parent:
            # Testcases come in runs of siblings, and lxml hands back the same parent proxy
            # while it is referenced, so an identity check spares most dictionary lookups.
            parent = case.getparent()
            path, suite_file = suite_of(parent)
            runs.append((parent, len(tests)))
        file = get("file")
        file = _posix(file) if file else suite_file
        if len(case):
            attempts = _attempts(case)
        else:
            status: AttemptStatus = "skipped" if get("status") in _NOT_RUN else "passed"
            time = get("time")
            try:
                ms = float(time) * 1000.0  # seconds_to_ms's fast path, inlined: hot loop
            except (TypeError, ValueError):
                ms = seconds_to_ms(time)
            if not 0.0 <= ms < math.inf:
                ms = 0.0
            attempts = [Attempt(status, ms)]
        append(TestCase(get("name") or "", get("classname") or "", path, file, attempts))
    _reread_bare_reruns(tests, runs)
    return tests


def _reread_bare_reruns(tests: list[TestCase], runs: list[tuple[etree._Element, int]]) -> None:
    """Read pytest-rerunfailures' bare rerun entries as the failed attempts they were.

    ``tests`` holds one TestCase per testcase element, in document order; ``runs`` says
    where each parent's runs of sibling testcases start in it. Only suites whose declared
    ``tests`` falls short of the testcases they hold are looked at entry by entry, so a
    report whose counts add up (nearly all of them) costs a pass over ``runs``, not over
    its testcases.
    """
    ends = [start for _, start in runs[1:]]
    ends.append(len(tests))
    held: dict[etree._Element, int] = {}
    for (parent, start), end in zip(runs, ends, strict=False):
        held[parent] = held.get(parent, 0) + end - start
    for parent, count in held.items():
        declared = parent.get("tests")
        if not declared or not declared.isdigit() or int(declared) >= count:
            continue  # no count, or one that covers every entry: nothing left uncounted
        if parent.tag == "testsuite":
            entries = [
                test
                for (other, start), end in zip(runs, ends, strict=False)
                if other is parent
                for test in tests[start:end]
            ]
            _reread_suite(entries, int(declared))


def _reread_suite(entries: list[TestCase], declared: int) -> None:
    """The entries of one ``<testsuite>`` that declares ``declared`` tests (fewer than the
    entries): its repeated plain passes become failed reruns if the count leaves them out
    but covers every distinct test."""
    latest: dict[tuple[str, str, str], Attempt | None] = {}  # identity -> its plain pass
    reruns: list[Attempt] = []  # plain passes a later entry of the same test repeats
    for entry in entries:
        identity = (entry.file, entry.classname, entry.name)
        previous = latest.get(identity)
        if previous is not None:
            reruns.append(previous)  # no longer the test's last entry
        attempts = entry.attempts
        plain = len(attempts) == 1 and attempts[0].status == "passed"
        latest[identity] = attempts[0] if plain else None
    if reruns and len(latest) <= declared <= len(entries) - len(reruns):
        for attempt in reruns:
            attempt.status = "failed"
            attempt.message = RERUN_NOT_RECORDED


def _enter(outer: _Suite, suite: etree._Element) -> _Suite:
    """Extend the context by one ``<testsuite>``: its name joins the path, its file wins."""
    name = suite.get("name") or ""
    own_file = suite.get("file") or suite.get("filepath")
    file = _posix(own_file) if own_file else outer.file
    if own_file and name == own_file:
        name = file  # bun names each suite after its file: spell both the same way
    if not name:
        return _Suite(outer.path, file)
    return _Suite(outer.path + SUITE_SEPARATOR + name if outer.path else name, file)


def _attempts(case: etree._Element) -> list[Attempt]:
    """Every attempt one testcase element records, oldest first.

    Several ``<failure>``/``<error>`` children are one run reporting several problems (soft
    assertions, a teardown error after a failed assertion), so they make one attempt whose
    status comes from the first problem, usually the cause of the others.
    """
    problems: list[etree._Element] = []
    skipped: etree._Element | None = None
    before: list[Attempt] = []
    after: list[Attempt] = []
    stdout = stderr = None
    for child in case:
        tag = child.tag
        if tag in _RESULTS:
            problems.append(child)
        elif tag == "skipped":
            skipped = child
        elif tag == "system-out":
            stdout = child.text
        elif tag == "system-err":
            stderr = child.text
        elif tag in _RERUNS_BEFORE:
            before.append(_rerun(child, _RERUNS_BEFORE[tag]))
        elif tag in _RERUNS_AFTER:
            after.append(_rerun(child, _RERUNS_AFTER[tag]))

    main = Attempt(
        "passed", seconds_to_ms(case.get("time")), stdout=_output(stdout), stderr=_output(stderr)
    )
    if problems:
        first = problems[0]
        main.status = _RESULTS[first.tag]
        main.error_type = first.get("type") or None
        main.message = _joined([_message(p, p.text) for p in problems], "\n")
        main.stack = _joined([_stripped(p.text) for p in problems], "\n\n")
    elif skipped is not None:
        main.status = "skipped"
        main.message = _message(skipped, skipped.text)
    if case.get("status") in _NOT_RUN:
        main.status = "skipped"  # the runner says it never ran; leftover children aside
    return [*before, main, *after]


def _rerun(element: etree._Element, status: AttemptStatus) -> Attempt:
    """One flaky/rerun element: a failed attempt with its own stack trace and output."""
    stack = stdout = stderr = None
    for child in element:
        tag = child.tag
        if tag == "stackTrace":
            stack = child.text
        elif tag == "system-out":
            stdout = child.text
        elif tag == "system-err":
            stderr = child.text
    stack = _stripped(stack if stack is not None else element.text)
    return Attempt(
        status,
        seconds_to_ms(element.get("time")),
        message=_message(element, stack),
        error_type=element.get("type") or None,
        stack=stack,
        stdout=_output(stdout),
        stderr=_output(stderr),
    )


def _message(element: etree._Element, text: str | None) -> str | None:
    """The ``message`` attribute, else the first line of the element's text."""
    message = _stripped(element.get("message"))
    if message is None and text:
        message = _stripped(text.lstrip().partition("\n")[0])
    return message


def _stripped(text: str | None) -> str | None:
    if not text:
        return None
    return text.strip() or None


def _output(text: str | None) -> str | None:
    return None if text is None or text.isspace() else truncate_output(text)


def _joined(parts: list[str | None], separator: str) -> str | None:
    kept = [part for part in parts if part]
    return separator.join(kept) if kept else None


FORMATS: tuple[Format, ...] = (Format("junit", "xml", _matches, _parse),)
