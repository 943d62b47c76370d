"""Orchestrated runs simulated on real duration histories: the testlens queue next to a static
plan and the claim rules of other test orchestrators.

Run from the repository root: ``python benchmarks/orchestration.py``. The corpus is read from
``../shared/corpus/durations`` (or ``$TESTLENS_CORPUS/durations``) as ``benchmarks/sharding.py``
reads it: for each version t that measured any test anew, every strategy plans from
``predict`` over the versions before t, and the simulation runs t's real durations.

The unit of work is a test file (the tests of one file run together; knapsack histories are
per file already); its p50 and p90 are its tests' sums (``queue_items``). K workers boot
after a delay drawn uniformly from 0-30 s, five seeds per version; each batch a worker
claims costs a fixed overhead before its files run: 0.05 s (pytest in one process) or 2 s (a
process per batch). Results arrive file by file as files finish, and the run ends with the
last file's first result. In the second scenario one worker, drawn by the seed, dies at half
the run's lower bound: files it finished count, its unfinished ones are lost; with leases
they are handed out again when the lease expires, 30 s after its last heartbeat, otherwise
they never run. A strategy that loses files ends when the surviving workers finish, which
can be before the bound; "tests never ran" is the cost.

Strategies:
- testlens queue: :mod:`testlens.core.queue` (longest first by p90, each claim an even share
  of the remaining p90s and items, a speculative copy of a straggling claim when the queue is
  empty, the files of a lost worker requeued when its lease expires).
- testlens static plan: ``plan_shards`` of the files' predicted durations over K shards;
  worker i runs shard i as one batch once it has booted.
- sorry-cypress-like: the first unclaimed file in list (path) order, one file per claim.
- Knapsack-like: longest first by predicted duration, fixed batches of 30 s of predicted work
  (at least one file).
- Currents-like: longest first by predicted duration, three files per claim.
- queue, exact durations: the testlens queue given each file's real duration as its p50 and
  p90. Not a strategy: it shows how much of the gap to the bound is the prediction's error.
Only the testlens queue reassigns work: the others never run a dead worker's unfinished files.

Lower bound of a run (no schedule can end earlier), with b_i worker i's boot delay, o the
per-batch overhead, W the run's total real work and d_max its longest file:
max(min_i b_i + o + d_max, the smallest T with sum_i max(0, T - b_i - o) >= W). The longest
file runs whole on one worker after that worker's boot and one overhead; and by T the
workers together can have run at most the time since each one's boot, less one overhead for
each worker that ran anything. When a worker dies at time D, its share is limited to
max(0, min(T, D) - b_i - o), and only workers alive until then count for the longest file:
the bound still credits the dead worker with useful work until its death, so it is at most
the bound of the surviving workers alone. (The familiar (sum b_i + W) / K is not a valid
bound: it charges workers that boot after the end.)

Runtime: about a minute on two cores; every scored version is simulated.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from heapq import heappop, heappush
from itertools import islice
from pathlib import Path
from typing import Protocol

from sharding import CORPUS, Durations, duration_datasets, load_runs

from testlens.core.durations import Sample, calibrate, predict
from testlens.core.identity import TestKey
from testlens.core.queue import (
    QueueItem,
    batch_size,
    is_straggler,
    order,
    queue_items,
    straggler_after_ms,
    take_batch,
)
from testlens.core.sharding import plan_shards

WORKERS = (4, 16, 64)
OVERHEADS_MS = (50.0, 2000.0)
SEEDS = 5
MAX_BOOT_MS = 30_000.0
LEASE_TTL_MS = 30_000.0
KNAPSACK_BATCH_MS = 30_000.0
CURRENTS_BATCH_FILES = 3
POLL_MS = 1.0  # an idle worker asks again just after the moment something may change

TARGET_K16 = 1.03
TARGET_DEAD = 1.15
TARGETS = (
    "Targets for the testlens queue, on each dataset's mean over versions and seeds: at most "
    f"{TARGET_K16} at K=16 with 0.05 s overhead; with 2 s overhead no worse than the static "
    f"plan at any K; when a worker dies, every test runs and at most {TARGET_DEAD} at every K "
    "and overhead."
)

BOUND = (
    "lower bound = max(min_i b_i + o + d_max, smallest T with sum_i max(0, min(T, D_i) - b_i - o)"
    " >= W)\n  b_i boot of worker i, o overhead per batch, d_max longest file, W total work,"
    " D_i death of worker i (none: infinite)"
)
QUEUE = "testlens queue"
EXACT = "queue, exact durations"
STATIC = "testlens static plan"


@dataclass(frozen=True, slots=True)
class File:
    """A unit of work: its queue item (predicted from history), its real duration at t and
    how many tests it holds."""

    item: QueueItem
    actual_ms: float
    tests: int


@dataclass(frozen=True, slots=True)
class Scenario:
    """The workers of one simulated run: per-batch overhead, boot delays, and which worker
    dies when (none by default)."""

    overhead_ms: float
    boots: tuple[float, ...]
    dead: int | None = None
    dies_at: float = math.inf

    def ends(self, worker: int) -> float:
        return self.dies_at if worker == self.dead else math.inf


class Ledger:
    """When each file's first result arrives (scheduled when its batch is claimed)."""

    def __init__(self) -> None:
        self.done_at: dict[str, float] = {}

    def record(self, file: str, at: float) -> None:
        self.done_at[file] = min(at, self.done_at.get(file, math.inf))

    def has_result(self, file: str, now: float) -> bool:
        return self.done_at.get(file, math.inf) <= now


