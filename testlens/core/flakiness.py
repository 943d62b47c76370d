"""Flaky-test detection: one pure update from a test's stored state and what one run showed.

A test is flaky when it fails for reasons other than its code. Two kinds of evidence say so:

* proof: the same code both failed and passed, within one run's retries or across runs of
  the same commit (or git tree) in the same environment;
* statistics: a Bayesian estimate of ``q``, the chance that a run of the test fails when the
  code is fine (the idea of Meta's "probabilistic flakiness score"), so tests that fail now
  and then without ever being retried are caught too.

What must not count as flakiness: a regression (the test fails on every run from some commit
on, which makes it *broken* until it passes again) and an infrastructure outage (most of the
run's tests failed at once). Failures are therefore held back in a pending *streak* until the
test passes again: a streak that a flake rate cannot explain becomes a regression, any other
streak ends as flakes once a pass shows the code was fine.

Everything an API needs lives in :class:`TestState`, bounded in size however long the
history, so reads never scan raw results. ``docs/flakiness.md`` explains the model to users.
"""

from __future__ import annotations

import json
import math
from bisect import insort
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from functools import cache
from typing import Any, Literal, NamedTuple

from .model import Report

Verdict = Literal["healthy", "flaky", "broken"]
State = Literal["healthy", "flaky", "broken", "quarantined"]

_STATE_VERSION = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_MICROSECOND = timedelta(microseconds=1)
_STREAK_RUNS = 20  # runs of a failure streak remembered one by one; longer ones only count


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Every knob of the model; the defaults are what ``docs/flakiness.md`` documents."""

    prior_failures: float = 0.5
    """Beta prior of ``q``: pseudo-runs that failed. 0.5 keeps the prior's density highest
    near zero, where most tests are, with a long tail towards very flaky ones."""
    prior_passes: float = 24.5
    """Beta prior of ``q``: pseudo-runs that passed; with ``prior_failures`` a prior mean
    of 2% worth 25 runs, so a test with no history is presumed mostly reliable."""
    credible_mass: float = 0.9
    """Mass of the equal-tailed credible interval every decision reads a bound from."""
    flaky_min_rate: float = 0.01
    """A test is flaky by statistics once the interval's lower end is above this rate."""
    memory_runs: float = 200.0
    """Half-life, in counted runs, of the evidence behind the score: flakiness comes and
    goes with code changes, so old runs fade."""
    broken_min_runs: int = 2
    """A regression needs at least this many failing runs in a row."""
    broken_max_chance: float = 0.001
    """A failure streak is a regression when flakes would produce it with less than this
    chance (given what the test's runs say of ``q``): roughly the prior chance that a test
    breaks at a given commit."""
    outage_failure_share: float = 0.5
    """Runs in which more than this share of tests failed are outages, not evidence."""
    outage_min_tests: int = 10
    """Runs with fewer tests than this are never outages: two failures of three tests are
    not an infrastructure problem."""
    resolve_after: timedelta = timedelta(days=14)
    """A flaky test resolves only after this long without a flaky failure..."""
    resolve_max_rate: float = 0.02
    """...and once its clean runs since the last flake bound ``q`` (upper end of the
    interval) below this rate."""
    recent_flaky_limit: int = 50
    """How many recent flaky occurrences are kept with their time (for the last-24h count)."""

    @property
    def lower_tail(self) -> float:
        return (1.0 - self.credible_mass) / 2.0

    @property
    def upper_tail(self) -> float:
        return 1.0 - self.lower_tail


DEFAULT_CONFIG = DetectionConfig()


@dataclass(frozen=True, slots=True)
class Observation:
    """What one run showed of one test in one environment.

    ``statuses`` are the attempt statuses in order (retries after the first). ``code_id`` is
    the git tree SHA when known, else the commit SHA: a tree names the code exactly even
    across rebases and merges. ``run_failure_share`` is the share of the run's tests (in this
    environment) that failed at least once; ``run_tests`` how many tests that share is of.
    ``mainline`` is False for runs of pull requests and feature branches: their failures may
    be the branch's own regressions, so from them only proof (a failure and a pass on the same
    code) counts, and their passes do not end a failure streak of the mainline.
    """

    run_id: str
    at: datetime
    code_id: str | None
    environment: str | None
    statuses: tuple[str, ...]
    run_failure_share: float = 0.0
    run_tests: int | None = None
    mainline: bool = True
    same_code: CodeSeen | None = None
    """What earlier runs on the same code showed of this test in this environment (see
    :func:`same_code`); None when no earlier run of that code ran it."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, with the runs that justify it (for events and webhooks)."""

    from_state: State
    to_state: State
    at: datetime
    reason: str
    run_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CodeSeen:
    """What earlier runs of one commit or tree showed of a test: when it first ran there, a
    run where it passed, and a failure not yet shown to be a flake (a pass on the same code
    shows that, so there is none once a pass is known)."""

    first_seen: datetime
    pass_run: str | None = None
    fail_run: str | None = None


class CodeRun(NamedTuple):
    """One earlier run of a test on the code of the run being observed."""

    at: datetime
    run_id: str
    passed: bool  # some attempt passed
    failed: bool  # some attempt failed or errored


def same_code(earlier: Iterable[CodeRun]) -> CodeSeen | None:
    """The proof material of :class:`Observation.same_code` from the test's earlier runs on
    the same code in the same environment, outages left out by the caller.

    Proof across reruns comes from the runs themselves rather than from a memory of commits
    kept in every test's state: the server finds a commit's earlier runs by an index, so a
    clean run writes nothing about its commit, and there is no limit on how old a rerun's
    commit may be. Runs that skipped the test say nothing and are ignored.
    """
    first_seen: datetime | None = None
    pass_run: tuple[datetime, str] | None = None
    fail_run: tuple[datetime, str] | None = None
    for run in earlier:
        if not (run.passed or run.failed):
            continue
        first_seen = run.at if first_seen is None else min(first_seen, run.at)
        if run.passed and (pass_run is None or (run.at, run.run_id) < pass_run):
            pass_run = (run.at, run.run_id)
        elif not run.passed and (fail_run is None or (run.at, run.run_id) < fail_run):
            fail_run = (run.at, run.run_id)
    if first_seen is None:
        return None
    if pass_run is not None:  # that pass already proved every failure here a flake
        return CodeSeen(first_seen, pass_run[1], None)
    return CodeSeen(first_seen, None, None if fail_run is None else fail_run[1])


