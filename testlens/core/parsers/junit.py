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

Reading. Reports can hold hundreds of thousands of testcases, and a server reads them on
worker threads, so a JUnit document is read from the XML parser's events (lxml's
parser-target interface: ``start``, ``data``, ``end``) as the parser goes, and no element
tree is built. The tree of a large report takes about four times the memory of the test
cases read from it, and more time to build and free than the parser's events take to hand
over; reading it goes through a Python proxy object for each element and a call for each
attribute, where the parser hands a target each element's attributes as one dictionary.
Text reaches the reader only where a testcase's attempts need it. A testcase without
children, nearly every one, costs no object beyond those of the model (its TestCase, that
TestCase's list of attempts and its one Attempt): the garbage collector's passes over them
make up much of the time of a large report, and are left alone, as the collector's settings
are the whole process's, not this thread's.
Whatever depends on the enclosing suites is worked out once per suite.

A document that is not well-formed, or that names an external DTD, is loaded as a tree
instead (``xml.py``, which recovers what it can), and the tree is replayed through the same
reader: there is one reading of JUnit, not two.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

from lxml import etree

from ..model import SUITE_SEPARATOR, Attempt, AttemptStatus, TestCase, truncate_output
from . import Format
from .xml import xml_parser

_ROOT_TAGS = frozenset({"testsuites", "testsuite"})
# testcase status attributes meaning "never ran", whatever result children say.
_NOT_RUN = frozenset({"disabled", "notrun"})
_RESULTS: dict[str, AttemptStatus] = {"failure": "failed", "error": "error"}
_RERUNS_BEFORE: dict[str, AttemptStatus] = {"flakyFailure": "failed", "flakyError": "error"}
_RERUNS_AFTER: dict[str, AttemptStatus] = {"rerunFailure": "failed", "rerunError": "error"}
_OUTPUTS = frozenset({"system-out", "system-err"})
# The children of a testcase, and of a rerun element, that its attempts are read from.
_CASE_CHILDREN = frozenset({*_RESULTS, "skipped", *_OUTPUTS, *_RERUNS_BEFORE, *_RERUNS_AFTER})
_RERUN_CHILDREN = frozenset({"stackTrace", *_OUTPUTS})
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


def _attribute(attrib: Mapping[str, str], name: str) -> str | None:
    """An attribute's value as the parser target is handed it, read back as written.

    Without entity substitution (never wanted here: see ``xml.py``), libxml2 hands a target
    every ``&`` of an attribute value as the character reference ``&#38;``; it writes no
    other reference into the value, so replacing each one undoes exactly that.
    """
    value = attrib.get(name)
    if value and "&" in value:
        return value.replace("&#38;", "&")
    return value


def _posix(path: str) -> str:
    """Windows runners write backslashes; one spelling keeps a test's identity across OSes."""
    return path.replace("\\", "/")


def _enter(outer: _Suite, suite: Mapping[str, str]) -> _Suite:
    """Extend the context by one ``<testsuite>``: its name joins the path, its file wins."""
    name = _attribute(suite, "name") or ""
    own_file = _attribute(suite, "file") or _attribute(suite, "filepath")
    file = _posix(own_file) if own_file else outer.file
    if own_file and name == own_file:
        name = file  # bun names each suite after its file: spell both the same way
    if not name:
        return _Suite(outer.path, file)
    return _Suite(outer.path + SUITE_SEPARATOR + name if outer.path else name, file)


# --- the reader ------------------------------------------------------------------------------
#
# The reader keeps a stack of the open elements. Nearly every testcase is a plain pass (or a
# test that never ran) and has no child: its TestCase, whole with its one attempt, is made
# as it opens, and stands on the stack for itself, so such a testcase costs no other object.
# A testcase becomes a _Case frame when a child opens in it. Elements that mean nothing to
# the reader (properties, unknown children) share their parent's plain frame.


class _TreeNeeded(Exception):
    """Stops reading from parser events as soon as it is clear the document must be loaded
    as a tree: its root is another format's, or it names an external DTD. Entities such a
    DTD could declare are unknown to the parser, which leaves them in the tree as references
    where a target is handed no event for them at all, so a tree is what keeps the reading
    of such a document the same as ever (an element's text stops at the reference)."""


class _Frame:
    """An open element: the suite context it passes on to testcases within it."""

    __slots__ = ("_plain", "cases", "suite")

    keeps: ClassVar[frozenset[str]] = frozenset()
    """Child tags kept for an attempt (see _Case and _Rerun)."""

    def __init__(self, suite: _Suite) -> None:
        self.suite = suite
        self.cases: list[TestCase] | None = None
        self._plain: _Frame | None = None

    def plain(self, tag: str) -> _Frame:
        """The frame of a child ``tag`` that means nothing to the reader: it passes on the
        same suite, and testcases within it are not this element's own."""
        if self._plain is None:
            self._plain = _Frame(self.suite)
        return self._plain


class _Document(_Frame):
    """Outside the root element."""

    __slots__ = ()

    def plain(self, tag: str) -> _Frame:
        if tag != "testsuites":  # <testsuite>, the other root, has a frame of its own
            raise _TreeNeeded
        return super().plain(tag)


class _Testsuite(_Frame):
    """A ``<testsuite>`` element, keeping its own testcases when it declares how many tests
    it holds: the count bare reruns are told apart by (_reread_suite)."""

    __slots__ = ("declared",)

    def __init__(self, suite: _Suite, declared: str | None) -> None:
        self.suite = suite
        self.cases = [] if declared and declared.isdigit() else None
        self._plain = None
        self.declared = declared


class _Kept(_Frame):
    """A child of a testcase (or of a rerun element) that an attempt is read from."""

    __slots__ = ("attrib", "chunks", "tag")

    def __init__(self, suite: _Suite, tag: str, attrib: Mapping[str, str]) -> None:
        super().__init__(suite)
        self.tag = tag
        self.attrib = attrib
        self.chunks: list[str] = []  # the text before its first child, as the parser gave it

    @property
    def text(self) -> str | None:
        return "".join(self.chunks) if self.chunks else None


class _Rerun(_Kept):
    """A Surefire rerun element, whose own children hold its stack trace and output."""

    __slots__ = ("kept",)
    keeps = _RERUN_CHILDREN

    def __init__(self, suite: _Suite, tag: str, attrib: Mapping[str, str]) -> None:
        super().__init__(suite, tag, attrib)
        self.kept: list[_Kept] = []


class _Case(_Frame):
    """A testcase that has children: its attempts are completed from them when it closes."""

    __slots__ = ("case", "kept", "not_run")
    keeps = _CASE_CHILDREN

    def __init__(self, suite: _Suite, case: TestCase) -> None:
        super().__init__(suite)
        self.case = case
        # Its one attempt so far is skipped only where the testcase says it never ran.
        self.not_run = case.attempts[0].status == "skipped"
        self.kept: list[_Kept] = []


class _Reader:
    """Reads a JUnit document from parser events (a parser target) into test cases.

    Test cases come out in document order, one per testcase element, wherever it sits: what
    walking the tree for every ``<testcase>`` would give.
    """

    tests: list[TestCase]
    _open: list[_Frame | TestCase]
    _text: list[str] | None
    """Where text goes: the chunks of the element just opened, while its text is wanted and
    until its first child opens or it closes."""

    def __init__(self) -> None:
        self.reset()

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        opened = self._open
        parent = opened[-1]
        self._text = None  # a child ends its parent's text
        if isinstance(parent, TestCase):  # the first child of a testcase
            outer = opened[-2]
            assert isinstance(outer, _Frame)  # one testcase in another made the outer a frame
            parent = opened[-1] = _Case(outer.suite, parent)
        if tag == "testcase":
            if type(parent) is _Document:
                raise _TreeNeeded
            # The testcase's TestCase, with the attempt its attributes say. This runs once
            # per testcase, so _attribute and seconds_to_ms's common cases are inlined.
            suite = parent.suite
            name = attrib.get("name") or ""
            if "&" in name:
                name = name.replace("&#38;", "&")
            classname = attrib.get("classname") or ""
            if "&" in classname:
                classname = classname.replace("&#38;", "&")
            file = attrib.get("file")
            if file:
                file = _posix(file.replace("&#38;", "&") if "&" in file else file)
            time = attrib.get("time") or ""
            try:
                ms = float(time) * 1000.0
            except ValueError:
                ms = seconds_to_ms(time)
            if not 0.0 <= ms < math.inf:
                ms = 0.0
            status: AttemptStatus = "skipped" if attrib.get("status") in _NOT_RUN else "passed"
            case = TestCase(name, classname, suite.path, file or suite.file, [Attempt(status, ms)])
            self.tests.append(case)
            if parent.cases is not None:
                parent.cases.append(case)
            opened.append(case)
        elif tag in parent.keeps:
            assert isinstance(parent, _Case | _Rerun)  # the frames that keep children
            kept = (_Rerun if tag in _RERUNS_BEFORE or tag in _RERUNS_AFTER else _Kept)(
                parent.suite, tag, attrib
            )
            parent.kept.append(kept)
            opened.append(kept)
            self._text = kept.chunks
        elif tag == "testsuite":
            opened.append(_Testsuite(_enter(parent.suite, attrib), attrib.get("tests")))
        else:
            opened.append(parent.plain(tag))

    def data(self, text: str) -> None:
        if self._text is not None:
            self._text.append(text)

    def doctype(self, name: str | None, public_id: str | None, system_id: str | None) -> None:
        if public_id or system_id:
            raise _TreeNeeded

    def end(self, tag: str) -> None:
        frame = self._open.pop()
        self._text = None  # text after a child is not its parent's text
        if type(frame) is TestCase:
            return  # a testcase without children: made whole when it opened
        if type(frame) is _Case:
            _complete(frame)
        elif type(frame) is _Testsuite and frame.cases:
            declared = frame.declared
            assert declared is not None
            if int(declared) < len(frame.cases):
                _reread_suite(frame.cases, int(declared))

    def close(self) -> list[TestCase]:
        return self.tests

    def reset(self) -> None:
        """Forget the document read, or given up on, to read the next one."""
        self.tests = []
        self._open = [_Document(_OUTSIDE)]
        self._text = None


def _matches(root: etree._Element) -> bool:
    return root.tag in _ROOT_TAGS


_THREAD = threading.local()


def _stream(data: bytes) -> list[TestCase] | None:
    """Read a JUnit document straight from its bytes; None when it must be loaded as a tree
    (see _TreeNeeded).

    Raises ``etree.XMLSyntaxError`` for a document that is not well-formed.

    Each thread keeps one parser and its reader: an lxml parser is not thread-safe, but can
    read one document after another, and a new target parser first inspects its target's
    methods, which costs as much as reading a small report. The reader lets go of each
    report once read, as lxml keeps a parser and its target alive together.
    """
    try:
        parser, reader = _THREAD.parser, _THREAD.reader
    except AttributeError:
        reader = _THREAD.reader = _Reader()
        parser = _THREAD.parser = xml_parser(target=reader)
    try:
        tests: list[TestCase] = etree.fromstring(data, parser)
    except _TreeNeeded:
        return None
    finally:
        reader.reset()  # lets go of the tests, or of what was read before a failure
    return tests


def _parse(root: etree._Element) -> list[TestCase]:
    """Read a JUnit document already loaded as a tree (see _TreeNeeded; or one recovered, see
    ``xml.py``), by replaying it through the reader as the parser's events, attribute values
    written as the parser hands them to a target (see _attribute)."""
    reader = _Reader()
    for event, element in etree.iterwalk(root, events=("start", "end"), tag=etree.Element):
        if event == "start":
            attrib = {key: value.replace("&", "&#38;") for key, value in element.items()}
            reader.start(element.tag, attrib)
            if element.text:
                reader.data(element.text)
        else:
            reader.end(element.tag)
            if element.tail and element is not root:
                reader.data(element.tail)
    return reader.close()


def _complete(frame: _Case) -> None:
    """Complete a testcase's attempts from its children, oldest first.

    Its attempt so far, made from its attributes, is the main one; reruns recorded before
    or after it are attempts of their own. Several ``<failure>``/``<error>`` children are one
    run reporting several problems (soft assertions, a teardown error after a failed
    assertion), so they make one attempt whose status comes from the first problem, usually
    the cause of the others.
    """
    problems: list[_Kept] = []
    skipped: _Kept | None = None
    before: list[Attempt] = []
    after: list[Attempt] = []
    stdout = stderr = None
    for child in frame.kept:
        tag = child.tag
        if tag in _RESULTS:
            problems.append(child)
        elif tag == "skipped":
            skipped = child
        elif tag == "system-out":
            stdout = child.text
        elif tag == "system-err":
            stderr = child.text
        elif isinstance(child, _Rerun):
            if tag in _RERUNS_BEFORE:
                before.append(_rerun(child, _RERUNS_BEFORE[tag]))
            else:
                after.append(_rerun(child, _RERUNS_AFTER[tag]))

    attempts = frame.case.attempts
    main = attempts[0]
    main.stdout = _output(stdout)
    main.stderr = _output(stderr)
    if problems:
        first = problems[0]
        main.status = _RESULTS[first.tag]
        main.error_type = _attribute(first.attrib, "type") or None
        main.message = _joined([_message(p, p.text) for p in problems], "\n")
        main.stack = _joined([_stripped(p.text) for p in problems], "\n\n")
    elif skipped is not None:
        main.status = "skipped"
        main.message = _message(skipped, skipped.text)
    if frame.not_run:
        main.status = "skipped"  # the runner says it never ran; leftover children aside
    if before or after:
        attempts[:] = [*before, main, *after]


def _rerun(element: _Rerun, status: AttemptStatus) -> Attempt:
    """One flaky/rerun element: a failed attempt with its own stack trace and output."""
    stack = stdout = stderr = None
    for child in element.kept:
        tag = child.tag
        if tag == "stackTrace":
            stack = child.text
        elif tag == "system-out":
            stdout = child.text
        else:
            stderr = child.text
    stack = _stripped(stack if stack is not None else element.text)
    return Attempt(
        status,
        seconds_to_ms(element.attrib.get("time")),
        message=_message(element, stack),
        error_type=_attribute(element.attrib, "type") or None,
        stack=stack,
        stdout=_output(stdout),
        stderr=_output(stderr),
    )


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


def _message(element: _Kept, text: str | None) -> str | None:
    """The ``message`` attribute, else the first line of the element's text."""
    message = _stripped(_attribute(element.attrib, "message"))
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


FORMATS: tuple[Format, ...] = (Format("junit", "xml", _matches, _parse, stream=_stream),)
