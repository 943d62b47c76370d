"""SQLite under load, on a real server process: no request fails, and no read waits, because
another connection holds the database's one write lock."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from builders import served

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TESTLENS_TEST_DATABASE_URL")), reason="SQLite's write lock"
)


def _report(tests: int, seed: int) -> bytes:
    cases = "".join(
        f'<testcase classname="c{seed}" name="t{n}" time="0.01"/>' for n in range(tests)
    )
    return f"<testsuite>{cases}</testsuite>".encode()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A server on an SQLite file of its own, a key nobody has used yet, and the file."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TESTLENS_")},
        "TESTLENS_DATA_DIR": str(tmp_path),
        "TESTLENS_RATE_LIMITS_ENABLED": "0",
    }
    key = subprocess.run(
        [str(Path(sys.executable).with_name("testlens")), "keys", "create", "--tenant", "t",
         "--create-database"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    with served(env, tmp_path / "server.log") as (_process, url):
        yield url, key, tmp_path / "testlens.db"


def test_a_read_with_an_unused_key_answers_while_another_process_holds_the_write_lock(
    sqlite_server,
):
    """Authentication once wrote the key's last use, and so waited behind any write (a long
    upload, the CLI) and failed after the busy timeout."""
    url, key, path = sqlite_server
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # what a long upload holds
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            started = time.monotonic()
            response = client.get("/api/repos", headers={"Authorization": f"Bearer {key}"})
            waited = time.monotonic() - started
    finally:
        writer.rollback()
        writer.close()
    assert response.status_code == 200, response.text
    assert waited < 2, f"the read waited {waited:.1f} s for the write lock"


def test_concurrent_uploaders_and_readers_all_succeed(sqlite_server):
    url, key, path = sqlite_server
    headers = {"Authorization": f"Bearer {key}"}
    statuses: Counter[int] = Counter()
    acknowledged: list[str] = []
    lock = threading.Lock()

    def uploader(number: int) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
            for n in range(4):
                response = client.post(
                    "/api/test-results",
                    files={"file": ("r.xml", _report(100, number * 10 + n))},
                    data={"repo": f"load/app{number}", "framework": "pytest"},
                )
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 201:
                        acknowledged.append(response.json()["run_id"])

    def reader() -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
            for _ in range(20):
                status = client.get("/api/repos").status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=uploader, args=(n,)) for n in range(16)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == {201: 64, 200: 40}
    with sqlite3.connect(path) as connection:
        counts = dict(connection.execute("SELECT run_id, count(*) FROM test_results GROUP BY 1"))
    assert {run: counts.get(run) for run in acknowledged} == dict.fromkeys(acknowledged, 100)
