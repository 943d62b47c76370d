"""Walk-forward benchmark of duration prediction and sharding on real duration histories.

Run from the repository root: ``python benchmarks/sharding.py``. The corpus is read from
``../shared/corpus`` beside the checkout, or from ``$TESTLENS_CORPUS``.

Every dataset in ``durations/`` is a project's committed duration file at each version
(``snapshots.tsv`` lists them newest first, in commit order). For each version t after the
first, every method plans from the versions before t and the list of tests in t, and is
scored on t's real durations: slowest shard / lower bound, where the lower bound is
max(total / K, longest test), so 1.000 is a perfect split.

Methods:
- testlens: ``predict`` over the history, then ``plan_shards`` on the p50s.
- testlens exact: ``plan_shards`` on t's own durations (what the planner can do with a
  perfect prediction).
- pytest-split least_duration / duration_based_chunks: the installed pytest-split algorithms,
  called as its plugin does, with the previous version's file as its durations (unknown tests
  get pytest-split's average) and tests in file order (the files are sorted by id).
- jest equal count: Jest's default sharding, equal-count chunks of tests sorted by SHA-1 of
  their path.
- LPT last run: longest-first onto the least-loaded shard with the previous version's
  durations, unknown tests at that version's median.

History: pytest-split merges new measurements into the old file, so a value identical to the
previous version's is the same measurement carried over, not a new run. It is recorded once,
and the prediction error is scored only on values measured anew at t (new or changed).
"""

from __future__ import annotations

import hashlib
import heapq
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from pytest_split.algorithms import Algorithms

from testlens.core.durations import (
    Estimate,
    Sample,
    TestKey,
    calibrate,
    parse_durations,
    predict,
)
from testlens.core.sharding import plan_shards

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("TESTLENS_CORPUS", ROOT.parent / "shared" / "corpus"))
SHARD_COUNTS = (2, 4, 8, 16, 32, 64)
TARGET_K16 = 1.08

Durations = dict[TestKey, float]
Shards = Sequence[Sequence[TestKey]]
Method = Callable[[Durations, Mapping[TestKey, Estimate], Sequence[TestKey], int], Shards]


class Item(NamedTuple):
    """The one attribute of a pytest item that pytest-split's algorithms read."""

    nodeid: str


def load_runs(dataset: Path) -> list[tuple[str, Durations]]:
    """The dataset's versions, oldest first, as (file name, test -> ms)."""
    by_commit = {path.stem.split("_", 1)[1]: path
                 for path in (dataset / "snapshots").glob("*.json")}
    runs = []
    for line in reversed((dataset / "snapshots.tsv").read_text().splitlines()):
        fields = line.split("\t")
        path = by_commit.get(fields[1][:10]) if len(fields) > 1 else None
        if path is not None:
            runs.append((path.name, parse_durations(path.read_bytes())))
    return runs


def testlens(previous: Durations, estimates: Mapping[TestKey, Estimate],
             tests: Sequence[TestKey], shards: int) -> Shards:
    return plan_shards({test: estimates[test].p50_ms for test in tests}, shards).shards


def pytest_split(name: str) -> Method:
    algorithm = Algorithms[name].value

    def run(previous: Durations, estimates: Mapping[TestKey, Estimate],
            tests: Sequence[TestKey], shards: int) -> Shards:
        items = [Item(test.nodeid) for test in tests]
        seconds = {test.nodeid: ms / 1000.0 for test, ms in previous.items()}
        by_id = {test.nodeid: test for test in tests}
        return [[by_id[item.nodeid] for item in group.selected]
                for group in algorithm(shards, items, seconds)]

    return run


