"""Queue mode of the pytest plugin (``--testlens-queue``): real pytest processes, one per
"machine", taking batches from the live server's orchestrated runs; and what they do when
the options are wrong or the server cannot be reached."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

import httpx
import pytest
from builders import LiveServer, free_port, junit_from_durations, upload

from testlens.server.app import create_app

# Every test logs "ran <pid> <node id>", the session fixture "setup <pid>", and each module
# fixture "module+ <pid> <file>" / "module- <pid> <file>", to log.txt in the project. With
# QUEUE_MACHINES=N the session fixture waits until N processes have set it up, so that every
# machine holds a batch before any test runs (else one may finish the run before another
# has started). QUEUE_SLEEP makes test_sleep.py's test announce itself and sleep.
CONFTEST = """
    import os
    import time
    from pathlib import Path

    import pytest

    LOG = Path(__file__).parent / "log.txt"


    def log(line):
        with LOG.open("a") as out:
            out.write(f"{line}\\n")


    @pytest.fixture(scope="session", autouse=True)
    def machine():
        log(f"setup {os.getpid()}")
        wanted = int(os.environ.get("QUEUE_MACHINES", "1"))
        deadline = time.monotonic() + 15
        while LOG.read_text().count("setup ") < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        yield


    @pytest.fixture(scope="module", autouse=True)
    def module(request):
        log(f"module+ {os.getpid()} {request.node.nodeid}")
        yield
        log(f"module- {os.getpid()} {request.node.nodeid}")


    @pytest.fixture(autouse=True)
    def ran(request):
        log(f"ran {os.getpid()} {request.node.nodeid}")


    def pytest_collection_finish(session):
        # A machine that lost a test after sending its list (QUEUE_DROP names it).
        dropped = os.environ.get("QUEUE_DROP")
        session.items[:] = [item for item in session.items if item.nodeid != dropped]
"""
FILES = {
    f"test_{name}": """
        class TestPair:
            def test_one(self):
                pass

        def test_two():
            pass
    """
    for name in "abcdef"
}
TESTS = sorted(
    f"test_{name}.py::{test}" for name in "abcdef" for test in ("TestPair::test_one", "test_two")
)
SLEEPER = """
    import os
    import time
    from pathlib import Path

    def test_sleeps():
        if os.environ.get("QUEUE_SLEEP"):
            Path(__file__).with_name("sleeping").touch()
            time.sleep(float(os.environ["QUEUE_SLEEP"]))
"""
FLIP = """
    import os

    def test_flip():
        assert not os.environ.get("QUEUE_FAIL")
"""

_SUMMARY = re.compile(
    r"testlens: orchestrated run (\S+): this machine ran (\d+) tests in (\d+) batches"
)
_PASSED = re.compile(r"^(\S+::\S+) PASSED", re.MULTILINE)


@dataclass
class Machine:
    """What one pytest process printed, and what its queue summary says."""

    ret: int
    out: str
    err: str

    def summary(self) -> tuple[str, int, int]:
        found = _SUMMARY.search(self.out)
        assert found, self.out + self.err
        return found.group(1), int(found.group(2)), int(found.group(3))


@pytest.fixture
def queue_project(project: pytest.Pytester) -> pytest.Pytester:
    project.makeconftest(CONFTEST)
    project.makepyfile(**FILES)
    return project


@pytest.fixture(scope="module")
def short_lease(settings) -> Iterator[LiveServer]:
    """A server on the session's database whose leases lapse 1 s after the last heartbeat,
    and which asks for a heartbeat every 0.2 s."""
    live = LiveServer(
        create_app(replace(settings, lease_seconds=1.0, heartbeat_seconds=0.2))
    ).start()
    yield live
    live.stop()


def queue_args(url: str, key: str, build: str | None, *more: str) -> list[str]:
    ci_build = ["--testlens-ci-build-id", build] if build else []
    return [
        "-p",
        "no:cacheprovider",
        "-v",
        "--testlens",
        *("--testlens-server", url, "--testlens-token", key),
        *("--testlens-repo", "acme/queue", "--testlens-queue", *ci_build),
        *more,
    ]


def new_build() -> str:
    return f"build-{uuid.uuid4().hex[:12]}"


def start(project: pytest.Pytester, *args: str) -> subprocess.Popen[bytes]:
    """A pytest process on ``project``, without the plugins of this environment that the
    projects do not use and that take most of a pytest process's start."""
    quick = ["-p", "no:hypothesispytest", "-p", "no:schemathesis"]
    command = [sys.executable, "-m", "pytest", *quick, *args]
    return project.popen(command, stdin=subprocess.DEVNULL)