class Dispatcher(Protocol):
    """A strategy's server side: answers a worker's claim with a batch of files, a time to
    ask again, or ``None`` (nothing more for this worker)."""

    def claim(self, worker: int, now: float) -> list[File] | float | None: ...

    def lost(self, files: list[File], at: float) -> None:
        """``files`` of a claim were lost with their worker at ``at``; the dispatcher may act
        on it only once it could know (a lease expiring)."""


@dataclass(frozen=True, slots=True)
class Claim:
    start: float
    items: list[QueueItem]


class TestlensQueue:
    """The server of an orchestrated run, driven by :mod:`testlens.core.queue`."""

    def __init__(self, files: Sequence[File], scenario: Scenario, ledger: Ledger) -> None:
        self.files = {file.item.id: file for file in files}
        self.queue = order(file.item for file in files)
        self.head = 0
        self.remaining_ms = math.fsum(item.p90_ms for item in self.queue)
        self.workers = len(scenario.boots)
        self.overhead_ms = scenario.overhead_ms
        self.ledger = ledger
        self.uncopied: list[Claim] = []  # claims that may still get a speculative copy
        self.expiring: list[tuple[float, list[str]]] = []

    def claim(self, worker: int, now: float) -> list[File] | float | None:
        self._expire(now)
        if self.head < len(self.queue):
            size = batch_size(
                self.remaining_ms, len(self.queue) - self.head, self.workers, self.overhead_ms
            )
            batch = take_batch(islice(self.queue, self.head, None), size)
            self.head += len(batch)
            self.remaining_ms -= math.fsum(item.p90_ms for item in batch)
            self.uncopied.append(Claim(now, batch))
            return [self.files[item.id] for item in batch]
        self.uncopied = [claim for claim in self.uncopied if self._unfinished(claim, now)]
        late = [claim for claim in self.uncopied if is_straggler(claim.items, now - claim.start)]
        if late:
            straggler = min(late, key=lambda claim: claim.start + straggler_after_ms(claim.items))
            self.uncopied.remove(straggler)
            copy = [item for item in straggler.items if not self.ledger.has_result(item.id, now)]
            return [self.files[item.id] for item in copy]
        wake = [at for at, _ in self.expiring] + [
            claim.start + straggler_after_ms(claim.items) for claim in self.uncopied
        ]
        return min(wake) + POLL_MS if wake else None

    def lost(self, files: list[File], at: float) -> None:
        self.expiring.append((at + LEASE_TTL_MS, [file.item.id for file in files]))

    def _unfinished(self, claim: Claim, now: float) -> bool:
        return any(not self.ledger.has_result(item.id, now) for item in claim.items)

    def _expire(self, now: float) -> None:
        """Requeue the files of expired leases that no copy is running, and count their
        worker as gone."""
        due = {file for at, ids in self.expiring if at <= now for file in ids}
        if not due:
            return
        self.expiring = [(at, ids) for at, ids in self.expiring if at > now]
        self.uncopied = [
            claim for claim in self.uncopied if not any(item.id in due for item in claim.items)
        ]
        back = [self.files[file].item for file in sorted(due) if file not in self.ledger.done_at]
        self.queue = order([*self.queue[self.head :], *back])
        self.head = 0
        self.remaining_ms += math.fsum(item.p90_ms for item in back)
        self.workers = max(1, self.workers - 1)


