"""Queue policy: order, batch sizes, stragglers, retries and their budget, and a queue driven
to its end handing every item out exactly once."""

from __future__ import annotations

import math
import random

import pytest

from testlens.core.durations import Estimate
from testlens.core.identity import TestKey
from testlens.core.queue import (
    MAX_BATCH_MS,
    MIN_BATCH_MS,
    NEGLIGIBLE_MS,
    RETRY_CAP,
    STRAGGLER_SLACK_MS,
    BatchSize,
    QueueItem,
    allocate_retries,
    batch_size,
    is_straggler,
    order,
    queue_items,
    retries_for,
    retry_budget_ms,
    straggler_after_ms,
    take_batch,
)


def item(
    id: str,
    p50: float,
    p90: float | None = None,
    *,
    flake_rate: float = 0.0,
    recently_failed: bool = False,
    retry_ms: float | None = None,
) -> QueueItem:
    return QueueItem(
        id, p50, p50 if p90 is None else p90, flake_rate, recently_failed, retry_ms=retry_ms
    )


def ids(items: list[QueueItem]) -> list[str]:
    return [queued.id for queued in items]


def random_items(count: int, seed: int) -> list[QueueItem]:
    rng = random.Random(seed)
    items = []
    for index in range(count):
        p50 = rng.lognormvariate(7, 2)
        items.append(
            item(
                f"tests/test_{index:04d}.py",
                p50,
                p50 * rng.uniform(1, 3),
                flake_rate=rng.choice([0.0] * 8 + [0.05, 0.3]),
                recently_failed=rng.random() < 0.05,
            )
        )
    return items


def drain(items: list[QueueItem], workers: int, overhead_ms: float) -> list[list[QueueItem]]:
    """Hand out ``items`` claim by claim, as a server would, until none is left."""
    queue = order(items)
    batches = []
    while queue:
        size = batch_size(sum(queued.p90_ms for queued in queue), len(queue), workers, overhead_ms)
        batch = take_batch(iter(queue), size)
        assert batch, "a claim takes at least one item"
        assert len(batch) <= size.items
        if len(batch) > 1:
            assert sum(queued.p90_ms for queued in batch) <= size.p90_ms
        batches.append(batch)
        queue = queue[len(batch) :]
    return batches


# items ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"predicted_ms": -1.0, "p90_ms": 1.0}, "predicted_ms"),
        ({"predicted_ms": math.inf, "p90_ms": math.inf}, "predicted_ms"),
        ({"predicted_ms": 5.0, "p90_ms": 4.0}, "below its p50"),
        ({"predicted_ms": 1.0, "p90_ms": 1.0, "flake_rate": 1.5}, "flake rate"),
        ({"predicted_ms": 1.0, "p90_ms": 1.0, "retry_ms": -2.0}, "retry_ms"),
    ],
)
def test_an_item_rejects_impossible_values(fields, message):
    with pytest.raises(ValueError, match=message):
        QueueItem("a", **fields)


def test_queue_items_group_tests_by_file():
    def estimate(p50: float, p90: float) -> Estimate:
        return Estimate(p50_ms=p50, p90_ms=p90, samples=3, source="history")

    a1 = TestKey.from_nodeid("tests/a.py::test_one")
    a2 = TestKey.from_nodeid("tests/a.py::test_two")
    a3 = TestKey.from_nodeid("tests/a.py::test_three")
    b1 = TestKey.from_nodeid("tests/b.py::test_one")
    estimates = {
        a1: estimate(100, 150),
        a2: estimate(200, 400),
        a3: estimate(50, 60),
        b1: estimate(30, 30),
    }
    items = queue_items(estimates, flake_rates={a1: 0.05, a2: 0.2}, recently_failed={b1})
    assert items == [
        QueueItem("tests/a.py", 350, 610, flake_rate=0.2, recently_failed=False, retry_ms=300),
        QueueItem("tests/b.py", 30, 30, flake_rate=0.0, recently_failed=True, retry_ms=0),
    ]
    singles = queue_items(estimates, group_by="none")
    assert ids(singles) == sorted(test.nodeid for test in estimates)


# order ---------------------------------------------------------------------------------------