def wait(process: subprocess.Popen[bytes]) -> Machine:
    out, err = process.communicate(timeout=60)
    return Machine(process.returncode, out.decode(), err.decode())


def run(project: pytest.Pytester, *args: str) -> Machine:
    return wait(start(project, *args))


def log(project: pytest.Pytester, kind: str) -> list[list[str]]:
    """The log's lines of one kind, split into their words after the kind."""
    lines = (project.path / "log.txt").read_text().splitlines()
    return [line.split()[1:] for line in lines if line.split()[0] == kind]


def results(tenant, run_id: str) -> dict[str, dict]:
    """The run's results on the server, by node id."""
    body = tenant.client.get(f"/api/v1/runs/{run_id}").json()
    found = {f"{row['testFile']}::{row['testName']}": row for row in body["results"]}
    assert len(found) == body["totalResults"] == len(body["results"]), body
    return found


def flaky_history(client) -> None:
    """Five runs of tests/test_shop.py::TestShop::test_pay, written as the plugin writes
    node ids, that fail once and pass on a retry in the first; and a long test elsewhere,
    so that the run's retry budget covers test_pay's retries."""
    pay = '<testcase file="tests/test_shop.py" classname="TestShop" name="test_pay" time="0.25">'
    for commit in "12345":
        cases = pay + '<failure message="boom"/></testcase>' if commit == "1" else ""
        cases += pay + "</testcase>"
        cases += '<testcase file="tests/test_slow.py" classname="" name="test_slow" time="100"/>'
        report = f"<testsuites><testsuite>{cases}</testsuite></testsuites>".encode()
        answer = upload(client, report, repo="acme/queue", commit=commit * 40, environment="linux")
        assert answer.status_code == 201, answer.text


# --- with the server ----------------------------------------------------------------------


def test_two_machines_run_every_test_once_with_one_session_each(
    queue_project, server, tenant, monkeypatch
):
    monkeypatch.setenv("QUEUE_MACHINES", "2")
    args = queue_args(server.url, tenant.key, new_build(), "--testlens-workers", "2")
    machines = [wait(process) for process in [start(queue_project, *args) for _ in range(2)]]
    for machine in machines:
        assert machine.ret == pytest.ExitCode.OK, machine.out + machine.err
    (run_id, *_), (other_id, *_) = (machine.summary() for machine in machines)
    assert run_id == other_id
    ran = Counter(nodeid for _pid, nodeid in log(queue_project, "ran"))
    assert sorted(ran) == TESTS
    assert set(ran.values()) == {1}
    counts = [machine.summary()[1] for machine in machines]
    assert sum(counts) == len(TESTS) and min(counts) > 0, counts
    # One session per machine, kept up across its batches; each module set up and torn
    # down once, in whichever batch held it.
    assert sorted(Counter(pid for (pid,) in log(queue_project, "setup")).values()) == [1, 1]
    assert sum(machine.summary()[2] for machine in machines) > 2
    modules = Counter(file for _pid, file in log(queue_project, "module+"))
    assert modules == Counter(file for _pid, file in log(queue_project, "module-"))
    assert set(modules.values()) == {1} and len(modules) == len(FILES)
    stored = results(tenant, run_id)
    assert sorted(stored) == TESTS
    assert {row["status"] for row in stored.values()} == {"passed"}
    status = tenant.client.get(f"/api/v1/runs/{run_id}").json()["run"]["status"]
    assert status == "completed"


