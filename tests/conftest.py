"""Shared fixtures: the real app served over HTTP on loopback, on SQLite or PostgreSQL.

``TESTLENS_TEST_DATABASE_URL`` selects the backend (default: a fresh SQLite file). The
PostgreSQL database is reset once per session; tests isolate themselves by tenant, which is
also how production isolates customers. Only fixtures live here; what they are built from
(servers, tenants, uploads, reports) is in ``builders``, which test modules import directly.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from builders import LiveServer, Tenant, make_tenant
from sqlalchemy import create_engine, make_url, text

from testlens.server.app import create_app
from testlens.server.database import Database, normalize_url
from testlens.server.settings import Settings

pytest_plugins = ["pytester"]


def _reset_postgres(url: str) -> None:
    engine = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    except Exception as exc:
        raise RuntimeError(f"PostgreSQL test database unreachable at {url}: {exc}") from exc
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    url = os.environ.get("TESTLENS_TEST_DATABASE_URL") or f"sqlite:///{data_dir / 'test.db'}"
    if url.startswith(("postgres", "postgresql")):
        _reset_postgres(url)
    # The tests' webhook receivers listen on loopback, which the server refuses by default.
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    # Rate limits off: tests that poll would hit them; tests/server/test_rate_limits.py
    # serves apps of its own with them on.
    return Settings(
        database_url=url,
        data_dir=data_dir,
        webhook_allowed_networks=loopback,
        rate_limits_enabled=False,
    )


@pytest.fixture(scope="session")
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture(scope="session")
def database(app) -> Database:
    return app.state.database


@pytest.fixture(scope="session")
def server(app) -> Iterator[LiveServer]:
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def tenant(database: Database, server: LiveServer) -> Iterator[Tenant]:
    """A fresh tenant with an ingest+read key, and an HTTP client that uses it."""
    t = make_tenant(database, server)
    yield t
    t.client.close()


@pytest.fixture
def anonymous(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project whose runs see no testlens or CI variables of this machine."""
    for name in (
        "TESTLENS_SERVER",
        "TESTLENS_TOKEN",
        "TESTLENS_PYTEST",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "CIRCLECI",
        "BUILDKITE",
        "JENKINS_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    return pytester


@pytest.fixture
def scratch_database_url(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: an SQLite file, or a new PostgreSQL database beside the
    suite's (which other tests share, so it is never migrated down or filled here)."""
    if not settings.database_url.startswith(("postgres", "postgresql")):
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    url = make_url(normalize_url(settings.database_url))
    name = f"testlens_scratch_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
