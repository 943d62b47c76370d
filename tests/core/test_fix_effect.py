"""The before/after comparison that proves a fix (testlens.core.flakiness.fix_effect)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from testlens.core.flakiness import (
    Observation,
    clean_runs_needed,
    fix_effect,
    improvement_probability,
    observe,
    rate_estimate,
    resolve_fixed,
)


def _density(x: float, a: float, b: float) -> float:
    return math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x)
    )  # fmt: skip


def _integrated(before: tuple[int, int], after: tuple[int, int], steps: int = 4000) -> float:
    """P(after-rate < before-rate) by brute numerical integration of the joint density on
    a grid (an independent check of the closed-form sum)."""
    a1, b1 = 1 + before[1], 1 + before[0] - before[1]
    a2, b2 = 1 + after[1], 1 + after[0] - after[1]
    h = 1.0 / steps
    xs = [(i + 0.5) * h for i in range(steps)]
    after_cdf, total, running = [], 0.0, 0.0
    for x in xs:
        running += _density(x, a2, b2) * h
        after_cdf.append(running - _density(x, a2, b2) * h / 2)
    for x, below in zip(xs, after_cdf, strict=True):
        total += _density(x, a1, b1) * below * h
    return total


@pytest.mark.parametrize(
    ("before", "after"), [((10, 5), (12, 0)), ((200, 20), (20, 0)), ((40, 3), (60, 4))]
)
def test_improvement_probability_agrees_with_numerical_integration(before, after):
    assert improvement_probability(before, after) == pytest.approx(
        _integrated(before, after), abs=2e-3
    )


def test_with_no_runs_after_the_chance_of_improvement_is_the_before_mean():
    # Against a uniform after-rate, P(after < before) is the mean of the before-rate.
    assert improvement_probability((100, 10), (0, 0)) == pytest.approx(11 / 102)


def test_rate_estimates_are_the_uniform_prior_posteriors():
    none = rate_estimate(0, 0)
    assert (none.rate, none.low, none.high) == pytest.approx((0.5, 0.025, 0.975))
    clean = rate_estimate(12, 0)  # Beta(1, 13): upper quantile 1 - 0.025 ** (1 / 13)
    assert clean.rate == pytest.approx(1 / 14)
    assert clean.high == pytest.approx(1 - 0.025 ** (1 / 13))
    with pytest.raises(ValueError):
        rate_estimate(3, 4)


def test_twenty_green_runs_of_a_ten_percent_flaky_test_are_no_proof():
    # 0.9 ** 20 = 12%: twenty passes of a test failing 10% of runs prove little.
    effect = fix_effect((200, 20), (20, 0))
    assert effect.verdict == "pending"
    assert effect.probability_improved < 0.95
    needed = effect.clean_runs_needed
    assert needed is not None and needed > 0
    assert fix_effect((200, 20), (20 + needed, 0)).verdict == "verified"
    assert fix_effect((200, 20), (20 + needed - 1, 0)).verdict == "pending"


def test_clean_runs_needed_is_the_fewest_that_verify():
    # Half of the before-rate 6/12 is 0.25; Beta(1, 1 + k)'s upper bound 1 - 0.025 ** (1 / (k + 1))
    # drops under it at k = 12 (0.247; 0.264 at k = 11), where P(improved) is already 0.997.
    assert clean_runs_needed((10, 5), (0, 0)) == 12
    assert fix_effect((10, 5), (11, 0)).verdict == "pending"
    assert fix_effect((10, 5), (12, 0)).verdict == "verified"
    assert fix_effect((10, 5), (11, 0)).clean_runs_needed == 1


def test_a_test_that_never_failed_cannot_be_shown_fixed():
    effect = fix_effect((100, 0), (0, 0))
    assert effect.verdict == "pending"
    assert effect.clean_runs_needed is None
    assert "no 1000 more clean runs" in effect.reason


def test_ineffective_needs_enough_runs_and_no_improvement():
    assert fix_effect((10, 2), (29, 9)).verdict == "pending"
    effect = fix_effect((10, 2), (30, 9))
    assert effect.verdict == "ineffective"
    assert effect.probability_improved < 0.5
    assert effect.clean_runs_needed is None
    # As many runs after, fewer failures: an improvement, so not ineffective.
    assert fix_effect((10, 2), (30, 1)).verdict != "ineffective"


def test_the_one_percent_floor_verifies_a_rarely_failing_test():
    # Before 4 of 200: half the rate (about 1.2%) is barely above the 1% floor; after 400
    # clean runs the upper bound is about 0.9%.
    effect = fix_effect((200, 4), (400, 0))
    assert effect.after.high < 0.01
    assert effect.verdict == "verified"


def _flaky_state():
    at = datetime(2025, 1, 1, tzinfo=UTC)
    state, _ = observe(None, Observation("r1", at, "c1", None, ("failed", "passed")))
    assert state.verdict == "flaky"
    return state, at


def test_a_verified_fix_resolves_a_flaky_test_with_the_given_reason():
    state, at = _flaky_state()
    resolved, transition = resolve_fixed(state, at, "fix verified: pull request #7")
    assert transition is not None
    assert (transition.from_state, transition.to_state) == ("flaky", "healthy")
    assert transition.reason == "fix verified: pull request #7"
    assert resolved.verdict == "healthy" and resolved.flaky_since is None
    assert state.verdict == "flaky"  # the input is left as it was
    assert resolve_fixed(resolved, at, "again") == (resolved, None)
