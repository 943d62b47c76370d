"""Orchestrated runs simulated on real duration histories: the testlens queue next to a static
plan and the claim rules of other test orchestrators.

Run from the repository root: ``python benchmarks/orchestration.py``. The corpus is read from
``../shared/corpus/durations`` (or ``$TESTLENS_CORPUS/durations``) as ``benchmarks/sharding.py``
reads it: for each version t that measured any test anew, every strategy plans from
``predict`` over the versions before t, and the simulation runs t's real durations. A quick
subset: ``--dataset npq --workers 16 --overheads 0.05 --seeds 2`` (``--help`` for the rest).

The unit of work is a test file (the tests of one file run together; knapsack histories are
per file already); its p50 and p90 are its tests' sums (``queue_items``). K workers boot
after a delay drawn uniformly from 0-30 s, five seeds per version; each batch a worker
claims costs a fixed overhead before its files run: 0.05 s (pytest in one process) or 2 s (a
process per batch). Results arrive file by file as files finish, and the run ends with the
last file's first result (the pytest plugin uploads a batch's results when the batch ends:
file by file is the optimistic side for a copy of a claim and for a dead worker's finished
files, and the same for every strategy otherwise). In the second scenario one worker, drawn
by the seed, dies at half the run's lower bound: files it finished count, its unfinished ones
are lost; with leases they go back to the front of the queue when the lease lapses, 30 s
after its last heartbeat, otherwise they never run. A strategy that loses files ends when the
surviving workers finish, which can be before the bound; "tests never ran" is the cost.

Strategies:
- testlens queue: the server of ``testlens/server/orchestration`` on :mod:`testlens.core.queue`
  (its order; each claim an even share of the remaining p90s and items; once the queue is
  empty, a copy of the most overdue claim past ``straggler_after_ms`` to a worker that asks,
  the first result of a file counting; a lapsed lease's files back to the front of the
  queue, in queue order).
- testlens static plan: ``plan_shards`` of the files' predicted durations over K shards;
  worker i runs shard i as one batch once it has booted.
- sorry-cypress-like: the first unclaimed file in list (path) order, one file per claim.
- Knapsack-like: longest first by predicted duration, fixed batches of 30 s of predicted work
  (at least one file).
- Currents-like: longest first by predicted duration, three files per claim.
- queue, exact durations: the testlens queue given each file's real duration as its p50 and
  p90. Not a strategy: it shows how much of the gap to the bound is the prediction's error.
Only the testlens queue reassigns work: the others never run a dead worker's unfinished files.
For the testlens queue, "work run twice" is the files that speculative copies ran to their end
again before the run ended, as a share of the run's work (the workers that ran them had
nothing else to do, so it costs machine time, not the run's length).

Lower bound of a run (no schedule can end earlier), with b_i worker i's boot delay, o the
per-batch overhead, W the run's total real work and d_max its longest file:
max(min_i b_i + o + d_max, the smallest T with sum_i max(0, T - b_i - o) >= W). The longest
file runs whole on one worker after that worker's boot and one overhead; and by T the
workers together can have run at most the time since each one's boot, less one overhead for
each worker that ran anything. When a worker dies at time D, its share is limited to
max(0, min(T, D) - b_i - o), and only workers alive until then count for the longest file:
the bound credits the dead worker with useful work until its death (as a schedule that knew
the death in advance could use it), so it is at most the bound of the surviving workers
alone, and still a bound for every schedule. T is solved exactly (the capacity is piecewise
linear in T), and the benchmark checks that no run that ran every test ends before it. (The
familiar (sum b_i + W) / K is not a valid bound: it charges workers that boot after the end.)

With a dead worker, reference rows say what no reaction could undo. "lease lapses" is
(D + 30 s) / bound: a file the dead worker held cannot start again before that unless a copy
of its claim started first. "lost file rerun at D" is (D + o + the longest file the queue's
dead worker lost) / bound, at least 1: a file lost at D ends at the earliest one overhead and
its whole duration after D, even if the death were known at once; its mean is the lowest
mean any recovery of the queue's assignment could reach. "lost file rerun at lease" is the
same from D + 30 s: what waiting for the lease costs, unless a copy started earlier.

Runtime: about a minute on two cores; every scored version is simulated.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
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
    " D_i death of worker i (none: infinite); the dead worker's work until D counts"
)
QUEUE = "testlens queue"
EXACT = "queue, exact durations"
STATIC = "testlens static plan"
LEASE = "lease lapses (D + 30 s)"
RERUN = "lost file rerun at D"
RELEASED = "lost file rerun at lease"


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
    """When each file's first result arrives, and every time a worker ran a file to its end
    (both scheduled when its batch is claimed)."""

    def __init__(self) -> None:
        self.done_at: dict[str, float] = {}
        self.completions: list[tuple[float, float]] = []  # (end, duration)

    def record(self, file: File, at: float) -> None:
        key = file.item.id
        self.done_at[key] = min(at, self.done_at.get(key, math.inf))
        self.completions.append((at, file.actual_ms))

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
    """The server of an orchestrated run, driven by :mod:`testlens.core.queue` as
    ``testlens/server/orchestration`` drives it."""

    def __init__(self, files: Sequence[File], scenario: Scenario, ledger: Ledger) -> None:
        self.files = {file.item.id: file for file in files}
        self.queue = order(file.item for file in files)
        self.position = {item.id: index for index, item in enumerate(self.queue)}
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
        """Put the files of expired leases that no copy is running back at the front of the
        queue, in queue order, and count their worker as gone."""
        due = {file for at, ids in self.expiring if at <= now for file in ids}
        if not due:
            return
        self.expiring = [(at, ids) for at, ids in self.expiring if at > now]
        self.uncopied = [
            claim for claim in self.uncopied if not any(item.id in due for item in claim.items)
        ]
        back = sorted(
            (self.files[file].item for file in due if file not in self.ledger.done_at),
            key=lambda item: self.position[item.id],
        )
        self.queue = [*back, *self.queue[self.head :]]
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
    twice: float  # work run to its end a second time before the run ended, share of the work
    rerun_floor: float  # (D + o + longest lost file) / bound, at least 1; 1 if nothing lost
    lease_floor: float  # the same from the lease's lapse, D + 30 s


def simulate(dispatcher: Dispatcher, ledger: Ledger, scenario: Scenario) -> list[File]:
    """Workers claim, run and claim again until the dispatcher has nothing for them; every
    file's result time goes to ``ledger``. Returns the files lost with a dead worker."""
    asks = [(boot, worker) for worker, boot in enumerate(scenario.boots)]
    asks.sort()
    lost: list[File] = []
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
                lost.extend(answer[position:])
                dispatcher.lost(answer[position:], scenario.ends(worker))
                break
            ledger.record(file, end)
        else:
            heappush(asks, (end, worker))
    return lost