@dataclass(frozen=True, slots=True)
class Streak:
    """Failing runs in a row, not yet known to be flakes or a regression."""

    started_at: datetime
    last_at: datetime
    count: int
    attempts: int  # failed attempts over those runs: retries that fail again weigh in
    runs: tuple[tuple[datetime, str], ...]  # the first _STREAK_RUNS (time, run id)


@dataclass(slots=True)
class TestState:
    """One test in one environment: its verdict, its figures and the evidence still pending.

    ``verdict`` is what the runs say; ``quarantined_since`` is a user's decision laid over it
    (:attr:`state`), so a quarantined test keeps being judged. ``flaky_since`` is set while
    the test is flaky underneath, including while it is broken. ``alpha``/``beta`` are the
    Beta posterior of ``q``, the chance that a run fails on good code.
    """

    __test__ = False  # not a pytest test class

    environment: str | None
    first_seen: datetime
    last_seen: datetime
    verdict: Verdict = "healthy"
    verdict_since: datetime | None = None
    flaky_since: datetime | None = None
    quarantined_since: datetime | None = None
    total_runs: int = 0
    failed_runs: int = 0
    flaky_runs: int = 0
    outage_runs: int = 0
    alpha: float = DEFAULT_CONFIG.prior_failures
    beta: float = DEFAULT_CONFIG.prior_passes
    clean_runs_since_flaky: int = 0
    first_flaky_at: datetime | None = None
    last_flaky_at: datetime | None = None
    recent_flaky: list[tuple[int, str]] = field(default_factory=list)
    """Recent flaky occurrences, oldest first: (µs since the epoch, run id). Kept as stored,
    as a flaky test carries dozens and most runs only append to them."""
    streak: Streak | None = None

    @property
    def state(self) -> State:
        return "quarantined" if self.quarantined_since is not None else self.verdict

    @property
    def since(self) -> datetime | None:
        return self.quarantined_since or self.verdict_since

    @property
    def flake_score(self) -> float:
        """Posterior mean of ``q``: 0 for a test that never fails on good code, 1 for one
        that always does."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def pass_rate(self) -> float | None:
        """Share of runs in which the test passed in the end (retries included, outages too)."""
        if not self.total_runs:
            return None
        return (self.total_runs - self.failed_runs) / self.total_runs

    def to_json(self) -> str:
        """The state as one flat JSON list: a few microseconds to write and read, where a
        keyed object took tens, at every test of every upload. Times are whole microseconds
        since the epoch."""
        streak = self.streak
        return stored_json(
            [
                _STATE_VERSION,
                self.environment,
                _micros(self.first_seen),
                _micros(self.last_seen),
                self.verdict,
                _micros(self.verdict_since),
                _micros(self.flaky_since),
                _micros(self.quarantined_since),
                self.total_runs,
                self.failed_runs,
                self.flaky_runs,
                self.outage_runs,
                self.alpha,
                self.beta,
                self.clean_runs_since_flaky,
                _micros(self.first_flaky_at),
                _micros(self.last_flaky_at),
                self.recent_flaky,
                None
                if streak is None
                else [
                    _micros(streak.started_at),
                    _micros(streak.last_at),
                    streak.count,
                    streak.attempts,
                    [[_micros(at), run] for at, run in streak.runs],
                ],
            ]
        )

    @classmethod
    def from_json(cls, text: str) -> TestState:
        """Read :meth:`to_json`'s list, or the keyed object of version 2 (which also kept
        commits for proof, now found from the runs themselves: that part is dropped)."""
        d: Any = json.loads(text)
        if isinstance(d, dict) and d.get("v") == 2:
            d = _from_version_2(d)
        if not isinstance(d, list) or d[0] != _STATE_VERSION:
            version = d.get("v") if isinstance(d, dict) else d[0] if d else None
            raise ValueError(f"unknown flakiness state version {version!r}")
        (
            _,
            environment,
            first_seen,
            last_seen,
            verdict,
            verdict_since,
            flaky_since,
            quarantined_since,
            total_runs,
            failed_runs,
            flaky_runs,
            outage_runs,
            alpha,
            beta,
            clean_runs,
            first_flaky_at,
            last_flaky_at,
            recent_flaky,
            streak,
        ) = d
        return cls(
            environment=environment,
            first_seen=from_micros(first_seen),
            last_seen=from_micros(last_seen),
            verdict=verdict,
            verdict_since=_opt_from_micros(verdict_since),
            flaky_since=_opt_from_micros(flaky_since),
            quarantined_since=_opt_from_micros(quarantined_since),
            total_runs=total_runs,
            failed_runs=failed_runs,
            flaky_runs=flaky_runs,
            outage_runs=outage_runs,
            alpha=alpha,
            beta=beta,
            clean_runs_since_flaky=clean_runs,
            first_flaky_at=_opt_from_micros(first_flaky_at),
            last_flaky_at=_opt_from_micros(last_flaky_at),
            recent_flaky=[(at, run) for at, run in recent_flaky] if recent_flaky else [],
            streak=None
            if streak is None
            else Streak(
                started_at=from_micros(streak[0]),
                last_at=from_micros(streak[1]),
                count=streak[2],
                attempts=streak[3],
                runs=tuple((from_micros(at), run) for at, run in streak[4]),
            ),
        )


def _from_version_2(d: dict[str, Any]) -> list[Any]:
    """A version 2 state (a keyed object) as the fields of the current list: its keys are
    the names of :class:`Stored`'s fields."""
    s = d["streak"]
    return [
        _STATE_VERSION,
        *(d[field.name.lower()] for field in Stored if Stored.VERSION < field < Stored.STREAK),
        None
        if s is None
        else [s["started_at"], s["last_at"], s["count"], s["attempts"], s["runs"]],
    ]


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def stored_json(stored: list[Any]) -> str:
    """A state's list (:meth:`TestState.to_json`, :func:`observe_routine`) as stored: compact,
    through one encoder (``json.dumps`` with options builds a new one at every call)."""
    return _COMPACT.encode(stored)


