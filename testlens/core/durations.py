"""Predicted test durations from history, and the duration files users already keep.

A test's next duration is predicted from its own past runs: recent runs count more than old
ones (code and machines drift), a single slow run is outvoted once there are three (a noisy
neighbour on the CI host is not a property of the test), and a run stopped by a timeout or
an interrupt only says "at least this long". A test without history borrows from tests like
it: a test of the same name whose file moved, the same file, the same suite, then the whole
repository, so that every test gets a positive estimate and sharding never treats an unknown
test as free.

How strongly to favour recent runs is read from the history itself (:func:`calibrate`).
Walking forward over the real duration histories in the shared corpus (weekly refreshed
duration files: predict version t from the versions before it) showed why it cannot be one
constant: a half-life of 2 to 3 runs gave the lowest median per-test error, but the long
tests, which decide a shard's length, drift with the code between versions, and for them
the newest run was the best predictor; a recorded-every-run history is the opposite case.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from statistics import median
from typing import Literal

from .identity import TestKey
from .model import ReportError

Source = Literal["history", "file", "suite", "repo", "default"]

HALF_LIFE_RUNS = 1.5
"""A run this many runs old weighs half as much as the newest one, when the history is too
short to calibrate. 1.5 is about the shortest half-life at which the newest run alone is outvoted
by the two before it, while two agreeing newest runs outvote everything older: a one-off is
ignored and a real change is followed after two runs."""

HALF_LIVES: tuple[float, ...] = (8.0, 4.0, 2.5, 1.5, 1.0)
"""Half-lives :func:`calibrate` chooses from. At 1 run the newest run outweighs all older
ones together, so the estimate is the last value."""

CALIBRATION_DEPTH = 8
"""Runs per test, newest first, that :func:`calibrate` predicts from the runs before them."""

CALIBRATION_MIN_TESTS = 20
"""Tests with three ordinary runs needed before :func:`calibrate` trusts the history."""

CALIBRATION_MAX_TESTS = 2000
"""Tests :func:`calibrate` learns from at most: the longest ones."""

CLIP_MADS = 3.0
"""Ordinary samples further than this many (normal-scaled) MADs from the median are clipped."""

DEFAULT_MS = 1000.0
"""Estimate for every test when nothing at all is known: only its equality across tests
matters, so that a first run is split by test count."""

_MAD_TO_SIGMA = 1.4826  # makes the MAD estimate the standard deviation of normal noise


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run of a test.

    ``age`` is how long ago it ran, in runs of the same environment (0 = the newest run);
    only differences between ages matter. ``censored`` marks a run stopped from outside
    (timeout, interrupt), whose duration is a lower bound.
    """

    duration_ms: float
    age: float = 0.0
    censored: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.duration_ms) and self.duration_ms >= 0):
            raise ValueError(f"duration must be a finite non-negative number: {self.duration_ms}")
        if not (math.isfinite(self.age) and self.age >= 0):
            raise ValueError(f"age must be a finite non-negative number: {self.age}")


@dataclass(frozen=True, slots=True)
class Estimate:
    """Predicted duration of a test's next run.

    ``samples`` counts the ordinary (uncensored) runs behind the estimate; ``source`` says
    whether it comes from the test's own history or from which set of similar tests.
    """

    p50_ms: float
    p90_ms: float
    samples: int
    source: Source


@dataclass(frozen=True, slots=True)
class Calibration:
    """What a history says about itself (see :func:`calibrate`).

    ``p90_ratio`` is how much longer than its predicted p50 a run came in, at the 90th
    percentile; a test's p90 is at least its p50 times this ratio.
    """

    half_life: float = HALF_LIFE_RUNS
    p90_ratio: float = 1.0


