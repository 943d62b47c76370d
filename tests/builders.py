"""Shared builders for the test suite: reports, tenants, servers, uploads and database reads.

Test modules import what they need from here (``from builders import ...``), never from
``conftest`` or from each other; ``conftest`` keeps only the fixtures, built from these.
``tests`` is on ``sys.path`` through ``pythonpath`` in ``[tool.pytest.ini_options]``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import httpx
import uvicorn
from sqlalchemy import func, select

from testlens.core.identity import TestKey
from testlens.server.auth import create_key
from testlens.server.database import Database
from testlens.server.models import Repository, Run, TestCase, TestResult
from testlens.server.models import Tenant as TenantRow

T = TypeVar("T")


def eventually(check: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# Servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on a loopback port, in a background thread."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


# Tenants


@contextmanager
def served(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real ``testlens serve`` process with ``env``, its output in ``log``: yields it and
    its URL once ``/healthz`` answers, and stops it (gracefully, so its log is complete)
    unless the test already did."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("testlens")), "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=5) as client:
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def two_servers(
    database_url: str, directory: Path, **variables: str
) -> Iterator[tuple[str, str, Tenant]]:
    """Two real ``testlens serve`` processes on one database (``TESTLENS_*`` ``variables``
    added, rate limits off unless they say otherwise), their URLs, and a tenant of it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TESTLENS_")},
        "TESTLENS_DATA_DIR": str(directory),
        "TESTLENS_DATABASE_URL": database_url,
        "TESTLENS_RATE_LIMITS_ENABLED": "false",
        **variables,
    }
    with (
        served(env, directory / "first.log") as (_first, first_url),
        served(env, directory / "second.log") as (_second, second_url),
    ):
        database = Database(database_url)
        try:
            tenant = make_tenant(database, SimpleNamespace(url=first_url))
        finally:
            database.dispose()
        try:
            yield first_url, second_url, tenant
        finally:
            tenant.client.close()


@dataclass
class Tenant:
    name: str
    key: str
    key_id: str
    client: httpx.Client

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(database: Database, server: LiveServer, scopes=("ingest", "read")) -> Tenant:
    name = f"team-{uuid.uuid4().hex[:10]}"
    with database.transaction() as session:
        key, secret = create_key(session, name, tuple(scopes))
        key_id = key.id
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=120
    )
    return Tenant(name, secret, key_id, client)


# Uploads and the corpus


def upload(
    client: httpx.Client, content: bytes, filename: str = "report.xml", **fields: str
) -> httpx.Response:
    """POST a report the way CI clients do (multipart form)."""
    form = {"repo": "acme/shop", "framework": "pytest", **fields}
    return client.post("/api/test-results", files={"file": (filename, content)}, data=form)


def corpus_file(*parts: str) -> Path:
    from corpus import REPORTS

    return REPORTS.joinpath(*parts)


# Reports

RERUN_XML = b"""<?xml version="1.0"?>
<testsuites>
  <testsuite name="pytest" tests="4">
    <testcase classname="tests.test_cart" name="test_add" file="tests/test_cart.py" time="0.5"/>
    <testcase classname="tests.test_cart" name="test_pay" file="tests/test_cart.py" time="1.5">
      <failure message="timeout talking to stripe">Traceback...</failure>
    </testcase>
    <testcase classname="tests.test_cart" name="test_pay" file="tests/test_cart.py" time="1.25"/>
    <testcase classname="tests.test_cart" name="test_empty" file="tests/test_cart.py" time="0">
      <skipped message="not yet"/>
    </testcase>
  </testsuite>
</testsuites>
"""


def junit(cases: dict[str, list[str]], classname: str = "tests.test_shop.TestShop") -> bytes:
    """A pytest-style JUnit report; each test lists its attempts' outcomes in order."""
    parts = ['<testsuites><testsuite name="pytest">']
    for name, outcomes in cases.items():
        for outcome in outcomes:
            attrs = f'classname="{classname}" name="{name}" file="tests/test_shop.py" time="0.25"'
            child = {
                "pass": "",
                "fail": '<failure message="boom">trace</failure>',
                "skip": "<skipped/>",
            }[outcome]
            parts.append(f"<testcase {attrs}>{child}</testcase>")
    parts.append("</testsuite></testsuites>")
    return "".join(parts).encode()


def junit_from_durations(seconds: dict[str, float]) -> bytes:
    """A JUnit report as pytest writes it, from node id -> seconds (every test passing)."""
    cases = []
    for nodeid, duration in seconds.items():
        key = TestKey.from_nodeid(nodeid)
        module = key.file.removesuffix(".py").replace("/", ".")
        classname = ".".join(part for part in (module, key.classname.replace("::", ".")) if part)
        cases.append(
            f'<testcase classname="{classname}" name="{key.name}" file="{key.file}" '
            f'time="{duration}"/>'
        )
    return (
        f'<testsuites><testsuite name="pytest" tests="{len(cases)}">{"".join(cases)}'
        "</testsuite></testsuites>"
    ).encode()


STABLE = {f"test_stable_{i}": ["pass"] for i in range(20)}


def ingest_history(client, repo="acme/shop", check="unit"):
    """A retry flake on c1, a regression from c3 on, everything else passing."""
    runs = [
        ("c1", {**STABLE, "test_pay": ["fail", "pass"], "test_login": ["pass"]}),
        ("c2", {**STABLE, "test_pay": ["pass"], "test_login": ["pass"]}),
        ("c3", {**STABLE, "test_pay": ["pass"], "test_login": ["fail"]}),
        ("c4", {**STABLE, "test_pay": ["pass"], "test_login": ["fail"]}),
        ("c5", {**STABLE, "test_pay": ["pass"], "test_login": ["fail"]}),
    ]
    bodies = []
    for commit, cases in runs:
        response = upload(
            client,
            junit(cases),
            repo=repo,
            commit=commit * 8,
            check_name=check,
            provider="github",
            environment="linux",
        )
        assert response.status_code == 201, response.text
        bodies.append(response.json())
    return bodies


# Database reads


def stored(database, tenant_name: str) -> dict[str, int]:
    """Row counts that belong to one tenant, read straight from the database."""
    with database.transaction() as session:
        repos = (
            select(Repository.id)
            .join(TenantRow, TenantRow.id == Repository.tenant_id)
            .where(TenantRow.name == tenant_name)
        )
        runs = session.scalar(select(func.count()).select_from(Run).where(Run.repo_id.in_(repos)))
        tests = session.scalar(
            select(func.count()).select_from(TestCase).where(TestCase.repo_id.in_(repos))
        )
        results = session.scalar(
            select(func.count())
            .select_from(TestResult)
            .join(Run, Run.id == TestResult.run_id)
            .where(Run.repo_id.in_(repos))
        )
    return {"runs": runs, "tests": tests, "results": results}