def test_a_flaky_test_gets_the_retries_the_server_gives_it(project, server, tenant):
    flaky_history(tenant.client)
    project.makepyfile(
        **{
            "tests/test_shop": """
                calls = []

                class TestShop:
                    def test_pay(self):
                        calls.append(1)
                        assert len(calls) > 1, "the first call fails"
            """,
            "tests/test_slow": "def test_slow():\n    pass\n",
        }
    )
    args = queue_args(server.url, tenant.key, new_build(), "--testlens-environment", "linux")
    machine = run(project, *args, "--testlens-workers", "1")
    assert machine.ret == pytest.ExitCode.OK, machine.out + machine.err
    assert "tests/test_shop.py::TestShop::test_pay RERUN" in machine.out
    assert "tests/test_shop.py::TestShop::test_pay PASSED" in machine.out
    assert "2 passed, 1 rerun" in machine.out
    stored = results(tenant, machine.summary()[0])
    pay = stored["tests/test_shop.py::TestShop::test_pay"]
    assert pay["retryCount"] == 1, pay
    assert stored["tests/test_slow.py::test_slow"]["retryCount"] == 0


def test_a_machine_with_other_tests_is_stopped_and_a_late_one_stops_cleanly(
    queue_project, server, tenant
):
    build = new_build()
    args = queue_args(server.url, tenant.key, build)
    first = run(queue_project, *args)
    assert first.ret == pytest.ExitCode.OK, first.out + first.err
    assert first.summary()[1] == len(TESTS)
    other = run(queue_project, *args, "-k", "test_two")
    assert other.ret == pytest.ExitCode.USAGE_ERROR
    assert f"collected other tests than the orchestrated run of CI build {build}" in other.err
    assert "0 only here, 6 only in the run" in other.err
    late = run(queue_project, *args)
    assert late.ret == pytest.ExitCode.OK, late.out + late.err
    assert late.summary()[1:] == (0, 0)
    assert "(the run is finished)" in late.out


def test_a_handed_out_test_this_machine_did_not_collect_fails_loudly(
    queue_project, server, tenant, monkeypatch
):
    monkeypatch.setenv("QUEUE_DROP", "test_c.py::test_two")
    machine = run(queue_project, *queue_args(server.url, tenant.key, new_build()))
    assert machine.ret == pytest.ExitCode.TESTS_FAILED, machine.out + machine.err
    assert (
        "testlens: ERROR: the run handed this machine 1 tests or files it did not collect, "
        "which did not run here: test_c.py::test_two." in machine.out
    )
    run_id, ran, _ = machine.summary()
    assert ran == len(TESTS) - 1
    stored = results(tenant, run_id)
    assert sorted(stored) == TESTS
    assert stored["test_c.py::test_two"]["status"] != "passed"
    assert tenant.client.get(f"/api/v1/runs/{run_id}").json()["run"]["status"] == "failed"


def test_a_stopped_machine_releases_its_batch_for_the_next_at_once(
    queue_project, server, tenant, monkeypatch
):
    queue_project.makepyfile(test_sleep=SLEEPER)
    args = queue_args(server.url, tenant.key, new_build(), "--testlens-workers", "1")
    monkeypatch.setenv("QUEUE_SLEEP", "60")
    stopped = start(queue_project, *args)
    deadline = time.monotonic() + 20
    while not (queue_project.path / "sleeping").exists():
        assert stopped.poll() is None and time.monotonic() < deadline, wait(stopped)
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)
    first = wait(stopped)
    assert first.ret == pytest.ExitCode.INTERRUPTED, first.out + first.err
    assert "testlens: stopped by signal 15" in first.out + first.err
    monkeypatch.delenv("QUEUE_SLEEP")
    began = time.monotonic()
    second = run(queue_project, *args)
    # Its lease (30 s) had not lapsed: the second machine got the batch because it was
    # released.
    assert time.monotonic() - began < 20
    assert second.ret == pytest.ExitCode.OK, second.out + second.err
    assert second.summary()[1] == len(TESTS) + 1


def test_maxfail_stops_the_machine_and_releases_its_batch(
    queue_project, server, tenant, monkeypatch
):
    queue_project.makepyfile(test_flip=FLIP)
    monkeypatch.setenv("QUEUE_FAIL", "1")
    args = queue_args(server.url, tenant.key, new_build(), "--testlens-workers", "1")
    stopped = run(queue_project, *args, "-x")
    assert stopped.ret == pytest.ExitCode.TESTS_FAILED, stopped.out + stopped.err
    assert "stopping after 1 failures" in stopped.out
    monkeypatch.delenv("QUEUE_FAIL")
    began = time.monotonic()
    second = run(queue_project, *args)
    assert time.monotonic() - began < 20
    assert second.ret == pytest.ExitCode.OK, second.out + second.err
    assert second.summary()[1] == len(TESTS) + 1


