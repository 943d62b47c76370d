"""The typed FastAPI dependencies every endpoint takes: the database, the settings, the
server's keys, and the caller (a valid key with the scope the endpoint needs).

Endpoints declare ``principal: ReadPrincipal`` rather than reaching into ``request.app``, so a
handler's signature says what it uses and what it requires.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .auth import Principal, require
from .database import Database
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


DatabaseDep = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]
KeysDep = Annotated[Keys, Depends(_keys)]
IngestPrincipal = Annotated[Principal, Depends(require("ingest"))]
ReadPrincipal = Annotated[Principal, Depends(require("read"))]
AdminPrincipal = Annotated[Principal, Depends(require("admin"))]
