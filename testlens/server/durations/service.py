"""Duration history and prediction: which environment answers, each test's samples, and the
predicted p50/p90 of any list of tests.

Requested tests are tied to stored ones by :func:`testlens.core.identity.match_tests`,
whatever report format either side came from, and predicted by
:func:`testlens.core.durations.predict`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ...core.durations import Estimate, Sample, predict
from ...core.identity import TestKey, match_tests, pytest_nodeid
from ..database import Database
from ..scoping import find_repo
from . import queries
from .schemas import DurationsListing, PredictedTest


@dataclass(frozen=True, slots=True)
class History:
    test_id: str
    samples: list[Sample]


def history(
    session: Session, repo_id: str | None, requested: str
) -> tuple[str, dict[TestKey, History]]:
    """The environment that answers for ``requested``, and every test with duration samples
    in it (a test only ever skipped has a state but no samples). No repository, no history.

    The environment is ``requested`` itself, or ``""`` when that is all the repository has:
    runs that named no environment stand for every environment. A sample's age is its
    distance from the newest one, as ``test_states.durations`` lists them oldest first.
    """
    if repo_id is None:
        return requested, {}
    environment = requested
    if not (
        queries.has_states(session, repo_id, requested)
        or queries.has_states(session, repo_id, None)
    ):
        environment = ""
    found: dict[TestKey, History] = {}
    for row in queries.history_rows(session, repo_id, environment):
        pairs = json.loads(row.durations)
        newest = len(pairs) - 1
        samples = [
            Sample(duration, newest - index, bool(censored))
            for index, (duration, censored) in enumerate(pairs)
        ]
        if samples:
            key = TestKey(row.file, row.suite, row.classname, row.name)
            found[key] = History(row.test_id, samples)
    return environment, found


def predictions(known: dict[TestKey, History], tests: Sequence[TestKey]) -> dict[TestKey, Estimate]:
    """Estimates for ``tests`` from the history they match; unmatched tests fall back as
    ``predict`` does (file, suite, repository, default)."""
    matched = match_tests(tests, known.keys())
    estimates = predict(
        [matched.get(test, test) for test in tests],
        {key: stored.samples for key, stored in known.items()},
    )
    return {test: estimates[matched.get(test, test)] for test in tests}


def listing(database: Database, tenant_id: str, repo: str, environment: str) -> DurationsListing:
    """Predicted duration of every test with history in one environment of a repository."""
    with database.read() as session:
        repo_id = find_repo(session, tenant_id, repo).id
        environment, known = history(session, repo_id, environment)
    estimates = predictions(known, list(known))
    return DurationsListing(
        repo=repo,
        environment=environment,
        tests=[
            PredictedTest(
                id=stored.test_id,
                file=key.file,
                suite=key.suite,
                classname=key.classname,
                name=key.name,
                nodeid=pytest_nodeid(key),
                p50_ms=estimates[key].p50_ms,
                p90_ms=estimates[key].p90_ms,
                samples=estimates[key].samples,
            )
            for key, stored in sorted(known.items())
        ],
    )
