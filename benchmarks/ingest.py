"""Ingest throughput through ``POST /api/test-results`` on a real server process.

    python benchmarks/ingest.py [--tests 10000] [--uploads 10] [--backends sqlite,postgresql]

Starts ``testlens serve`` (SQLite in a temporary directory; PostgreSQL in a scratch
database ``testlens_bench`` on 127.0.0.1:5432), creates a key with ``testlens keys create``,
uploads a generated JUnit report of N tests (5% retried) under a new commit each time, and
prints results (attempts) stored per second: median and best over the uploads.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from server import fresh_server

ROOT = Path(__file__).resolve().parents[1]
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


def bench(backend: str, tests: int, uploads: int) -> list[float]:
    with fresh_server(backend) as fresh, fresh.client() as client:
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
