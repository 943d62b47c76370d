"""The server's commands of ``testlens``: ``serve``, ``db``, ``keys`` and ``github``.

They find the database the same way as the server (the same ``TESTLENS_*`` settings; by
default an SQLite file in the per-user data directory, whichever directory they run in), and
say on standard error which database that is. ``testlens.cli`` imports this module only when
one of them is invoked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

# Imported up front: without the server's dependencies this module then fails to import,
# and testlens.cli shows its "needs testlens[server]" stand-in instead of a traceback.
import sqlalchemy  # noqa: F401
import uvicorn
from rich.console import Console

if TYPE_CHECKING:
    from .database import Database
    from .models import ApiKey, Tenant
    from .settings import Settings

err = Console(stderr=True, soft_wrap=True)  # CI logs: never wrap a message mid-line

_FIND_THE_SERVERS = (
    "Run this where the server's database is: start the server first (testlens serve "
    "creates the database), or set TESTLENS_DATA_DIR or TESTLENS_DATABASE_URL as the server has "
    "them."
)


def _settings() -> Settings:
    from .settings import Settings

    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _old_database(settings: Settings) -> str | None:
    """A note when ./testlens-data holds a database (where testlens kept it before the
    per-user default) that is not the one in use."""
    from .settings import DATABASE_FILE, LEGACY_DATA_DIR

    if os.environ.get("TESTLENS_DATA_DIR") or os.environ.get("TESTLENS_DATABASE_URL"):
        return None
    old = (Path(LEGACY_DATA_DIR) / DATABASE_FILE).resolve()
    if not old.is_file() or old == settings.sqlite_path:
        return None
    return (
        f"note: {old} is not used (testlens keeps its database in {settings.data_dir} "
        f"now); to go on using it, set TESTLENS_DATA_DIR={old.parent}"
    )


def _say_database(settings: Settings) -> None:
    click.echo(f"database: {settings.database_shown}", err=True)
    note = _old_database(settings)
    if note:
        click.echo(note, err=True)


def _database(settings: Settings, *, create: bool, hint: str = _FIND_THE_SERVERS) -> Database:
    """The settings' database, migrated; unless ``create``, only if it exists and holds
    testlens's tables (a new, empty one would hold no key the server knows)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from .database import Database, upgrade

    shown = settings.database_shown
    path = settings.sqlite_path
    if not create and path is not None and not path.is_file():
        raise click.ClickException(f"no testlens database at {path}. {hint}")
    database = Database(settings.database_url)
    try:
        if not create and not inspect(database.engine).has_table("alembic_version"):
            raise click.ClickException(f"no testlens tables in {shown} yet. {hint}")
        upgrade(database.engine)
    except SQLAlchemyError as exc:
        database.dispose()
        reason = getattr(exc, "orig", None) or exc
        raise click.ClickException(f"cannot use the database {shown}: {reason}") from None
    except BaseException:
        database.dispose()
        raise
    return database


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Start the server (SQLite in the per-user data directory unless TESTLENS_DATA_DIR or
    TESTLENS_DATABASE_URL says otherwise); creates and migrates the database."""

    from .app import create_app, settle_heap
    from .settings import SettingError

    settings = _settings()
    note = _old_database(settings)
    if note:
        click.echo(note, err=True)
    try:
        app = create_app(settings)
    except SettingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"testlens serving on http://{host}:{port}  (database: {settings.database_shown})")
    click.echo("Create an API key with:  testlens keys create --tenant <your-team>")
    click.echo(f"API docs: http://{host}:{port}/docs")
    settle_heap()
    uvicorn.run(app, host=host, port=port, log_level="info")


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply all pending migrations (creating the database if there is none)."""
    settings = _settings()
    _say_database(settings)
    _database(settings, create=True).dispose()
    click.echo("database is up to date")


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(path: Path) -> None:
    """Copy the SQLite database to PATH, safely while the server runs (PostgreSQL: use
    pg_dump, see docs/operations.md)."""
    settings = _settings()
    _say_database(settings)
    source = settings.sqlite_path
    if source is None:
        raise click.ClickException(
            "the database is not an SQLite file: back PostgreSQL up with pg_dump -Fc "
            "(docs/operations.md)"
        )
    if not source.is_file():
        raise click.ClickException(f"no testlens database at {source}. {_FIND_THE_SERVERS}")
    if path.exists():
        raise click.ClickException(f"{path} exists: name a new file, or remove that one first")
    _sqlite_backup(source, path)
    click.echo(f"backed up {source} to {path}")


