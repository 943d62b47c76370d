"""``testlens shard`` and ``testlens durations export`` against real duration files and the
real server."""

from __future__ import annotations

import json
import random
import time

import pytest
from builders import free_port, upload
from click.testing import CliRunner
from corpus import DURATIONS

from testlens.cli import main
from testlens.core.durations import parse_durations

PGMPY = DURATIONS / "pgmpy__pgmpy" / "snapshots"
NF_METRO = DURATIONS / "seqeralabs__nf-metro" / "snapshots" / "2026-07-26_f565043e93.json"
KNAPSACK = DURATIONS / "dfe-digital__early-careers-framework" / "snapshots"


def shard(*args, input=None):
    result = CliRunner().invoke(main, ["shard", *args], input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def ids_of(result) -> list[str]:
    return result.stdout.splitlines()


def every_shard(tests, shards, *options, seed=0):
    """What each of ``shards`` nodes prints, every node listing the tests in its own order."""
    out = []
    for index in range(shards):
        mine = list(tests)
        random.Random(seed + index).shuffle(mine)
        out.append(
            ids_of(
                shard(
                    "--shards",
                    str(shards),
                    "--index",
                    str(index),
                    *options,
                    "-",
                    input="\n".join(mine),
                )
            )
        )
    return out


def assert_partition(shards, tests):
    flat = [test for one in shards for test in one]
    assert len(flat) == len(set(flat)), "a test is on two shards"
    assert set(flat) == set(tests), "a test is on no shard"


def seconds_by_id(path) -> dict[str, float]:
    return {key.nodeid: ms / 1000 for key, ms in parse_durations(path.read_bytes()).items()}


def assert_balanced(shards, seconds, slack=0.01):
    """The slowest shard is within ``slack`` of the best any split could do."""
    loads = [sum(seconds[test] for test in one) for one in shards]
    bound = max(sum(loads) / len(shards), max(seconds.values()))
    assert max(loads) <= bound * (1 + slack), loads


def test_pytest_split_file_partitions_and_balances_a_large_suite():
    tests = list(json.loads(NF_METRO.read_text()))
    shards = every_shard(tests, 4, "--durations", str(NF_METRO))
    assert_partition(shards, tests)
    assert_balanced(shards, seconds_by_id(NF_METRO))


def test_new_tests_count_as_the_mean_of_known_ones():
    """Durations from June, tests from September: tests added since count as the mean."""
    old, new = sorted(PGMPY.glob("*.json"))
    known = seconds_by_id(old)
    tests = list(json.loads(new.read_text()))
    added = [test for test in tests if test not in known]
    assert added, "the snapshots differ"
    shards = every_shard(tests, 3, "--durations", str(old))
    assert_partition(shards, tests)
    listed = [known[test] for test in tests if test in known]
    assert_balanced(shards, {test: known.get(test, sum(listed) / len(listed)) for test in tests})


def test_mean_is_over_the_listed_tests_as_pytest_split_does(tmp_path):
    durations = tmp_path / ".test_durations"
    durations.write_text(json.dumps({"t.py::a": 10.0, "t.py::b": 2.0, "gone.py::z": 100.0}))
    # c and d count 6 s each (mean of a and b; z is no longer listed): {a, b} | {c, d}.
    shards = every_shard(
        ["t.py::a", "t.py::b", "t.py::c", "t.py::d"], 2, "--durations", str(durations)
    )
    assert sorted(map(sorted, shards)) == [["t.py::a", "t.py::b"], ["t.py::c", "t.py::d"]]


def test_knapsack_report_splits_spec_files():
    report = sorted(KNAPSACK.glob("*.json"))[-1]
    specs = list(json.loads(report.read_text()))
    shards = every_shard(specs, 4, "--durations", str(report))
    assert_partition(shards, specs)
    assert_balanced(shards, seconds_by_id(report), slack=0.02)


@pytest.mark.parametrize("group_by", ["file", "suite"])
def test_group_by_keeps_groups_on_one_shard(group_by):
    """Unless one group alone outweighs a shard's even share: it is spread rather than left
    to set the length of the whole run."""
    _, path = sorted(PGMPY.glob("*.json"))
    seconds = seconds_by_id(path)
    shards = every_shard(list(seconds), 3, "--durations", str(path), "--group-by", group_by)
    assert_partition(shards, seconds)
    depth = 1 if group_by == "file" else 2
    group_of = {test: "::".join(test.split("::")[:depth]) for test in seconds}
    weight: dict[str, float] = {}
    for test, duration in seconds.items():
        weight[group_of[test]] = weight.get(group_of[test], 0.0) + duration
    share = sum(seconds.values()) / 3
    split = {
        group
        for group in weight
        if sum(any(group_of[test] == group for test in one) for one in shards) > 1
    }
    assert all(weight[group] > share for group in split), split
    assert len(weight) > 3 * len(split)


def test_list_file_and_stdin_take_100k_ids_fast(tmp_path):
    tests = [f"tests/test_m{i // 100}.py::TestCase::test_{i}[p{i % 7}]" for i in range(100_000)]
    listing = tmp_path / "tests.txt"
    listing.write_text("\n".join(tests) + "\n\n")
    started = time.monotonic()
    from_stdin = shard("--index", "0/2", "-", input="\n".join(reversed(tests)))
    from_file = shard("--index", "1/2", f"@{listing}")
    elapsed = time.monotonic() - started
    assert_partition([ids_of(from_stdin), ids_of(from_file)], tests)
    assert abs(len(ids_of(from_stdin)) - len(ids_of(from_file))) <= 1
    assert "splitting by test count" in from_stdin.stderr
    assert elapsed < 30, f"two nodes took {elapsed:.1f} s for 100k ids"


def test_index_forms_and_usage_errors():
    tests = [f"t.py::test_{i}" for i in range(10)]
    assert (
        shard("--shards", "3", "--index", "1", *tests).stdout
        == shard("--index", "1/3", *tests).stdout
    )
    for args in (
        ["--index", "3/3"],
        ["--index", "3", "--shards", "3"],
        ["--index", "1"],
        ["--index", "1/3", "--shards", "4"],
        ["--index", "-1/3"],
        ["--index", "x"],
        ["--index", "0/2", "--plan-id", "p1"],
    ):
        result = CliRunner().invoke(main, ["shard", *args, *tests], env={"TESTLENS_SERVER": ""})
        assert result.exit_code == 2, (args, result.output)


HISTORY = b"""<?xml version="1.0"?>
<testsuites><testsuite>
  <testcase file="tests/test_a.py" classname="" name="test_slow" time="8"/>
  <testcase file="tests/test_a.py" classname="" name="test_medium" time="4"/>
  <testcase file="tests/test_b.py" classname="TestB" name="test_one" time="2"/>
  <testcase file="tests/test_b.py" classname="TestB" name="test_two" time="1"/>
  <testcase file="tests/test_b.py" classname="TestB" name="test_three" time="1"/>
</testsuite></testsuites>
"""
HISTORY_TESTS = [
    "tests/test_a.py::test_slow",
    "tests/test_a.py::test_medium",
    "tests/test_b.py::TestB::test_one",
    "tests/test_b.py::TestB::test_two",
    "tests/test_b.py::TestB::test_three",
]


def with_history(tenant, repo="acme/shard") -> None:
    for commit in ("1", "2", "3"):
        response = upload(
            tenant.client, HISTORY, repo=repo, commit=commit * 40, environment="linux"
        )
        assert response.status_code == 201, response.text


def plan_id_of(result) -> str:
    line = next(line for line in result.stderr.splitlines() if "plan-id" in line)
    return line.rsplit(" ", 1)[-1]


def test_nodes_of_a_run_share_the_server_plan_by_its_key(server, tenant):
    with_history(tenant)
    remote = [
        "--server",
        server.url,
        "--token",
        tenant.key,
        "--repo",
        "acme/shard",
        "--environment",
        "linux",
        "--plan-key",
        "build-17/unit",
    ]
    first = shard("--index", "0/2", *remote, *HISTORY_TESTS)
    plan_id = plan_id_of(first)
    with_history(tenant)  # uploads between two nodes' requests change nothing
    second = shard("--index", "1/2", *remote, *reversed(HISTORY_TESTS))
    assert plan_id_of(second) == plan_id
    assert "warning" not in first.stderr + second.stderr
    shards = [ids_of(first), ids_of(second)]
    assert_partition(shards, HISTORY_TESTS)
    # 8 s against 4 + 2 + 1 + 1: counting tests would have split them 3 and 2.
    assert sorted(map(len, shards)) == [1, 4]
    assert ["tests/test_a.py::test_slow"] in shards
    stored = tenant.client.get(f"/api/shard-plans/{plan_id}").json()
    assert [sorted(one) for one in stored["shards"]] == [sorted(one) for one in shards]
    # An explicit plan id gives the same plan too.
    by_id = shard("--index", "1/2", *remote[:-2], "--plan-id", plan_id, *HISTORY_TESTS)
    assert sorted(ids_of(by_id)) == sorted(ids_of(second))


def test_a_plan_that_leaves_out_tests_is_not_used(server, tenant):
    with_history(tenant)
    remote = ["--server", server.url, "--token", tenant.key, "--repo", "acme/shard"]
    keyed = [*remote, "--plan-key", "build-18/unit"]
    plan_id = plan_id_of(shard("--index", "0/2", *keyed, *HISTORY_TESTS))
    grown = [*HISTORY_TESTS, "tests/test_c.py::test_new"]
    # By id: the plan lacks a test. By key: the server refuses the other list (409).
    for how in (["--plan-id", plan_id], ["--plan-key", "build-18/unit"]):
        result = shard("--index", "0/2", *remote, *how, *grown)
        assert "no shard plan from the server" in result.stderr
        assert "running ALL 6 tests" in result.stderr
        assert "plan-id" not in result.stderr
        assert sorted(ids_of(result)) == sorted(grown)
    refused = shard("--index", "0/2", *keyed, *grown)
    assert "PLAN_CONFLICT" in refused.stderr and "1 only here" in refused.stderr
    local = shard("--index", "0/2", *remote, "--plan-id", plan_id, "--fallback", "split", *grown)
    assert "leaves out 1 of the tests given, e.g. tests/test_c.py::test_new" in local.stderr
    assert ids_of(local) == ids_of(shard("--index", "0/2", *grown))


def test_unreachable_server_falls_back_with_a_warning(tmp_path):
    durations = tmp_path / ".test_durations"
    durations.write_text(json.dumps(dict(zip(HISTORY_TESTS, [8, 4, 2, 1, 1], strict=True))))
    dead = ["--server", f"http://127.0.0.1:{free_port()}", "--repo", "acme/shard"]
    keyed = [*dead, "--plan-key", "build-19/unit"]
    started = time.monotonic()
    everything = shard("--index", "0/2", *keyed, *HISTORY_TESTS)
    fallback = shard(
        "--index", "0/2", *keyed, "--fallback", "split", "--durations", str(durations),
        *HISTORY_TESTS,
    )  # fmt: skip
    counted = shard("--index", "0/2", *keyed, "--fallback", "split", *HISTORY_TESTS)
    assert time.monotonic() - started < 15  # bounded retries, no half-minute backoff
    for result in (everything, fallback, counted):
        assert "no shard plan from the server: could not reach http://127.0.0.1" in result.stderr
    assert sorted(ids_of(everything)) == sorted(HISTORY_TESTS)
    assert "running ALL 5 tests on this node" in everything.stderr
    assert f"splitting by durations file {durations} instead" in fallback.stderr
    assert ids_of(fallback) == ids_of(
        shard("--index", "0/2", "--durations", str(durations), *HISTORY_TESTS)
    )
    assert "splitting by test count" in counted.stderr
    assert len(ids_of(counted)) in (2, 3)
    failed = CliRunner().invoke(
        main, ["shard", "--index", "0/2", *keyed, "--fallback", "fail", *HISTORY_TESTS]
    )
    assert failed.exit_code == 1
    assert "no shard plan from the server" in failed.output


def test_without_a_run_key_nodes_split_locally(tmp_path, server, tenant):
    with_history(tenant)
    remote = ["--server", server.url, "--token", tenant.key, "--repo", "acme/shard"]
    shards = [shard("--index", f"{i}/2", *remote, *HISTORY_TESTS) for i in range(2)]
    for result in shards:
        assert "no CI run key" in result.stderr
        assert "plan-id" not in result.stderr
    assert_partition([ids_of(result) for result in shards], HISTORY_TESTS)


def test_missing_or_broken_durations_file_only_warns(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path in (tmp_path / "absent.json", broken):
        result = shard("--index", "0/2", "--durations", str(path), *HISTORY_TESTS)
        assert f"cannot use durations file {path}" in result.stderr
        assert len(ids_of(result)) in (2, 3)


def test_durations_export_writes_pytest_split_format(server, tenant, tmp_path):
    with_history(tenant)
    output = tmp_path / ".test_durations"
    common = ["--server", server.url, "--token", tenant.key, "--repo", "acme/shard"]
    result = CliRunner().invoke(
        main,
        ["durations", "export", *common, "--environment", "linux", "-o", str(output)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    text = output.read_text()
    written = json.loads(text)
    assert list(written) == sorted(HISTORY_TESTS)
    assert text == json.dumps(written, sort_keys=True, indent=4) + "\n"  # as pytest-split writes
    predicted = tenant.client.get(
        "/api/durations", params={"repo": "acme/shard", "environment": "linux"}
    ).json()["tests"]
    assert written == {test["nodeid"]: test["p50_ms"] / 1000 for test in predicted}
    assert written["tests/test_a.py::test_slow"] == pytest.approx(8.0)
    to_stdout = CliRunner().invoke(
        main, ["durations", "export", *common, "--environment", "linux", "-o", "-"]
    )
    assert json.loads(to_stdout.stdout) == written
    elsewhere = CliRunner().invoke(
        main, ["durations", "export", *common, "--environment", "windows", "-o", "-"]
    )
    assert json.loads(elsewhere.stdout) == {}
    assert "no durations for acme/shard in environment windows" in elsewhere.stderr
    # The export feeds `testlens shard --durations` as it is.
    assert ids_of(shard("--index", "0/2", "--durations", str(output), *HISTORY_TESTS)) == [
        "tests/test_a.py::test_slow"
    ]


def test_durations_export_reports_server_errors(server):
    result = CliRunner().invoke(
        main,
        [
            "durations",
            "export",
            "--server",
            server.url,
            "--token",
            "tl_sk_wrong",
            "--repo",
            "acme/shard",
        ],
    )
    assert result.exit_code == 1
    assert "401 INVALID_API_KEY" in result.output
