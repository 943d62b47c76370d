"""What the GitHub App tells testlens: installations, the deliveries it sent (kept to
deduplicate on ``X-GitHub-Delivery`` and to process in the background), and the CI jobs it
reported (``workflow_job`` and ``check_run`` completions, with their attempt numbers)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime


class GithubInstallation(Base):
    """One installation of the App on an account (GitHub's installation id is the key), and
    the tenant its repositories belong to (None until one is linked)."""

    __tablename__ = "github_installations"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="SET NULL"), index=True
    )
    account_login: Mapped[str] = mapped_column(String(300))
    account_type: Mapped[str | None] = mapped_column(String(40))  # User | Organization
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GithubDelivery(Base):
    """One webhook delivery, stored before it is answered and processed after: its GUID is
    the key, so a redelivered or replayed one is recognised and not processed twice."""

    __tablename__ = "github_deliveries"
    __table_args__ = (Index("ix_github_deliveries_due", "processed_at", "received_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # X-GitHub-Delivery
    event: Mapped[str] = mapped_column(String(60))
    action: Mapped[str | None] = mapped_column(String(60))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # after a failure


class CiJob(Base):
    """A CI job GitHub reported complete: a ``workflow_job`` or a ``check_run``, one row per
    attempt of its workflow run."""

    __tablename__ = "ci_jobs"
    __table_args__ = (
        UniqueConstraint("repo_id", "kind", "external_id", "run_attempt", name="uq_ci_jobs_job"),
        Index("ix_ci_jobs_repo_completed", "repo_id", "completed_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # workflow_job | check_run
    external_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(300))
    workflow_run_id: Mapped[str | None] = mapped_column(String(100))
    run_attempt: Mapped[int] = mapped_column(Integer, default=1)
    head_sha: Mapped[str | None] = mapped_column(String(64))
    head_branch: Mapped[str | None] = mapped_column(String(300))
    conclusion: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
