"""Failure signatures: one stable fingerprint for every way a test fails.

A failed attempt carries an exception type, a message and a stack trace, and most of that
text changes from run to run without the failure changing: ports, temporary directories,
object addresses, ids, timestamps, line numbers that move with every edit above them. A
signature keeps what identifies the failure (the type, the message with those parts masked,
the innermost frames of the project's own code) and hashes it into a key, so the same
failure seen in a hundred runs, or in twenty tests at once, is one row and one key.

What is masked and what is kept is documented in ``docs/root-causes.md``. HTTP status codes
are kept on purpose: "503 Service Unavailable" and "404 Not Found" are different failures.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher

MAX_MESSAGE_CHARS = 500
MAX_FRAMES = 5
MERGE_SIMILARITY = 0.9
"""Two messages of the same error type and innermost frame whose normalised texts are at
least this similar (difflib ratio) are one failure: masking catches the usual variable
parts, this catches the rest (a file name, a count spelled out, an extra word)."""


@dataclass(frozen=True, slots=True)
class Signature:
    """One way of failing: the exception type, the normalised message and the innermost
    in-app frames ("path/file.py:function", no line numbers), hashed into ``key``."""

    key: str
    error_type: str
    message: str
    frames: tuple[str, ...]


# --- masking ---------------------------------------------------------------------------

_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_DATETIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
    r"(?:\s?Z|\s?[+-]\d{2}:?\d{2}|\s?UTC)?)?\b"
)
_CLOCK = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s?Z\b)?")
# Temporary directories of every platform and of the usual test helpers; the file name at
# the end of the path survives (it is usually fixed by the test), the directory does not.
_TEMP_PATH = re.compile(
    r"(?:[A-Za-z]:[\\/][^\s'\"]*?[\\/](?:Temp|tmp)[\\/]"
    r"|(?:/private)?/var/folders/[^\s'\"]*?/T/"
    r"|(?<![\w.~-])/(?:var/)?tmp/"
    r"|/dev/shm/)"
    r"(?P<rest>[^\s'\"<>()\[\]{},;]*)"
)
_TEMPFILE_NAME = re.compile(r"\b(?:tmp|pytest-)[a-z0-9_]{6,}\b|\bpytest-of-[\w.-]+\b")
_HEX = re.compile(
    r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"
)
_RANDOM_ID = re.compile(
    r"\b(?=(?:[A-Za-z]*\d){3})(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{16,}\b"
)
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_HOST_PORT = re.compile(
    r"(?P<host>\blocalhost|<ip>|\]|://[^/\s:'\"]+)(?::\d{1,5}\b)|(?P<word>\bport\b[\s:=]*)\d{1,5}\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![A-Za-z0-9])\d+(?:\.\d+)*(?:[eE][-+]?\d+)?")
# A three-digit number is an HTTP status when its neighbours say so; it is then kept.
_STATUS_BEFORE = re.compile(
    r"(?:\bstatus(?:[ _]?code)?|\bstatusCode|\bhttp(?:/\d(?:\.\d)?)?|\bresponse(?: code)?"
    r"|\bcode|<Response \[|\berror)\W{0,4}$",
    re.IGNORECASE,
)
_STATUS_AFTER = re.compile(
    r"^\]?\s*\(?(?:Continue|OK|Created|Accepted|No Content|Moved|Found|See Other|"
    r"Not Modified|Temporary Redirect|Permanent Redirect|Bad Request|Unauthori[sz]ed|"
    r"Payment Required|Forbidden|Not Found|Method Not Allowed|Not Acceptable|"
    r"Request Time-?out|Conflict|Gone|Length Required|Precondition Failed|Payload Too Large|"
    r"Request Entity Too Large|Unsupported Media Type|Unprocessable (?:Entity|Content)|"
    r"Too Early|Upgrade Required|Too Many Requests|Internal Server Error|Not Implemented|"
    r"Bad Gateway|Service Unavailable|Gateway Time-?out|Client Error|Server Error)\b",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")


def _temp_path(match: re.Match[str]) -> str:
    name = re.split(r"[\\/]", match.group("rest"))[-1]
    return f"<tmp>/{name}" if name else "<tmp>/"


def _host_port(match: re.Match[str]) -> str:
    if match.group("word") is not None:
        return f"{match.group('word')}<port>"
    return f"{match.group('host')}:<port>"


def _number(match: re.Match[str]) -> str:
    text = match.group(0)
    if len(text) == 3 and "100" <= text <= "599":
        before = match.string[max(0, match.start() - 30) : match.start()]
        after = match.string[match.end() : match.end() + 40]
        if _STATUS_BEFORE.search(before) or _STATUS_AFTER.match(after):
            return text
    return "<n>"


def normalise(message: str) -> str:
    """The message with its run-to-run noise masked (``<uuid>``, ``<time>``, ``<tmp>``,
    ``<hex>``, ``<id>``, ``<ip>``, ``<port>``, ``<n>``), HTTP status codes kept, whitespace
    collapsed, cut at :data:`MAX_MESSAGE_CHARS`."""
    text = _UUID.sub("<uuid>", message)
    text = _DATETIME.sub("<time>", text)
    text = _CLOCK.sub("<time>", text)
    text = _TEMP_PATH.sub(_temp_path, text)
    text = _TEMPFILE_NAME.sub("<tmp>", text)
    text = _HEX.sub("<hex>", text)
    text = _RANDOM_ID.sub("<id>", text)
    text = _IPV4.sub("<ip>", text)
    text = _HOST_PORT.sub(_host_port, text)
    text = _NUMBER.sub(_number, text)
    text = _SPACE.sub(" ", text).strip()
    return text[:MAX_MESSAGE_CHARS].rstrip()


# --- error type --------------------------------------------------------------------------

_TYPE_NAME = (
    r"(?:[A-Za-z_][\w$]*(?:\.|::))*[A-Z][\w$]*"
    r"(?:Error|Exception|Failure|Failed|Fault|Timeout|Exit|Interrupt|Warning|Throwable|Panic)"
)
_TYPE_LINE = re.compile(
    rf"^(?:E\s+|Caused by:\s*|Error:\s+(?={_TYPE_NAME}\b)|Unhandled exception\.\s*)?"
    rf"(?P<type>{_TYPE_NAME}|Error|AssertionError|panic|Minitest::Assertion)"
    rf"(?:\s*\[[\w-]+\])?(?:\s*:\s*|\s*$)(?P<rest>.*)$",
    re.MULTILINE,
)
_PYTEST_LOCATION = re.compile(rf"^[^\s:]+\.py:\d+: (?P<type>{_TYPE_NAME})$", re.MULTILINE)


def _derive_type(text: str) -> tuple[str, str] | None:
    """(type, rest of its line) of the first line that reads like an exception."""
    match = _TYPE_LINE.search(text)
    if match is not None:
        return match.group("type"), match.group("rest").strip()
    location = _PYTEST_LOCATION.search(text)
    if location is not None:
        return location.group("type"), ""
    return None


def _strip_type(message: str, error_type: str) -> str:
    """The message without a leading "Type: " that repeats the error type, so a report that
    gives the type separately and one that only writes it into the message agree."""
    text = message.strip()
    if text.startswith("E "):
        text = text[1:].lstrip()
    short = error_type.rsplit(".", 1)[-1].rsplit("::", 1)[-1]
    for name in (error_type, short):
        if name and text.startswith(name):
            rest = text[len(name) :]
            stripped = rest.lstrip()
            if not rest or stripped.startswith(":"):
                return stripped[1:].strip() if stripped else ""
    return text


# --- frames ------------------------------------------------------------------------------

_PY_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+, in (?P<func>\S+)')
_PYTEST_FRAME = re.compile(
    r"^(?P<path>[^\s:]+\.py):\d+:(?: (?:in (?P<func>\S+)|(?P<exc>\w[\w.]*)))?\s*$"
)
_PY_DEF = re.compile(r"^\s*>?\s*(?:async\s+)?def (?P<func>\w+)\(")
_JAVA_FRAME = re.compile(
    r"^\s*at (?:[\w.-]*/)*(?P<func>[\w$.<>]+)\((?P<loc>(?:[\w$]+\.(?:java|kt|kts|scala|groovy|clj)"
    r"(?::\d+)?)|Native Method|Unknown Source)\)"
)
_DOTNET_FRAME = re.compile(
    r"^\s*at (?P<func>[\w.`<>$|\[\],+-]+)\((?P<args>[^)]*)\)(?: in (?P<path>.+?):line \d+)?\s*$"
)
_V8_FRAME = re.compile(
    r"^\s*at (?:async )?(?:(?P<func>[^\s(][^()]*?) \((?P<path>[^()\s]+?)(?::\d+){1,2}\)"
    r"|(?P<bare>[^()\s]+?)(?::\d+){1,2})\s*$"
)
_GO_FUNC = re.compile(
    r"^(?:created by )?(?P<func>[\w./-]*[\w)]\.[\w.*()]+?)(?:\(.*\))?(?: in goroutine \d+)?$"
)
_GO_FILE = re.compile(r"^\s+(?P<path>\S+\.go):\d+(?: \+0x[0-9a-f]+)?$")
_GO_TEST_LINE = re.compile(r"^\s*(?P<path>[\w./-]+_test\.go):\d+:")
_RUBY_FRAME = re.compile(r"^\s*(?:#\s*|from\s+)?(?P<path>[^\s:]+\.rb):\d+:in [`'](?P<func>[^']+)'")

_LIBRARY_PATHS = re.compile(
    r"site-packages/|dist-packages/|node_modules/|^node:|^internal/|<frozen |/usr/lib/"
    r"|/usr/local/lib/"
    r"|/_pytest/|/pytest/|/pluggy/|/lib/python\d|/lib64/python\d|/lib/ruby/|/gems/|/rubygems/"
    r"|<internal:|/usr/local/go/|/usr/lib/go|/go/src/(?:runtime|testing)/|/pkg/mod/|/\.m2/"
    r"|/\.gradle/|/\.cargo/registry/|^/rustc/|\.nuget/packages/|^<anonymous>$|^native$",
)
_LIBRARY_NAMES = re.compile(
    r"^(?:java|javax|jdk|sun|com\.sun|org\.junit|junit|org\.testng|org\.opentest4j|org\.assertj"
    r"|org\.hamcrest|org\.mockito|org\.gradle|org\.apache\.maven|org\.springframework|kotlin"
    r"|kotlinx|scala|org\.scalatest|worker\.org\.gradle|System|Microsoft|NUnit|Xunit|xunit|Moq"
    r"|Castle|FluentAssertions|NSubstitute|runtime|testing|reflect|syscall|panic)(?:\.|\(|$)"
)
_ASYNC_STATE = re.compile(r"<(\w+)>[a-z]__\w*(?:\.MoveNext)?")
_RUBY_BLOCK = re.compile(r"^(?:block (?:\(\d+ levels\) )?in |rescue in |ensure in )")


_SOURCE_ROOTS = frozenset(
    ("src", "lib", "tests", "test", "spec", "app", "pkg", "internal", "cmd", "packages")
)


def _short_path(path: str) -> str:
    """A path as it reads in every checkout: forward slashes, no URL scheme, and an absolute
    path cut where the project's sources begin (its first ``src``, ``tests``, ``lib``, ...
    folder), else to its last three parts: checkout roots differ from runner to runner."""
    text = re.sub(r"^(?:file|webpack|webpack-internal):/{2,3}", "/", path.replace("\\", "/"))
    text = text.split("?", 1)[0]
    if text.startswith("./"):
        text = text[2:]
    if text.startswith("/") or re.match(r"^[A-Za-z]:/", text):
        parts = text.split("/")
        root = next((i for i, part in enumerate(parts[:-1]) if part in _SOURCE_ROOTS), None)
        text = "/".join(parts[root:] if root is not None else parts[-3:])
    return text


def _java(func: str, loc: str) -> str:
    qualified, _, method = func.rpartition(".")
    package, _, cls = qualified.rpartition(".")
    name = f"{cls}.{method}" if cls else func
    if ":" not in loc and not loc.endswith((".java", ".kt", ".scala", ".groovy", ".clj", ".kts")):
        return f"{qualified}.{method}" if qualified else func
    file = loc.split(":", 1)[0]
    folder = package.replace(".", "/")
    return f"{folder}/{file}:{name}" if folder else f"{file}:{name}"


def _frames(stack: str) -> Iterator[tuple[str, bool]]:
    """(frame, in-app) innermost first, whatever the language."""
    python: list[tuple[str, bool]] = []
    others: list[tuple[str, bool]] = []
    last_def = ""
    previous = ""
    for line in stack.splitlines():
        if (match := _PY_FRAME.match(line)) is not None:
            path = match.group("path").replace("\\", "/")
            python.append((f"{_short_path(path)}:{match.group('func')}", not _library(path, "")))
        elif (match := _PYTEST_FRAME.match(line)) is not None:
            path = match.group("path")
            func = match.group("func") or last_def or "<module>"
            python.append((f"{_short_path(path)}:{func}", not _library(path, "")))
            last_def = ""
        elif (match := _PY_DEF.match(line)) is not None:
            last_def = match.group("func")
        elif (match := _JAVA_FRAME.match(line)) is not None:
            func = match.group("func")
            others.append((_java(func, match.group("loc")), not _library("", func)))
        elif (match := _DOTNET_FRAME.match(line)) is not None:
            func = _ASYNC_STATE.sub(r"\1", match.group("func")).replace("`1", "")
            path = match.group("path")
            method = ".".join(func.split(".")[-2:])
            frame = f"{_short_path(path)}:{method}" if path else func
            others.append((frame, not _library(path or "", func)))
        elif (match := _V8_FRAME.match(line)) is not None:
            path = match.group("path") or match.group("bare") or ""
            func = (match.group("func") or "").removeprefix("new ").strip()
            frame = f"{_short_path(path)}:{func}" if func else _short_path(path)
            others.append((frame, not _library(path.replace("\\", "/"), "")))
        elif (match := _GO_FILE.match(line)) is not None:
            path = match.group("path")
            func_match = _GO_FUNC.match(previous.strip())
            func = func_match.group("func").rsplit("/", 1)[-1] if func_match else ""
            frame = f"{_short_path(path)}:{func}" if func else _short_path(path)
            others.append((frame, not _library(path, func)))
        elif (match := _GO_TEST_LINE.match(line)) is not None:
            others.append((_short_path(match.group("path")), True))
        elif (match := _RUBY_FRAME.match(line)) is not None:
            path = match.group("path")
            func = _RUBY_BLOCK.sub("", match.group("func"))
            others.append((f"{_short_path(path)}:{func}", not _library(path, "")))
        previous = line
    # Python writes the outermost call first; every other runtime the innermost.
    yield from reversed(python)
    yield from others


def _library(path: str, func: str) -> bool:
    return bool(
        (path and _LIBRARY_PATHS.search(path.replace("\\", "/")))
        or (func and _LIBRARY_NAMES.match(func))
    )


def _app_frames(stack: str) -> tuple[str, ...]:
    """The innermost in-app frames of a stack trace, at most :data:`MAX_FRAMES`, without
    line numbers and without repeats of the frame just above."""
    found: list[str] = []
    for frame, in_app in _frames(stack):
        if in_app and (not found or found[-1] != frame):
            found.append(frame)
            if len(found) == MAX_FRAMES:
                break
    return tuple(found)


# --- signatures --------------------------------------------------------------------------


def _key(error_type: str, message: str, frames: tuple[str, ...]) -> str:
    # blake2b over a canonical JSON array: the same everywhere, in every process and version.
    payload = json.dumps([error_type, message, list(frames)], ensure_ascii=False)
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def signature(error_type: str | None, message: str | None, stack: str | None) -> Signature:
    """The signature of one failed attempt. Without an error type one is read from the
    message or the stack when a line there names an exception; without a message, the text
    after that exception's name (or the stack's first line) stands in for it."""
    kind = (error_type or "").strip()
    text = (message or "").strip()
    trace = stack or ""
    derived = None if kind else _derive_type(text) or _derive_type(trace)
    if derived is not None:
        kind = derived[0]
    if not text:
        if derived is not None and derived[1]:
            text = derived[1]
        else:
            text = next((line.strip() for line in trace.splitlines() if line.strip()), "")
    text = _strip_type(text, kind) if kind else text
    kind = kind[:200]
    frames = _app_frames(trace) or _app_frames(message or "")
    normalised = normalise(text)
    return Signature(_key(kind, normalised, frames), kind, normalised, frames)


def _similar(a: Signature, b: Signature) -> bool:
    if a.error_type != b.error_type:
        return False
    if a.frames and b.frames and a.frames[0] != b.frames[0]:
        return False
    matcher = SequenceMatcher(None, a.message, b.message, autojunk=False)
    return matcher.real_quick_ratio() >= MERGE_SIMILARITY and matcher.ratio() >= MERGE_SIMILARITY


def group(counted: Iterable[tuple[Signature, int]]) -> list[list[tuple[Signature, int]]]:
    """Near-identical signatures grouped, each group's members most frequent first (the
    first represents the group), the groups by summed count, most frequent first. Counts of
    the same key are added up first.

    Near-identical: the same error type, the same innermost frame when both have frames,
    and messages at least :data:`MERGE_SIMILARITY` alike. Grouping is greedy from the most
    frequent signature down, so the result does not depend on the input's order."""
    totals: dict[str, int] = {}
    by_key: dict[str, Signature] = {}
    for sig, count in counted:
        totals[sig.key] = totals.get(sig.key, 0) + count
        by_key[sig.key] = sig
    ordered = sorted(by_key.values(), key=lambda s: (-totals[s.key], s.key))
    groups: list[list[tuple[Signature, int]]] = []
    for sig in ordered:
        member = (sig, totals[sig.key])
        home = next((g for g in groups if _similar(g[0][0], sig)), None)
        if home is None:
            groups.append([member])
        else:
            home.append(member)
    return sorted(groups, key=lambda g: (-sum(count for _, count in g), g[0][0].key))


def merge(counted: Iterable[tuple[Signature, int]]) -> list[tuple[Signature, int]]:
    """Near-identical signatures grouped; each group's most frequent member represents it,
    with the summed count; most frequent first (see :func:`group`)."""
    return [(members[0][0], sum(count for _, count in members)) for members in group(counted)]
