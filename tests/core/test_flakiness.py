"""Flaky-test detection: evidence, regressions, outages, resolution, quarantine, storage."""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from testlens.core.flakiness import (
    DEFAULT_CONFIG,
    CodeLedger,
    CodeRun,
    CodeSeen,
    DetectionConfig,
    Observation,
    TestState,
    Transition,
    credible_interval,
    last_24_hours_count,
    mark_quarantined,
    observations,
    observe,
    observe_routine,
    resolve_clean_runs,
    same_code,
    unquarantine,
)
from testlens.core.model import Attempt, Report, TestCase

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PASS = ("passed",)
FAIL = ("failed",)


def obs(
    i: int,
    statuses: tuple[str, ...] = PASS,
    *,
    code: str | None = "",
    env: str = "linux",
    share: float = 0.0,
    tests: int | None = 100,
    at: datetime | None = None,
) -> Observation:
    """Run ``r{i}`` at hour ``i`` on its own commit ``c{i}`` unless told otherwise."""
    return Observation(
        run_id=f"r{i}",
        at=at or T0 + timedelta(hours=i),
        code_id=f"c{i}" if code == "" else code,
        environment=env,
        statuses=statuses,
        run_failure_share=share,
        run_tests=tests,
    )


def feed(
    state: TestState | None,
    observations_: list[Observation],
    config: DetectionConfig = DEFAULT_CONFIG,
) -> tuple[TestState, list[Transition]]:
    """Observe each run in turn, with the proof its commit's earlier runs give."""
    ledger = CodeLedger(config)
    transitions: list[Transition] = []
    for o in observations_:
        state, new = ledger.observe("test", state, o)
        transitions += new
    assert state is not None
    return state, transitions


def passes(start: int, count: int, **kwargs) -> list[Observation]:
    return [obs(i, PASS, **kwargs) for i in range(start, start + count)]


# --- proof: failed and passed on the same code ---------------------------------------------


def test_retry_that_passes_makes_the_test_flaky_at_once():
    state, transitions = feed(None, [*passes(0, 5), obs(5, ("failed", "passed"))])
    assert state.state == "flaky"
    assert [(t.from_state, t.to_state, t.run_ids) for t in transitions] == [
        ("healthy", "flaky", ("r5",))
    ]
    assert "within run r5" in transitions[0].reason
    assert transitions[0].at == T0 + timedelta(hours=5)
    assert (state.total_runs, state.failed_runs, state.flaky_runs) == (6, 0, 1)
    assert state.first_flaky_at == state.last_flaky_at == T0 + timedelta(hours=5)


def test_failure_and_pass_on_the_same_commit_in_two_runs_is_flaky():
    state, transitions = feed(
        None, [*passes(0, 5), obs(5, FAIL, code="abc"), obs(6, PASS, code="abc")]
    )
    assert state.state == "flaky"
    assert transitions[-1].run_ids == ("r5", "r6")
    assert "same code abc" in transitions[-1].reason
    assert state.flaky_runs == 1


def test_pass_then_failure_on_the_same_commit_is_flaky_without_waiting_for_a_pass():
    state, transitions = feed(
        None, [*passes(0, 5), obs(5, PASS, code="abc"), obs(6, FAIL, code="abc")]
    )
    assert state.state == "flaky"
    assert transitions[-1].run_ids == ("r5", "r6")
    assert state.streak is None  # the failure is a known flake, not a pending streak


def test_same_tree_sha_on_different_commits_is_the_same_code():
    def report(status: str) -> Report:
        return Report(
            "junit",
            [
                TestCase(name="test_a", attempts=[Attempt(status)]),
                *(TestCase(name=f"test_{i}", attempts=[Attempt("passed")]) for i in range(20)),
            ],
        )

    state = None
    ledger = CodeLedger()
    transitions: list[Transition] = []
    uploads = [
        ("r1", "commit1", "tree1", "passed"),
        ("r2", "commit2", "tree2", "failed"),
        ("r3", "commit3", "tree2", "passed"),
    ]  # commit3 rebased, same tree as commit2
    for i, (run_id, commit, tree, status) in enumerate(uploads):
        observed = dict(
            observations(
                report(status),
                run_id=run_id,
                at=T0 + timedelta(hours=i),
                commit=commit,
                tree_sha=tree,
                environment="linux",
            )
        )
        state, new = ledger.observe("test_a", state, observed["", "", "", "test_a"])
        transitions += new
    assert state is not None and state.state == "flaky"
    assert transitions[-1].run_ids == ("r2", "r3")
    assert "tree2" in transitions[-1].reason


