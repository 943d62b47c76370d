"""Report parsers: one module per format family, one registry that detects and dispatches.

Each format module exposes a module-level ``FORMATS`` tuple of :class:`Format`. A format
says what it reads (``xml``, ``json`` or ``ndjson`` document), how to recognise it from the
loaded document, and how to turn that document into test cases. Loading happens once here,
so detection and parsing never read the bytes twice.

An XML format may also read its documents straight from the bytes (``stream``), from the
parser's events, without the element tree the others are handed: JUnit, the format of most
reports and of the largest ones, does. It is tried first; a document whose root is another
format's, or that is not well-formed, is then loaded as a tree, recovering it if need be
(``xml.py``), and a recovered report says so (``Report.recovered``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from lxml import etree

from ..model import (
    Report,
    ReportError,
    ReportTooLarge,
    TestCase,
    attempt_budget,
    merge_tests,
    too_many_results,
)
from .xml import TEST_ELEMENTS, check_xml, read_xml

Kind = Literal["xml", "json", "ndjson"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    kind: Kind
    matches: Callable[[Any], bool]
    parse: Callable[[Any], list[TestCase]]
    stream: Callable[[bytes], list[TestCase] | None] | None = None
    """Reads a well-formed document of the format from its bytes, or returns None when it
    is not of the format; raises ``etree.XMLSyntaxError`` when it is not well-formed."""


def _registry() -> tuple[Format, ...]:
    from . import ctrf, dart, dotnet, flakiness_io, gotest, javascript, junit, pytest_json, rspec

    formats: list[Format] = []
    modules = (junit, dotnet, javascript, pytest_json, ctrf, flakiness_io, rspec, gotest, dart)
    for module in modules:
        formats.extend(module.FORMATS)
    return tuple(formats)


_FORMATS: tuple[Format, ...] | None = None


def formats() -> tuple[Format, ...]:
    global _FORMATS
    if _FORMATS is None:
        _FORMATS = _registry()
    return _FORMATS


def format_names() -> list[str]:
    return [f.name for f in formats()]


def load_json(data: bytes) -> Any:
    """A JSON report's document, or :class:`ReportError` saying why it cannot be read."""
    return _load(data, "json")[0]


