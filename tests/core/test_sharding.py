"""Sharding: complete and deterministic plans, optimal small plans, groups and their setup."""

from __future__ import annotations

import itertools
import random

import pytest
from corpus import DURATIONS

from testlens.core.durations import parse_durations
from testlens.core.identity import TestKey
from testlens.core.sharding import ShardPlan, group_key, plan_shards

PYTEST_SPLIT_FILE = DURATIONS / "pgmpy__pgmpy" / "snapshots" / "2024-09-23_ea1dfe8bd3.json"


def key(nodeid: str) -> TestKey:
    return TestKey.from_nodeid(nodeid)


def corpus_durations() -> dict[TestKey, float]:
    return parse_durations(PYTEST_SPLIT_FILE.read_bytes())


def assert_complete(plan: ShardPlan, durations: dict[TestKey, float], shards: int) -> None:
    assert len(plan.shards) == len(plan.durations_ms) == shards
    placed = [test for shard in plan.shards for test in shard]
    assert sorted(placed) == sorted(durations)
    for shard in plan.shards:
        assert list(shard) == sorted(shard)


def file_totals(durations: dict[TestKey, float]) -> dict[str, float]:
    files: dict[str, float] = {}
    for test, duration in durations.items():
        files[test.file] = files.get(test.file, 0.0) + duration
    return files


def brute_force(weights: list[float], shards: int) -> float:
    best = float("inf")
    for assignment in itertools.product(range(shards), repeat=len(weights)):
        loads = [0.0] * shards
        for weight, shard in zip(weights, assignment, strict=True):
            loads[shard] += weight
        best = min(best, max(loads))
    return best


# completeness and determinism ----------------------------------------------------------------


@pytest.mark.parametrize("group_by", ["none", "file", "suite"])
@pytest.mark.parametrize("shards", [1, 3, 16])
def test_every_test_lands_on_exactly_one_shard(group_by, shards):
    durations = corpus_durations()
    plan = plan_shards(durations, shards, group_by=group_by)
    assert_complete(plan, durations, shards)
    for shard, predicted in zip(plan.shards, plan.durations_ms, strict=True):
        assert predicted == pytest.approx(sum(durations[test] for test in shard))


@pytest.mark.parametrize("group_by", ["none", "file", "suite"])
def test_the_plan_does_not_depend_on_input_order(group_by):
    durations = corpus_durations()
    # Equal durations everywhere make ties, which must be broken on ids, not on order.
    ties = {test: 100.0 for test in list(durations)[:200]}
    for case in (durations, ties):
        expected = plan_shards(case, 7, group_by=group_by)
        for seed in range(3):
            items = list(case.items())
            random.Random(seed).shuffle(items)
            assert plan_shards(dict(items), 7, group_by=group_by) == expected


def test_shard_returns_one_shard_counted_from_zero():
    durations = {key(f"t.py::test_{index}"): float(index) for index in range(10)}
    plan = plan_shards(durations, 3)
    assert [plan.shard(index) for index in range(3)] == list(plan.shards)
    assert plan.makespan_ms == max(plan.durations_ms)
    with pytest.raises(IndexError):
        plan.shard(3)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError):
        plan_shards({key("a.py::x"): 1.0}, 0)
    with pytest.raises(ValueError):
        plan_shards({key("a.py::x"): -1.0}, 2)
    with pytest.raises(ValueError):
        plan_shards({key("a.py::x"): 1.0}, 2, group_by="module")  # type: ignore[arg-type]


def test_no_tests_give_empty_shards():
    assert plan_shards({}, 3) == ShardPlan(shards=((), (), ()), durations_ms=(0.0, 0.0, 0.0))


# no empty shard -------------------------------------------------------------------------------


def test_free_tests_still_fill_every_shard():
    durations = {key(f"t.py::test_{index}"): 0.0 for index in range(5)}
    assert all(plan_shards(durations, 5).shards)


def test_one_giant_group_leaves_no_shard_empty():
    durations = {key("big.py::test"): 1e6}
    durations.update({key(f"small_{index}.py::test"): 1.0 for index in range(3)})
    plan = plan_shards(durations, 4, group_by="file")
    assert all(plan.shards)


@pytest.mark.parametrize("seed", range(40))
def test_no_empty_shard_while_there_are_at_least_as_many_groups(seed):
    rng = random.Random(seed)
    shards = rng.randint(2, 9)
    files = rng.randint(shards, shards + 6)
    durations = {
        key(f"f{file}.py::test_{index}"): rng.choice([0.0, 1.0, rng.expovariate(1e-3)])
        for file in range(files)
        for index in range(rng.randint(1, 4))
    }
    for group_by in ("none", "file"):
        assert all(plan_shards(durations, shards, group_by=group_by).shards)


# optimality ---------------------------------------------------------------------------------


def test_beats_lpt_where_lpt_is_known_to_fail():
    # LPT puts 3+2+2 against 3+2 (7); the optimum is 3+3 against 2+2+2 (6).
    durations = {
        key(f"t.py::test_{index}"): weight for index, weight in enumerate([3.0, 3.0, 2.0, 2.0, 2.0])
    }
    assert plan_shards(durations, 2).makespan_ms == 6.0


