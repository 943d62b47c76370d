"""A server's memory around large uploads of tiny test cases, the cheapest results to send.

    python benchmarks/memory.py [--megabytes 50] [--backends sqlite,postgresql]

For each backend, starts ``testlens serve`` with the default settings and uploads, gzipped:
(1) ``--megabytes`` MB (decompressed) of one-line JUnit test cases, far more than
``TESTLENS_MAX_REPORT_RESULTS`` allows, which must be refused while it is read; (2) a report
of exactly that many results, the largest accepted. Prints the server's resident memory
before, its peak (VmHWM) during each upload, and after each, with the peak's growth as a
multiple of the decompressed report's size (the issue's aim: under 10x).
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import httpx
from server import create_key, peak_rss_mb, server_env, serving

from testlens.server.settings import DEFAULT_MAX_REPORT_RESULTS


def tiny_cases(count: int | None = None, megabytes: float | None = None) -> bytes:
    """A JUnit report of ``count`` one-line test cases, or of as many as fill ``megabytes``."""
    parts, size, n = [b"<testsuite>"], 0, 0
    while (count is not None and n < count) or (megabytes is not None and size < megabytes * 1e6):
        case = b'<testcase classname="c" name="t%d"/>' % n
        parts.append(case)
        size += len(case)
        n += 1
    parts.append(b"</testsuite>")
    return b"".join(parts)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def measure(backend: str, megabytes: float) -> None:
    cases = [
        ("refused", tiny_cases(megabytes=megabytes)),
        ("largest accepted", tiny_cases(count=DEFAULT_MAX_REPORT_RESULTS)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(backend, tmp)
        key = create_key(env)
        with (
            serving(env, Path(tmp) / "server.log") as served,
            httpx.Client(
                base_url=served.url, timeout=600, headers={"Authorization": f"Bearer {key}"}
            ) as client,
        ):
            print(f"{backend}: server at rest {rss_mb(served.pid):.0f} MB", flush=True)
            for name, report in cases:
                before = peak_rss_mb(served.pid)
                started = time.perf_counter()
                response = client.post(
                    "/api/test-results",
                    files={"file": ("r.xml.gz", gzip.compress(report, 6))},
                    data={"repo": "bench/memory", "framework": "junit"},
                )
                elapsed = time.perf_counter() - started
                time.sleep(2)
                peak, after = peak_rss_mb(served.pid), rss_mb(served.pid)
                size = len(report) / 1e6
                print(
                    f"  {name}: {size:.1f} MB decompressed -> HTTP {response.status_code} in "
                    f"{elapsed:.1f} s; peak {peak:.0f} MB (grew {peak - before:.0f} MB, "
                    f"{(peak - before) / size:.1f}x the report); {after:.0f} MB after",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=float, default=50)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        measure(backend, args.megabytes)


if __name__ == "__main__":
    main()
