"""The policy of an orchestrated run's work queue: which item goes out next, how much work
one claim takes, when a running claim gets a second worker, and how many retries an item
may use.

A static plan (:mod:`.sharding`) is fixed before the first worker boots, so a worker that
boots late, a test slower than predicted or a worker that dies shows in the run's length. A
queue hands out work as workers ask for it, and these rules keep that close to the best
schedule the workers' boot times allow (``benchmarks/orchestration.py`` measures it on the
real duration histories of the shared corpus):

* longest first by p90, because the items that may take long are the ones that cannot be
  balanced late, and small items left for the end fill the gaps between workers;
* items predicted to take next to nothing spread over the second half of the queue rather
  than left at its end: they fill no gap, and the few of them that do take long (tests
  skipped or failing fast when they were measured) can only be absorbed while work remains;
* known-flaky and recently failed items before all others, so that their failures and
  retries show early instead of lengthening the end of the run;
* batches that shrink as the queue empties (an even share of the remaining p90s and of the
  remaining items): large batches early keep the per-claim overhead low, small ones late let
  the workers finish together;
* a speculative copy of a claim that has run past its predicted p90 once there is nothing
  else to hand out, so that one slow, hung or dead worker does not hold up the run until its
  lease lapses.

Everything here is pure and deterministic: the server keeps the queue's state (which items
are claimed, by whom, since when) and asks these functions what to do with it. Durations are
in milliseconds, as everywhere in :mod:`testlens.core`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from .durations import Estimate
from .identity import TestKey
from .sharding import GroupBy, group_key

MIN_BATCH_MS = 1_000.0
"""A batch may hold this much work by its items' p90s even when its share of the remaining
work is smaller, so that no claim is for a few milliseconds of work whatever overhead was
measured (the measured overhead has its own floor, :data:`OVERHEAD_FACTOR`). Only a second:
the last claims of a run hold its smallest items, whose predictions are the least reliable,
and a floor of several seconds bundles several of them, so that one that runs long holds up
the others behind it. On the shared corpus, lowering it from 5 s to 1 s shortened npq's
mean run on 16 workers with 0.05 s per batch by 0.5%, and lengthened no mean by more than
0.02%."""

MAX_BATCH_MS = 180_000.0
"""A batch holds at most this much work by its items' p90s (or one item), so that a worker
lost mid-batch loses at most a few minutes, and live progress moves at least that often."""

OVERHEAD_FACTOR = 10.0
"""A batch holds at least this many times the measured per-batch overhead (starting a
process, collecting tests), which then costs at most a tenth of the batch's time."""

STRAGGLER_SLACK_MS = 5_000.0
"""A claim straggles once it has run this much longer than its p90 (the sum of its items'
p90s): the slack covers what a claim costs beyond its tests (the claim's round trip, a
process per batch, the upload of its results), a few seconds. Beyond that the claim is
late by its own prediction, which a healthy claim rarely is: a sum of p90s already
overstates the p90 of the sum."""

NEGLIGIBLE_MS = 50.0
"""An item whose p90 is below this is predicted to take next to nothing: a file whose tests
were skipped, or failed at once, in the runs it was measured in (pytest records a skipped
test at a few milliseconds), rather than a file of small tests that ran. :func:`order` does
not leave such items for the end of the run."""

RETRY_TARGET = 0.01
"""Chance that a flaky test still fails after all its retries that retries aim below."""

RETRY_CAP = 3
"""Retries per item at most: a test that needs more is too flaky for retries to hide."""

