"""The work queue of orchestrated runs: creating a run, handing out its work as leases,
taking leases back from workers that stop answering, and cancelling.

What goes out next, how much one claim takes, when a straggling claim gets a second worker
and how many retries an item may use are :mod:`testlens.core.queue`'s rules; this module
keeps the queue's state in the database so that any number of server processes share it.
A claim is one short transaction: on SQLite under the database's write lock, on PostgreSQL
under an advisory lock of its run (claims of one run are served one at a time, each sizing
its batch from what the previous ones left) and with ``FOR UPDATE SKIP LOCKED`` on the
items, so two processes never hand out one item.

A lease lapses when it is not renewed for ``lease_seconds``: its items without a result go
back to the front of the queue, and an item put back more than :data:`MAX_REQUEUES` times
is lost (a failed result with the reason), so that one test which kills its machines cannot
stall the run. Lapsed leases are taken back by every claim of their run and by the sweeper
(:mod:`.tasks`), which also fails runs that no worker has called for their inactivity
timeout.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ...core.identity import TestKey, match_tests, pytest_nodeid
from ...core.queue import (
    QueueItem,
    allocate_retries,
    batch_size,
    order,
    retry_budget_ms,
    straggler_after_ms,
    take_batch,
)
from ...core.sharding import plan_shards
from ..database import Database
from ..durations.service import history, predictions
from ..errors import ApiError, ErrorCode
from ..ingest.queries import repository_id
from ..models import Build, Lease, Repository, TestCase, WorkItem, utcnow
from ..models.builds import FINISHED
from ..settings import Settings
from . import builds, events
from .schemas import ClaimRequest, OpenRunRequest, OrchestrateRequest
from .shard_plans import list_conflict

MAX_REQUEUES = 2
"""An item put back after a lapsed lease more than this many times is lost."""
OVERHEAD_WEIGHT = 0.3
"""Weight of the newest batch in the run's measured per-batch overhead (a moving average)."""
MIN_RETRY_BUDGET_MS = 60_000.0
"""Retries a run may spend at least, whatever its size: a share of a small run's predicted
time would not cover one retry of one flaky test."""