class StaticPlan:
    """Shard i of a plan made before the run, as one batch of worker i."""

    def __init__(self, shards: Sequence[Sequence[File]]) -> None:
        self.shards = {index: list(shard) for index, shard in enumerate(shards) if shard}

    def claim(self, worker: int, now: float) -> list[File] | float | None:
        return self.shards.pop(worker, None)

    def lost(self, files: list[File], at: float) -> None:
        pass


class ListQueue:
    """A list handed out from the front, a batch per claim, never reassigned."""

    def __init__(self, files: list[File], take: Callable[[list[File]], int]) -> None:
        self.files = files
        self.head = 0
        self.take = take

    def claim(self, worker: int, now: float) -> list[File] | float | None:
        if self.head >= len(self.files):
            return None
        count = self.take(self.files[self.head :])
        batch = self.files[self.head : self.head + count]
        self.head += count
        return batch

    def lost(self, files: list[File], at: float) -> None:
        pass


def longest_first(files: Sequence[File]) -> list[File]:
    return sorted(files, key=lambda file: (-file.item.predicted_ms, file.item.id))


def knapsack_take(files: list[File]) -> int:
    """Files from the front while their predicted durations fit in the fixed batch, at
    least one."""
    total = 0.0
    for count, file in enumerate(files):
        total += file.item.predicted_ms
        if count and total > KNAPSACK_BATCH_MS:
            return count
    return len(files)


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the strategies of one version and worker count plan from: its files, the same
    files predicted exactly, and the static plan."""

    files: list[File]
    exact: list[File]
    plan: list[list[File]]


Strategy = Callable[[Inputs, Scenario, Ledger], Dispatcher]

STRATEGIES: dict[str, Strategy] = {
    QUEUE: lambda inputs, scenario, ledger: TestlensQueue(inputs.files, scenario, ledger),
    EXACT: lambda inputs, scenario, ledger: TestlensQueue(inputs.exact, scenario, ledger),
    STATIC: lambda inputs, scenario, ledger: StaticPlan(inputs.plan),
    "sorry-cypress-like": lambda inputs, scenario, ledger: ListQueue(
        sorted(inputs.files, key=lambda file: file.item.id), lambda rest: 1
    ),
    "Knapsack-like 30 s": lambda inputs, scenario, ledger: ListQueue(
        longest_first(inputs.files), knapsack_take
    ),
    "Currents-like 3/claim": lambda inputs, scenario, ledger: ListQueue(
        longest_first(inputs.files), lambda rest: CURRENTS_BATCH_FILES
    ),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    ratio: float
    never_ran: int


def simulate(dispatcher: Dispatcher, ledger: Ledger, scenario: Scenario) -> None:
    """Workers claim, run and claim again until the dispatcher has nothing for them; every
    file's result time goes to ``ledger``."""
    asks = [(boot, worker) for worker, boot in enumerate(scenario.boots)]
    asks.sort()
    while asks:
        now, worker = heappop(asks)
        if now >= scenario.ends(worker):
            continue
        answer = dispatcher.claim(worker, now)
        if answer is None:
            continue
        if isinstance(answer, float):
            heappush(asks, (answer, worker))
            continue
        end = now + scenario.overhead_ms
        for position, file in enumerate(answer):
            end += file.actual_ms
            if end > scenario.ends(worker):
                dispatcher.lost(answer[position:], scenario.ends(worker))
                break
            ledger.record(file.item.id, end)
        else:
            heappush(asks, (end, worker))