def lower_bound(actual_ms: Sequence[float], scenario: Scenario) -> float:
    """See the module docstring: the longest file after the earliest start that can hold it,
    and the time by which the workers' capacity covers the total work, solved exactly."""
    overhead = scenario.overhead_ms
    longest = max(actual_ms)
    work = math.fsum(actual_ms)
    starts = [
        boot + overhead
        for worker, boot in enumerate(scenario.boots)
        if boot + overhead + longest <= scenario.ends(worker)
    ]
    # The capacity sum_i max(0, min(T, D_i) - s_i) grows by one per worker between its start
    # s_i and its death D_i: walk those events until it covers the work.
    events: list[tuple[float, int]] = []
    for worker, boot in enumerate(scenario.boots):
        if scenario.ends(worker) > boot + overhead:
            events += [(boot + overhead, 1), (scenario.ends(worker), -1)]
    events.sort()
    at, capacity, slope = events[0][0], 0.0, 0
    enough = math.inf
    for moment, change in events:
        if slope and capacity + slope * (moment - at) >= work:
            break
        capacity += slope * (moment - at)
        at, slope = moment, slope + change
    if slope > 0:
        enough = at + (work - capacity) / slope
    return max(min(starts, default=0.0) + longest, enough)


def run(inputs: Inputs, scenario: Scenario, strategy: Strategy, bound: float) -> Outcome:
    ledger = Ledger()
    lost = simulate(strategy(inputs, scenario, ledger), ledger, scenario)
    end = max(ledger.done_at.values(), default=0.0)
    work = math.fsum(file.actual_ms for file in inputs.files)
    ran = math.fsum(ms for at, ms in ledger.completions if at <= end)
    first = math.fsum(file.actual_ms for file in inputs.files if file.item.id in ledger.done_at)
    never_ran = sum(file.tests for file in inputs.files if file.item.id not in ledger.done_at)
    if not never_ran and end < bound * (1 - 1e-9):
        raise AssertionError(f"a run that ran every test ended at {end} ms, before {bound} ms")
    longest_lost = max((file.actual_ms for file in lost), default=-math.inf)
    rerun = scenario.dies_at + scenario.overhead_ms + longest_lost
    return Outcome(
        end / bound,
        never_ran,
        (ran - first) / work if work else 0.0,
        max(bound, rerun) / bound,
        max(bound, rerun + LEASE_TTL_MS) / bound,
    )


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


