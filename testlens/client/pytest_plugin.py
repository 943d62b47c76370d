"""The pytest plugin: run this node's shard, upload every attempt, let quarantined tests fail.

Installing testlens installs the plugin, so it does nothing unless a run asks for it
(``--testlens``, ``testlens = true`` in the ini file, or ``TESTLENS_PYTEST=1``): a plain
pytest run must not change because a package is installed. Once enabled, nothing it does can
fail the build. A server that is down or refuses costs balance (the shard falls back to a
durations file, then to equal counts), leniency (quarantined tests fail as usual) or history
(the upload is skipped), and says so in the terminal; the exit code stays pytest's own.

Uploads are JUnit XML with one ``<testcase>`` per attempt, pytest-rerunfailures' reruns
included, and identities taken from node ids (``file``, ``classname`` = the classes between
``::``, ``name``), so that the server's durations and shard plans speak pytest node ids.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from ..core.identity import TestKey
from ..core.sharding import GROUP_BY
from . import ci_env
from .http import Budget, Client
from .sharding import (
    CLIENT_OPTIONS,
    FALLBACKS,
    SERVER_FAILURES,
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
        default="all",
        help="Without the run's plan: run every test (all, the default: none is skipped), "
        "split locally (split), or stop (fail).",
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
    elif config.getoption("testlens_shard"):
        # Ignoring it would run every test on every node, which nobody asks for.
        raise pytest.UsageError(
            f"--testlens-shard needs --testlens (or 'testlens = true' in "
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
        self._fallback = option("testlens_fallback")
        self._shard_label: str | None = None  # how this node chose its tests, for the upload
        self._quarantine: bool = option("testlens_quarantine")
        self._upload: bool = not option("testlens_no_upload")
        self._quarantined: dict[str, str] = {}  # node id -> the xfail reason given to it
        self._attempts: dict[str, list[_Attempt]] = {}
        self._collection_notes: list[str] = []
        self._upload_note: tuple[str, bool] | None = None  # (line, is a warning)

    # --- collection: shard and quarantine -------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Runs last, so that the shard is cut from what ``-k``, ``-m`` and other plugins
        left: every node then splits the same list."""
        if self._shard is not None:
            self._select_shard(config, items, *self._shard)
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
        # Under xdist the controller sees every worker's reports and uploads them once.
        if self._upload and self._attempts and not hasattr(session.config, "workerinput"):
            self._upload_note = self._upload_results()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._upload_note is not None:
            line, is_warning = self._upload_note
            terminalreporter.write_sep("-", "testlens")
            terminalreporter.write_line(line, yellow=is_warning)

    def _upload_results(self) -> tuple[str, bool]:
        target = self._target()
        if target is None:
            return f"testlens: warning: results not uploaded: {self._missing()}", True
        fields = ci_env.run_fields(
            {"repo": target.repo, "environment": target.environment, "root": self._root}
        )
        fields["framework"] = "pytest"
        if self._shard_label is not None:
            fields["shard"] = self._shard_label
        attempts = sum(len(runs) for runs in self._attempts.values())
        try:
            report = gzip.compress(junit_xml(self._attempts), 6)
            # Storing a large report takes the server a while: only the budget bounds this one.
            options = {**CLIENT_OPTIONS, "timeout": self._budget.seconds}
            with Client(target.url, target.token, budget=self._budget, **options) as client:
                answer = client.request(
                    "POST",
                    "/api/test-results",
                    data=fields,
                    files={"file": ("pytest-testlens.xml.gz", report)},
                )
            run = answer.json()
            return (
                f"testlens: uploaded {run['tests_processed']} tests ({attempts} attempts, "
                f"{run['flaky_detected']} flaky) as run {run['run_id']}",
                False,
            )
        except Exception as exc:  # whatever it is, an upload must not fail the run
            return (
                f"testlens: warning: results not uploaded: {describe_failure(exc, target.url)}",
                True,
            )


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
