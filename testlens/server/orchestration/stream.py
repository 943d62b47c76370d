"""``/api/v1/ws``: a run's live events over a WebSocket (the Shifty dialect), read from the
event log, and ``POST /api/v1/runs/{runId}/events``, where test runners publish what they
start and finish before their report is uploaded.

A connection authenticates before anything is sent: ``Authorization: Bearer <key>`` (or,
from a browser, which cannot set headers on a WebSocket, the key as an entry of
``Sec-WebSocket-Protocol`` beside ``testlens``), ``X-Tenant-ID`` optionally, and the run in
``X-Run-ID`` or the query parameter ``runId`` (without one, every run of the tenant). A bad
key or another tenant's run is closed with 1008 and no data. Messages are ``{type, payload,
seq, id}``: ``seq`` numbers one run's events, ``id`` all of the tenant's, and a client that
reconnects with ``after`` (a ``seq`` with a run, else an ``id``) resumes with no gap and no
duplicate. A client that stops reading is closed (1013, "too far behind") once a message has
waited :data:`SEND_TIMEOUT` seconds, so that nothing piles up for it: the log keeps what it
missed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ..auth import Principal, authenticate
from ..database import DATABASE_DOWN, Database
from ..deps import DatabaseDep, IngestPrincipal
from ..errors import ApiError, ErrorCode, error_responses
from ..models import utcnow
from . import builds, connections, events, live

router = APIRouter(prefix="/api/v1", tags=["orchestration"])

PROTOCOL = "testlens"
"""The subprotocol a browser offers beside its key, and the one the server answers."""
SEND_TIMEOUT = 10.0
"""Seconds one message may wait for a client that does not read before it is closed."""
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
MAX_PAYLOAD_BYTES = 256 * 1024
BATCH_EVERY = 0.05
"""Seconds a batched stream (``batch=true``) lets events gather before its next frame."""


def _credential(websocket: WebSocket) -> tuple[str | None, bool]:
    """The ``Authorization`` header's value, or one made of a key offered as a subprotocol
    (and whether it was)."""
    header = websocket.headers.get("authorization")
    if header:
        return header, False
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    keys = [p for p in offered if p.startswith("tl_sk_")]
    return (f"Bearer {keys[0]}", True) if keys else (None, False)


def _authorize(
    websocket: WebSocket, database: Database, authorization: str | None, run_id: str | None
) -> Principal:
    with database.read() as session:
        principal = authenticate(
            session,
            authorization,
            websocket.headers.get("x-tenant-id"),
            websocket.app.state.key_usage,
        )
        if "read" not in principal.scopes and "admin" not in principal.scopes:
            raise ApiError(ErrorCode.INSUFFICIENT_SCOPE, "The key lacks the read scope")
        if run_id is not None:
            builds.tenant_build(session, principal.tenant_id, run_id)
    return principal


def _start(database: Database, tenant_id: str, run_id: str | None, after: int | None) -> int:
    """Where a new stream starts: after ``after``; else a run's stream from its first event
    and a tenant's from now."""
    if after is not None:
        return after
    if run_id is not None:
        return 0
    with database.read() as session:
        return events.newest_id(session, tenant_id)


def _page(database: Database, tenant_id: str, run_id: str | None, after: int) -> list[Any]:
    with database.read() as session:
        return events.read(session, tenant_id, build_id=run_id, after=after)


def _message(logged: events.Logged) -> str:
    # The payload is stored as JSON already: it is sent as it is, not parsed again.
    return (
        f'{{"type":{json.dumps(logged.type)},"payload":{logged.payload},'
        f'"seq":{logged.seq},"id":{logged.tenant_seq},"runId":{json.dumps(logged.build_id)}}}'
    )


async def _refuse(websocket: WebSocket, subprotocol: str | None, code: int, reason: str) -> None:
    await websocket.accept(subprotocol=subprotocol)
    await websocket.send_text(json.dumps({"type": "error", "payload": {"message": reason}}))
    await websocket.close(code=code, reason=reason[:120])


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """A run's (or the tenant's) live events: see the module docstring."""
    database: Database = websocket.app.state.database
    authorization, via_protocol = _credential(websocket)
    subprotocol = PROTOCOL if via_protocol else None
    run_id = websocket.headers.get("x-run-id") or websocket.query_params.get("runId")
    after_text = websocket.query_params.get("after")
    batched = websocket.query_params.get("batch", "").lower() in ("1", "true")
    if after_text is not None and not after_text.isdigit():
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(code=POLICY_VIOLATION, reason="after must be a whole number")
        return
    try:
        principal = await run_in_threadpool(_authorize, websocket, database, authorization, run_id)
    except ApiError as exc:
        await websocket.accept(subprotocol=subprotocol)  # nothing is sent before the close
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message[:120])
        return
    cap = websocket.app.state.settings.ws_max_connections_per_tenant
    renewer: connections.Renewer = websocket.app.state.live_connections
    try:
        admitted = await run_in_threadpool(connections.admit, database, principal.tenant_id, cap)
    except DATABASE_DOWN:
        await _refuse(websocket, subprotocol, TRY_AGAIN_LATER, "the database is busy; reconnect")
        return
    if admitted is None:
        await _refuse(
            websocket,
            subprotocol,
            TRY_AGAIN_LATER,
            f"this tenant has {cap} live connections open, the most it may",
        )
        return
    renewer.opened(admitted)
    subscriber = live.Subscriber(principal.tenant_id, run_id, asyncio.get_running_loop())
    live.HUB.join(subscriber)
    try:
        await websocket.accept(subprotocol=subprotocol)
        await _follow(
            websocket, database, principal.tenant_id, run_id, after_text, subscriber, batched
        )
    finally:
        live.HUB.leave(subscriber)
        renewer.closed(admitted)
        await run_in_threadpool(connections.release, database, admitted)


