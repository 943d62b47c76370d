"""Many CI jobs uploading at once: concurrent uploaders against one real server process.

    python benchmarks/load.py [--uploaders 50] [--seconds 60] [--tests 200]
                              [--backends sqlite,postgresql]

Starts ``testlens serve`` (SQLite in a temporary directory; PostgreSQL in a scratch database),
then runs ``--uploaders`` threads for ``--seconds``, each with its own client and repository,
uploading a fresh JUnit report (a new commit each time, 5% of tests retried) as fast as the
server answers. Prints per backend: uploads accepted, rejected (by status, and requests that
got no answer), results lost (attempts of acknowledged uploads the database does not hold,
read back from the database itself: must be 0), p50/p95 upload latency, and the server's
peak RSS. The issue's bar: 0 errors and 0 results lost.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from ingest import report
from server import fresh_server, memory_mb
from sqlalchemy import create_engine, text


@dataclass
class Tally:
    """What the uploaders saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # run id -> attempts sent

    def record(self, status: str, latency: float, run: tuple[str, int] | None) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies.append(latency)
            if run is not None:
                self.acknowledged[run[0]] = run[1]


def uploader(url: str, key: str, number: int, tests: int, until: float, tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=300, headers=headers) as client:
        upload = 0
        while time.monotonic() < until:
            data, attempts = report(tests, number * 100_000 + upload)
            fields = {
                "repo": f"load/app{number}",
                "framework": "pytest",
                "commit": f"{number:08x}{upload:032x}",
            }
            started = time.perf_counter()
            try:
                response = client.post(
                    "/api/test-results", files={"file": ("junit.xml", data)}, data=fields
                )
            except httpx.HTTPError as exc:
                tally.record(type(exc).__name__, time.perf_counter() - started, None)
                continue
            latency = time.perf_counter() - started
            run = (response.json()["run_id"], attempts) if response.status_code == 201 else None
            tally.record(str(response.status_code), latency, run)
            upload += 1


def stored_attempts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT run_id, count(*) FROM test_results GROUP BY run_id")
            )
            return {run_id: count for run_id, count in rows}
    finally:
        engine.dispose()


@dataclass(frozen=True, slots=True)
class Outcome:
    statuses: Counter[str]
    lost: int
    p50: float
    p95: float
    peak_mb: float


def run_backend(backend: str, uploaders: int, seconds: float, tests: int) -> Outcome:
    tally = Tally()
    with fresh_server(backend) as fresh:
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(
                target=uploader,
                args=(fresh.served.url, fresh.key, n, tests, until, tally),
                daemon=True,
            )
            for n in range(uploaders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = memory_mb(fresh.served.pid, "VmHWM")
        stored = stored_attempts(fresh.database_url)
    lost = sum(max(0, sent - stored.get(run, 0)) for run, sent in tally.acknowledged.items())
    cuts = statistics.quantiles(tally.latencies, n=100, method="inclusive")
    return Outcome(tally.statuses, lost, cuts[49], cuts[94], peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploaders", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    _, attempts = report(args.tests, 0)
    print(
        f"{args.uploaders} uploaders for {args.seconds:g} s, each upload {args.tests} tests "
        f"({attempts} results); bar: 0 rejected, 0 lost"
    )
    print(
        f"\n{'backend':<11} {'accepted':>9} {'rejected (by status)':<24} {'lost':>5} "
        f"{'p50 s':>7} {'p95 s':>7} {'uploads/s':>10} {'peak RSS MB':>12}"
    )
    for backend in args.backends.split(","):
        outcome = run_backend(backend, args.uploaders, args.seconds, args.tests)
        accepted = outcome.statuses.pop("201", 0)
        rejected = ", ".join(f"{s}: {n}" for s, n in sorted(outcome.statuses.items())) or "0"
        print(
            f"{backend:<11} {accepted:>9} {rejected:<24} {outcome.lost:>5} "
            f"{outcome.p50:>7.2f} {outcome.p95:>7.2f} {accepted / args.seconds:>10.1f} "
            f"{outcome.peak_mb:>12.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