def test_different_environments_are_not_evidence_against_each_other():
    linux, _ = feed(None, [*passes(0, 5, env="linux"), obs(5, FAIL, code="abc", env="linux")])
    windows, transitions = feed(
        None, [*passes(0, 5, env="windows"), obs(6, PASS, code="abc", env="windows")]
    )
    assert linux.state == windows.state == "healthy"
    assert transitions == []
    with pytest.raises(ValueError, match="environment"):
        observe(linux, obs(7, PASS, code="abc", env="windows"))


def test_observations_split_a_merged_matrix_by_environment():
    report = Report(
        "junit",
        [
            TestCase(
                name="test_a",
                attempts=[
                    Attempt("failed", environment="linux"),
                    Attempt("passed", environment="windows"),
                ],
            )
        ],
    )
    observed = observations(report, run_id="r1", at=T0, commit="abc")
    assert sorted((o.environment, o.statuses) for _, o in observed) == [
        ("linux", ("failed",)),
        ("windows", ("passed",)),
    ]
    by_env = {o.environment: o for _, o in observed}
    assert (by_env["linux"].run_failure_share, by_env["windows"].run_failure_share) == (1.0, 0.0)


# --- regressions are broken, not flaky -----------------------------------------------------


def test_regression_is_broken_not_flaky_and_healthy_again_once_fixed():
    history = [*passes(0, 30), *(obs(i, FAIL) for i in range(30, 36)), obs(36, PASS)]
    state, transitions = feed(None, history)
    assert [(t.from_state, t.to_state) for t in transitions] == [
        ("healthy", "broken"),
        ("broken", "healthy"),
    ]
    broke, fixed = transitions
    assert broke.run_ids[0] == "r30"  # the first failing run names the commit that broke it
    assert broke.at < T0 + timedelta(hours=34)
    assert fixed.run_ids == ("r30", "r36")
    assert state.state == "healthy"
    assert (state.flaky_runs, state.failed_runs) == (0, 6)
    assert state.flake_score < DEFAULT_CONFIG.prior_failures / (
        DEFAULT_CONFIG.prior_failures + DEFAULT_CONFIG.prior_passes
    )


def test_retried_failures_break_a_test_after_two_runs():
    history = [*passes(0, 10), obs(10, ("failed",) * 3), obs(11, ("failed",) * 3)]
    state, transitions = feed(None, history)
    assert state.state == "broken"
    assert transitions[-1].run_ids == ("r10", "r11")


def test_regression_with_reruns_of_its_commit_is_still_broken():
    history = [
        *passes(0, 30),
        obs(30, FAIL, code="bad"),
        obs(31, FAIL, code="bad"),
        obs(32, FAIL, code="bad2"),
        obs(33, PASS, code="fix"),
    ]
    state, transitions = feed(None, history)
    assert [t.to_state for t in transitions] == ["broken", "healthy"]
    assert state.flaky_runs == 0


def test_rerun_of_code_older_than_the_regression_does_not_end_it():
    history = [
        *passes(0, 30, code="good"),
        *(obs(i, FAIL) for i in range(30, 33)),
        obs(33, PASS, code="good"),
        obs(34, FAIL),
    ]
    state, transitions = feed(None, history)
    assert state.state == "broken"
    assert [t.to_state for t in transitions] == ["broken"]
    assert state.streak is not None and state.streak.count == 4


def test_broken_test_that_passes_on_a_failing_commit_was_flaky_all_along():
    history = [*passes(0, 30), *(obs(i, FAIL) for i in range(30, 34)), obs(40, PASS, code="c33")]
    state, transitions = feed(None, history)
    assert [(t.from_state, t.to_state) for t in transitions] == [
        ("healthy", "broken"),
        ("broken", "flaky"),
    ]
    assert transitions[-1].run_ids == ("r33", "r40")
    assert state.flaky_runs == 4