def test_flaky_and_recently_failed_go_first_then_longest_p90_first():
    items = [
        item("healthy-short", 10_000, 12_000),
        item("flaky", 1_000, flake_rate=0.1),
        item("failed", 2_000, recently_failed=True),
        item("healthy-long", 20_000, 25_000),
        item("uncertain", 5_000, 30_000),
    ]
    assert ids(order(items)) == [
        "failed",  # urgent, p90 2 s
        "flaky",  # urgent, p90 1 s
        "uncertain",  # p90 30 s: may take longest, though its p50 is short
        "healthy-long",
        "healthy-short",
    ]


def test_negligible_items_are_spread_over_the_second_half():
    # p90s of 60, 40, 30, 10, 5, 3, 2 s: half of the 150 s is reached by the first two.
    others = [item(f"x{p90:02d}", p90 * 1_000) for p90 in (60, 40, 30, 10, 5, 3, 2)]
    zeros = [item(f"z{index}", 0) for index in range(4)] + [item("z-tiny", 10, 40)]
    assert ids(order(others + zeros)) == [
        "x60",
        "x40",  # half the p90s have gone out: negligible items from here on
        "z-tiny",  # the largest p90 of them first, then by id
        "x30",
        "z0",
        "x10",
        "z1",
        "x05",
        "z2",
        "x03",
        "z3",
        "x02",  # the run still ends with the smallest item that was predicted at all
    ]


def test_many_negligible_items_share_the_places_evenly():
    others = [item(f"x{p90}", p90 * 1_000) for p90 in (9, 5, 4)]
    zeros = [item(f"z{index}", 0) for index in range(5)]
    # Half of 18 s is reached by the first item; 5 items over the 2 places after it.
    assert ids(order(others + zeros)) == ["x9", "z0", "z1", "z2", "x5", "z3", "z4", "x4"]


def test_negligible_items_without_others_or_urgent_keep_the_plain_order():
    assert ids(order([item("a", 0), item("b", 30), item("c", 0, 20)])) == ["b", "c", "a"]
    # Nothing after the middle: a single item holds half the work.
    assert ids(order([item("z", 0), item("big", 60_000)])) == ["big", "z"]
    # Urgent items go first, however short: their failures should show early.
    flaky = item("flaky", 0, flake_rate=0.2)
    assert ids(order([item("x", 5_000), item("y", 4_000), item("z", 0), flaky])) == [
        "flaky",
        "x",
        "z",
        "y",
    ]
    assert NEGLIGIBLE_MS == 50
    # At the threshold an item counts as predicted: it keeps its place by p90.
    at = [item("x", 60_000), item("y", 1_000), item("z", NEGLIGIBLE_MS), item("w", 10)]
    assert ids(order(at)) == ["x", "w", "y", "z"]


def test_order_is_a_permutation_whatever_the_mix():
    items = random_items(300, seed=11) + [item(f"zero-{index}", 0) for index in range(120)]
    ordered = order(items)
    assert sorted(ids(ordered)) == sorted(ids(items))
    shuffled = items.copy()
    random.Random(5).shuffle(shuffled)
    assert order(shuffled) == ordered
    zeros = [position for position, queued in enumerate(ordered) if queued.id.startswith("zero")]
    assert zeros[0] > 0 and zeros[-1] < len(ordered) - 1


def test_ties_go_by_p50_then_id_whatever_the_input_order():
    items = [item("b", 1_000, 5_000), item("a", 1_000, 5_000), item("c", 2_000, 5_000)]
    expected = ["c", "a", "b"]
    for seed in range(10):
        shuffled = items.copy()
        random.Random(seed).shuffle(shuffled)
        assert ids(order(shuffled)) == expected


# batch sizes ---------------------------------------------------------------------------------


def test_a_batch_is_an_even_share_of_the_remaining_p90s_and_items():
    assert batch_size(1_000_000, 100, 16, 50) == BatchSize(p90_ms=62_500, items=7)


def test_batch_sizes_shrink_as_the_queue_empties():
    sizes = [
        batch_size(remaining, items, 8, 50)
        for remaining, items in [
            (4_000_000, 800),
            (800_000, 200),
            (200_000, 40),
            (20_000, 4),
            (4_000, 2),
        ]
    ]
    assert [size.p90_ms for size in sizes] == [MAX_BATCH_MS, 100_000, 25_000, 2_500, MIN_BATCH_MS]
    assert [size.items for size in sizes] == [100, 25, 5, 1, 1]