def test_heartbeats_keep_a_long_batch_with_its_machine(
    queue_project, short_lease, tenant, monkeypatch
):
    queue_project.makepyfile(test_sleep=SLEEPER)
    build = new_build()
    args = queue_args(short_lease.url, tenant.key, build, "--testlens-environment", "linux")
    monkeypatch.setenv("QUEUE_SLEEP", "3")
    machine = start(queue_project, *args, "--testlens-workers", "1")
    deadline = time.monotonic() + 20
    while not (queue_project.path / "sleeping").exists():
        assert machine.poll() is None and time.monotonic() < deadline, wait(machine)
        time.sleep(0.05)
    time.sleep(1.5)  # longer than a lease without heartbeats
    # Another worker of the same run: a lapsed lease would be handed to it.
    tests = [*TESTS, "test_sleep.py::test_sleeps"]
    with httpx.Client(base_url=short_lease.url, headers=tenant.headers, timeout=30) as client:
        created = client.post(
            "/api/v1/orchestrate",
            json={
                "testFiles": sorted({test.partition("::")[0] for test in tests}),
                "tests": tests,
                "ciBuildId": build,
                "project": "acme/queue",
                "environment": "linux",
            },
        )
        assert created.status_code == 200, created.text
        run_id = created.json()["runId"]
        claims = f"/api/v1/orchestrate/{run_id}/claims"
        claimed = client.post(claims, json={"batchId": "observer-1", "worker": "observer"})
        assert claimed.json()["status"] == "wait", claimed.text
        done = wait(machine)
        assert done.ret == pytest.ExitCode.OK, done.out + done.err
        assert "lapsed" not in done.out
        assert done.summary()[:2] == (run_id, len(tests))
        late = client.post(claims, json={"batchId": "observer-2", "worker": "observer"})
        assert late.json()["code"] == "RUN_FINISHED", late.text


def test_a_machine_that_loses_the_server_runs_the_rest_itself(
    queue_project, settings, tenant, monkeypatch
):
    queue_project.makepyfile(test_sleep=SLEEPER)
    # The sleeping test is long by its history, so it goes out first, in a batch of its own.
    history = junit_from_durations(
        {"test_sleep.py::test_sleeps": 50.0, **dict.fromkeys(TESTS, 0.1)}
    )
    assert upload(tenant.client, history, repo="acme/queue", environment="linux").status_code == 201
    doomed = LiveServer(create_app(settings)).start()
    args = queue_args(doomed.url, tenant.key, new_build(), "--testlens-environment", "linux")
    monkeypatch.setenv("QUEUE_SLEEP", "1")
    machine = start(queue_project, *args, "--testlens-workers", "2", "--testlens-timeout", "3")
    deadline = time.monotonic() + 20
    while not (queue_project.path / "sleeping").exists():
        assert machine.poll() is None and time.monotonic() < deadline, wait(machine)
        time.sleep(0.05)
    doomed.stop()
    done = wait(machine)
    assert done.ret == pytest.ExitCode.OK, done.out + done.err
    assert "testlens: warning: results of batch" in done.out
    assert "testlens: warning: lost the server mid-run (could not reach" in done.out
    assert f"this machine ran all the tests, less what it had run, {len(TESTS)} tests" in done.out
    ran = Counter(nodeid for _pid, nodeid in log(queue_project, "ran"))
    assert sorted(ran) == sorted([*TESTS, "test_sleep.py::test_sleeps"])
    assert set(ran.values()) == {1}


