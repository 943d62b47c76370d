"""The database: engine creation, migrations and the few dialect-specific statements we need.

SQLite (WAL) is the zero-configuration default; PostgreSQL is selected by URL. Everything
else in the server is written once against SQLAlchemy and runs on both.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
"""What a statement fails with when the database does not answer, refuses, or is busy past
every timeout: worth retrying later, unlike any other error."""


def normalize_url(url: str) -> str:
    """Let people write ``postgresql://`` and still get the psycopg 3 driver we ship."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_STATEMENT_TIMEOUT = 120.0


def make_engine(
    url: str,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
) -> Engine:
    """An engine that never waits without bound: on PostgreSQL, connecting gives up after
    ``connect_timeout`` seconds (a server that accepts TCP and never answers would otherwise
    hang start-up and every request), a statement after ``statement_timeout``, and waiting
    for a pooled connection after ``connect_timeout``."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_timeout=connect_timeout,
        connect_args={
            "connect_timeout": max(1, math.ceil(connect_timeout)),
            "options": f"-c statement_timeout={round(statement_timeout * 1000)}",
        },
    )


SQLITE_BUSY_SECONDS = 60.0
"""How long an SQLite write waits for another process's write (the CLI's, another server's):
longer than storing the largest report allowed takes, so it waits its turn rather than fail."""
_MODE = "testlens_transaction"
"""The execution option naming how an SQLite transaction begins (:func:`_sqlite_begin`)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during an ingest; NORMAL sync is durable across app crashes
    # in WAL mode; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={round(SQLITE_BUSY_SECONDS * 1000)}")
    cursor.close()
    # The driver's own implicit BEGIN is always DEFERRED; _sqlite_begin says how instead.
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Connection) -> None:
    """Begin a write transaction IMMEDIATE and a read transaction read-only.

    A DEFERRED transaction that reads, then writes, fails at once with "database is locked"
    when another connection committed meanwhile (its snapshot is stale, and waiting cannot
    help), so writers take the write lock when they begin, waiting their turn. A read cannot
    write by mistake: ``query_only`` makes the attempt fail in every test.
    """
    mode = connection.get_execution_options().get(_MODE)
    connection.exec_driver_sql(f"PRAGMA query_only={int(mode == 'read')}")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (idempotent; run at every start)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


_SQLITE_CHUNK = 5000
"""Values bound per statement: SQLite allows 32,766 parameters per statement (since 3.32)."""


def _identity(value: Any) -> Any:
    return value


