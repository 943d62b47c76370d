"""Sharding a real project's suite over several CI nodes, each a real pytest process with the
plugin, and counting how often every test ran: the partition must hold whatever the order
the nodes start in, uploads landing between their requests, or a node that cannot reach the
server.

The suite is networkx's (installed with the dev dependencies, tests included): code nobody
here wrote, collected and run as its users run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree

import networkx
import pytest
from builders import make_tenant

SUITE = [
    str(Path(networkx.__file__).parent / "algorithms" / "tests" / name)
    for name in ("test_cycles.py", "test_dag.py", "test_simple_paths.py")
]
NODES = 3


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_node(
    tmp_path: Path, index: int, server: str, token: str, repo: str, key: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    junit = tmp_path / f"node{index}.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "TESTLENS_", "CI"))}
    env.update({"TESTLENS_TOKEN": token, "TESTLENS_SERVER": server})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--testlens",
            f"--testlens-repo={repo}",
            f"--testlens-shard={index}/{NODES}",
            f"--testlens-plan-key={key}",
            f"--junitxml={junit}",
            "--rootdir",
            str(tmp_path),
            *extra,
            *SUITE,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ran(tmp_path: Path) -> Counter[str]:
    """How many nodes ran each test, from the nodes' own JUnit XML."""
    counts: Counter[str] = Counter()
    for index in range(NODES):
        root = ElementTree.parse(tmp_path / f"node{index}.xml").getroot()
        for case in root.iter("testcase"):
            counts[f"{case.get('classname')}::{case.get('name')}"] += 1
    return counts


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every test of the suite, from one unsharded run."""
    tmp = tmp_path_factory.mktemp("whole")
    junit = tmp / "all.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"--junitxml={junit}", "--rootdir", str(tmp), *SUITE],
        cwd=tmp, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    root = ElementTree.parse(junit).getroot()
    found = {f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")}
    assert len(found) > 150
    return found


@pytest.fixture
def node_args(database, server):
    tenant = make_tenant(database, server)
    repo = f"nx/graphs-{uuid.uuid4().hex[:6]}"
    key = f"ci-run-{uuid.uuid4().hex[:8]}/unit"
    yield server.url, tenant.key, repo, key
    tenant.client.close()


def assert_partition(counts: Counter[str], everything: set[str]) -> None:
    assert set(counts) == everything, "every test ran somewhere"
    twice = sorted(test for test, n in counts.items() if n > 1)
    assert twice == [], f"{len(twice)} tests ran on more than one node"


def test_nodes_one_after_another_with_uploads_between_share_one_plan(
    tmp_path, node_args, everything
):
    # Each node uploads its results before the next asks: history changes between requests.
    for index in range(NODES):
        done = run_node(tmp_path, index, *node_args)
        assert done.returncode == 0, done.stdout[-3000:]
        assert "server plan" in done.stdout
    assert_partition(ran(tmp_path), everything)


def test_nodes_in_parallel_share_one_plan(tmp_path, node_args, everything):
    with ThreadPoolExecutor(NODES) as pool:
        done = list(pool.map(lambda i: run_node(tmp_path, i, *node_args), range(NODES)))
    for result in done:
        assert result.returncode == 0, result.stdout[-3000:]
    assert_partition(ran(tmp_path), everything)


def test_a_node_that_cannot_reach_the_server_runs_everything_and_says_so(
    tmp_path, node_args, everything
):
    url, token, repo, key = node_args
    for index in range(NODES):
        target = f"http://127.0.0.1:{closed_port()}" if index == 1 else url
        done = run_node(tmp_path, index, target, token, repo, key)
        assert done.returncode == 0, done.stdout[-3000:]
        if index == 1:
            assert "running ALL" in done.stdout
    counts = ran(tmp_path)
    assert set(counts) == everything, "no test was skipped"
    assert max(counts.values()) == 2, "the others still ran their shares once each"
    fallback = ElementTree.parse(tmp_path / "node1.xml").getroot()
    ran_there = {f"{c.get('classname')}::{c.get('name')}" for c in fallback.iter("testcase")}
    assert ran_there == everything


def test_without_a_run_key_nodes_split_locally_and_still_partition(
    tmp_path, database, server, everything
):
    tenant = make_tenant(database, server)
    repo = f"nx/graphs-{uuid.uuid4().hex[:6]}"
    for index in range(NODES):
        done = run_node(tmp_path, index, server.url, tenant.key, repo, "", "--testlens-plan-key=")
        assert done.returncode == 0, done.stdout[-3000:]
        assert "no CI run key" in done.stdout
    assert_partition(ran(tmp_path), everything)
    tenant.client.close()