def lower_bound(actual_ms: Sequence[float], scenario: Scenario) -> float:
    """See the module docstring: the longest file after the earliest boot that can hold it,
    and the time by which the workers' capacity covers the total work."""
    overhead = scenario.overhead_ms
    longest = max(actual_ms)
    work = math.fsum(actual_ms)
    starts = [
        boot + overhead
        for worker, boot in enumerate(scenario.boots)
        if boot + overhead + longest <= scenario.ends(worker)
    ]

    def capacity(at: float) -> float:
        return math.fsum(
            max(0.0, min(at, scenario.ends(worker)) - boot - overhead)
            for worker, boot in enumerate(scenario.boots)
        )

    low, high = 0.0, max(scenario.boots) + overhead + work
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if capacity(middle) < work else (low, middle)
    return max(min(starts, default=0.0) + longest, high)


def run(inputs: Inputs, scenario: Scenario, strategy: Strategy, bound: float) -> Outcome:
    ledger = Ledger()
    simulate(strategy(inputs, scenario, ledger), ledger, scenario)
    finished = ledger.done_at.values()
    never_ran = sum(file.tests for file in inputs.files if file.item.id not in ledger.done_at)
    return Outcome(max(finished, default=0.0) / bound, never_ran)


def exact(file: File) -> File:
    """``file`` with its real duration as its prediction (p50 and p90)."""
    item = replace(file.item, predicted_ms=file.actual_ms, p90_ms=file.actual_ms)
    return replace(file, item=item)


def file_versions(runs: list[tuple[str, Durations]]) -> Iterator[list[File]]:
    """Each scored version's files, predicted from the versions before it (as
    ``benchmarks/sharding.py`` scores them: a version that measured nothing anew is no run)."""
    history: dict[TestKey, list[tuple[int, float]]] = {}
    previous: Durations = {}
    for index, (_, actual) in enumerate(runs):
        if index > 0 and any(previous.get(test, ms) != ms for test, ms in actual.items()):
            samples = {
                test: [Sample(ms, age=index - 1 - at) for at, ms in measured]
                for test, measured in history.items()
            }
            tests = sorted(actual)
            estimates = predict(tests, samples, calibration=calibrate(samples))
            real: dict[str, float] = {}
            counts: dict[str, int] = {}
            for test, ms in actual.items():
                real[test.location] = real.get(test.location, 0.0) + ms
                counts[test.location] = counts.get(test.location, 0) + 1
            yield [
                File(item, real[item.id], counts[item.id])
                for item in queue_items(estimates, group_by="file")
            ]
        for test, ms in actual.items():
            if previous.get(test) != ms:
                history.setdefault(test, []).append((index, ms))
        previous = actual


Key = tuple[str, int, float, bool]  # strategy, workers, overhead, a worker dies


@dataclass
class Results:
    versions: int = 0
    outcomes: dict[Key, list[Outcome]] = field(default_factory=dict)

    def add(self, key: Key, outcome: Outcome) -> None:
        self.outcomes.setdefault(key, []).append(outcome)

    def merge(self, other: Results) -> None:
        self.versions += other.versions
        for key, outcomes in other.outcomes.items():
            self.outcomes.setdefault(key, []).extend(outcomes)


def simulate_version(files: list[File], seed_base: str) -> Results:
    results = Results(versions=1)
    actual = [file.actual_ms for file in files]
    exact_files = [exact(file) for file in files]
    by_key = {TestKey.from_nodeid(file.item.id): file for file in files}
    for workers in WORKERS:
        shards = plan_shards(
            {key: file.item.predicted_ms for key, file in by_key.items()}, workers
        ).shards
        inputs = Inputs(files, exact_files, [[by_key[key] for key in shard] for shard in shards])
        for seed in range(SEEDS):
            rng = random.Random(f"{seed_base}/{workers}/{seed}")
            boots = tuple(rng.uniform(0.0, MAX_BOOT_MS) for _ in range(workers))
            dead = rng.randrange(workers)
            for overhead in OVERHEADS_MS:
                healthy = Scenario(overhead, boots)
                healthy_bound = lower_bound(actual, healthy)
                dying = Scenario(overhead, boots, dead, healthy_bound / 2)
                for scenario, bound in (
                    (healthy, healthy_bound),
                    (dying, lower_bound(actual, dying)),
                ):
                    for name, strategy in STRATEGIES.items():
                        outcome = run(inputs, scenario, strategy, bound)
                        results.add((name, workers, overhead, scenario is dying), outcome)
    return results