def _sqlite_backup(source: Path, target: Path) -> None:
    """SQLite's online backup of ``source`` into ``target``, under a temporary name until it
    is complete (so ``target`` is never a partial copy).

    Copying the file would miss what the WAL holds and could catch a page mid-write; the
    backup API reads one consistent snapshot in a single read transaction, which in WAL mode
    holds no lock that writers wait for, so uploads go on meanwhile.
    """
    import sqlite3

    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    source_db = sqlite3.connect(source)
    target_db = sqlite3.connect(partial)
    try:
        source_db.backup(target_db)
    finally:
        target_db.close()
        source_db.close()
    partial.replace(target)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys, in the server's database (the same settings find
    it; each command says which database it used)."""


def _key_line(key: ApiKey, tenant: Tenant) -> str:
    from .auth import shown_prefix

    state = f"revoked {key.revoked_at.isoformat()}" if key.revoked_at else "active"
    used = key.last_used_at.isoformat() if key.last_used_at else "never"
    return (
        f"{key.id}  {shown_prefix(key)}  {tenant.name}  {key.scopes}  {state}  "
        f"last used {used}  {key.name}"
    )


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant (team) the key belongs to; created if new.")
@click.option("--scopes", default="ingest,read", show_default=True, help="Comma-separated.")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option(
    "--create-database",
    is_flag=True,
    help="Create the database if there is none (by default: refuse, as a key in a new "
    "database is one no running server knows).",
)
def keys_create(tenant: str, scopes: str, name: str, create_database: bool) -> None:
    """Create a key and print it once; only its hash is stored."""
    from .auth import create_key, parse_scopes

    try:
        scope_list = parse_scopes(scopes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from None
    settings = _settings()
    _say_database(settings)
    database = _database(
        settings,
        create=create_database,
        hint=f"{_FIND_THE_SERVERS} To start a new database there, pass --create-database.",
    )
    try:
        with database.transaction() as session:
            key, secret = create_key(session, tenant, scope_list, name)
            key_id = key.id
    finally:
        database.dispose()
    click.echo(secret)
    err.print(
        f"key {key_id} for tenant '{tenant}' (scopes: {','.join(scope_list)}); "
        "store it now: it is not shown again",
        markup=False,
        highlight=False,
    )


@keys.command("list")
def keys_list() -> None:
    """List keys (id, prefix, tenant, scopes, state, last use, name); never secrets."""
    from .auth import list_keys

    settings = _settings()
    _say_database(settings)
    database = _database(settings, create=False)
    try:
        with database.transaction() as session:
            rows = list_keys(session)
            for key, tenant in rows:
                click.echo(_key_line(key, tenant))
    finally:
        database.dispose()
    if not rows:
        click.echo("no keys yet: testlens keys create --tenant <your-team>", err=True)


@keys.command("revoke")
@click.argument("key_id_or_prefix", metavar="KEY")
def keys_revoke(key_id_or_prefix: str) -> None:
    """Revoke the key KEY names: its id, or its prefix as `keys list` shows it (with or
    without the trailing …, or the start of it). A prefix of several keys revokes none."""
    from .auth import find_keys, revoke, shown_prefix

    settings = _settings()
    _say_database(settings)
    database = _database(settings, create=False)
    try:
        with database.transaction() as session:
            found = find_keys(session, key_id_or_prefix)
            if not found:
                raise click.ClickException(
                    f"no key has the id or prefix {key_id_or_prefix!r}; "
                    "testlens keys list shows them"
                )
            if len(found) > 1:
                lines = "\n".join(f"  {_key_line(key, tenant)}" for key, tenant in found)
                raise click.ClickException(
                    f"{key_id_or_prefix!r} is the prefix of {len(found)} keys, so none was "
                    f"revoked; give the id of the one to revoke:\n{lines}"
                )
            key, tenant = found[0]
            newly = revoke(key)
            described = f"{key.id} ({shown_prefix(key)}, tenant '{tenant.name}')"
            revoked_at = key.revoked_at
    finally:
        database.dispose()
    if newly:
        click.echo(f"revoked {described}")
    else:
        when = revoked_at.isoformat() if revoked_at else "before"
        click.echo(f"{described} was already revoked ({when})")


@click.group()
def github() -> None:
    """The GitHub App's installations: which tenant each belongs to (docs/github.md)."""


@github.command("list")
def github_list() -> None:
    """List installations: id, account, tenant (or 'no tenant'), linked repositories."""
    from .github.service import installations

    settings = _settings()
    _say_database(settings)
    database = _database(settings, create=False)
    try:
        found = installations(database)
    finally:
        database.dispose()
    for item in found:
        state = f"removed {item.removed_at.isoformat()}" if item.removed_at else "installed"
        tenant = item.tenant if item.tenant is not None else "(no tenant)"
        linked = f"linked repositories: {item.repositories}"
        click.echo(f"{item.id}  {item.account}  {tenant}  {state}  {linked}")
    if not found:
        click.echo("no installation has sent a delivery yet", err=True)


@github.command("link")
@click.argument("installation_id", type=int)
@click.argument("tenant_name")
def github_link(installation_id: int, tenant_name: str) -> None:
    """Give installation INSTALLATION_ID to tenant TENANT_NAME, and link the repositories it
    has (as its deliveries said) to that tenant now."""
    from .github.service import link

    settings = _settings()
    _say_database(settings)
    database = _database(settings, create=False)
    try:
        names = link(database, installation_id, tenant_name)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        database.dispose()
    click.echo(
        f"installation {installation_id} belongs to tenant '{tenant_name}'; "
        f"{len(names)} repositories linked"
    )
    for name in names:
        click.echo(f"  {name}")
