"""A test's file as part of its identity: absolute paths made relative to the upload's root,
else to a CI checkout or the repository's directory, the same for every report naming them."""

from __future__ import annotations

import dataclasses

import pytest

from testlens.core.identity import is_absolute, path_under, relative_path, relative_to_root
from testlens.core.model import Attempt, Report, TestCase

GITHUB = "/home/runner/work/shop/shop"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/x/a.js", True),
        ("\\\\host\\share\\a.js", True),
        ("C:\\a\\b.js", True),
        ("c:/a/b.js", True),
        ("a/b.js", False),
        ("./a.js", False),
        ("C:a.js", False),  # relative to drive C's current directory
        ("", False),
    ],
)
def test_absolute_paths_of_either_system(path, expected):
    assert is_absolute(path) is expected


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        (f"{GITHUB}/test/cart.test.js", GITHUB, "test/cart.test.js"),
        (f"{GITHUB}/test/cart.test.js", GITHUB + "/", "test/cart.test.js"),
        (f"{GITHUB}//test/./cart.test.js", GITHUB, "test/cart.test.js"),
        ("/a/b.js", "/", "a/b.js"),
        # Windows: backslashes or slashes on either side, the drive and names in any case.
        ("C:\\work\\shop\\test\\a.test.js", "C:\\work\\shop", "test/a.test.js"),
        ("c:\\work\\shop\\test\\a.test.js", "C:\\work\\shop\\", "test/a.test.js"),
        ("C:/work/shop/test/a.test.js", "c:\\work\\shop", "test/a.test.js"),
        ("D:\\A\\Shop\\Shop\\Test\\A.test.js", "d:\\a\\shop\\shop", "Test/A.test.js"),
        ("\\\\host\\share\\shop\\a.test.js", "\\\\host\\share\\shop", "a.test.js"),
        # POSIX names are case-sensitive: another directory.
        ("/Home/runner/a.js", "/home/runner", None),
        # Not strictly below the root, or not comparable with it.
        (GITHUB, GITHUB, None),
        ("/home/runner/work/shop/shop-lib/a.js", GITHUB, None),
        ("D:\\work\\shop\\a.js", "C:\\work\\shop", None),
        ("/work/shop/a.js", "C:\\work\\shop", None),
        ("test/a.js", GITHUB, None),
        (f"{GITHUB}/a.js", "home/runner/work/shop/shop", None),
    ],
)
def test_path_under_a_root(path, root, expected):
    assert path_under(path, root) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # GitHub Actions: hosted Linux and macOS, self-hosted, container jobs, Windows.
        ("/home/runner/work/shop/shop/test/a.js", "test/a.js"),
        ("/Users/runner/work/shop/shop/test/a.js", "test/a.js"),
        ("/opt/actions-runner/_work/shop/shop/test/a.js", "test/a.js"),
        ("/__w/shop/shop/test/a.js", "test/a.js"),
        ("D:\\a\\shop\\shop\\test\\a.js", "test/a.js"),
        ("/github/workspace/test/a.js", "test/a.js"),
        # A checkout of another repository in the job: its own name twice.
        ("/home/runner/work/shop/shop/packages/shop/a.js", "packages/shop/a.js"),
        ("/home/runner/work/tools/tools/a.js", "a.js"),
        # CircleCI's ~/project in its images.
        ("/home/circleci/project/test/a.js", "test/a.js"),
        ("/root/project/test/a.js", "test/a.js"),
        ("/Users/distiller/project/test/a.js", "test/a.js"),
        ("C:\\Users\\circleci\\project\\test\\a.js", "test/a.js"),
        # Buildkite: builds/<agent>/<org>/<pipeline>, whatever the pipeline is called.
        ("/var/lib/buildkite-agent/builds/ci-1/acme/shop-ci/test/a.js", "test/a.js"),
        ("/buildkite/builds/ci-1/acme/storefront/test/a.js", "test/a.js"),
        # Jenkins: workspace/<job>, concurrent builds' @2 included.
        ("/var/jenkins_home/workspace/shop-main/test/a.js", "test/a.js"),
        ("/home/jenkins/agent/workspace/shop-main@2/test/a.js", "test/a.js"),
        ("C:\\ProgramData\\Jenkins\\.jenkins\\workspace\\shop\\test\\a.js", "test/a.js"),
        # GitLab and local clones: the first directory named like the repository.
        ("/builds/acme/shop/test/a.js", "test/a.js"),
        ("/builds/x1y2/0/acme/shop/test/a.js", "test/a.js"),
        ("/builds/acme/shop/packages/shop/test/a.js", "packages/shop/test/a.js"),
        ("/home/dev/src/Shop/test/a.js", "test/a.js"),
        # Nothing says where the repository begins: kept as written.
        ("/tmp/build/test/a.js", "/tmp/build/test/a.js"),
        ("/home/runner/work/tools/tools", "/home/runner/work/tools/tools"),
        ("/var/jenkins_home/workspace/shop-main", "/var/jenkins_home/workspace/shop-main"),
        ("C:\\build\\test\\a.js", "C:\\build\\test\\a.js"),
        # Relative paths are the report's own.
        ("test/a.js", "test/a.js"),
        ("test\\a.js", "test\\a.js"),
    ],
)
def test_without_a_root_the_checkout_is_recognised(path, expected):
    assert relative_path(path, None, "acme/shop") == expected