def test_flaky_test_that_regresses_is_flaky_again_once_fixed():
    history = [
        *passes(0, 30),
        obs(30, ("failed", "passed")),
        *passes(31, 30),
        *(obs(i, FAIL) for i in range(61, 70)),
        obs(70, PASS),
    ]
    state, transitions = feed(None, history)
    assert [t.to_state for t in transitions] == ["flaky", "broken", "flaky"]
    assert state.state == "flaky"


# --- outages -------------------------------------------------------------------------------


def test_runs_where_most_tests_failed_are_not_evidence():
    history = [
        *passes(0, 20),
        obs(20, FAIL, share=0.8),
        obs(21, PASS, code="c20"),
        obs(22, ("failed", "passed"), share=0.9),
        obs(23, FAIL, share=0.6),
        obs(24, FAIL, share=0.7),
        *passes(25, 5),
    ]
    state, transitions = feed(None, history)
    assert transitions == []
    assert state.state == "healthy"
    assert (state.outage_runs, state.flaky_runs, state.failed_runs) == (4, 0, 3)


def test_outage_share_is_configurable_and_small_runs_are_never_outages():
    strict = DetectionConfig(outage_failure_share=0.9)
    state, _ = feed(None, [*passes(0, 5), obs(5, ("failed", "passed"), share=0.8)], strict)
    assert state.state == "flaky"
    state, _ = feed(None, [*passes(0, 5), obs(5, ("failed", "passed"), share=1.0, tests=3)])
    assert state.state == "flaky"


# --- the statistical score -----------------------------------------------------------------


def runs_to_detection(rate: float, seed: int, limit: int) -> int | None:
    """Runs until a test failing at ``rate`` on every commit (no retries, no reruns) is
    called flaky, or None."""
    rng = random.Random(seed)
    state = None
    for i in range(limit):
        state, transitions = observe(state, obs(i, FAIL if rng.random() < rate else PASS))
        if any(t.to_state == "flaky" for t in transitions):
            return i + 1
    return None


def test_ten_percent_flaky_test_without_retries_is_found_by_statistics():
    found = [runs_to_detection(0.10, seed, limit=200) for seed in range(30)]
    assert all(n is not None for n in found)
    assert statistics.median(n for n in found if n is not None) <= 40


def test_stable_test_with_rare_isolated_failures_is_not_flaky():
    history = [obs(i, FAIL if i in (40, 400) else PASS) for i in range(600)]
    state, transitions = feed(None, history)
    assert transitions == []
    assert state.flaky_runs == 2  # each failure was followed by a pass, so it was a flake
    low, high = credible_interval(state)
    assert low < DEFAULT_CONFIG.flaky_min_rate < high


def test_statistical_transition_names_the_failing_runs():
    history = [obs(i, FAIL if i % 5 == 0 else PASS) for i in range(1, 40)]
    state, transitions = feed(None, history)
    assert [t.to_state for t in transitions] == ["flaky"]
    assert "estimated" in transitions[0].reason
    assert set(transitions[0].run_ids) <= {f"r{i}" for i in range(5, 40, 5)}
    assert len(transitions[0].run_ids) >= 2
    low, high = credible_interval(state)
    assert low < state.flake_score < high
    assert 0.05 < state.flake_score < 0.35


def test_credible_interval_matches_closed_forms():
    uniform = TestState(None, T0, T0, alpha=1.0, beta=1.0)
    assert credible_interval(uniform) == pytest.approx((0.05, 0.95))
    one_failure = TestState(None, T0, T0, alpha=1.0, beta=40.0)
    # Beta(1, b) has quantile 1 - (1 - p) ** (1 / b)
    assert credible_interval(one_failure) == pytest.approx(
        (1 - 0.95 ** (1 / 40), 1 - 0.05 ** (1 / 40)), rel=1e-9
    )
    often = TestState(None, T0, T0, alpha=25.0, beta=1.0)
    assert credible_interval(often) == pytest.approx((0.05 ** (1 / 25), 0.95 ** (1 / 25)))
    arcsine = TestState(None, T0, T0, alpha=0.5, beta=0.5)  # quantile sin²(πp/2)
    assert credible_interval(arcsine) == pytest.approx(
        (math.sin(math.pi * 0.025) ** 2, math.sin(math.pi * 0.475) ** 2)
    )


