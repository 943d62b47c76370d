"""The CI side of orchestrated runs (docs/orchestration.md): create or join a run, then claim
batches of work from its queue, run each with any test runner, and upload its report, until
the queue is empty.

The runner is a command line: an argument that is exactly ``{files}`` becomes the batch's
items, one argument each (an item's listed tests, else its file); ``{files}`` inside a longer
argument becomes the items shell-quoted and joined by spaces, for ``sh -c``; without it the
items are appended. ``{batch}`` becomes the batch id (so each batch can write a report of its
own) and ``{retries}`` the most retries the server allows any item of the batch.

After the command, its report is the files matching the report glob (where ``{batch}`` is
the batch id too) that it created or changed: a file that matched before and is unchanged is
never taken for this batch's report, and a report is renamed to ``NAME.uploaded`` once
uploaded, so no report is uploaded twice.
A batch whose command wrote no readable report cannot be confirmed: the worker says so, fails,
and claims no more, rather than hand the batch back at once and have every worker burn
through the queue with a broken command; its lease lapses and the server requeues it, and
marks lost an item that keeps coming back.

The exit status is 1 when a test this worker ran failed (read from its reports; a command
that exits non-zero counts as a failure too, whatever its report says), or when a batch could
not be confirmed; 0 otherwise; 128 + the signal's number when SIGTERM or SIGINT stopped it.

Degrading. A server that cannot be reached (connection refused, timeouts, 5xx after the
client's retries) must neither fail the build nor skip tests, so the worker falls back to a
deterministic local split of the run's list, the one ``testlens shard`` makes without a
server: node *i* of *n* runs shard *i* of the whole list, in one command invocation. That is
the same on every node, so the nodes that fell back cover the list between them.

* At the start (creating or joining the run, or the first claim) this node runs its shard.
* Mid-run, the server's record of which items have results is out of reach, and its queue is
  not used again (a server that comes back would hand out work the fallback also runs). The
  worker runs its shard of the list less the items it confirmed itself: if every node fell
  back, every test not confirmed runs at least once; if the server is only out of this node's
  reach, the others go on and the server requeues this node's lease. It names the items of
  the batch it could not confirm.
* Without a node index and count (from the CI, or ``--node-index``/``--node-total``) there is
  no shard to take: the node runs the whole list, so that nothing is skipped. A retried CI
  job never does: it runs its own shard or, not knowing it, nothing, and fails.
* Without the list (``--run`` given alone) nothing can be run in its place: the worker fails
  and says which items it could not confirm.

A server that answers but refuses (a bad key, a conflicting test list, an unknown run) is a
mistake to fix, not an outage: at the start the worker fails with the server's message.
"""

from __future__ import annotations

import glob
import gzip
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx

from ..core.identity import TestKey
from ..core.model import Report, ReportError
from ..core.parsers import parse_report
from . import queue_api
from .http import RETRY_STATUSES, Budget, Client, ServerError
from .queue_api import RUN_CANCELLED, Batch, Heartbeat, LivePublisher, Rerun, RunOver, shown_name
from .sharding import SERVER_FAILURES, describe_failure, split_tests

FILES = "{files}"
BATCH = "{batch}"
RETRIES = "{retries}"
DEFAULT_REPORT = "testlens-batch-{batch}.xml"
"""The report a batch's command writes by default: named after the batch, so that workers
sharing a directory never take each other's reports."""
UPLOADED_SUFFIX = ".uploaded"
LOCAL_BATCH = "local"
"""What ``{batch}`` becomes in the fallback's one command invocation."""

CALL_BUDGET = 60.0
"""Seconds one call to the server (create, claim, upload) may take, retries included, before
the server counts as unreachable: as long as ``testlens upload`` gives one file."""
CLIENT_OPTIONS: dict[str, Any] = {"attempts": 5, "backoff": 1.0, "max_delay": 10.0, "timeout": 20.0}
"""Retries within a call: a server restarting for a few seconds costs a pause, not a fallback."""
RELEASE_BUDGET = 5.0
"""Seconds a stopping worker spends handing its batch back: the CI is about to kill it."""
STOP_GRACE = 10.0
"""Seconds the command has to stop after SIGTERM before it is killed."""

Uploader = Callable[[Client, Path, dict[str, str]], dict[str, Any]]
"""Sends one report file with its form fields and returns the server's answer."""


