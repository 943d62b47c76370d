"""Queue mode of the pytest plugin (``--testlens-queue``): every CI machine of a build takes
its tests, batch by batch, from the build's orchestrated run (docs/orchestration.md).

Each machine collects, then creates or joins the run with the same list: the CI build's
identity (``ciBuildId``) makes the first machine create it and the others get it, and a
machine whose list differs is stopped (409 ``PLAN_CONFLICT``), because it would run tests
the run does not know and never run some it does. Then, instead of running what it
collected, the machine claims a batch, runs it, uploads its results and claims again until
the run is finished. The batches run in this one pytest process, so session fixtures are set
up once per machine, not once per batch.

What pytest decides per test stays pytest's: items run through the ordinary
``pytest_runtest_protocol`` hook (so other plugins, pytest-rerunfailures included, still
apply), and a machine's exit code is the verdict on the tests it ran. What the queue adds:
retries the server gives a flaky test's item (every attempt recorded and uploaded), a lease
kept alive by a heartbeat thread while a batch runs, and the lease released at once when the
machine is stopped (Ctrl-C, SIGTERM, ``-x``), so that its tests go to another machine rather
than wait out the lease. While a batch runs, each test's start and result are published as
live events, so that watchers see the run before the batch's report is uploaded.

A server that cannot be reached costs balance, never tests. At the start the plugin falls
back to the static split of ``--testlens-shard`` (that is the plugin's business, see
``TestlensPlugin``); that is safe here, unlike with a shard plan, because machines that did
reach the queue run everything the queue holds. A server lost mid-run leaves this machine
its share of that same split, less what it already ran: when every machine loses the
server, each test is run by the machine whose share it is, or already was.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import pytest
from _pytest.runner import runtestprotocol

from ..core.identity import TestKey
from ..core.sharding import GroupBy
from . import ci_env, queue_api
from .http import Budget, Client, ServerError
from .pytest_live import LiveTests, publishing
from .queue_api import (
    RUN_CANCELLED,
    RUN_FINISHED,
    Batch,
    Heartbeat,
    Rerun,
    RunOver,
)
from .sharding import CLIENT_OPTIONS, SERVER_FAILURES, ServerTarget, describe_failure, split_tests

RERUN = "rerun"
"""The outcome of an attempt that failed and is run again, as pytest-rerunfailures names it,
so that the terminal, pytest's JUnit XML and the plugin's upload all read it as one."""

PATIENT_OPTIONS: dict[str, Any] = {**CLIENT_OPTIONS, "attempts": 8, "max_delay": 10.0}
"""Retries for claims: a server restarting for a deploy should cost a pause, not the
fallback, so a claim tries for as long as its time budget lets it, not the second or so that
ends the plugin's other calls."""
HEARTBEAT_TIMEOUT = 10.0
"""Seconds one heartbeat may take at most: a missed one is made up by the next."""
RELEASE_SECONDS = 5.0
"""Seconds a release may take: it runs while the machine is being stopped, and a CI gives a
job only a few seconds between SIGTERM and SIGKILL."""

Upload = Callable[[str, str, Sequence[str], Sequence[str], Budget], None]
"""The plugin's upload of one batch: ``(run id, batch id, node ids that ran, node ids that
were handed out but not collected, budget)``; raises on failure."""