def _load(data: bytes, kind: Kind) -> tuple[Any, str | None]:
    """The document, and why the strict parse failed when it had to be recovered (XML)."""
    if kind == "xml":
        return read_xml(data)
    text = _decode(data)
    if kind == "json":
        try:
            return json.loads(text), None
        except ValueError as exc:  # also integers past Python's 4,300-digit limit
            raise ReportError(f"invalid JSON: {exc}") from None
        except RecursionError:
            raise ReportError("invalid JSON: nested too deeply") from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or not line.startswith("{"):
            continue  # go test -json interleaves plain build output
        try:
            lines.append(json.loads(line))
        except ValueError as exc:
            raise ReportError(f"invalid JSON on line {number}: {exc}") from None
        except RecursionError:
            raise ReportError(f"invalid JSON on line {number}: nested too deeply") from None
    return lines, None


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise ReportError("the report contains NUL bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportError(f"the report is not UTF-8 text: {exc}") from None


_LEADING = re.compile(rb"[\xef\xbb\xbf \t\r\n]*")
_CONTENT = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # what bytes.strip() keeps


def _kind_of(data: bytes) -> Kind:
    """XML, one JSON document, or newline-delimited JSON events (go test -json, dart).

    Found by searching the bytes, not by stripping or splitting them: those copy the whole
    report, and a report written on one line is one line of many megabytes.
    """
    leading = _LEADING.match(data)
    start = leading.end() if leading else 0
    head = data[start : start + 1]
    if head == b"<":
        return "xml"
    if head in (b"{", b"["):
        content = _CONTENT.search(data)
        start = content.start() if content else start
        newline = data.find(b"\n", start)
        if newline != -1 and _CONTENT.search(data, newline):  # more than one line
            first_line = data[start:newline].strip()
            if first_line.endswith(b"}") and _is_json(first_line):
                return "ndjson"
        return "json"
    if not data.strip():
        raise ReportError("the report is empty")
    raise ReportError("unrecognised report: expected XML or JSON content")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


MARKUP_PER_RESULT = 20
"""How many XML tags, or JSON objects and arrays, a report may hold per result it may hold:
far more than any writer spends on one test (a JUnit test case with its failure, output and
a few properties takes under 15), so only documents built to be large in memory meet it."""
_XML_TEST_TAGS = tuple(
    f"<{name} ".encode() if name == "test" else f"<{name}".encode() for name in TEST_ELEMENTS
)
"""How each XML format's test (JUnit, NUnit, TRX, xUnit.net) opens: each is at least one
result. xUnit.net's is counted with the space its attributes follow, as ``<test`` alone would
also count every ``<testcase`` and ``<testsuite``."""


def check_markup(data: bytes, kind: Kind, max_results: int) -> None:
    """Refuse, before loading it, a document that would hold too many results or too large
    a tree: counting bytes costs milliseconds where loading 50 MB of tiny test cases builds
    three quarters of a gigabyte of elements. The counts are upper bounds (text may contain
    the same characters), so only a document near the limits can be refused wrongly, and
    it is refused loudly."""
    if kind == "xml":
        tests = sum(data.count(tag) for tag in _XML_TEST_TAGS)
        if tests > max_results:
            raise too_many_results(max_results)
        markup, what = data.count(b"<"), "XML tags"
    else:
        markup, what = data.count(b"{") + data.count(b"["), "JSON objects and arrays"
    if markup > max_results * MARKUP_PER_RESULT:
        raise ReportTooLarge(
            max_results,
            f"the report holds more than {max_results * MARKUP_PER_RESULT:,} {what} "
            f"({MARKUP_PER_RESULT} per result of the limit of {max_results:,} results)",
        )


def parse_report(data: bytes, format: str | None = None, max_results: int | None = None) -> Report:
    """Parse report bytes into a :class:`Report`, detecting the format unless one is given.

    Raises ReportError for anything unreadable, and :class:`ReportTooLarge` for a report of
    more than ``max_results`` attempts, found as early as it can be; never returns a partial
    report.
    """
    chosen = None
    if format is not None:
        chosen = next((f for f in formats() if f.name == format), None)
        if chosen is None:
            raise ReportError(f"unknown format {format!r}; known: {', '.join(format_names())}")
    kind = _kind_of(data) if chosen is None else chosen.kind
    if max_results is not None:
        check_markup(data, kind, max_results)
    if kind == "xml":
        # A budget of its own: a stream stopped by a syntax error has made attempts that the
        # tree it falls back to makes again.
        with attempt_budget(max_results):
            report = _stream(data, chosen)
        if report is not None:
            return report
    with attempt_budget(max_results):
        return _parse(data, kind, chosen)


def _stream(data: bytes, chosen: Format | None) -> Report | None:
    """The report read by the first format able to read it straight from its bytes, or None
    when the document must be loaded as a tree: another format's, or not well-formed."""
    check_xml(data)
    for candidate in formats() if chosen is None else (chosen,):
        if candidate.stream is None:
            continue
        try:
            tests = guarded(candidate.name, candidate.stream, data)
        except etree.XMLSyntaxError:
            return None
        if tests is not None:
            return _report(candidate, tests, None)
    return None


def _parse(data: bytes, kind: Kind, chosen: Format | None) -> Report:
    document, recovered_reason = _load(data, kind)
    if chosen is not None:
        if not chosen.matches(document):
            raise ReportError(f"the report is not in the {chosen.name} format")
    else:
        chosen = next((f for f in formats() if f.kind == kind and f.matches(document)), None)
        if chosen is None:
            damage = f" (not well-formed: {recovered_reason})" if recovered_reason else ""
            raise ReportError(f"unrecognised {kind.upper()} report: {_describe(document)}{damage}")
    return _report(chosen, guarded(chosen.name, chosen.parse, document), recovered_reason)


def _report(chosen: Format, tests: list[TestCase], recovered_reason: str | None) -> Report:
    tests = merge_tests(tests)
    check_tests(tests)
    return Report(
        format=chosen.name,
        tests=tests,
        recovered=recovered_reason is not None,
        recovered_reason=recovered_reason,
    )


MAX_FILE_BYTES = 2000
"""Longest test file path accepted, UTF-8 encoded: every backend must index it (PostgreSQL's
b-tree entries stop near 2,700 bytes), and no real path comes close."""
MAX_ENVIRONMENT_CHARS = 200


def check_tests(tests: list[TestCase]) -> None:
    """Refuse what no backend stores alike: so SQLite and PostgreSQL accept the same reports,
    and a duration of ``1e999999`` (read as infinity) cannot poison every later prediction."""
    for test in tests:
        # Encoding is needed only for paths that could be too long (4 bytes a character at most).
        if len(test.file) * 4 > MAX_FILE_BYTES and len(test.file.encode()) > MAX_FILE_BYTES:
            raise ReportError(
                f"test {test.name!r}: its file path is longer than {MAX_FILE_BYTES} bytes"
            )
        for attempt in test.attempts:
            if not (0.0 <= attempt.duration_ms < math.inf):
                raise ReportError(
                    f"test {test.name!r}: duration {attempt.duration_ms!r} ms is not a finite "
                    "non-negative number"
                )
            if attempt.environment is not None and len(attempt.environment) > MAX_ENVIRONMENT_CHARS:
                raise ReportError(
                    f"test {test.name!r}: environment name longer than "
                    f"{MAX_ENVIRONMENT_CHARS} characters"
                )


def guarded(name: str, parse: Callable[[Any], T], document: Any) -> T:
    """``parse(document)``, with a shape the parser did not expect (a missing key, a wrong
    type) reported as the :class:`ReportError` it is rather than as a crash."""
    try:
        return parse(document)
    except ReportError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ReportError(f"malformed {name} report: {type(exc).__name__}: {exc}") from None
    except RecursionError:
        raise ReportError(f"malformed {name} report: nested too deeply") from None


def _describe(document: Any) -> str:
    if isinstance(document, dict):
        return "top-level keys " + ", ".join(sorted(document)[:8])
    if isinstance(document, list):
        return f"a list of {len(document)} items"
    tag = getattr(document, "tag", None)
    if isinstance(tag, str):
        return f"root element <{tag.rsplit('}', 1)[-1]}>"
    return type(document).__name__
