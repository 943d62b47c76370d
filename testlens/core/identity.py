"""A test's identity across report formats: the key, pytest node ids, matching, and the
file paths a test is known by.

Report formats name one test differently: pytest's JUnit XML writes file ``tests/test_x.py``,
classname ``tests.test_x.TestFoo`` and name ``test_a[1]`` for the node id
``tests/test_x.py::TestFoo::test_a[1]``; a Flakiness report nests it under suites. Jest, Mocha
and some JUnit and CTRF writers name the file by its absolute path on the machine that ran
it. This module is the one place that knows how those spellings relate.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from typing import NamedTuple

from .model import SUITE_SEPARATOR, Report


class TestKey(NamedTuple):
    """A test's identity, the same four fields as :attr:`testlens.core.model.TestCase.identity`.

    Being a tuple, a ``TestCase.identity`` can be used wherever a key is expected.
    """

    file: str
    suite: str
    classname: str
    name: str

    @classmethod
    def from_nodeid(cls, nodeid: str) -> TestKey:
        """Read a pytest node id (``path::Class::test[param]``) or a plain path (knapsack).

        ``::`` inside the parameter brackets belongs to the name, as in pytest's own ids.
        """
        head, bracket, params = nodeid.partition("[")
        parts = head.split("::")
        name = parts[-1] + bracket + params if len(parts) > 1 else ""
        file = parts[0] if len(parts) > 1 else nodeid
        return cls(file=file, suite="", classname="::".join(parts[1:-1]), name=name)

    @property
    def nodeid(self) -> str:
        """The pytest-style id; ``suite`` is not part of it, as pytest has no such level."""
        return "::".join(part for part in (self.file, self.classname, self.name) if part)

    @property
    def location(self) -> str:
        """The file a runner loads for this test; JUnit reports without a ``file`` attribute
        name the class instead, which for Java and .NET is the file's unit."""
        return self.file or self.classname or self.suite


TestKey.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class


def class_path(key: TestKey) -> str:
    """The class or describe path of a test within its file, ``::``-separated."""
    if not key.classname:
        return key.suite.replace(SUITE_SEPARATOR, "::")
    module = key.file.removesuffix(".py").replace("/", ".")
    if key.file.endswith(".py") and (key.classname + ".").startswith(module + "."):
        return key.classname[len(module) + 1 :].replace(".", "::")
    return key.classname


def pytest_nodeid(key: TestKey) -> str:
    """The pytest-style id of a stored test (``file::Class::name``), whatever report it came
    from: pytest's JUnit XML spells the class as a dotted path repeating the module, which is
    no part of a node id."""
    return "::".join(part for part in (key.file, class_path(key), key.name) if part)


def match_tests(
    requested: Collection[TestKey], stored: Collection[TestKey]
) -> dict[TestKey, TestKey]:
    """Map each requested test to the stored test whose history it gets (unmatched: absent).

    Report formats name one test differently: pytest's JUnit XML writes file
    ``tests/test_x.py``, classname ``tests.test_x.TestFoo``, name ``test_a[1]`` for the node
    id ``tests/test_x.py::TestFoo::test_a[1]``, and a Flakiness report nests it under suites.
    So a requested test matches, in this order:

    1. the stored test with the same identity (file, suite, classname, name);
    2. the stored test with the same file and name whose class path ends in the same
       component (split on ``.`` and ``::``);
    3. the stored test with the same file and name, if only one has them.

    The class path is the classname, less the file's dotted module path that pytest's JUnit
    puts in front (so a module-level pytest test has none), or the suite titles when there
    is no classname (Flakiness); a title such as ``TestLogin::test_ok`` (pytest-flakiness)
    carries its class path in front of the name. A step that finds several stored tests
    matches none: another test's history is a worse guess than the file-level fallback that
    an unmatched test gets from ``predict``.
    """
    by_name: dict[tuple[str, str], list[tuple[str, TestKey]]] = {}
    for key in stored:
        file, name, last = _loose(key)
        by_name.setdefault((file, name), []).append((last, key))
    matches: dict[TestKey, TestKey] = {}
    for key in requested:
        if key in stored:
            matches[key] = key
            continue
        file, name, last = _loose(key)
        named = by_name.get((file, name), [])
        same_class = [found for found_last, found in named if found_last == last]
        candidates = [found for _, found in named]
        for found in (same_class, candidates):
            if len(found) == 1:
                matches[key] = found[0]
                break
    return matches


