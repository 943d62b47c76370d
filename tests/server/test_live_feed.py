"""The feed a process shares among the subscribers of one stream: whatever the positions of
its subscribers, how far the log runs ahead, and how much the feed lets go of, each gets
the events after its cursor in order, with no gap, and the log is read once per commit for
all of them rather than once per subscriber."""

from __future__ import annotations

import asyncio
import random

from testlens.server.orchestration import live
from testlens.server.orchestration.events import PAGE, Logged


class Log:
    """A build's log in memory, and how often it was read."""

    def __init__(self) -> None:
        self.events: list[Logged] = []
        self.reads = 0

    def append(self, count: int) -> None:
        start = len(self.events)
        self.events += [
            Logged(start + i + 1, "b", start + i + 1, "test:start", "{}") for i in range(count)
        ]

    def read(self, after: int) -> list[Logged]:
        self.reads += 1
        return self.events[after : after + PAGE]


def test_subscribers_at_any_position_get_every_event_once_in_order():
    async def scenario() -> None:
        log, feed = Log(), live.Feed(by_seq=True)
        rng = random.Random(7)
        cursors = [0] * 30
        received: list[list[int]] = [[] for _ in cursors]
        for _ in range(400):
            log.append(rng.randint(0, 300))  # the log outruns some subscribers by far
            feed.dirty = True
            for index in rng.sample(range(len(cursors)), 8):  # a few of them read each time
                page = await feed.after(cursors[index], log.read)
                received[index] += [logged.seq for logged in page]
                if page:
                    cursors[index] = page[-1].seq
        for index, got in enumerate(received):
            assert got == list(range(1, cursors[index] + 1)), f"subscriber {index}"
        assert max(cursors) > live.FEED_EVENTS  # the feed let go of events on the way

    asyncio.run(scenario())


def test_one_read_serves_every_subscriber_of_a_commit():
    async def scenario() -> None:
        log, feed = Log(), live.Feed(by_seq=True)
        log.append(10)
        first = [await feed.after(0, log.read) for _ in range(50)]
        assert all([e.seq for e in page] == list(range(1, 11)) for page in first)
        assert log.reads == 1
        log.append(5)
        again = [await feed.after(10, log.read) for _ in range(50)]  # no commit announced
        assert again == [[]] * 50 and log.reads == 1
        feed.dirty = True  # a commit was announced
        pages = [await feed.after(10, log.read) for _ in range(50)]
        assert all([e.seq for e in page] == [11, 12, 13, 14, 15] for page in pages)
        assert log.reads == 2

    asyncio.run(scenario())


def test_a_stale_feed_is_read_again_on_a_subscribers_timer():
    async def scenario() -> None:
        log, feed = Log(), live.Feed(by_seq=True)
        assert await feed.after(0, log.read, max_age=0.0) == []
        log.append(3)  # another process's commit: nothing announces it here
        assert await feed.after(0, log.read) == []
        assert [e.seq for e in await feed.after(0, log.read, max_age=0.0)] == [1, 2, 3]

    asyncio.run(scenario())