class Stored(IntEnum):
    """Positions in the list :meth:`TestState.to_json` writes, for :func:`observe_routine`
    and readers of stored states that need a field or two without building the state."""

    VERSION = 0
    ENVIRONMENT = 1
    FIRST_SEEN = 2
    LAST_SEEN = 3
    VERDICT = 4
    VERDICT_SINCE = 5
    FLAKY_SINCE = 6
    QUARANTINED_SINCE = 7
    TOTAL_RUNS = 8
    FAILED_RUNS = 9
    FLAKY_RUNS = 10
    OUTAGE_RUNS = 11
    ALPHA = 12
    BETA = 13
    CLEAN_RUNS_SINCE_FLAKY = 14
    FIRST_FLAKY_AT = 15
    LAST_FLAKY_AT = 16
    RECENT_FLAKY = 17
    STREAK = 18


def observe_routine(
    stored: list[Any], obs: Observation, config: DetectionConfig = DEFAULT_CONFIG
) -> list[Any] | None:
    """:func:`observe` of the commonest run, on the state as stored (the list of
    :meth:`TestState.to_json`), or None when the run needs the full model.

    The commonest run is a healthy test, with no failure streak pending, passing without a
    failed attempt, in a run that is no outage, on code where it has no unexplained failure.
    Its update is arithmetic, and makes no transition: done on the stored list it costs a
    fraction of reading, updating and writing the whole state, at nearly every test of
    every upload. ``tests/core/test_flakiness.py`` checks it against :func:`observe`.
    """
    if (
        stored[Stored.VERSION] != _STATE_VERSION
        or stored[Stored.VERDICT] != "healthy"
        or stored[Stored.STREAK] is not None
        or stored[Stored.ENVIRONMENT] != obs.environment
    ):
        return None
    passed = False
    for status in obs.statuses:
        if status == "passed":
            passed = True
        elif status != "skipped":
            return None
    if not passed or is_outage(obs, config):
        return None
    if obs.code_id is not None and obs.same_code is not None and obs.same_code.fail_run:
        return None
    if obs.at.tzinfo is None:
        raise ValueError("observation time must be timezone-aware (UTC)")
    at = _at_micros(obs.at)
    new = stored.copy()
    new[Stored.FIRST_SEEN] = min(new[Stored.FIRST_SEEN], at)
    new[Stored.LAST_SEEN] = max(new[Stored.LAST_SEEN], at)
    new[Stored.TOTAL_RUNS] += 1
    new[Stored.ALPHA], new[Stored.BETA] = _counted(
        new[Stored.ALPHA], new[Stored.BETA], False, config
    )
    new[Stored.CLEAN_RUNS_SINCE_FLAKY] += 1
    return new


def is_outage(obs: Observation, config: DetectionConfig = DEFAULT_CONFIG) -> bool:
    """Whether the run failed too much of its environment's tests to say anything of this
    one (an infrastructure outage): such runs count, but as neither evidence nor proof."""
    big_enough = obs.run_tests is None or obs.run_tests >= config.outage_min_tests
    return big_enough and obs.run_failure_share > config.outage_failure_share


def observe(
    state: TestState | None, obs: Observation, config: DetectionConfig = DEFAULT_CONFIG
) -> tuple[TestState, list[Transition]]:
    """Fold one run of one test into its state; return the new state and its transitions.

    The input state is not modified. Transitions describe the verdict (healthy, flaky,
    broken) and are reported for quarantined tests too, so that a quarantined test that
    resolves can tell its owner the quarantine may be lifted.
    """
    if obs.at.tzinfo is None:
        raise ValueError("observation time must be timezone-aware (UTC)")
    if state is None:
        state = TestState(
            environment=obs.environment,
            first_seen=obs.at,
            last_seen=obs.at,
            verdict_since=obs.at,
            alpha=config.prior_failures,
            beta=config.prior_passes,
        )
    elif state.environment != obs.environment:
        raise ValueError(
            f"observation for environment {obs.environment!r} applied to the "
            f"state of environment {state.environment!r}"
        )
    else:
        state = _copy(state)
    ran = [status for status in obs.statuses if status != "skipped"]
    if not ran:
        return state, []
    return _Update(state, obs, config, ran).run()


