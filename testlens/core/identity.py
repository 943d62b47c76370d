"""A test's identity across report formats: the key, pytest node ids, and matching.

Report formats name one test differently: pytest's JUnit XML writes file ``tests/test_x.py``,
classname ``tests.test_x.TestFoo`` and name ``test_a[1]`` for the node id
``tests/test_x.py::TestFoo::test_a[1]``; a Flakiness report nests it under suites. This module
is the one place that knows how those spellings relate.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from .model import SUITE_SEPARATOR


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
