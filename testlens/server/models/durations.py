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
    """A computed split, stored so that every CI node of a run can fetch the same one."""

    __tablename__ = "shard_plans"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    repo_id: Mapped[str | None] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    plan: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
