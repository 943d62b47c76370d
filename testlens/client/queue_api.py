"""The worker protocol of orchestrated runs (docs/orchestration.md), shared by the clients that
take work from a run's queue: ``testlens worker`` (:mod:`.worker`) and the pytest plugin's
queue mode (:mod:`.pytest_queue`).

Only the protocol lives here: the paths, the claim's body, the answers' shapes, the upload
fields that tie a report to its batch, and the thread that keeps a lease alive. Policy stays
with each client, because the two differ on purpose: the calls take a
:class:`~testlens.client.http.Client` whose retries and time budget the caller chose, errors
propagate for the caller to judge (fall back, fail, or let it pass), and the heartbeat
reports through callbacks, so that one client can print at once and the other collect
warnings for pytest's summary. Neither click nor pytest is imported, so each client loads
only its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .http import Client, ServerError

RUNS_PATH = "/api/v1/orchestrate"
RUN_FINISHED = "RUN_FINISHED"
RUN_CANCELLED = "RUN_CANCELLED"
DEFAULT_HEARTBEAT = 10.0
"""Seconds between heartbeats when a claim's answer does not say: the server's default."""

Rerun = Literal["failed", "all"]
"""What a retried CI job asks the run for: the work its node ran whose tests failed, or all."""


class RunOver(Exception):
    """The run hands out no more work: 409 ``RUN_FINISHED`` or ``RUN_CANCELLED``. Not a
    :class:`~testlens.client.http.ServerError`, so that a caller that falls back when the
    server fails never takes the end of the run for a failure."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Item:
    """One unit of work of a claimed batch: a file, or the listed tests of one file, with the
    retries a failing test of it may use."""

    file: str
    tests: tuple[str, ...] | None
    retries: int = 0

    @property
    def entries(self) -> tuple[str, ...]:
        """What a runner is given for this item: its tests, else its file."""
        return self.tests if self.tests is not None else (self.file,)


@dataclass(frozen=True, slots=True)
class Batch:
    """A claimed batch: its items, and the run's project and environment, which the batch's
    upload names."""

    batch_id: str
    items: tuple[Item, ...]
    project: str | None
    environment: str | None
    heartbeat_seconds: float

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Batch:
        """The batch of a ``claimed`` answer. The fields the API leaves optional or nullable
        take the server's defaults (no retries, the default heartbeat) when absent."""
        items = tuple(
            Item(
                str(item["file"]),
                None if item.get("tests") is None else tuple(map(str, item["tests"])),
                int(item.get("retries") or 0),
            )
            for item in answer["items"]
        )
        return cls(
            str(answer["batchId"]),
            items,
            answer.get("project"),
            answer.get("environment"),
            float(answer.get("heartbeatSeconds") or DEFAULT_HEARTBEAT),
        )

    @property
    def entries(self) -> list[str]:
        return [entry for item in self.items for entry in item.entries]


def create_run(client: Client, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run for ``body``, and whether this call created it: a machine giving the
    ``ciBuildId`` of a run that exists joins it (409 ``PLAN_CONFLICT`` when its list
    differs)."""
    response = client.request("POST", RUNS_PATH, json=body)
    return response.json(), response.status_code == 201


def claim(
    client: Client,
    run_id: str,
    batch_id: str,
    *,
    worker: str,
    node_index: int | None = None,
    rerun: Rerun | None = None,
    attempt: int | None = None,
) -> Batch | float:
    """A batch to run, or the seconds to wait before asking again; :class:`RunOver` when the
    run hands out no more.

    ``batch_id`` is the caller's, new for each claim: a call the client retries sends the
    same one, so a batch granted by a call whose answer was lost is the one answered again.
    ``attempt`` goes only with ``rerun``, which is all it qualifies.
    """
    body: dict[str, Any] = {"batchId": batch_id, "worker": worker}
    if node_index is not None:
        body["nodeIndex"] = node_index
    if rerun is not None:
        body["rerun"] = rerun
        if attempt is not None:
            body["attempt"] = attempt
    try:
        response = client.request("POST", f"{RUNS_PATH}/{run_id}/claims", json=body)
    except ServerError as exc:
        if exc.status == 409 and exc.code in (RUN_FINISHED, RUN_CANCELLED):
            raise RunOver(exc.code) from None
        raise
    answer = response.json()
    if answer["status"] == "wait":
        return max(0.0, float(answer["retryAfter"]))
    if answer["status"] != "claimed":
        raise ValueError(f"unknown claim status {answer['status']!r}")
    return Batch.from_answer(answer)


def release(client: Client, run_id: str, batch_id: str) -> None:
    """Give the batch's items without a result back to the front of the queue now, rather
    than when its lease lapses."""
    client.request("DELETE", f"{RUNS_PATH}/{run_id}/claims/{batch_id}")


def upload_fields(run_id: str, batch_id: str) -> dict[str, str]:
    """The form fields that make a report's upload the results of a batch: it joins the
    run's build, and the batch's items are done."""
    return {"orchestration_run": run_id, "batch_id": batch_id}


class Heartbeat:
    """Renews a batch's lease every ``heartbeatSeconds`` from a thread of its own, because the
    caller's thread is busy running the batch.

    ``status`` is the server's last word (``active``, ``expired``, ``cancelled``, ``done``)
    and ``failed`` counts the beats that failed. A failed beat never stops the thread: the
    batch's results count when uploaded, even after its lease lapsed. ``connect`` gives a
    client, with the caller's retries and budget, for one beat. ``on_change`` hears of a
    status unlike the last and ``on_failure`` of a beat's exception, both on the heartbeat's
    thread. ``join_on_exit`` makes leaving wait for a beat in flight, so that ``status`` is
    final once read; otherwise leaving returns at once, for a caller being stopped with only
    seconds left.
    """

    def __init__(
        self,
        connect: Callable[[], Client],
        run_id: str,
        batch: Batch,
        *,
        on_change: Callable[[str], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        join_on_exit: bool = False,
    ) -> None:
        self.status = "active"
        self.failed = 0
        self._connect = connect
        self._path = f"{RUNS_PATH}/{run_id}/claims/{batch.batch_id}/heartbeat"
        self._every = batch.heartbeat_seconds
        self._on_change = on_change
        self._on_failure = on_failure
        self._join_on_exit = join_on_exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testlens-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._join_on_exit:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with self._connect() as client:
                    status = str(client.request("POST", self._path).json()["status"])
            except Exception as exc:  # nothing on this thread may disturb the batch
                self.failed += 1
                if self._on_failure is not None:
                    self._on_failure(exc)
                continue
            if status != self.status and self._on_change is not None:
                self._on_change(status)
            self.status = status
