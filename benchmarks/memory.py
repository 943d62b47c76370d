"""A server's memory around large uploads of tiny test cases, the cheapest results to send.

    python benchmarks/memory.py [--megabytes 50] [--backends sqlite,postgresql]

For each backend, starts ``testlens serve`` with the default settings and uploads, gzipped:
(1) ``--megabytes`` MB (decompressed) of one-line JUnit test cases, by default far more than
``TESTLENS_MAX_REPORT_RESULTS`` allows, which must be refused while it is read; (2) a report
of exactly that many results, the largest accepted. Prints the server's resident memory
before, its peak (VmHWM) during each upload, and after each, with the peak's growth as a
multiple of the decompressed report's size (the issue's aim: under 10x).
"""

from __future__ import annotations

import argparse
import gzip
import time

from server import fresh_server, memory_mb

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


def measure(backend: str, megabytes: float) -> None:
    cases = [
        (f"{megabytes:g} MB of test cases", tiny_cases(megabytes=megabytes)),
        ("the largest accepted", tiny_cases(count=DEFAULT_MAX_REPORT_RESULTS)),
    ]
    with fresh_server(backend) as fresh, fresh.client(timeout=600) as client:
        pid = fresh.served.pid
        print(f"{backend}: server at rest {memory_mb(pid):.0f} MB", flush=True)
        for name, report in cases:
            before = memory_mb(pid, "VmHWM")
            started = time.perf_counter()
            response = client.post(
                "/api/test-results",
                files={"file": ("r.xml.gz", gzip.compress(report, 6))},
                data={"repo": "bench/memory", "framework": "junit"},
            )
            elapsed = time.perf_counter() - started
            time.sleep(2)
            peak, after = memory_mb(pid, "VmHWM"), memory_mb(pid)
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