class Database:
    """An engine plus a session factory; the app keeps one for its lifetime."""

    def __init__(
        self,
        url: str,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
    ) -> None:
        self.engine = make_engine(url, connect_timeout, statement_timeout)
        self.sessions = sessionmaker(
            self.engine.execution_options(**{_MODE: "write"}), expire_on_commit=False
        )
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{_MODE: "read"}), expire_on_commit=False
        )
        # SQLite has one writer at a time: this process's writers queue here, in order,
        # instead of polling the file lock against each other (which starves some of them).
        self._writer = threading.Lock() if self.dialect == "sqlite" else None
        self._write_wait = max(SQLITE_BUSY_SECONDS, statement_timeout)
        self._writer_thread: int | None = None
        self._pinger = ThreadPoolExecutor(1, thread_name_prefix="testlens-readyz")
        self._ping: Future[None] | None = None
        self._ping_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def listen_url(self) -> str | None:
        """A libpq URL of the database, for connections of its own outside the pool
        (``LISTEN``, ``NOTIFY``); None on SQLite."""
        if self.dialect != "postgresql":
            return None
        url = self.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back everything on any error.

        On SQLite it holds the database's write lock from its start: keep it short, and read
        in :meth:`read` what does not need to be written in the same transaction.
        """
        if self._writer is None:
            with self.sessions() as session, session.begin():
                yield session
            return
        if self._writer_thread == threading.get_ident():
            # It would wait for the lock this thread holds: fail now, not after the timeout.
            raise RuntimeError("a write transaction inside another on SQLite would deadlock")
        if not self._writer.acquire(timeout=self._write_wait):
            raise PoolTimeout(
                f"waited {self._write_wait:g} s for the SQLite write lock; retry shortly"
            )
        self._writer_thread = threading.get_ident()
        try:
            with self.sessions() as session, session.begin():
                yield session
        finally:
            self._writer_thread = None
            self._writer.release()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session that only reads: on SQLite it never waits for, nor blocks, a writer."""
        with self._read_sessions() as session, session.begin():
            yield session

    def one_at_a_time(self, session: Session, name: str) -> None:
        """Wait until no other transaction holds ``name``, then hold it until this one ends.

        For work whose every transaction must see the previous one's writes, such as the
        claims of one queue, without row locks that other transactions take in another
        order. On SQLite every write transaction already runs alone; on PostgreSQL this is
        a transaction-level advisory lock on a 63-bit hash of ``name`` (a collision only
        makes two unrelated names wait for each other).
        """
        if self.dialect != "postgresql":
            return
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest()) >> 1
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def upsert(
        self,
        table: Any,
        keys: list[str],
        update: tuple[str, ...] = (),
        increment: tuple[str, ...] = (),
    ) -> Insert:
        """``INSERT ... ON CONFLICT (keys)``: overwrite ``update`` columns, add to ``increment``
        columns (counters), or do nothing when both are empty."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        statement = dialect.insert(table)
        if not update and not increment:
            return statement.on_conflict_do_nothing(index_elements=keys)
        columns = statement.table.c
        values = {name: statement.excluded[name] for name in update}
        values.update({name: columns[name] + statement.excluded[name] for name in increment})
        return statement.on_conflict_do_update(index_elements=keys, set_=values)

    def to_driver(self, column: ColumnElement[Any]) -> Callable[[Any], Any]:
        """A function giving values as the driver stores them in ``column``, for the rows of
        :meth:`insert_many` (computed once per column, applied per row)."""
        dialect = self.engine.dialect
        processor = column.type.dialect_impl(dialect).bind_processor(dialect)
        return processor or _identity

    def insert_many(
        self,
        connection: Connection,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        conflict: Sequence[str] = (),
        update: Sequence[str] = (),
    ) -> None:
        """Insert many rows at driver speed, inside ``connection``'s transaction.

        Ingest writes tens of thousands of rows per report; SQLAlchemy's per-row parameter
        processing would cost more than the writes. Rows must hold driver-ready values (see
        :meth:`to_driver`). PostgreSQL gets ``COPY`` for plain inserts; SQLite, and upserts
        (``conflict`` keys, ``update`` columns), get one prepared ``executemany``.
        """
        if not rows:
            return
        names = ", ".join(columns)
        driver = connection.connection.driver_connection
        assert driver is not None, "a connection in use has a driver connection"
        cursor = driver.cursor()
        try:
            if self.dialect == "postgresql" and not conflict:
                with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                return
            marker = "%s" if self.dialect == "postgresql" else "?"
            sql = (
                f"INSERT INTO {table.name} ({names}) VALUES ({', '.join([marker] * len(columns))})"
            )
            if conflict:
                action = (
                    "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update)
                    if update
                    else "DO NOTHING"
                )
                sql += f" ON CONFLICT ({', '.join(conflict)}) {action}"
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    def select_many(
        self,
        connection: Connection,
        table: Table,
        columns: Sequence[str],
        key: str,
        values: Sequence[Any],
    ) -> list[tuple[Any, ...]]:
        """The ``columns`` of the rows whose ``key`` is one of ``values``, at driver speed, as
        plain tuples: the read counterpart of :meth:`insert_many`, for the tens of thousands
        of rows ingest reads per report (SQLAlchemy's rows would cost more than the query,
        and the garbage collector walks every object they leave alive)."""
        driver = connection.connection.driver_connection
        assert driver is not None, "a connection in use has a driver connection"
        names = ", ".join(columns)
        cursor = driver.cursor()
        found: list[tuple[Any, ...]] = []
        try:
            if self.dialect == "postgresql":
                sql = f"SELECT {names} FROM {table.name} WHERE {key} = ANY(%s)"
                cursor.execute(sql, (list(values),))
                found.extend(cursor.fetchall())
                return found
            for start in range(0, len(values), _SQLITE_CHUNK):
                chunk = values[start : start + _SQLITE_CHUNK]
                marks = ", ".join("?" * len(chunk))
                cursor.execute(f"SELECT {names} FROM {table.name} WHERE {key} IN ({marks})", chunk)
                found.extend(cursor.fetchall())
            return found
        finally:
            cursor.close()

    def claim_rows(
        self,
        session: Session,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
    ) -> None:
        """Insert the missing ``rows`` and lock all of them, in key order (first column), so
        that concurrent transactions reading and rewriting the same rows take turns instead
        of losing each other's updates. PostgreSQL only: an SQLite write transaction already
        holds the whole database's write lock.

        Only rows not found by a plain read are inserted (``ON CONFLICT DO NOTHING`` still
        waits for, then skips, a concurrent insert of the same key), so a report of known
        tests costs two statements, not an insert attempt per row.
        """
        if self.dialect != "postgresql" or not rows:
            return
        connection = session.connection()
        key = columns[0]
        ordered = sorted(rows, key=lambda row: row[0])
        ids = [row[0] for row in ordered]
        existing = {found for (found,) in self.select_many(connection, table, (key,), key, ids)}
        missing = [row for row in ordered if row[0] not in existing]
        self.insert_many(connection, table, columns, missing, conflict=(key,))
        driver = connection.connection.driver_connection
        assert driver is not None, "a connection in use has a driver connection"
        with driver.cursor() as cursor:
            cursor.execute(
                f"SELECT {key} FROM {table.name} WHERE {key} = ANY(%s) ORDER BY {key} FOR UPDATE",
                (ids,),
            )

    def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def problem(self, within: float) -> str | None:
        """Why the database is not ready, or None; known within ``within`` seconds.

        A hung database holds a ping until the connect timeout: later calls share that ping
        instead of starting more, so readiness checks answer on time and pile nothing up.
        The ping runs on a thread of its own, so a request pool full of waiting requests
        cannot delay the answer either.
        """
        with self._ping_lock:
            if self._ping is None or self._ping.done():
                self._ping = self._pinger.submit(self.ping)
            pending = self._ping
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending)), within)
        except TimeoutError:
            return f"no answer within {within:g} s"
        except Exception as exc:  # any driver error means "not ready"
            return f"{type(exc).__name__}: {str(exc)[:300]}"
        return None

    def dispose(self) -> None:
        self._pinger.shutdown(wait=False)
        self.engine.dispose()
