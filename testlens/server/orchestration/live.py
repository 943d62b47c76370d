"""Fan-out of the event log to the streams a process serves, across processes.

Each process keeps one :class:`Hub` of its subscribers (a WebSocket each). When a
transaction that appended events commits, :func:`~.events.on_commit` tells the hub of this
process at once; on PostgreSQL a small ``NOTIFY`` (tenant, build and sequence number only)
tells the others. It is sent after the commit, from a thread that merges the notices of one
build that arrive together, never inside the transaction that stored the events, and every
process holds one ``LISTEN`` connection that wakes its hub. A woken subscriber reads the log
from where it stands, so a merged or lost notice loses nothing. On SQLite, where there is
no ``NOTIFY``, subscribers also read the log every :data:`SQLITE_POLL_SECONDS`, for
processes that share the file.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from .events import Moved, off_commit, on_commit

log = logging.getLogger("testlens.server.live")

CHANNEL = "testlens_events"
SQLITE_POLL_SECONDS = 0.5
"""How often a subscriber reads the log unprompted on SQLite (other processes' events)."""
IDLE_READ_SECONDS = 15.0
"""How often a subscriber reads the log unprompted on PostgreSQL: a safety net only."""
NOTIFY_EVERY = 0.01
"""Seconds the notifier gathers notices before sending them: one NOTIFY per build moved."""


@dataclass(eq=False)
class Subscriber:
    """One stream: the tenant it belongs to, the build it follows (None: all of them), and
    the event that wakes it, set from any thread."""

    tenant_id: str
    build_id: str | None
    loop: asyncio.AbstractEventLoop
    woken: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    """The subscribers of one process, and how many each tenant has."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber] = set()

    def join(self, subscriber: Subscriber, cap: int) -> bool:
        """Add ``subscriber`` unless its tenant has ``cap`` already; whether it was added."""
        with self._lock:
            if sum(1 for s in self._subscribers if s.tenant_id == subscriber.tenant_id) >= cap:
                return False
            self._subscribers.add(subscriber)
            return True

    def leave(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    def wake(self, moved: Sequence[Moved]) -> None:
        """Wake the subscribers of the builds that moved (from any thread)."""
        with self._lock:
            chosen = [
                s
                for s in self._subscribers
                for m in moved
                if s.tenant_id == m.tenant_id and s.build_id in (None, m.build_id)
            ]
        for subscriber in chosen:
            with suppress(RuntimeError):  # its loop has closed: the stream is gone
                subscriber.loop.call_soon_threadsafe(subscriber.woken.set)


HUB = Hub()
"""This process's subscribers: every app of a process serves from one hub."""
on_commit(HUB.wake)


class Notifier:
    """Sends ``NOTIFY`` for the builds that moved, after their commits, from a thread that
    merges the notices of one build gathered within :data:`NOTIFY_EVERY`."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pending: dict[str, Moved] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testlens-notify", daemon=True)

    def __call__(self, moved: Sequence[Moved]) -> None:
        with self._lock:
            for item in moved:
                self._pending[item.build_id] = item
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import psycopg

        connection: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            self._wake.wait()
            self._stop.wait(NOTIFY_EVERY)
            self._wake.clear()
            with self._lock:
                pending, self._pending = list(self._pending.values()), {}
            if not pending:
                continue
            try:
                if connection is None or connection.closed:
                    connection = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
                for moved in pending:
                    connection.execute(
                        "SELECT pg_notify(%s, %s)",
                        (CHANNEL, f"{moved.tenant_id} {moved.build_id} {moved.seq}"),
                    )
            except psycopg.Error as exc:  # subscribers elsewhere read on their own timer
                log.warning("live notices not sent: %s", exc)
                connection = None
        if connection is not None:
            connection.close()


class Listener:
    """The process's ``LISTEN`` connection: wakes the hub for every notice of any process."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testlens-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        # Each notice wakes its subscribers as it arrives: the generator's
                        # timeout bounds the whole wait, which only lets the thread see a stop.
                        for notice in connection.notifies(timeout=1.0):
                            parsed = _parse(notice.payload)
                            if parsed is not None:
                                HUB.wake([parsed])
            except psycopg.Error as exc:
                log.warning("live notices not received (retrying): %s", exc)
                self._stop.wait(2.0)


def _parse(payload: str) -> Moved | None:
    parts = payload.split(" ")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return Moved(parts[0], parts[1], int(parts[2]))


@contextmanager
def fan_out(url: str | None) -> Iterator[None]:
    """Send and receive notices across processes on PostgreSQL (``url``) while the app
    serves; nothing to do on SQLite."""
    if url is None:
        yield
        return
    notifier, listener = Notifier(url), Listener(url)
    notifier.start()
    listener.start()
    on_commit(notifier)
    try:
        yield
    finally:
        off_commit(notifier)
        notifier.stop()
        listener.stop()
