"""Read latency of the flaky feed, repository and test endpoints as history grows.

    python benchmarks/api.py [--sizes 100000,5000000] [--backends sqlite,postgresql]

For each backend and size: a repository of 2,000 tests (5% flaky, a few broken) gets 50 runs
through the real ingest code (which builds the per-test states the APIs read); the rest of the
size is filled with older result rows for the same tests, written at driver speed. Then
``testlens serve`` answers timed requests over HTTP, and p50/p95 are printed per endpoint,
with the ratio of the largest size to the smallest. Target: p95 under 25 ms, and the 5M
figure no more than 1.5x the 100k one. PostgreSQL is vacuumed after loading, as its
autovacuum (on by default) would have done by then.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import scratch_postgres, serving

from testlens.core.model import Attempt, Report, TestCase
from testlens.server.auth import create_key
from testlens.server.database import Database, upgrade
from testlens.server.ingest.form import RunMetadata
from testlens.server.ingest.queries import ResultRow
from testlens.server.ingest.service import store_report
from testlens.server.models import Repository, Run, TestResult, utcnow
from testlens.server.models import TestCase as TestRow

TESTS = 2_000
REAL_RUNS = 50
REQUESTS = 200
FILLER_RUN_SIZE = TESTS


def report(run: int, rng: random.Random) -> Report:
    tests = []
    for i in range(TESTS):
        if i % 20 == 0 and rng.random() < 0.3:  # flaky: fails, then passes on retry
            attempts = [Attempt("failed", 120.0, "timeout"), Attempt("passed", 110.0)]
        elif i % 500 == 1 and run >= REAL_RUNS - 10:  # broken for the last ten runs
            attempts = [Attempt("failed", 50.0, "assert 1 == 2")]
        else:
            attempts = [Attempt("passed", float(10 + i % 90))]
        tests.append(
            TestCase(
                f"test_{i}", f"app.mod{i // 100}.Test", "", f"tests/mod{i // 100}.py", attempts
            )
        )
    return Report("junit", tests)


def populate(database: Database, size: int) -> tuple[str, str]:
    """Load ``size`` results; return (repo id, an admin API key)."""
    rng = random.Random(7)
    with database.transaction() as session:
        _key, secret = create_key(session, "bench", ("read", "ingest"))
        tenant_id = _key.tenant_id
    for run in range(REAL_RUNS):
        meta = RunMetadata(
            repo="bench/app",
            framework="pytest",
            commit=f"{run:040x}",
            check_name="unit",
            provider="github",
        )
        store_report(database, tenant_id, meta, report(run, rng), uuid.uuid4().hex)
    with database.transaction() as session:
        repo_id, test_ids = _repo_and_tests(session)
    stored = REAL_RUNS * TESTS * 1.03
    filler_runs = max(0, int((size - stored) // FILLER_RUN_SIZE))
    now = utcnow()
    for start in range(0, filler_runs, 50):
        with database.transaction() as session:
            connection = session.connection()
            for _ in range(min(50, filler_runs - start)):
                run_id = str(uuid.uuid4())
                session.execute(
                    Run.__table__.insert(),
                    [
                        {
                            "id": run_id,
                            "repo_id": repo_id,
                            "ingest_key": uuid.uuid4().hex,
                            "framework": "pytest",
                            "format": "junit",
                            "created_at": now,
                            "tests": TESTS,
                            "passed": TESTS,
                            "failed": 0,
                            "errors": 0,
                            "skipped": 0,
                            "flaky": 0,
                            "flaky_detected": 0,
                            "attempts": TESTS,
                            "duration_ms": 0.0,
                        }
                    ],
                )
                rows = [
                    (run_id, tid, 0, "passed", 42.0, None, False, None, None, None, None, None)
                    for tid in test_ids
                ]
                database.insert_many(connection, TestResult.__table__, ResultRow._fields, rows)
    return repo_id, secret


def _repo_and_tests(session) -> tuple[str, list[str]]:
    repo_id = session.scalar(select(Repository.id).where(Repository.name == "bench/app"))
    test_ids = list(session.scalars(select(TestRow.id).where(TestRow.repo_id == repo_id)))
    return repo_id, test_ids


def count_results(database: Database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(TestResult))


def measure(url: str, key: str, repo_id: str, test_ids: list[str]) -> dict[str, list[float]]:
    rng = random.Random(1)
    timings: dict[str, list[float]] = {"flaky feed": [], "repo": [], "test": [], "repos": []}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(20):  # warm up connections and caches
            client.get("/api/repos").raise_for_status()
        for _ in range(REQUESTS):
            for name, path, params in (
                ("flaky feed", "/api/v1/testdeck/flaky", {"repo": "bench/app"}),
                ("repo", f"/api/repos/{repo_id}", {}),
                ("test", f"/api/tests/{rng.choice(test_ids)}", {}),
                ("repos", "/api/repos", {}),
            ):
                start = time.perf_counter()
                client.get(path, params=params).raise_for_status()
                timings[name].append((time.perf_counter() - start) * 1000)
    return timings


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_backend(backend: str, size: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TESTLENS_DATA_DIR": tmp}
        env.pop("TESTLENS_DATABASE_URL", None)
        url = scratch_postgres() if backend == "postgresql" else f"sqlite:///{tmp}/testlens.db"
        env["TESTLENS_DATABASE_URL"] = url
        env["TESTLENS_RATE_LIMITS_ENABLED"] = "0"  # it measures latency, many requests a second
        database = Database(url)
        upgrade(database.engine)
        started = time.perf_counter()
        repo_id, key = populate(database, size)
        with database.transaction() as session:
            _repo, test_ids = _repo_and_tests(session)
        stored = count_results(database)
        if backend == "postgresql":
            # Every upload rewrites its tests' summary rows. A production server relies on
            # autovacuum (on by default) to reclaim the old versions; this machine's server
            # runs with it off, so vacuum once, as autovacuum would have by now.
            with database.engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
        database.dispose()
        print(
            f"  {backend}: loaded {stored:,} results in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        with serving(env, Path(tmp) / "server.log") as served:
            timings = measure(served.url, key, repo_id, test_ids)
    return {name: (statistics.median(v), percentile(v, 95)) for name, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,5000000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
    for backend in args.backends.split(","):
        for size in sizes:
            results[(backend, size)] = run_backend(backend, size)
    print(
        f"\n{'backend':<11} {'endpoint':<11}"
        + "".join(f" {'p50 ' + _short(s):>10} {'p95 ' + _short(s):>10}" for s in sizes)
        + f" {'p95 ratio':>10}"
    )
    for backend in args.backends.split(","):
        for endpoint in ("flaky feed", "repo", "test", "repos"):
            cells = "".join(
                " {:>8.1f}ms {:>8.1f}ms".format(*results[(backend, s)][endpoint]) for s in sizes
            )
            ratio = (
                results[(backend, sizes[-1])][endpoint][1]
                / results[(backend, sizes[0])][endpoint][1]
            )
            print(f"{backend:<11} {endpoint:<11}{cells} {ratio:>9.2f}x")
    print("\ntarget: p95 < 25 ms; p95 at the largest size <= 1.5x the smallest")


def _short(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


if __name__ == "__main__":
    main()