RETRY_BUDGET_SHARE = 0.10
"""Retries of a run may cost at most this share of its items' predicted time together."""


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One unit of work a worker claims: a test file, or any group of tests run together.

    ``predicted_ms`` and ``p90_ms`` are the item's predicted p50 and p90 (the sums of its
    tests' :class:`~testlens.core.durations.Estimate`, which are never zero for an unknown
    test). ``flake_rate`` is the chance that one attempt fails on good code, for items that
    detection calls flaky (:attr:`~testlens.core.flakiness.TestState.flake_score` of its
    flakiest test), 0 for the others. ``recently_failed`` marks an item a test of which failed
    in the latest runs. ``retry_ms`` is what one retry costs, the predicted time of the tests
    that may fail spuriously; ``None`` charges the whole item.
    """

    id: str
    predicted_ms: float
    p90_ms: float
    flake_rate: float = 0.0
    recently_failed: bool = False
    retry_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("predicted_ms", "p90_ms", "retry_ms"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} of {self.id} must be finite and >= 0: {value}")
        if self.p90_ms < self.predicted_ms:
            raise ValueError(f"p90 of {self.id} is below its p50: {self.p90_ms}")
        if not 0.0 <= self.flake_rate <= 1.0:
            raise ValueError(f"flake rate of {self.id} must be in [0, 1]: {self.flake_rate}")

    @property
    def urgent(self) -> bool:
        """Known flaky or recently failed: goes out before everything else."""
        return self.flake_rate > 0 or self.recently_failed


def queue_items(
    estimates: Mapping[TestKey, Estimate],
    *,
    group_by: GroupBy = "file",
    flake_rates: Mapping[TestKey, float] | None = None,
    recently_failed: Collection[TestKey] = (),
) -> list[QueueItem]:
    """The run's items, one per group of :func:`~testlens.core.sharding.group_key`, by id.

    A group's p50 and p90 are its tests' sums (summing p90s overstates the group's p90, as
    its tests are rarely all slow at once, which errs towards smaller batches and a more
    patient straggler rule). Retries are counted per test, so the group needs as many as its
    flakiest test: its flake rate is the highest of its tests', and one retry costs the
    predicted time of its flaky tests.
    """
    rates = flake_rates or {}
    failed = set(recently_failed)
    groups: dict[str, list[TestKey]] = {}
    for test in sorted(estimates):
        groups.setdefault(group_key(test, group_by), []).append(test)
    items = []
    for group, tests in groups.items():
        flaky = [test for test in tests if rates.get(test, 0.0) > 0]
        items.append(
            QueueItem(
                id=group,
                predicted_ms=math.fsum(estimates[test].p50_ms for test in tests),
                p90_ms=math.fsum(estimates[test].p90_ms for test in tests),
                flake_rate=max((rates[test] for test in flaky), default=0.0),
                recently_failed=any(test in failed for test in tests),
                retry_ms=math.fsum(estimates[test].p50_ms for test in flaky),
            )
        )
    return items


def order(items: Iterable[QueueItem]) -> list[QueueItem]:
    """The order items go out in: urgent ones first, then longest first by p90, ties by p50
    and id; items below :data:`NEGLIGIBLE_MS` are spread over the second half.

    Urgent items (:attr:`QueueItem.urgent`) are longest first among themselves too, so a
    long flaky file does not wait behind short ones. Longest by p90 rather than p50: what
    decides the end of a run is how long an item may take, and an item whose duration is
    uncertain (a new file, predicted from its siblings with a wide p90; a file whose tests
    changed) must start early, while there is work left to balance around it. On the shared
    corpus, ordering by p50 instead made runs on 16 workers up to 4% longer.

    Negligible items are the exception to longest first, because their prediction says
    nothing either way: a file measured at almost nothing in every run it has had (its tests
    skipped, or failing at once) may run for minutes once they run, and a p90 calibrated as
    a multiple of the p50 cannot say so. Left for the end of the run by longest first, such
    a file becomes the run's tail, and they fill no gap there. So they go out from the
    middle of the run on (once the items before them add up to half of the others' p90s),
    spread evenly ahead of the items that follow: a surprise among them then starts while
    there is work left to balance around it, and no claim holds many of them. Not first:
    the longest items must start as the workers boot. On the shared corpus this brought
    localstack's mean run on 16 workers from 1.088 times its lower bound to 1.040 (its
    integration tests, skipped when measured), and npq's on 64 workers with 2 s per batch
    from 1.106 to 1.077 (fewer claims of nothing at the end). The cost is other small files
    starting a few seconds later, so that a surprise among those ends later: no mean got
    longer by more than 0.02%, a 90th percentile by up to 1%.
    """
    ranked = sorted(
        items, key=lambda item: (not item.urgent, -item.p90_ms, -item.predicted_ms, item.id)
    )
    negligible = [item for item in ranked if _negligible(item)]
    if not negligible:
        return ranked
    others = [item for item in ranked if not _negligible(item)]
    half = math.fsum(item.p90_ms for item in others) / 2
    start, total = len(others), 0.0
    for position, item in enumerate(others):
        total += item.p90_ms
        if total >= half:
            start = position + 1
            break
    tail = others[start:]
    if not tail:
        return others + negligible
    each = -(-len(negligible) // len(tail))
    spread = others[:start]
    for position, item in enumerate(tail):
        spread.extend(negligible[position * each : (position + 1) * each])
        spread.append(item)
    return spread


def _negligible(item: QueueItem) -> bool:
    return not item.urgent and item.p90_ms < NEGLIGIBLE_MS


class BatchSize(NamedTuple):
    """The most one claim takes: items whose p90s add up to ``p90_ms``, and ``items`` items
    (a claim always takes at least one item, whatever its p90)."""

    p90_ms: float
    items: int


def batch_size(
    remaining_p90_ms: float, remaining_items: int, workers: int, overhead_ms: float
) -> BatchSize:
    """How much the next claim takes, from what is still unclaimed.

    ``remaining_p90_ms`` and ``remaining_items`` are the sum of the p90s and the number of
    the items not yet claimed; ``workers`` is the run's declared parallelism less the workers
    known to be gone (not only those that have claimed so far: the first worker to boot would
    otherwise take a share meant for all); ``overhead_ms`` is the measured cost of one batch
    beyond its tests.

    A claim takes at most an even share of what remains, in p90 time and in items, so that
    batches shrink as the queue empties: large early, where the per-batch overhead counts,
    small late, so that the workers finish together. Shares of p90s rather than of p50s
    leave the margin that the "factoring" rule of loop scheduling (half an even share of the
    p50s) leaves, but where the prediction is uncertain. The share of items guards against
    predictions that are wrong by orders of magnitude, such as files whose tests were
    skipped, measured at 0 s, and now run for minutes: by p90 alone all of them would fit in
    one claim (on the shared corpus it brought localstack's runs on 64 workers from 1.17 times
    their lower bound to 1.003). Halving the share of time, as factoring does, made runs up to
    4% longer where a batch costs 2 s, and changed them by under 0.5% at 0.05 s.

    The share of time is kept between :data:`MAX_BATCH_MS` and a floor of
    :data:`MIN_BATCH_MS` or :data:`OVERHEAD_FACTOR` times the overhead; when that floor is
    above the cap, the floor wins, because a batch that mostly pays for its own start wastes
    every worker's time. The share of items is never below one.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if remaining_items < 0:
        raise ValueError(f"remaining_items must be >= 0, not {remaining_items}")
    if not (math.isfinite(remaining_p90_ms) and remaining_p90_ms >= 0):
        raise ValueError(f"remaining_p90_ms must be finite and >= 0: {remaining_p90_ms}")
    if not (math.isfinite(overhead_ms) and overhead_ms >= 0):
        raise ValueError(f"overhead_ms must be finite and >= 0: {overhead_ms}")
    floor = max(MIN_BATCH_MS, OVERHEAD_FACTOR * overhead_ms)
    return BatchSize(
        p90_ms=max(floor, min(MAX_BATCH_MS, remaining_p90_ms / workers)),
        items=max(1, -(-remaining_items // workers)),
    )


def take_batch(queue: Iterable[QueueItem], size: BatchSize) -> list[QueueItem]:
    """The next claim: items from the front of ``queue`` (in :func:`order`) while they fit in
    ``size`` together, and always the first one.

    Sizing by p90 keeps a batch from becoming a long tail by surprise: new files predicted
    at a fraction of a second each fit in one batch by their p50s, but their p90s say what
    they may take. The batch stops at the first item that does not fit rather than skipping
    to smaller ones behind it: those are what the end of the run is balanced with. ``queue``
    is read only as far as needed, so a server can pass rows as its database returns them.
    """
    batch: list[QueueItem] = []
    total = 0.0
    for item in queue:
        if batch and total + item.p90_ms > size.p90_ms:
            break
        batch.append(item)
        total += item.p90_ms
        if len(batch) >= size.items:
            break
    return batch


def straggler_after_ms(claim: Iterable[QueueItem]) -> float:
    """How long after it was claimed a claim counts as straggling: its p90 (the sum of its
    items' p90s) and :data:`STRAGGLER_SLACK_MS`.

    A server stores the claim time plus this with the claim, and when its queue is empty and
    a worker asks for work, hands that worker a copy of the most overdue straggling claim
    that has no copy yet (only the items without a result); the first result of an item
    wins. Only once the queue is empty: while items wait, a copy would take a worker from
    fresh work to run a claim that is most often merely slow, and make the run longer. Once
    it is empty, the workers that ask have nothing else to do, so the copy costs no time,
    only the work run twice.

    Why as early as the p90: a worker that dies is known to the server only when its lease
    lapses, and what it held then starts again after the lease, which on a run of a few
    minutes is most of the run. A claim past its p90 is the earlier sign. Waiting for twice
    the p90 and at least a minute more leaves a dead worker's claims to the lease: on the
    shared corpus, with one of 64 workers dying halfway, speculating at the p90 brought npq's
    mean run from 1.22 times its lower bound to 1.12 (1.23 to 1.15 with 2 s per batch). Runs
    without a death kept their length, with up to 5% of their work run twice by workers that
    had nothing else to do. The copy runs the claim's items one after the other on one
    worker, where a lapsed lease spreads them over several: in one run of the corpus that
    made the end 5% later.
    """
    return math.fsum(item.p90_ms for item in claim) + STRAGGLER_SLACK_MS


def is_straggler(claim: Iterable[QueueItem], elapsed_ms: float) -> bool:
    """Whether a claim running for ``elapsed_ms`` has run longer than
    :func:`straggler_after_ms` allows."""
    return elapsed_ms > straggler_after_ms(claim)


def retries_for(flake_rate: float, target: float = RETRY_TARGET, cap: int = RETRY_CAP) -> int:
    """The fewest retries after which a test failing spuriously with chance ``flake_rate``
    per attempt (attempts independent) still fails with a chance below ``target``, at most
    ``cap``.

    After ``r`` retries it still fails with chance ``flake_rate ** (r + 1)``: a 10%-flaky test
    needs 2 retries for a 1% target (0.1 ** 3 = 0.001; 0.1 ** 2 = 0.01 is not below it). A
    healthy test gets none, and so does one that never passes (rate 1), which no retry helps.
    """
    if not 0.0 <= flake_rate <= 1.0:
        raise ValueError(f"flake_rate must be in [0, 1]: {flake_rate}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1): {target}")
    if cap < 0:
        raise ValueError(f"cap must be >= 0, not {cap}")
    if flake_rate >= 1.0:
        return 0
    retries = 0
    while retries < cap and flake_rate ** (retries + 1) >= target:
        retries += 1
    return retries


def retry_budget_ms(items: Iterable[QueueItem], share: float = RETRY_BUDGET_SHARE) -> float:
    """The predicted time a run's retries may cost together: ``share`` of its items'.

    Bounding time rather than a count keeps a run's length bounded whatever its flaky tests
    take, and a share scales with the suite: retries never add more work than that to a run.
    """
    if not (math.isfinite(share) and share >= 0):
        raise ValueError(f"share must be finite and >= 0: {share}")
    return share * math.fsum(item.predicted_ms for item in items)


def allocate_retries(
    items: Iterable[QueueItem],
    budget_ms: float,
    *,
    target: float = RETRY_TARGET,
    cap: int = RETRY_CAP,
) -> dict[str, int]:
    """Retries per item id, each at most :func:`retries_for` its flake rate, costing at most
    ``budget_ms`` together (see :func:`retry_budget_ms`).

    Every granted retry is charged in full (one :attr:`QueueItem.retry_ms`), as if each one
    were used, so the budget holds whatever happens. When it does not cover every retry, the
    retries that remove the most chance of a spurious failure per millisecond go first: the
    ``r``-th retry of a test failing with chance ``p`` lowers its chance of still failing by
    ``p ** r * (1 - p)``, and a spurious failure fails the build however long the test is.
    That gain falls with ``r``, so an item's retries are granted in order; an item whose next
    retry does not fit gets no more, and smaller ones behind it still may. Healthy items map
    to 0.
    """
    if not budget_ms >= 0:
        raise ValueError(f"budget_ms must be >= 0 (infinite for no budget): {budget_ms}")
    by_id: dict[str, QueueItem] = {}
    for item in items:
        if item.id in by_id:
            raise ValueError(f"item {item.id} is listed twice")
        by_id[item.id] = item
    granted = dict.fromkeys(by_id, 0)
    wanted = {key: retries_for(item.flake_rate, target, cap) for key, item in by_id.items()}
    heap = [(-_retry_gain(item, 1), key) for key, item in by_id.items() if wanted[key]]
    heapq.heapify(heap)
    left = budget_ms
    while heap:
        _, key = heapq.heappop(heap)
        cost = _retry_cost(by_id[key])
        if cost > left:
            continue
        left -= cost
        granted[key] += 1
        if granted[key] < wanted[key]:
            heapq.heappush(heap, (-_retry_gain(by_id[key], granted[key] + 1), key))
    return granted


def _retry_cost(item: QueueItem) -> float:
    return item.predicted_ms if item.retry_ms is None else item.retry_ms


def _retry_gain(item: QueueItem, retry: int) -> float:
    """Chance of a spurious failure that the ``retry``-th retry of ``item`` removes, per
    millisecond it costs."""
    gain = item.flake_rate**retry * (1 - item.flake_rate)
    cost = _retry_cost(item)
    return gain / cost if cost > 0 else math.inf