def _loose(key: TestKey) -> tuple[str, str, str]:
    """(file, bare name, last class component): what steps 2 and 3 of matching compare."""
    head, bracket, params = key.name.partition("[")
    prefix, _, bare = head.rpartition("::")
    path = prefix or class_path(key)
    return key.file, bare + bracket + params, path.rpartition("::")[2].rpartition(".")[2]


PYTEST_SUITE = "pytest"
"""The ``<testsuite>`` name pytest's JUnit XML writer gives by default."""


def pytest_key(identity: tuple[str, str, str, str]) -> TestKey | None:
    """The one key of a pytest test, whatever report spelled it; None if it names none.

    pytest's JUnit XML writes ``classname="tests.test_x.TestA"`` (with ``file`` only in the
    xunit1 family), pytest-json-report nests classes with dots, testlens's plugin writes
    ``file`` and ``A::B``, and ``testlens shard`` asks by node id. All of them become
    ``(file, "", "A::B", name)``: the node id's parts. Without a ``file`` the module path is
    read off the classname up to its first capitalised part (pytest collects classes named
    ``Test*`` and modules ``test_*.py``); a test whose file does not end in ``.py`` is not
    taken for a pytest test.
    """
    file, _suite, classname, name = identity
    if not file:
        parts = classname.split(".")
        first_class = next((i for i, part in enumerate(parts) if part[:1].isupper()), len(parts))
        if first_class == 0 or not name:
            return None
        file = "/".join(parts[:first_class]) + ".py"
    if not file.endswith(".py"):
        return None
    module = file[:-3].replace("/", ".")
    if classname == module:
        path = ""
    elif classname.startswith(module + "."):
        path = classname[len(module) + 1 :]
    else:
        path = classname
    return TestKey(file, "", path.replace(".", "::"), name)


# --- file paths ----------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[\\/]+")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_GITHUB_WORK = frozenset({"work", "_work", "__w"})
_CIRCLECI_HOMES = (("home", "circleci"), ("root",), ("users", "distiller"), ("users", "circleci"))


def is_absolute(path: str) -> bool:
    """Absolute on POSIX (``/x``) or on Windows (``C:\\x``, ``C:/x``, ``\\\\host\\share``),
    wherever the path is read: a report names paths of the machine that ran the tests."""
    return path.startswith(("/", "\\")) or _DRIVE.match(path) is not None


def _split(path: str) -> tuple[list[str], list[str]] | None:
    """(segments as written, segments to compare) of an absolute path; None for another.

    The first segment is the drive (``C:``), or empty for a path from the root; empty and
    ``.`` segments (``a//b``, ``a/./b``) are dropped. Windows paths compare case-insensitively,
    as Windows file systems do, so ``c:\\Work`` is ``C:\\work``; POSIX paths compare exactly.
    """
    if not is_absolute(path):
        return None
    first, *rest = _SEPARATORS.split(path)
    parts = [first, *(part for part in rest if part and part != ".")]
    windows = bool(first) or path.startswith("\\")
    return parts, [part.casefold() for part in parts] if windows else parts