def estimate(samples: Iterable[Sample], *, half_life: float = HALF_LIFE_RUNS) -> Estimate | None:
    """Estimate a test's duration from its own runs; ``None`` when there are none.

    Each run weighs ``0.5 ** (age / half_life)`` relative to the newest one. Ordinary runs
    more than :data:`CLIP_MADS` weighted MADs from the weighted median are pulled back to
    that bound, so a single outlier cannot drag the p90 far. Censored runs are handled as in
    a Kaplan-Meier estimate: each one hands its weight to the runs longer than it, so a
    timeout below the usual duration changes nothing, while one above everything seen puts
    its weight at its lower bound and raises the quantiles it reaches.
    """
    if not half_life > 0:
        raise ValueError(f"half_life must be positive, not {half_life}")
    runs = list(samples)
    if not runs:
        return None
    newest = min(run.age for run in runs)
    weighted = [
        (run.duration_ms, 0.5 ** ((run.age - newest) / half_life), run.censored) for run in runs
    ]
    observed = [(duration, weight) for duration, weight, censored in weighted if not censored]
    censored = [(duration, weight) for duration, weight, is_censored in weighted if is_censored]
    observed = _clip(observed)
    p50, p90 = _censored_quantiles(observed, censored, (0.5, 0.9))
    return Estimate(p50_ms=p50, p90_ms=p90, samples=len(observed), source="history")


def predict(
    tests: Sequence[TestKey],
    history: Mapping[TestKey, Sequence[Sample]],
    *,
    calibration: Calibration | None = None,
) -> dict[TestKey, Estimate]:
    """Estimate every test in ``tests``, falling back to similar tests when one has no history.

    ``calibration`` defaults to :func:`calibrate` of this history. A test without history
    that was moved (exactly one test of the same file name, class and name is in the history
    but no longer in ``tests``) keeps the moved test's estimate. Otherwise the fallbacks are,
    in order: the median estimate of tests with history in the same file
    (:attr:`TestKey.location`), then in the same non-empty suite, then in the whole history,
    then :data:`DEFAULT_MS`. Every key of ``history`` counts as a sibling, including tests
    that are no longer in ``tests``.
    """
    if calibration is None:
        calibration = calibrate(history)
    known: dict[TestKey, Estimate] = {}
    for key, runs in history.items():
        found = estimate(runs, half_life=calibration.half_life)
        if found is not None:
            floor = found.p50_ms * calibration.p90_ratio
            known[key] = replace(found, p90_ms=max(found.p90_ms, floor))
    by_file: dict[str, list[Estimate]] = {}
    by_suite: dict[str, list[Estimate]] = {}
    for key, found in known.items():
        by_file.setdefault(key.location, []).append(found)
        if key.suite:
            by_suite.setdefault(key.suite, []).append(found)
    file_guess = {file: _from_siblings(found, "file") for file, found in by_file.items()}
    suite_guess = {suite: _from_siblings(found, "suite") for suite, found in by_suite.items()}
    fallback = _from_siblings(list(known.values()), "repo") or Estimate(
        p50_ms=DEFAULT_MS, p90_ms=DEFAULT_MS, samples=0, source="default"
    )
    moved = _moved(tests, known)
    return {
        key: known.get(key)
        or moved.get(key)
        or file_guess.get(key.location)
        or suite_guess.get(key.suite)
        or fallback
        for key in tests
    }