def test_the_floor_is_a_second_or_ten_times_the_overhead():
    assert MIN_BATCH_MS == 1_000
    assert batch_size(1_000, 3, 4, 0).p90_ms == MIN_BATCH_MS
    assert batch_size(1_000, 3, 4, 50).p90_ms == MIN_BATCH_MS  # 0.5 s of overhead's floor
    assert batch_size(1_000, 3, 4, 200).p90_ms == 2_000
    assert batch_size(1_000, 3, 4, 2_000).p90_ms == 20_000
    # Above the cap, the overhead's floor wins: such a batch is mostly start-up otherwise.
    assert batch_size(10_000_000, 100, 4, 30_000).p90_ms == 300_000


def test_a_batch_holds_at_least_one_item_even_when_none_remain_or_the_first_is_huge():
    assert batch_size(0, 0, 64, 50).items == 1
    huge = [item("huge", 3_600_000), item("small", 1_000)]
    assert ids(take_batch(huge, BatchSize(p90_ms=MIN_BATCH_MS, items=5))) == ["huge"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((1_000, 1, 0, 50), "workers"),
        ((-1, 1, 4, 50), "remaining_p90_ms"),
        ((1_000, -1, 4, 50), "remaining_items"),
        ((1_000, 1, 4, math.nan), "overhead_ms"),
    ],
)
def test_batch_size_rejects_impossible_inputs(arguments, message):
    with pytest.raises(ValueError, match=message):
        batch_size(*arguments)


def test_take_batch_stops_at_the_first_item_that_does_not_fit():
    queue = [item("a", 4_000), item("b", 3_000), item("c", 6_000), item("d", 1_000)]
    assert ids(take_batch(queue, BatchSize(p90_ms=8_000, items=10))) == ["a", "b"]
    assert ids(take_batch(queue, BatchSize(p90_ms=7_000, items=10))) == ["a", "b"]
    assert ids(take_batch(queue, BatchSize(p90_ms=14_000, items=10))) == ["a", "b", "c", "d"]


def test_take_batch_counts_p90s_and_items():
    uncertain = [item(f"new-{index}", 100, 2_000) for index in range(10)]
    assert len(take_batch(uncertain, BatchSize(p90_ms=5_000, items=10))) == 2
    zero = [item(f"zero-{index}", 0) for index in range(10)]
    assert len(take_batch(zero, BatchSize(p90_ms=5_000, items=3))) == 3


def test_take_batch_reads_the_queue_only_as_far_as_needed():
    rows = iter([item("a", 1_000), item("b", 1_000), item("c", 9_000), item("d", 1_000)])
    assert ids(take_batch(rows, BatchSize(p90_ms=5_000, items=10))) == ["a", "b"]
    assert ids(list(rows)) == ["d"]  # "c" was read to see that it does not fit
    rows = iter([item("a", 1_000), item("b", 1_000), item("c", 1_000)])
    assert ids(take_batch(rows, BatchSize(p90_ms=5_000, items=2))) == ["a", "b"]
    assert ids(list(rows)) == ["c"]


# a queue drained to its end --------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "overhead_ms"), [(1, 50), (4, 2_000), (16, 50), (64, 2_000)])
def test_every_item_is_handed_out_exactly_once_in_queue_order(workers, overhead_ms):
    items = random_items(300, seed=workers)
    batches = drain(items, workers, overhead_ms)
    handed_out = [queued for batch in batches for queued in batch]
    assert sorted(ids(handed_out)) == sorted(ids(items))
    assert handed_out == order(items)


def test_batches_get_smaller_towards_the_end():
    batches = drain([item(f"t{index:03d}", 1_000) for index in range(400)], 4, 50)
    lengths = [len(batch) for batch in batches]
    assert lengths == sorted(lengths, reverse=True)
    # 400 s over 4 workers: 100 s each; then 300 s: 75; then 225 s: 56.25 s, 56 items.
    assert lengths[:4] == [100, 75, 56, 42]
    assert lengths[-3:] == [1, 1, 1]


def test_draining_is_deterministic():
    items = random_items(200, seed=7)
    shuffled = items.copy()
    random.Random(1).shuffle(shuffled)
    assert drain(items, 8, 50) == drain(shuffled, 8, 50)


# stragglers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p90s", "after"),
    [
        ([10_000], 15_000),  # its p90 and a few seconds for the claim's own start and upload
        ([600_000], 605_000),
        ([30_000, 40_000], 75_000),  # a claim's p90 is its items' sum
        ([0, 0], 5_000),
        ([], STRAGGLER_SLACK_MS),
    ],
)
def test_straggler_threshold(p90s, after):
    claim = [item(f"t{index}", p90) for index, p90 in enumerate(p90s)]
    assert straggler_after_ms(claim) == after
    assert not is_straggler(claim, after)
    assert is_straggler(claim, after + 1)


# retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flake_rate", "retries"),
    [
        (0.0, 0),  # healthy
        (0.005, 0),  # already below the 1% target
        (0.01, 1),  # 1% is not below 1%; 0.01 ** 2 is
        (0.1, 2),  # 0.1 ** 2 = 1% is not below; 0.1 ** 3 = 0.1% is
        (0.3, 3),  # 0.3 ** 4 = 0.81%
        (0.5, RETRY_CAP),  # 0.5 ** 4 = 6%: capped
        (1.0, 0),  # never passes: no retry helps
    ],
)
def test_retries_for(flake_rate, retries):
    assert retries_for(flake_rate) == retries


def test_retries_for_other_targets_and_caps():
    assert retries_for(0.2, target=0.05) == 1  # 0.2 ** 2 = 4%
    assert retries_for(0.1, cap=1) == 1
    assert retries_for(0.9, cap=0) == 0


def test_retries_for_is_the_fewest_that_reach_the_target():
    for rate in (0.001, 0.02, 0.07, 0.15, 0.25, 0.4):
        retries = retries_for(rate, target=0.01, cap=10)
        assert rate ** (retries + 1) < 0.01
        assert retries == 0 or rate**retries >= 0.01


@pytest.mark.parametrize(
    ("arguments", "message"),
    [((-0.1,), "flake_rate"), ((0.1, 0.0), "target"), ((0.1, 0.01, -1), "cap")],
)
def test_retries_for_rejects_impossible_inputs(arguments, message):
    with pytest.raises(ValueError, match=message):
        retries_for(*arguments)


def test_the_budget_is_a_share_of_the_predicted_time():
    items = [item("a", 10_000), item("b", 20_000, 90_000), item("c", 70_000)]
    assert retry_budget_ms(items) == pytest.approx(10_000)
    assert retry_budget_ms(items, share=0.5) == pytest.approx(50_000)
    with pytest.raises(ValueError, match="share"):
        retry_budget_ms(items, share=-0.1)


def test_a_budget_that_covers_everything_grants_what_each_item_deserves():
    items = [
        item("healthy", 5_000),
        item("flaky", 5_000, flake_rate=0.1),
        item("very-flaky", 5_000, flake_rate=0.5),
        item("broken", 5_000, flake_rate=1.0),
    ]
    assert allocate_retries(items, math.inf) == {
        "healthy": 0,
        "flaky": 2,
        "very-flaky": 3,
        "broken": 0,
    }


def test_a_short_budget_goes_where_a_millisecond_removes_most_failures():
    cheap = item("cheap", 60_000, flake_rate=0.1, retry_ms=1_000)
    costly = item("costly", 60_000, flake_rate=0.1, retry_ms=4_000)
    # Gains per ms: cheap's 1st retry, costly's 1st, cheap's 2nd, costly's 2nd.
    assert allocate_retries([cheap, costly], 5_000) == {"cheap": 1, "costly": 1}
    # costly's first retry does not fit, cheap's second still does.
    assert allocate_retries([cheap, costly], 2_500) == {"cheap": 2, "costly": 0}
    assert allocate_retries([cheap, costly], 0) == {"cheap": 0, "costly": 0}


def test_a_retry_costs_the_whole_item_unless_told_otherwise():
    items = [item("file", 8_000, flake_rate=0.1)]
    assert allocate_retries(items, 15_000) == {"file": 1}
    assert allocate_retries(items, 16_000) == {"file": 2}


def test_granted_retries_stay_within_the_budget():
    items = random_items(500, seed=3)
    budget = retry_budget_ms(items, share=0.02)
    granted = allocate_retries(items, budget)
    by_id = {queued.id: queued for queued in items}
    spent = sum(retries * by_id[key].predicted_ms for key, retries in granted.items())
    assert 0 < spent <= budget
    assert all(granted[key] <= retries_for(by_id[key].flake_rate) for key in granted)
    assert granted == allocate_retries(list(reversed(items)), budget)


def test_allocate_retries_rejects_a_repeated_item_and_a_negative_budget():
    with pytest.raises(ValueError, match="listed twice"):
        allocate_retries([item("a", 1), item("a", 2)], 10)
    with pytest.raises(ValueError, match="budget_ms"):
        allocate_retries([item("a", 1)], -1)
