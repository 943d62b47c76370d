"""Run ``testlens serve`` as a real process for a benchmark, and stop it afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from testlens.server.settings import DATABASE_FILE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def testlens_cmd() -> str:
    return str(Path(sys.executable).with_name("testlens"))


PG_ADMIN = os.environ.get("TESTLENS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def scratch_postgres(name: str = "testlens_bench") -> str:
    """A new, empty database ``name`` on the benchmark's PostgreSQL server."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def server_env(backend: str, data_dir: str) -> dict[str, str]:
    """The environment of a server on ``backend``: SQLite in ``data_dir``, or a scratch
    PostgreSQL database."""
    env = {**os.environ, "TESTLENS_DATA_DIR": data_dir}
    env.pop("TESTLENS_DATABASE_URL", None)
    if backend == "postgresql":
        env["TESTLENS_DATABASE_URL"] = scratch_postgres()
    return env


def create_key(env: dict[str, str], tenant: str = "bench", scopes: str = "ingest") -> str:
    """A new key, made with ``testlens keys create`` on a fresh database (so before the
    server starts on it)."""
    return subprocess.run(
        [testlens_cmd(), "keys", "create", "--tenant", tenant, "--scopes", scopes,
         "--create-database"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A live process's resident memory now (``VmRSS``) or at its peak so far (``VmHWM``),
    in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> None:
    """Start measuring a process's peak memory (``VmHWM``) afresh from now (Linux)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass(frozen=True, slots=True)
class Served:
    url: str
    pid: int


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[Served]:
    """Start a server with ``env``; yield it once it answers; its output goes to ``log``."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [testlens_cmd(), "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/healthz").raise_for_status()
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"testlens serve did not start:\n{tail}") from None
                    time.sleep(0.1)
            yield Served(url, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)


@dataclass(frozen=True, slots=True)
class Fresh:
    """A server on a new database, with an ingest key."""

    served: Served
    key: str
    database_url: str

    def client(self, timeout: float = 300) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.served.url, timeout=timeout, headers=headers)


@contextmanager
def fresh_server(backend: str) -> Iterator[Fresh]:
    """``testlens serve`` on a new ``backend`` database (see :func:`server_env`) and a key."""
    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(backend, tmp)
        database_url = env.get("TESTLENS_DATABASE_URL", f"sqlite:///{tmp}/{DATABASE_FILE}")
        key = create_key(env)
        with serving(env, Path(tmp) / "server.log") as served:
            yield Fresh(served, key, database_url)