@pytest.mark.parametrize("seed", range(60))
def test_small_plans_are_optimal(seed):
    rng = random.Random(seed)
    shards = rng.choice([2, 3, 4])
    weights = [float(rng.randint(1, 30)) for _ in range(rng.randint(shards, 9))]
    durations = {key(f"t.py::test_{index}"): weight for index, weight in enumerate(weights)}
    assert plan_shards(durations, shards).makespan_ms == brute_force(weights, shards)


@pytest.mark.parametrize("seed", range(20))
def test_small_grouped_plans_are_optimal_over_groups(seed):
    rng = random.Random(1000 + seed)
    shards = rng.choice([2, 3])
    while True:  # draw until no file is above an even share, which would allow splitting it
        sizes = [rng.randint(1, 3) for _ in range(rng.randint(shards, 7))]
        durations = {
            key(f"f{file}.py::test_{index}"): float(rng.randint(1, 20))
            for file, size in enumerate(sizes)
            for index in range(size)
        }
        files = file_totals(durations)
        if max(files.values()) <= sum(files.values()) / shards:
            break
    plan = plan_shards(durations, shards, group_by="file")
    assert plan.makespan_ms == brute_force(list(files.values()), shards)


def test_exact_durations_reach_the_lower_bound_on_a_real_suite():
    durations = corpus_durations()
    total, longest = sum(durations.values()), max(durations.values())
    for shards in (2, 4, 8, 16, 32, 64):
        bound = max(total / shards, longest)
        assert plan_shards(durations, shards).makespan_ms <= bound * 1.001


# groups and setup ----------------------------------------------------------------------------


def test_group_keys():
    test = key("tests/test_a.py::TestA::test_x[1]")
    assert group_key(test, "none") == "tests/test_a.py::TestA::test_x[1]"
    assert group_key(test, "file") == "tests/test_a.py"
    assert group_key(test, "suite") == "tests/test_a.py::TestA"
    assert group_key(key("tests/test_a.py::test_y"), "suite") == "tests/test_a.py"
    java = TestKey("", "com.acme.FooTest", "com.acme.FooTest", "bar")
    assert group_key(java, "file") == group_key(java, "suite") == "com.acme.FooTest"


@pytest.mark.parametrize("group_by", ["file", "suite"])
@pytest.mark.parametrize("shards", [2, 8])
def test_groups_up_to_an_even_share_stay_together(group_by, shards):
    durations = corpus_durations()
    groups: dict[str, float] = {}
    for test, duration in durations.items():
        groups[group_key(test, group_by)] = groups.get(group_key(test, group_by), 0) + duration
    share = sum(durations.values()) / shards
    plan = plan_shards(durations, shards, group_by=group_by)
    owners: dict[str, set[int]] = {}
    for index, shard in enumerate(plan.shards):
        for test in shard:
            owners.setdefault(group_key(test, group_by), set()).add(index)
    assert all(len(owners[group]) == 1 for group, total in groups.items() if total <= share)


def test_setup_is_paid_once_per_group_per_shard():
    durations = {key(f"f{file}.py::test_{index}"): 10.0 for file in range(6) for index in range(3)}
    setup = {f"f{file}.py": 100.0 for file in range(6)}
    plan = plan_shards(durations, 3, group_by="file", setup_ms=setup)
    for shard, predicted in zip(plan.shards, plan.durations_ms, strict=True):
        files = {test.file for test in shard}
        assert predicted == 10.0 * len(shard) + 100.0 * len(files)
    assert plan.makespan_ms == 2 * (30.0 + 100.0)


def test_a_group_longer_than_a_share_is_split_when_that_shortens_the_run():
    durations = {key(f"big.py::test_{index}"): 10_000.0 for index in range(10)}
    durations.update({key(f"small_{index}.py::test"): 1_000.0 for index in range(5)})
    plan = plan_shards(durations, 4, group_by="file", setup_ms={"big.py": 2_000.0})
    holders = [shard for shard in plan.shards if any(test.file == "big.py" for test in shard)]
    assert len(holders) >= 2
    assert plan.makespan_ms < 100_000.0  # what keeping big.py whole would cost at least
    for shard, predicted in zip(plan.shards, plan.durations_ms, strict=True):
        setup = 2_000.0 if shard in holders else 0.0
        assert predicted == sum(durations[test] for test in shard) + setup


def test_a_group_is_kept_whole_when_its_setup_outweighs_splitting():
    durations = {key(f"big.py::test_{index}"): 1_000.0 for index in range(4)}
    durations.update({key(f"small_{index}.py::test"): 1_000.0 for index in range(2)})
    plan = plan_shards(durations, 2, group_by="file", setup_ms={"big.py": 50_000.0})
    holders = [shard for shard in plan.shards if any(test.file == "big.py" for test in shard)]
    assert len(holders) == 1
    assert plan.makespan_ms == 54_000.0
