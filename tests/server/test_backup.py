"""``testlens db backup``: a consistent copy of a live SQLite database, taken while a real
server stores uploads, from which a server starts again with everything the copy holds."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from builders import junit, served


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("testlens")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def environment(data_dir: Path) -> dict[str, str]:
    own = {k: v for k, v in os.environ.items() if not k.startswith("TESTLENS_")}
    return {**own, "TESTLENS_DATA_DIR": str(data_dir), "TESTLENS_RATE_LIMITS_ENABLED": "0"}


def post(client: httpx.Client, commit: str) -> str:
    response = client.post(
        "/api/test-results",
        files={"file": ("r.xml", junit({f"test_{i}": ["pass"] for i in range(200)}))},
        data={"repo": "acme/shop", "framework": "pytest", "commit": commit.rjust(40, "0")},
    )
    assert response.status_code == 201, response.text
    return response.json()["run_id"]


def test_a_backup_taken_during_uploads_restores_a_working_server(tmp_path: Path):
    live, restored = tmp_path / "live", tmp_path / "restored"
    env = environment(live)
    copy = tmp_path / "backup.db"
    with served(env, tmp_path / "live.log") as (_process, url):
        key = run_cli(env, "keys", "create", "--tenant", "acme").stdout.strip()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            first = post(client, "a" * 40)
            stop, going = threading.Event(), threading.Event()

            def keep_uploading() -> None:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    post(client, f"{n:x}")
                    going.set()

            uploader = threading.Thread(target=keep_uploading)
            uploader.start()
            try:
                assert going.wait(60)
                backup = run_cli(env, "db", "backup", str(copy))
            finally:
                stop.set()
                uploader.join()
    assert backup.returncode == 0, backup.stderr
    assert f"backed up {live / 'testlens.db'} to {copy}" in backup.stdout
    assert not copy.with_name("backup.db.partial").exists()
    with sqlite3.connect(copy) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        runs = check.execute("SELECT count(*) FROM runs").fetchone()[0]
        results = check.execute("SELECT count(*) FROM test_results").fetchone()[0]
    assert runs >= 2
    assert results == 200 * runs  # whole runs only: one consistent snapshot

    restored.mkdir()
    shutil.copy(copy, restored / "testlens.db")
    with served(environment(restored), tmp_path / "restored.log") as (_process, url):
        answer = httpx.get(f"{url}/api/runs/{first}", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def test_backup_refuses_an_existing_file_and_postgresql(tmp_path: Path):
    env = environment(tmp_path)
    assert run_cli(env, "db", "upgrade").returncode == 0
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"precious")
    refused = run_cli(env, "db", "backup", str(taken))
    assert refused.returncode == 1
    assert "exists" in refused.stderr
    assert taken.read_bytes() == b"precious"
    remote = {**env, "TESTLENS_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    elsewhere = run_cli(remote, "db", "backup", str(tmp_path / "pg.db"))
    assert elsewhere.returncode == 1
    assert "pg_dump" in elsewhere.stderr
