"""Ingest time against the database's own floor, in process and end to end, side by side.

    python benchmarks/ingest.py [--sizes 1000,10000,100000] [--uploads 22]
                                [--backends sqlite,postgresql] [--no-http]

For each backend and report size (a generated JUnit report of N tests, every 20th failing
once and passing on retry, under a new commit each upload) it prints three times:

1. floor: the rows testlens stored for that upload (its build, the run, its results, its
   tests' rows and their states), read back and written again with the driver's bulk path, one
   ``executemany`` per table (``COPY`` for PostgreSQL's plain inserts, as testlens uses),
   in one transaction, with none of testlens' logic: what the database itself costs;
2. store: testlens' ``store_report`` of the parsed report, in process (parsing is apart:
   ``benchmarks/parse.py`` measures it);
3. http: ``POST /api/test-results`` to a real ``testlens serve``, parse included;

for the first upload of a new repository and at steady state (the median of the 20th and
later uploads, when every test has a full history), with store/floor and http/floor ratios.
Targets: store within 2x of the floor, http within 3x, at steady state for 10k and 100k
tests. PostgreSQL runs in a scratch database ``testlens_bench`` on 127.0.0.1:5432.
The server's peak memory growth during its last upload is printed for each size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from server import fresh_server, memory_mb, reset_peak, scratch_postgres

from testlens.core.parsers import parse_report
from testlens.server.app import settle_heap
from testlens.server.auth import get_or_create_tenant
from testlens.server.database import Database, upgrade
from testlens.server.ingest.form import RunMetadata
from testlens.server.ingest.service import ingest_key, store_report
from testlens.server.models import (
    Build,
    Repository,
    Run,
    Tenant,
    TestCase,
    TestResult,
    TestState,
    table_of,
    utcnow,
)

STEADY_FROM = 20  # the 20th upload and later: every test has a full history


def report(tests: int, seed: int) -> tuple[bytes, int]:
    """A JUnit report of ``tests`` tests where every 20th test failed once and passed on retry."""
    parts = ['<?xml version="1.0"?>\n<testsuites>\n']
    attempts = 0
    per_suite = 200
    for s in range(max(1, tests // per_suite)):
        parts.append(f'<testsuite name="suite{s}">\n')
        for c in range(min(per_suite, tests)):
            n = s * per_suite + c
            attrs = (
                f'classname="app.module{s}.Test{c % 10}" name="test_{n}" '
                f'file="tests/module{s}.py" time="{((n * 31 + seed) % 250) / 1000:.3f}"'
            )
            if n % 20 == 0:
                parts.append(
                    f'<testcase {attrs}><failure message="flaky {seed}">trace</failure>'
                    "</testcase>\n"
                )
                attempts += 1
            parts.append(f"<testcase {attrs}/>\n")
            attempts += 1
        parts.append("</testsuite>\n")
    parts.append("</testsuites>\n")
    return "".join(parts).encode(), attempts


def meta(upload: int) -> RunMetadata:
    return RunMetadata(
        repo="bench/app", framework="pytest", commit=f"{upload:040x}", environment="linux"
    )


@contextmanager
def database(backend: str, name: str = "testlens_bench") -> Iterator[Database]:
    """A new, migrated database ``name`` on ``backend``."""
    with tempfile.TemporaryDirectory() as tmp:
        url = scratch_postgres(name) if backend == "postgresql" else f"sqlite:///{tmp}/{name}.db"
        db = Database(url)
        try:
            upgrade(db.engine)
            yield db
        finally:
            db.dispose()


@dataclass(frozen=True, slots=True)
class StoredRows:
    """Everything one upload stored, as the driver returns it (so as it accepts it)."""

    repository: tuple[Any, ...]
    build: tuple[Any, ...]
    run: tuple[Any, ...]
    results: list[tuple[Any, ...]]
    tests: list[tuple[Any, ...]]
    states: list[tuple[Any, ...]]


def _columns(model: Any, leave_out: Sequence[str] = ()) -> list[str]:
    return [c.name for c in table_of(model).columns if c.name not in leave_out]


def stored_rows(db: Database, run_id: str) -> StoredRows:
    """Read back, with the bare driver, the rows the upload ``run_id`` wrote."""
    marker = "%s" if db.dialect == "postgresql" else "?"
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()

        def select(model: Any, where: str, *args: Any) -> list[tuple[Any, ...]]:
            names = ", ".join(_columns(model, ("id",) if model is TestResult else ()))
            cursor.execute(f"SELECT {names} FROM {table_of(model).name} WHERE {where}", args)
            return [tuple(row) for row in cursor.fetchall()]

        (run,) = select(Run, f"id = {marker}", run_id)
        repo_id = run[_columns(Run).index("repo_id")]
        (repository,) = select(Repository, f"id = {marker}", repo_id)
        (build,) = select(Build, f"id = {marker}", run[_columns(Run).index("build_id")])
        in_run = f"IN (SELECT test_id FROM test_results WHERE run_id = {marker})"
        return StoredRows(
            repository,
            build,
            run,
            select(TestResult, f"run_id = {marker}", run_id),
            select(TestCase, f"id {in_run}", run_id),
            select(TestState, f"test_id {in_run}", run_id),
        )
    finally:
        raw.close()


def write_floor(db: Database, rows: StoredRows, first: bool) -> float:
    """Seconds to write ``rows`` again as a new run with the driver's bulk path, in one
    transaction: into the same tables (``first``: a new repository's empty ones)."""
    build_columns = _columns(Build)
    build = list(rows.build)
    build[build_columns.index("id")] = new_build = str(uuid.uuid4())
    build[build_columns.index("build_key")] = None
    run_columns = _columns(Run)
    run = list(rows.run)
    run[run_columns.index("id")] = new_run = str(uuid.uuid4())
    run[run_columns.index("build_id")] = new_build
    run[run_columns.index("ingest_key")] = uuid.uuid4().hex
    result_columns = _columns(TestResult, ("id",))
    at = result_columns.index("run_id")
    results = [(*r[:at], new_run, *r[at + 1 :]) for r in rows.results]
    test_columns, state_columns = _columns(TestCase), _columns(TestState)
    start = time.perf_counter()
    with db.engine.begin() as connection:
        if first:
            db.insert_many(
                connection, table_of(Repository), _columns(Repository), [rows.repository]
            )
        db.insert_many(connection, table_of(Build), build_columns, [tuple(build)])
        db.insert_many(connection, table_of(Run), run_columns, [tuple(run)])
        db.insert_many(
            connection,
            table_of(TestCase),
            test_columns,
            rows.tests,
            conflict=["id"],
            update=test_columns[1:],
        )
        db.insert_many(connection, table_of(TestResult), result_columns, results)
        db.insert_many(
            connection,
            table_of(TestState),
            state_columns,
            rows.states,
            conflict=["test_id", "environment"],
            update=state_columns[2:],
        )
    return time.perf_counter() - start


@dataclass(slots=True)
class Figures:
    first: float = 0.0
    steady: list[float] | None = None

    def add(self, upload: int, seconds: float) -> None:
        if upload == 0:
            self.first = seconds
        elif upload + 1 >= STEADY_FROM:
            self.steady = [*(self.steady or []), seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.steady or [float("nan")])


def in_process(backend: str, tests: int, uploads: int) -> tuple[Figures, Figures]:
    """(floor, store) seconds of every upload of the size, on a new database each."""
    floor, store = Figures(), Figures()
    settle_heap()  # as a server does once it has started
    with database(backend) as db:
        with db.transaction() as session:
            tenant_id = get_or_create_tenant(session, "bench").id
        for upload in range(uploads):
            data, _ = report(tests, upload)
            parsed = parse_report(data)
            info = meta(upload)
            start = time.perf_counter()
            result = store_report(db, tenant_id, info, parsed, ingest_key(info, data))
            store.add(upload, time.perf_counter() - start)
            if upload == 0:
                rows = stored_rows(db, result.run_id)
                with database(backend, "testlens_bench_floor") as empty:
                    with empty.transaction() as session:  # the tenant the repository names
                        session.add(Tenant(id=tenant_id, name="bench", created_at=utcnow()))
                    floor.add(upload, write_floor(empty, rows, first=True))
            elif upload + 1 >= STEADY_FROM:
                floor.add(upload, write_floor(db, stored_rows(db, result.run_id), first=False))
    return floor, store


def over_http(backend: str, tests: int, uploads: int) -> tuple[Figures, float]:
    """Seconds of every upload through a real server, and its peak memory growth (MB)
    during the last upload: its peak resident size while the upload ran, less its resident
    size before."""
    http = Figures()
    growth = 0.0
    with fresh_server(backend) as fresh, fresh.client(timeout=600) as client:
        for upload in range(uploads):
            data, _ = report(tests, upload)
            info = meta(upload)
            reset_peak(fresh.served.pid)
            before = memory_mb(fresh.served.pid)
            start = time.perf_counter()
            response = client.post(
                "/api/test-results",
                files={"file": ("junit.xml", data)},
                data={
                    "repo": info.repo,
                    "framework": info.framework,
                    "commit": info.commit or "",
                    "environment": info.environment or "",
                },
            )
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            http.add(upload, elapsed)
            growth = memory_mb(fresh.served.pid, "VmHWM") - before
    return http, growth


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:5.2f}x" if floor > 0 and value > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--uploads", type=int, default=22)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--no-http", action="store_true", help="in-process figures only")
    args = parser.parse_args()
    if args.uploads < STEADY_FROM:
        parser.error(f"--uploads must be at least {STEADY_FROM} to reach steady state")
    header = (
        f"{'backend':<11} {'tests':>7} {'upload':<7} {'floor s':>8} {'store s':>8} "
        f"{'store/fl':>8} {'http s':>8} {'http/fl':>8} {'results/s http':>15}"
    )
    lines: list[str] = []
    notes: list[str] = []
    for backend in args.backends.split(","):
        for tests in (int(size) for size in args.sizes.split(",")):
            _, attempts = report(tests, 0)
            floor, store = in_process(backend, tests, args.uploads)
            http, growth = (
                (Figures(), 0.0) if args.no_http else over_http(backend, tests, args.uploads)
            )
            for label, pick in (("first", _first), ("steady", _steady)):
                f, s, h = pick(floor), pick(store), pick(http)
                rate = f"{attempts / h:>15,.0f}" if h > 0 else f"{'-':>15}"
                lines.append(
                    f"{backend:<11} {tests:>7} {label:<7} {f:>8.3f} {s:>8.3f} "
                    f"{_ratio(s, f):>8} {h:>8.3f} {_ratio(h, f):>8} {rate}"
                )
            if not args.no_http:
                notes.append(
                    f"{backend} {tests} tests: server peak RSS growth during the last upload "
                    f"{growth:,.0f} MB (target < 300 MB at 100k)"
                )
            print(lines[-1], flush=True)
    print()
    print(header)
    print("-" * len(header))
    print("\n".join(lines))
    print("\n".join(["", *notes]))
    print("\ntargets at steady state, 10k and 100k tests: store/floor <= 2x, http/floor <= 3x")


def _first(figures: Figures) -> float:
    return figures.first


def _steady(figures: Figures) -> float:
    return figures.median if figures.steady else 0.0


if __name__ == "__main__":
    main()