def path_under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` with ``/`` separators, when both are absolute and the
    path lies below the root (a trailing separator on the root makes no difference); else
    None."""
    split, base = _split(path), _split(root)
    if split is None or base is None:
        return None
    (parts, compared), (_, root_compared) = split, base
    depth = len(root_compared)
    if len(compared) <= depth or compared[:depth] != root_compared:
        return None
    return "/".join(parts[depth:])


def _github(segments: list[str]) -> int | None:
    """``/github/workspace`` (container actions), else ``<work>/<repo>/<repo>`` in a runner's
    work directory: ``/home/runner/work``, ``/Users/runner/work``, a self-hosted runner's
    ``_work``, a container job's ``/__w``, and ``D:\\a`` on Windows."""
    if segments[1:3] == ["github", "workspace"]:
        return 3
    for i in range(1, len(segments) - 2):
        on_drive = i == 1 and segments[0].endswith(":")
        work = segments[i] in _GITHUB_WORK or (on_drive and segments[i] == "a")
        if work and segments[i + 1] == segments[i + 2]:
            return i + 3
    return None


def _circleci(segments: list[str]) -> int | None:
    """``~/project``, CircleCI's default working directory, in its images' home directories."""
    for home in _CIRCLECI_HOMES:
        end = len(home) + 2
        if tuple(segments[1:end]) == (*home, "project"):
            return end
    return None


def _buildkite(segments: list[str]) -> int | None:
    """``builds/<agent>/<org>/<pipeline>`` in the agent's directory (``/var/lib/buildkite-agent``,
    ``/buildkite`` in its container image, ``~/.buildkite-agent``)."""
    for i in range(1, len(segments) - 4):
        if "buildkite" in segments[i] and segments[i + 1] == "builds":
            return i + 5
    return None


def _jenkins(segments: list[str]) -> int | None:
    """``workspace/<job>`` below a Jenkins directory (``/var/jenkins_home``,
    ``/var/lib/jenkins``, an agent's ``/home/jenkins/agent``, ``C:\\Jenkins``)."""
    home = next((i for i, segment in enumerate(segments) if "jenkins" in segment), None)
    if home is None:
        return None
    return next((i + 2 for i in range(home + 1, len(segments)) if segments[i] == "workspace"), None)


_CI_CHECKOUTS = (_github, _circleci, _buildkite, _jenkins)


def _checkout_end(parts: list[str], name: str | None) -> int | None:
    """How many leading segments of an absolute path are the checkout, going by the CI
    layouts above, else by the first segment that is the repository's name; None when
    neither tells or nothing would be left of the path. Compared case-insensitively:
    these are names of directories, not of files."""
    segments = [part.lower() for part in parts]
    ends = [rule(segments) for rule in _CI_CHECKOUTS]
    if name and name in segments[1:]:
        ends.append(segments.index(name, 1) + 1)
    return next((end for end in ends if end is not None and end < len(segments)), None)


def relative_path(path: str, root: str | None = None, repo: str | None = None) -> str:
    """A test file's path as part of its identity: relative to the repository, whichever
    machine, checkout directory or shard wrote it.

    An absolute path is made relative to ``root`` (the repository's directory on the machine
    that ran the tests) when it lies below it. Otherwise (no root, a path outside it), it
    is cut after the checkout directory of the default layout of a CI system: GitHub
    Actions' ``<work>/<repo>/<repo>/`` and ``/github/workspace/``, CircleCI's
    ``~/project/``, Buildkite's ``builds/<agent>/<org>/<pipeline>/``, Jenkins'
    ``workspace/<job>/``; else after the first directory named like the repository
    (``repo`` is ``owner/name``; GitLab's ``/builds/<group>/<name>/``, a clone in
    ``~/src/<name>/``). The first directory rather than the last, because monorepos often
    hold a package named like the repository (``packages/<name>/``). A path none of these
    tells about is kept as written, absolute.

    The answer depends on the path, the root and the repository only, never on the other
    paths of a report: so the shards of one run, each with its own share of the files, give
    a test the same identity. A relative path is kept as written.
    """
    if root:
        below = path_under(path, root)
        if below is not None:
            return below
    split = _split(path)
    if split is None:
        return path
    parts = split[0]
    end = _checkout_end(parts, repo.rpartition("/")[2].lower() if repo else None)
    return path if end is None else "/".join(parts[end:])


def _renamed(value: str, old: str, new: str) -> str:
    """``value`` with the file path ``old`` it repeats, whole or as its outermost suite,
    spelled ``new``."""
    if value == old:
        return new
    if value.startswith(old + SUITE_SEPARATOR):
        return new + value[len(old) :]
    return value


def relative_to_root(report: Report, root: str | None, repo: str | None = None) -> Report:
    """The report with each test's file as :func:`relative_path` gives it.

    A name, suite or classname that repeats the file path (a Jest file that failed to load
    is a test named after its file; bun names suites after files) follows it, so the whole
    identity stops depending on the checkout. Tests whose file does not change are the
    report's own objects; the others are copies, so the given report is left as it was. Two
    tests that come to share one identity (a report naming one file both ways) stay two
    entries, to be folded like any repeated entry.
    """
    moved: dict[str, str] = {}
    tests = []
    for test in report.tests:
        old = test.file
        new = moved.get(old)
        if new is None:
            new = moved[old] = relative_path(old, root, repo)
        if new != old:
            test = dataclasses.replace(
                test,
                file=new,
                suite=_renamed(test.suite, old, new),
                classname=_renamed(test.classname, old, new),
                name=_renamed(test.name, old, new),
            )
        tests.append(test)
    if all(new == old for old, new in moved.items()):
        return report
    return dataclasses.replace(report, tests=tests)