def warn(message: str) -> None:
    click.echo(f"testlens: warning: {message}", err=True)


def loud(message: str) -> None:
    """A message the job log must not bury: tests that may not have run, a failed batch."""
    click.secho(f"testlens: ERROR: {message}", err=True, fg="red", bold=True)


def say(message: str) -> None:
    click.echo(f"testlens: {message}", err=True)


def unreachable(exc: Exception) -> bool:
    """Whether ``exc`` means the server is out of reach rather than refusing."""
    if isinstance(exc, ServerError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, httpx.HTTPError)


# --- the run's list and the command line -------------------------------------------------


def run_request(
    entries: Sequence[str],
    *,
    workers: int,
    project: str | None = None,
    ci_build_id: str | None = None,
    strategy: str = "queue",
    environment: str | None = None,
    branch: str | None = None,
    commit: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /api/v1/orchestrate`` for ``entries``: files, or pytest-style test
    ids (``file::name``), whose files are the run's files and which split them into items."""
    tests = list(dict.fromkeys(entry for entry in entries if "::" in entry))
    files = dict.fromkeys(TestKey.from_nodeid(entry).file for entry in entries)
    body: dict[str, Any] = {"testFiles": list(files), "workerCount": workers, "strategy": strategy}
    if tests:
        body["tests"] = tests
    optional = {
        "project": project,
        "ciBuildId": ci_build_id,
        "environment": environment,
        "branch": branch,
        "commitSha": commit,
    }
    body.update({name: value for name, value in optional.items() if value})
    return body


def command_line(
    template: Sequence[str], entries: Sequence[str], batch: str, retries: int = 0
) -> list[str]:
    """The command to run for ``entries`` (see the module docstring for the placeholders)."""
    argv: list[str] = []
    placed = False
    for argument in template:
        if argument == FILES:
            argv.extend(entries)
            placed = True
            continue
        if FILES in argument:
            argument = argument.replace(FILES, " ".join(shlex.quote(e) for e in entries))
            placed = True
        argv.append(argument.replace(BATCH, batch).replace(RETRIES, str(retries)))
    if not placed:
        argv.extend(entries)
    return argv


# --- reports -------------------------------------------------------------------------------

Stamp = tuple[int, int, int]


def report_stamps(pattern: str) -> dict[Path, Stamp]:
    """Each file matching ``pattern`` (``**`` allowed) with what tells a rewrite: its
    modification time, size and inode."""
    stamps: dict[Path, Stamp] = {}
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file() and not path.name.endswith(UPLOADED_SUFFIX):
            stamps[path] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    return stamps


def new_reports(pattern: str, before: dict[Path, Stamp]) -> list[Path]:
    """The files matching ``pattern`` created or rewritten since ``before`` was taken."""
    return [path for path, stamp in report_stamps(pattern).items() if before.get(path) != stamp]


def read_report(path: Path) -> Report:
    """The report in ``path``, gzipped or not; ReportError or OSError when it is unreadable."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ReportError(f"invalid gzip data: {exc}") from None
    return parse_report(data)


def failed_tests(report: Report) -> int:
    summary = report.summary()
    return summary.failed + summary.errors


def consume(path: Path) -> None:
    """Set an uploaded report aside (kept for the job's artifacts), so that it is never
    taken for a later batch's report."""
    try:
        os.replace(path, path.with_name(path.name + UPLOADED_SUFFIX))
    except OSError as exc:
        warn(f"could not rename {path} after its upload: {exc}")


def local_share(
    entries: Sequence[str], index: int | None, total: int | None
) -> tuple[list[str], str]:
    """This node's entries of a split of the whole list made without a server, and how they
    were chosen; every entry when the node's place is unknown."""
    if index is None or total is None:
        return list(dict.fromkeys(entries)), "the whole list (no node index and count)"
    split = split_tests(entries, total, group_by="file")
    return list(split.shards[index]), f"local shard {index}/{total} ({split.source})"


# --- the server ------------------------------------------------------------------------------


class Api:
    """The worker's side of the connection to the orchestration server: one client, whose
    every call gets a time budget of its own (``timeout``), so that a long run's many calls
    never find the budget spent by the ones before."""

    def __init__(self, server: str, token: str | None, timeout: float = CALL_BUDGET) -> None:
        self.server = server
        self.token = token
        self.timeout = timeout
        self._client = Client(server, token, **CLIENT_OPTIONS)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.__exit__()

    def client(self, budget: float | None = None) -> Client:
        """The client, for one call of at most ``budget`` seconds (by default ``timeout``)."""
        self._client.budget = Budget(self.timeout if budget is None else budget)
        return self._client

    def heartbeat_client(self, every: float) -> Client:
        """A client for one heartbeat of a batch renewed every ``every`` seconds: a client of
        its own, since the heartbeat's thread beats while the main thread uploads, and a beat
        that takes longer than the interval is made up by the next."""
        budget = Budget(min(every, self.timeout))
        return Client(self.server, self.token, budget=budget, **CLIENT_OPTIONS)

    def create(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The run for ``body``, and whether this call created it (else it existed)."""
        return queue_api.create_run(self.client(), body)


# --- the worker -------------------------------------------------------------------------------


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop the command, hand the batch back, exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Turn the first SIGTERM or SIGINT into :class:`Interrupted` in the main thread (later
    ones are ignored while the worker stops); elsewhere leave the handlers alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    previous = {
        number: signal.signal(number, handler) for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@dataclass
class WorkerOptions:
    """What ``testlens worker`` was asked to do; see :class:`Worker`."""

    command: tuple[str, ...]
    uploader: Uploader
    entries: tuple[str, ...] = ()
    """The run's list (files or test ids): what creates the run, and what the fallback splits."""
    run_id: str | None = None
    create: dict[str, Any] | None = None
    """The request that creates or joins the run, when no ``run_id`` is given."""
    report: str = DEFAULT_REPORT
    node_index: int | None = None
    node_total: int | None = None
    rerun: Rerun | None = None
    """What a retried CI job asks for: the work its node ran whose tests failed, or all of it."""
    attempt: int | None = None
    repo: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    """Upload metadata from the CI (repo, branch, commit, root...)."""
    name: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}")


class _Lost(Exception):
    """The server went out of reach (or refused) mid-run."""

    def __init__(self, reason: str, unconfirmed: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unconfirmed = list(unconfirmed)


class Worker:
    """One machine of an orchestrated run: claim, run, upload, until nothing is left (the
    module docstring says what it does when things go wrong)."""

    def __init__(self, api: Api, options: WorkerOptions) -> None:
        self.api = api
        self.options = options
        self.failed = False
        self.confirmed: set[str] = set()
        self.batches = 0
        self._held: tuple[str, Batch] | None = None
        self._live: LivePublisher | None = None

    def run(self) -> int:
        with stopped_by_signals():
            try:
                return self._work()
            except Interrupted as stop:
                self._hand_back()
                say(f"stopped by signal {stop.signum}")
                return 128 + stop.signum
            finally:
                if self._live is not None:
                    self._live.close()

    @property
    def status(self) -> int:
        return 1 if self.failed else 0

    def _work(self) -> int:
        try:
            run_id = self.options.run_id or self._join()
            answer = self._claim(run_id)
        except RunOver as over:
            return self._over(over)
        except SERVER_FAILURES as exc:
            if unreachable(exc):
                warn(f"the orchestration server is out of reach: {self._describe(exc)}")
                return self._fall_back()
            loud(f"cannot work with the orchestration server: {self._describe(exc)}")
            return 1
        while True:
            if isinstance(answer, Batch):
                try:
                    if not self._run_batch(run_id, answer):
                        return self.status
                except _Lost as lost:
                    return self._lost(lost)
            else:
                time.sleep(answer)
            try:
                answer = self._claim(run_id)
            except RunOver as over:
                return self._over(over)
            except SERVER_FAILURES as exc:
                return self._lost(_Lost(self._describe(exc)))

    def _describe(self, exc: Exception) -> str:
        return describe_failure(exc, self.api.server)

    def _join(self) -> str:
        assert self.options.create is not None
        answer, created = self.api.create(self.options.create)
        run_id = str(answer["runId"])
        say(
            f"{'created' if created else 'joined'} run {run_id}: {answer.get('totalTests')} "
            f"tests for {answer.get('workerCount')} workers"
        )
        return run_id

    def _claim(self, run_id: str) -> Batch | float:
        o = self.options
        return queue_api.claim(
            self.api.client(),
            run_id,
            uuid.uuid4().hex,
            worker=o.name,
            node_index=o.node_index,
            rerun=o.rerun,
            attempt=o.attempt,
        )

    def _over(self, over: RunOver) -> int:
        if over.code == RUN_CANCELLED:
            warn(
                "the run was cancelled: this worker claims no more work, and tests not yet "
                "run will not run"
            )
        else:
            say(f"the run is finished; this worker ran {self.batches} batches")
        return self.status

    def _run_batch(self, run_id: str, batch: Batch) -> bool:
        """Run, report and upload one batch; whether to claim another."""
        self._held = (run_id, batch)
        self.batches += 1
        entries = batch.entries
        retries = max((item.retries for item in batch.items), default=0)
        say(f"batch {batch.batch_id}: {len(batch.items)} items ({_sample(entries)})")
        self._publish_start(run_id, batch)
        # The lease is renewed until the upload is done: a long upload must not hand the
        # batch to another worker. Leaving waits for a beat in flight, so that a cancel it
        # hears stops this worker after the batch.
        with Heartbeat(
            lambda: self.api.heartbeat_client(batch.heartbeat_seconds),
            run_id,
            batch,
            on_change=lambda status: _lease_changed(batch.batch_id, status),
            on_failure=lambda exc: warn(
                f"heartbeat of batch {batch.batch_id}: {self._describe(exc)}"
            ),
            join_on_exit=True,
        ) as heartbeat:
            code, reports = self._execute(
                entries,
                batch.batch_id,
                retries,
                {"TESTLENS_RUN_ID": run_id, "TESTLENS_BATCH_ID": batch.batch_id},
            )
            if self._live is not None:  # the starts go out before the upload's results
                self._live.flush()
            parsed = self._read(reports, code, batch.batch_id, f"batch {batch.batch_id}")
            if parsed is None or not all(
                self._upload(run_id, batch, path, report) for path, report in parsed
            ):
                loud(
                    f"batch {batch.batch_id} cannot be confirmed; its items go back to the "
                    f"queue when its lease lapses. This worker claims no more work: "
                    f"{_sample(entries, 20)}"
                )
                self.failed = True
                self._held = None
                return False
        for path, _report in parsed:
            consume(path)
        self.confirmed.update(entries)
        self._held = None
        if heartbeat.status == "cancelled":
            say("the run was cancelled: this worker claims no more work")
            return False
        return True

    def _publish_start(self, run_id: str, batch: Batch) -> None:
        """Publish ``test:start`` for the batch's items, so that watchers see what runs
        before its report is uploaded. Results are not published here: the worker learns
        them from the report, whose upload publishes them."""
        if self._live is None:
            self._live = LivePublisher(
                self.api.server,
                self.api.token,
                run_id,
                on_failure=lambda exc: warn(f"live events not published: {self._describe(exc)}"),
            )
        for item in batch.items:
            names = [(item.file, "")] if item.tests is None else map(shown_name, item.tests)
            for file, name in names:
                self._live.publish("test:start", {"testFile": file, "testName": name})

    def _report(self, batch_id: str) -> str:
        return self.options.report.replace(BATCH, batch_id)

    def _execute(
        self,
        entries: Sequence[str],
        batch_id: str,
        retries: int = 0,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[int, list[Path]]:
        """Run the command for ``entries``: its exit status (127 when it cannot start) and
        the reports it wrote."""
        argv = command_line(self.options.command, entries, batch_id, retries)
        before = report_stamps(self._report(batch_id))
        try:
            child = subprocess.Popen(argv, env={**os.environ, **(extra_env or {})})
        except OSError as exc:
            loud(f"cannot run {shlex.join(argv[:3])}...: {exc}")
            return 127, []
        try:
            code = child.wait()
        except Interrupted:
            _stop(child)
            raise
        return code, new_reports(self._report(batch_id), before)

    def _read(
        self, reports: list[Path], code: int, batch_id: str, what: str
    ) -> list[tuple[Path, Report]] | None:
        """The reports parsed, recording failures; None when there is none to read."""
        if not reports:
            loud(
                f"{what}: the command (exit status {code}) wrote no report matching "
                f"{self._report(batch_id)!r} (--report {self.options.report!r}; the command "
                "must write it, e.g. pytest --junitxml=testlens-batch-{batch}.xml)"
            )
            return None
        parsed: list[tuple[Path, Report]] = []
        for path in reports:
            try:
                parsed.append((path, read_report(path)))
            except (OSError, ReportError) as exc:
                loud(f"{what}: {path} is not a readable test report: {exc}")
                return None
        failures = sum(failed_tests(report) for _, report in parsed)
        tests = sum(len(report.tests) for _, report in parsed)
        say(f"{what}: exit status {code}, {tests} tests, {failures} failed")
        if failures:
            self.failed = True
        elif code != 0:
            warn(f"{what}: the command exited {code} though its report shows no failed test")
            self.failed = True
        return parsed

    def _upload(self, run_id: str, batch: Batch, path: Path, report: Report) -> bool:
        """Upload one report of ``batch``: whether the server took it. :class:`_Lost` when
        the server is out of reach."""
        fields = {
            **self.options.fields,
            "framework": report.format,
            **queue_api.upload_fields(run_id, batch.batch_id),
        }
        repo = self.options.repo or batch.project or fields.get("repo")
        if repo:
            fields["repo"] = repo
        if batch.environment:
            fields["environment"] = batch.environment
        try:
            self.options.uploader(self.api.client(), path, fields)
        except SERVER_FAILURES as exc:
            if unreachable(exc):
                raise _Lost(f"uploading {path}: {self._describe(exc)}", batch.entries) from None
            loud(f"the server refused {path}: {self._describe(exc)}")
            return False
        return True

    def _hand_back(self) -> None:
        """Release the batch in hand, if any, so that its items go to another worker now."""
        if self._held is None:
            return
        run_id, batch = self._held
        try:
            queue_api.release(self.api.client(RELEASE_BUDGET), run_id, batch.batch_id)
            say(f"released batch {batch.batch_id}: its items go to other workers")
        except SERVER_FAILURES as exc:
            warn(
                f"could not release batch {batch.batch_id} ({self._describe(exc)}): its "
                "items go to other workers when its lease lapses"
            )

    def _lost(self, lost: _Lost) -> int:
        self._held = None  # nobody to hand it back to
        loud(f"the orchestration server was lost mid-run: {lost.reason}")
        if lost.unconfirmed:
            loud(
                f"these items ran here but their results never reached the server: "
                f"{_sample(lost.unconfirmed, 50)}"
            )
        return self._fall_back()

    def _fall_back(self) -> int:
        """Run this node's share of the list in one command, the queue unused (see the
        module docstring); the build fails only if a test failed."""
        o = self.options
        if not o.entries:
            loud(
                "no test list to run without the server (give the run's list with --files or "
                "--tests-from as well as --run): tests of this run may not have run"
            )
            return 1
        if o.rerun and (o.node_index is None or o.node_total is None):
            loud(
                "a retried job without its node index and count (--node-index, --node-total) "
                "cannot tell which tests are its own: running none"
            )
            return 1
        share, how = local_share(o.entries, o.node_index, o.node_total)
        remaining = [entry for entry in share if entry not in self.confirmed]
        done = len(share) - len(remaining)
        warn(
            f"running {len(remaining)} tests or files without the server: {how}"
            + (f", less {done} this worker confirmed" if done else "")
        )
        if o.node_index is None or o.node_total is None:
            warn("every node that falls back this way runs the whole list")
        if not remaining:
            say("nothing of this node's share is left to run")
            return self.status
        code, reports = self._execute(remaining, LOCAL_BATCH)
        parsed = self._read(reports, code, LOCAL_BATCH, "the fallback run")
        if parsed is None:
            if code != 0:
                self.failed = True
        else:
            warn(
                "the fallback run's reports were not uploaded: "
                + ", ".join(str(path) for path, _ in parsed)
            )
        return self.status


def _lease_changed(batch_id: str, status: str) -> None:
    """Say what a heartbeat's news means for the batch in hand: a lapsed lease is only a
    warning (the first result of an item counts), a cancelled run stops the worker once the
    batch is uploaded."""
    if status == "expired":
        warn(
            f"the lease of batch {batch_id} lapsed and its items went back to the queue; "
            "finishing and uploading it anyway (the first result of an item counts)"
        )
    elif status == "cancelled":
        say("the run was cancelled: finishing this batch, then stopping")


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _sample(entries: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")
