"""The CI-side commands of ``testlens``: parse and upload reports, shard tests, run the
workers of orchestrated runs, list flaky tests, export durations. They talk to the server
only over HTTP (``testlens.cli`` assembles them with the server's own commands)."""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from ..core.durations import format_test_durations
from ..core.identity import TestKey
from ..core.model import ReportError
from ..core.parsers import format_names, parse_report
from ..core.sharding import GROUP_BY, GroupBy
from . import ci_env
from .http import Budget, Client, ServerError
from .sharding import (
    FALLBACKS,
    SERVER_FAILURES,
    Fallback,
    ServerTarget,
    ShardingError,
    describe_failure,
    parse_shard_spec,
    split_tests,
)
from .worker import CALL_BUDGET, DEFAULT_REPORT, Api, Worker, WorkerOptions, run_request

DEFAULT_SERVER = "http://127.0.0.1:8000"
REPORT_SUFFIXES = (".xml", ".json", ".trx", ".jsonl", ".ndjson", ".gz")
_PROGRESS_THRESHOLD = 1024 * 1024
_GZIP_THRESHOLD = 64 * 1024
UPLOAD_BUDGET = 60.0
"""Seconds one uploaded file may take in all: an unresponsive server costs a CI step about
this much per file, then the upload fails with a message."""
STEP_BUDGET = 30.0
"""Seconds ``shard``, ``flaky`` and ``durations export`` may wait for the server in all."""