async def _follow(
    websocket: WebSocket,
    database: Database,
    tenant_id: str,
    run_id: str | None,
    after_text: str | None,
    subscriber: live.Subscriber,
    batched: bool,
) -> None:
    after = int(after_text) if after_text is not None else None
    cursor = await run_in_threadpool(_start, database, tenant_id, run_id, after)
    sqlite = database.dialect == "sqlite"
    idle = live.SQLITE_POLL_SECONDS if sqlite else live.IDLE_READ_SECONDS

    def read(position: int) -> list[events.Logged]:
        return _page(database, tenant_id, run_id, position)

    woken = subscriber.woken
    timed_out = False

    def time_out() -> None:
        nonlocal timed_out
        timed_out = True
        woken.set()

    # The client's going wakes the loop too; waiting costs no task, only a timer.
    closed = asyncio.create_task(_until_closed(websocket))
    closed.add_done_callback(lambda _task: woken.set())
    try:
        while not closed.done():
            woken.clear()  # before reading: a commit from now on wakes us again
            page = await subscriber.feed.after(
                cursor, read, max_age=idle / 2 if sqlite or timed_out else None
            )
            timed_out = False
            if page and not await _send(websocket, page, batched, cursor, run_id is not None):
                return
            if page:
                cursor = live.position(page[-1], by_seq=run_id is not None)
            if len(page) == events.PAGE:
                continue
            if batched:  # let a frame gather what comes within BATCH_EVERY
                await asyncio.sleep(BATCH_EVERY)
            timer = asyncio.get_running_loop().call_later(idle, time_out)
            await woken.wait()
            timer.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        closed.cancel()


async def _send(
    websocket: WebSocket, page: list[events.Logged], batched: bool, cursor: int, by_seq: bool
) -> bool:
    """Send ``page`` (one frame, or one per event); False, after closing the connection, when
    the client has not taken a frame within :data:`SEND_TIMEOUT`."""
    frames = (
        [("[" + ",".join(map(_message, page)) + "]", page[-1])]
        if batched
        else [(_message(logged), logged) for logged in page]
    )
    for frame, last in frames:
        try:
            await asyncio.wait_for(websocket.send_text(frame), SEND_TIMEOUT)
        except TimeoutError:
            await websocket.close(
                code=TRY_AGAIN_LATER, reason=f"too far behind; reconnect with after={cursor}"
            )
            return False
        cursor = live.position(last, by_seq)
    return True


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return


class PublishedEvent(BaseModel):
    type: Literal["test:start", "test:batch"]
    payload: dict[str, Any]


class PublishRequest(BaseModel):
    events: list[PublishedEvent] = Field(min_length=1, max_length=500)


class PublishResponse(BaseModel):
    accepted: int
    seq: int = Field(description="The run's sequence number of the last event published.")


@router.post(
    "/runs/{runId}/events",
    status_code=202,
    responses=error_responses(ErrorCode.RUN_NOT_FOUND, ErrorCode.INVALID_PARAMETERS),
)
def publish(
    runId: Annotated[str, Path(max_length=36)],
    body: PublishRequest,
    database: DatabaseDep,
    principal: IngestPrincipal,
) -> PublishResponse:
    """Publish live events of a run (``test:start``, ``test:batch``) to its streams. What
    counts for detection is still what is uploaded."""
    appended: list[tuple[events.EventType, dict[str, Any]]] = [
        (item.type, {**item.payload, "runId": runId}) for item in body.events
    ]
    for kind, payload in appended:
        if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
            raise ApiError(
                ErrorCode.INVALID_PARAMETERS,
                f"a {kind} event's payload is over {MAX_PAYLOAD_BYTES} bytes: send it in parts",
            )
    seq = _publish(database, principal.tenant_id, runId, appended)
    return PublishResponse(accepted=len(appended), seq=seq)


def _publish(
    database: Database,
    tenant_id: str,
    run_id: str,
    appended: list[tuple[events.EventType, dict[str, Any]]],
) -> int:
    with database.transaction() as session:
        builds.tenant_build(session, tenant_id, run_id)
        return events.append(session, tenant_id, run_id, appended, utcnow())