# --- resolution ----------------------------------------------------------------------------


def flaky_then_clean(days: float, runs: int) -> tuple[TestState, list[Transition]]:
    """Flaky through a retry at hour 0, then ``runs`` clean runs spread over ``days``."""
    state, _ = feed(None, [obs(0, ("failed", "passed"))])
    step = timedelta(days=days) / runs
    return feed(state, [obs(i, PASS, at=T0 + step * i) for i in range(1, runs + 1)])


def test_resolved_after_fourteen_quiet_days_and_enough_clean_runs():
    needed = resolve_clean_runs()
    state, transitions = flaky_then_clean(days=20, runs=needed + 40)
    assert state.state == "healthy"
    (resolved,) = transitions
    assert (resolved.from_state, resolved.to_state) == ("flaky", "healthy")
    assert resolved.at >= T0 + timedelta(days=14)
    assert len(resolved.run_ids) == 1
    assert state.flaky_since is None


def test_not_resolved_before_fourteen_days_however_many_clean_runs():
    state, transitions = flaky_then_clean(days=13.9, runs=1000)
    assert state.state == "flaky" and transitions == []


def test_not_resolved_after_fourteen_days_with_too_few_clean_runs():
    state, transitions = flaky_then_clean(days=30, runs=resolve_clean_runs() - 1)
    assert state.state == "flaky" and transitions == []
    state, transitions = observe(state, obs(10_000, at=T0 + timedelta(days=31)))
    assert state.state == "healthy" and len(transitions) == 1


def test_resolution_rules_are_configurable():
    quick = DetectionConfig(resolve_after=timedelta(days=1), resolve_max_rate=0.05)
    assert resolve_clean_runs(quick) < resolve_clean_runs()
    state, _ = feed(None, [obs(0, ("failed", "passed"))], quick)
    runs = [obs(i, at=T0 + timedelta(hours=2 * i)) for i in range(1, resolve_clean_runs(quick) + 1)]
    state, transitions = feed(state, runs, quick)
    assert [t.to_state for t in transitions] == ["healthy"]


def test_clean_run_bound_is_the_least_that_bounds_the_failure_rate():
    needed = resolve_clean_runs()
    bound = DEFAULT_CONFIG.resolve_max_rate

    def upper(clean: int) -> float:
        fresh = TestState(
            None,
            T0,
            T0,
            alpha=DEFAULT_CONFIG.prior_failures,
            beta=DEFAULT_CONFIG.prior_passes + clean,
        )
        return credible_interval(fresh)[1]

    assert upper(needed) < bound <= upper(needed - 1)


# --- quarantine ----------------------------------------------------------------------------


def test_quarantine_keeps_the_test_quarantined_while_judging_it_underneath():
    state, _ = feed(None, passes(0, 5))
    state, quarantined = mark_quarantined(state, T0 + timedelta(hours=5, minutes=30))
    assert quarantined is not None and quarantined.to_state == "quarantined"
    assert state.state == "quarantined" and state.since == T0 + timedelta(hours=5, minutes=30)
    state, transitions = feed(state, [obs(6, ("failed", "passed")), *passes(7, 3)])
    assert state.state == "quarantined"
    assert state.verdict == "flaky"
    assert [(t.from_state, t.to_state) for t in transitions] == [("healthy", "flaky")]
    assert (state.total_runs, state.flaky_runs) == (9, 1)
    assert mark_quarantined(state, T0)[1] is None  # already quarantined
    state, lifted = unquarantine(state, T0 + timedelta(days=1))
    assert state.state == "flaky"
    assert lifted is not None and (lifted.from_state, lifted.to_state) == ("quarantined", "flaky")


# --- figures, storage and purity -----------------------------------------------------------


def test_last_24_hours_count_counts_recent_flaky_runs_only():
    history = [obs(i, ("failed", "passed") if i % 2 else PASS) for i in range(0, 60)]
    state, _ = feed(None, history)
    now = T0 + timedelta(hours=59)
    assert last_24_hours_count(state, now) == 12  # odd hours 37..59
    assert last_24_hours_count(state, now + timedelta(days=2)) == 0
    assert state.flaky_runs == 30