class CodeLedger:
    """Every test's runs per environment and code, in memory, for a caller that feeds
    :func:`observe` run after run (simulations, tests): what the server finds in its runs
    table instead. :meth:`observe` supplies ``same_code`` and records the run."""

    def __init__(self, config: DetectionConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self._runs: dict[tuple[Hashable, str | None, str], list[CodeRun]] = {}

    def observe(
        self, test: Hashable, state: TestState | None, obs: Observation
    ) -> tuple[TestState, list[Transition]]:
        """:func:`observe` of ``obs`` for ``test`` (any key naming it), with its same-code
        evidence from the runs observed so far."""
        if obs.code_id is None:
            return observe(state, obs, self.config)
        runs = self._runs.setdefault((test, obs.environment, obs.code_id), [])
        new, transitions = observe(state, replace(obs, same_code=same_code(runs)), self.config)
        ran = [status for status in obs.statuses if status != "skipped"]
        if ran and not is_outage(obs, self.config):
            failed = any(status in ("failed", "error") for status in ran)
            runs.append(CodeRun(obs.at, obs.run_id, "passed" in ran, failed))
        return new, transitions


def mark_quarantined(state: TestState, at: datetime) -> tuple[TestState, Transition | None]:
    """A user quarantined the test: it shows as quarantined whatever the runs say next."""
    if state.quarantined_since is not None:
        return state, None
    new = replace(state, quarantined_since=at)
    return new, Transition(state.verdict, "quarantined", at, "quarantined by a user", ())


def unquarantine(state: TestState, at: datetime) -> tuple[TestState, Transition | None]:
    """A user lifted the quarantine: the test shows its verdict again."""
    if state.quarantined_since is None:
        return state, None
    new = replace(state, quarantined_since=None)
    return new, Transition("quarantined", state.verdict, at, "quarantine lifted by a user", ())


def last_24_hours_count(state: TestState, now: datetime) -> int:
    """Flaky occurrences in the 24 hours before ``now`` (at most ``recent_flaky_limit``)."""
    end = _at_micros(now)
    start = end - 24 * 3600 * 1_000_000
    return sum(1 for at, _ in state.recent_flaky if start < at <= end)


def credible_interval(
    state: TestState, config: DetectionConfig = DEFAULT_CONFIG
) -> tuple[float, float]:
    """Equal-tailed credible interval of ``q``, computed from the posterior on demand rather
    than stored, since the state's ``alpha`` and ``beta`` determine it."""
    return _interval(state.alpha, state.beta, config)


def _interval(alpha: float, beta: float, config: DetectionConfig) -> tuple[float, float]:
    return (
        _beta_quantile(config.lower_tail, alpha, beta),
        _beta_quantile(config.upper_tail, alpha, beta),
    )


_INTERVALS: dict[tuple[float, float], tuple[float, float]] = {}
_INTERVALS_KEPT = 100_000


def flake_interval(state: TestState) -> tuple[float, float]:
    """:func:`credible_interval` of ``state``, memoised (see :func:`posterior_interval`)."""
    return posterior_interval(state.alpha, state.beta)


def posterior_interval(alpha: float, beta: float) -> tuple[float, float]:
    """The credible interval of ``q`` under Beta(alpha, beta), memoised: it depends only on
    the posterior, which tests with the same history share, and costs hundreds of µs."""
    key = (alpha, beta)
    found = _INTERVALS.get(key)
    if found is None:
        found = _interval(alpha, beta, DEFAULT_CONFIG)
        if len(_INTERVALS) < _INTERVALS_KEPT:
            _INTERVALS[key] = found
    return found


RECENT_FLAKY_KEPT = 50
"""Flaky occurrences a combined summary keeps, for the last-24-hours count."""

_VERDICT_RANK = {"healthy": 0, "flaky": 1, "broken": 2}


class Combined(NamedTuple):
    """A test's figures over every environment it runs in: the worst verdict and its score
    and interval, summed run counts, the earliest and latest flake, and the newest flaky
    occurrences (Unix seconds, oldest first)."""

    verdict: Verdict
    flake_score: float
    flake_score_low: float
    flake_score_high: float
    total_runs: int
    failed_runs: int
    flaky_runs: int
    first_flaky_at: datetime | None
    last_flaky_at: datetime | None
    recent_flaky: tuple[int, ...]


def combine(states: Sequence[TestState]) -> Combined:
    """The figures of one test from its states in each environment (at least one)."""
    if len(states) == 1:  # most tests: nothing to combine
        only = states[0]
        low, high = flake_interval(only)
        return Combined(
            only.verdict,
            only.flake_score,
            low,
            high,
            only.total_runs,
            only.failed_runs,
            only.flaky_runs,
            only.first_flaky_at,
            only.last_flaky_at,
            tuple(round(at / 1e6) for at, _run in only.recent_flaky[-RECENT_FLAKY_KEPT:])
            if only.recent_flaky
            else (),
        )
    worst = max(states, key=lambda s: (_VERDICT_RANK[s.verdict], s.flake_score))
    low, high = flake_interval(worst)
    recent = sorted(at / 1e6 for s in states for at, _run in s.recent_flaky)
    return Combined(
        worst.verdict,
        worst.flake_score,
        low,
        high,
        sum(s.total_runs for s in states),
        sum(s.failed_runs for s in states),
        sum(s.flaky_runs for s in states),
        min((s.first_flaky_at for s in states if s.first_flaky_at), default=None),
        max((s.last_flaky_at for s in states if s.last_flaky_at), default=None),
        tuple(round(t) for t in recent[-RECENT_FLAKY_KEPT:]),
    )


@cache
def resolve_clean_runs(config: DetectionConfig = DEFAULT_CONFIG) -> int:
    """Clean runs since its last flake a flaky test needs before it can resolve.

    Only those runs count, on top of the prior: the failure rate before a fix says nothing
    about the code after it. The answer is the least ``n`` for which the interval's upper end
    of Beta(prior_failures, prior_passes + n) is below ``resolve_max_rate``.
    """
    n = 0
    while (
        _beta_cdf(config.resolve_max_rate, config.prior_failures, config.prior_passes + n)
        < config.upper_tail
    ):
        n += 1
    return n


def observations(
    report: Report,
    *,
    run_id: str,
    at: datetime,
    commit: str | None,
    tree_sha: str | None = None,
    environment: str | None = None,
    mainline: bool = True,
    shares: Mapping[str | None, tuple[float, int]] | None = None,
) -> list[tuple[tuple[str, str, str, str], Observation]]:
    """Split one uploaded report into one observation per test and environment.

    Attempts carry their own environment when the report has several (a merged matrix);
    ``environment`` names the others. The failure share that marks an outage is computed per
    environment, because an outage usually takes down one job, not the whole matrix: from
    ``report`` itself, or given as ``shares`` (:func:`failure_shares` of the whole run) when
    ``report`` holds only some of the run's tests.
    """
    code_id = tree_sha or commit
    if shares is None:
        shares = failure_shares(report, environment)
    result = []
    for identity, env, statuses in _statuses(report, environment):
        share, ran = shares.get(env, (0.0, 0))
        result.append(
            (
                identity,
                Observation(
                    run_id=run_id,
                    at=at,
                    code_id=code_id,
                    environment=env,
                    statuses=statuses,
                    run_failure_share=share,
                    run_tests=ran,
                    mainline=mainline,
                ),
            )
        )
    return result


def failure_shares(
    report: Report, environment: str | None = None
) -> dict[str | None, tuple[float, int]]:
    """Per environment: the share of the tests that ran which failed at least once, and how
    many ran (see :func:`is_outage`)."""
    counts: dict[str | None, list[int]] = {}
    for _, env, statuses in _statuses(report, environment):
        if all(status == "skipped" for status in statuses):
            counts.setdefault(env, [0, 0])
            continue
        count = counts.setdefault(env, [0, 0])
        count[1] += 1
        count[0] += any(status in ("failed", "error") for status in statuses)
    return {env: (failing / ran if ran else 0.0, ran) for env, (failing, ran) in counts.items()}


def _statuses(
    report: Report, environment: str | None
) -> Iterator[tuple[tuple[str, str, str, str], str | None, tuple[str, ...]]]:
    """Each test's attempt statuses per environment, in attempt order."""
    for test in report.tests:
        attempts = test.attempts
        if len(attempts) == 1:  # most tests: one attempt, in the run's environment
            yield test.identity, attempts[0].environment or environment, (attempts[0].status,)
            continue
        by_env: dict[str | None, list[str]] = {}
        for attempt in attempts:
            by_env.setdefault(attempt.environment or environment, []).append(attempt.status)
        for env, listed in by_env.items():
            yield test.identity, env, tuple(listed)


class _Update:
    """The steps of one :func:`observe` call, sharing the copied state and the transitions."""

    def __init__(
        self, state: TestState, obs: Observation, config: DetectionConfig, ran: list[str]
    ) -> None:
        self.s = state
        self.obs = obs
        self.cfg = config
        self.failed = any(status in ("failed", "error") for status in ran)
        self.passed = any(status == "passed" for status in ran)
        self.attempts = len(ran)
        self.transitions: list[Transition] = []

    def run(self) -> tuple[TestState, list[Transition]]:
        s, obs = self.s, self.obs
        s.total_runs += 1
        s.first_seen = min(s.first_seen, obs.at)
        s.last_seen = max(s.last_seen, obs.at)
        if not self.passed:
            s.failed_runs += 1
        if self._is_outage():
            s.outage_runs += 1
            return s, []

        proof, ends_streak, refutes = self._same_code()
        if not obs.mainline and not proof and (self.failed or s.streak is not None):
            return s, []  # a branch's own failure, or a pass that says nothing of mainline
        new_flakes = False
        if self.failed and proof:  # failed on code that passed (in this run or another)
            self._count(failed=True)
            self._flake(obs.at, obs.run_id)
            new_flakes = True
        elif self.failed:
            self._extend_streak()
        else:
            self._count(failed=False)
            s.clean_runs_since_flaky += 1
        if self.passed and s.streak is not None and ends_streak:
            new_flakes |= self._end_streak(refutes)

        if proof:
            self._become_flaky(proof[0], proof[1])
        elif new_flakes:
            self._check_score()
        elif not self.failed:
            self._check_resolved()
        return s, self.transitions

    def _is_outage(self) -> bool:
        return is_outage(self.obs, self.cfg)

    def _same_code(self) -> tuple[tuple[str, tuple[str, ...]] | None, bool, bool]:
        """Same-code proof of flakiness (if any), whether a pass here ends a failure streak,
        and whether it refutes the streak, from this run and ``obs.same_code``.

        A pass on code first seen before the streak began (a rerun of an older commit) does
        not end it: a regression is expected to leave older code passing. A pass on code
        that failed since the streak began refutes it: that failure was not deterministic.
        """
        s, obs = self.s, self.obs
        proof: tuple[str, tuple[str, ...]] | None = None
        if self.failed and self.passed:
            proof = (f"failed and passed within run {obs.run_id}", (obs.run_id,))
        if obs.code_id is None:
            return proof, True, False
        seen = obs.same_code
        if seen is None:  # the first run of this code
            return proof, s.streak is None or obs.at >= s.streak.started_at, False
        if proof is None and self.failed and seen.pass_run is not None:
            proof = (self._same_code_reason(obs.run_id, seen.pass_run), (seen.pass_run, obs.run_id))
        elif proof is None and self.passed and seen.fail_run is not None:
            proof = (self._same_code_reason(seen.fail_run, obs.run_id), (seen.fail_run, obs.run_id))
        refutes = self.passed and seen.fail_run is not None
        first_seen = min(seen.first_seen, obs.at)
        ends_streak = s.streak is None or first_seen >= s.streak.started_at
        return proof, ends_streak, refutes

    def _same_code_reason(self, failed_run: str, passed_run: str) -> str:
        return (
            f"failed in run {failed_run} and passed in run {passed_run} on the same code "
            f"{self.obs.code_id}"
        )

    def _count(self, failed: bool, times: int = 1) -> None:
        """Add runs on good code to the posterior of ``q``, fading older ones."""
        s = self.s
        for _ in range(times):
            s.alpha, s.beta = _counted(s.alpha, s.beta, failed, self.cfg)

    def _flake(self, at: datetime, run_id: str) -> None:
        """Record one flaky occurrence (a run that failed on good code)."""
        s = self.s
        s.flaky_runs += 1
        s.clean_runs_since_flaky = 0
        s.first_flaky_at = at if s.first_flaky_at is None else min(s.first_flaky_at, at)
        s.last_flaky_at = at if s.last_flaky_at is None else max(s.last_flaky_at, at)
        insort(s.recent_flaky, (_at_micros(at), run_id))
        del s.recent_flaky[: -self.cfg.recent_flaky_limit]

    def _extend_streak(self) -> None:
        s, obs, cfg = self.s, self.obs, self.cfg
        old = s.streak
        if old is None:
            streak = Streak(obs.at, obs.at, 1, self.attempts, ((obs.at, obs.run_id),))
        else:
            runs = old.runs
            if len(runs) < _STREAK_RUNS:
                runs += ((obs.at, obs.run_id),)
            streak = Streak(
                min(old.started_at, obs.at),
                max(old.last_at, obs.at),
                old.count + 1,
                old.attempts + self.attempts,
                runs,
            )
        s.streak = streak
        if s.verdict == "broken" or streak.count < cfg.broken_min_runs:
            return
        chance = _streak_chance(s.alpha, s.beta, streak.attempts)
        if chance < cfg.broken_max_chance:
            self._set_verdict(
                "broken",
                (
                    f"failed every run since run {streak.runs[0][1]} ({streak.count} in a row); "
                    f"flakes at this test's rate would do that with chance {chance:.2g}"
                ),
                tuple(run for _, run in streak.runs),
            )

    def _end_streak(self, refuted: bool) -> bool:
        """A pass ended the failure streak; return whether its failures were flakes.

        A broken test passing on new code was fixed: its failures said nothing about
        flakiness. Any other streak, or one refuted by a pass on code that had failed, was
        made of flakes.
        """
        s, obs = self.s, self.obs
        streak = s.streak
        assert streak is not None
        s.streak = None
        if s.verdict == "broken" and not refuted:
            back: Verdict = "flaky" if s.flaky_since is not None else "healthy"
            self._set_verdict(
                back,
                (
                    f"passed again in run {obs.run_id} after failing {streak.count} runs in a row "
                    f"since run {streak.runs[0][1]}"
                ),
                (streak.runs[0][1], obs.run_id),
            )
            return False
        self._count(failed=True, times=streak.count)
        for at, run_id in streak.runs:
            self._flake(at, run_id)
        s.flaky_runs += streak.count - len(streak.runs)  # runs beyond the remembered ones
        s.last_flaky_at = max(s.last_flaky_at or streak.last_at, streak.last_at)
        return True

    def _check_score(self) -> None:
        s, cfg = self.s, self.cfg
        if s.flaky_since is not None:
            return
        if _beta_cdf(cfg.flaky_min_rate, s.alpha, s.beta) > cfg.lower_tail:
            return
        low, high = credible_interval(s, cfg)
        self._become_flaky(
            f"fails on good code at an estimated {s.flake_score:.1%} of runs "
            f"({cfg.credible_mass:.0%} credible interval {low:.1%} to {high:.1%}), above the "
            f"{cfg.flaky_min_rate:.1%} floor",
            tuple(run for _, run in s.recent_flaky[-10:]),
        )

    def _become_flaky(self, reason: str, run_ids: tuple[str, ...]) -> None:
        """Mark the test flaky underneath; show it unless a regression is still failing it."""
        s = self.s
        if s.flaky_since is None:
            s.flaky_since = self.obs.at
        if s.verdict == "healthy" or (s.verdict == "broken" and s.streak is None):
            self._set_verdict("flaky", reason, run_ids)

    def _check_resolved(self) -> None:
        s, cfg, obs = self.s, self.cfg, self.obs
        if s.verdict != "flaky" or s.flaky_since is None or s.streak is not None:
            return
        # A pass proving an old regression failure flaky flags a test with no counted flake.
        quiet_since = s.last_flaky_at or s.flaky_since
        if obs.at - quiet_since < cfg.resolve_after:
            return
        if s.clean_runs_since_flaky < resolve_clean_runs(cfg):
            return
        s.flaky_since = None
        s.alpha, s.beta = cfg.prior_failures, cfg.prior_passes + s.clean_runs_since_flaky
        days = (obs.at - quiet_since).days
        self._set_verdict(
            "healthy",
            (
                f"no flaky failure for {days} days, and {s.clean_runs_since_flaky} clean runs "
                f"since bound its failure rate below {cfg.resolve_max_rate:.0%}"
            ),
            (obs.run_id,),
        )

    def _set_verdict(self, verdict: Verdict, reason: str, run_ids: Iterable[str]) -> None:
        s = self.s
        if verdict == s.verdict:
            return
        self.transitions.append(Transition(s.verdict, verdict, self.obs.at, reason, tuple(run_ids)))
        s.verdict = verdict
        s.verdict_since = self.obs.at


def _counted(alpha: float, beta: float, failed: bool, cfg: DetectionConfig) -> tuple[float, float]:
    """The posterior of ``q`` after one more run on good code, older runs faded."""
    keep = 0.5 ** (1.0 / cfg.memory_runs)
    return (
        cfg.prior_failures + keep * (alpha - cfg.prior_failures) + failed,
        cfg.prior_passes + keep * (beta - cfg.prior_passes) + (not failed),
    )


def _streak_chance(alpha: float, beta: float, count: int) -> float:
    """Chance that ``count`` attempts in a row all fail by flakes alone, under the
    Beta(alpha, beta) posterior of ``q`` (the Beta-binomial predictive, E[q ** count]):
    uncertainty about ``q`` makes a long streak likelier than the mean rate alone would.

    Attempts, not runs: with retry-on-failure runners ``q`` is also the chance that one
    attempt fails, and a retry failing again is evidence of a regression."""
    chance = 1.0
    for i in range(count):
        chance *= (alpha + i) / (alpha + beta + i)
    return chance


def _beta_cdf(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (Numerical Recipes
    6.4), taken on the side where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1.0 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """Modified Lentz evaluation of the incomplete beta continued fraction, its two terms per
    step written out (this loop is where interval computations spend their time)."""
    tiny = 1e-300  # stands in for an exact zero denominator, as Lentz's method prescribes
    d = 1.0 / ((1.0 - (a + b) * x / (a + 1.0)) or tiny)
    c, h = 1.0, d
    for m in range(1, 1000):
        m2 = 2 * m
        numerator = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 / ((1.0 + numerator * d) or tiny)
        c = (1.0 + numerator / c) or tiny
        h *= d * c
        numerator = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 / ((1.0 + numerator * d) or tiny)
        c = (1.0 + numerator / c) or tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-13:
            break
    return h


def _beta_quantile(p: float, a: float, b: float) -> float:
    """Inverse of :func:`_beta_cdf` in ``x``: Newton steps from the starting guess of
    Numerical Recipes' ``invbetai``, kept inside a shrinking bisection bracket so that they
    converge in a few evaluations and never diverge."""
    lo, hi = 0.0, 1.0
    x = _beta_quantile_guess(p, a, b)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    for _ in range(200):
        f = _beta_cdf(x, a, b) - p
        if f < 0:
            lo = x
        else:
            hi = x
        if abs(f) < 1e-12 or hi - lo < 1e-15:
            break
        density = math.exp(log_norm + (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x))
        step = x - f / density if density > 0 else -1.0
        x = step if lo < step < hi else (lo + hi) / 2.0
    return x


def _beta_quantile_guess(p: float, a: float, b: float) -> float:
    """A close first guess: a normal approximation when both shapes are at least 1, else the
    power laws that the distribution follows near each end."""
    if a >= 1.0 and b >= 1.0:
        t = math.sqrt(-2.0 * math.log(min(p, 1.0 - p)))
        z = (2.30753 + t * 0.27061) / (1.0 + t * (0.99229 + t * 0.04481)) - t
        z = -z if p < 0.5 else z
        al = (z * z - 3.0) / 6.0
        inv_a, inv_b = 1.0 / (2.0 * a - 1.0), 1.0 / (2.0 * b - 1.0)
        h = 2.0 / (inv_a + inv_b)
        w = z * math.sqrt(al + h) / h - (inv_b - inv_a) * (al + 5.0 / 6.0 - 2.0 / (3.0 * h))
        guess = a / (a + b * math.exp(min(2.0 * w, 700.0)))
    else:
        head = math.exp(a * math.log(a / (a + b))) / a
        tail = math.exp(b * math.log(b / (a + b))) / b
        if p < head / (head + tail):
            guess = (a * (head + tail) * p) ** (1.0 / a)
        else:
            guess = 1.0 - (b * (head + tail) * (1.0 - p)) ** (1.0 / b)
    return min(max(guess, 1e-300), 1.0 - 1e-16)


def _copy(state: TestState) -> TestState:
    """A copy whose lists and dicts can change without touching ``state`` (much cheaper than
    ``dataclasses.replace``, which runs ``__init__``)."""
    new = object.__new__(TestState)
    for name in TestState.__slots__:
        setattr(new, name, getattr(state, name))
    new.recent_flaky = list(state.recent_flaky)
    return new


def _micros(at: datetime | None) -> int | None:
    """A time as whole microseconds since the epoch: exact, and cheap to store and read."""
    return None if at is None else _at_micros(at)


def _at_micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _opt_from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


# --- a fix's effect: the failure rate before a merge against the rate after it -------------

FixVerdict = Literal["verified", "ineffective", "pending"]


@dataclass(frozen=True, slots=True)
class FixProofConfig:
    """The knobs of :func:`fix_effect`; the defaults are what ``docs/fix-attempts.md``
    documents."""

    prior_failures: float = 1.0
    """Beta prior of each rate: one pseudo-run that failed and one that passed (the uniform
    prior), the same on both sides, so that the comparison is the data's alone. It must be
    a whole number: :func:`improvement_probability` sums over the before-side's failures."""
    prior_passes: float = 1.0
    credible_mass: float = 0.95
    """Mass of the equal-tailed credible interval reported, and read for the after-rate's
    upper bound."""
    verified_probability: float = 0.95
    """Verified needs the after-rate lower than the before-rate with at least this chance..."""
    verified_ratio: float = 0.5
    """...and the after-rate's upper bound under this share of the before-rate..."""
    verified_floor: float = 0.01
    """...or under this rate, whatever the before-rate."""
    ineffective_probability: float = 0.5
    """Ineffective: the after-rate is lower with less than this chance..."""
    ineffective_min_runs: int = 30
    """...once at least this many runs after the merge say so."""
    max_clean_runs: int = 1000
    """The most clean runs :func:`fix_effect` will count towards proof (the after window's
    size); needing more is reported as unreachable."""

    @property
    def upper_tail(self) -> float:
        return 1.0 - (1.0 - self.credible_mass) / 2.0


FIX_PROOF = FixProofConfig()


@dataclass(frozen=True, slots=True)
class RateEstimate:
    """A failure rate from ``failures`` of ``runs``: posterior mean and credible interval."""

    runs: int
    failures: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class FixEffect:
    """The verdict on a fix: the two rates, the chance the after-rate is the lower, and how
    many more consecutive clean runs would verify it (None once verified or decided
    ineffective, or when no number up to ``max_clean_runs`` would)."""

    verdict: FixVerdict
    probability_improved: float
    before: RateEstimate
    after: RateEstimate
    clean_runs_needed: int | None
    reason: str


def rate_estimate(runs: int, failures: int, config: FixProofConfig = FIX_PROOF) -> RateEstimate:
    """The Beta posterior of a failure rate after ``failures`` of ``runs`` failed."""
    if not 0 <= failures <= runs:
        raise ValueError(f"failures ({failures}) must be between 0 and runs ({runs})")
    a = config.prior_failures + failures
    b = config.prior_passes + runs - failures
    tail = 1.0 - config.upper_tail
    return RateEstimate(
        runs,
        failures,
        a / (a + b),
        _beta_quantile(tail, a, b),
        _beta_quantile(config.upper_tail, a, b),
    )


def improvement_probability(
    before: tuple[int, int], after: tuple[int, int], config: FixProofConfig = FIX_PROOF
) -> float:
    """P(after-rate < before-rate) under the two Beta posteriors, from (runs, failures) of
    each side: exact, by the finite sum for P(X > Y) with X ~ Beta(a1, b1) of whole ``a1``
    (Evan Miller, "Formulas for Bayesian A/B testing"), in logs. Deterministic, and a few
    hundred terms at most (the before window is bounded)."""
    a1 = config.prior_failures + before[1]
    b1 = config.prior_passes + before[0] - before[1]
    a2 = config.prior_failures + after[1]
    b2 = config.prior_passes + after[0] - after[1]
    if a1 != int(a1):
        raise ValueError("the before-side prior must give a whole number of failures")
    base = _log_beta(a2, b2)
    total = 0.0
    for i in range(int(a1)):
        total += math.exp(
            _log_beta(a2 + i, b1 + b2) - math.log(b1 + i) - _log_beta(1.0 + i, b1) - base
        )
    return min(max(total, 0.0), 1.0)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def fix_effect(
    before: tuple[int, int], after: tuple[int, int], config: FixProofConfig = FIX_PROOF
) -> FixEffect:
    """Judge a fix from (runs, failures) on the mainline before its merge and after it.

    Verified: the after-rate is lower with probability at least ``verified_probability``,
    and its credible upper bound is under ``verified_ratio`` of the before-rate (posterior
    mean) or under ``verified_floor``. A fixed count of green runs is no proof: 20 passes in
    a row of a test failing 10% of runs happen by chance 12% of the time (0.9 ** 20), which
    the posterior accounts for. Ineffective: at least ``ineffective_min_runs`` runs after,
    and the after-rate lower with probability under ``ineffective_probability``. Pending
    otherwise, with the clean runs that would verify it.
    """
    verdict, probability, before_rate, after_rate = _judge(before, after, config)
    if verdict == "verified":
        reason = (
            f"failure rate {before_rate.rate:.1%} before, {after_rate.rate:.1%} after "
            f"(upper bound {after_rate.high:.1%}); lower with probability {probability:.1%}"
        )
        return FixEffect(verdict, probability, before_rate, after_rate, None, reason)
    if verdict == "ineffective":
        reason = (
            f"{after[0]} runs since the merge fail at {after_rate.rate:.1%} against "
            f"{before_rate.rate:.1%} before; lower with probability only {probability:.1%}"
        )
        return FixEffect(verdict, probability, before_rate, after_rate, None, reason)
    needed = clean_runs_needed(before, after, config)
    reason = (
        f"{needed} more clean run{'' if needed == 1 else 's'} would verify it"
        if needed is not None
        else f"no {config.max_clean_runs - after[0]} more clean runs would prove an "
        f"improvement over {before[1]} failures in {before[0]} runs before the merge"
    )
    return FixEffect(verdict, probability, before_rate, after_rate, needed, reason)


def _judge(
    before: tuple[int, int], after: tuple[int, int], config: FixProofConfig
) -> tuple[FixVerdict, float, RateEstimate, RateEstimate]:
    before_rate = rate_estimate(*before, config)
    after_rate = rate_estimate(*after, config)
    probability = improvement_probability(before, after, config)
    bound = max(before_rate.rate * config.verified_ratio, config.verified_floor)
    verdict: FixVerdict = "pending"
    if probability >= config.verified_probability and after_rate.high < bound:
        verdict = "verified"
    elif after[0] >= config.ineffective_min_runs and probability < config.ineffective_probability:
        verdict = "ineffective"
    return verdict, probability, before_rate, after_rate


def _verified_after(
    before: tuple[int, int], after: tuple[int, int], clean: int, config: FixProofConfig
) -> bool:
    return _judge(before, (after[0] + clean, after[1]), config)[0] == "verified"


def clean_runs_needed(
    before: tuple[int, int], after: tuple[int, int], config: FixProofConfig = FIX_PROOF
) -> int | None:
    """The fewest further consecutive passing runs after which :func:`fix_effect` says
    verified, or None when more than ``max_clean_runs`` runs after the merge would be
    needed (a test that never failed before cannot be shown to fail less). Clean runs only
    raise the improvement probability and lower the upper bound, so the answer is found by
    bisection."""
    room = config.max_clean_runs - after[0]
    if room < 0 or not _verified_after(before, after, room, config):
        return None
    low, high = -1, room  # not verified after ``low`` more, verified after ``high``
    while high - low > 1:
        middle = (low + high) // 2
        if _verified_after(before, after, middle, config):
            high = middle
        else:
            low = middle
    return high


def resolve_fixed(
    state: TestState, at: datetime, reason: str, config: DetectionConfig = DEFAULT_CONFIG
) -> tuple[TestState, Transition | None]:
    """A verified fix resolves a flaky test now, without the quiet period a flaky test
    otherwise waits out (:attr:`DetectionConfig.resolve_after`): the mainline's runs since
    the merge already proved the rate fell. As when a test resolves by itself, the
    posterior of ``q`` restarts from the prior plus the clean runs since the last flake.
    A test failing in a streak right now, or not flaky, is left as it is."""
    if state.verdict != "flaky" or state.streak is not None:
        return state, None
    new = _copy(state)
    new.flaky_since = None
    new.alpha = config.prior_failures
    new.beta = config.prior_passes + state.clean_runs_since_flaky
    new.verdict = "healthy"
    new.verdict_since = at
    return new, Transition("flaky", "healthy", at, reason, ())
