"""One pytest test is one test, however it reaches testlens: pytest's own JUnit XML (both
families), pytest-json-report, the testlens plugin, and ``testlens shard`` asking by node
id. Every pytest report here is written by the real tool, running a real project.

One Jest test is one test whichever shard's report names it by its absolute path: the
upload's ``root`` (or, without one, the CI checkout the path shows) makes it relative, never
the files that one report happens to hold."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from builders import make_tenant, upload

PROJECT = {
    "tests/__init__.py": "",
    "tests/test_shop.py": (
        "import pytest\n\n"
        "class TestCart:\n"
        "    def test_add(self):\n        pass\n\n"
        "    @pytest.mark.parametrize('n', [1, 2])\n"
        "    def test_many(self, n):\n        pass\n\n"
        "    class TestNested:\n"
        "        def test_deep(self):\n            pass\n\n"
        "def test_module_level():\n    pass\n"
    ),
}
NODE_IDS = {
    "tests/test_shop.py::TestCart::test_add",
    "tests/test_shop.py::TestCart::test_many[1]",
    "tests/test_shop.py::TestCart::test_many[2]",
    "tests/test_shop.py::TestCart::TestNested::test_deep",
    "tests/test_shop.py::test_module_level",
}


@pytest.fixture
def admin_tenant(database, server):
    admin = make_tenant(database, server, scopes=("admin",))
    yield admin
    admin.client.close()


@pytest.fixture
def reports(project) -> dict[str, bytes]:
    """The project's results as each tool writes them."""
    for path, text in PROJECT.items():
        target = project.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    written: dict[str, bytes] = {}
    for name, args in {
        "junit-xunit2": ["--junitxml=out.xml"],
        "junit-xunit1": ["--junitxml=out.xml", "-o", "junit_family=xunit1"],
        "pytest-json": ["--json-report", "--json-report-file=out.json"],
    }.items():
        result = project.runpytest_subprocess("-p", "no:cacheprovider", *args, "tests")
        assert result.ret == 0, result.stdout.str()
        out = project.path / ("out.json" if name == "pytest-json" else "out.xml")
        written[name] = out.read_bytes()
        out.unlink()
    return written


def test_every_report_of_one_pytest_test_lands_on_one_test(tenant, reports, project, server):
    repo = f"acme/ident-{uuid.uuid4().hex[:6]}"
    for number, (name, data) in enumerate(reports.items()):
        response = upload(tenant.client, data, filename=f"{name}.out", repo=repo,
                          commit=f"{number}" * 40)  # fmt: skip
        assert response.status_code == 201, response.text
    # The plugin's own upload of the same project.
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--testlens", f"--testlens-server={server.url}",
        f"--testlens-token={tenant.key}", f"--testlens-repo={repo}", "tests",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    assert "testlens: uploaded 5 tests" in result.stdout.str()
    repos = tenant.client.get("/api/repos").json()["repos"]
    repo_id = next(r["id"] for r in repos if r["name"] == repo)
    tests = tenant.client.get(f"/api/repos/{repo_id}").json()["tests"]
    assert len(tests) == len(NODE_IDS), [(t["class_name"], t["name"]) for t in tests]
    assert {t["total_runs"] for t in tests} == {4}
    assert all(t["file_path"] == "tests/test_shop.py" for t in tests)
    detail = tenant.client.get(f"/api/tests/{tests[0]['id']}").json()
    assert len(detail["recent_runs"]) == 4


def test_the_quarantine_of_a_junit_uploaded_test_reaches_the_plugin(
    admin_tenant, reports, project, server
):
    repo = f"acme/ident-{uuid.uuid4().hex[:6]}"
    junit = reports["junit-xunit2"]
    assert upload(admin_tenant.client, junit, repo=repo).status_code == 201
    repos = admin_tenant.client.get("/api/repos").json()["repos"]
    repo_id = next(r["id"] for r in repos if r["name"] == repo)
    tests = admin_tenant.client.get(f"/api/repos/{repo_id}").json()["tests"]
    deep = next(t for t in tests if t["name"] == "test_deep")
    made = admin_tenant.client.post(f"/api/tests/{deep['id']}/quarantine", json={"reason": "x"})
    assert made.status_code == 201
    listed = admin_tenant.client.get("/api/quarantine", params={"repo": repo}).json()["tests"]
    assert [t["nodeid"] for t in listed] == ["tests/test_shop.py::TestCart::TestNested::test_deep"]
    # A failing version of that test is xfail under the plugin, the others still pass.
    shop = Path(project.path / "tests" / "test_shop.py")
    passing = "def test_deep(self):\n            pass"
    shop.write_text(shop.read_text().replace(passing, passing.replace("pass", "assert False")))
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--testlens", f"--testlens-server={server.url}",
        f"--testlens-token={admin_tenant.key}", f"--testlens-repo={repo}",
        "--testlens-quarantine", "--testlens-no-upload", "tests",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=4, xfailed=1)


