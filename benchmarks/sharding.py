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
- pytest-split least_duration / duration_based_chunks: the installed pytest-split algorithms,
  called as its plugin does, with the previous version's file as its durations (unknown tests
  get pytest-split's average) and tests in file order (the files are sorted by id).
- jest equal count: Jest's default sharding, equal-count chunks of tests sorted by SHA-1 of
  their path.
- LPT last run: longest-first onto the least-loaded shard with the previous version's
  durations, unknown tests at that version's median.
- testlens exact durations: ``plan_shards`` on t's own durations, what the planner does with
  a perfect prediction.
- oracle, known tests exact: ``plan_shards`` on t's own durations for tests with history and
  testlens' fallback for new tests. Not a method: it shows how much of the gap to 1.000 is
  the change of known tests between versions, which no history can foresee.

History: pytest-split merges new measurements into the old file, so a value identical to the
previous version's is the same measurement carried over, not a new run. It is recorded once,
a version in which no test was measured anew is not scored (it is not a run), and the
prediction error is scored only on values measured anew at t.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pytest_split.algorithms import Algorithms

from testlens.core.durations import (
    Estimate,
    Sample,
    calibrate,
    parse_durations,
    predict,
)
from testlens.core.identity import TestKey
from testlens.core.sharding import plan_shards

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("TESTLENS_CORPUS", ROOT.parent / "shared" / "corpus"))
SHARD_COUNTS = (2, 4, 8, 16, 32, 64)
TARGET_K16 = 1.08

Durations = dict[TestKey, float]
Shards = Sequence[Sequence[TestKey]]


@dataclass(frozen=True, slots=True)
class Version:
    """What a method may use to plan version t: the tests of t, the previous version's file,
    testlens' estimates, and which tests have history."""

    tests: list[TestKey]
    previous: Durations
    estimates: dict[TestKey, Estimate]
    actual: Durations
    known: frozenset[TestKey]


Method = Callable[[Version, int], Shards]


class Item(NamedTuple):
    """The one attribute of a pytest item that pytest-split's algorithms read."""

    nodeid: str


def load_runs(dataset: Path) -> list[tuple[str, Durations]]:
    """The dataset's versions, oldest first, as (file name, test -> ms)."""
    by_commit = {
        path.stem.split("_", 1)[1]: path for path in (dataset / "snapshots").glob("*.json")
    }
    runs = []
    for line in reversed((dataset / "snapshots.tsv").read_text().splitlines()):
        fields = line.split("\t")
        path = by_commit.get(fields[1][:10]) if len(fields) > 1 else None
        if path is not None:
            runs.append((path.name, parse_durations(path.read_bytes())))
    return runs


def testlens(version: Version, shards: int) -> Shards:
    return plan_shards(
        {test: version.estimates[test].p50_ms for test in version.tests}, shards
    ).shards


def pytest_split(name: str) -> Method:
    algorithm = Algorithms[name].value

    def run(version: Version, shards: int) -> Shards:
        items = [Item(test.nodeid) for test in version.tests]
        seconds = {test.nodeid: ms / 1000.0 for test, ms in version.previous.items()}
        by_id = {test.nodeid: test for test in version.tests}
        return [
            [by_id[item.nodeid] for item in group.selected]
            for group in algorithm(shards, items, seconds)
        ]

    return run


