"""Guard rails for proposed fixes of flaky tests, and the unified diffs they arrive as.

A flaky test is easy to make green without fixing anything: wait longer, run it again, give
it more time, or ask less of it. Those changes hide the cause and usually come back as a
slower, still flaky suite, so :func:`check` refuses a diff that does *only* that. "Only"
means that once blank lines, comments, imports and the evasive lines themselves are set
aside, nothing meaningful changes; a diff that also changes real logic is allowed, with the
evasive parts still listed as warnings for the reviewer.

What counts as evasive (each a reason code in :data:`REASONS`):

- ``sleep``: a fixed wait added or lengthened (``time.sleep``, ``asyncio.sleep``,
  ``Thread.sleep``, a ``setTimeout`` promise, ``cy.wait(500)``, ``page.waitForTimeout``,
  ``sleep 2`` in shell). Waiting *for a condition* is not a sleep.
- ``retry``: reruns (``@pytest.mark.flaky``, ``@flaky``, ``reruns=``, ``jest.retryTimes``,
  ``this.retries``, ``@RepeatedTest``, ``@Retry``, ``retries:`` in a runner's configuration)
  and bounded loops added around an assertion.
- ``longer_timeout``: a timeout raised or added (``timeout=``, ``@Timeout``,
  ``jest.setTimeout``, ``this.timeout``, a test's timeout argument).
- ``removed_assertion``, ``looser_assertion``, ``wider_tolerance``, ``skip_marker``: an
  assertion removed or commented out; an exact comparison (``assertEqual``, ``toBe``,
  ``==``) turned into a looser one (``assertIn``, ``toContain``, truthiness); a tolerance
  (``rel=``, ``abs=``, ``delta``, ``places``, ``toBeCloseTo`` digits) widened; a skip, xfail,
  disabled or ``.only`` marker added.

The rules read lines, not syntax trees: the diff may be Python, JavaScript/TypeScript, Java
or shell, and a proposal is judged before anything compiles it. :func:`apply_diff` turns a
diff into the files it produces, refusing one that does not fit the given sources, so what
is judged is exactly what would be committed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Suggestion = Literal["pull_request", "quarantine"]

REASONS: Mapping[str, str] = {
    "not_a_diff": "the proposal is not a unified diff",
    "no_change": "the diff changes nothing but blank lines, comments or imports",
    "sleep": "adds or lengthens a fixed wait instead of waiting for a condition",
    "retry": "reruns the test or retries its assertion instead of removing the cause",
    "longer_timeout": "raises or adds a timeout",
    "removed_assertion": "removes an assertion",
    "looser_assertion": "replaces an exact assertion with a looser one",
    "wider_tolerance": "widens a numeric tolerance",
    "skip_marker": "skips, disables or isolates the test (skip, xfail, disabled, .only)",
}
"""Every reason :func:`check` can give, with the sentence a reviewer is shown."""

# Categories whose cause lies outside the test's code, or is not known: a pull request would
# be a guess, so the caller quarantines the test instead.
_QUARANTINE_CATEGORIES = frozenset({"unknown", "infrastructure"})


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """Whether a proposed diff may become a pull request, and what a reviewer should know:
    when ``allowed`` is false, ``reasons`` say why it was refused; when true, they are
    warnings (an evasive change next to a real one)."""

    allowed: bool
    reasons: tuple[str, ...] = ()


def suggestion_for(category: str | None) -> Suggestion:
    """What to offer for a test whose root cause is ``category``: a fix proposal, or
    quarantine when the cause is unknown or lies in the infrastructure rather than the code."""
    if category is None or category in _QUARANTINE_CATEGORIES:
        return "quarantine"
    return "pull_request"


# Unified diffs


@dataclass(frozen=True, slots=True)
class _Hunk:
    old_start: int
    lines: tuple[str, ...]  # each starts with " ", "-" or "+"


@dataclass(frozen=True, slots=True)
class _FilePatch:
    old_path: str | None  # None: the file is created
    new_path: str | None  # None: the file is deleted
    hunks: tuple[_Hunk, ...] = field(default=())


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


def _path(header: str) -> str | None:
    """The path of a ``---``/``+++`` line, without ``a/``/``b/`` or a trailing timestamp."""
    path = header[4:].split("\t", 1)[0].strip()
    if path == "/dev/null":
        return None
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def _parse(diff: str) -> tuple[_FilePatch, ...]:
    """The file patches of a unified diff. Hunk line counts are not trusted (hand-written
    and generated diffs often get them wrong); a hunk runs until the next header, and
    :func:`apply_diff` checks every line against the source instead."""
    lines = diff.splitlines()
    patches: list[_FilePatch] = []
    i = 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines)):
            i += 1
            continue
        if not lines[i + 1].startswith("+++ "):
            raise ValueError(f"line {i + 2}: '---' without '+++'")
        old_path, new_path = _path(lines[i]), _path(lines[i + 1])
        i += 2
        hunks: list[_Hunk] = []
        while i < len(lines) and (match := _HUNK_HEADER.match(lines[i])):
            i += 1
            body: list[str] = []
            while i < len(lines):
                line = lines[i]
                if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1][:4] == "+++ ":
                    break
                if line.startswith(("@@", "diff ")):
                    break
                if line.startswith("\\"):  # "\ No newline at end of file"
                    i += 1
                    continue
                if line == "":
                    line = " "  # a blank context line whose leading space was lost
                elif line[0] not in " +-":
                    break
                body.append(line)
                i += 1
            while body and body[-1] == " ":
                body.pop()
            if not any(line[0] in "+-" for line in body):
                raise ValueError(f"a hunk of {new_path or old_path} changes nothing")
            hunks.append(_Hunk(int(match.group(1)), tuple(body)))
        if not hunks:
            raise ValueError(f"no hunk for {new_path or old_path}")
        patches.append(_FilePatch(old_path, new_path, tuple(hunks)))
    if not patches:
        raise ValueError("no file header ('--- a/...', '+++ b/...')")
    return tuple(patches)


def apply_diff(diff: str, sources: Mapping[str, str]) -> dict[str, str]:
    """The files ``diff`` produces from ``sources`` (path -> text), by path.

    Raises :class:`ValueError` when ``diff`` is not a unified diff, touches a file that is
    not in ``sources`` (or creates, deletes or renames one), or does not fit the text: every
    context and removed line must be found, in order, as written (trailing spaces aside).
    """
    patched: dict[str, str] = {}
    for patch in _parse(diff):
        if patch.old_path != patch.new_path or patch.new_path is None:
            raise ValueError("a fix may only modify the given files")
        path = patch.new_path
        if path not in sources:
            raise ValueError(f"{path} is not one of the given files")
        patched[path] = _apply_file(patched.get(path, sources[path]), patch.hunks, path)
    return patched


def _apply_file(text: str, hunks: Iterable[_Hunk], path: str) -> str:
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    result: list[str] = []
    cursor = 0
    for hunk in hunks:
        old = [line[1:] for line in hunk.lines if line[0] != "+"]
        at = _find(lines, old, cursor, hunk.old_start - 1 if old else hunk.old_start)
        if at is None:
            raise ValueError(f"a hunk does not fit {path} (near line {hunk.old_start})")
        result.extend(lines[cursor:at])
        # Context lines keep the file's own text; only added lines come from the diff.
        kept = iter(lines[at : at + len(old)])
        for line in hunk.lines:
            if line[0] == " ":
                result.append(next(kept))
            elif line[0] == "-":
                next(kept)
            else:
                result.append(line[1:])
        cursor = at + len(old)
    result.extend(lines[cursor:])
    ending = newline if text.endswith(("\n", "\r")) or not text else ""
    return newline.join(result) + ending


def _find(lines: list[str], block: list[str], start: int, hint: int) -> int | None:
    """Where ``block`` occurs in ``lines`` at or after ``start``: the occurrence nearest the
    header's line number ``hint``."""
    wanted = [line.rstrip() for line in block]
    width = len(wanted)
    found = [
        at
        for at in range(start, len(lines) - width + 1)
        if [line.rstrip() for line in lines[at : at + width]] == wanted
    ]
    return min(found, key=lambda at: abs(at - hint)) if found else None