def test_observe_leaves_the_given_state_untouched():
    state, _ = feed(None, [*passes(0, 5), obs(5, FAIL, code="x")])
    before = state.to_json()
    observe(state, obs(6, PASS, code="x"))
    assert state.to_json() == before


def test_skipped_runs_and_naive_times():
    state, transitions = feed(None, [obs(0, ("skipped",))])
    assert (state.total_runs, transitions) == (0, [])
    with pytest.raises(ValueError, match="timezone"):
        observe(None, replace(obs(1), at=datetime(2024, 1, 1)))


def test_slightly_out_of_order_runs_keep_times_consistent():
    state, _ = feed(None, [obs(5), obs(3, ("failed", "passed")), obs(4, ("failed", "passed"))])
    assert state.first_seen == T0 + timedelta(hours=3)
    assert state.last_seen == T0 + timedelta(hours=5)
    assert [run for _, run in state.recent_flaky] == ["r3", "r4"]


def test_state_round_trips_through_json():
    history = [
        *passes(0, 20),
        obs(20, ("failed", "passed")),
        obs(21, FAIL, code="x"),
        obs(22, FAIL),
    ]
    state, _ = feed(None, history)
    state, _ = mark_quarantined(state, T0 + timedelta(days=1))
    assert state.streak is not None and state.recent_flaky
    assert TestState.from_json(state.to_json()) == state


def test_state_stays_small_however_long_the_history():
    rng = random.Random(7)
    state = None
    ledger = CodeLedger()
    commit = 0
    for i in range(10_000):
        commit += rng.random() < 0.8  # some runs are reruns of the same commit
        statuses = rng.choice([PASS] * 8 + [FAIL, ("failed", "passed")])
        state, _ = ledger.observe(
            "test",
            state,
            obs(i, statuses, code=f"{commit:040x}", share=0.9 if rng.random() < 0.01 else 0.01),
        )
    assert state is not None
    text = state.to_json()
    assert len(state.recent_flaky) == DEFAULT_CONFIG.recent_flaky_limit
    assert len(text) < 16_000
    assert TestState.from_json(text) == state
    assert state.total_runs == 10_000


# --- branches: a pull request's failures may be its own regressions ---------------------------


def test_branch_regressions_interleaved_with_mainline_passes_are_not_flaky():
    history = passes(0, 30)
    for i in range(30, 90, 2):  # every other run is a PR that breaks the test, then main passes
        history.append(replace(obs(i, FAIL), mainline=False))
        history.append(obs(i + 1, PASS))
    state, transitions = feed(None, history)
    assert state.verdict == "healthy"
    assert state.flaky_runs == 0
    assert transitions == []
    assert state.failed_runs == 30  # still counted as runs that failed


def test_branch_retry_and_same_commit_proof_still_count():
    state, _ = feed(None, [*passes(0, 10), replace(obs(10, ("failed", "passed")), mainline=False)])
    assert state.verdict == "flaky"
    rerun = [
        replace(obs(20, FAIL, code="pr-head"), mainline=False),
        replace(obs(21, PASS, code="pr-head"), mainline=False),
    ]
    state, _ = feed(None, passes(0, 10) + rerun)
    assert state.verdict == "flaky"


def test_branch_pass_does_not_end_a_mainline_regression():
    history = passes(0, 20) + [obs(i, FAIL) for i in range(20, 24)]
    history.append(replace(obs(24, PASS), mainline=False))  # a PR that does not have the bug
    history.append(obs(25, FAIL))
    state, _ = feed(None, history)
    assert state.verdict == "broken"
    assert state.flaky_runs == 0


# --- same-code evidence: from the code's earlier runs, not kept in the state ------------------


def test_same_code_evidence_from_earlier_runs():
    at = [T0 + timedelta(hours=i) for i in range(4)]
    assert same_code([]) is None
    assert same_code([CodeRun(at[0], "r0", False, False)]) is None  # skipped: says nothing
    failed_twice = [CodeRun(at[2], "r2", False, True), CodeRun(at[1], "r1", False, True)]
    assert same_code(failed_twice) == CodeSeen(at[1], None, "r1")
    # a pass proved those failures flakes: none is left unexplained
    with_pass = [*failed_twice, CodeRun(at[3], "r3", True, False)]
    assert same_code(with_pass) == CodeSeen(at[1], "r3", None)
    retried = [CodeRun(at[0], "r0", True, True)]  # failed, then passed on retry
    assert same_code(retried) == CodeSeen(at[0], "r0", None)


