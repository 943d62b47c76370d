"""API keys: the admin API (``/api/keys``) and the ``testlens keys`` commands, run as real
processes against the database the server uses, found the same way by both."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from builders import free_port, make_tenant, upload
from pydantic import BaseModel
from sqlalchemy import select, update

from testlens.server.auth import SCOPES, hash_key
from testlens.server.database import Database
from testlens.server.keys import KeyCreated, KeyList, Scope
from testlens.server.models import ApiKey
from testlens.server.settings import Settings, default_data_dir

TESTLENS = str(Path(sys.executable).with_name("testlens"))


def conforms(model: type[BaseModel], data: Any) -> None:
    """``data`` is exactly a ``model``: it validates, and has no field the model lacks."""
    assert model.model_validate(data).model_dump(mode="json") == data


# The admin API


@pytest.fixture
def admin(database, server) -> Iterator[Any]:
    owner = make_tenant(database, server, scopes=("admin",))
    yield owner
    owner.client.close()


def test_an_admin_key_creates_lists_and_revokes_its_tenants_keys(admin, server):
    created = admin.client.post("/api/keys", json={"name": "ci-bot", "scopes": ["ingest"]})
    assert created.status_code == 201, created.text
    body = created.json()
    conforms(KeyCreated, body)
    secret = body["secret"]
    assert secret.startswith("tl_sk_") and body["prefix"] == secret[:14]
    assert (body["name"], body["scopes"], body["current"]) == ("ci-bot", ["ingest"], False)

    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    ) as bot:
        assert upload(bot, b"<testsuite><testcase name='t'/></testsuite>").status_code == 201
        refused = bot.get("/api/repos")
        assert (refused.status_code, refused.json()["code"]) == (403, "INSUFFICIENT_SCOPE")

        listed = admin.client.get("/api/keys")
        assert listed.status_code == 200
        conforms(KeyList, listed.json())
        keys = {key["id"]: key for key in listed.json()["keys"]}
        assert set(keys) == {admin.key_id, body["id"]}
        assert keys[admin.key_id]["current"] and not keys[body["id"]]["current"]
        assert keys[body["id"]]["last_used_at"] is not None  # it just uploaded
        assert keys[body["id"]]["revoked_at"] is None

        revoked = admin.client.delete(f"/api/keys/{body['id']}")
        assert revoked.status_code == 204 and revoked.content == b""
        assert "Testlens-Revoked-Self" not in revoked.headers
        assert revoked.headers["Testlens-Admin-Keys-Left"] == "1"
        after = bot.post("/api/test-results", data={"repo": "acme/shop"})
        assert (after.status_code, after.json()["code"]) == (401, "INVALID_API_KEY")

    again = admin.client.delete(f"/api/keys/{body['id']}")
    assert again.status_code == 204  # revoking twice is no error
    (shown,) = [k for k in admin.client.get("/api/keys").json()["keys"] if k["id"] == body["id"]]
    assert shown["revoked_at"] is not None


def test_new_keys_default_to_ingest_and_read_and_scopes_are_checked(admin):
    plain = admin.client.post("/api/keys", json={})
    assert plain.status_code == 201, plain.text
    assert (plain.json()["scopes"], plain.json()["name"]) == (["ingest", "read"], "")
    twice = admin.client.post("/api/keys", json={"scopes": ["read", "read", "admin"]})
    assert twice.json()["scopes"] == ["read", "admin"]
    for bad in ({"scopes": ["root"]}, {"scopes": []}, {"name": "x" * 201}, {"secret": "mine"}):
        response = admin.client.post("/api/keys", json=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["code"] == "VALIDATION_ERROR"
    assert set(get_args(Scope)) == set(SCOPES)


def test_another_tenants_key_answers_404_and_is_left_alone(admin, database, server):
    other = make_tenant(database, server, scopes=("admin",))
    try:
        response = admin.client.delete(f"/api/keys/{other.key_id}")
        assert (response.status_code, response.json()["code"]) == (404, "NOT_FOUND")
        unknown = admin.client.delete(f"/api/keys/{uuid.uuid4()}")
        assert unknown.status_code == 404
        assert other.client.get("/api/keys").status_code == 200  # still valid
        assert other.key_id not in {k["id"] for k in admin.client.get("/api/keys").json()["keys"]}
    finally:
        other.client.close()


def test_the_keys_api_needs_the_admin_scope(tenant):
    for method, url, kwargs in [
        ("GET", "/api/keys", {}),
        ("POST", "/api/keys", {"json": {"scopes": ["admin"]}}),
        ("DELETE", f"/api/keys/{tenant.key_id}", {}),
    ]:
        response = tenant.client.request(method, url, **kwargs)
        assert (response.status_code, response.json()["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert tenant.client.get("/api/repos").status_code == 200  # not revoked by the attempt


def test_a_key_may_revoke_itself_and_the_answer_says_so(admin, database, server):
    spare = admin.client.post("/api/keys", json={"scopes": ["admin"]}).json()
    response = admin.client.delete(f"/api/keys/{admin.key_id}")
    assert response.status_code == 204
    assert response.headers["Testlens-Revoked-Self"] == "true"
    assert response.headers["Testlens-Admin-Keys-Left"] == "1"  # the spare
    assert admin.client.get("/api/keys").status_code == 401
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {spare['secret']}"}, timeout=60
    ) as client:
        last = client.delete(f"/api/keys/{spare['id']}")
        assert (
            last.headers["Testlens-Revoked-Self"],
            last.headers["Testlens-Admin-Keys-Left"],
        ) == (
            "true",
            "0",
        )


def test_no_secret_or_hash_is_answered_again_or_logged(admin, database, caplog):
    caplog.set_level(logging.DEBUG)
    created = admin.client.post("/api/keys", json={"name": "x"}).json()
    secret = created["secret"]
    listed = admin.client.get("/api/keys").text
    openapi = admin.client.get("/openapi.json").text
    with database.transaction() as session:
        stored = session.scalar(select(ApiKey.key_hash).where(ApiKey.id == created["id"]))
    assert stored == hash_key(secret)
    for text in (listed, caplog.text):
        assert secret not in text and secret[14:] not in text and stored not in text
    assert admin.key not in listed and hash_key(admin.key) not in listed
    assert "key_hash" not in openapi and "key_hash" not in listed


# The `testlens keys` and `testlens db` commands, as processes


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TESTLENS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def environment(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any testlens setting or data directory of this
    machine: a user whose home is ``home``, plus ``settings``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TESTLENS_") and name not in ("XDG_DATA_HOME", "LOCALAPPDATA")
    }
    env.update(HOME=str(home), USERPROFILE=str(home), **settings)
    return env


def database_file(env: dict[str, str]) -> Path:
    """The SQLite file the settings of ``env`` name."""
    return Path(Settings.from_env(env).database_url.split("///", 1)[1])


def on_suite_database(settings: Settings, home: Path) -> dict[str, str]:
    return environment(home, TESTLENS_DATABASE_URL=settings.database_url)


def listed_line(output: str, tenant: str) -> list[str]:
    (line,) = [line for line in output.splitlines() if f"  {tenant}  " in line]
    return line.split("  ")


def test_revoke_takes_the_prefix_as_keys_list_prints_it(settings, server, tmp_path):
    env = on_suite_database(settings, tmp_path)
    tenant = f"team-{uuid.uuid4().hex[:10]}"
    created = run("keys", "create", "--tenant", tenant, env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    ) as client:
        assert client.get("/api/repos").status_code == 200
        listing = run("keys", "list", env=env, cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        key_id, shown = listed_line(listing.stdout, tenant)[:2]
        assert shown == f"{secret[:14]}…" and secret not in listing.stdout

        revoked = run("keys", "revoke", shown, env=env, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.startswith(f"revoked {key_id}")
        answer = client.get("/api/repos")
        assert (answer.status_code, answer.json()["code"]) == (401, "INVALID_API_KEY")
        again = run("keys", "revoke", shown, env=env, cwd=tmp_path)
        assert again.returncode == 0 and "already revoked" in again.stdout
        state = listed_line(run("keys", "list", env=env, cwd=tmp_path).stdout, tenant)[4]
        assert state.startswith("revoked ")

    # The bare prefix, its ASCII-ellipsis form and the id work as well.
    for form in ("{prefix}", "{prefix}...", "{id}"):
        made = run("keys", "create", "--tenant", tenant, env=env, cwd=tmp_path)
        lines = run("keys", "list", env=env, cwd=tmp_path).stdout.splitlines()
        (line,) = [ln for ln in lines if made.stdout.strip()[:14] in ln]
        key_id = line.split("  ")[0]
        named = form.format(prefix=made.stdout.strip()[:14], id=key_id)
        done = run("keys", "revoke", named, env=env, cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.startswith(f"revoked {key_id}"), done


def test_a_prefix_of_several_keys_revokes_none_and_lists_them(tmp_path):
    data = tmp_path / "data"
    env = environment(tmp_path, TESTLENS_DATA_DIR=str(data))
    for _ in range(2):
        made = run("keys", "create", "--tenant", "acme", "--create-database", env=env, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    database = Database(f"sqlite:///{data / 'testlens.db'}")
    try:
        with database.transaction() as session:
            first, second = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
            session.execute(
                update(ApiKey).where(ApiKey.id == second.id).values(prefix=first.prefix)
            )
        ambiguous = run("keys", "revoke", f"{first.prefix}…", env=env, cwd=tmp_path)
        assert ambiguous.returncode == 1
        assert "is the prefix of 2 keys, so none was revoked" in ambiguous.stderr
        assert first.id in ambiguous.stderr and second.id in ambiguous.stderr
        shorter = run("keys", "revoke", "tl_sk_", env=env, cwd=tmp_path)
        assert shorter.returncode == 1 and "2 keys" in shorter.stderr
        unknown = run("keys", "revoke", "tl_sk_nothing…", env=env, cwd=tmp_path)
        assert unknown.returncode == 1
        assert "no key has the id or prefix 'tl_sk_nothing…'" in unknown.stderr
        with database.transaction() as session:
            assert session.scalars(select(ApiKey.revoked_at)).all() == [None, None]
    finally:
        database.dispose()


def serve(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str, Path]:
    """`testlens serve` started in ``cwd``; its process, URL and log."""
    port = free_port()
    log = cwd / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [TESTLENS, "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url, log
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_keys_made_in_any_directory_are_the_running_servers(tmp_path):
    """The README's quick start (serve, then `keys create` from the same directory), and
    `keys create` from anywhere else: with no settings, both use the user's data directory."""
    home, here, elsewhere = tmp_path / "home", tmp_path / "checkout", tmp_path / "elsewhere"
    for folder in (home, here, elsewhere):
        folder.mkdir()
    env = environment(home)
    expected = database_file(env)
    process, url, log = serve(env, here)
    try:
        made = {
            cwd: run("keys", "create", "--tenant", "acme", env=env, cwd=cwd)
            for cwd in (here, elsewhere)
        }
        for cwd, created in made.items():
            assert created.returncode == 0, created.stderr
            key = created.stdout.strip()
            answer = httpx.get(f"{url}/api/repos", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, (cwd, answer.text)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert expected.parent == default_data_dir(env)
    for created in made.values():
        assert f"database: {expected}" in created.stderr.splitlines()
    assert f"(database: {expected})" in log.read_text()
    assert not (here / "testlens-data").exists() and not (elsewhere / "testlens-data").exists()


def test_keys_create_refuses_to_start_a_new_database_unless_asked(tmp_path):
    env = environment(tmp_path)
    path = database_file(env)
    for command in (["keys", "create", "--tenant", "acme"], ["keys", "list"]):
        refused = run(*command, env=env, cwd=tmp_path)
        assert refused.returncode == 1, refused
        assert f"no testlens database at {path}" in refused.stderr
        assert not path.exists()
    assert (
        "--create-database" in run("keys", "create", "--tenant", "a", env=env, cwd=tmp_path).stderr
    )
    created = run("keys", "create", "--tenant", "acme", "--create-database", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert path.is_file()
    listing = run("keys", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 0 and f"{created.stdout.strip()[:14]}…" in listing.stdout


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:{password}@{host}"))


def test_the_commands_name_their_database_without_its_password(settings, tmp_path):
    password = f"pw-{uuid.uuid4().hex[:8]}"
    unreachable = f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/testlens"
    shown = unreachable.replace(password, "***")
    env = environment(tmp_path, TESTLENS_DATABASE_URL=unreachable)
    commands = [
        ["db", "upgrade"],
        ["keys", "create", "--tenant", "acme"],
        ["keys", "list"],
        ["keys", "revoke", "tl_sk_x"],
    ]
    for command in commands:
        done = run(*command, env=env, cwd=tmp_path)
        assert done.returncode == 1, done
        assert f"database: {shown}" in done.stderr and "cannot use the database" in done.stderr
        assert password not in done.stdout + done.stderr
    if settings.database_url.startswith("postgres"):  # trust authentication ignores it
        env = environment(
            tmp_path, TESTLENS_DATABASE_URL=with_password(settings.database_url, password)
        )
        for command in commands[:3]:
            done = run(*command, env=env, cwd=tmp_path)
            assert done.returncode == 0, done
            assert "database: postgresql://postgres:***@" in done.stderr
            assert password not in done.stdout + done.stderr
    data = tmp_path / "data"
    upgraded = run(
        "db", "upgrade", env=environment(tmp_path, TESTLENS_DATA_DIR=str(data)), cwd=tmp_path
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database: {data.resolve() / 'testlens.db'}" in upgraded.stderr


def test_a_database_left_in_testlens_data_is_pointed_out(tmp_path):
    old = tmp_path / "testlens-data"
    made = run(
        "keys",
        "create",
        "--tenant",
        "acme",
        "--create-database",
        env=environment(tmp_path / "home", TESTLENS_DATA_DIR=str(old)),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    listing = run("keys", "list", env=environment(tmp_path / "home"), cwd=tmp_path)
    assert listing.returncode == 1
    assert f"set TESTLENS_DATA_DIR={old.resolve()}" in listing.stderr


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"HOME": "/h"}, "/h/.local/share/testlens"),
        ("linux", {"HOME": "/h", "XDG_DATA_HOME": "/x"}, "/x/testlens"),
        ("linux", {"HOME": "/h", "XDG_DATA_HOME": "relative"}, "/h/.local/share/testlens"),
        ("darwin", {"HOME": "/h"}, "/h/Library/Application Support/testlens"),
        ("win32", {"HOME": "/h", "LOCALAPPDATA": "/L"}, "/L/testlens"),
    ],
)
def test_the_default_data_directory_follows_the_platform(platform, env, expected):
    assert default_data_dir(env, platform) == Path(expected)
