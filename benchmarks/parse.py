"""Parse time: testlens against the floor of each report family, side by side.

    python benchmarks/parse.py [--repeat N]

JUnit XML, on a generated 100k-testcase file and the largest real JUnit reports of the
corpus: the floor is ``lxml.etree.fromstring`` of the same bytes (and counting the
testcases), which no parser built on lxml can beat; junitparser reads the same facts
testlens does, for comparison.

JSON, on generated reports of about 20,000 tests in each JSON format testlens reads from
JavaScript and Python runners (Jest ``--json``, Playwright's and Mocha's json reporters, CTRF,
pytest-json-report) and the largest real report of each JSON format in the corpus: the floor
is ``json.loads`` of the same bytes (of each line, for newline-delimited events), which any
reader of JSON pays before reading a field; ``orjson.loads`` is shown for reference when
orjson is installed (the dev extra has it), though the parsers use only the standard library.

Each time is the fastest of several runs; "gc" is how much of testlens's fastest run the
garbage collector's passes took. The target is testlens within 2x of the floor.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import junitparser
from lxml import etree

from testlens.core.parsers import formats, parse_report

try:
    import orjson
except ImportError:  # optional: only a reference column
    orjson = None

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("TESTLENS_CORPUS", ROOT.parent / "shared" / "corpus")) / "reports"
REAL_REPORTS = [
    "test-reporter/__tests__/fixtures/external/jest/jest-test-results.xml",
    "test-reporter/__tests__/fixtures/external/java/pulsar-test-report.xml",
    "action-junit-report/test_results/tests/utils/target/surefire-reports/"
    "TEST-action.surefire.report.calc.StringUtilsTest.xml",
]
TARGET = 2.0
"""testlens's time as a multiple of the floor's, at most."""

# A JavaScript stack trace, as failures in the generated JSON reports carry.
_STACK = "\n".join(
    f"    at fn{i} (/home/runner/work/app/app/src/module{i}.js:{i * 7}:{i})" for i in range(12)
)


class Input(NamedTuple):
    name: str
    format: str
    data: bytes


def generated_junit(cases: int = 100_000, per_suite: int = 500) -> bytes:
    """A realistic JUnit file: suites of ``per_suite`` cases, 5% failures, 2% skips."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n']
    for s in range(cases // per_suite):
        parts.append(f'<testsuite name="pkg.module{s}.TestSuite" tests="{per_suite}">\n')
        for c in range(per_suite):
            n = s * per_suite + c
            attrs = (
                f'classname="pkg.module{s}.TestSuite" name="test_case_{c}[param-{n % 7}]" '
                f'file="tests/module{s}/test_suite.py" time="{(n % 97) / 100:.3f}"'
            )
            if n % 20 == 0:
                parts.append(
                    f'<testcase {attrs}><failure message="assert {n} == {n + 1}" '
                    f'type="AssertionError">Traceback line {n}\nAssertionError</failure>'
                    "<system-out>some output</system-out></testcase>\n"
                )
            elif n % 50 == 1:
                parts.append(f'<testcase {attrs}><skipped message="not on linux"/></testcase>\n')
            else:
                parts.append(f"<testcase {attrs}/>\n")
        parts.append("</testsuite>\n")
    parts.append("</testsuites>\n")
    return "".join(parts).encode()


def _outcome(n: int) -> str:
    """5% of generated tests fail and 2% are skipped, as in the generated JUnit file."""
    return "failed" if n % 20 == 0 else "skipped" if n % 50 == 1 else "passed"


def generated_jest(tests: int = 20_000, per_file: int = 50) -> bytes:
    """``jest --json``: files of ``per_file`` tests in two levels of describe blocks."""
    files = []
    for f in range(tests // per_file):
        results = []
        for t in range(per_file):
            n = f * per_file + t
            outcome = _outcome(n)
            status = "pending" if outcome == "skipped" else outcome
            failures = []
            if status == "failed":
                failures.append(f"Error: expect(received).toBe({n})\n\n{_STACK}")
            results.append(
                {
                    "ancestorTitles": [f"Module{f}", f"group {t % 5}"],
                    "duration": None if status == "pending" else n % 97,
                    "failureDetails": [{}] * len(failures),
                    "failureMessages": failures,
                    "fullName": f"Module{f} group {t % 5} does thing {t}",
                    "invocations": 1,
                    "location": None,
                    "numPassingAsserts": 1,
                    "retryReasons": [],
                    "status": status,
                    "title": f"does thing {t}",
                }
            )
        files.append(
            {
                "assertionResults": results,
                "endTime": 1_700_000_000_500,
                "message": "",
                "name": f"/home/runner/work/app/app/src/module{f}/thing{f}.test.js",
                "startTime": 1_700_000_000_000,
                "status": "failed" if any(r["status"] == "failed" for r in results) else "passed",
                "summary": "",
            }
        )
    return json.dumps(
        {
            "numFailedTests": 0,
            "numPassedTests": 0,
            "numPendingTests": 0,
            "numTotalTestSuites": len(files),
            "numTotalTests": tests,
            "openHandles": [],
            "snapshot": {},
            "startTime": 1_700_000_000_000,
            "success": False,
            "testResults": files,
            "wasInterrupted": False,
        }
    ).encode()


def generated_playwright(tests: int = 20_000, per_file: int = 40) -> bytes:
    """Playwright's json reporter: specs run in two browser projects, 4% passing on retry."""
    projects = ("chromium", "firefox")
    specs_per_file = per_file // len(projects)
    suites = []
    for f in range(tests // per_file):
        specs = []
        for t in range(specs_per_file):
            n = f * specs_per_file + t
            runs = []
            for project in projects:
                results: list[dict[str, Any]] = []
                if n % 25 == 0:
                    error = {"message": "Error: expect(locator).toBeVisible()", "stack": _STACK}
                    results.append(_playwright_result("failed", 1200, 0, error))
                results.append(_playwright_result("passed", 100 + n % 300, len(results)))
                runs.append(
                    {
                        "annotations": [],
                        "expectedStatus": "passed",
                        "projectId": project,
                        "projectName": project,
                        "results": results,
                        "status": "flaky" if len(results) > 1 else "expected",
                        "timeout": 30000,
                    }
                )
            specs.append(
                {
                    "title": f"does thing {t}",
                    "ok": True,
                    "tags": [],
                    "tests": runs,
                    "id": f"{f}-{t}",
                    "file": f"feature{f}.spec.ts",
                    "line": t * 3 + 1,
                    "column": 5,
                }
            )
        inner = {"title": f"Feature {f}", "file": f"feature{f}.spec.ts", "specs": specs}
        suites.append(
            {
                "title": f"feature{f}.spec.ts",
                "file": f"feature{f}.spec.ts",
                "specs": [],
                "suites": [inner],
            }
        )
    config = {
        "rootDir": "/home/runner/work/app/app/tests",
        "projects": [{"name": p} for p in projects],
    }
    return json.dumps({"config": config, "suites": suites, "errors": [], "stats": {}}).encode()


def _playwright_result(
    status: str, duration: int, retry: int, error: dict[str, str] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "workerIndex": 0,
        "status": status,
        "duration": duration,
        "errors": [],
        "stdout": [{"text": "log line\n"}] if duration % 10 == 0 else [],
        "stderr": [],
        "retry": retry,
        "startTime": "2024-01-01T00:00:00.000Z",
        "attachments": [],
    }
    if error:
        result["error"] = error
        result["errors"] = [error]
    return result


def generated_mocha(tests: int = 20_000, per_file: int = 50) -> bytes:
    """Mocha's json reporter: every test in ``tests`` and again in the list of its outcome."""
    lists: dict[str, list[dict[str, Any]]] = {"passed": [], "failed": [], "skipped": []}
    every = []
    for n in range(tests):
        test: dict[str, Any] = {
            "title": f"does thing {n % per_file}",
            "fullTitle": f"Module{n // per_file} group {n % 5} does thing {n % per_file}",
            "file": f"/home/runner/work/app/app/test/module{n // per_file}.spec.js",
            "duration": n % 97,
            "currentRetry": 0,
            "speed": "fast",
            "err": {},
        }
        outcome = _outcome(n)
        if outcome == "failed":
            message = f"expected {n} to equal {n + 1}"
            test["err"] = {"message": message, "stack": f"AssertionError: {message}\n{_STACK}"}
        elif outcome == "skipped":
            del test["duration"]
        lists[outcome].append(test)
        every.append(test)
    stats = {"tests": tests, "passes": len(lists["passed"]), "failures": len(lists["failed"])}
    return json.dumps(
        {
            "stats": stats,
            "tests": every,
            "pending": lists["skipped"],
            "failures": lists["failed"],
            "passes": lists["passed"],
        }
    ).encode()


def generated_ctrf(tests: int = 20_000, per_file: int = 50) -> bytes:
    """A CTRF report as jest-ctrf-json-reporter writes one, 3% of tests retried once."""
    entries = []
    for n in range(tests):
        status = _outcome(n)
        entry: dict[str, Any] = {
            "name": f"Module{n // per_file} does thing {n % per_file}",
            "status": status,
            "duration": n % 97,
            "start": 1_700_000_000_000 + n,
            "stop": 1_700_000_000_000 + n + n % 97,
            "suite": [f"Module{n // per_file}", f"group {n % 5}"],
            "filePath": f"src/module{n // per_file}/thing.test.ts",
            "retries": 0,
            "flaky": False,
            "rawStatus": status,
            "type": "unit",
        }
        if status == "failed":
            entry["message"] = f"expected {n} to be {n + 1}"
            entry["trace"] = _STACK
        elif n % 30 == 0:
            entry.update(retries=1, flaky=True)
            entry["retryAttempts"] = [
                {"attempt": 1, "status": "failed", "duration": 10, "message": "timeout"},
                {"attempt": 2, "status": "passed", "duration": 11},
            ]
        entries.append(entry)
    results = {"tool": {"name": "jest"}, "summary": {"tests": tests}, "tests": entries}
    return json.dumps({"reportFormat": "CTRF", "specVersion": "0.0.0", "results": results}).encode()


def generated_pytest_json(tests: int = 20_000, per_module: int = 100) -> bytes:
    """pytest-json-report: each test with its setup, call and teardown phases."""
    entries = []
    for n in range(tests):
        outcome = _outcome(n)
        module = f"tests/test_module{n // per_module}.py"
        line = n % per_module * 4
        entry: dict[str, Any] = {
            "nodeid": f"{module}::TestThing::test_case_{n % per_module}[param-{n % 7}]",
            "lineno": line,
            "outcome": outcome,
            "keywords": [f"test_case_{n % per_module}[param-{n % 7}]", "TestThing", module],
            "setup": {"duration": 0.0001, "outcome": "passed"},
        }
        if outcome == "skipped":
            skip = f"('{module}', {line}, 'Skipped: not on linux')"
            entry["setup"] = {"duration": 0.0001, "outcome": "skipped", "longrepr": skip}
        else:
            call: dict[str, Any] = {"duration": (n % 97) / 1000, "outcome": outcome}
            if outcome == "failed":
                message = f"AssertionError: assert {n} == {n + 1}"
                call["crash"] = {"path": module, "lineno": line + 2, "message": message}
                call["traceback"] = [
                    {"path": module, "lineno": line + 2, "message": "AssertionError"}
                ]
                call["longrepr"] = f">       assert {n} == {n + 1}\nE       {message}"
            entry["call"] = call
        entry["teardown"] = {"duration": 0.0001, "outcome": "passed"}
        entries.append(entry)
    return json.dumps(
        {
            "created": 1_700_000_000.0,
            "duration": 60.0,
            "exitcode": 1,
            "root": "/home/runner/work/app/app",
            "environment": {},
            "summary": {"total": tests, "collected": tests},
            "collectors": [{"nodeid": "", "outcome": "passed", "result": []}],
            "tests": entries,
        }
    ).encode()


GENERATED_JSON: list[tuple[str, Callable[[], bytes]]] = [
    ("jest", generated_jest),
    ("playwright", generated_playwright),
    ("mocha", generated_mocha),
    ("ctrf", generated_ctrf),
    ("pytest-json", generated_pytest_json),
]


def junit_inputs() -> list[Input]:
    inputs = [Input("generated 100k testcases", "junit", generated_junit())]
    for rel in REAL_REPORTS:
        path = CORPUS / rel
        if not path.is_file():
            sys.exit(f"corpus report missing: {path}")
        inputs.append(Input(path.name, "junit", path.read_bytes()))
    return inputs


def json_inputs() -> list[Input]:
    inputs = [Input(f"generated {name}", name, make()) for name, make in GENERATED_JSON]
    largest: dict[str, Input] = {}
    for path in sorted(CORPUS.rglob("*")):
        if path.suffix not in (".json", ".jsonl", ".ndjson") or not path.is_file():
            continue
        data = path.read_bytes()
        try:
            report = parse_report(data)
        except ValueError:
            continue  # not a test report (schemas, expectations) or deliberately broken
        known = largest.get(report.format)
        if report.tests and (known is None or len(known.data) < len(data)):
            largest[report.format] = Input(path.name, report.format, data)
    return inputs + sorted(largest.values(), key=lambda found: -len(found.data))


def json_floor(loads: Callable[[bytes], object], kind: str) -> Callable[[bytes], object]:
    """Reading a report's JSON with ``loads``: the document, or each line's events."""
    if kind == "ndjson":
        return lambda data: [loads(line) for line in data.splitlines() if line.strip()]
    return loads


def xml_floor(data: bytes) -> int:
    root = etree.fromstring(data)
    return sum(1 for _ in root.iter("testcase"))


def testlens(data: bytes) -> int:
    return sum(len(t.attempts) for t in parse_report(data).tests)


def junitparser_read(data: bytes) -> int:
    """Read with junitparser the same facts testlens extracts from every case."""
    xml = junitparser.JUnitXml.fromstring(data)
    suites = [xml] if isinstance(xml, junitparser.TestSuite) else list(xml)
    count = 0
    while suites:
        suite = suites.pop()
        suites.extend(suite.iterchildren(junitparser.TestSuite))
        for case in suite:
            _ = (
                case.name,
                case.classname,
                case.time,
                case._elem.get("file"),
                case.system_out,
                case.system_err,
            )
            for result in case.result:
                _ = (result.message, result.type, result.text)
            count += 1
    return count


class Timing(NamedTuple):
    seconds: float
    gc_seconds: float
    """Time the garbage collector's passes took in the fastest run."""


def best_time(read: Callable[[bytes], object], data: bytes, repeat: int) -> Timing:
    collecting = [0.0, 0.0]  # start of the pass under way, total of this run's passes

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collecting[1] += time.perf_counter() - collecting[0]

    best = Timing(float("inf"), 0.0)
    gc.callbacks.append(on_gc)
    try:
        for _ in range(repeat):
            collecting[1] = 0.0
            start = time.perf_counter()
            read(data)
            elapsed = time.perf_counter() - start
            if elapsed < best.seconds:
                best = Timing(elapsed, collecting[1])
    finally:
        gc.callbacks.remove(on_gc)
    return best


def runs(data: bytes, repeat: int) -> int:
    """More runs of small inputs, whose times are short enough to be noisy."""
    return repeat if len(data) > 1_000_000 else repeat * 20


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f}" if seconds < 0.01 else f"{seconds * 1000:,.1f}"


def bench_junit(inputs: list[Input], repeat: int) -> list[float]:
    header = (
        f"{'JUnit XML':<44} {'tests':>7} {'MB':>6} {'floor ms':>10} {'testlens ms':>12} "
        f"{'gc ms':>7} {'ratio':>6} {'junitparser ms':>15}"
    )
    print(header)
    print("-" * len(header))
    ratios, speedups = [], []
    for name, _, data in inputs:
        n = runs(data, repeat)
        cases = xml_floor(data)
        floor = best_time(xml_floor, data, n)
        ours = best_time(testlens, data, n)
        other = best_time(junitparser_read, data, n)
        ratios.append(ours.seconds / floor.seconds)
        speedups.append(other.seconds / ours.seconds)
        print(
            f"{name[:44]:<44} {cases:>7} {len(data) / 1e6:>6.2f} {ms(floor.seconds):>10} "
            f"{ms(ours.seconds):>12} {ms(ours.gc_seconds):>7} {ratios[-1]:>5.2f}x "
            f"{ms(other.seconds):>15}"
        )
    print(
        f"floor: lxml.etree.fromstring. testlens / floor: worst {max(ratios):.2f}x "
        f"(target <= {TARGET:g}x); speed-up over junitparser: worst {min(speedups):.1f}x, "
        f"median {statistics.median(speedups):.1f}x\n"
    )
    return ratios


def bench_json(inputs: list[Input], repeat: int) -> list[float]:
    header = (
        f"{'JSON':<44} {'format':<12} {'tests':>6} {'MB':>6} {'json.loads ms':>14} "
        f"{'orjson ms':>10} {'testlens ms':>12} {'gc ms':>7} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    ratios = []
    for name, format_, data in inputs:
        n = runs(data, repeat)
        tests = len(parse_report(data).tests)
        kind = next(f.kind for f in formats() if f.name == format_)
        floor = best_time(json_floor(json.loads, kind), data, n)
        reference = (
            ms(best_time(json_floor(orjson.loads, kind), data, n).seconds) if orjson else "-"
        )
        ours = best_time(testlens, data, n)
        ratios.append(ours.seconds / floor.seconds)
        print(
            f"{name[:44]:<44} {format_:<12} {tests:>6} {len(data) / 1e6:>6.2f} "
            f"{ms(floor.seconds):>14} {reference:>10} {ms(ours.seconds):>12} "
            f"{ms(ours.gc_seconds):>7} {ratios[-1]:>5.2f}x"
        )
    print(
        f"floor: json.loads (per line for newline-delimited JSON). testlens / floor: worst "
        f"{max(ratios):.2f}x (target <= {TARGET:g}x)\n"
    )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    junit = bench_junit(junit_inputs(), args.repeat)
    json_ = bench_json(json_inputs(), args.repeat)
    met = sum(ratio <= TARGET for ratio in junit + json_)
    print(f"within {TARGET:g}x of the floor: {met} of {len(junit) + len(json_)} inputs")


if __name__ == "__main__":
    main()