def jest_equal_count(previous: Durations, estimates: Mapping[TestKey, Estimate],
                     tests: Sequence[TestKey], shards: int) -> Shards:
    ordered = sorted(tests, key=lambda test: hashlib.sha1(test.nodeid.encode()).hexdigest())
    size = -(-len(ordered) // shards)
    return [ordered[index * size:(index + 1) * size] for index in range(shards)]


def lpt_last_run(previous: Durations, estimates: Mapping[TestKey, Estimate],
                 tests: Sequence[TestKey], shards: int) -> Shards:
    unknown = statistics.median(previous.values())
    weights = sorted(((previous.get(test, unknown), test) for test in tests),
                     key=lambda pair: (-pair[0], pair[1]))
    bins: list[list[TestKey]] = [[] for _ in range(shards)]
    heap = [(0.0, shard) for shard in range(shards)]
    for weight, test in weights:
        load, shard = heap[0]
        bins[shard].append(test)
        heapq.heapreplace(heap, (load + weight, shard))
    return bins


METHODS: dict[str, Method] = {
    "testlens": testlens,
    "pytest-split least_duration": pytest_split("least_duration"),
    "pytest-split duration_based_chunks": pytest_split("duration_based_chunks"),
    "jest equal count": jest_equal_count,
    "LPT last run": lpt_last_run,
}
BASELINES = [name for name in METHODS if name != "testlens"]
EXACT = "testlens exact durations"


def ratio(shards: Shards, actual: Durations) -> float:
    slowest = max(sum(actual[test] for test in shard) for shard in shards)
    return slowest / max(sum(actual.values()) / len(shards), max(actual.values()))


def ape(predicted: float, actual: float) -> float:
    return abs(predicted - actual) / actual


class Errors(NamedTuple):
    known: dict[str, list[float]]
    new: dict[str, list[float]]
    p90_covered: list[bool]
    half_lives: list[float]


def run_dataset(runs: list[tuple[str, Durations]]) -> tuple[dict[str, dict[int, list[float]]],
                                                            Errors]:
    scores: dict[str, dict[int, list[float]]] = {
        name: {shards: [] for shards in SHARD_COUNTS} for name in [*METHODS, EXACT]}
    errors = Errors({"testlens": [], "last value": [], "mean of history": []},
                    {"testlens": [], "pytest-split average": []}, [], [])
    history: dict[TestKey, list[tuple[int, float]]] = {}
    previous: Durations = {}
    for index, (_, actual) in enumerate(runs):
        if index > 0:
            tests = sorted(actual)
            samples = {test: [Sample(ms, age=index - 1 - at) for at, ms in measured]
                       for test, measured in history.items()}
            calibration = calibrate(samples)
            errors.half_lives.append(calibration.half_life)
            estimates = predict(tests, samples, calibration=calibration)
            for shards in SHARD_COUNTS:
                for name, method in METHODS.items():
                    plan = method(previous, estimates, tests, shards)
                    scores[name][shards].append(ratio(plan, actual))
                scores[EXACT][shards].append(ratio(plan_shards(actual, shards).shards, actual))
            score_predictions(errors, history, previous, estimates, actual)
        for test, ms in actual.items():
            if previous.get(test) != ms:
                history.setdefault(test, []).append((index, ms))
        previous = actual
    return scores, errors


def score_predictions(errors: Errors, history: Mapping[TestKey, list[tuple[int, float]]],
                      previous: Durations, estimates: Mapping[TestKey, Estimate],
                      actual: Durations) -> None:
    average = statistics.fmean(previous[test] for test in actual if test in previous) \
        if any(test in previous for test in actual) else 1000.0
    for test, ms in actual.items():
        if ms <= 0 or previous.get(test) == ms:
            continue  # carried over from the previous version: not a new measurement
        guess = estimates[test]
        measured = history.get(test)
        if measured:
            values = [value for _, value in measured]
            errors.known["testlens"].append(ape(guess.p50_ms, ms))
            errors.known["last value"].append(ape(values[-1], ms))
            errors.known["mean of history"].append(ape(statistics.fmean(values), ms))
            errors.p90_covered.append(ms <= guess.p90_ms)
        else:
            errors.new["testlens"].append(ape(guess.p50_ms, ms))
            errors.new["pytest-split average"].append(ape(average, ms))


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.fmean(ordered):.3f}/{p90:.3f}/{ordered[-1]:.3f}"


def print_scores(scores: dict[str, dict[int, list[float]]]) -> None:
    width = max(len(name) for name in scores) + 2
    print(" " * width + "".join(f"{'K=' + str(shards):>20}" for shards in SHARD_COUNTS))
    for name, by_shards in scores.items():
        print(f"{name:<{width}}" + "".join(f"{summary(by_shards[k]):>20}" for k in SHARD_COUNTS))


def print_errors(errors: Errors) -> None:
    def mdape(values: list[float]) -> str:
        return f"{100 * statistics.median(values):.1f}%" if values else "-"

    count = len(errors.known["testlens"])
    print(f"  MdAPE, tests with history ({count} new measurements): "
          + ", ".join(f"{name} {mdape(values)}" for name, values in errors.known.items()))
    if errors.p90_covered:
        share = sum(errors.p90_covered) / len(errors.p90_covered)
        print(f"  testlens p90 covers {100 * share:.0f}% of them")
    chosen = Counter(errors.half_lives)
    print("  half-life chosen by calibrate (runs x versions): "
          + ", ".join(f"{half_life:g} x{chosen[half_life]}" for half_life in sorted(chosen)))
    count = len(errors.new["testlens"])
    print(f"  MdAPE, new tests ({count}): "
          + ", ".join(f"{name} {mdape(values)}" for name, values in errors.new.items()))


def main() -> int:
    datasets = sorted(path for path in (CORPUS / "durations").iterdir()
                      if (path / "snapshots.tsv").is_file())
    if not datasets:
        print(f"no duration datasets under {CORPUS / 'durations'}; set TESTLENS_CORPUS")
        return 1
    started = time.perf_counter()
    verdicts = []
    for dataset in datasets:
        runs = load_runs(dataset)
        scores, errors = run_dataset(runs)
        print(f"\n## {dataset.name}: {len(runs)} versions, {len(runs[-1][1])} tests in the newest;"
              " slowest shard / lower bound as mean/p90/worst over versions")
        print_scores(scores)
        print_errors(errors)
        for shards in SHARD_COUNTS:
            ours = statistics.fmean(scores["testlens"][shards])
            best = min(statistics.fmean(scores[name][shards]) for name in BASELINES)
            if ours > best + 1e-9:
                verdicts.append(f"{dataset.name} K={shards}: testlens {ours:.3f} > best "
                                f"baseline {best:.3f}")
        k16 = statistics.fmean(scores["testlens"][16])
        if k16 > TARGET_K16:
            verdicts.append(f"{dataset.name} K=16: testlens mean {k16:.3f} > {TARGET_K16}")
    print("\nTargets: " + ("all met" if not verdicts else "missed:\n  " + "\n  ".join(verdicts)))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
