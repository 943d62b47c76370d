"""The typed FastAPI dependencies every endpoint takes: the database, the settings, the
server's keys, when keys were last used, and the caller (a valid key with the scope the
endpoint needs).

Endpoints declare ``principal: ReadPrincipal`` rather than reaching into ``request.app``, so a
handler's signature says what it uses and what it requires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth import KeyUsage, Principal, require
from .database import Database
from .errors import API_KEY_SCHEME
from .ratelimit import Charged
from .settings import Settings
from .signing import Keys


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _keys(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


def _key_usage(request: Request) -> KeyUsage:
    usage: KeyUsage = request.app.state.key_usage
    return usage


DatabaseDep = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]
KeysDep = Annotated[Keys, Depends(_keys)]
KeyUsageDep = Annotated[KeyUsage, Depends(_key_usage)]

_API_KEY = HTTPBearer(
    scheme_name=API_KEY_SCHEME,
    description="An API key (tl_sk_...), sent as 'Authorization: Bearer <key>'.",
    auto_error=False,  # auth.require answers a missing or malformed key, in the shared body
)


def _keyed(caller: Callable[..., Any]) -> Callable[..., Principal]:
    """``caller``, declaring the API key it reads, so that the OpenAPI document shows which
    operations need one (and the errors that come with it, see ``errors.with_errors``)."""

    def principal(
        found: Principal = Depends(caller),  # a default: the annotation is a string here
        _key: HTTPAuthorizationCredentials | None = Security(_API_KEY),
    ) -> Principal:
        return found

    return principal


# Each caller's request counts against its tenant's rate limit (ratelimit.py).
IngestPrincipal = Annotated[Principal, Depends(_keyed(Charged(require("ingest"))))]
ReadPrincipal = Annotated[Principal, Depends(_keyed(Charged(require("read"))))]
AdminPrincipal = Annotated[Principal, Depends(_keyed(Charged(require("admin"))))]