def test_shard_requests_by_node_id_find_the_history_of_junit_uploads(tenant, reports):
    repo = f"acme/ident-{uuid.uuid4().hex[:6]}"
    assert upload(tenant.client, reports["junit-xunit2"], repo=repo).status_code == 201
    listing = tenant.client.get("/api/durations", params={"repo": repo}).json()
    assert {t["nodeid"] for t in listing["tests"]} == NODE_IDS
    plan = tenant.client.post(
        "/api/shard-plans", json={"repo": repo, "shards": 2, "tests": sorted(NODE_IDS)}
    ).json()
    assert plan["sources"]["history"] == len(NODE_IDS)
    assert json.dumps(plan)  # a plain JSON document


def test_merging_two_entries_of_one_test_leaves_the_parsed_report_as_it_was():
    """A report is stored again when a concurrent duplicate wins the race: merging entries
    in place would give the second store each merged test's attempts twice."""
    from testlens.core.model import Attempt, Report
    from testlens.core.model import TestCase as Entry
    from testlens.server.ingest.service import keyed_tests

    report = Report(
        "junit",
        [
            Entry("test_a", "tests.test_x", file="tests/test_x.py", attempts=[Attempt("failed")]),
            Entry("test_a", "tests.test_x", attempts=[Attempt("passed")]),
        ],
        recovered=True,
        recovered_reason="Premature end of data",
    )
    for _ in range(2):
        merged, _keys = keyed_tests(report, "pytest")
        assert [[a.status for a in t.attempts] for t in merged.tests] == [["failed", "passed"]]
        # what the run records of the file is kept
        assert (merged.recovered, merged.recovered_reason) == (True, "Premature end of data")
    assert [len(t.attempts) for t in report.tests] == [1, 1]


CHECKOUT = "/home/runner/work/shop/shop"
"""Where GitHub Actions checks out ``acme/shop``: what ``jest --json`` writes paths under."""
SHARDS = {
    "1/2": {"packages/a/test/cart.test.js": ["adds", "removes"]},
    "2/2": {"packages/b/src/pay.test.js": ["pays"], "packages/b/src/broken.test.js": []},
}
"""Two shards: all of shard 1's files lie in packages/a, all of shard 2's in packages/b."""


def jest_json(files: dict[str, list[str]]) -> bytes:
    """A ``jest --json`` report of ``files`` (below the checkout) and their passing tests; a
    file without tests failed to load, which Jest reports on the file alone."""
    results = []
    for file, titles in files.items():
        assertions = [
            {"ancestorTitles": ["suite"], "title": title, "status": "passed", "duration": 3,
             "failureMessages": [], "invocations": 1}
            for title in titles
        ]  # fmt: skip
        results.append(
            {"name": f"{CHECKOUT}/{file}", "status": "passed" if titles else "failed",
             "message": "" if titles else "Cannot find module './gone'",
             "assertionResults": assertions}
        )  # fmt: skip
    tests = sum(len(titles) for titles in files.values())
    return json.dumps({"numTotalTests": tests, "testResults": results}).encode()


def stored_tests(client, repo: str) -> dict[tuple[str, str], dict]:
    repos = client.get("/api/repos").json()["repos"]
    repo_id = next(r["id"] for r in repos if r["name"] == repo)
    tests = client.get(f"/api/repos/{repo_id}").json()["tests"]
    return {(t["file_path"], t["name"]): t for t in tests}


@pytest.mark.parametrize("root", [CHECKOUT, CHECKOUT + "/", None], ids=["root", "slash", "none"])
def test_shards_of_a_jest_run_give_each_test_one_identity(tenant, root):
    repo = f"acme/shop-{uuid.uuid4().hex[:6]}"
    fields = {"repo": repo, "framework": "jest", "workflow_run_id": "77", "commit": "a" * 40}
    if root is not None:
        fields["root"] = root
    for shard, files in SHARDS.items():
        response = upload(tenant.client, jest_json(files), "jest.json", shard=shard, **fields)
        assert response.status_code == 201, response.text
    by_shard = stored_tests(tenant.client, repo)
    assert set(by_shard) == {
        ("packages/a/test/cart.test.js", "adds"),
        ("packages/a/test/cart.test.js", "removes"),
        ("packages/b/src/pay.test.js", "pays"),
        # The file that did not load is an error named after the file, relative too.
        ("packages/b/src/broken.test.js", "packages/b/src/broken.test.js"),
    }
    # The next run, unsharded: every file in one report, so their common directory is
    # packages/; the tests keep their ids and gain a run each.
    whole = {file: titles for files in SHARDS.values() for file, titles in files.items()}
    fields.update(workflow_run_id="78", commit="b" * 40)
    assert upload(tenant.client, jest_json(whole), "jest.json", **fields).status_code == 201
    after = stored_tests(tenant.client, repo)
    assert {key: t["id"] for key, t in after.items()} == {
        key: t["id"] for key, t in by_shard.items()
    }
    assert {t["total_runs"] for t in after.values()} == {2}