Key = tuple[str, int, float, bool]  # strategy or reference row, workers, overhead, a worker dies


@dataclass(frozen=True, slots=True)
class Settings:
    """What one invocation simulates: worker counts, per-batch overheads, seeds per version."""

    workers: tuple[int, ...] = WORKERS
    overheads_ms: tuple[float, ...] = OVERHEADS_MS
    seeds: int = SEEDS

    @property
    def columns(self) -> list[tuple[int, float]]:
        return [(workers, overhead) for workers in self.workers for overhead in self.overheads_ms]


@dataclass
class Results:
    versions: int = 0
    outcomes: dict[Key, list[Outcome]] = field(default_factory=dict)
    references: dict[Key, list[float]] = field(default_factory=dict)

    def add(self, key: Key, outcome: Outcome) -> None:
        self.outcomes.setdefault(key, []).append(outcome)

    def refer(self, key: Key, value: float) -> None:
        self.references.setdefault(key, []).append(value)

    def merge(self, other: Results) -> None:
        self.versions += other.versions
        for key, outcomes in other.outcomes.items():
            self.outcomes.setdefault(key, []).extend(outcomes)
        for key, values in other.references.items():
            self.references.setdefault(key, []).extend(values)


def simulate_version(files: list[File], seed_base: str, settings: Settings) -> Results:
    results = Results(versions=1)
    actual = [file.actual_ms for file in files]
    exact_files = [exact(file) for file in files]
    by_key = {TestKey.from_nodeid(file.item.id): file for file in files}
    for workers in settings.workers:
        shards = plan_shards(
            {key: file.item.predicted_ms for key, file in by_key.items()}, workers
        ).shards
        inputs = Inputs(files, exact_files, [[by_key[key] for key in shard] for shard in shards])
        for seed in range(settings.seeds):
            rng = random.Random(f"{seed_base}/{workers}/{seed}")
            boots = tuple(rng.uniform(0.0, MAX_BOOT_MS) for _ in range(workers))
            dead = rng.randrange(workers)
            for overhead in settings.overheads_ms:
                healthy = Scenario(overhead, boots)
                healthy_bound = lower_bound(actual, healthy)
                dying = Scenario(overhead, boots, dead, healthy_bound / 2)
                dying_bound = lower_bound(actual, dying)
                for scenario, bound in ((healthy, healthy_bound), (dying, dying_bound)):
                    for name, strategy in STRATEGIES.items():
                        outcome = run(inputs, scenario, strategy, bound)
                        results.add((name, workers, overhead, scenario is dying), outcome)
                        if name == QUEUE and scenario is dying:
                            results.refer((RERUN, workers, overhead, True), outcome.rerun_floor)
                            results.refer((RELEASED, workers, overhead, True), outcome.lease_floor)
                lease = (dying.dies_at + LEASE_TTL_MS) / dying_bound
                results.refer((LEASE, workers, overhead, True), lease)
    return results