class QueueUnavailable(Exception):
    """The orchestrated run could not be created or joined; the message says why."""


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """How this machine takes part in the build's run, from the options and the CI.

    ``workers`` and ``node_index`` are the CI's parallel node count and this node's index,
    unless given; ``attempt`` is the CI's count of this job's attempts, and ``rerun`` what a
    retried job asks the run for: its own failed work, or all of it.
    """

    ci_build_id: str
    workers: int | None
    node_index: int | None
    attempt: int | None
    rerun: Rerun | None
    worker: str

    @classmethod
    def from_config(cls, config: pytest.Config, env: Mapping[str, str]) -> QueueOptions:
        """The options, checked now: a mistake is a usage error before collection, not a
        surprise after it."""
        option = config.getoption
        if getattr(config.option, "numprocesses", None):
            raise pytest.UsageError(
                "--testlens-queue runs the tests in this pytest process, batch by batch: it "
                "cannot go with pytest-xdist's -n (start one pytest per CPU instead)"
            )
        build_id: str | None = option("testlens_ci_build_id") or ci_env.run_key(env)
        if not build_id:
            raise pytest.UsageError(
                "--testlens-queue needs the CI build's identity, which every machine of the "
                "build shares: this is not a CI the plugin recognises, so pass "
                "--testlens-ci-build-id (e.g. the CI's build or pipeline id)"
            )
        node = ci_env.node(env)
        workers: int | None = option("testlens_workers")
        workers = node.total if workers is None else workers
        node_index: int | None = option("testlens_node_index")
        node_index = node.index if node_index is None else node_index
        if workers is not None and workers < 1:
            raise pytest.UsageError(f"--testlens-workers must be at least 1, not {workers}")
        if node_index is not None and (
            node_index < 0 or (workers is not None and node_index >= workers)
        ):
            raise pytest.UsageError(
                f"--testlens-node-index counts from 0 and stays below the number of machines "
                f"({workers}): not {node_index}"
            )
        rerun: Rerun | None = None
        if node.retried:
            rerun = "all" if option("testlens_fixed") else "failed"
        return cls(
            build_id,
            workers,
            node_index,
            node.attempt,
            rerun,
            f"{socket.gethostname()}:{os.getpid()}",
        )

    @property
    def share(self) -> tuple[int, int] | None:
        """(index, count) of this machine in the static split, where both are known."""
        if self.node_index is None or self.workers is None:
            return None
        return self.node_index, self.workers


@dataclass(frozen=True, slots=True)
class _Batch:
    """One claimed batch as this machine runs it: the collected items, with the retries each
    may use, and the handed-out tests and whole files this machine did not collect."""

    claimed: Batch
    items: tuple[pytest.Item, ...]
    retries: Mapping[str, int]
    uncollected: tuple[str, ...]
    uncollected_files: tuple[str, ...]

    @property
    def id(self) -> str:
        return self.claimed.batch_id


@dataclass(frozen=True, slots=True)
class _Collected:
    """The session's items by node id, by file and in collection order, to find claimed
    tests among."""

    items: Mapping[str, pytest.Item]
    position: Mapping[str, int]
    by_file: Mapping[str, Sequence[str]]

    @classmethod
    def of(cls, items: Sequence[pytest.Item]) -> _Collected:
        by_file: dict[str, list[str]] = {}
        for item in items:
            by_file.setdefault(TestKey.from_nodeid(item.nodeid).file, []).append(item.nodeid)
        return cls(
            {item.nodeid: item for item in items},
            {item.nodeid: index for index, item in enumerate(items)},
            by_file,
        )


class _BatchEnd(pytest.Item):
    """What the last item of a batch is told comes next: a node right below the session.

    ``nextitem`` decides what a test's teardown tears down: everything the next item does not
    share. What the next batch holds is not known until it is claimed, and claiming before
    the batch's last test has run would hold the next batch up for as long as that test runs.
    Told that an item below the session comes next, the teardown takes down the module,
    class and package fixtures (the next batch holds other files anyway: the server never
    splits a file across items) and keeps the session fixtures up for the next batch.
    Without it there are two bad choices: ``None``, which tears down the session fixtures
    after every batch, or the item itself, after which the next item's setup would find
    the previous module still set up.

    The session fixtures are torn down when the session finishes, as pytest does for
    whatever the last teardown left; an error there is pytest's internal error, not a
    test's.
    """

    def runtest(self) -> NoReturn:
        raise NotImplementedError("a batch boundary is not a test")