def test_an_outage_on_a_commit_is_no_proof_when_its_rerun_passes():
    ledger = CodeLedger()
    state, _ = ledger.observe("t", None, obs(0))
    state, _ = ledger.observe("t", state, obs(1, FAIL, code="x", share=0.9))
    state, transitions = ledger.observe("t", state, obs(2, PASS, code="x"))
    assert (state.verdict, transitions, state.flaky_runs) == ("healthy", [], 0)


def test_version_2_states_are_read_without_their_commit_memory():
    state, _ = feed(None, [*passes(0, 20), obs(20, ("failed", "passed")), obs(21, FAIL)])
    old = json.loads(state.to_json())
    assert old[0] == 3
    keys = [
        "environment",
        "first_seen",
        "last_seen",
        "verdict",
        "verdict_since",
        "flaky_since",
        "quarantined_since",
        "total_runs",
        "failed_runs",
        "flaky_runs",
        "outage_runs",
        "alpha",
        "beta",
        "clean_runs_since_flaky",
        "first_flaky_at",
        "last_flaky_at",
        "recent_flaky",
    ]
    version_2 = {"v": 2, **dict(zip(keys, old[1:18], strict=True))}
    started, last, count, attempts, runs = old[18]
    version_2["streak"] = {
        "started_at": started,
        "last_at": last,
        "count": count,
        "attempts": attempts,
        "runs": runs,
    }
    version_2["codes"] = [["0123456789abcdef", 1, "r3", None]]
    assert TestState.from_json(json.dumps(version_2)) == state
    with pytest.raises(ValueError, match="version 9"):
        TestState.from_json(json.dumps({"v": 9}))


def test_routine_runs_update_the_stored_state_exactly_as_the_full_model_does():
    rng = random.Random(11)
    outcomes = [PASS] * 100 + [FAIL, ("failed", "passed"), ("skipped",), ("passed", "skipped")]
    taken = declined = 0
    for _ in range(600):
        state = None
        for i in range(20):
            o = obs(
                i,
                rng.choice(outcomes),
                code=rng.choice([None, "x", f"c{i}"]),
                share=0.9 if rng.random() < 0.03 else 0.0,
            )
            o = replace(o, mainline=rng.random() < 0.9)
            if o.code_id is not None and rng.random() < 0.3:
                o = replace(
                    o, same_code=CodeSeen(T0, rng.choice([None, "r1"]), rng.choice([None, "r2"]))
                )
            full, transitions = observe(state, o)
            if state is not None:
                fast = observe_routine(json.loads(state.to_json()), o)
                if fast is None:
                    declined += 1
                else:
                    taken += 1
                    assert transitions == []
                    assert fast == json.loads(full.to_json())
            state = full
    assert taken > 3000 and declined > 500  # both ways, many times


def test_routine_runs_leave_every_other_case_to_the_full_model():
    healthy, _ = feed(None, passes(0, 5))
    stored = json.loads(healthy.to_json())
    assert observe_routine(stored, obs(5)) is not None
    assert observe_routine(stored, obs(5, FAIL)) is None
    assert observe_routine(stored, obs(5, ("failed", "passed"))) is None
    assert observe_routine(stored, obs(5, ("skipped",))) is None
    assert observe_routine(stored, obs(5, share=0.9)) is None  # an outage
    assert observe_routine(stored, obs(5, env="windows")) is None
    unexplained = replace(obs(5, code="x"), same_code=CodeSeen(T0, None, "r1"))
    assert observe_routine(stored, unexplained) is None
    flaky, _ = feed(None, [*passes(0, 5), obs(5, ("failed", "passed"))])
    assert observe_routine(json.loads(flaky.to_json()), obs(6)) is None
    streak, _ = feed(None, [*passes(0, 5), obs(5, FAIL)])
    assert observe_routine(json.loads(streak.to_json()), obs(6)) is None