def jest_equal_count(version: Version, shards: int) -> Shards:
    ordered = sorted(version.tests, key=lambda test: hashlib.sha1(test.nodeid.encode()).hexdigest())
    size = -(-len(ordered) // shards)
    return [ordered[index * size : (index + 1) * size] for index in range(shards)]


def lpt_last_run(version: Version, shards: int) -> Shards:
    unknown = statistics.median(version.previous.values())
    weights = sorted(
        ((version.previous.get(test, unknown), test) for test in version.tests),
        key=lambda pair: (-pair[0], pair[1]),
    )
    bins: list[list[TestKey]] = [[] for _ in range(shards)]
    heap = [(0.0, shard) for shard in range(shards)]
    for weight, test in weights:
        load, shard = heap[0]
        bins[shard].append(test)
        heapq.heapreplace(heap, (load + weight, shard))
    return bins


def exact(version: Version, shards: int) -> Shards:
    return plan_shards(version.actual, shards).shards


def oracle_known(version: Version, shards: int) -> Shards:
    weights = {
        test: version.actual[test] if test in version.known else version.estimates[test].p50_ms
        for test in version.tests
    }
    return plan_shards(weights, shards).shards


METHODS: dict[str, Method] = {
    "testlens": testlens,
    "pytest-split least_duration": pytest_split("least_duration"),
    "pytest-split duration_based_chunks": pytest_split("duration_based_chunks"),
    "jest equal count": jest_equal_count,
    "LPT last run": lpt_last_run,
    "testlens exact durations": exact,
    "oracle, known tests exact": oracle_known,
}
BASELINES = (
    "pytest-split least_duration",
    "pytest-split duration_based_chunks",
    "jest equal count",
    "LPT last run",
)


def ratio(shards: Shards, actual: Durations) -> float:
    slowest = max(sum(actual[test] for test in shard) for shard in shards)
    return slowest / max(sum(actual.values()) / len(shards), max(actual.values()))


def ape(predicted: float, actual: float) -> float:
    return abs(predicted - actual) / actual


@dataclass
class Results:
    scores: dict[str, dict[int, list[float]]] = field(
        default_factory=lambda: {name: {shards: [] for shards in SHARD_COUNTS} for name in METHODS}
    )
    known: dict[str, list[float]] = field(
        default_factory=lambda: {"testlens": [], "last value": [], "mean of history": []}
    )
    new: dict[str, list[float]] = field(
        default_factory=lambda: {"testlens": [], "pytest-split average": []}
    )
    p90_covered: list[bool] = field(default_factory=list)
    half_lives: list[float] = field(default_factory=list)
    unscored: int = 0


def run_dataset(runs: list[tuple[str, Durations]]) -> Results:
    results = Results()
    history: dict[TestKey, list[tuple[int, float]]] = {}
    previous: Durations = {}
    for index, (_, actual) in enumerate(runs):
        if index > 0 and all(previous.get(test, ms) == ms for test, ms in actual.items()):
            results.unscored += 1
        elif index > 0:
            samples = {
                test: [Sample(ms, age=index - 1 - at) for at, ms in measured]
                for test, measured in history.items()
            }
            calibration = calibrate(samples)
            results.half_lives.append(calibration.half_life)
            tests = sorted(actual)
            version = Version(
                tests,
                previous,
                predict(tests, samples, calibration=calibration),
                actual,
                frozenset(history),
            )
            for shards in SHARD_COUNTS:
                for name, method in METHODS.items():
                    results.scores[name][shards].append(ratio(method(version, shards), actual))
            score_predictions(results, history, version)
        for test, ms in actual.items():
            if previous.get(test) != ms:
                history.setdefault(test, []).append((index, ms))
        previous = actual
    return results


def score_predictions(
    results: Results, history: Mapping[TestKey, list[tuple[int, float]]], version: Version
) -> None:
    relevant = [version.previous[test] for test in version.tests if test in version.previous]
    average = statistics.fmean(relevant) if relevant else 1000.0  # as pytest-split does
    for test, ms in version.actual.items():
        if ms <= 0 or version.previous.get(test) == ms:
            continue  # carried over from the previous version: not a new measurement
        guess = version.estimates[test]
        measured = history.get(test)
        if measured:
            values = [value for _, value in measured]
            results.known["testlens"].append(ape(guess.p50_ms, ms))
            results.known["last value"].append(ape(values[-1], ms))
            results.known["mean of history"].append(ape(statistics.fmean(values), ms))
            results.p90_covered.append(ms <= guess.p90_ms)
        else:
            results.new["testlens"].append(ape(guess.p50_ms, ms))
            results.new["pytest-split average"].append(ape(average, ms))


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.fmean(ordered):.3f}/{p90:.3f}/{ordered[-1]:.3f}"


def mean_over_k(results: Results, name: str) -> float:
    return statistics.fmean(statistics.fmean(results.scores[name][k]) for k in SHARD_COUNTS)


