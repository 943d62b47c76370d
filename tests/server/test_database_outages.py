"""A database that hangs or refuses costs a bounded wait and a 503, never a hung server or a
500: start-up gives up, ``/readyz`` answers within a second, ``/healthz`` does not depend on
the database, and API calls answer 503 ``DATABASE_UNAVAILABLE``.

PostgreSQL is reached through a TCP proxy in the test that can forward, go silent (accept and
never answer) or refuse, as a real outage would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from builders import LiveServer, free_port
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError

from testlens.server.app import create_app
from testlens.server.auth import create_key
from testlens.server.database import normalize_url
from testlens.server.settings import Settings

POSTGRES = ("127.0.0.1", 5432)


class Proxy:
    """A loopback TCP proxy to PostgreSQL whose ``mode`` is forward, silent or refuse."""

    def __init__(self) -> None:
        self.mode = "forward"
        self.port = free_port()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            self._open.append(client)
            if self.mode == "silent":
                continue  # accepted, and never a byte back
            upstream = socket.create_connection(POSTGRES)
            self._open.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def switch(self, mode: str) -> None:
        """Change mode and cut every connection made so far, as a failing server would."""
        self.mode = mode
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._open.clear()

    def close(self) -> None:
        self._listener.close()
        self.switch("refuse")


def postgres_reachable() -> bool:
    try:
        psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not postgres_reachable(), reason="needs the PostgreSQL server at 127.0.0.1:5432"
)


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_start_up_against_a_silent_database_gives_up_on_time(silent_port, tmp_path: Path):
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{silent_port}/test",
        data_dir=tmp_path,
        database_timeout_seconds=1,
    )
    started = time.monotonic()
    with pytest.raises(OperationalError):
        create_app(settings)
    assert time.monotonic() - started < 5


@pytest.fixture
def behind_proxy(scratch_database_url: str, tmp_path: Path) -> Iterator[tuple[Proxy, str, str]]:
    """A live server whose PostgreSQL is reached through a :class:`Proxy`; and a key."""
    if not scratch_database_url.startswith("postgres"):
        scratch_database_url = _scratch_postgres()
    proxy = Proxy()
    url = make_url(normalize_url(scratch_database_url)).set(host="127.0.0.1", port=proxy.port)
    settings = Settings(
        database_url=url.render_as_string(hide_password=False),
        data_dir=tmp_path,
        database_timeout_seconds=1,
    )
    app = create_app(settings)
    with app.state.database.transaction() as session:
        _key, secret = create_key(session, f"team-{uuid.uuid4().hex[:8]}")
    live = LiveServer(app).start()
    yield proxy, live.url, secret
    proxy.switch("forward")
    live.stop()
    proxy.close()


def _scratch_postgres() -> str:
    """On the SQLite run, a PostgreSQL database of this module's own."""
    name = f"testlens_outage_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def timed(client: httpx.Client, path: str, **kwargs: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(path, **kwargs)
    return response, time.monotonic() - started


@pytest.mark.parametrize("outage", ["silent", "refuse"])
def test_an_outage_answers_503_on_time_and_health_stays_up(behind_proxy, outage):
    proxy, url, key = behind_proxy
    with httpx.Client(base_url=url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {key}"}
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/repos", headers=auth).status_code == 200
        proxy.switch(outage)
        ready, took = timed(client, "/readyz")
        assert ready.status_code == 503 and took < 2.5, took
        body = ready.json()
        assert body["code"] == "DATABASE_UNAVAILABLE"
        assert "5432" not in body["message"] and str(proxy.port) not in body["message"]
        health, took = timed(client, "/healthz")
        assert health.status_code == 200 and took < 0.5, took
        api, took = timed(client, "/api/repos", headers=auth)
        assert api.status_code == 503, api.text
        assert api.json()["code"] == "DATABASE_UNAVAILABLE"
        assert api.headers["retry-after"] == "5"
        assert took < 6, took
        proxy.switch("forward")
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "ready again once the database is back"
            time.sleep(0.2)
        assert client.get("/api/repos", headers=auth).status_code == 200
