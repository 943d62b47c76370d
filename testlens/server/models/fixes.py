"""Fix attempts: a change meant to fix a flaky or failing test (a pull request that names
it, one testlens opened, or one recorded through the API), and what is known of its effect."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime


class FixAttempt(Base):
    """One attempt to fix one test. ``status`` is the pull request's (pending, merged,
    closed); ``verdict`` is testlens' judgement of its effect on the mainline (pending,
    verified, ineffective), recomputed as runs arrive."""

    __tablename__ = "fix_attempts"
    __table_args__ = (
        Index("ix_fix_attempts_tenant_created", "tenant_id", "created_at"),
        Index("ix_fix_attempts_repo_pr", "repo_id", "pr_number"),
        Index("ix_fix_attempts_test", "test_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    test_id: Mapped[str] = mapped_column(ForeignKey("test_cases.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(20))  # pull_request | testlens | api
    pr_url: Mapped[str | None] = mapped_column(Text)
    pr_number: Mapped[int | None] = mapped_column(Integer)
    branch_name: Mapped[str | None] = mapped_column(String(300))
    root_cause_category: Mapped[str | None] = mapped_column(String(40))
    ai_explanation: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    merged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    merged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    merge_commit_sha: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    model_used: Mapped[str | None] = mapped_column(String(200))
    files_changed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lines_added: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lines_removed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    verdict: Mapped[str] = mapped_column(String(12), default="pending", server_default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