def test_the_root_wins_and_other_paths_fall_back():
    root = "/srv/ci/checkout"
    assert relative_path(f"{root}/shop/test/a.js", root, "acme/shop") == "shop/test/a.js"
    assert relative_path("/builds/acme/shop/test/a.js", root, "acme/shop") == "test/a.js"
    assert relative_path("/tmp/elsewhere/a.js", root, "acme/shop") == "/tmp/elsewhere/a.js"
    # Without a repository only the CI layouts are known.
    assert relative_path("/builds/acme/shop/test/a.js") == "/builds/acme/shop/test/a.js"
    assert relative_path("/github/workspace/test/a.js") == "test/a.js"


def test_ci_layouts_come_before_the_repository_name():
    # The job's checkout is a directory named like the repository's package, not the repository.
    path = "/var/lib/buildkite-agent/builds/ci-1/acme/shop/packages/shop/a.js"
    assert relative_path(path, None, "acme/shop") == "packages/shop/a.js"


def jest_error(file: str) -> TestCase:
    """A Jest file that failed to load: an error named after its file."""
    return TestCase(name=file, file=file, attempts=[Attempt("error", message="boom")])


def test_shards_of_one_run_give_each_test_one_identity():
    """The common directory of shard 1's files is packages/a, of shard 2's packages/b; the
    identity of a test must come out the same in both and in the whole run."""
    a = TestCase("adds", suite="cart", file=f"{GITHUB}/packages/a/test/cart.test.js")
    b = TestCase("pays", suite="pay", file=f"{GITHUB}/packages/b/test/pay.test.js")
    shards = [Report("jest", [a]), Report("jest", [b]), Report("jest", [a, b])]
    for root in (GITHUB, None):
        identities = [
            {t.identity for t in relative_to_root(shard, root, "acme/shop").tests}
            for shard in shards
        ]
        assert (
            identities[2]
            == identities[0] | identities[1]
            == {
                ("packages/a/test/cart.test.js", "cart", "", "adds"),
                ("packages/b/test/pay.test.js", "pay", "", "pays"),
            }
        )


def test_fields_that_repeat_the_file_follow_it_and_the_report_is_left_as_it_was():
    file = f"{GITHUB}/test/broken.test.js"
    suite_of_file = TestCase("t", suite=f"{file} > cart", file=file)
    unrelated = TestCase(f"{file}x", suite=f"{file}x > cart", classname="Cart", file=file)
    report = Report("jest", [jest_error(file), suite_of_file, unrelated])
    moved = relative_to_root(report, GITHUB)
    assert [t.identity for t in moved.tests] == [
        ("test/broken.test.js", "", "", "test/broken.test.js"),
        ("test/broken.test.js", "test/broken.test.js > cart", "", "t"),
        ("test/broken.test.js", f"{file}x > cart", "Cart", f"{file}x"),
    ]
    assert dataclasses.replace(moved, tests=report.tests) == report  # the rest is kept
    assert moved.tests[0].attempts == report.tests[0].attempts
    assert [t.file for t in report.tests] == [file] * 3
    assert report.tests[0].name == file


def test_a_report_with_nothing_to_move_is_returned_as_it_is():
    report = Report("junit", [TestCase("t", file="tests/test_a.py"), jest_error("/tmp/x/a.js")])
    assert relative_to_root(report, GITHUB, "acme/shop") is report
    assert relative_to_root(report, None) is report