def calibrate(
    history: Mapping[TestKey, Sequence[Sample]], *, half_life: float | None = None
) -> Calibration:
    """Learn from a history how it is best predicted, by predicting its own past.

    Each of a test's newest :data:`CALIBRATION_DEPTH` ordinary runs is predicted from the
    ordinary runs before it. The half-life among :data:`HALF_LIVES` (or the given one) with
    the least squared error in milliseconds wins, so that the long tests, which decide how
    long a shard runs, count most; ties go to the longest, most robust half-life. The 90th
    percentile of actual / predicted over the same predictions becomes ``p90_ratio``: a
    quantile of a test's own past runs misses drift, and on the corpus covered only about
    70% of next runs. With fewer than :data:`CALIBRATION_MIN_TESTS` tests having three
    ordinary runs there is too little to learn from, and the defaults are returned.
    """
    cases: list[tuple[list[Sample], float]] = []
    tests = 0
    for runs in _calibration_sample(history):
        ordinary = sorted(
            (run for run in runs if not run.censored), key=lambda run: (run.age, run.duration_ms)
        )
        tests += len(ordinary) >= 3
        cases.extend(
            (ordinary[position + 1 :], ordinary[position].duration_ms)
            for position in range(min(CALIBRATION_DEPTH, len(ordinary) - 2))
        )
    if tests < CALIBRATION_MIN_TESTS:
        return Calibration(half_life=half_life or HALF_LIFE_RUNS)
    candidates = HALF_LIVES if half_life is None else (half_life,)
    predictions = {
        candidate: [_weighted_median(older, candidate) for older, _ in cases]
        for candidate in candidates
    }
    errors = {
        candidate: math.fsum(
            (predicted - actual) ** 2
            for predicted, (_, actual) in zip(predictions[candidate], cases, strict=True)
        )
        for candidate in candidates
    }
    best = min(candidates, key=lambda candidate: (errors[candidate], -candidate))
    ratios = [
        (actual / predicted, 1.0)
        for predicted, (_, actual) in zip(predictions[best], cases, strict=True)
        if predicted > 0
    ]
    p90_ratio = _quantiles(ratios, (0.9,))[0] if ratios else 1.0
    return Calibration(half_life=best, p90_ratio=max(1.0, p90_ratio))


def _calibration_sample(history: Mapping[TestKey, Sequence[Sample]]) -> list[Sequence[Sample]]:
    """At most :data:`CALIBRATION_MAX_TESTS` histories: those of the longest tests.

    Calibration minimises squared error in milliseconds, which the long tests dominate (and
    they decide how long a shard runs), so the longest few thousand choose as all would;
    a 200k-test suite then calibrates in a second instead of a minute. Ties go by key, so
    the choice is deterministic.
    """
    if len(history) <= CALIBRATION_MAX_TESTS:
        return list(history.values())
    longest = sorted(
        history, key=lambda key: (-max((run.duration_ms for run in history[key]), default=0), key)
    )
    return [history[key] for key in longest[:CALIBRATION_MAX_TESTS]]


def _weighted_median(runs: Sequence[Sample], half_life: float) -> float:
    """The p50 :func:`estimate` gives for ordinary runs (clipping never moves the median)."""
    newest = min(run.age for run in runs)
    return _quantiles(
        [(run.duration_ms, 0.5 ** ((run.age - newest) / half_life)) for run in runs], (0.5,)
    )[0]