def run_dataset(dataset: Path, settings: Settings) -> tuple[str, int, int, Results]:
    runs = load_runs(dataset)
    results = Results()
    files = 0
    for index, version in enumerate(file_versions(runs)):
        results.merge(simulate_version(version, f"{dataset.name}/{index}", settings))
        files = len(version)
    return dataset.name, len(runs), files, results


def summary(values: Sequence[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.fmean(ordered):.3f}/{p90:.3f}/{ordered[-1]:.3f}"


def mean_ratio(results: Results, key: Key) -> float:
    return statistics.fmean(outcome.ratio for outcome in results.outcomes[key])


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target in one cell: what it asks, what the queue measured, and whether it holds."""

    workers: int
    overhead_ms: float
    dies: bool
    target: str
    measured: str
    met: bool
    miss: str  # by how much, when missed


def verdicts(results: Results, settings: Settings) -> list[Verdict]:
    """The targets of every simulated cell that has one (see :data:`TARGETS`)."""
    found = []
    for workers, overhead in settings.columns:
        ours = mean_ratio(results, (QUEUE, workers, overhead, False))
        if (workers, overhead) == (16, 50.0):
            found.append(
                Verdict(
                    workers,
                    overhead,
                    False,
                    f"<= {TARGET_K16:.3f}",
                    f"{ours:.3f}",
                    ours <= TARGET_K16,
                    f"+{ours - TARGET_K16:.3f}",
                )
            )
        if overhead == 2000.0:
            static = mean_ratio(results, (STATIC, workers, overhead, False))
            found.append(
                Verdict(
                    workers,
                    overhead,
                    False,
                    f"<= {static:.3f} static",
                    f"{ours:.3f}",
                    ours <= static + 5e-4,
                    f"+{ours - static:.3f}",
                )
            )
        key = (QUEUE, workers, overhead, True)
        dead = mean_ratio(results, key)
        lost = sum(outcome.never_ran for outcome in results.outcomes[key])
        miss = [f"+{dead - TARGET_DEAD:.3f}"] if dead > TARGET_DEAD else []
        miss += [f"{lost} tests never ran"] if lost else []
        found.append(
            Verdict(
                workers,
                overhead,
                True,
                f"<= {TARGET_DEAD:.3f}, all run",
                f"{dead:.3f}",
                not miss,
                ", ".join(miss),
            )
        )
    return found


def print_table(results: Results, dies: bool, settings: Settings) -> None:
    names = [*STRATEGIES, *([LEASE, RERUN, RELEASED] if dies else [])]
    width = max(len(name) for name in names) + 2
    columns = settings.columns
    print(" " * width + "".join(f"{f'K={k} {o / 1000:g} s':>20}" for k, o in columns))
    for name in STRATEGIES:
        cells = [
            summary([outcome.ratio for outcome in results.outcomes[(name, k, o, dies)]])
            for k, o in columns
        ]
        print(f"{name:<{width}}" + "".join(f"{cell:>20}" for cell in cells))
    if dies:
        print("reference: what no reaction to the death could undo (see the module docstring)")
        for name in (LEASE, RERUN, RELEASED):
            cells = [summary(results.references[(name, k, o, dies)]) for k, o in columns]
            print(f"{name:<{width}}" + "".join(f"{cell:>20}" for cell in cells))
    found = {(v.workers, v.overhead_ms): v for v in verdicts(results, settings) if v.dies == dies}
    print(
        f"{'target (queue mean)':<{width}}"
        + "".join(f"{found[column].target if column in found else '':>20}" for column in columns)
    )
    print(
        f"{'queue mean: verdict':<{width}}"
        + "".join(f"{verdict_cell(found.get(column)):>20}" for column in columns)
    )
    twice = [
        statistics.fmean(outcome.twice for outcome in results.outcomes[(QUEUE, k, o, dies)])
        for k, o in columns
    ]
    print(f"{'queue: work run twice':<{width}}" + "".join(f"{f'{t:.1%}':>20}" for t in twice))
    if dies:
        print("tests never ran, mean per run / most in one run")
        for name in STRATEGIES:
            cells = []
            for k, o in columns:
                lost = [outcome.never_ran for outcome in results.outcomes[(name, k, o, dies)]]
                cells.append(f"{statistics.fmean(lost):.1f} / {max(lost)}")
            print(f"{name:<{width}}" + "".join(f"{cell:>20}" for cell in cells))


def verdict_cell(verdict: Verdict | None) -> str:
    if verdict is None:
        return ""
    return f"{verdict.measured} met" if verdict.met else f"{verdict.measured} {verdict.miss}"


def parse(argv: Sequence[str]) -> tuple[Settings, list[str]]:
    parser = argparse.ArgumentParser(
        description=" ".join((__doc__ or "").split("\n\n")[0].split()),
        epilog="Every option narrows the full run, whose targets need all of it.",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="only datasets whose name contains this (repeatable)",
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=list(WORKERS), help="worker counts K"
    )
    parser.add_argument(
        "--overheads",
        type=float,
        nargs="+",
        default=[ms / 1000 for ms in OVERHEADS_MS],
        help="per-batch overheads in seconds",
    )
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds per version")
    args = parser.parse_args(argv)
    overheads = tuple(seconds * 1000 for seconds in args.overheads)
    return Settings(tuple(args.workers), overheads, args.seeds), args.dataset


def main(argv: Sequence[str] = ()) -> int:
    settings, wanted = parse(argv)
    datasets = [
        dataset
        for dataset in duration_datasets()
        if not wanted or any(name in dataset.name for name in wanted)
    ]
    if not datasets:
        print(f"no duration datasets under {CORPUS / 'durations'}; set TESTLENS_CORPUS")
        return 1
    started = time.perf_counter()
    print(BOUND)
    with ProcessPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(partial(run_dataset, settings=settings), datasets))
    report: list[tuple[str, Verdict]] = []
    for name, versions, files, results in done:
        print(
            f"\n## {name}: {versions} versions, {results.versions} scored, "
            f"{files} files in the newest scored, {settings.seeds} seeds each"
        )
        if not results.versions:
            print("  nothing to score: no version after the first measured any test anew")
            continue
        print("makespan / lower bound, mean/p90/worst over versions and seeds")
        print_table(results, dies=False, settings=settings)
        print("one worker dies at half the bound: makespan / bound (its work until D counts)")
        print_table(results, dies=True, settings=settings)
        report.extend((name, verdict) for verdict in verdicts(results, settings))
    print(f"\n{TARGETS}")
    print(f"{'dataset':<40}{'cell':<22}{'target':>22}{'queue mean':>12}  verdict")
    for name, verdict in report:
        cell = f"K={verdict.workers} {verdict.overhead_ms / 1000:g} s" + (
            ", dies" if verdict.dies else ""
        )
        print(
            f"{name:<40}{cell:<22}{verdict.target:>22}{verdict.measured:>12}  "
            + ("met" if verdict.met else f"missed by {verdict.miss}")
        )
    missed = sum(not verdict.met for _, verdict in report)
    print(f"Targets: {len(report) - missed} of {len(report)} met")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
