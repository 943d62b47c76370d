"""Ingest throughput through ``POST /api/test-results`` on a real server process.

    python benchmarks/ingest.py [--tests 10000] [--uploads 10] [--backends sqlite,postgresql]

Starts ``testlens serve`` (SQLite in a temporary directory; PostgreSQL in a scratch
database ``testlens_bench`` on 127.0.0.1:5432), creates a key with ``testlens keys create``,
uploads a generated JUnit report of N tests (5% retried) under a new commit each time, and
prints results (attempts) stored per second: median and best over the uploads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from server import serving, testlens_cmd

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("TESTLENS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TARGET = 50_000


def report(tests: int, seed: int) -> tuple[bytes, int]:
    """A JUnit report of ``tests`` tests where every 20th test failed once and passed on retry."""
    parts = ['<?xml version="1.0"?>\n<testsuites>\n']
    attempts = 0
    per_suite = 200
    for s in range(tests // per_suite):
        parts.append(f'<testsuite name="suite{s}">\n')
        for c in range(per_suite):
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


def scratch_postgres() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS testlens_bench")
        conn.execute("CREATE DATABASE testlens_bench")
    return PG_ADMIN.rsplit("/", 1)[0] + "/testlens_bench"


def bench(backend: str, tests: int, uploads: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TESTLENS_DATA_DIR": tmp}
        env.pop("TESTLENS_DATABASE_URL", None)
        if backend == "postgresql":
            env["TESTLENS_DATABASE_URL"] = scratch_postgres()
        key = subprocess.run(
            [testlens_cmd(), "keys", "create", "--tenant", "bench", "--scopes", "ingest",
             "--create-database"],  # a fresh database, before the server starts on it
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()  # fmt: skip
        with (
            serving(env, Path(tmp) / "server.log") as url,
            httpx.Client(
                base_url=url, timeout=300, headers={"Authorization": f"Bearer {key}"}
            ) as client,
        ):
            rates = []
            for i in range(uploads + 1):
                data, attempts = report(tests, i)
                start = time.perf_counter()
                response = client.post(
                    "/api/test-results",
                    files={"file": ("junit.xml", data)},
                    data={"repo": "bench/app", "framework": "pytest", "commit": f"{i:040x}"},
                )
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                if i:  # the first upload creates every test row: reported apart below
                    rates.append(attempts / elapsed)
                else:
                    first = attempts / elapsed
            print(f"  {backend}: first upload (creates {tests} tests) {first:,.0f} results/s")
            return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    _, attempts = report(args.tests, 0)
    print(f"report: {args.tests} tests, {attempts} results (attempts), one upload = one request")
    rows = []
    for backend in args.backends.split(","):
        rates = bench(backend, args.tests, args.uploads)
        rows.append((backend, statistics.median(rates), max(rates), min(rates)))
    print(f"\n{'backend':<12} {'median results/s':>17} {'best':>10} {'worst':>10}   target")
    for backend, median, best, worst in rows:
        target = f">= {TARGET:,}" if backend == "sqlite" else "-"
        print(f"{backend:<12} {median:>17,.0f} {best:>10,.0f} {worst:>10,.0f}   {target}")


if __name__ == "__main__":
    main()