def run_dataset(dataset: Path) -> tuple[str, int, int, Results]:
    runs = load_runs(dataset)
    results = Results()
    files = 0
    for index, version in enumerate(file_versions(runs)):
        results.merge(simulate_version(version, f"{dataset.name}/{index}"))
        files = len(version)
    return dataset.name, len(runs), files, results


def summary(values: Sequence[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.fmean(ordered):.3f}/{p90:.3f}/{ordered[-1]:.3f}"


def mean_ratio(results: Results, key: Key) -> float:
    return statistics.fmean(outcome.ratio for outcome in results.outcomes[key])


COLUMNS = [(workers, overhead) for workers in WORKERS for overhead in OVERHEADS_MS]


def print_table(results: Results, dies: bool) -> None:
    width = max(len(name) for name in STRATEGIES) + 2
    print(" " * width + "".join(f"{f'K={k} {o / 1000:g} s':>20}" for k, o in COLUMNS))
    for name in STRATEGIES:
        cells = [
            summary([outcome.ratio for outcome in results.outcomes[(name, k, o, dies)]])
            for k, o in COLUMNS
        ]
        print(f"{name:<{width}}" + "".join(f"{cell:>20}" for cell in cells))
    if dies:
        print("tests never ran, mean per run / most in one run")
        for name in STRATEGIES:
            cells = []
            for k, o in COLUMNS:
                lost = [outcome.never_ran for outcome in results.outcomes[(name, k, o, dies)]]
                cells.append(f"{statistics.fmean(lost):.1f} / {max(lost)}")
            print(f"{name:<{width}}" + "".join(f"{cell:>20}" for cell in cells))


def verdicts(dataset: str, results: Results) -> list[str]:
    missed = []
    k16 = mean_ratio(results, (QUEUE, 16, 50.0, False))
    if k16 > TARGET_K16:
        missed.append(f"{dataset} K=16 0.05 s: queue mean {k16:.3f} > {TARGET_K16}")
    for workers in WORKERS:
        ours = mean_ratio(results, (QUEUE, workers, 2000.0, False))
        static = mean_ratio(results, (STATIC, workers, 2000.0, False))
        if ours > static + 5e-4:
            missed.append(
                f"{dataset} K={workers} 2 s: queue mean {ours:.3f} > static plan {static:.3f}"
            )
    for workers, overhead in COLUMNS:
        key = (QUEUE, workers, overhead, True)
        lost = sum(outcome.never_ran for outcome in results.outcomes[key])
        if lost:
            missed.append(f"{dataset} K={workers} {overhead / 1000:g} s: {lost} tests never ran")
        dead = mean_ratio(results, key)
        if dead > TARGET_DEAD:
            missed.append(
                f"{dataset} K={workers} {overhead / 1000:g} s, a worker dies: "
                f"queue mean {dead:.3f} > {TARGET_DEAD}"
            )
    return missed


def main() -> int:
    datasets = duration_datasets()
    if not datasets:
        print(f"no duration datasets under {CORPUS / 'durations'}; set TESTLENS_CORPUS")
        return 1
    started = time.perf_counter()
    print(BOUND)
    with ProcessPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(run_dataset, datasets))
    missed: list[str] = []
    for name, versions, files, results in done:
        print(
            f"\n## {name}: {versions} versions, {results.versions} scored, "
            f"{files} files in the newest scored, {SEEDS} seeds each"
        )
        if not results.versions:
            print("  nothing to score: no version after the first measured any test anew")
            continue
        print("makespan / lower bound, mean/p90/worst over versions and seeds")
        print_table(results, dies=False)
        print("one worker dies at half the bound: makespan of the survivors / bound")
        print_table(results, dies=True)
        missed.extend(verdicts(name, results))
    print(f"\n{TARGETS}")
    print("Targets: " + ("all met" if not missed else "missed:\n  " + "\n  ".join(missed)))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