def test_a_retried_ci_job_runs_its_failed_work_again(queue_project, server, tenant, monkeypatch):
    queue_project.makepyfile(test_flip=FLIP)
    for name, value in [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_RUN_ID", uuid.uuid4().hex),
        ("GITHUB_JOB", "unit"),
        ("GITHUB_RUN_ATTEMPT", "1"),
        ("QUEUE_FAIL", "1"),
    ]:
        monkeypatch.setenv(name, value)
    args = queue_args(server.url, tenant.key, None, "--testlens-node-index", "0")
    first = run(queue_project, *args, "--testlens-workers", "1")
    assert first.ret == pytest.ExitCode.TESTS_FAILED, first.out + first.err
    assert first.summary()[1] == len(TESTS) + 1
    monkeypatch.delenv("QUEUE_FAIL")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")
    second = run(queue_project, *args, "--testlens-workers", "1")
    assert second.ret == pytest.ExitCode.OK, second.out + second.err
    assert "(CI attempt 2: the failed work of node 0 again)" in second.out
    assert second.summary()[1:] == (1, 1)
    assert _PASSED.findall(second.out) == ["test_flip.py::test_flip"]
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "3")
    everything = run(queue_project, *args, "--testlens-workers", "1", "--testlens-fixed")
    assert everything.ret == pytest.ExitCode.OK, everything.out + everything.err
    assert everything.summary()[1] == len(TESTS) + 1


# --- without it -----------------------------------------------------------------------------


def test_queue_options_are_checked_before_collection(project):
    project.makepyfile(**FILES)
    build = ["--testlens", "--testlens-queue", "--testlens-ci-build-id", "b-1"]
    cases = [
        (["--testlens-queue"], "--testlens-queue needs --testlens"),
        (["--testlens", "--testlens-queue"], "so pass --testlens-ci-build-id"),
        ([*build, "--testlens-shard", "0/2"], "exclude each other"),
        ([*build, "--testlens-no-upload"], "cannot go with --testlens-no-upload"),
        ([*build, "--testlens-workers", "0"], "--testlens-workers must be at least 1, not 0"),
        (
            [*build, "--testlens-workers", "2", "--testlens-node-index", "2"],
            "--testlens-node-index counts from 0 and stays below the number of machines (2)",
        ),
    ]
    started = [start(project, "-p", "no:cacheprovider", *args) for args, _ in cases]
    for (args, message), process in zip(cases, started, strict=True):
        result = wait(process)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (args, result.out, result.err)
        assert message in result.err, (args, result.err)


def test_without_the_server_each_machine_runs_its_share_of_the_local_split(
    queue_project, monkeypatch
):
    dead = f"http://127.0.0.1:{free_port()}"
    args = queue_args(dead, "tl_sk_none", "b-2", "--testlens-timeout", "2")
    shards = []
    nodes = [("--testlens-workers", "3", "--testlens-node-index", str(i)) for i in range(3)]
    for index, process in enumerate([start(queue_project, *args, *node) for node in nodes]):
        machine = wait(process)
        assert machine.ret == pytest.ExitCode.OK, machine.out + machine.err
        assert f"testlens: warning: no orchestrated run (could not reach {dead}" in machine.out
        assert f"testlens: shard {index}/3: 4 of 12 tests (equal counts)" in machine.out
        shards.append(_PASSED.findall(machine.out))
    assert sorted(test for shard in shards for test in shard) == TESTS
    # A CI that names the build and the node gives the same share.
    for name, value in [
        ("CIRCLECI", "true"),
        ("CIRCLE_WORKFLOW_ID", "w-1"),
        ("CIRCLE_JOB", "unit"),
        ("CIRCLE_NODE_INDEX", "1"),
        ("CIRCLE_NODE_TOTAL", "3"),
    ]:
        monkeypatch.setenv(name, value)
    circle = run(queue_project, *queue_args(dead, "tl_sk_none", None, "--testlens-timeout", "2"))
    assert circle.ret == pytest.ExitCode.OK, circle.out + circle.err
    assert _PASSED.findall(circle.out) == shards[1]


def test_without_the_server_or_a_share_a_machine_runs_everything_or_stops(queue_project):
    args = queue_args(f"http://127.0.0.1:{free_port()}", "tl_sk_none", "b-3")
    everything = run(queue_project, *args, "--testlens-timeout", "2")
    assert everything.ret == pytest.ExitCode.OK, everything.out + everything.err
    assert (
        "testlens: warning: running ALL 12 tests on this machine: its node index or count "
        "is unknown" in everything.out
    )
    assert sorted(_PASSED.findall(everything.out)) == TESTS
    stopped = run(queue_project, *args, "--testlens-fallback", "fail")
    assert stopped.ret == pytest.ExitCode.USAGE_ERROR
    assert "testlens: no orchestrated run (could not reach" in stopped.err