err = Console(stderr=True, soft_wrap=True)  # CI logs: never wrap a message mid-line


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "format_", type=click.Choice(format_names()), help="Skip detection.")
def parse(file: Path, format_: str | None) -> None:
    """Parse a report and print the normalized JSON.

    A report that is not well-formed XML but could be recovered is printed with
    ``"recovered": true``, and a warning on stderr says what was wrong with it.
    """
    data = file.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        report = parse_report(data, format_)
    except ReportError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    if report.recovered:
        _warn(
            f"{file} is not well-formed XML; what its damaged parts hold was read by guesswork "
            f"({report.recovered_reason})"
        )
    json.dump(report.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")


def expand_paths(patterns: tuple[str, ...]) -> list[Path]:
    """Files named by paths, globs (``**`` allowed) or directories (searched for reports)."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [pattern]
        for match in sorted(matches):
            path = Path(match)
            if path.is_dir():
                for child in sorted(path.rglob("*")):
                    if child.is_file() and child.name.lower().endswith(REPORT_SUFFIXES):
                        found[child] = None
            elif path.is_file():
                found[path] = None
    return list(found)


class _ProgressReader(io.RawIOBase):
    """A readable body that advances a progress bar as httpx streams it."""

    def __init__(self, data: bytes, progress: Progress | None, task: Any) -> None:
        self._buffer = io.BytesIO(data)
        self._progress = progress
        self._task = task

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._buffer.read(size)
        if self._progress is not None:
            self._progress.advance(self._task, len(chunk))
        return chunk


def _upload_one(client: Client, path: Path, fields: dict[str, str]) -> dict:
    raw = path.read_bytes()
    compress = len(raw) >= _GZIP_THRESHOLD and raw[:2] != b"\x1f\x8b"
    body = gzip.compress(raw, 6) if compress else raw
    progress = None
    if len(body) >= _PROGRESS_THRESHOLD:
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
            transient=True,
        )
    with progress or nullcontext():

        def content() -> dict[str, Any]:
            task = progress.add_task(path.name, total=len(body)) if progress else None
            reader = _ProgressReader(body, progress, task)
            return {"files": {"file": (path.name + (".gz" if compress else ""), reader)}}

        response = client.request("POST", "/api/test-results", data=fields, content_factory=content)
    return response.json()


def _report_format(path: Path) -> str:
    """The format of the report in ``path``; ReportError when it is not a test report."""
    data = path.read_bytes()
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise ReportError(f"invalid gzip data: {exc}") from None
    return parse_report(data).format


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--repo", help="owner/repo (default: from the CI environment)")
@click.option("--branch")
@click.option("--commit")
@click.option("--framework", help="Test framework (default: the detected report format)")
@click.option("--environment", help="Where the tests ran, e.g. linux-py3.12")
@click.option("--check-name")
@click.option("--pr-number")
@click.option("--workflow-run-id")
@click.option(
    "--root",
    metavar="DIR",
    help="The repository's directory where the tests ran: absolute test file paths below it "
    "are stored relative to it (default: the CI's checkout directory, else the git work tree "
    "of the current directory).",
)
@click.option("--server", envvar="TESTLENS_SERVER", default=DEFAULT_SERVER, show_default=True)
@click.option("--token", envvar="TESTLENS_TOKEN", help="API key (or TESTLENS_TOKEN)")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=UPLOAD_BUDGET,
    show_default=True,
    envvar="TESTLENS_TIMEOUT",
    help="Seconds one file may take in all, retries included (or TESTLENS_TIMEOUT).",
)
def upload(
    paths: tuple[str, ...],
    server: str,
    token: str | None,
    timeout: float,
    **options: str | None,
) -> None:
    """Upload test reports (files, globs or directories) to the server.

    Each file's format is detected on its own; a file that is not a test report is skipped
    with a warning. The exit status is 1 when an upload failed or nothing was uploaded.
    """
    files = expand_paths(paths)
    if not files:
        raise click.UsageError(f"no report files match: {' '.join(paths)}")
    environment = options.get("environment") or ci_env.runner_environment(
        os.environ, options.get("check_name")
    )
    fields = ci_env.run_fields({**options, "environment": environment})
    if "repo" not in fields:
        raise click.UsageError("--repo is required outside a recognised CI")
    failures = uploaded = 0
    with Client(server, token, timeout=timeout) as client:
        for path in files:
            try:
                detected = _report_format(path)
            except (OSError, ReportError) as exc:
                _warn(f"{path}: skipped, not a test report: {exc}")
                continue
            client.budget = Budget(timeout)
            file_fields = {**fields, "framework": options.get("framework") or detected}
            try:
                body = _upload_one(client, path, file_fields)
            except ServerError as exc:
                err.print(f"[red]{path}: server said {exc.status} {exc.code}: {exc.message}")
                failures += 1
                continue
            except httpx.HTTPError as exc:
                err.print(f"[red]{path}: could not reach {server}: {exc}")
                failures += 1
                continue
            uploaded += 1
            click.echo(
                f"{path}: {body['tests_processed']} tests, "
                f"{body['flaky_detected']} flaky, run {body['run_id']}"
            )
    if failures or not uploaded:
        skipped = len(files) - uploaded - failures
        err.print(
            f"[red]testlens: {uploaded} of {len(files)} files uploaded"
            f" ({failures} failed, {skipped} skipped)"
        )
        sys.exit(1)


# --- sharding ----------------------------------------------------------------------------


def read_tests(arguments: tuple[str, ...]) -> list[str]:
    """Test ids from arguments: an id, ``@FILE`` (one id per line) or ``-`` (standard input).

    Blank lines and surrounding spaces are dropped, so ``pytest --collect-only -q`` output
    filtered to its ids can be piped in as it is.
    """
    tests: list[str] = []
    for argument in arguments:
        if argument == "-":
            lines = sys.stdin.read().splitlines()
        elif argument.startswith("@"):
            try:
                lines = Path(argument[1:]).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise click.BadParameter(f"cannot read {argument[1:]}: {exc}") from None
        else:
            lines = [argument]
        tests.extend(stripped for line in lines if (stripped := line.strip()))
    return tests


def _warn(message: str) -> None:
    click.echo(f"testlens: warning: {message}", err=True)


@click.command()
@click.argument("tests", nargs=-1, required=True)
@click.option("--shards", type=click.IntRange(min=1), help="Number of shards (K).")
@click.option(
    "--index",
    "index_spec",
    required=True,
    metavar="I|I/K",
    help="This node's shard, counted from 0; I/K also gives the number of shards.",
)
@click.option(
    "--group-by",
    type=click.Choice(GROUP_BY),
    default="none",
    show_default=True,
    help="Keep the tests of one file or suite on one shard.",
)
@click.option(
    "--durations",
    "durations_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="pytest-split .test_durations or knapsack report, used without a server.",
)
@click.option("--plan-id", help="Use this server plan instead of the CI run's.")
@click.option(
    "--plan-key",
    help="The CI run's identity, shared by its nodes (default: from the CI environment, "
    "e.g. github/<run id>/<job>).",
)
@click.option(
    "--fallback",
    type=click.Choice(FALLBACKS),
    default="all",
    show_default=True,
    help="Without the run's plan: print every test (none is skipped), split locally, or fail.",
)
@click.option("--server", envvar="TESTLENS_SERVER", help="Server URL (or TESTLENS_SERVER).")
@click.option("--token", envvar="TESTLENS_TOKEN", help="API key (or TESTLENS_TOKEN)")
@click.option("--repo", help="owner/repo (default: from the CI environment)")
@click.option("--environment", help="Durations of this environment, e.g. linux-py3.12")
def shard(
    tests: tuple[str, ...],
    shards: int | None,
    index_spec: str,
    group_by: GroupBy,
    durations_file: Path | None,
    plan_id: str | None,
    plan_key: str | None,
    fallback: Fallback,
    server: str | None,
    token: str | None,
    repo: str | None,
    environment: str | None,
) -> None:
    """Print this node's share of TESTS, one per line, in the order they were given.

    TESTS are test ids (pytest node ids, or spec files for knapsack), @FILE for a file of
    ids, one per line, or - for standard input. Every node gets the same split from the same
    tests, in any order. With a server, the nodes of one CI run share the run's plan, which
    follows each test's history; a node that cannot get it prints every test unless
    --fallback says otherwise. Without a server (or a CI run key), --durations is used, else
    every test counts the same.
    """
    try:
        index, shards = parse_shard_spec(index_spec, shards)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--index") from None
    if plan_id and not server:
        raise click.UsageError("--plan-id needs --server (or TESTLENS_SERVER)")
    target = None
    if server:
        context = ci_env.detect(os.environ)
        repo = repo or context.repo
        key = plan_key or ci_env.run_key(os.environ)
        if repo:
            target = ServerTarget(server, token, repo, environment, key, context.workflow_run_id)
        else:
            _warn("no repository (--repo, or a recognised CI): not asking the server")
    ids = read_tests(tests)
    try:
        split = split_tests(
            ids,
            shards,
            group_by=group_by,
            server=target,
            plan_id=plan_id,
            durations=durations_file,
            fallback=fallback,
            budget=Budget(STEP_BUDGET),
        )
    except ShardingError as exc:
        raise click.ClickException(f"{exc} (--fallback fail)") from None
    for warning in split.warnings:
        _warn(warning)
    if split.plan_id:
        click.echo(f"testlens: plan-id {split.plan_id}", err=True)
    selected = split.shards[index]
    click.echo(
        f"testlens: shard {index}/{shards}: {len(selected)} of {len(set(ids))} tests "
        f"({split.source})",
        err=True,
    )
    if selected:
        sys.stdout.write("\n".join(selected) + "\n")


def _get_json(
    client: Client, server: str, path: str, params: Mapping[str, str | int]
) -> httpx.Response:
    """GET from the server, turning its refusals and a dead server into readable exits."""
    try:
        return client.request("GET", path, params=params)
    except ServerError as exc:
        raise click.ClickException(f"server said {exc.status} {exc.code}: {exc.message}") from None
    except httpx.HTTPError as exc:
        raise click.ClickException(f"could not reach {server}: {exc}") from None


@click.command()
@click.option("--repo", help="owner/repo (default: from the CI environment)")
@click.option("--check-name", help="Only tests seen under this CI check.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--server", envvar="TESTLENS_SERVER", default=DEFAULT_SERVER, show_default=True)
@click.option("--token", envvar="TESTLENS_TOKEN", help="API key (or TESTLENS_TOKEN)")
def flaky(
    repo: str | None, check_name: str | None, as_json: bool, server: str, token: str | None
) -> None:
    """List the repository's flaky tests of the last 30 days, newest first."""
    repo = repo or ci_env.detect(os.environ).repo
    if not repo:
        raise click.UsageError("--repo is required outside a recognised CI")
    params: dict[str, str | int] = {"repo": repo}
    if check_name:
        params["github_check_name"] = check_name
    cases: list[dict[str, Any]] = []
    with Client(server, token, budget=Budget(STEP_BUDGET)) as client:
        page = 1
        while True:
            response = _get_json(client, server, "/api/v1/testdeck/flaky", {**params, "page": page})
            cases.extend(response.json()["test_cases"])
            if 'rel="next"' not in response.headers.get("link", ""):
                break
            page += 1
    if as_json:
        json.dump({"repo": repo, "test_cases": cases}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not cases:
        click.echo(f"{repo}: no flaky tests in the last 30 days")
        return
    table = Table(title=f"Flaky tests of {repo} ({len(cases)})")
    for column in ("test", "class", "first seen", "last seen", "last 24 h"):
        table.add_column(column, justify="right" if column == "last 24 h" else "left")
    for case in cases:
        table.add_row(
            case["name"],
            case["class_name"],
            case["first_occurrence"],
            case["last_occurrence"],
            str(case["last_24_hours_count"]),
        )
    Console(width=200).print(table)


@click.group()
def durations() -> None:
    """Test durations predicted by the server from each test's history."""


@durations.command("export")
@click.option(
    "-o",
    "--output",
    default=".test_durations",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="File to write, or -.",
)
@click.option("--repo", help="owner/repo (default: from the CI environment)")
@click.option("--environment", help="Durations of this environment, e.g. linux-py3.12")
@click.option("--server", envvar="TESTLENS_SERVER", default=DEFAULT_SERVER, show_default=True)
@click.option("--token", envvar="TESTLENS_TOKEN", help="API key (or TESTLENS_TOKEN)")
def durations_export(
    output: str, repo: str | None, environment: str | None, server: str, token: str | None
) -> None:
    """Write pytest-split's .test_durations (seconds per node id) from the server.

    Each test gets its predicted median duration, so pytest-split, or testlens shard
    --durations, can split without reaching the server.
    """
    repo = repo or ci_env.detect(os.environ).repo
    if not repo:
        raise click.UsageError("--repo is required outside a recognised CI")
    params = {"repo": repo, **({"environment": environment} if environment else {})}
    with Client(server, token, budget=Budget(STEP_BUDGET)) as client:
        body = _get_json(client, server, "/api/durations", params).json()
    # The server's node ids, not ones rebuilt from the fields: it knows pytest's JUnit XML
    # spells classes as dotted module paths that are no part of a node id.
    predicted = {TestKey.from_nodeid(test["nodeid"]): test["p50_ms"] for test in body["tests"]}
    if not predicted:
        _warn(
            f"the server has no durations for {repo} in environment "
            f"{body.get('environment') or '(none)'}"
        )
    text = format_test_durations(predicted)
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"{output}: {len(predicted)} tests", err=True)


# --- orchestrated runs --------------------------------------------------------------------


class _FileListCommand(click.Command):
    """A command whose ``--files`` takes several values, as a shell glob expands them:
    ``--files a.py b.py`` is read as ``--files a.py --files b.py``, up to the next option
    or ``--``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _spread_files(args))


def _spread_files(args: list[str]) -> list[str]:
    spread: list[str] = []
    taking = False
    for position, argument in enumerate(args):
        if argument == "--":
            return spread + args[position:]
        if taking and not argument.startswith("-"):
            spread += ["--files", argument]
        elif argument == "--files":
            taking = True
        else:
            taking = False
            spread.append(argument)
    return spread


def _run_list(files: tuple[str, ...], tests_from: str | None) -> list[str]:
    """The run's list: files (globs expanded, ``**`` too), or the files and test ids
    (``file::name``) of ``--tests-from``, in the order given."""
    if files and tests_from:
        raise click.UsageError("give the run's list with --files or with --tests-from, not both")
    if tests_from:
        entries = read_tests(("-",) if tests_from == "-" else (f"@{tests_from}",))
    else:
        entries = []
        for pattern in files:
            if glob.has_magic(pattern):
                entries.extend(sorted(glob.glob(pattern, recursive=True)))
            else:
                entries.append(pattern)
    if not entries:
        raise click.UsageError("the run's list is empty (--files or --tests-from)")
    return list(dict.fromkeys(entries))


def _run_body(
    entries: list[str],
    workers: int,
    ci_build_id: str | None,
    strategy: str,
    *,
    repo: str | None,
    environment: str,
    branch: str | None,
    commit: str | None,
) -> dict[str, Any]:
    """The request that creates or joins the run, the repository, branch and commit taken
    from the CI where not given."""
    context = ci_env.detect(os.environ)
    return run_request(
        entries,
        workers=workers,
        project=repo or context.repo,
        ci_build_id=ci_build_id,
        strategy=strategy,
        environment=environment,
        branch=branch or context.branch,
        commit=commit or context.commit,
    )


def _ci_build_id() -> str | None:
    """The default ``ciBuildId``: the CI run and job, as ``testlens shard`` keys its plans (the
    same for every node and for a retried attempt). The server keeps the runs of one
    ``ciBuildId`` apart by environment, so the legs of a matrix on different platforms get
    runs of their own."""
    return ci_env.run_key(os.environ)


def _run_options(func: Any) -> Any:
    """The options that describe a run to create, shared by ``orchestrate`` and ``worker``."""
    options = [
        click.option(
            "--files",
            multiple=True,
            metavar="FILE...",
            help="The run's test files, relative to the repository root (globs allowed).",
        ),
        click.option(
            "--tests-from",
            metavar="FILE|-",
            help="Read the run's files or test ids (file::name) from FILE, one a line, or -.",
        ),
        click.option("--repo", help="owner/repo (default: from the CI environment)"),
        click.option(
            "--ci-build-id",
            help="The CI build's identity, the same for every worker and for a retried "
            "attempt (default: the CI run and job; runs are kept apart by environment).",
        ),
        click.option(
            "--strategy",
            type=click.Choice(["queue", "static"]),
            default="queue",
            show_default=True,
            help="queue: workers take the next batch when free; static: node I gets shard I.",
        ),
        click.option(
            "--environment",
            help="Whose durations predict the run, and where its tests run (default: the "
            "runner's OS, architecture and CI job, as testlens upload says).",
        ),
        click.option("--branch"),
        click.option("--commit"),
        click.option(
            "--server", envvar="TESTLENS_SERVER", default=DEFAULT_SERVER, show_default=True
        ),
        click.option("--token", envvar="TESTLENS_TOKEN", help="API key (or TESTLENS_TOKEN)"),
        click.option(
            "--timeout",
            type=click.FloatRange(min=1),
            default=CALL_BUDGET,
            show_default=True,
            envvar="TESTLENS_TIMEOUT",
            help="Seconds one call to the server (an upload too) may take, retries "
            "included (or TESTLENS_TIMEOUT).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command(cls=_FileListCommand)
@_run_options
@click.option(
    "--workers",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Machines the run expects.",
)
def orchestrate(
    files: tuple[str, ...],
    tests_from: str | None,
    workers: int,
    repo: str | None,
    ci_build_id: str | None,
    strategy: str,
    environment: str | None,
    branch: str | None,
    commit: str | None,
    server: str,
    token: str | None,
    timeout: float,
) -> None:
    """Create an orchestrated run (or join the CI build's) and print its id alone on stdout.

    For RUN_ID=$(testlens orchestrate ...) in a step before the workers'; the plan goes to
    stderr. Workers that create or join the run themselves (testlens worker --files ...)
    need no such step.
    """
    body = _run_body(
        _run_list(files, tests_from),
        workers,
        ci_build_id or _ci_build_id(),
        strategy,
        repo=repo,
        environment=environment or ci_env.runner_environment(os.environ),
        branch=branch,
        commit=commit,
    )
    with Api(server, token, timeout) as api:
        try:
            answer, created = api.create(body)
            run_id = str(answer["runId"])
        except SERVER_FAILURES as exc:
            raise click.ClickException(describe_failure(exc, server)) from None
    click.echo(run_id)
    click.echo(
        f"testlens: {'created' if created else 'joined'} run {run_id} ({strategy}): "
        f"{answer.get('totalTests')} tests in {len(body['testFiles'])} files for "
        f"{answer.get('workerCount')} workers",
        err=True,
    )
    for shard in answer.get("shards") or []:
        seconds = float(shard.get("estimatedDuration") or 0) / 1000
        click.echo(
            f"testlens:   shard {shard.get('index')}: {shard.get('testCount')} tests, "
            f"~{seconds:.1f} s",
            err=True,
        )


@click.command(
    cls=_FileListCommand,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--run", "run_id", help="The run to work for (default: create or join the CI's).")
@_run_options
@click.option(
    "--workers",
    type=click.IntRange(1, 20),
    help="Machines the run expects, when this worker creates it (default: the CI's node "
    "count, else 5).",
)
@click.option(
    "--report",
    default=DEFAULT_REPORT,
    show_default=True,
    help="Glob of the report files the command writes, {batch} being the batch id (** allowed).",
)
@click.option(
    "--node-index",
    type=click.IntRange(min=0),
    envvar="TESTLENS_NODE_INDEX",
    help="This machine's CI node index, from 0 (default: from the CI environment).",
)
@click.option(
    "--node-total",
    type=click.IntRange(min=1),
    envvar="TESTLENS_NODE_TOTAL",
    help="The CI's node count, for the split without a server (default: from the CI).",
)
@click.option(
    "--fixed",
    is_flag=True,
    help="A retried CI job reruns everything its node ran, not only what failed.",
)
def worker(
    command: tuple[str, ...],
    run_id: str | None,
    files: tuple[str, ...],
    tests_from: str | None,
    workers: int | None,
    report: str,
    node_index: int | None,
    node_total: int | None,
    fixed: bool,
    repo: str | None,
    ci_build_id: str | None,
    strategy: str,
    environment: str | None,
    branch: str | None,
    commit: str | None,
    server: str,
    token: str | None,
    timeout: float,
) -> None:
    """Run batches of an orchestrated run with COMMAND until its queue is empty.

    COMMAND gets each batch's files or tests in place of an argument {files} (or appended),
    {batch} becomes the batch id and {retries} the retries the server allows; it must write
    a report matching --report, which is uploaded. For example:

    \b
        testlens worker --files 'tests/**/test_*.py' \\
            -- pytest {files} --junitxml=testlens-batch-{batch}.xml

    The exit status is 1 when a test failed or a batch could not be confirmed. Without the
    server, the worker runs this node's share of a local split of the list (see
    docs/orchestration.md).
    """
    entries = _run_list(files, tests_from) if files or tests_from else []
    node = ci_env.node(os.environ)
    index = node.index if node_index is None else node_index
    total = node.total if node_total is None else node_total
    if index is not None and total is not None and index >= total:
        raise click.UsageError(f"node index {index} is not below the node count {total}")
    if strategy == "static" and index is None:
        raise click.UsageError("a static run hands out work by node: give --node-index")
    environment = environment or ci_env.runner_environment(os.environ)
    create = None
    if run_id is None:
        if not entries:
            raise click.UsageError("give --run, or the run's list (--files or --tests-from)")
        build = ci_build_id or _ci_build_id()
        if build is None:
            raise click.UsageError(
                "outside a recognised CI, give --ci-build-id (the same for every worker of "
                "the build) or --run"
            )
        create = _run_body(
            entries,
            workers or total or 5,
            build,
            strategy,
            repo=repo,
            environment=environment,
            branch=branch,
            commit=commit,
        )
    options = WorkerOptions(
        command=command,
        uploader=_upload_one,
        entries=tuple(entries),
        run_id=run_id,
        create=create,
        report=report,
        node_index=index,
        node_total=total,
        rerun=("all" if fixed else "failed") if node.retried else None,
        attempt=node.attempt,
        repo=repo,
        fields=ci_env.run_fields({"branch": branch, "commit": commit, "environment": environment}),
    )
    with Api(server, token, timeout) as api:
        status = Worker(api, options).run()
    sys.exit(status)


@click.group()
def runs() -> None:
    """Builds and orchestrated runs."""


@runs.command("failed")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
@click.option("--server", envvar="TESTLENS_SERVER", default=DEFAULT_SERVER, show_default=True)
@click.option("--token", envvar="TESTLENS_TOKEN", help="API key (or TESTLENS_TOKEN)")
def runs_failed(run_id: str, as_json: bool, server: str, token: str | None) -> None:
    """Print the failed tests of RUN_ID, one test id (file::name) a line.

    For rerunning what failed on any machine: pytest $(testlens runs failed $RUN_ID).
    """
    with Client(server, token, budget=Budget(STEP_BUDGET)) as client:
        body = _get_json(client, server, f"/api/v1/runs/{run_id}/failed-tests", {}).json()
    if as_json:
        json.dump(body, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    ids = dict.fromkeys(f"{test['testFile']}::{test['testName']}" for test in body["failedTests"])
    if ids:
        sys.stdout.write("\n".join(ids) + "\n")
