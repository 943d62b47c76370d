"""Shared fixtures: the real app served over HTTP on loopback, on SQLite or PostgreSQL.

``TESTLENS_TEST_DATABASE_URL`` selects the backend (default: a fresh SQLite file). The
PostgreSQL database is reset once per session; tests isolate themselves by tenant, which is
also how production isolates customers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from testlens.server.app import create_app
from testlens.server.auth import create_key
from testlens.server.database import Database, normalize_url
from testlens.server.settings import Settings


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
    return Settings(database_url=url, data_dir=data_dir)


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


def upload(
    client: httpx.Client, content: bytes, filename: str = "report.xml", **fields: str
) -> httpx.Response:
    """POST a report the way CI clients do (multipart form)."""
    form = {"repo": "acme/shop", "framework": "pytest", **fields}
    return client.post("/api/test-results", files={"file": (filename, content)}, data=form)


def corpus_file(*parts: str) -> Path:
    from corpus import REPORTS

    return REPORTS.joinpath(*parts)
