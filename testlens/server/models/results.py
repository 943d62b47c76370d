"""What ingest stores: repositories, runs (one per uploaded report), tests and their attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, UTCDateTime, utcnow


def name_key(name: str) -> str:
    """What a repository name is matched by: case-insensitively, as GitHub does, so
    ``Acme/Shop`` and ``acme/shop`` are one repository. Computed here, never in SQL, so that
    SQLite (whose ``lower()`` is ASCII-only) and PostgreSQL agree on every name."""
    return name.lower()


def _name_key_of_row(context: Any) -> str:
    return name_key(context.get_current_parameters()["name"])


class Repository(Base):
    """A repository of one tenant. ``name`` is the spelling of its first upload, shown
    everywhere; ``name_key`` (:func:`name_key` of it) is what uploads and lookups match."""

    __tablename__ = "repositories"
    __table_args__ = (UniqueConstraint("tenant_id", "name_key", name="uq_repositories_name_key"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))  # "owner/repo"
    name_key: Mapped[str] = mapped_column(String(300), default=_name_key_of_row)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set while the GitHub App is installed on it (models.github); kept, not deleted, when
    # the App is removed, so its history stays.
    github_id: Mapped[int | None] = mapped_column(BigInteger)
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    default_branch: Mapped[str | None] = mapped_column(String(300))


class Run(Base):
    """One uploaded report: a CI job's test results for one commit."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("repo_id", "ingest_key"),
        Index("ix_runs_repo_created", "repo_id", "created_at"),
        Index("ix_runs_repo_commit", "repo_id", "commit_sha"),
        Index("ix_runs_repo_tree", "repo_id", "tree_sha"),
        Index("ix_runs_build", "build_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    ingest_key: Mapped[str] = mapped_column(String(64))
    branch: Mapped[str | None] = mapped_column(String(300))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    tree_sha: Mapped[str | None] = mapped_column(String(64))
    framework: Mapped[str] = mapped_column(String(100))
    format: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    check_name: Mapped[str | None] = mapped_column(String(300))
    pr_number: Mapped[int | None] = mapped_column(Integer)
    workflow_run_id: Mapped[str | None] = mapped_column(String(100))
    shard: Mapped[str | None] = mapped_column(String(40))  # how a sharded node chose its tests
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tests: Mapped[int] = mapped_column(Integer, default=0)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    flaky: Mapped[int] = mapped_column(Integer, default=0)
    flaky_detected: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # Failed too much of its tests to be evidence (see core.flakiness.is_outage): its
    # results are left out when a rerun of its commit looks for proof.
    outage: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The first XML error of a report read by the recovering parser (not well-formed).
    recovered_reason: Mapped[str | None] = mapped_column(Text)
    # The CI build the upload belongs to (models.builds), and for a batch of an orchestrated
    # build its lease. A speculative upload reported only items another lease had reported
    # first: it is kept as evidence, but the build's totals leave it out.
    build_id: Mapped[str | None] = mapped_column(ForeignKey("builds.id", ondelete="SET NULL"))
    lease_id: Mapped[str | None] = mapped_column(String(36))
    speculative: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TestCase(Base):
    """A test's stable identity within a repository, and its figures combined over every
    environment it runs in (worst state, highest flake score, summed runs).

    ``id`` is a hash of the identity. The figures are rewritten at each ingest that touches
    the test, so repository pages and the flaky feed are index range scans with a limit,
    whatever the history. ``recent_flaky`` is a JSON list of recent flaky occurrences (Unix
    seconds), for the last-24-hours count.
    """

    __tablename__ = "test_cases"
    __test__ = False
    __table_args__ = (
        Index("ix_test_cases_repo_file", "repo_id", "file"),
        Index("ix_test_cases_repo_flaky", "repo_id", "first_flaky_at"),
        Index("ix_test_cases_repo_score", "repo_id", "flake_score"),
        Index("ix_test_cases_repo_state", "repo_id", "state"),
        Index("ix_test_cases_analysis_due", "analysis_due_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    file: Mapped[str] = mapped_column(Text, default="")
    suite: Mapped[str] = mapped_column(Text, default="")
    classname: Mapped[str] = mapped_column(Text, default="")
    name: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(12), default="healthy", server_default="healthy")
    flake_score: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    flake_score_low: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    flake_score_high: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    total_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    flaky_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_flaky_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_flaky_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_id: Mapped[str | None] = mapped_column(String(36))
    recent_flaky: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # The root cause of its failures (core.rootcause), recomputed when new failures arrive;
    # ai_model_used names the model that wrote the explanation (None: the built-in one).
    root_cause_category: Mapped[str | None] = mapped_column(String(40))
    root_cause_confidence: Mapped[float | None] = mapped_column(Float)
    root_cause_explanation: Mapped[str | None] = mapped_column(Text)
    ai_model_used: Mapped[str | None] = mapped_column(String(200))
    last_analyzed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when new failures arrive, cleared once the root cause is recomputed from them.
    analysis_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TestResult(Base):
    """One attempt of one test in one run; retries are separate rows numbered by ``attempt``.

    Rows carry no timestamp of their own: every attempt of a run shares the run's, and ids
    grow in ingest order, so "history of one test, newest first" is the (test_id, id) index.
    """

    __tablename__ = "test_results"
    __test__ = False
    __table_args__ = (
        Index("ix_test_results_history", "test_id", "id"),
        Index("ix_test_results_run", "run_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    test_id: Mapped[str] = mapped_column(ForeignKey("test_cases.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(10))
    duration_ms: Mapped[float] = mapped_column(Float)
    environment: Mapped[str | None] = mapped_column(String(200))
    censored: Mapped[bool] = mapped_column(Boolean, default=False)
    error_type: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    stack: Mapped[str | None] = mapped_column(Text)
    stdout: Mapped[str | None] = mapped_column(Text)
    stderr: Mapped[str | None] = mapped_column(Text)
    # The failure's signature (FailureSignature.key), for failed attempts only.
    signature: Mapped[str | None] = mapped_column(String(32))


class FailureSignature(Base):
    """One way a test fails (core.signatures): the exception type, the normalised message
    and the top in-app frames, with how often and when it was seen. ``key`` is the
    signature's hash, the same for every test that fails the same way, which is how failures
    shared by many tests are found."""

    __tablename__ = "failure_signatures"
    __table_args__ = (
        UniqueConstraint("test_id", "key", name="uq_failure_signatures_test_key"),
        Index("ix_failure_signatures_repo_key", "repo_id", "key"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    test_id: Mapped[str] = mapped_column(ForeignKey("test_cases.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(32))
    error_type: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")
    frames: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of "file:function"
    count: Mapped[int] = mapped_column(Integer, default=0)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_run_id: Mapped[str | None] = mapped_column(String(36))
