"""Durations API jobs and stored shard plans."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime


class DurationJob(Base):
    """A Durations API request: one per (tenant, commit, shard group), shared by its shards."""

    __tablename__ = "duration_jobs"
    __table_args__ = (UniqueConstraint("tenant_id", "commit_id", "shard_group_key", "project"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(300), default="")
    commit_id: Mapped[str] = mapped_column(String(64))
    shard_group_key: Mapped[str] = mapped_column(String(250))
    status: Mapped[str] = mapped_column(String(12))  # created | uploaded | computing | ready
    report: Mapped[bytes | None] = mapped_column(LargeBinary)
    result: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ShardPlanRecord(Base):
    """A computed split, stored so that every CI node of a run gets the same one.

    ``plan_key`` identifies the CI run it was made for (a hash of the repository,
    environment, shard count, grouping and the run's key from the CI environment), so the
    nodes of one run find it without passing anything to each other; ``tests_hash`` is the
    hash of the test list it splits, which every node must share.
    """

    __tablename__ = "shard_plans"
    __table_args__ = (UniqueConstraint("tenant_id", "plan_key"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    repo_id: Mapped[str | None] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), index=True
    )
    plan: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    plan_key: Mapped[str | None] = mapped_column(String(64))
    tests_hash: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(String(200))
    workflow_run_id: Mapped[str | None] = mapped_column(String(100))