def invalid(message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(ErrorCode.INVALID_PARAMETERS, message, details)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The settings the queue runs by."""

    lease_seconds: float
    heartbeat_seconds: float
    inactivity_seconds: float
    max_waiting_items: int
    max_active_runs: int

    @classmethod
    def of(cls, settings: Settings) -> QueueConfig:
        return cls(
            settings.lease_seconds,
            settings.heartbeat_seconds,
            settings.run_inactivity_seconds,
            settings.queue_max_waiting_items,
            settings.queue_max_active_runs,
        )

    @property
    def retry_after(self) -> float:
        """Seconds a worker with nothing to do waits before asking again: soon enough to
        pick up a lapsed lease's items within a fraction of the lease."""
        return round(max(0.2, min(5.0, self.lease_seconds / 6)), 1)


# Creating a run -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Planned:
    """One item before it is stored."""

    file: str
    tests: list[str] | None
    test_count: int
    p50_ms: float
    p90_ms: float
    flake_rate: float
    recently_failed: bool
    retry_ms: float | None


def _requested(body: OrchestrateRequest) -> dict[str, list[str] | None]:
    """Each file to run and its listed tests (None: the whole file), in request order."""
    files: dict[str, list[str] | None] = {}
    for path in (file.removeprefix("./") for file in body.testFiles):
        if path in files:
            raise invalid(f"testFiles lists {path!r} twice", {"field": "testFiles"})
        files[path] = None
    seen: set[str] = set()
    for test in body.tests or ():
        if test in seen:
            raise invalid(f"tests lists {test!r} twice", {"field": "tests"})
        seen.add(test)
        file = TestKey.from_nodeid(test.removeprefix("./")).file
        listed = files.get(file)
        if listed is None:
            files[file] = listed = []
        listed.append(test)
    return files


def _tests_hash(files: dict[str, list[str] | None]) -> str:
    return builds.build_key(
        *sorted(
            file if tests is None else "\x1e".join([file, *tests]) for file, tests in files.items()
        )
    )


def _plan_items(
    session: Session, repo_id: str | None, environment: str, files: dict[str, list[str] | None]
) -> list[_Planned]:
    """Each file's (or its listed tests') predicted duration, flakiness and test count.

    Listed tests find their history and their state however the stored tests were reported
    (:func:`~testlens.core.identity.match_tests`: a node id matches pytest's own JUnit XML);
    a whole file gets the states of every stored test in it."""
    _, known = history(session, repo_id, environment)
    by_file: dict[str, list[TestKey]] = {}
    for key in known:
        by_file.setdefault(key.location, []).append(key)
    states = _unhealthy(session, repo_id)
    states_by_file: dict[str, list[State]] = {}
    for key, state in states.items():
        states_by_file.setdefault(key.location, []).append(state)
    planned = []
    for file, tests in files.items():
        if tests is None:
            keys = by_file.get(file) or [TestKey.from_nodeid(file)]
            found = states_by_file.get(file, [])
            flaky = [key for key in keys if key in states and states[key].flake_rate > 0]
        else:
            keys = [TestKey.from_nodeid(test) for test in tests]
            matched = match_tests(keys, states.keys())
            found = [states[stored] for stored in matched.values()]
            flaky = [key for key, stored in matched.items() if states[stored].flake_rate > 0]
        estimates = predictions(known, keys)
        planned.append(
            _Planned(
                file,
                tests,
                len(tests) if tests is not None else len(by_file.get(file, ())) or 1,
                sum(estimate.p50_ms for estimate in estimates.values()),
                sum(estimate.p90_ms for estimate in estimates.values()),
                max((state.flake_rate for state in found), default=0.0),
                any(state.broken for state in found),
                # A retry reruns the flaky tests; of a whole file whose flaky tests have no
                # duration history here, all of it.
                sum(estimates[key].p50_ms for key in flaky) if flaky else None,
            )
        )
    return planned


class State(NamedTuple):
    """What queue order and retries need of a test that is not healthy."""

    flake_rate: float  # the chance that one attempt fails on good code, if flaky
    broken: bool


def _unhealthy(session: Session, repo_id: str | None) -> dict[TestKey, State]:
    """The states of the repository's tests that are not healthy, by identity."""
    if repo_id is None:
        return {}
    rows = session.execute(
        select(
            TestCase.file,
            TestCase.suite,
            TestCase.classname,
            TestCase.name,
            TestCase.state,
            TestCase.flake_score,
        ).where(TestCase.repo_id == repo_id, TestCase.state != "healthy")
    )
    return {
        TestKey(file, suite, classname, name): State(
            min(1.0, score) if state in ("flaky", "quarantined") else 0.0, state == "broken"
        )
        for file, suite, classname, name, state, score in rows
    }


def _plan_response(build: Build, items: Sequence[WorkItem]) -> dict[str, Any]:
    counts: Counter[int] = Counter()
    durations: dict[int, float] = {}
    for item in items:
        counts[item.shard] += item.test_count
        durations[item.shard] = durations.get(item.shard, 0.0) + item.p50_ms
    return {
        "runId": build.id,
        "status": build.status,
        "workerCount": build.worker_count,
        "totalTests": build.planned_tests,
        "shards": [
            {
                "index": index,
                "testCount": counts[index],
                "estimatedDuration": round(durations.get(index, 0.0), 3),
            }
            for index in range(build.worker_count)
        ],
    }


def _run_key(tenant_id: str, body: OrchestrateRequest) -> str | None:
    if body.ciBuildId is None:
        return None
    return builds.build_key(
        "orchestrate", (body.project or "").lower(), body.environment or "", body.ciBuildId
    )


def _check_same_list(
    session: Session, build: Build, files: dict[str, list[str] | None], tests_hash: str
) -> None:
    """Refuse a machine whose list differs from the run's, naming how (409)."""
    if build.tests_hash == tests_hash:
        return
    stored: dict[str, list[str] | None] = {}
    for file, tests in session.execute(
        select(WorkItem.file, WorkItem.tests).where(WorkItem.build_id == build.id)
    ):
        stored[file] = json.loads(tests) if tests is not None else None
    here = {test for file, tests in files.items() for test in (tests or [file])}
    there = {test for file, tests in stored.items() for test in (tests or [file])}
    raise list_conflict(
        here,
        there,
        lead=f"This machine lists {len(here)} files or tests, but run {build.id} of this "
        f"ciBuildId has {len(there)}",
        where="run",
        rule="Every machine of a CI build must list the same tests.",
        details={"runId": build.id},
    )


def _check_capacity(session: Session, tenant_id: str, new_items: int, config: QueueConfig) -> None:
    active = session.scalar(
        select(func.count()).where(
            Build.tenant_id == tenant_id,
            Build.kind != builds.UPLOADS,
            Build.status.in_(("pending", "running")),
        )
    )
    waiting = session.scalar(
        select(func.count())
        .select_from(WorkItem)
        .join(Build, Build.id == WorkItem.build_id)
        .where(Build.tenant_id == tenant_id, WorkItem.status == "waiting")
    )
    problem = None
    if (active or 0) >= config.max_active_runs:
        problem = (
            f"{active} orchestrated runs are pending or running "
            f"(the cap is {config.max_active_runs})"
        )
    elif (waiting or 0) + new_items > config.max_waiting_items:
        problem = (
            f"{waiting} items wait and this run adds {new_items} "
            f"(the cap is {config.max_waiting_items})"
        )
    if problem is not None:
        raise ApiError(
            ErrorCode.QUEUE_FULL,
            f"The queue is full: {problem}; retry later",
            {"active_runs": active, "waiting_items": waiting},
            headers={"Retry-After": "30"},
        )


def create(
    database: Database, tenant_id: str, body: OrchestrateRequest, config: QueueConfig
) -> tuple[dict[str, Any], bool]:
    """The run's plan (an ``OrchestrateResponse``) and whether the run is new. With a
    ``ciBuildId`` the CI build's existing run is answered, if its list is the same."""
    files = _requested(body)
    key, tests_hash = _run_key(tenant_id, body), _tests_hash(files)
    if key is not None:
        with database.read() as session:
            found = _keyed(session, tenant_id, key)
            if found is not None:
                _check_same_list(session, found, files, tests_hash)
                return _plan_response(found, _items(session, found.id)), False
    try:
        return _create(database, tenant_id, body, config, files, key, tests_hash), True
    except IntegrityError:  # another machine of the CI build created the run first
        with database.read() as session:
            found = _keyed(session, tenant_id, key or "")
            if found is None:
                raise
            _check_same_list(session, found, files, tests_hash)
            return _plan_response(found, _items(session, found.id)), False


def _keyed(session: Session, tenant_id: str, key: str) -> Build | None:
    return session.scalar(select(Build).where(Build.tenant_id == tenant_id, Build.build_key == key))


def _items(session: Session, build_id: str) -> list[WorkItem]:
    return list(
        session.scalars(
            select(WorkItem).where(WorkItem.build_id == build_id).order_by(WorkItem.position)
        )
    )


def _create(
    database: Database,
    tenant_id: str,
    body: OrchestrateRequest,
    config: QueueConfig,
    files: dict[str, list[str] | None],
    key: str | None,
    tests_hash: str,
) -> dict[str, Any]:
    now = utcnow()
    with database.transaction() as session:
        _check_capacity(session, tenant_id, len(files), config)
        repo_id = (
            repository_id(database, session, tenant_id, body.project) if body.project else None
        )
        planned = _plan_items(session, repo_id, body.environment or "", files)
        queue = [
            QueueItem(
                str(index),
                plan.p50_ms,
                max(plan.p90_ms, plan.p50_ms),
                flake_rate=plan.flake_rate,
                recently_failed=plan.recently_failed,
                retry_ms=plan.retry_ms,
            )
            for index, plan in enumerate(planned)
        ]
        retries = allocate_retries(queue, max(MIN_RETRY_BUDGET_MS, retry_budget_ms(queue)))
        shards = plan_shards(
            {TestKey(item.id, "", "", ""): item.predicted_ms for item in queue}, body.workerCount
        )
        shard_of = {key.file: index for index, shard in enumerate(shards.shards) for key in shard}
        build = Build(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            repo_id=repo_id,
            build_key=key,
            kind=body.strategy,
            status="pending",
            branch=body.branch,
            commit_sha=body.commitSha,
            environment=body.environment or "",
            meta=json.dumps(body.metadata or {}),
            worker_count=body.workerCount,
            tests_hash=tests_hash,
            planned_tests=sum(plan.test_count for plan in planned),
            tests=0,
            passed=0,
            failed=0,
            flaky=0,
            skipped=0,
            duration_ms=0.0,
            overhead_ms=0.0,
            created_at=now,
            active_at=now,
        )
        session.add(build)
        session.flush()
        items = [
            WorkItem(
                build_id=build.id,
                position=position,
                file=planned[int(item.id)].file,
                tests=_json_list(planned[int(item.id)].tests),
                test_count=planned[int(item.id)].test_count,
                p50_ms=item.predicted_ms,
                p90_ms=item.p90_ms,
                retries=retries[item.id],
                shard=shard_of[item.id],
                status="waiting",
                front=False,
                requeues=0,
            )
            for position, item in enumerate(order(queue))
        ]
        session.add_all(items)
        return _plan_response(build, items)


def _json_list(values: list[str] | None) -> str | None:
    return None if values is None else json.dumps(values)


# Claims, heartbeats, releases -----------------------------------------------------------------


def _stop(build: Build) -> ApiError:
    if build.status == "cancelled":
        return ApiError(
            ErrorCode.RUN_CANCELLED, f"Run {build.id} was cancelled: stop", {"runId": build.id}
        )
    return ApiError(
        ErrorCode.RUN_FINISHED,
        f"Run {build.id} is {build.status}: every item has a result",
        {"runId": build.id, "status": build.status},
    )


def claim(
    database: Database, tenant_id: str, run_id: str, body: ClaimRequest, config: QueueConfig
) -> dict[str, Any]:
    """The next batch for a worker (a ``ClaimResponse``), or 409 when it should stop.

    A claim repeated with its ``batchId`` answers the same batch. When two claims with one
    new ``batchId`` race, one stores the lease and the other answers it on its retry."""
    try:
        return _claim(database, tenant_id, run_id, body, config)
    except IntegrityError:
        return _claim(database, tenant_id, run_id, body, config)


def _claim(
    database: Database, tenant_id: str, run_id: str, body: ClaimRequest, config: QueueConfig
) -> dict[str, Any]:
    now = utcnow()
    stop: ApiError | None = None
    with database.transaction() as session:
        build = builds.tenant_build(session, tenant_id, run_id)
        # Claims of one run wait for each other: each sizes its batch from what is still
        # waiting, which a concurrent claim would otherwise count too (two workers starting
        # together would each take half the queue, and batches would not shrink).
        database.one_at_a_time(session, f"claims:{build.id}")
        lease = _lease(session, build.id, body.batchId)
        if lease is not None:
            return _claimed(session, build, lease, config)
        if body.rerun is not None:
            if body.nodeIndex is None:
                raise invalid("rerun needs the nodeIndex of the retried CI job")
            lease = _rerun(session, build, body, config, now)
        elif build.kind == "static" and body.nodeIndex is None:
            raise invalid("a static run hands out work by node: send nodeIndex")
        elif build.status in FINISHED:
            raise _stop(build)
        else:
            expire(session, config, now, build.id)
            lease = _next_batch(session, build, body, config, now)
        if lease is None:
            if builds.items_in(session, build.id, "leased") and build.status not in FINISHED:
                # Work held elsewhere may come back to the queue: stay until it is done.
                return {"status": "wait", "retryAfter": config.retry_after}
            if not builds.finish_if_drained(session, build, now):
                stop = ApiError(  # a static run's node whose share is done
                    ErrorCode.RUN_FINISHED,
                    f"Node {body.nodeIndex} of run {build.id} has run its share; other nodes "
                    "run theirs",
                    {"runId": build.id, "status": build.status},
                )
            else:
                stop = _stop(build)
        else:
            if not lease.rerun and not lease.speculative and _first_of_worker(session, lease):
                _announce_start(session, build, lease, now)
            if build.status == "pending":
                build.status, build.started_at = "running", now
            build.active_at = now
            return _claimed(session, build, lease, config)
    raise stop


def _first_of_worker(session: Session, lease: Lease) -> bool:
    """Whether ``lease`` is the first its worker (by name and node) claimed in its run."""
    earlier = session.scalar(
        select(func.count()).where(
            Lease.build_id == lease.build_id,
            Lease.id != lease.id,
            Lease.worker == lease.worker,
            Lease.node_index == lease.node_index
            if lease.node_index is not None
            else Lease.node_index.is_(None),
        )
    )
    return not earlier


def _announce_start(session: Session, build: Build, lease: Lease, now: datetime) -> None:
    """Log ``run:start`` for a worker's first batch: the run has started on its shard."""
    _run_start(session, build, now, build.planned_tests, lease.node_index or 0, build.worker_count)


def _run_start(
    session: Session, build: Build, now: datetime, tests: int, shard: int, shards: int
) -> None:
    payload = {"runId": build.id, "totalTests": tests, "shardIndex": shard, "totalShards": shards}
    events.append(session, build.tenant_id, build.id, [("run:start", payload)], now)


def open_run(
    database: Database, tenant_id: str, body: OpenRunRequest
) -> tuple[dict[str, Any], bool]:
    """The run (a build of plain uploads) a test runner publishes live events to before it
    uploads: its CI build's (``ciBuildId``), or a new one; whether it is new. With
    ``totalTests``, ``run:start`` is logged for the caller's shard."""
    now = utcnow()
    with database.transaction() as session:
        repo_id = repository_id(database, session, tenant_id, body.project)
        build_id, new = builds.open_uploads_build(
            database,
            session,
            tenant_id,
            repo_id,
            workflow_run_id=body.ciBuildId,
            branch=body.branch,
            commit=body.commitSha,
            environment=body.environment,
            now=now,
        )
        build = builds.tenant_build(session, tenant_id, build_id)
        if body.totalTests is not None:
            _run_start(session, build, now, body.totalTests, body.shardIndex, body.totalShards)
        return {"runId": build.id, "status": build.status}, new


def _lease(session: Session, build_id: str, batch_id: str) -> Lease | None:
    return session.scalar(
        select(Lease).where(Lease.build_id == build_id, Lease.batch_id == batch_id)
    )


def _queue_item(item: WorkItem) -> QueueItem:
    return QueueItem(str(item.id), item.p50_ms, item.p90_ms)


def _next_batch(
    session: Session, build: Build, body: ClaimRequest, config: QueueConfig, now: datetime
) -> Lease | None:
    """A new lease on the next items (``core.queue``'s batch of the waiting ones), or a
    speculative copy of a straggling lease once nothing waits; None if neither."""
    waiting = WorkItem.build_id == build.id, WorkItem.status == "waiting"
    own: tuple[Any, ...] = ()
    if build.kind == "static":
        # A node runs its own shard, then what lapsed leases of other nodes put back.
        own = ((WorkItem.shard == body.nodeIndex) | WorkItem.front,)
    remaining_p90, remaining = session.execute(
        select(func.coalesce(func.sum(WorkItem.p90_ms), 0.0), func.count()).where(*waiting, *own)
    ).one()
    if remaining:
        size = batch_size(
            float(remaining_p90), int(remaining), build.worker_count, build.overhead_ms
        )
        rows = list(
            session.scalars(
                select(WorkItem)
                .where(*waiting, *own)
                .order_by(WorkItem.front.desc(), WorkItem.position)
                .limit(size.items)
                .with_for_update(skip_locked=True)
            )
        )
        chosen = {item.id for item in take_batch((_queue_item(row) for row in rows), size)}
        batch = [row for row in rows if str(row.id) in chosen]
        if batch:
            return _new_lease(session, build, body, config, now, batch, speculative=False)
    return _speculate(session, build, body, config, now)


def _new_lease(
    session: Session,
    build: Build,
    body: ClaimRequest,
    config: QueueConfig,
    now: datetime,
    items: Sequence[WorkItem],
    *,
    speculative: bool,
    rerun: bool = False,
) -> Lease:
    lease = Lease(
        id=str(uuid.uuid4()),
        build_id=build.id,
        batch_id=body.batchId,
        worker=body.worker or "",
        node_index=body.nodeIndex,
        state="active",
        speculative=speculative,
        rerun=rerun,
        attempt=body.attempt,
        items=json.dumps([item.id for item in items]),
        claimed_at=now,
        expires_at=now + timedelta(seconds=config.lease_seconds),
    )
    session.add(lease)
    session.flush()  # a second lease with this batchId fails here, before items change
    for item in items:
        if rerun:
            continue
        if speculative:
            item.copy_lease_id = lease.id
        else:
            item.status, item.lease_id, item.node_index = "leased", lease.id, body.nodeIndex
    return lease


def _speculate(
    session: Session, build: Build, body: ClaimRequest, config: QueueConfig, now: datetime
) -> Lease | None:
    """A copy of the most overdue straggling lease for an idle worker (see
    :func:`testlens.core.queue.straggler_after_ms`); the first result of an item counts."""
    if build.kind == "static":
        return None
    running = session.scalars(
        select(Lease).where(
            Lease.build_id == build.id,
            Lease.state == "active",
            Lease.speculative.is_(False),
            Lease.rerun.is_(False),
        )
    )
    overdue: list[tuple[float, Lease, list[WorkItem]]] = []
    for lease in running:
        if body.worker and lease.worker == body.worker:
            continue
        items = [
            item
            for item in session.scalars(
                select(WorkItem).where(WorkItem.id.in_(json.loads(lease.items)))
            )
            if item.status == "leased" and item.lease_id == lease.id and item.copy_lease_id is None
        ]
        if not items:
            continue
        late = (now - lease.claimed_at).total_seconds() * 1000 - straggler_after_ms(
            _queue_item(item) for item in items
        )
        if late > 0:
            overdue.append((late, lease, items))
    if not overdue:
        return None
    _, _, items = max(overdue, key=lambda found: found[0])
    return _new_lease(session, build, body, config, now, items, speculative=True)


def _rerun(
    session: Session, build: Build, body: ClaimRequest, config: QueueConfig, now: datetime
) -> Lease | None:
    """A retried CI job's items, once per attempt: those its node ran whose tests failed
    (or were lost), or all of them with ``rerun: "all"``."""
    if build.status not in FINISHED or build.status == "cancelled":
        raise invalid(
            f"run {build.id} is {build.status}: only a finished run's CI jobs can be rerun"
        )
    done_before = session.scalar(
        select(func.count()).where(
            Lease.build_id == build.id,
            Lease.rerun.is_(True),
            Lease.node_index == body.nodeIndex,
            Lease.attempt == body.attempt if body.attempt is not None else Lease.attempt.is_(None),
        )
    )
    if done_before:
        return None
    items = list(
        session.scalars(
            select(WorkItem)
            .where(WorkItem.build_id == build.id, WorkItem.node_index == body.nodeIndex)
            .order_by(WorkItem.position)
        )
    )
    if body.rerun == "failed":
        failing = _failing_tests(session, build.id)
        items = [item for item in items if item.status == "lost" or _item_failed(item, failing)]
    if not items:
        return None
    return _new_lease(session, build, body, config, now, items, speculative=False, rerun=True)


def _failing_tests(session: Session, build_id: str) -> tuple[set[str], set[str]]:
    """The files and the pytest-style ids of the build's tests that failed."""
    failed = [
        tid
        for tid, outcome in builds.outcomes(session, build_id).items()
        if outcome.status in ("failed", "error")
    ]
    files, ids = set(), set()
    for start in range(0, len(failed), 5000):
        rows = session.execute(
            select(TestCase.file, TestCase.suite, TestCase.classname, TestCase.name).where(
                TestCase.id.in_(failed[start : start + 5000])
            )
        )
        for row in rows:
            key = TestKey(*row)
            files.add(key.location)
            ids.add(pytest_nodeid(key))
    return files, ids


def _item_failed(item: WorkItem, failing: tuple[set[str], set[str]]) -> bool:
    files, ids = failing
    if item.tests is None:
        return item.file in files
    return any(test in ids for test in json.loads(item.tests))


def _claimed(session: Session, build: Build, lease: Lease, config: QueueConfig) -> dict[str, Any]:
    ids = json.loads(lease.items)
    items = {
        item.id: item for item in session.scalars(select(WorkItem).where(WorkItem.id.in_(ids)))
    }
    project = None
    if build.repo_id is not None:
        project = session.scalar(select(Repository.name).where(Repository.id == build.repo_id))
    return {
        "status": "claimed",
        "batchId": lease.batch_id,
        "items": [
            {
                "id": item.id,
                "file": item.file,
                "tests": json.loads(item.tests) if item.tests is not None else None,
                "retries": item.retries,
                "estimatedDuration": round(item.p50_ms, 3),
            }
            for item in (items[i] for i in ids)
        ],
        "project": project,
        "environment": build.environment or None,
        "leaseSeconds": config.lease_seconds,
        "heartbeatSeconds": config.heartbeat_seconds,
    }


def _known_lease(session: Session, build: Build, batch_id: str) -> Lease:
    lease = _lease(session, build.id, batch_id)
    if lease is None:
        raise invalid(f"No batch {batch_id!r} was claimed in run {build.id}", {"batchId": batch_id})
    return lease


def heartbeat(
    database: Database, tenant_id: str, run_id: str, batch_id: str, config: QueueConfig
) -> dict[str, Any]:
    """Renew a lease. ``expired``: its items went back to the queue (finish and upload
    anyway: the first result counts); ``cancelled``: finish this batch and claim no more."""
    now = utcnow()
    with database.transaction() as session:
        build = builds.tenant_build(session, tenant_id, run_id)
        lease = _known_lease(session, build, batch_id)
        status = {"active": "active", "expired": "expired"}.get(lease.state, "done")
        if lease.state == "active":
            lease.expires_at = now + timedelta(seconds=config.lease_seconds)
            build.active_at = now
        if build.status == "cancelled" and lease.state == "active":
            status = "cancelled"
        return {"status": status, "leaseSeconds": config.lease_seconds}


def release(database: Database, tenant_id: str, run_id: str, batch_id: str) -> int:
    """Put a lease's items without a result back at the front of the queue at once (a
    worker that is stopped says so rather than letting its lease lapse). How many."""
    with database.transaction() as session:
        build = builds.tenant_build(session, tenant_id, run_id)
        lease = _known_lease(session, build, batch_id)
        if lease.state != "active":
            return 0
        lease.state = "released"
        released = _give_back(session, lease, lost_after=None)
        build.active_at = utcnow()
        return released


def _give_back(session: Session, lease: Lease, lost_after: int | None) -> int:
    """Items of ``lease`` still running under it go back to the front of the queue (or, with
    ``lost_after``, are lost once requeued more often). Returns how many went back."""
    back = 0
    items = select(WorkItem).where(WorkItem.id.in_(json.loads(lease.items)))
    for item in session.scalars(items.order_by(WorkItem.id)):
        if item.copy_lease_id == lease.id:
            item.copy_lease_id = None
        if item.lease_id != lease.id or item.status != "leased":
            continue
        if item.copy_lease_id is not None:
            # Its speculative copy runs on: it becomes the item's lease.
            item.lease_id, item.copy_lease_id = item.copy_lease_id, None
            continue
        item.lease_id = None
        if lost_after is not None:
            item.requeues += 1
            if item.requeues > lost_after:
                item.status = "lost"
                item.reason = (
                    f"lost: its worker stopped answering {item.requeues} times "
                    f"(last: {lease.worker or 'unnamed worker'}, node {lease.node_index})"
                )
                continue
        item.status, item.front = "waiting", True
        back += 1
    return back


def expire(session: Session, config: QueueConfig, now: datetime, build_id: str | None) -> None:
    """Take back the lapsed leases of one build (or of every build): their items go back
    to the queue, or are lost after :data:`MAX_REQUEUES`; a build left with no open item
    finishes."""
    query = select(Lease).where(Lease.state == "active", Lease.expires_at < now)
    if build_id is not None:
        query = query.where(Lease.build_id == build_id)
    touched = set()
    for lease in session.scalars(query.with_for_update(skip_locked=True)):
        lease.state = "expired"
        _give_back(session, lease, lost_after=MAX_REQUEUES)
        touched.add(lease.build_id)
    session.flush()
    for touched_id in touched:
        builds.settle(session, touched_id, now)


def time_out(session: Session, config: QueueConfig, now: datetime) -> None:
    """Fail the runs idle for their inactivity timeout: orchestrated ones that no worker
    has called (their unfinished items are lost with that reason), and runs opened for
    uploads (``POST /api/v1/runs``) that nothing was uploaded or published to, such as the
    run of a CI job killed before its report."""
    limit = now - timedelta(seconds=config.inactivity_seconds)
    idle = session.scalars(
        select(Build)
        .where(Build.status.in_(("pending", "running")), Build.active_at < limit)
        .with_for_update(skip_locked=True, key_share=True)
    )
    for build in idle:
        if build.kind == builds.UPLOADS:
            # An upload finishes its run: one still running never had one.
            build.status, build.completed_at = "failed", now
            build.reason = (
                f"timed out: nothing was uploaded or published for {config.inactivity_seconds:g} s"
            )
            builds.announce_end(session, build, now)
            continue
        reason = f"no worker called for {config.inactivity_seconds:g} s"
        session.execute(
            update(WorkItem)
            .where(WorkItem.build_id == build.id, WorkItem.status.in_(("waiting", "leased")))
            .values(status="lost", reason=f"lost: {reason}")
        )
        session.execute(
            update(Lease)
            .where(Lease.build_id == build.id, Lease.state == "active")
            .values(state="expired")
        )
        build.reason = f"timed out: {reason}"
        session.flush()
        builds.settle(session, build.id, now)


def complete_batch(
    session: Session, build_id: str, lease_id: str, run_id: str, duration_ms: float, now: datetime
) -> None:
    """An upload reported a batch (the ingest transaction): its items are done, and the
    upload is speculative when every one of them had a result already."""
    lease = session.get(Lease, lease_id)
    assert lease is not None, "the upload's lease was found when it joined its build"
    items = list(
        session.scalars(
            select(WorkItem)
            .where(WorkItem.id.in_(json.loads(lease.items)))
            .order_by(WorkItem.id)  # one order for every locker: no deadlock between them
            .with_for_update()
        )
    )
    first = [item for item in items if item.status != "done"]
    if items and not first and not lease.rerun:
        builds.mark_speculative(session, run_id)
    for item in first:
        if lease.rerun:
            continue
        item.status, item.lease_id, item.copy_lease_id = "done", lease_id, None
        item.reason = None
    if lease.state in ("active", "expired"):
        lease.state = "done"
    if not lease.rerun and not lease.speculative:
        build = session.get(Build, build_id)
        assert build is not None
        elapsed = (now - lease.claimed_at).total_seconds() * 1000
        overhead = max(0.0, elapsed - duration_ms)
        build.overhead_ms = (
            overhead
            if build.overhead_ms == 0
            else (1 - OVERHEAD_WEIGHT) * build.overhead_ms + OVERHEAD_WEIGHT * overhead
        )


def cancel(database: Database, tenant_id: str, run_id: str) -> None:
    """Cancel a run: what waits is removed, what runs finishes and keeps its results."""
    now = utcnow()
    with database.transaction() as session:
        build = builds.tenant_build(session, tenant_id, run_id, lock=True)
        if build.kind == builds.UPLOADS:
            raise invalid(f"run {run_id} is made of uploads, not orchestrated: nothing to cancel")
        if build.status in ("completed", "failed"):
            raise _stop(build)
        if build.status == "cancelled":
            return
        session.execute(
            update(WorkItem)
            .where(WorkItem.build_id == build.id, WorkItem.status == "waiting")
            .values(status="cancelled")
        )
        build.status, build.completed_at, build.reason = "cancelled", now, "cancelled"
        build.duration_ms = (now - (build.started_at or build.created_at)).total_seconds() * 1000
        builds.announce_end(session, build, now)


def queue_stats(database: Database, tenant_id: str) -> dict[str, int]:
    with database.read() as session:
        rows = session.execute(
            select(WorkItem.status, func.count())
            .join(Build, Build.id == WorkItem.build_id)
            .where(Build.tenant_id == tenant_id)
            .group_by(WorkItem.status)
        )
        counts = {status: count for status, count in rows}
    return {
        "waiting": counts.get("waiting", 0),
        "active": counts.get("leased", 0),
        "completed": counts.get("done", 0),
        "failed": counts.get("lost", 0),
    }
