"""Builds (one CI execution of a suite) and the work queue of orchestrated ones.

A :class:`~.results.Run` is one uploaded report; a :class:`Build` groups the uploads of one
CI execution: every upload of one orchestrated run, else of one ``workflow_run_id`` of a
repository, else the upload alone. The Shifty dialect calls a build a "run"; only its
schemas translate. An orchestrated build's work is a list of :class:`WorkItem` rows that
workers hold under :class:`Lease` rows while they run them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, UTCDateTime

BuildStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
FINISHED = ("completed", "failed", "cancelled")


class Build(Base):
    """One CI execution of a suite. ``kind`` is ``queue`` or ``static`` for orchestrated
    builds and ``uploads`` for builds made of plain uploads. ``build_key`` (a digest of the
    repository and CI run id, or of the project and ``ciBuildId``) finds the build a later
    upload or a later machine of the same CI run joins; NULL for a lone upload.

    The totals count tests, not attempts: a test reported by two uploads of one build is one
    test, whose status combines every attempt (see ``orchestration.builds``). They are
    rewritten by every upload that joins the build."""

    __tablename__ = "builds"
    __table_args__ = (
        UniqueConstraint("tenant_id", "build_key"),
        Index("ix_builds_tenant_created", "tenant_id", "created_at"),
        Index("ix_builds_status", "status"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    repo_id: Mapped[str | None] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    build_key: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str | None] = mapped_column(String(300))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(200), default="")
    workflow_run_id: Mapped[str | None] = mapped_column(String(100))
    meta: Mapped[str] = mapped_column(Text, default="{}")  # the Shifty "metadata" object
    worker_count: Mapped[int] = mapped_column(Integer, default=1)
    tests_hash: Mapped[str | None] = mapped_column(String(64))
    planned_tests: Mapped[int] = mapped_column(Integer, default=0)
    tests: Mapped[int] = mapped_column(Integer, default=0)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    flaky: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    overhead_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active_at: Mapped[datetime] = mapped_column(UTCDateTime)  # a worker's last call
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The sequence number of the build's last event (``RunEvent.seq``)."""


class WorkItem(Base):
    """One unit of an orchestrated build's work: a file, or the listed tests of one file.

    ``position`` is the queue order (:func:`testlens.core.queue.order`); an item put back
    after a lapsed lease gets ``front`` set and goes out before every other. ``shard`` is
    its shard in the build's plan (the assignment of ``static`` builds). ``lease_id`` is
    the lease running it; ``copy_lease_id`` a speculative second one for a straggler.
    """

    __tablename__ = "work_items"
    __table_args__ = (Index("ix_work_items_queue", "build_id", "status", "front", "position"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    file: Mapped[str] = mapped_column(Text)
    tests: Mapped[str | None] = mapped_column(Text)  # a JSON list of test ids, or NULL
    test_count: Mapped[int] = mapped_column(Integer, default=1)
    p50_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float] = mapped_column(Float)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    shard: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10), default="waiting")
    front: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    lease_id: Mapped[str | None] = mapped_column(String(36))
    copy_lease_id: Mapped[str | None] = mapped_column(String(36))
    node_index: Mapped[int | None] = mapped_column(Integer)  # the CI node that ran it
    reason: Mapped[str | None] = mapped_column(Text)  # why it was lost


class Lease(Base):
    """A batch a worker holds: claimed under the worker's own ``batch_id`` (a repeated claim
    answers the same batch), renewed by heartbeats until ``expires_at``."""

    __tablename__ = "leases"
    __table_args__ = (
        UniqueConstraint("build_id", "batch_id"),
        Index("ix_leases_state_expires", "state", "expires_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    batch_id: Mapped[str] = mapped_column(String(100))
    worker: Mapped[str] = mapped_column(String(200), default="")
    node_index: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10))  # active | done | expired | released
    speculative: Mapped[bool] = mapped_column(Boolean, default=False)
    rerun: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int | None] = mapped_column(Integer)  # the CI attempt of a rerun
    items: Mapped[str] = mapped_column(Text, default="[]")  # a JSON list of work item ids
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RunEvent(Base):
    """One event of a build's live stream, in the order ``seq`` (1, 2, ...) gives: the log
    that the WebSocket and progress streams read, and that a client that reconnects resumes
    from. ``tenant_seq`` numbers all of a tenant's events in the order their transactions
    committed (set just before the commit, see ``orchestration.events``): what a tenant-wide
    stream reads them by. ``id`` is only a key: ids are handed out as rows are inserted, so
    two transactions can commit them out of order."""

    __tablename__ = "run_events"
    __table_args__ = (
        UniqueConstraint("build_id", "seq"),
        Index("ix_run_events_tenant_seq", "tenant_id", "tenant_seq"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    tenant_seq: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(20))
    payload: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class LiveConnection(Base):
    """One open ``/api/v1/ws`` connection, on whichever server process holds it: what the
    per-tenant cap counts, so that it holds across processes. Its process renews
    ``seen_at`` while it is open and deletes the row when it closes; a row left by a
    process that died stops counting once ``seen_at`` is older than the lease."""

    __tablename__ = "live_connections"
    __table_args__ = (Index("ix_live_connections_tenant", "tenant_id", "seen_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
