"""``testlens worker``, ``testlens orchestrate`` and ``testlens runs failed``: workers are real
processes running a real pytest project against the real server, killed, cancelled, cut off
from the server or left without one.

Every test of the sample project appends ``batch worker-pid node-id`` to a log when it starts
(the batch from ``TESTLENS_BATCH_ID``, ``-`` outside a batch; the worker is pytest's parent),
which says who ran what, and when, whatever the server recorded.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import httpx
import pytest
from builders import free_port, served
from click.testing import CliRunner

from testlens.cli import main
from testlens.client import ci_env
from testlens.client.cli import _spread_files
from testlens.client.worker import (
    command_line,
    consume,
    local_share,
    new_reports,
    report_stamps,
    run_request,
)

TESTLENS = str(Path(sys.executable).with_name("testlens"))
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
BATCH_REPORT = "--junitxml=testlens-batch-{batch}.xml"
REPO = "acme/shop"

CONFTEST = """\
import os

import pytest


@pytest.fixture(autouse=True)
def _record(request):
    with open(os.environ["RAN_LOG"], "a") as log:
        batch = os.environ.get("TESTLENS_BATCH_ID", "-")
        log.write(f"{batch} {os.getppid()} {request.node.nodeid}\\n")
"""


def sample_project(
    root: Path, count: int, failing: Collection[str] = (), seconds: float | None = None
) -> list[str]:
    """``count`` test files of two tests each, sleeping 0.05-0.3 s (or ``seconds``); the
    tests named in ``failing`` fail. Returns the files, relative to ``root``."""
    rng = random.Random(count)
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "conftest.py").write_text(CONFTEST)
    files = []
    for index in range(count):
        name = f"tests/test_m{index:02}.py"
        lines = ["import time", ""]
        for test in ("test_a", "test_b"):
            pause = seconds if seconds is not None else round(rng.uniform(0.05, 0.3), 2)
            passes = f"{name}::{test}" not in failing
            lines += [f"def {test}():", f"    time.sleep({pause})", f"    assert {passes}", ""]
        (root / name).write_text("\n".join(lines))
        files.append(name)
    return files


def ids_of(files: list[str]) -> set[str]:
    return {f"{file}::{test}" for file in files for test in ("test_a", "test_b")}


@dataclass(frozen=True)
class Ran:
    batch: str
    worker: int
    test: str

    @property
    def file(self) -> str:
        return self.test.partition("::")[0]


def ran(root: Path) -> list[Ran]:
    log = root / "ran.log"
    if not log.exists():
        return []
    lines = (line.split(" ", 2) for line in log.read_text().splitlines())
    return [Ran(batch, int(worker), test) for batch, worker, test in lines]


def environment(root: Path, **extra: str) -> dict[str, str]:
    """This machine's environment less anything of testlens, a CI or pytest, and pytest's
    plugins off (they take seconds to load, for every batch)."""
    prefixes = ("TESTLENS_", "GITHUB_", "GITLAB_", "CI", "CIRCLE", "BUILDKITE", "JENKINS", "PYTEST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", RAN_LOG=str(root / "ran.log"), **extra)
    return env


def start_worker(
    root: Path, env: dict[str, str], *args: str, command: list[str] | None = None
) -> subprocess.Popen[str]:
    """``testlens worker ARGS -- pytest {files} ...`` in ``root``, in a process group of its
    own (so that the test can kill the machine: the worker and its command)."""
    return subprocess.Popen(
        [TESTLENS, "worker", *args, "--", *(command or [*PYTEST, "{files}", BATCH_REPORT])],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        _out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _out, err = process.communicate()
        raise AssertionError(f"the worker did not finish:\n{err}") from None
    return process.returncode, err


def wait_for(condition: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run_detail(client: httpx.Client, run_id: str) -> dict:
    response = client.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def result_ids(detail: dict) -> list[str]:
    return [f"{result['testFile']}::{result['testName']}" for result in detail["results"]]


def created_run(stderr: str) -> str:
    line = next(line for line in stderr.splitlines() if " run " in line and "ed run" in line)
    return line.split(" run ", 1)[1].split(":", 1)[0]


# The pieces --------------------------------------------------------------------------------


def test_the_command_line_gets_the_items_where_files_says():
    entries = ["tests/test_a.py", "tests/test b.py::test_x[1]"]
    assert command_line(["pytest", "{files}", "-x"], entries, "b1") == ["pytest", *entries, "-x"]
    assert command_line(["rspec"], entries, "b1") == ["rspec", *entries]
    assert command_line(
        ["sh", "-c", "pytest {files} --junitxml=r-{batch}.xml --reruns={retries}"], entries, "b7", 2
    ) == [
        "sh",
        "-c",
        "pytest tests/test_a.py 'tests/test b.py::test_x[1]' --junitxml=r-b7.xml --reruns=2",
    ]


def test_the_run_request_names_the_files_and_splits_them_by_listed_tests():
    body = run_request(
        ["tests/a.py::test_1", "tests/a.py::test_2", "tests/b.py", "tests/a.py::test_1"],
        workers=3,
        project=REPO,
        ci_build_id="github/1/unit/linux",
    )
    assert body == {
        "testFiles": ["tests/a.py", "tests/b.py"],
        "tests": ["tests/a.py::test_1", "tests/a.py::test_2"],
        "workerCount": 3,
        "strategy": "queue",
        "project": REPO,
        "ciBuildId": "github/1/unit/linux",
    }


def test_files_takes_every_value_up_to_the_next_option_or_the_command():
    args = ["--files", "a.py", "b.py", "--repo", "o/r", "--files", "c.py", "--", "x", "--files"]
    assert _spread_files(args) == [
        *("--files", "a.py", "--files", "b.py", "--repo", "o/r", "--files", "c.py"),
        *("--", "x", "--files"),
    ]


def test_a_report_is_a_file_the_command_wrote_and_is_taken_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stale = Path("testlens-batch-old.xml")
    stale.write_text("<testsuite/>")
    before = report_stamps("testlens-batch*.xml")
    assert new_reports("testlens-batch*.xml", before) == []  # left by someone else: not ours
    fresh = Path("testlens-batch-b1.xml")
    fresh.write_text("<testsuite/>")
    os.utime(stale, ns=(0, 0))  # rewritten (a runner writing the same path again)
    assert sorted(new_reports("testlens-batch*.xml", before)) == [fresh, stale]
    consume(fresh)
    assert Path("testlens-batch-b1.xml.uploaded").exists()
    later = report_stamps("testlens-batch*")
    assert list(later) == [stale]  # an uploaded report never matches again
    assert new_reports("testlens-batch*", later) == []


def test_the_local_share_is_the_split_testlens_shard_makes_without_a_server():
    files = [f"tests/test_{name}.py" for name in "qwertyuiopasdfgh"]
    shares = [local_share(files, index, 3)[0] for index in range(3)]
    assert sorted(chain.from_iterable(shares)) == sorted(files)
    for index, share in enumerate(shares):
        printed = CliRunner().invoke(
            main, ["shard", "--group-by", "file", "--index", f"{index}/3", *reversed(files)]
        )
        assert printed.exit_code == 0, printed.output
        assert sorted(printed.stdout.split()) == sorted(share)
    everything, how = local_share(files, None, None)
    assert everything == files
    assert "whole list" in how


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ATTEMPT": "2"}, ci_env.CiNode(None, None, 2)),
        (
            {"GITLAB_CI": "true", "CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "4"},
            ci_env.CiNode(2, 4, None),
        ),
        ({"GITLAB_CI": "true", "CI_JOB_RETRY_COUNT": "1"}, ci_env.CiNode(None, None, 2)),
        (
            {"CIRCLECI": "true", "CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "2"},
            ci_env.CiNode(0, 2, None),
        ),
        (
            {
                "BUILDKITE": "true",
                "BUILDKITE_PARALLEL_JOB": "1",
                "BUILDKITE_PARALLEL_JOB_COUNT": "5",
                "BUILDKITE_RETRY_COUNT": "0",
            },
            ci_env.CiNode(1, 5, 1),
        ),
        ({"JENKINS_URL": "http://ci"}, ci_env.CiNode()),
    ],
)
def test_ci_node_detection(env, expected):
    found = ci_env.node(env)
    assert found == expected
    assert found.retried == (expected.attempt == 2)


# Against the server --------------------------------------------------------------------------


def invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_orchestrate_prints_the_run_id_alone_and_joins_by_ci_build_id(server, tenant):
    env = {"TESTLENS_SERVER": server.url, "TESTLENS_TOKEN": tenant.key}
    args = ["orchestrate", "--repo", REPO, "--ci-build-id", "build-1", "--workers", "3"]
    first = invoke([*args, "--files", "tests/a.py", "tests/b.py", "tests/c.py"], env)
    assert first.exit_code == 0, first.output
    run_id = first.stdout.strip()
    assert first.stdout == f"{run_id}\n"
    assert f"created run {run_id} (queue): 3 tests in 3 files for 3 workers" in first.stderr
    assert "shard 2:" in first.stderr
    again = invoke([*args, "--files", "tests/c.py", "tests/a.py", "tests/b.py"], env)
    assert again.stdout == f"{run_id}\n"
    assert f"joined run {run_id}" in again.stderr
    other = invoke([*args, "--files", "tests/a.py", "tests/d.py"], env)
    assert other.exit_code == 1
    assert other.stdout == ""
    assert "409 PLAN_CONFLICT" in other.stderr


def test_a_worker_runs_a_whole_run_and_the_failed_tests_can_be_rerun(server, tenant, tmp_path):
    """One worker on a GitHub Actions job: the run is the job's (ciBuildId from the CI),
    every test has one result, and the one that failed is what ``runs failed`` prints."""
    files = sample_project(tmp_path, 8, failing={"tests/test_m05.py::test_b"}, seconds=0)
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "unit",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_SHA": "c" * 40,
    }
    env = environment(tmp_path, TESTLENS_SERVER=server.url, TESTLENS_TOKEN=tenant.key, **github)
    code, err = finish(start_worker(tmp_path, env, "--files", *files))
    assert code == 1, err
    run_id = created_run(err)
    assert "the run is finished" in err
    detail = run_detail(tenant.client, run_id)
    assert detail["run"]["status"] == "failed"
    assert detail["run"]["commitSha"] == "c" * 40
    assert sorted(result_ids(detail)) == sorted(ids_of(files))
    assert detail["run"]["failedTests"] == 1
    assert Counter(entry.test for entry in ran(tmp_path)) == Counter(ids_of(files))
    assert list(tmp_path.glob("testlens-batch-*.xml")) == []
    assert list(tmp_path.glob("testlens-batch-*.xml.uploaded"))

    # Another machine of the same job joins the same run (nothing is left to do).
    joined = invoke(["orchestrate", "--files", *files], env)
    assert joined.stdout == f"{run_id}\n", joined.output
    code, err = finish(start_worker(tmp_path, env, "--files", *files))
    assert code == 0, err
    assert f"joined run {run_id}" in err
    assert "the run is finished; this worker ran 0 batches" in err

    failed = invoke(["runs", "failed", run_id], env)
    assert failed.exit_code == 0, failed.output
    assert failed.stdout == "tests/test_m05.py::test_b\n"
    (tmp_path / "ran.log").unlink()
    rerun = subprocess.run(
        [*PYTEST, *failed.stdout.split()], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 1
    assert [entry.test for entry in ran(tmp_path)] == ["tests/test_m05.py::test_b"]
    as_json = json.loads(invoke(["runs", "failed", run_id, "--json"], env).stdout)
    assert [test["testName"] for test in as_json["failedTests"]] == ["test_b"]


def test_a_command_that_writes_no_report_fails_the_worker_loudly(server, tenant, tmp_path):
    files = sample_project(tmp_path, 4, seconds=0)
    env = environment(tmp_path, TESTLENS_SERVER=server.url, TESTLENS_TOKEN=tenant.key)
    worker = start_worker(
        tmp_path, env, "--ci-build-id", "no-report", "--repo", REPO, "--files", *files,
        command=[*PYTEST, "{files}"],
    )  # fmt: skip
    code, err = finish(worker)
    assert code == 1
    assert "wrote no report matching 'testlens-batch-" in err
    assert "This worker claims no more work" in err
    assert len({entry.batch for entry in ran(tmp_path)}) == 1  # one batch, then it stopped


def test_sigterm_stops_the_command_and_hands_the_batch_back(server, tenant, tmp_path):
    files = sample_project(tmp_path, 3, seconds=20)
    env = environment(tmp_path, TESTLENS_SERVER=server.url, TESTLENS_TOKEN=tenant.key)
    worker = start_worker(tmp_path, env, "--ci-build-id", "term", "--repo", REPO, "--files", *files)
    wait_for(lambda: ran(tmp_path), what="a test to start")
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    code, err = finish(worker, timeout=30)
    assert code == 143, err
    assert time.monotonic() - started < 15
    assert "released batch" in err
    stats = tenant.client.get("/api/v1/orchestrate/queue/stats").json()
    assert stats["active"] == 0
    assert stats["waiting"] == len(files)  # back in the queue at once, for other workers


def test_a_run_of_listed_tests_gives_the_command_test_ids(server, tenant, tmp_path):
    sample_project(tmp_path, 3, seconds=0)
    wanted = [
        "tests/test_m00.py::test_a",
        "tests/test_m01.py::test_b",
        "tests/test_m02.py::test_a",
        "tests/test_m02.py::test_b",
    ]
    (tmp_path / "ids.txt").write_text("\n".join(wanted) + "\n")
    env = environment(tmp_path, TESTLENS_SERVER=server.url, TESTLENS_TOKEN=tenant.key)
    args = ["--ci-build-id", "ids", "--repo", REPO, "--tests-from", "ids.txt"]
    code, err = finish(start_worker(tmp_path, env, *args))
    assert code == 0, err
    assert sorted(entry.test for entry in ran(tmp_path)) == wanted
    assert sorted(result_ids(run_detail(tenant.client, created_run(err)))) == wanted


# Without the server --------------------------------------------------------------------------


def test_an_unreachable_server_falls_back_to_this_nodes_local_shard(tmp_path):
    files = sample_project(tmp_path, 9, seconds=0)
    down = f"http://127.0.0.1:{free_port()}"
    env = environment(tmp_path, TESTLENS_SERVER=down, TESTLENS_TOKEN="k")
    args = ["--ci-build-id", "b", "--timeout", "2", "--node-index", "1", "--node-total", "3"]
    started = time.monotonic()
    code, err = finish(start_worker(tmp_path, env, *args, "--files", *files))
    assert code == 0, err
    assert time.monotonic() - started < 15
    assert "the orchestration server is out of reach" in err
    assert "local shard 1/3" in err
    share, _ = local_share(files, 1, 3)
    entries = ran(tmp_path)
    assert {entry.file for entry in entries} == set(share)
    assert len({entry.worker for entry in entries}) == 1  # one invocation
    assert {entry.batch for entry in entries} == {"-"}
    assert "reports were not uploaded: testlens-batch-local.xml" in err


def test_without_its_place_a_node_runs_everything_but_a_retried_one_runs_nothing(tmp_path):
    files = sample_project(tmp_path, 3, failing={"tests/test_m01.py::test_a"}, seconds=0)
    down = f"http://127.0.0.1:{free_port()}"
    env = environment(tmp_path, TESTLENS_SERVER=down, TESTLENS_TOKEN="k")
    args = ["--ci-build-id", "b", "--timeout", "2", "--files", *files]
    code, err = finish(start_worker(tmp_path, env, *args))
    assert code == 1, err  # the server is down, and a test failed: that one counts
    assert "every node that falls back this way runs the whole list" in err
    assert {entry.test for entry in ran(tmp_path)} == ids_of(files)

    (tmp_path / "ran.log").unlink()
    retried = {**env, "GITHUB_ACTIONS": "true", "GITHUB_RUN_ATTEMPT": "2"}
    code, err = finish(start_worker(tmp_path, retried, *args))
    assert code == 1
    assert "cannot tell which tests are its own: running none" in err
    assert ran(tmp_path) == []

    code, err = finish(start_worker(tmp_path, env, "--run", "r1", "--timeout", "2"))
    assert code == 1
    assert "no test list to run without the server" in err


# Against a server of its own, with a short lease --------------------------------------------


@pytest.fixture
def short_lease_server(tmp_path: Path):
    """A ``testlens serve`` process whose leases lapse after 2 s, and a key for it."""
    data = tmp_path / "server"
    data.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TESTLENS_")},
        "TESTLENS_DATA_DIR": str(data),
        "TESTLENS_RATE_LIMITS_ENABLED": "0",
        "TESTLENS_LEASE_SECONDS": "2",
        "TESTLENS_HEARTBEAT_SECONDS": "0.5",
    }
    key = subprocess.run(
        [TESTLENS, "keys", "create", "--tenant", "t", "--create-database"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    with served(env, data / "server.log") as (process, url):
        yield process, url, key


def test_four_workers_share_a_run_and_a_killed_workers_batch_runs_elsewhere(
    short_lease_server, tmp_path
):
    _process, url, key = short_lease_server
    failing = {"tests/test_m07.py::test_b", "tests/test_m19.py::test_a"}
    project = tmp_path / "project"
    files = sample_project(project, 30, failing)
    env = environment(project, TESTLENS_SERVER=url, TESTLENS_TOKEN=key)
    args = ["--ci-build-id", "four", "--repo", REPO, "--workers", "4", "--files", *files]
    workers = [start_worker(project, env, *args, "--node-index", str(i)) for i in range(4)]
    victim, survivors = workers[0], workers[1:]
    wait_for(lambda: any(entry.worker == victim.pid for entry in ran(project)), what="a batch")
    os.killpg(victim.pid, signal.SIGKILL)  # the machine dies: the worker and its pytest
    killed_at = len(ran(project))
    outcomes = [finish(worker) for worker in survivors]
    victim.communicate()

    entries = ran(project)
    last = [entry for entry in entries[:killed_at] if entry.worker == victim.pid][-1].batch
    lost = {entry.test for entry in entries[:killed_at] if entry.batch == last}
    assert lost
    for test in lost:  # run again, elsewhere, once the victim's lease lapsed
        assert any(e.test == test and e.worker != victim.pid for e in entries[killed_at:])
    for worker, (code, err) in zip(survivors, outcomes, strict=True):
        failed_here = any(e.worker == worker.pid and e.test in failing for e in entries)
        assert code == (1 if failed_here else 0), err
        assert "the run is finished" in err
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        run_id = client.get("/api/v1/runs").json()["runs"][0]["id"]
        detail = run_detail(client, run_id)
    assert sorted(result_ids(detail)) == sorted(ids_of(files))  # each test once
    assert all(result["retryCount"] == 0 for result in detail["results"])
    assert detail["run"]["status"] == "failed"
    assert detail["run"]["failedTests"] == len(failing)


def test_a_server_lost_mid_run_leaves_the_worker_the_rest_of_its_local_shard(
    short_lease_server, tmp_path
):
    process, url, key = short_lease_server
    project = tmp_path / "project"
    files = sample_project(project, 12, seconds=0.1)
    env = environment(project, TESTLENS_SERVER=url, TESTLENS_TOKEN=key)
    args = ["--ci-build-id", "lost", "--repo", REPO, "--timeout", "2", "--workers", "5"]
    args += ["--files", *files]
    worker = start_worker(project, env, *args, "--node-index", "0", "--node-total", "1")
    wait_for(lambda: len({entry.batch for entry in ran(project)}) >= 2, what="a second batch")
    process.terminate()
    process.wait(timeout=30)
    code, err = finish(worker)
    assert code == 0, err
    assert "the orchestration server was lost mid-run" in err
    entries = ran(project)
    queued = [entry for entry in entries if entry.batch != "-"]
    fallback = {entry.file for entry in entries if entry.batch == "-"}
    assert fallback
    assert {entry.file for entry in queued} | fallback == set(files)  # nothing skipped
    # Only the batch in hand when the server went may run twice; confirmed ones never do.
    last_batch = {entry.file for entry in queued if entry.batch == queued[-1].batch}
    assert {entry.file for entry in queued} & fallback <= last_batch


def test_cancelling_a_run_stops_its_workers(short_lease_server, tmp_path):
    """A worker whose heartbeat hears of the cancel finishes and uploads its batch, then
    stops; one that claims after it is told the run is cancelled."""
    _process, url, key = short_lease_server
    project = tmp_path / "project"
    files = sample_project(project, 16, seconds=0.2)
    env = environment(project, TESTLENS_SERVER=url, TESTLENS_TOKEN=key)
    created = invoke(["orchestrate", "--repo", REPO, "--workers", "2", "--files", *files], env)
    run_id = created.stdout.strip()
    workers = [start_worker(project, env, "--run", run_id) for _ in range(2)]
    wait_for(lambda: len(ran(project)) >= 2, what="the first tests")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.delete(f"/api/v1/orchestrate/{run_id}").status_code == 200
        outcomes = [finish(worker, timeout=30) for worker in workers]
        detail = run_detail(client, run_id)
    for code, err in outcomes:
        assert code == 0, err
        assert "the run was cancelled" in err
    assert any("finishing this batch, then stopping" in err for _code, err in outcomes)
    assert detail["run"]["status"] == "cancelled"
    assert len(result_ids(detail)) < 2 * len(files)
    # What a worker had started finished and was uploaded.
    assert set(result_ids(detail)) == {entry.test for entry in ran(project)}