def parse_durations(data: str | bytes) -> dict[TestKey, float]:
    """Read a pytest-split ``.test_durations`` or a knapsack report, in milliseconds.

    Both are a JSON object from an id to seconds: pytest node ids for pytest-split, spec file
    paths for knapsack, which become file-level keys. pytest-split's early list-of-pairs form
    is read too, as pytest-split itself still does.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"invalid durations JSON: {exc}") from None
    if isinstance(document, list):
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in document):
            raise ReportError("a durations list must hold [id, seconds] pairs")
        document = dict(document)
    if not isinstance(document, dict):
        raise ReportError("durations must be a JSON object from test id to seconds")
    durations: dict[TestKey, float] = {}
    for nodeid, seconds in document.items():
        if not isinstance(nodeid, str) or not nodeid:
            raise ReportError(f"a test id must be a non-empty string, not {nodeid!r}")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ReportError(f"duration of {nodeid!r} is not a non-negative number: {seconds!r}")
        durations[TestKey.from_nodeid(nodeid)] = seconds * 1000.0
    return durations


def format_test_durations(durations_ms: Mapping[TestKey, float]) -> str:
    """Write a ``.test_durations`` file as pytest-split does (seconds, sorted keys, indent 4),
    so that pytest-split and testlens can share one file."""
    seconds = {key.nodeid: duration / 1000.0 for key, duration in durations_ms.items()}
    return json.dumps(seconds, sort_keys=True, indent=4) + "\n"


def _moved(tests: Sequence[TestKey], known: Mapping[TestKey, Estimate]) -> dict[TestKey, Estimate]:
    """Tests without history whose file name, class and name match exactly one test that has
    history but is gone from ``tests``: a file moved to another directory keeps its tests'
    durations, and re-learning them from siblings would throw that away."""
    wanted = set(tests)
    gone: dict[tuple[str, str, str], list[TestKey]] = {}
    for key in known:
        if key not in wanted:
            gone.setdefault(_signature(key), []).append(key)
    return {
        key: known[gone[_signature(key)][0]]
        for key in tests
        if key not in known and len(gone.get(_signature(key), ())) == 1
    }


def _signature(key: TestKey) -> tuple[str, str, str]:
    return key.location.rsplit("/", 1)[-1], key.classname, key.name


def _from_siblings(siblings: Sequence[Estimate], source: Source) -> Estimate | None:
    """A new test is predicted like a typical sibling (median p50), and its p90 says how slow
    a sibling can be (90th percentile of their p90s). Siblings that took no time at all are
    left out: a test never seen is never predicted to be free."""
    timed = [sibling for sibling in siblings if sibling.p50_ms > 0]
    if not timed:
        return None
    p50 = median(sibling.p50_ms for sibling in timed)
    p90 = _quantiles([(sibling.p90_ms, 1.0) for sibling in timed], (0.9,))[0]
    return Estimate(p50_ms=p50, p90_ms=max(p50, p90), samples=0, source=source)


def _clip(observed: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(observed) < 3:
        return observed  # two runs give no way to tell which one is the outlier
    center = _quantiles(observed, (0.5,))[0]
    spread = _quantiles([(abs(value - center), weight) for value, weight in observed], (0.5,))[0]
    bound = CLIP_MADS * _MAD_TO_SIGMA * spread
    return [(min(max(value, center - bound), center + bound), weight) for value, weight in observed]


def _quantiles(points: Sequence[tuple[float, float]], qs: Sequence[float]) -> list[float]:
    """Weighted quantiles without interpolation: the smallest value whose cumulative weight
    reaches ``q``. A prediction is then always a duration the test actually took."""
    return _censored_quantiles(points, (), qs)


def _censored_quantiles(
    observed: Sequence[tuple[float, float]],
    censored: Sequence[tuple[float, float]],
    qs: Sequence[float],
) -> list[float]:
    """Weighted Kaplan-Meier quantiles: ``observed`` are (duration, weight) of complete runs,
    ``censored`` of runs known only to have lasted at least that long.

    Walking up the durations, a complete run takes its share of the probability still left,
    in proportion to its weight among the runs that lasted at least as long. Probability that
    no complete run claims is beyond the longest censored run, and a quantile that lands there
    is reported at that run's duration, the most that is known.
    """
    events = sorted(
        [(value, 0, weight) for value, weight in observed if weight > 0]
        + [(value, 1, weight) for value, weight in censored if weight > 0]
    )
    # Weight still at risk at each event, summed from the end so that the last one is exact.
    at_risk = list(accumulate(weight for _, _, weight in reversed(events)))[::-1]
    survival = 1.0
    results: list[float | None] = [None] * len(qs)
    for (value, is_censored, weight), risk in zip(events, at_risk, strict=True):
        if not is_censored:
            survival -= survival * weight / risk
            for index, q in enumerate(qs):
                if results[index] is None and 1.0 - survival >= q - 1e-12:
                    results[index] = value
    longest = events[-1][0]
    return [longest if result is None else result for result in results]