# The guard rails

_IGNORED = re.compile(
    r"""^(?:$
    |(?:\#|//|/\*|\*|<!--)                              # comments
    |(?:from\s+[\w.]+\s+)?import\b                      # Python, Java, ES modules
    |(?:const|let|var)\s+[\w{},\s]+=\s*require\(        # CommonJS
    |package\s+[\w.]+;?$)""",
    re.X,
)
_SLEEP = re.compile(
    r"""\b(?:time|asyncio|gevent|trio|anyio)\.sleep\s*\(
    |(?<![\w.])(?:sleep|usleep)\s*\(
    |\b(?:Thread|SystemClock)\.[Ss]leep\s*\(|\bTimeUnit\.\w+\.sleep\s*\(
    |\btime\.Sleep\s*\(|\bTask\.Delay\s*\(
    |(?<![\w.])setTimeout\s*\(
    |\bcy\.wait\s*\(\s*\d
    |\.waitForTimeout\s*\(|\bbrowser\.pause\s*\(
    |(?<![\w.])(?:delay|wait)\s*\(\s*\d
    |^sleep\s+\d""",
    re.X,
)
_RETRY = re.compile(
    r"""@pytest\.mark\.(?:flaky|rerun)|@flaky\b|\breruns\s*=|--reruns\b
    |\bjest\.retryTimes\s*\(|\bthis\.retries\s*\(|\.retries\s*\(\s*\d
    |\bretries\s*[:=]|\bretry\s*[:=]\s*\d
    |@(?:RepeatedTest|Retry\w*|RetryingTest|Rerun\w*|FlakyTest|Repeat)\b
    |@retry\b|\bstop_after_attempt\s*\(|\bRetryRule\b""",
    re.X,
)
_RETRY_LOOP = re.compile(
    r"""^(?:for\s+\w+\s+in\s+range\s*\(\s*\d+\s*\)
    |for\s*\(\s*(?:let|var|int)\s+\w+\s*=\s*0\s*;\s*\w+\s*<=?\s*\d+
    |(?:for|while)\b.*\b(?:retr\w*|attempts?|tries)\b
    |repeat\s*\(\s*\d+\s*\))""",
    re.X | re.I,
)
_RETRY_WORD = re.compile(r"\b(?:retr\w*|attempts?|tries)\b", re.I)
_CATCH = re.compile(r"^(?:try\s*[:{]|except\b|\}?\s*catch\b)")
# Lines that only hold a retry loop together: try/except, break, closing braces.
_LOOP_GLUE = re.compile(
    r"""^(?:try\s*[:{]|except\b.*:|\}?\s*catch\b.*|\}?\s*finally\b.*|break;?|continue;?|pass
    |[})\]]+;?|else\s*[:{]|\}\s*else\s*\{|raise;?|throw\b.*|return;?
    |if\b.*\b(?:retr\w*|attempts?|tries|i)\b.*)$""",
    re.X,
)
_TIMEOUT_SETTING = re.compile(
    r"""@pytest\.mark\.timeout\b|@Timeout\b|@Test\s*\(.*\btimeout\s*=
    |\b(?:jest|test)\.setTimeout\s*\(|\bthis\.timeout\s*\(|\.setDefault(?:Navigation)?Timeout\s*\(
    |^["']?\w*timeout\w*["']?\s*[:=]\s*[\d_.]+\s*[,;]?$
    |^\}\s*,\s*[\d_]+\s*\)\s*;?$""",
    re.X | re.I,
)
_TIMEOUT_WORD = re.compile(r"timeout", re.I)
# A test's timeout given as its last argument: ``}, 30000);`` (Jest, Mocha).
_TRAILING_TIMEOUT = re.compile(r",\s*[\d_]+(?:\s*\*\s*\d+)?\s*(?=\)\s*;?$)")
_TIMEOUT_ARGUMENT = re.compile(
    r"""\s*,?\s*\{?\s*["']?\w*timeout\w*["']?\s*[:=]\s*[\d_.]+(?:\s*\*\s*\d+)?\s*\}?""", re.X | re.I
)
_TOLERANCE_ARGUMENT = re.compile(
    r"\s*,?\s*\b(rel|abs|delta|epsilon|tolerance|atol|rtol|places|precision)\s*=\s*"
    r"(\d[\d_]*(?:\.\d+)?(?:[eE][-+]?\d+)?)"
)
_DIGIT_NAMES = frozenset({"places", "precision"})  # fewer digits is looser
_TOLERANCE_WORD = re.compile(
    r"""\b(?:rel|abs|delta|epsilon|tolerance|atol|rtol|places|precision)\s*=
    |toBeCloseTo\s*\(|closeTo\s*\(|isCloseTo\s*\(|\bapprox\s*\(|assertAlmostEqual|within\s*\(
    |\boffset\s*\(|withinPercentage\s*\(|byLessThan\s*\(""",
    re.X,
)
# Tolerances given as digits of precision: fewer digits is looser.
_DIGITS = re.compile(r"toBeCloseTo\s*\(|assertAlmostEqual\s*\(")
_SKIP = re.compile(
    r"""@pytest\.mark\.(?:skip|skipif|xfail)\b|\bpytest\.(?:skip|xfail)\s*\(|@unittest\.skip
    |\bself\.skipTest\s*\(|\b(?:it|test|describe|context)\.(?:skip|only|todo|fixme)\s*\(
    |(?<![\w.])(?:xit|xdescribe|xtest|fit|fdescribe)\s*\(|@Disabled\b|@Ignore\b
    |\bAssume\.|\bassume(?:True|False|That)\s*\(|\bt\.Skip(?:Now|f)?\s*\(|^(?:skip|pending)\b""",
    re.X,
)
_MARKER = re.compile(
    r"(?<![\w.])(?:[xf](it|describe|test)|(it|describe|test|context)\.(?:skip|only|todo|fixme))\s*\("
)
_ANNOTATION = re.compile(r"^@[\w.]+(?:\(.*\))?$")
_EMPTY_PARENTHESES = re.compile(r"\(\s*\)$")
_ASSERTION = re.compile(
    r"""^assert\b|\bassert\w*\s*\(|\bassert_\w+|\bassert\.\w+\s*\(|\bexpect\s*\(
    |\bassertThat\s*\(|\.should\b|\bshould\s*\(|\brequire\.\w+\s*\(|\bt\.(?:Error|Fatal)f?\s*\(""",
    re.X,
)
_LOOSE = re.compile(
    r"""\bassert(?:In|True|IsNotNone|Greater\w*|Less\w*|NotEqual|IsInstance|NotNull|Regex)\s*\(
    |\.toContain(?:Equal)?\s*\(|\.toBeTruthy\s*\(|\.toBeDefined\s*\(|\.not\.toBe(?:Null|Undefined)
    |\.toBe(?:GreaterThan|LessThan)\w*\s*\(|\.toMatch(?:Object)?\s*\(|\b(?:array|object|string)Containing
    |\.isNotNull\s*\(|\.contains\s*\(|\.isNotEmpty\s*\(|\.isTrue\s*\(|\.include\s*\(|\.to\.be\.ok\b
    |\.to\.exist\b|^assert\s+(?!.*(?:==|!=|\bis\b(?!\s+not\s+None)))""",
    re.X,
)
_EXACT = re.compile(
    r"""\bassert(?:Equals?|Same|ListEqual|DictEqual|TupleEqual|SetEqual|MultiLineEqual)\s*\(
    |\bassert_eq|\.toBe\s*\(|\.toEqual\s*\(|\.toStrictEqual\s*\(|\.isEqualTo\s*\(
    |\.(?:equal|eql|deepEqual|strictEqual|deepStrictEqual)\s*\(|^assert\b.*(?:==|\bis\b)""",
    re.X,
)
_NUMBER = re.compile(r"\d[\d_]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(slots=True, eq=False)
class _Line:
    sign: str  # "-" or "+"
    text: str  # stripped
    moved: bool = False  # the same text is removed and added elsewhere: re-indented or moved
    set_aside: bool = False  # part of an evasive change


def check(diff: str) -> GuardVerdict:
    """Whether ``diff`` may be proposed: refused when, the evasive changes (see the module
    docstring) and blank lines, comments and imports set aside, nothing else changes."""
    try:
        patches = _parse(diff)
    except ValueError:
        return GuardVerdict(False, ("not_a_diff",))
    reasons: list[str] = []
    meaningful = False
    for patch in patches:
        blocks = [block for hunk in patch.hunks for block in _blocks(hunk)]
        found, real = _judge_file(blocks)
        reasons.extend(r for r in found if r not in reasons)
        meaningful = meaningful or real
    if not meaningful:
        return GuardVerdict(False, tuple(reasons) or ("no_change",))
    return GuardVerdict(True, tuple(reasons))


def _blocks(hunk: _Hunk) -> list[list[_Line]]:
    """The runs of changed lines of a hunk, context lines between them."""
    blocks: list[list[_Line]] = [[]]
    for line in hunk.lines:
        if line[0] == " ":
            if blocks[-1]:
                blocks.append([])
        else:
            blocks[-1].append(_Line(line[0], line[1:].strip()))
    return [block for block in blocks if block]


def _judge_file(blocks: list[list[_Line]]) -> tuple[list[str], bool]:
    """The reasons found in one file's changes, and whether anything meaningful remains."""
    lines = [line for block in blocks for line in block]
    both = Counter(line.text for line in lines if line.sign == "-") & Counter(
        line.text for line in lines if line.sign == "+"
    )
    budget = {"-": Counter(both), "+": Counter(both)}
    for line in lines:
        if budget[line.sign][line.text] > 0:
            budget[line.sign][line.text] -= 1
            line.moved = True
    reasons: list[str] = []
    for block in blocks:
        reasons.extend(_judge_block(block))
    # Assertions removed (or commented out) without one taking their place.
    lost = [
        line
        for line in lines
        if line.sign == "-" and not line.moved and not line.set_aside and _is_assertion(line.text)
    ]
    gained = [
        line for line in lines if line.sign == "+" and not line.moved and _is_assertion(line.text)
    ]
    if len(lost) > len(gained):
        reasons.append("removed_assertion")
        for line in lost:
            line.set_aside = True
    meaningful = any(
        not line.moved and not line.set_aside and not _IGNORED.match(line.text) for line in lines
    )
    return list(dict.fromkeys(reasons)), meaningful


def _judge_block(block: list[_Line]) -> list[str]:
    removed = [line for line in block if line.sign == "-" and not line.moved]
    added = [line for line in block if line.sign == "+" and not line.moved]
    reasons: list[str] = []

    def aside(reason: str, *lines: _Line | None) -> None:
        reasons.append(reason)
        for line in lines:
            if line is not None:
                line.set_aside = True

    def counterpart(line: _Line, key: Callable[[str], str]) -> _Line | None:
        """The removed line ``line`` replaces, when they differ only where ``key`` looks
        away (numbers, a timeout or tolerance argument)."""
        wanted = key(line.text)
        return next((old for old in removed if key(old.text) == wanted), None)

    def annotation(line: _Line) -> _Line | None:
        """The annotation an added one takes the place of (``@Test`` -> ``@RepeatedTest(3)``)."""
        if not line.text.startswith("@"):
            return None
        return next((old for old in removed if _ANNOTATION.match(old.text)), None)

    for line in added:
        if _SKIP.search(line.text):
            before = counterpart(line, _unmarked) or annotation(line)
            aside("skip_marker", line, before)
        elif _RETRY.search(line.text):
            aside("retry", line, counterpart(line, _masked) or annotation(line))
        elif _SLEEP.search(line.text):
            before = counterpart(line, _masked) or next(
                (old for old in removed if _SLEEP.search(old.text)), None
            )
            if before is None or _loosened(_numbers(before.text), _numbers(line.text), True):
                aside("sleep", line, before)
        elif _TIMEOUT_WORD.search(line.text) or _TIMEOUT_SETTING.search(line.text):
            before = counterpart(line, _timeout_key)
            if before is None and _TIMEOUT_SETTING.search(line.text):
                aside("longer_timeout", line, annotation(line))
            elif before is not None and _longer_timeout(before.text, line.text):
                aside("longer_timeout", line, before)
        elif _TOLERANCE_WORD.search(line.text):
            before = counterpart(line, _tolerance_key)
            if before is not None and _wider_tolerance(before.text, line.text):
                aside("wider_tolerance", line, before)
    # An exact comparison turned into a looser one.
    exact_lost = [line for line in removed if _EXACT.search(line.text) and not line.set_aside]
    loose = [line for line in added if _LOOSE.search(line.text) and not line.set_aside]
    exact_kept = [
        line for line in added if _EXACT.search(line.text) and not _LOOSE.search(line.text)
    ]
    if loose and len(exact_lost) > len(exact_kept):
        aside("looser_assertion", *exact_lost, *loose)
    # A loop added around an assertion that retries it: named so, or catching its failure
    # (a loop over a range alone may just check several items).
    loop = [line for line in added if _RETRY_LOOP.match(line.text)]
    retrying = any(_RETRY_WORD.search(line.text) for line in loop) or any(
        _CATCH.match(line.text) for line in added
    )
    if retrying and any(line.sign == "+" and _is_assertion(line.text) for line in block):
        glue = [line for line in added if _LOOP_GLUE.match(line.text)]
        aside("retry", *loop, *glue)
    return reasons


def _masked(text: str) -> str:
    """``text`` with its numbers and spaces out of the way, to find a line changed only in
    its numbers."""
    return _NUMBER.sub("0", text.replace(" ", ""))


def _numbers(text: str) -> list[float]:
    return [float(n.replace("_", "")) for n in _NUMBER.findall(text)]


def _loosened(before: list[float], after: list[float], larger_is_looser: bool) -> bool:
    """Whether the first number that differs grew (``larger_is_looser``) or shrank."""
    for old, new in zip(before, after, strict=False):
        if old != new:
            return (new > old) == larger_is_looser
    return False


def _timeout_key(text: str) -> str:
    text = _TRAILING_TIMEOUT.sub("", _TIMEOUT_ARGUMENT.sub("", text))
    return _masked(_EMPTY_PARENTHESES.sub("", text))


def _unmarked(text: str) -> str:
    """A test's declaration without a skip or only marker (``it.skip(`` -> ``it(``)."""
    return _MARKER.sub(lambda m: f"{m.group(1) or m.group(2)}(", text)


def _timeouts(text: str) -> list[float]:
    """The timeout values of a line: its timeout arguments, else all its numbers (a
    statement such as ``jest.setTimeout(5000)``)."""
    parts = [m.group(0) for m in _TIMEOUT_ARGUMENT.finditer(text)]
    parts += [m.group(0) for m in _TRAILING_TIMEOUT.finditer(text)]
    return _numbers(" ".join(parts)) if parts else _numbers(text)


def _longer_timeout(before: str, after: str) -> bool:
    old, new = _timeouts(before), _timeouts(after)
    if new and not _TIMEOUT_WORD.search(before) and not _TRAILING_TIMEOUT.search(before):
        return True  # a timeout added where there was none
    return bool(old and new) and max(new) > max(old)


def _tolerance_key(text: str) -> str:
    return _masked(_TOLERANCE_ARGUMENT.sub("", text))


def _wider_tolerance(before: str, after: str) -> bool:
    old = {m.group(1): float(m.group(2)) for m in _TOLERANCE_ARGUMENT.finditer(before)}
    new = {m.group(1): float(m.group(2)) for m in _TOLERANCE_ARGUMENT.finditer(after)}
    if set(new) - set(old):
        return True  # a tolerance added
    if new:
        return any(
            new[name] != old[name] and (new[name] > old[name]) == (name not in _DIGIT_NAMES)
            for name in new
        )
    # Positional tolerances: digits of precision for toBeCloseTo and assertAlmostEqual.
    return _loosened(_numbers(before), _numbers(after), not _DIGITS.search(after))


def _is_assertion(text: str) -> bool:
    return bool(_ASSERTION.search(text)) and not _IGNORED.match(text)
