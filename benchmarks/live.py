"""Live events through real ``testlens serve`` processes: how many events a second reach
WebSocket subscribers, and how long each takes from the publisher's POST to each subscriber.

    python benchmarks/live.py [--backends sqlite,postgresql] [--subscribers 1,10,100]
                              [--topologies "one process,two processes"]
                              [--frames event,batched] [--seconds 3] [--max-seconds 2]
                              [--batch 50]

About four minutes with the defaults. For each backend two servers, A and B, share one new
database: SQLite, one file; PostgreSQL, a scratch database ``testlens_bench_live`` on
127.0.0.1:5432 (created and dropped from the ``postgres`` database), where the servers tell
each other of new events with NOTIFY/LISTEN. Both run with ``TESTLENS_WS_MAX_CONNECTIONS=200``
(so that one tenant may hold 100 streams on one process) and rate limits off. A cell is a
topology and a number of subscribers: "one process", the publisher posts to A and the
subscribers follow on A; "two processes", the publisher posts to A and the subscribers follow
on B. Subscribers are WebSockets on ``/api/v1/ws`` that follow one new run (``X-Run-ID``),
with one event a message ("event" frames, the Shifty dialect) or with ``batch=true``
("batched": a JSON array of the events that gathered, a message at most every 50 ms).
The publisher (httpx, async) and the subscribers (websockets with its defaults,
permessage-deflate included, as browsers ask for it) share one asyncio loop in this process;
a subscriber only notes each message's arrival time and text, and the messages are parsed
once the phase is over. A phase starts once a warm-up event (seq 1) has reached every
subscriber. Each cell has two phases, each on a new run:

1. max: ``MAX_PUBLISHERS`` publishers post ``test:start`` events, ``MAX_BATCH`` a request,
   each its next request as soon as the last is answered, for ``--max-seconds``. "per sub"
   is the events one subscriber received within that window, per second (the mean over
   subscribers); "total" is their sum, the fan-out rate of the serving process; compare
   them with "published". What is still on its way at the end is not waited for.
2. 1,000 events/s: a request of ``--batch`` events every ``--batch`` ms (by default 50 events
   every 50 ms, 20 requests a second: runners send what they publish every 0.5 s, so that
   is ten times as often as they would), at most ``PACED_IN_FLIGHT`` requests in flight, for
   ``--seconds``. Each event carries its index and ``time.monotonic()`` read just before its
   request is sent; latency is the time a subscriber received the event less that, p50 and
   p99 over every (subscriber, event) pair. Subscribers are drained (up to
   ``DRAIN_SECONDS``; an event that never came counts as infinitely late) before they close.
   "per sub" is the events a subscriber received over the time from the first request to
   its last receipt. "POST" is the publisher's round trips, part of every latency.

Checked in both phases: each subscriber received seq 1, 2, 3, ... once each, in order, every
event under the seq its request's answer gave it, and (at 1,000/s) every event; in the max
phase, the prefix it had by the end. CPU, over the 1,000/s phase, in % of one core: server A,
server B, this process, PostgreSQL's processes and everything else on the machine ("other":
load that competes with the benchmark; the core count is printed). Target, the issue's: p99
under 250 ms across two processes on PostgreSQL with 100 subscribers at 1,000 events/s;
every row is marked against it. On SQLite there is no NOTIFY: a subscriber on another
process reads the log every ``SQLITE_POLL_SECONDS`` (0.5 s), so across processes that poll
sets its latency. Lines of the servers' logs that mention errors or warnings are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import websockets
from server import PG_ADMIN, Served, create_key, serving
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from testlens.server.orchestration.live import SQLITE_POLL_SECONDS

SCRATCH = "testlens_bench_live"
ADMIN = PG_ADMIN.rsplit("/", 1)[0] + "/postgres"  # CREATE/DROP DATABASE is run from here
WS_CAP = 200
TARGET_P99_MS = 250.0
PACED_RATE = 1000.0  # events/s
PACED_BATCH = 50  # events a request, by default: a request every 50 ms
PACED_IN_FLIGHT = 16
MAX_BATCH = 100
FRAMES = ("event", "batched")
MAX_PUBLISHERS = 2
DRAIN_SECONDS = 60.0
WARM_UP_SECONDS = 30.0
TOPOLOGIES = ("one process", "two processes")
ERROR_WORDS = re.compile(r"traceback|error|warning|exception", re.IGNORECASE)


@contextmanager
def scratch_database(backend: str) -> Iterator[str | None]:
    """A new database URL for ``backend`` (None on SQLite: the servers' data directory)."""
    if backend == "sqlite":
        yield None
        return
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {SCRATCH}")
    try:
        yield ADMIN.rsplit("/", 1)[0] + f"/{SCRATCH}"
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")


@dataclass(frozen=True, slots=True)
class Pair:
    """Two servers on one database, and a key with the ingest and read scopes."""

    a: Served
    b: Served
    key: str


@contextmanager
def two_servers(backend: str, notes: list[str]) -> Iterator[Pair]:
    """Servers A and B on a new ``backend`` database; once they stop, the lines of their logs
    that mention errors or warnings are added to ``notes``."""
    with tempfile.TemporaryDirectory() as tmp, scratch_database(backend) as url:
        env = {
            **os.environ,
            "TESTLENS_DATA_DIR": tmp,
            "TESTLENS_WS_MAX_CONNECTIONS": str(WS_CAP),
            "TESTLENS_RATE_LIMITS_ENABLED": "0",
        }
        env.pop("TESTLENS_DATABASE_URL", None)
        if url is not None:
            env["TESTLENS_DATABASE_URL"] = url
        key = create_key(env, "live", "ingest,read")
        logs = (Path(tmp) / "a.log", Path(tmp) / "b.log")
        with serving(env, logs[0]) as a, serving(env, logs[1]) as b:
            yield Pair(a, b, key)
        for name, log in zip("AB", logs, strict=True):
            notes.extend(odd_lines(f"{backend} server {name}", log.read_text(errors="replace")))


def odd_lines(server: str, log: str) -> list[str]:
    """A few lines of a server's log that mention errors or warnings, and how many there are."""
    odd = [line for line in log.splitlines() if ERROR_WORDS.search(line)]
    if not odd:
        return []
    return [f"{server}: {len(odd)} log lines mention errors or warnings, e.g.:"] + [
        f"  {line[:160]}" for line in odd[:5]
    ]


@dataclass(eq=False)
class Subscriber:
    """One WebSocket and what arrived on it: the monotonic time and the text of every
    message (of a batched stream, each message of a frame, parsed, at the frame's time)."""

    socket: ClientConnection
    batched: bool
    times: list[float] = field(default_factory=list)
    texts: list[str | bytes | dict[str, Any]] = field(default_factory=list)
    want: int = 1
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    leaving: bool = False
    closed: str | None = None  # how the server ended the stream, if it did
    task: asyncio.Task[None] | None = None

    def expect(self, count: int) -> None:
        """Set :attr:`reached` once ``count`` messages have arrived."""
        self.want = count
        if len(self.texts) >= count:
            self.reached.set()
        else:
            self.reached.clear()

    async def read(self) -> None:
        try:
            async for text in self.socket:
                arrived = time.monotonic()
                messages = json.loads(text) if self.batched else [text]
                self.times.extend([arrived] * len(messages))
                self.texts.extend(messages)
                if len(self.texts) >= self.want:
                    self.reached.set()
        except ConnectionClosed as exc:
            received = exc.rcvd
            self.closed = f"closed {received.code} {received.reason!r}" if received else "lost"
        else:
            if not self.leaving:
                self.closed = "closed by the server"

    async def close(self) -> None:
        self.leaving = True
        await self.socket.close()
        if self.task is not None:
            await self.task


async def subscribe(
    base_url: str, key: str, run: str, count: int, batched: bool
) -> list[Subscriber]:
    url = base_url.replace("http", "ws", 1) + "/api/v1/ws" + ("?batch=true" if batched else "")
    headers = {"Authorization": f"Bearer {key}", "X-Run-ID": run}

    async def one() -> Subscriber:
        socket = await websockets.connect(url, additional_headers=headers, open_timeout=60)
        subscriber = Subscriber(socket, batched)
        subscriber.task = asyncio.create_task(subscriber.read())
        return subscriber

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def wait_for(subscribers: Sequence[Subscriber], count: int, timeout: float) -> bool:
    """Wait until every subscriber has ``count`` messages; whether they all did in time."""
    for subscriber in subscribers:
        subscriber.expect(count)
    waits = [asyncio.create_task(s.reached.wait()) for s in subscribers]
    _done, pending = await asyncio.wait(waits, timeout=timeout)
    for task in pending:
        task.cancel()
    return not pending


async def close_all(subscribers: Sequence[Subscriber]) -> None:
    await asyncio.gather(*(s.close() for s in subscribers))


async def new_run(http: httpx.AsyncClient) -> str:
    answer = await http.post("/api/v1/orchestrate", json={"testFiles": ["a.py"], "workerCount": 1})
    answer.raise_for_status()
    return str(answer.json()["runId"])


@dataclass(slots=True)
class Published:
    """What one phase published: the seq the server gave each event index, the time the
    last request was sent, and each request's round trip."""

    seq_of: dict[int, int] = field(default_factory=dict)
    last_sent: float = 0.0
    round_trips: list[float] = field(default_factory=list)

    async def post(self, http: httpx.AsyncClient, run: str, first: int, count: int) -> None:
        sent = time.monotonic()
        events = [
            {"type": "test:start", "payload": {"i": index, "t": sent}}
            for index in range(first, first + count)
        ]
        answer = await http.post(f"/api/v1/runs/{run}/events", json={"events": events})
        self.round_trips.append(time.monotonic() - sent)
        answer.raise_for_status()
        last = int(answer.json()["seq"])
        for offset in range(count):
            self.seq_of[first + offset] = last - count + 1 + offset
        self.last_sent = max(self.last_sent, sent)


async def warm_up(http: httpx.AsyncClient, run: str, subscribers: Sequence[Subscriber]) -> None:
    """Publish one event (seq 1) and wait until every subscriber has it."""
    answer = await http.post(
        f"/api/v1/runs/{run}/events",
        json={"events": [{"type": "test:start", "payload": {"warmUp": True}}]},
    )
    answer.raise_for_status()
    if not await wait_for(subscribers, 1, WARM_UP_SECONDS):
        raise RuntimeError("the warm-up event did not reach every subscriber")


@dataclass(slots=True)
class Examined:
    """One subscriber's messages, checked against what was published."""

    latencies: list[float]
    events: int  # published events received (not the warm-up)
    problems: list[str]


def examine(subscriber: Subscriber, published: Published, complete: bool) -> Examined:
    """Check that ``subscriber`` received seq 1, 2, ... once each, in order, each event under
    the seq its request was answered with, and (``complete``) all of them."""
    messages: list[dict[str, Any]] = [
        text if isinstance(text, dict) else json.loads(text) for text in subscriber.texts
    ]
    seqs = [int(m["seq"]) for m in messages]
    problems: list[str] = []
    if seqs != list(range(1, len(seqs) + 1)):
        repeated = len(seqs) - len(set(seqs))
        backwards = sum(1 for before, after in itertools.pairwise(seqs) if after <= before)
        jumps = sum(1 for before, after in itertools.pairwise(seqs) if after > before + 1)
        problems.append(
            f"seq not 1..{len(seqs)}: {repeated} repeated, {backwards} backwards, {jumps} gaps"
        )
    if complete:
        expected = len(published.seq_of) + 1  # and the warm-up
        missing = expected - len(set(seqs) & set(range(1, expected + 1)))
        if missing:
            problems.append(f"{missing} of {expected} events missing")
    misplaced = 0
    latencies: list[float] = []
    events = 0
    for message, arrived in zip(messages, subscriber.times, strict=True):
        payload = message["payload"]
        if "i" not in payload:
            continue
        events += 1
        if published.seq_of.get(payload["i"]) != message["seq"]:
            misplaced += 1
        latencies.append(arrived - payload["t"])
    if misplaced:
        problems.append(f"{misplaced} events under another seq than they were given")
    if complete:  # an event that never came counts as infinitely late
        latencies.extend([math.inf] * max(0, len(published.seq_of) - events))
    if subscriber.closed is not None:
        problems.append(subscriber.closed)
    return Examined(latencies, events, problems)


def summarize(problems: Sequence[list[str]], phase: str) -> list[str]:
    """``problems`` of each subscriber, as a few lines (how many subscribers had each kind)."""
    counted: dict[str, int] = {}
    example: dict[str, str] = {}
    for found in problems:
        for problem in found:
            kind = "".join(c for c in problem if not c.isdigit())
            counted[kind] = counted.get(kind, 0) + 1
            example.setdefault(kind, problem)
    return [
        f"{phase}: {count} of {len(problems)} subscribers: {example[kind]}"
        for kind, count in counted.items()
    ]


def _ticks(stat: str) -> int:
    """User and system time, in clock ticks, from a ``/proc/PID/stat`` text."""
    after_name = stat.rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds used so far by server A, server B, this process, PostgreSQL's processes
    (every database's: other clients of the server count too) and the whole machine
    (Linux)."""

    a: float
    b: float
    bench: float
    postgres: dict[int, float]  # by process: a connection's process may come and go
    machine: float

    @classmethod
    def take(cls, pair: Pair) -> CpuSample:
        tick = os.sysconf("SC_CLK_TCK")
        postgres: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # the process has gone
                continue
            if text.split(" (", 1)[1].startswith("postgres)"):
                postgres[int(stat.parent.name)] = _ticks(text) / tick
        ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(ticks) - ticks[3] - ticks[4]  # less idle and iowait
        return cls(
            _ticks(Path(f"/proc/{pair.a.pid}/stat").read_text()) / tick,
            _ticks(Path(f"/proc/{pair.b.pid}/stat").read_text()) / tick,
            time.process_time(),
            postgres,
            busy / tick,
        )

    def shares(self, later: CpuSample, seconds: float) -> tuple[float, ...]:
        """% of one core used from this sample to ``later`` by A, B, this process, PostgreSQL
        and everything else on the machine."""
        postgres = sum(used - self.postgres.get(pid, 0.0) for pid, used in later.postgres.items())
        used = [later.a - self.a, later.b - self.b, later.bench - self.bench, postgres]
        other = max(0.0, later.machine - self.machine - sum(used))
        return tuple(100 * value / seconds for value in [*used, other])


@dataclass(frozen=True, slots=True)
class Rates:
    published: float
    per_subscriber: float
    total: float


@dataclass(slots=True)
class Paced:
    rates: Rates
    p50_ms: float
    p99_ms: float
    post_p50_ms: float
    post_p99_ms: float
    drained: bool
    cpu: tuple[float, ...]  # see CpuSample.shares


async def paced_phase(
    http: httpx.AsyncClient,
    pair: Pair,
    subscribers_url: str,
    count: int,
    seconds: float,
    batch_size: int,
    batched: bool,
) -> tuple[Paced, list[str]]:
    run = await new_run(http)
    subscribers = await subscribe(subscribers_url, pair.key, run, count, batched)
    await warm_up(http, run, subscribers)
    published = Published()
    gate = asyncio.Semaphore(PACED_IN_FLIGHT)

    async def post(batch: int) -> None:
        try:
            await published.post(http, run, batch * batch_size, batch_size)
        finally:
            gate.release()

    cpu_before = CpuSample.take(pair)
    interval = batch_size / PACED_RATE
    start = time.monotonic()
    requests: list[asyncio.Task[None]] = []
    for batch in range(round(seconds / interval)):
        delay = start + batch * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        requests.append(asyncio.create_task(post(batch)))
    await asyncio.gather(*requests)
    drained = await wait_for(subscribers, len(published.seq_of) + 1, DRAIN_SECONDS)
    elapsed = time.monotonic() - start
    cpu = cpu_before.shares(CpuSample.take(pair), elapsed)
    await close_all(subscribers)
    examined = [examine(s, published, complete=True) for s in subscribers]
    latencies = sorted(x for e in examined for x in e.latencies)
    round_trips = sorted(published.round_trips)
    per_subscriber = [
        e.events / (s.times[-1] - start) for s, e in zip(subscribers, examined, strict=True)
    ]
    rates = Rates(
        len(published.seq_of) / (published.last_sent - start + interval),
        statistics.fmean(per_subscriber),
        sum(per_subscriber),
    )
    paced = Paced(
        rates,
        1000 * quantile(latencies, 0.50),
        1000 * quantile(latencies, 0.99),
        1000 * quantile(round_trips, 0.50),
        1000 * quantile(round_trips, 0.99),
        drained,
        cpu,
    )
    problems = summarize([e.problems for e in examined], "paced")
    if not drained:
        problems.append(f"paced: not every subscriber had every event {DRAIN_SECONDS:.0f} s on")
    return paced, problems


async def max_phase(
    http: httpx.AsyncClient,
    pair: Pair,
    subscribers_url: str,
    count: int,
    seconds: float,
    batched: bool,
) -> tuple[Rates, list[str]]:
    run = await new_run(http)
    subscribers = await subscribe(subscribers_url, pair.key, run, count, batched)
    await warm_up(http, run, subscribers)
    published = Published()
    batches = itertools.count()
    start = time.monotonic()
    stop = start + seconds

    async def publisher() -> None:
        while time.monotonic() < stop:
            await published.post(http, run, next(batches) * MAX_BATCH, MAX_BATCH)

    await asyncio.gather(*(publisher() for _ in range(MAX_PUBLISHERS)))
    end = time.monotonic()
    await close_all(subscribers)
    per_subscriber = [
        sum(1 for t in s.times if start <= t <= end) / (end - start) for s in subscribers
    ]
    rates = Rates(
        len(published.seq_of) / (end - start), statistics.fmean(per_subscriber), sum(per_subscriber)
    )
    examined = [examine(s, published, complete=False) for s in subscribers]
    return rates, summarize([e.problems for e in examined], "max")


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank), NaN for none."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Row:
    backend: str
    topology: str
    frames: str
    subscribers: int
    most: Rates
    paced: Paced
    problems: list[str]


async def measure(
    backend: str,
    pair: Pair,
    topology: str,
    count: int,
    seconds: float,
    max_seconds: float,
    batch_size: int,
    frames: str,
) -> Row:
    subscribers_url = pair.a.url if topology == "one process" else pair.b.url
    headers = {"Authorization": f"Bearer {pair.key}"}
    limits = httpx.Limits(max_connections=PACED_IN_FLIGHT + MAX_PUBLISHERS)
    async with httpx.AsyncClient(
        base_url=pair.a.url, headers=headers, timeout=60, limits=limits
    ) as http:
        paced, paced_problems = await paced_phase(
            http, pair, subscribers_url, count, seconds, batch_size, frames == "batched"
        )
        await asyncio.sleep(0.5)  # let the servers finish with the closed streams
        most, max_problems = await max_phase(
            http, pair, subscribers_url, count, max_seconds, frames == "batched"
        )
        await asyncio.sleep(0.5)
    return Row(backend, topology, frames, count, most, paced, paced_problems + max_problems)


HEADER = (
    f"{'backend':<10} {'topology':<13} {'frames':<7} {'subs':>4} | "
    f"{'max: published':>14} {'per sub':>8} {'total':>8} | "
    f"{'1,000/s: published':>18} {'per sub':>8} {'total':>8} "
    f"{'POST p50':>8} {'POST p99':>8} {'p50 ms':>7} {'p99 ms':>7} {'target p99':>10} {'':<6} | "
    f"{'exactly once':<12} | {'CPU % A/B/bench/pg/other':<24}"
)


def line(row: Row) -> str:
    paced = row.paced
    met = paced.p99_ms < TARGET_P99_MS and paced.drained
    issue = (row.backend, row.topology, row.subscribers) == ("postgresql", TOPOLOGIES[1], 100)
    frames = row.frames
    cpu = "/".join(f"{value:.0f}" for value in paced.cpu)
    return (
        f"{row.backend:<10} {row.topology:<13} {frames:<7} {row.subscribers:>4} | "
        f"{row.most.published:>14,.0f} {row.most.per_subscriber:>8,.0f} {row.most.total:>8,.0f} | "
        f"{paced.rates.published:>18,.0f} {paced.rates.per_subscriber:>8,.0f} "
        f"{paced.rates.total:>8,.0f} {paced.post_p50_ms:>8.1f} {paced.post_p99_ms:>8.1f} "
        f"{paced.p50_ms:>7.1f} {paced.p99_ms:>7.1f} {f'< {TARGET_P99_MS:.0f} ms':>10} "
        f"{'met' if met else 'MISSED':<6} | "
        f"{'yes' if not row.problems else 'NO (below)':<12} | {cpu:<24}"
        + ("  <- the issue's target" if issue else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--subscribers", default="1,10,100")
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument(
        "--frames",
        default=",".join(FRAMES),
        help="event: one event a WebSocket message (the dialect); batched: ?batch=true",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="of the paced phase")
    parser.add_argument("--max-seconds", type=float, default=2.0, help="of the max phase")
    parser.add_argument(
        "--batch",
        type=int,
        default=PACED_BATCH,
        help="events a request in the paced phase (a request every BATCH ms: 1,000 events/s)",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.subscribers.split(",")]
    if max(counts) > WS_CAP:
        parser.error(f"at most {WS_CAP} subscribers (TESTLENS_WS_MAX_CONNECTIONS)")
    if not 1 <= args.batch <= 500:
        parser.error("--batch must be 1 to 500 (the most one request may publish)")
    rows: list[Row] = []
    notes: list[str] = []
    started = time.monotonic()
    print(HEADER, flush=True)
    for backend in args.backends.split(","):
        with two_servers(backend, notes) as pair:
            for topology, frames, count in itertools.product(
                args.topologies.split(","), args.frames.split(","), counts
            ):
                cell = measure(
                    backend,
                    pair,
                    topology,
                    count,
                    args.seconds,
                    args.max_seconds,
                    args.batch,
                    frames,
                )
                rows.append(asyncio.run(cell))
                print(line(rows[-1]), flush=True)
    print(f"\n{len(rows)} cells in {time.monotonic() - started:.0f} s on {os.cpu_count()} cores\n")
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        print(line(row))
    interval = args.batch / PACED_RATE * 1000
    print(
        f"\nmax: {MAX_PUBLISHERS} publishers, {MAX_BATCH} events a request, as fast as answered, "
        f"for {args.max_seconds:g} s; events/s each subscriber received within that window "
        "(per sub: the mean; total: the sum over subscribers).\n"
        f"1,000/s: {args.batch} events a request every {interval:g} ms (at most "
        f"{PACED_IN_FLIGHT} in flight) for {args.seconds:g} s; POST: the publisher's round "
        "trips; p50/p99: from just before the POST to each subscriber's receipt.\n"
        f"target: p99 < {TARGET_P99_MS:.0f} ms (the issue's: postgresql, two processes, 100 "
        "subscribers, 1,000 events/s); met also needs every event delivered.\n"
        "sqlite, two processes: no NOTIFY; subscribers on B read the log every "
        f"{SQLITE_POLL_SECONDS:g} s, which sets their latency.\n"
        "CPU: server A, server B, this process (publisher and subscribers), PostgreSQL and "
        f"every other process of the machine ({os.cpu_count()} cores), % of one core, over the "
        "paced phase: 'other' is load that shares the machine with the benchmark."
    )
    troubles = [(row, problem) for row in rows for problem in row.problems]
    if troubles:
        print("\nproblems:")
        for row, problem in troubles:
            print(
                f"  {row.backend}, {row.topology}, {row.frames}, {row.subscribers} "
                f"subscribers: {problem}"
            )
    else:
        print("\nevery subscriber received every event exactly once, in seq order, in every cell")
    print("\n".join(["", "server logs:", *notes] if notes else ["", "server logs: no errors"]))


if __name__ == "__main__":
    main()
