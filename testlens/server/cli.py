"""The server's commands of ``testlens``: ``serve``, ``db`` and ``keys``.

They run where the server's database is reachable (the same ``TESTLENS_*`` settings as the
server); ``testlens.cli`` imports this module only when one of them is invoked.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)  # CI logs: never wrap a message mid-line


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Start the server (SQLite in ./testlens-data unless TESTLENS_DATABASE_URL is set)."""
    import uvicorn

    from .app import create_app
    from .settings import Settings

    settings = Settings.from_env()
    app = create_app(settings)
    where = settings.database_url.split("@")[-1]
    click.echo(f"testlens serving on http://{host}:{port}  (database: {where})")
    click.echo("Create an API key with:  testlens keys create --tenant <your-team>")
    click.echo(f"API docs: http://{host}:{port}/docs")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _database() -> Any:
    from .database import Database, upgrade
    from .settings import Settings

    database = Database(Settings.from_env().database_url)
    upgrade(database.engine)
    return database


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply all pending migrations."""
    _database().dispose()
    click.echo("database is up to date")


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (run where the server's database is reachable)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant (team) the key belongs to; created if new.")
@click.option("--scopes", default="ingest,read", show_default=True, help="Comma-separated.")
@click.option("--name", default="", help="A label to recognise the key by.")
def keys_create(tenant: str, scopes: str, name: str) -> None:
    """Create a key and print it once; only its hash is stored."""
    from .auth import create_key, parse_scopes

    try:
        scope_list = parse_scopes(scopes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from None
    database = _database()
    with database.transaction() as session:
        key, secret = create_key(session, tenant, scope_list, name)
        key_id = key.id
    database.dispose()
    click.echo(secret)
    err.print(
        f"key {key_id} for tenant '{tenant}' (scopes: {','.join(scope_list)}); "
        "store it now: it is not shown again"
    )


@keys.command("list")
def keys_list() -> None:
    """List keys (prefix, tenant, scopes, last use); secrets are never shown."""
    from .auth import list_keys

    database = _database()
    with database.transaction() as session:
        rows = list_keys(session)
        for key, tenant in rows:
            state = "revoked" if key.revoked_at else "active"
            used = key.last_used_at.isoformat() if key.last_used_at else "never"
            click.echo(
                f"{key.id}  {key.prefix}…  {tenant.name}  {key.scopes}  {state}  "
                f"last used {used}  {key.name}"
            )
    database.dispose()


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id or by its displayed prefix."""
    from .auth import revoke_key

    database = _database()
    with database.transaction() as session:
        key = revoke_key(session, key_id)
    database.dispose()
    if key is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"revoked {key.id}")