def paired_difference(results: Results, baseline: str) -> tuple[float, float]:
    """Mean and standard error of testlens' score minus ``baseline``'s, version by version:
    whether a difference between two methods is more than the luck of one version."""
    ours, theirs = results.scores["testlens"], results.scores[baseline]
    differences = [
        statistics.fmean(ours[k][index] - theirs[k][index] for k in SHARD_COUNTS)
        for index in range(len(ours[SHARD_COUNTS[0]]))
    ]
    if len(differences) < 2:
        return differences[0], math.nan
    return (
        statistics.fmean(differences),
        statistics.stdev(differences) / math.sqrt(len(differences)),
    )


def print_results(results: Results) -> None:
    width = max(len(name) for name in METHODS) + 2
    print(
        " " * width + "".join(f"{'K=' + str(k):>20}" for k in SHARD_COUNTS) + f"{'mean over K':>13}"
    )
    for name, by_shards in results.scores.items():
        print(
            f"{name:<{width}}"
            + "".join(f"{summary(by_shards[k]):>20}" for k in SHARD_COUNTS)
            + f"{mean_over_k(results, name):>13.3f}"
        )

    def mdape(values: list[float]) -> str:
        return f"{100 * statistics.median(values):.1f}%" if values else "-"

    print(
        f"  MdAPE, tests with history ({len(results.known['testlens'])} new measurements): "
        + ", ".join(f"{name} {mdape(values)}" for name, values in results.known.items())
    )
    if results.p90_covered:
        share = sum(results.p90_covered) / len(results.p90_covered)
        print(f"  testlens p90 covers {100 * share:.0f}% of them")
    print(
        f"  MdAPE, new tests ({len(results.new['testlens'])}): "
        + ", ".join(f"{name} {mdape(values)}" for name, values in results.new.items())
    )
    for baseline in ("pytest-split least_duration", "LPT last run"):
        mean, error = paired_difference(results, baseline)
        print(
            f"  testlens - {baseline}, per version (mean over K): {mean:+.4f} "
            f"+- {error:.4f} (standard error)"
        )
    chosen = Counter(results.half_lives)
    print(
        "  half-life chosen by calibrate (runs: versions): "
        + ", ".join(f"{half_life:g}: {chosen[half_life]}" for half_life in sorted(chosen))
    )


def verdicts(dataset: str, results: Results) -> list[str]:
    missed = []
    for k in SHARD_COUNTS:
        ours = statistics.fmean(results.scores["testlens"][k])
        best = min(statistics.fmean(results.scores[name][k]) for name in BASELINES)
        if ours > best + 5e-4:
            missed.append(f"{dataset} K={k}: testlens {ours:.3f} > best baseline {best:.3f}")
    ours = mean_over_k(results, "testlens")
    best = min(mean_over_k(results, name) for name in BASELINES)
    if ours > best + 5e-4:
        missed.append(f"{dataset} mean over K: testlens {ours:.3f} > best baseline {best:.3f}")
    k16 = statistics.fmean(results.scores["testlens"][16])
    if k16 > TARGET_K16:
        missed.append(f"{dataset} K=16: testlens mean {k16:.3f} > target {TARGET_K16}")
    exact_worst = max(max(values) for values in results.scores["testlens exact durations"].values())
    if exact_worst > 1.0005:
        missed.append(f"{dataset}: exact durations reach {exact_worst:.4f}")
    return missed


def duration_datasets() -> list[Path]:
    """The corpus' duration histories: every folder of ``durations/`` with a snapshot list."""
    return sorted(
        path for path in (CORPUS / "durations").iterdir() if (path / "snapshots.tsv").is_file()
    )


def main() -> int:
    datasets = duration_datasets()
    if not datasets:
        print(f"no duration datasets under {CORPUS / 'durations'}; set TESTLENS_CORPUS")
        return 1
    started = time.perf_counter()
    missed: list[str] = []
    for dataset in datasets:
        runs = load_runs(dataset)
        results = run_dataset(runs)
        scored = len(runs) - 1 - results.unscored
        print(
            f"\n## {dataset.name}: {len(runs)} versions, {scored} scored "
            f"({results.unscored} carried no new measurement), "
            f"{len(runs[-1][1])} tests in the newest"
        )
        if not scored:
            print("  nothing to score: no version after the first measured any test anew")
            continue
        print("slowest shard / lower bound, mean/p90/worst over scored versions")
        print_results(results)
        missed.extend(verdicts(dataset.name, results))
    print("\nTargets: " + ("all met" if not missed else "missed:\n  " + "\n  ".join(missed)))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
