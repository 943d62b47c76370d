"""What every table shares: the declarative base, its naming convention, UTC datetimes.

Primary keys are opaque strings (UUIDs, or for test cases a hash of their identity so that
ingest can upsert ten thousand tests without looking any of them up first). Result rows,
the only table that grows with history, use an integer key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; testlens stores UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """UTC times as the seed dialects write them: ISO-8601 with a ``Z``."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """The table of a mapped class, typed as one (``__table__`` is declared as any
    selectable)."""
    return cast(Table, model.__table__)
