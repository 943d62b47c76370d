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
import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from fastapi.concurrency import run_in_threadpool

from .events import PAGE, Logged, Moved, off_commit, on_commit

log = logging.getLogger("testlens.server.live")

CHANNEL = "testlens_events"
SQLITE_POLL_SECONDS = 0.5
"""How often a subscriber reads the log unprompted on SQLite (other processes' events)."""
IDLE_READ_SECONDS = 15.0
"""How often a subscriber reads the log unprompted on PostgreSQL: a safety net only."""
NOTIFY_EVERY = 0.01
"""Seconds the notifier gathers notices before sending them: one NOTIFY per build moved."""
FEED_EVENTS = 4096
"""Events a feed keeps in memory for the subscribers of its stream that are close behind."""

Reader = Callable[[int], list[Logged]]
"""Reads the log of one stream after a position (a build's ``seq``, or a tenant's
``tenant_seq``)."""


def position(logged: Logged, by_seq: bool) -> int:
    return logged.seq if by_seq else logged.tenant_seq


class Feed:
    """The recent events of one stream (a build's, or a whole tenant's) in one process,
    read from the log once for all the subscribers that follow it.

    Without it every woken subscriber would read the log itself: a hundred watchers of one
    run would turn each commit into a hundred identical queries. The feed keeps the events
    after ``base`` up to ``end`` that it has read, contiguous, and reads more only when a
    commit was announced since its last read (or when asked to, on a subscriber's timer);
    a subscriber further behind than what it keeps reads the log on its own.
    """

    def __init__(self, by_seq: bool) -> None:
        self.by_seq = by_seq
        self.dirty = True
        self._lock = asyncio.Lock()
        self._events: list[Logged] = []
        self._keys: list[int] = []
        self._base: int | None = None
        self._end: int | None = None
        self._read_at = 0.0

    async def after(
        self, cursor: int, read: Reader, *, max_age: float | None = None
    ) -> list[Logged]:
        """The stream's events after ``cursor`` (at most one page), read once for everyone:
        the log is read when a commit was announced since the last read, or (``max_age``)
        when that read is older than that many seconds."""
        async with self._lock:
            if self._end is None:
                self._base = self._end = cursor
            assert self._base is not None
            stale = max_age is not None and time.monotonic() - self._read_at >= max_age
            if cursor >= self._base and (self.dirty or stale or cursor > self._end):
                self.dirty = False
                self._read_at = time.monotonic()
                self._extend(await run_in_threadpool(read, self._end))
            if not self._base <= cursor <= self._end:
                # Behind what the feed keeps (it may have just let go of it), or ahead of
                # what it has read: this subscriber reads the log on its own.
                return await run_in_threadpool(read, cursor)
            start = bisect.bisect_right(self._keys, cursor)
            return self._events[start : start + PAGE]

    def _extend(self, new: list[Logged]) -> None:
        if not new:
            return
        self._events.extend(new)
        self._keys.extend(position(logged, self.by_seq) for logged in new)
        self._end = self._keys[-1]
        if len(new) == PAGE:
            self.dirty = True  # more may wait: the next call reads on
        if len(self._events) > FEED_EVENTS:
            cut = len(self._events) - FEED_EVENTS
            self._base = self._keys[cut - 1]
            del self._events[:cut], self._keys[:cut]


@dataclass(eq=False)
class Subscriber:
    """One stream: the tenant it belongs to, the build it follows (None: all of them), the
    feed it reads, and the event that wakes it."""

    tenant_id: str
    build_id: str | None
    loop: asyncio.AbstractEventLoop
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    feed: Feed = field(init=False)


FeedKey = tuple[asyncio.AbstractEventLoop, str, str | None]


class Hub:
    """The subscribers of one process, by the feed they share (how many a tenant may have
    open is counted across processes, by :mod:`.connections`).

    A commit wakes each feed of the builds it moved once, in its event loop, and the feed
    its subscribers: a hundred watchers of one run cost one call from the committing thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._feeds: dict[FeedKey, tuple[Feed, set[Subscriber]]] = {}

    def join(self, subscriber: Subscriber) -> None:
        """Add ``subscriber`` to the feed of its tenant and build in its loop."""
        key = (subscriber.loop, subscriber.tenant_id, subscriber.build_id)
        with self._lock:
            feed, members = self._feeds.setdefault(
                key, (Feed(by_seq=subscriber.build_id is not None), set())
            )
            members.add(subscriber)
            subscriber.feed = feed

    def leave(self, subscriber: Subscriber) -> None:
        key = (subscriber.loop, subscriber.tenant_id, subscriber.build_id)
        with self._lock:
            found = self._feeds.get(key)
            if found is None or subscriber not in found[1]:
                return
            found[1].discard(subscriber)
            if not found[1]:
                del self._feeds[key]

    def wake(self, moved: Sequence[Moved]) -> None:
        """Wake the feeds of the builds that moved, and their subscribers (from any
        thread)."""
        with self._lock:
            chosen = [
                (loop, members)
                for (loop, tenant_id, build_id), (_feed, members) in self._feeds.items()
                for m in moved
                if tenant_id == m.tenant_id and build_id in (None, m.build_id)
            ]
        for loop, members in chosen:
            with suppress(RuntimeError):  # its loop has closed: the streams are gone
                loop.call_soon_threadsafe(_wake, members)


def _wake(members: set[Subscriber]) -> None:
    for subscriber in list(members):
        subscriber.feed.dirty = True
        subscriber.woken.set()


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
