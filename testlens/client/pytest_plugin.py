"""The pytest plugin: run this node's shard or take batches from an orchestrated run's queue,
upload every attempt, let quarantined tests fail.

Installing testlens installs the plugin, so it does nothing unless a run asks for it
(``--testlens``, ``testlens = true`` in the ini file, or ``TESTLENS_PYTEST=1``): a plain
pytest run must not change because a package is installed. Once enabled, nothing it does can
fail the build. A server that is down or refuses costs balance (the shard falls back to a
durations file, then to equal counts), leniency (quarantined tests fail as usual) or history
(the upload is skipped), and says so in the terminal; the exit code stays pytest's own.

Queue mode (``--testlens-queue``) lives in :mod:`.pytest_queue`; this module gives it its
options, pytest's hooks, the fallback split and the uploads.

Uploads are JUnit XML with one ``<testcase>`` per attempt, pytest-rerunfailures' reruns
included, and identities taken from node ids (``file``, ``classname`` = the classes between
``::``, ``name``), so that the server's durations and shard plans speak pytest node ids.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from ..core.identity import TestKey
from ..core.sharding import GROUP_BY
from . import ci_env
from .http import Budget, Client
from .pytest_live import LiveTests, open_run, publishing
from .pytest_queue import QueueOptions, QueueRun, QueueUnavailable
from .queue_api import upload_fields
from .sharding import (
    CLIENT_OPTIONS,
    FALLBACKS,
    SERVER_FAILURES,
    Fallback,
    ServerTarget,
    ShardingError,
    describe_failure,
    parse_shard_spec,
    split_tests,
)

ENABLE_VARIABLE = "TESTLENS_PYTEST"
RUN_BUDGET = 30.0
"""Seconds a pytest run may spend waiting for the server, over all its calls: an
unresponsive server costs a run about this much, then it goes on without it."""
QUARANTINE_REASON = "quarantined by testlens"

# Characters XML 1.0 cannot carry; test output holds them (ANSI escapes, NUL) all the time.
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "testlens", "testlens: duration-aware shards, result upload, quarantine"
    )
    group.addoption(
        "--testlens",
        action="store_true",
        help=f"Enable the plugin (or 'testlens = true' in the ini file, or {ENABLE_VARIABLE}=1).",
    )
    group.addoption("--testlens-server", metavar="URL", help="Server URL (or TESTLENS_SERVER).")
    group.addoption("--testlens-token", metavar="KEY", help="API key (or TESTLENS_TOKEN).")
    group.addoption(
        "--testlens-repo",
        metavar="OWNER/REPO",
        help="Repository (default: from the CI environment).",
    )
    group.addoption(
        "--testlens-environment",
        metavar="NAME",
        help="Where the tests run, e.g. linux-py3.12: durations are kept per environment.",
    )
    group.addoption(
        "--testlens-shard",
        metavar="I/K",
        help="Run only shard I of K, counted from 0 (0/4 .. 3/4).",
    )
    group.addoption(
        "--testlens-group-by",
        choices=GROUP_BY,
        default="none",
        help="Keep the tests of one file or class on one shard (default: none).",
    )
    group.addoption(
        "--testlens-durations",
        metavar="FILE",
        type=Path,
        help="pytest-split .test_durations used when the server is not.",
    )
    group.addoption(
        "--testlens-plan-id",
        metavar="ID",
        help="Use this shard plan, made by another node, instead of the CI run's.",
    )
    group.addoption(
        "--testlens-plan-key",
        metavar="KEY",
        help="The CI run's identity, shared by its nodes, that finds the run's shard plan "
        "(default: from the CI environment, e.g. github/<run id>/<job>).",
    )
    group.addoption(
        "--testlens-fallback",
        choices=FALLBACKS,
        help="Without the run's plan or queue: run every test (all, the default for "
        "--testlens-shard: none is skipped), split locally (split, the default for "
        "--testlens-queue, where the machines that reach the queue run all it holds), or stop "
        "(fail).",
    )
    group.addoption(
        "--testlens-queue",
        action="store_true",
        help="Take this machine's tests batch by batch from the CI build's orchestrated run; "
        "run it on every machine of the build.",
    )
    group.addoption(
        "--testlens-ci-build-id",
        metavar="ID",
        help="The CI build's identity, the same on every machine of the build, that joins them "
        "in one orchestrated run (default: from the CI environment, e.g. github/<run id>/<job>).",
    )
    group.addoption(
        "--testlens-workers",
        metavar="N",
        type=int,
        help="Machines of the orchestrated run (default: the CI's parallel node count).",
    )
    group.addoption(
        "--testlens-node-index",
        metavar="I",
        type=int,
        help="This machine's CI node index, from 0 (default: the CI's, where it has one): "
        "how a retried CI job finds its work, and its share of the fallback split.",
    )
    group.addoption(
        "--testlens-fixed",
        action="store_true",
        help="In a retried CI job, run all of the node's work again, not only what failed.",
    )
    group.addoption(
        "--testlens-quarantine",
        action="store_true",
        help="Turn failures of tests quarantined on the server into xfail.",
    )
    group.addoption(
        "--testlens-no-upload", action="store_true", help="Do not upload the results at the end."
    )
    group.addoption(
        "--testlens-no-live",
        action="store_true",
        help="Do not publish tests to the run's live view as they start and finish.",
    )
    group.addoption(
        "--testlens-timeout",
        metavar="SECONDS",
        type=float,
        help=f"Seconds the run may wait for the server in all, plan, quarantine list and "
        f"upload together (default {RUN_BUDGET:g}, or TESTLENS_TIMEOUT).",
    )
    parser.addini("testlens", type="bool", default=False, help="Enable the testlens plugin.")


def pytest_configure(config: pytest.Config) -> None:
    enabled = (
        config.getoption("testlens")
        or config.getini("testlens")
        or os.environ.get(ENABLE_VARIABLE, "").lower() in ("1", "true", "yes")
    )
    if enabled:
        config.pluginmanager.register(TestlensPlugin(config), "testlens-plugin")
    else:
        # Ignoring them would run every test on every node, which nobody asks for.
        for name in ("shard", "queue"):
            if config.getoption(f"testlens_{name}"):
                raise pytest.UsageError(
                    f"--testlens-{name} needs --testlens (or 'testlens = true' in "
                    f"the ini file, or {ENABLE_VARIABLE}=1)"
                )


class TestlensPlugin:
    """What an enabled run does; registered by :func:`pytest_configure`."""

    __test__ = False

    def __init__(self, config: pytest.Config) -> None:
        option = config.getoption
        self._server: str | None = option("testlens_server") or os.environ.get("TESTLENS_SERVER")
        self._token: str | None = option("testlens_token") or os.environ.get("TESTLENS_TOKEN")
        self._repo: str | None = option("testlens_repo") or ci_env.detect(os.environ).repo
        self._environment: str = option("testlens_environment") or ci_env.python_environment()
        # Node ids, the uploaded tests' identities, are relative to pytest's rootdir, so that
        # is the root of the upload's paths too (not the CI checkout, which can be above it).
        self._root = str(config.rootpath)
        timeout = option("testlens_timeout") or os.environ.get("TESTLENS_TIMEOUT") or RUN_BUDGET
        try:
            self._budget = Budget(float(timeout))
        except ValueError:
            raise pytest.UsageError(f"TESTLENS_TIMEOUT must be a number, not {timeout!r}") from None
        self._shard: tuple[int, int] | None = None
        if spec := option("testlens_shard"):
            try:
                self._shard = parse_shard_spec(spec)
            except ValueError as exc:
                raise pytest.UsageError(f"--testlens-shard: {exc}") from None
        self._group_by = option("testlens_group_by")
        self._durations: Path | None = option("testlens_durations")
        self._plan_id: str | None = option("testlens_plan_id")
        self._plan_key: str | None = option("testlens_plan_key") or ci_env.run_key(os.environ)
        self._shard_label: str | None = None  # how this node chose its tests, for the upload
        self._quarantine: bool = option("testlens_quarantine")
        self._upload: bool = not option("testlens_no_upload")
        # Live events go with an upload: the upload joins the run they were published to.
        self._publish_live = self._upload and not option("testlens_no_live")
        self._live: LiveTests | None = None  # a plain run's, while its tests run
        self._live_run: str | None = None  # the run it published to, for the summary
        self._live_session = ExitStack()
        self._warnings: list[str] = []
        self._queue_options: QueueOptions | None = None
        if option("testlens_queue"):
            if self._shard is not None:
                raise pytest.UsageError(
                    "--testlens-queue and --testlens-shard exclude each other: a machine either "
                    "takes work from the queue or runs a fixed shard"
                )
            if not self._upload:
                raise pytest.UsageError(
                    "--testlens-queue cannot go with --testlens-no-upload: uploading a batch "
                    "is how the orchestrated run learns it is done"
                )
            self._queue_options = QueueOptions.from_config(config, os.environ)
        self._queue: QueueRun | None = None
        queue = self._queue_options is not None
        self._fallback: Fallback = option("testlens_fallback") or ("split" if queue else "all")
        self._quarantined: dict[str, str] = {}  # node id -> the xfail reason given to it
        self._attempts: dict[str, list[_Attempt]] = {}
        self._collection_notes: list[str] = []
        self._upload_note: tuple[str, bool] | None = None  # (line, is a warning)

    # --- collection: shard and quarantine -------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Runs last, so that the shard is cut, and the queue's list sent, from what ``-k``,
        ``-m`` and other plugins left: every node then has the same list."""
        if self._shard is not None:
            self._select_shard(config, items, *self._shard)
        elif self._queue_options is not None and items and _tests_will_run(session):
            self._join_queue(config, items, self._queue_options)
        if self._quarantine:
            self._mark_quarantined(items)

    def pytest_report_collectionfinish(self) -> list[str]:
        return self._collection_notes

    def _missing(self) -> str | None:
        """What calls to the server lack, in words for a warning; None if nothing."""
        if not self._server:
            return "no server (--testlens-server or TESTLENS_SERVER)"
        if not self._repo:
            return "no repository (--testlens-repo, or a recognised CI)"
        return None

    def _target(self) -> ServerTarget | None:
        if not (self._server and self._repo):
            return None
        return ServerTarget(
            self._server,
            self._token,
            self._repo,
            self._environment,
            self._plan_key,
            ci_env.detect(os.environ).workflow_run_id,
        )

    def _select_shard(
        self, config: pytest.Config, items: list[pytest.Item], index: int, total: int
    ) -> None:
        target = self._target()
        if target is None and self._server:
            self._warn(f"sharding without the server: {self._missing()}")
        try:
            split = split_tests(
                [item.nodeid for item in items],
                total,
                group_by=self._group_by,
                server=target,
                plan_id=self._plan_id,
                durations=self._durations,
                fallback=self._fallback,
                budget=self._budget,
            )
        except ShardingError as exc:
            raise pytest.UsageError(f"testlens: {exc} (--testlens-fallback fail)") from None
        self._shard_label = split.label(index)
        for warning in split.warnings:
            self._warn(warning)
        chosen = set(split.shards[index])
        selected = [item for item in items if item.nodeid in chosen]
        deselected = [item for item in items if item.nodeid not in chosen]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = selected
        run = f" of CI run {self._plan_key}" if split.plan_id and self._plan_key else ""
        self._collection_notes.append(
            f"testlens: shard {index}/{total}: {len(selected)} of {len(selected) + len(deselected)}"
            f" tests ({split.source}{run})"
        )

    def _join_queue(
        self, config: pytest.Config, items: list[pytest.Item], options: QueueOptions
    ) -> None:
        """Join the CI build's orchestrated run; without it, fall back as ``--testlens-shard``
        does when its plan cannot be had (by default a local split, see
        ``--testlens-fallback``)."""
        target = self._target()
        try:
            if target is None:
                raise QueueUnavailable(str(self._missing()))
            self._queue, note = QueueRun.join(
                options,
                target,
                [item.nodeid for item in items],
                self._budget,
                upload=self._upload_batch,
                group_by=self._group_by,
                durations=self._durations,
            )
        except QueueUnavailable as exc:
            reason = f"no orchestrated run ({exc})"
            if self._fallback == "fail":
                raise pytest.UsageError(f"testlens: {reason} (--testlens-fallback fail)") from None
            self._warn(reason)
            if self._fallback == "split" and options.share is not None:
                self._select_shard(config, items, *options.share)
            else:
                how = "" if self._fallback == "all" else ": its node index or count is unknown"
                self._warn(f"running ALL {len(items)} tests on this machine{how}")
            return
        self._collection_notes.append(note)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if self._queue is not None:
            return self._queue.runtestloop(session)
        if self._publish_live and not hasattr(session.config, "workerinput"):
            self._go_live(session)
        return None

    def _go_live(self, session: pytest.Session) -> None:
        """Open the run this session publishes to and uploads into, and start publishing.
        Under xdist the controller does it, which sees every worker's tests start and end
        but collects none itself (so the run's size is left unsaid)."""
        distributed = session.config.pluginmanager.has_plugin("dsession")
        target = self._target()
        if (
            target is None
            or not (session.items or distributed)
            or session.config.option.collectonly
        ):
            return
        try:
            total = None if distributed else len(session.items)
            run_id = open_run(target, total, self._shard, self._budget)
        except Exception as exc:  # whatever it is, the live view must not fail the run
            self._warnings.append(
                f"no live view of this run ({describe_failure(exc, target.url)}): results show "
                "once uploaded"
            )
            return
        self._live = self._live_session.enter_context(
            publishing(target.url, target.token, run_id, self._warnings)
        )
        self._live_run = run_id

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        return None if self._queue is None else self._queue.runtest_protocol(item, nextitem)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self._queue is not None:
            self._queue.started(nodeid)
        elif self._live is not None:
            self._live.started(nodeid)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        """Every attempt's reports are in by now, retries' included (pytest-rerunfailures
        and the queue's retries log one start and one finish around them all)."""
        attempts = [(run.status, run.seconds) for run in self._attempts.get(nodeid, [])]
        if self._queue is not None:
            self._queue.finished(nodeid, attempts)
        elif self._live is not None:
            self._live.finished(nodeid, attempts)

    def pytest_report_teststatus(
        self, report: pytest.TestReport
    ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        return None if self._queue is None else self._queue.report_teststatus(report)

    def _mark_quarantined(self, items: list[pytest.Item]) -> None:
        target = self._target()
        if target is None:
            self._warn(f"no quarantine list ({self._missing()}): failures count as usual")
            return
        try:
            with Client(target.url, target.token, budget=self._budget, **CLIENT_OPTIONS) as client:
                body = client.request("GET", "/api/quarantine", params={"repo": target.repo})
            reasons = {test["nodeid"]: test.get("reason") or "" for test in body.json()["tests"]}
        except SERVER_FAILURES as exc:
            self._warn(
                f"no quarantine list ({describe_failure(exc, target.url)}): failures count as usual"
            )
            return
        for item in items:
            if item.nodeid in reasons:
                given = reasons[item.nodeid]
                reason = f"{QUARANTINE_REASON}: {given}" if given else QUARANTINE_REASON
                # Not strict: a quarantined test that passes must not fail the run either.
                item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
                self._quarantined[item.nodeid] = reason
        self._collection_notes.append(
            f"testlens: {len(self._quarantined)} of these tests quarantined: their failures "
            "count as xfail"
        )

    def _warn(self, message: str) -> None:
        self._collection_notes.append(f"testlens: warning: {message}")

    # --- results and upload ---------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Every attempt has one setup and one teardown report, pytest-rerunfailures' reruns
        included, so the reports of one node id fall into attempts between them. Subtests'
        reports are logged as they happen, which under pytest-rerunfailures (it logs the
        phases after the run) is before their attempt's setup: a report after a teardown
        opens the next attempt, and a setup joins an attempt that has not had one."""
        attempts = self._attempts.setdefault(report.nodeid, [])
        if not attempts or attempts[-1].ended or (report.when == "setup" and attempts[-1].set_up):
            attempts.append(_Attempt())
        attempts[-1].add(report, self._quarantined.get(report.nodeid))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        attempts = self._attempts
        if self._queue is not None:
            # Batches were uploaded as they finished. Of what is left, a released batch's
            # tests run again elsewhere and are not uploaded here; those run after the
            # server was lost are.
            attempts = {
                test: runs for test, runs in attempts.items() if test in self._queue.outside
            }
        # Under xdist the controller sees every worker's reports and uploads them once.
        with self._live_session:  # what was published goes out before the upload
            if self._upload and attempts and not hasattr(session.config, "workerinput"):
                if self._live is not None:
                    self._live.flush()
                self._upload_note = self._upload_results(attempts)
        self._live = None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = [] if self._queue is None else self._queue.summary()
        if self._upload_note is not None:
            line, is_warning = self._upload_note
            lines.append((line, {"yellow": is_warning}))
        if self._live_run is not None:
            run = self._live_run
            where = f"GET /api/v1/runs/{run}, live on /api/v1/ws?runId={run}"
            lines.append((f"testlens: CI run {run}: {where}", {}))
        lines.extend((f"testlens: warning: {text}", {"yellow": True}) for text in self._warnings)
        if lines:
            terminalreporter.write_sep("-", "testlens")
        for line, markup in lines:
            terminalreporter.write_line(line, **markup)

    def _upload_results(self, attempts: dict[str, list[_Attempt]]) -> tuple[str, bool]:
        """Upload the session's ``attempts`` and say how that went."""
        target = self._target()
        if target is None:
            return f"testlens: warning: results not uploaded: {self._missing()}", True
        extra = {} if self._live is None else {"orchestration_run": self._live.run_id}
        try:
            return self._post_results(target, attempts, extra, self._budget), False
        except Exception as exc:  # whatever it is, an upload must not fail the run
            return (
                f"testlens: warning: results not uploaded: {describe_failure(exc, target.url)}",
                True,
            )

    def _upload_batch(
        self,
        run_id: str,
        batch_id: str,
        ran: Sequence[str],
        uncollected: Sequence[str],
        budget: Budget,
    ) -> None:
        """Upload one batch of an orchestrated run, which marks its items done: the
        attempts of the tests that ran, taken out of what the session's end uploads, and an
        error for each handed-out test this machine did not collect, so that the run does
        not pass for complete. Raises as the upload fails."""
        target = self._target()
        assert target is not None, "a queue is only joined with a server"
        attempts = {
            nodeid: self._attempts.pop(nodeid) for nodeid in ran if nodeid in self._attempts
        }
        for nodeid in uncollected:
            message = "testlens: handed to a machine that did not collect it, so it did not run"
            attempts[nodeid] = [_Attempt(status="error", message=message)]
        extra = upload_fields(run_id, batch_id)
        self._post_results(target, attempts, extra, budget)

    def _post_results(
        self,
        target: ServerTarget,
        attempts: dict[str, list[_Attempt]],
        extra: dict[str, str],
        budget: Budget,
    ) -> str:
        """POST ``attempts`` as a report with the run's metadata and the ``extra`` fields;
        a line for the terminal, or the exception."""
        fields = ci_env.run_fields(
            {"repo": target.repo, "environment": target.environment, "root": self._root}
        )
        fields["framework"] = "pytest"
        if self._shard_label is not None:
            fields["shard"] = self._shard_label
        fields.update(extra)
        count = sum(len(runs) for runs in attempts.values())
        report = gzip.compress(junit_xml(attempts), 6)
        # Storing a large report takes the server a while: only the budget bounds this one.
        options = {**CLIENT_OPTIONS, "timeout": budget.seconds}
        with Client(target.url, target.token, budget=budget, **options) as client:
            answer = client.request(
                "POST",
                "/api/test-results",
                data=fields,
                files={"file": ("pytest-testlens.xml.gz", report)},
            )
        run = answer.json()
        return (
            f"testlens: uploaded {run['tests_processed']} tests ({count} attempts, "
            f"{run['flaky_detected']} flaky) as run {run['run_id']}"
        )


def _tests_will_run(session: pytest.Session) -> bool:
    """Whether pytest goes on to run what it collected: not with ``--collect-only``, nor
    after collection errors (unless told to go on), when an orchestrated run created now
    would wait for machines that never come."""
    option = session.config.option
    if option.collectonly:
        return False
    return not session.testsfailed or bool(option.continue_on_collection_errors)


@dataclass(slots=True)
class _Attempt:
    """One run of a test through setup, call and teardown, as the JUnit report records it."""

    status: str = "passed"
    seconds: float = 0.0
    message: str | None = None
    details: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    set_up: bool = False
    ended: bool = False  # its teardown is in

    def add(self, report: pytest.TestReport, quarantine_reason: str | None) -> None:
        """Fold in one phase's report; the first problem is the attempt's (later ones, such
        as a teardown failing after the test did, are usually its consequences)."""
        self.set_up = self.set_up or report.when == "setup"
        self.ended = report.when == "teardown"
        self.seconds += report.duration
        if self.status in ("failed", "error"):
            return
        # A quarantined test's failure is xfail to pytest, but the server judges the test
        # on what really happened.
        quarantined_failure = (
            quarantine_reason is not None
            and report.skipped
            and getattr(report, "wasxfail", None) == quarantine_reason
        )
        if report.outcome in ("failed", "rerun") or quarantined_failure:
            self.status = "failed" if report.when == "call" else "error"
            crash = getattr(report.longrepr, "reprcrash", None)
            self.details = report.longreprtext or None
            self.message = getattr(crash, "message", None) or (
                self.details.partition("\n")[0] if self.details else None
            )
            self.stdout = report.capstdout or None
            self.stderr = report.capstderr or None
        elif report.skipped and self.status == "passed":
            self.status = "skipped"
            if hasattr(report, "wasxfail"):
                reason = report.wasxfail
                self.message = f"expected failure: {reason}" if reason else "expected failure"
            elif isinstance(report.longrepr, tuple):
                self.message = str(report.longrepr[2]).removeprefix("Skipped: ")


def junit_xml(attempts: dict[str, list[_Attempt]]) -> bytes:
    """The attempts as JUnit XML, one ``<testcase>`` per attempt in the order they ran.

    The suite has no name, so a test's identity on the server is exactly the one its node id
    gives (:meth:`TestKey.from_nodeid`), which is what shard plans are requested with.
    """
    root = ElementTree.Element("testsuites")
    total = sum(len(runs) for runs in attempts.values())
    suite = ElementTree.SubElement(root, "testsuite", tests=str(total))
    for nodeid, runs in attempts.items():
        key = TestKey.from_nodeid(nodeid)
        for attempt in runs:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                file=_xml(key.file),
                classname=_xml(key.classname),
                name=_xml(key.name),
                time=f"{attempt.seconds:.6f}",
            )
            if attempt.status != "passed":
                tag = {"failed": "failure", "error": "error"}.get(attempt.status, "skipped")
                result = ElementTree.SubElement(case, tag, message=_xml(attempt.message or ""))
                result.text = _xml(attempt.details) if attempt.details else None
            for tag, text in (("system-out", attempt.stdout), ("system-err", attempt.stderr)):
                if text:
                    ElementTree.SubElement(case, tag).text = _xml(text)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _xml(text: str) -> str:
    return _NOT_XML.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
