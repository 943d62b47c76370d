"""Flaky-test detection benchmark: simulated CI histories with known truth.

Each simulated history is one repository's main branch run in two environments: stable tests,
flaky tests (failure chance from 0.5% to 50%, some only in one environment, half of them
retried by the runner), regressions that start at a commit and are fixed a few commits later,
infrastructure outages that fail most of a run, and reruns of the same commit now and then.
testlens and two baselines ("failed and passed on the same commit", "failed in over 30% of
at least 10 runs", both skipping the runs testlens treats as outages) are scored on the same
histories: precision over every test they ever called flaky, and per failure-chance band the
recall and the runs it took to notice.

    python benchmarks/detection.py [--seeds N]

A detector is a function ``detect(runs) -> {test key: Detection}``; ``detect_testlens`` is
the only place that knows how testlens is fed.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from testlens.core.flakiness import DEFAULT_CONFIG, CodeLedger, TestState, observations
from testlens.core.model import Attempt, Report, TestCase

TestKey = tuple[str, str]  # (test name, environment)

ENVIRONMENTS = ("linux", "windows")
BANDS = ((0.005, 0.02), (0.02, 0.05), (0.05, 0.15), (0.15, 0.50))
STABLE_TESTS = 300
FLAKY_PER_BAND = 12
COMMITS = 250
RETRIES = 2  # extra attempts for tests whose runner retries failures
ONE_ENV_SHARE = 0.3  # flaky tests that are flaky in one environment only
REGRESSIONS = 15
REGRESSION_COMMITS = (1, 8)  # how many commits a regression lasts, uniformly
OUTAGE_CHANCE = 0.03  # of a run; each attempt then fails with a chance drawn from OUTAGE_FAILURE
OUTAGE_FAILURE = (0.6, 1.0)
RERUN_CHANCE = {True: 0.15, False: 0.02}  # by whether the run had a failing test


@dataclass(frozen=True, slots=True)
class SimRun:
    """One CI run of one environment, as an uploader would send it."""

    repo: str
    branch: str
    commit: str
    environment: str
    index: int  # position in ingest order
    at: datetime
    run_id: str
    report: Report


@dataclass(frozen=True, slots=True)
class Truth:
    flaky_rate: float  # chance that an attempt fails on good code; 0 for a stable test
    retries: int


@dataclass(frozen=True, slots=True)
class Simulation:
    runs: list[SimRun]
    truth: dict[TestKey, Truth]


@dataclass(frozen=True, slots=True)
class Detection:
    first_flaky_run: int | None  # SimRun.index of the run that first made the test flaky
    final_state: str


Detector = Callable[[list[SimRun]], dict[TestKey, Detection]]


def simulate(seed: int) -> Simulation:
    rng = random.Random(seed)
    repo = f"acme/app-{seed}"
    names = [f"test_stable_{i}" for i in range(STABLE_TESTS)]
    truth: dict[TestKey, Truth] = {}
    for name in names:
        for env in ENVIRONMENTS:
            truth[name, env] = Truth(0.0, RETRIES * rng.randrange(2))
    for band_index, (low, high) in enumerate(BANDS):
        for i in range(FLAKY_PER_BAND):
            name = f"test_flaky_{band_index}_{i}"
            names.append(name)
            # Log-uniform within the band, so its low end is as well represented as its high.
            rate = math.exp(rng.uniform(math.log(low), math.log(high)))
            retries = RETRIES * (i % 2)
            flaky_envs = (
                (rng.choice(ENVIRONMENTS),) if rng.random() < ONE_ENV_SHARE else ENVIRONMENTS
            )
            for env in ENVIRONMENTS:
                truth[name, env] = Truth(rate if env in flaky_envs else 0.0, retries)

    broken: set[tuple[str, str, int]] = set()  # (name, environment, commit number)
    for _ in range(REGRESSIONS):
        name = rng.choice(names)
        start = rng.randrange(COMMITS)
        envs = ENVIRONMENTS if rng.random() < 0.7 else (rng.choice(ENVIRONMENTS),)
        for commit in range(start, min(COMMITS, start + rng.randint(*REGRESSION_COMMITS))):
            broken.update((name, env, commit) for env in envs)

    runs: list[SimRun] = []
    at = datetime(2024, 3, 1, tzinfo=UTC)
    for commit in range(COMMITS):
        sha = f"{rng.getrandbits(160):040x}"
        at += timedelta(minutes=rng.randint(30, 240))
        for env in ENVIRONMENTS:
            run_at, rerun = at, True
            while rerun:
                outage = rng.uniform(*OUTAGE_FAILURE) if rng.random() < OUTAGE_CHANCE else 0.0
                tests = [
                    _run_test(rng, name, truth[name, env], (name, env, commit) in broken, outage)
                    for name in names
                ]
                runs.append(
                    SimRun(
                        repo,
                        "main",
                        sha,
                        env,
                        len(runs),
                        run_at,
                        f"{repo}/{len(runs)}",
                        Report("junit", tests),
                    )
                )
                failing = any(t.status in ("failed", "error") for t in tests)
                rerun = rng.random() < RERUN_CHANCE[failing]
                run_at += timedelta(minutes=rng.randint(10, 60))
    return Simulation(runs, truth)


def _run_test(rng: random.Random, name: str, truth: Truth, broken: bool, outage: float) -> TestCase:
    """One test's attempts in one run; ``outage`` is the run's outage failure chance or 0."""
    fail_chance = 1.0 if broken else max(outage, truth.flaky_rate)
    attempts = []
    for _ in range(1 + truth.retries):
        failed = rng.random() < fail_chance
        attempts.append(Attempt("failed" if failed else "passed", duration_ms=10.0))
        if not failed:
            break
    return TestCase(name=name, classname="app.tests", file="tests/test_app.py", attempts=attempts)


def detect_testlens(runs: list[SimRun]) -> dict[TestKey, Detection]:
    """Feed every run to :func:`observe` (through a :class:`CodeLedger`), as the server's
    ingest does.

    This is the one function to replace by uploading each report through the HTTP ingest API
    and reading the states and transitions back; the scores must not change.
    """
    states: dict[TestKey, TestState] = {}
    first: dict[TestKey, int] = {}
    ledger = CodeLedger()  # the earlier runs of each commit, which the server looks up
    for run in runs:
        for identity, obs in observations(
            run.report, run_id=run.run_id, at=run.at, commit=run.commit, environment=run.environment
        ):
            key = (identity[3], obs.environment or "")
            states[key], transitions = ledger.observe(key, states.get(key), obs)
            if key not in first and any(t.to_state == "flaky" for t in transitions):
                first[key] = run.index
    return {key: Detection(first.get(key), state.state) for key, state in states.items()}


def _outage(run: SimRun) -> bool:
    """The outage rule testlens applies, given to the baselines too so that they are compared
    on what they make of the evidence, not on being fooled by outages."""
    failing = sum(any(a.is_failure for a in test.attempts) for test in run.report.tests)
    return failing > DEFAULT_CONFIG.outage_failure_share * len(run.report.tests)


def detect_same_commit(runs: list[SimRun]) -> dict[TestKey, Detection]:
    """Baseline: flaky once it failed and passed on the same commit (retries included)."""
    seen: dict[tuple[TestKey, str], set[bool]] = {}
    first: dict[TestKey, int] = {}
    keys: set[TestKey] = set()
    for run in runs:
        if _outage(run):
            continue
        for test in run.report.tests:
            key = (test.name, run.environment)
            keys.add(key)
            outcomes = seen.setdefault((key, run.commit), set())
            outcomes.update(a.is_failure for a in test.attempts)
            if len(outcomes) == 2:
                first.setdefault(key, run.index)
    return {key: Detection(first.get(key), "flaky" if key in first else "healthy") for key in keys}


def detect_failure_rate(runs: list[SimRun]) -> dict[TestKey, Detection]:
    """Baseline: flaky once it failed in over 30% of at least 10 runs."""
    counts: dict[TestKey, list[int]] = {}
    first: dict[TestKey, int] = {}
    for run in runs:
        if _outage(run):
            continue
        for test in run.report.tests:
            key = (test.name, run.environment)
            count = counts.setdefault(key, [0, 0])
            count[0] += 1
            count[1] += any(a.is_failure for a in test.attempts)
            if count[0] >= 10 and count[1] > 0.3 * count[0]:
                first.setdefault(key, run.index)
    return {
        key: Detection(first.get(key), "flaky" if key in first else "healthy") for key in counts
    }


DETECTORS: dict[str, Detector] = {
    "testlens": detect_testlens,
    "same-commit": detect_same_commit,
    "rate>30%": detect_failure_rate,
}


@dataclass(slots=True)
class Tally:
    """Outcomes of one detector, pooled over histories."""

    flagged: int = 0
    false_flagged: int = 0
    flaky_at_end: int = 0  # truly flaky tests whose final state is flaky
    # per flaky test: (band, retried, runs to detection or None)
    flaky: list[tuple[int, bool, int | None]] = field(default_factory=list)


def score(sim: Simulation, detections: dict[TestKey, Detection], tally: Tally) -> None:
    position: dict[int, int] = {}  # run index -> how many runs of its environment so far
    per_env: dict[str, int] = {}
    for run in sim.runs:
        per_env[run.environment] = per_env.get(run.environment, 0) + 1
        position[run.index] = per_env[run.environment]
    for key, truth in sim.truth.items():
        found = detections[key].first_flaky_run
        if found is not None:
            tally.flagged += 1
            tally.false_flagged += truth.flaky_rate == 0
        if truth.flaky_rate > 0:
            tally.flaky_at_end += detections[key].final_state == "flaky"
            band = next(i for i, (_, high) in enumerate(BANDS) if truth.flaky_rate <= high)
            tally.flaky.append(
                (band, truth.retries > 0, None if found is None else position[found])
            )


def _median(values: list[int | None]) -> str:
    """Median runs to detection, an undetected test counting as never detected."""
    if not values:
        return "-"
    ordered = sorted(math.inf if v is None else v for v in values)
    middle = statistics.median(ordered)
    return "never" if math.isinf(middle) else f"{middle:g}"


def report(tallies: dict[str, Tally], seconds: dict[str, float]) -> None:
    names = list(tallies)
    print("\nPrecision (every test ever called flaky, all bands)")
    print(
        f"{'detector':<12} {'flagged':>8} {'false':>6} {'precision':>10} "
        f"{'flaky at end':>13} {'seconds':>8}"
    )
    for name, tally in tallies.items():
        precision = 1 - tally.false_flagged / tally.flagged if tally.flagged else 1.0
        print(
            f"{name:<12} {tally.flagged:>8} {tally.false_flagged:>6} {precision:>10.3f} "
            f"{tally.flaky_at_end:>13} {seconds[name]:>8.1f}"
        )
    for retried, label in ((None, "all flaky tests"), (False, "no retries"), (True, "retried")):
        print(f"\nRecall and median runs to detection ({label}; undetected counts as never)")
        print(
            f"{'band':<10} {'n':>4} "
            + " ".join(f"{n + ' recall':>18} {'median':>7}" for n in names)
        )
        for band, (low, high) in enumerate(BANDS):
            cells = []
            count = 0
            for tally in tallies.values():
                runs = [
                    r
                    for b, with_retries, r in tally.flaky
                    if b == band and retried in (None, with_retries)
                ]
                count = len(runs)
                found = sum(r is not None for r in runs)
                cells.append(f"{found / count if count else 0:>18.3f} {_median(runs):>7}")
            print(f"{low:>4.1%}-{high:<4.0%} {count:>4} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="simulated histories (default 6)")
    args = parser.parse_args()
    tallies = {name: Tally() for name in DETECTORS}
    seconds = dict.fromkeys(DETECTORS, 0.0)
    runs_total = 0
    for seed in range(args.seeds):
        sim = simulate(seed)
        runs_total += len(sim.runs)
        for name, detect in DETECTORS.items():
            start = time.perf_counter()
            detections = detect(sim.runs)
            seconds[name] += time.perf_counter() - start
            score(sim, detections, tallies[name])
    tests = len({name for name, _ in sim.truth})
    print(
        f"{args.seeds} histories, {runs_total} runs, {tests} tests x "
        f"{len(ENVIRONMENTS)} environments each"
    )
    report(tallies, seconds)


if __name__ == "__main__":
    main()