class QueueRun:
    """This machine's part in one orchestrated run, from the first claim to the last upload.

    Created by :meth:`join` once the tests are collected; the plugin hands it pytest's run
    loop (:meth:`runtestloop`), the protocol of items the server gives retries
    (:meth:`runtest_protocol`) and the terminal summary (:meth:`summary`).
    """

    def __init__(
        self,
        options: QueueOptions,
        target: ServerTarget,
        run_id: str,
        *,
        seconds: float,
        upload: Upload,
        group_by: GroupBy,
        durations: Path | None,
    ) -> None:
        self.run_id = run_id
        self._options = options
        self._target = target
        self._seconds = seconds
        self._upload = upload
        self._group_by = group_by
        self._durations = durations
        self._retries: Mapping[str, int] = {}
        self._holding: str | None = None  # the batch id claimed, or being claimed
        self._ran: set[str] = set()
        self.outside: set[str] = set()  # tests run after the server was lost, not in a batch
        self._batches = 0
        self._stopped_by: str | None = None  # why claiming ended: the server's word for it
        self._no_more = False  # a heartbeat said the run was cancelled: finish, claim no more
        self._uncollected: list[str] = []
        self._warnings: list[str] = []
        self._live: LiveTests | None = None  # while batches run, not after the server is lost

    @classmethod
    def join(
        cls,
        options: QueueOptions,
        target: ServerTarget,
        tests: Sequence[str],
        budget: Budget,
        *,
        upload: Upload,
        group_by: GroupBy,
        durations: Path | None,
    ) -> tuple[QueueRun, str]:
        """Create or join the CI build's run with the collected ``tests`` (node ids), and a
        line saying so for the collection report.

        Raises :class:`QueueUnavailable` when the server cannot be had, and a usage error
        when this machine's tests differ from the run's: running them would skip or double
        tests, so that must stop the build.
        """
        ids = list(dict.fromkeys(tests))
        context = ci_env.detect(os.environ)
        body: dict[str, Any] = {
            "testFiles": list(dict.fromkeys(TestKey.from_nodeid(test).file for test in ids)),
            "tests": ids,
            "ciBuildId": options.ci_build_id,
            "project": target.repo,
            "environment": target.environment,
            "branch": context.branch,
            "commitSha": context.commit,
            "workerCount": options.workers,
        }
        try:
            with Client(target.url, target.token, budget=budget, **CLIENT_OPTIONS) as client:
                answer, _created = queue_api.create_run(
                    client, {k: v for k, v in body.items() if v is not None}
                )
            run_id, total, workers = answer["runId"], answer["totalTests"], answer["workerCount"]
        except ServerError as exc:
            if exc.code == "PLAN_CONFLICT":
                raise pytest.UsageError(
                    f"testlens: this machine collected other tests than the orchestrated run "
                    f"of CI build {options.ci_build_id}: {exc.message} Run the same pytest "
                    "command, with the same selection, on every machine of the build."
                ) from None
            raise QueueUnavailable(describe_failure(exc, target.url)) from None
        except SERVER_FAILURES as exc:
            raise QueueUnavailable(describe_failure(exc, target.url)) from None
        run = cls(
            options,
            target,
            str(run_id),
            seconds=budget.seconds,
            upload=upload,
            group_by=group_by,
            durations=durations,
        )
        note = (
            f"testlens: orchestrated run {run_id} of CI build {options.ci_build_id}: "
            f"{total} tests for {workers} machines; this one takes batches from the queue"
        )
        if options.rerun is not None and options.node_index is not None:
            note += f" (CI attempt {options.attempt}: the {options.rerun} work of node "
            note += f"{options.node_index} again)"
        elif options.rerun is not None:
            note += (
                f" (CI attempt {options.attempt}, but without a node index the run cannot tell "
                "this machine's work from the others': pass --testlens-node-index)"
            )
        return run, note

    # --- pytest's hooks -------------------------------------------------------------------

    def runtestloop(self, session: pytest.Session) -> bool:
        """Claim, run and upload batches until the run is done, the machine is stopped, or
        the server is lost (then the machine runs its share of the static split)."""
        collected = _Collected.of(session.items)
        boundary = _BatchEnd.from_parent(session, name="testlens-batch-end")
        lost: str | None = None
        with _sigterm_interrupts(), self._publishing():
            try:
                while not self._no_more:
                    try:
                        batch = self._claim(collected)
                    except SERVER_FAILURES as exc:
                        lost = describe_failure(exc, self._target.url)
                        break
                    if batch is None:
                        break
                    self._run_batch(session, batch, boundary)
            except BaseException:
                # Stopped (Ctrl-C, SIGTERM, -x, an internal error): the batch's tests go to
                # another machine now rather than when the lease lapses.
                if self._holding is not None:
                    self._release(self._holding)
                raise
        if lost is not None:
            if self._holding is not None:  # the claim may have been granted unanswered
                self._release(self._holding)
            self._run_share(session, lost)
        return True

    def runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        """Run an item the server gave retries until it passes or they are used up; None
        for every other item, which pytest (or pytest-rerunfailures) runs as usual.

        Each failed attempt but the last is logged as a ``rerun``, so that it neither fails
        the session nor counts towards ``--maxfail``, and the upload has every attempt.
        Every attempt tears down towards ``nextitem``, as pytest-rerunfailures does: only
        after an attempt is it known whether another one follows.
        """
        retries = self._retries.get(item.nodeid, 0)
        if not retries:
            return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for attempt in range(retries + 1):
            reports = runtestprotocol(item, log=False, nextitem=nextitem)
            again = attempt < retries and any(report.failed for report in reports)
            for report in reports:
                if again and report.failed:
                    report.outcome = RERUN  # type: ignore[assignment]
                item.ihook.pytest_runtest_logreport(report=report)
            if not again:
                break
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def started(self, nodeid: str) -> None:
        """Publish that a test of a batch starts (``test:start``)."""
        if self._live is not None:
            self._live.started(nodeid)

    def finished(self, nodeid: str, attempts: Sequence[tuple[str, float]]) -> None:
        """Publish the result of a test of a batch whose last attempt is done, from its
        attempts' ``(status, seconds)``. It is marked ``live``: the batch's upload publishes
        the authoritative one."""
        if self._live is not None:
            self._live.finished(nodeid, attempts)

    @staticmethod
    def report_teststatus(
        report: pytest.TestReport,
    ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        """How the terminal shows a retried attempt (pytest-rerunfailures, when installed,
        says the same)."""
        if str(report.outcome) == RERUN:
            return RERUN, "R", ("RERUN", {"yellow": True})
        return None

    def summary(self) -> list[tuple[str, dict[str, bool]]]:
        """Lines for the terminal summary, each with its markup."""
        ended = {
            RUN_FINISHED: "the run is finished",
            RUN_CANCELLED: "the run was cancelled",
            "cancelled": "the run was cancelled",
        }.get(self._stopped_by or "", "")
        lines: list[tuple[str, dict[str, bool]]] = [
            (
                f"testlens: orchestrated run {self.run_id}: this machine ran {len(self._ran)} "
                f"tests in {self._batches} batches" + (f" ({ended})" if ended else ""),
                {},
            )
        ]
        if self._uncollected:
            shown = ", ".join(self._uncollected[:10])
            more = f" and {len(self._uncollected) - 10} more" if len(self._uncollected) > 10 else ""
            lines.append(
                (
                    f"testlens: ERROR: the run handed this machine {len(self._uncollected)} "
                    f"tests or files it did not collect, which did not run here: {shown}{more}. "
                    "They are reported as errors; every machine must collect the same tests.",
                    {"red": True, "bold": True},
                )
            )
        lines.extend((f"testlens: warning: {text}", {"yellow": True}) for text in self._warnings)
        return lines

    # --- the worker protocol --------------------------------------------------------------

    @contextmanager
    def _publishing(self) -> Iterator[None]:
        """Publish live events for as long as batches run, and warn once, at the end, when
        some were not published: a server without the endpoint, or too slow for them,
        costs watchers the live view, never the tests."""
        target = self._target
        with publishing(target.url, target.token, self.run_id, self._warnings) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def _client(self, seconds: float | None = None, **options: Any) -> Client:
        """A client for one call, with a time budget of its own (``seconds``, by default
        the plugin's): a long run makes many calls, and none of them should find the budget
        spent by the others. ``options`` replace :data:`PATIENT_OPTIONS`."""
        budget = Budget(self._seconds if seconds is None else seconds)
        return Client(
            self._target.url, self._target.token, budget=budget, **(options or PATIENT_OPTIONS)
        )

    def _claim(self, collected: _Collected) -> _Batch | None:
        """The next batch, after waiting as long as the server says; None when the run
        needs nothing more of this machine. A call retried inside the client repeats the
        same ``batchId``, so it gets the same batch rather than a second one."""
        options = self._options
        # Without a node index the run cannot tell this machine's work from the others'.
        rerun = options.rerun if options.node_index is not None else None
        while True:
            self._holding = uuid.uuid4().hex
            try:
                with self._client() as client:
                    answer = queue_api.claim(
                        client,
                        self.run_id,
                        self._holding,
                        worker=options.worker,
                        node_index=options.node_index,
                        rerun=rerun,
                        attempt=options.attempt,
                    )
            except RunOver as over:
                self._holding, self._stopped_by = None, over.code
                return None
            if isinstance(answer, Batch):
                return self._batch(answer, collected)
            self._holding = None
            time.sleep(answer)

    @staticmethod
    def _batch(claimed: Batch, collected: _Collected) -> _Batch:
        """The claimed items as collected pytest items, in collection order (so that a
        module's or class's fixtures are set up once per batch), with their retries."""
        retries: dict[str, int] = {}
        uncollected: list[str] = []
        uncollected_files: list[str] = []
        for entry in claimed.items:
            if entry.tests is None and entry.file not in collected.by_file:
                uncollected_files.append(entry.file)
            tests = collected.by_file.get(entry.file, ()) if entry.tests is None else entry.tests
            for nodeid in tests:
                if nodeid in collected.items:
                    retries[nodeid] = entry.retries
                else:
                    uncollected.append(nodeid)
        ordered = sorted(retries, key=collected.position.__getitem__)
        return _Batch(
            claimed,
            tuple(collected.items[nodeid] for nodeid in ordered),
            retries,
            tuple(uncollected),
            tuple(uncollected_files),
        )

    def _run_batch(self, session: pytest.Session, batch: _Batch, boundary: pytest.Item) -> None:
        self._retries = batch.retries
        missing = batch.uncollected + batch.uncollected_files
        if missing:
            self._uncollected.extend(missing)
            # Tests that could not run here must not pass for run: the machine fails.
            session.testsfailed += len(missing)
        beat = partial(self._client, HEARTBEAT_TIMEOUT, attempts=1, timeout=HEARTBEAT_TIMEOUT)
        with Heartbeat(beat, self.run_id, batch.claimed) as heartbeat:
            for index, item in enumerate(batch.items):
                following = batch.items[index + 1] if index + 1 < len(batch.items) else boundary
                item.ihook.pytest_runtest_protocol(item=item, nextitem=following)
                self._ran.add(item.nodeid)
                if session.shouldfail:
                    raise session.Failed(session.shouldfail)
                if session.shouldstop:
                    raise session.Interrupted(session.shouldstop)
            if self._live is not None:
                # The batch's live results go out before its upload's authoritative ones.
                self._live.flush()
            self._finish(batch)
        self._retries, self._holding = {}, None
        self._batches += 1
        if heartbeat.failed:
            self._warnings.append(
                f"{heartbeat.failed} heartbeats of batch {batch.id} failed: if its lease "
                "lapsed, its tests ran twice"
            )
        if heartbeat.status == "expired":
            self._warnings.append(
                f"the lease of batch {batch.id} lapsed before it was done: another machine "
                "may have run its tests too"
            )
        elif heartbeat.status == "cancelled":
            self._no_more, self._stopped_by = True, "cancelled"

    def _finish(self, batch: _Batch) -> None:
        """Upload the batch's results, which marks its items done; a batch with nothing to
        report, or whose upload failed, is released, so that its tests run elsewhere now."""
        ran = [item.nodeid for item in batch.items]
        if not (ran or batch.uncollected):
            self._release(batch.id)
            return
        try:
            self._upload(self.run_id, batch.id, ran, batch.uncollected, Budget(self._seconds))
        except Exception as exc:  # an upload must not fail the run; the queue has the tests
            self._warnings.append(
                f"results of batch {batch.id} not uploaded "
                f"({describe_failure(exc, self._target.url)}): released for another machine"
            )
            self._release(batch.id)

    def _release(self, batch_id: str) -> None:
        """Give the batch's tests without a result back to the queue; best effort, since
        this runs while the machine stops or has lost the server already."""
        try:
            with self._client(
                RELEASE_SECONDS, attempts=2, backoff=0.2, timeout=RELEASE_SECONDS
            ) as client:
                queue_api.release(client, self.run_id, batch_id)
        except SERVER_FAILURES:
            pass
        self._holding = None

    # --- without the server ---------------------------------------------------------------

    def _run_share(self, session: pytest.Session, reason: str) -> None:
        """Run this machine's share of the static split, less the tests it ran already;
        every test when the share is not known (see the module docstring)."""
        ids = [item.nodeid for item in session.items]
        how = "all the tests"
        wanted = set(ids)
        if share := self._options.share:
            index, total = share
            split = split_tests(ids, total, group_by=self._group_by, durations=self._durations)
            wanted, how = set(split.shards[index]), f"its share {index}/{total} ({split.source})"
        wanted -= self._ran
        rest = [item for item in session.items if item.nodeid in wanted]
        self.outside.update(wanted)
        self._warnings.append(
            f"lost the server mid-run ({reason}): this machine ran {how}, less what it had "
            f"run, {len(rest)} tests, outside the orchestrated run"
        )
        for index, item in enumerate(rest):
            following = rest[index + 1] if index + 1 < len(rest) else None
            item.ihook.pytest_runtest_protocol(item=item, nextitem=following)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> NoReturn:
    pytest.exit(f"testlens: stopped by signal {signum}", returncode=pytest.ExitCode.INTERRUPTED)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Make SIGTERM (what a CI sends a job it cancels) stop pytest as Ctrl-C does, by an
    exception, so that the batch is released on the way out; by default it would end the
    process on the spot. A handler someone else installed is left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
