"""The tables. One data model behind every API family: a test seen anywhere is one row here.

Primary keys are opaque strings (UUIDs, or for test cases a hash of their identity so that
ingest can upsert ten thousand tests without looking any of them up first). Result rows,
the only table that grows with history, use an integer key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; testlens stores UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """UTC times as the seed dialects write them: ISO-8601 with a ``Z``."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key: only the SHA-256 of the secret is stored; ``prefix`` tells keys apart."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Repository(Base):
    __tablename__ = "repositories"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))  # "owner/repo"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Run(Base):
    """One uploaded report: a CI job's test results for one commit."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("repo_id", "ingest_key"),
        Index("ix_runs_repo_created", "repo_id", "created_at"),
        Index("ix_runs_repo_commit", "repo_id", "commit_sha"),
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


class TestState(Base):
    """What testlens currently knows of one test in one environment, updated at ingest.

    ``data`` is the serialized ``testlens.core.flakiness.TestState`` (bounded in size); the
    plain columns copy the figures that APIs filter and sort on, so reads never scan results.
    ``environment`` is ``""`` for runs that name none. ``durations`` holds the 30 to 60 most
    recent duration samples, oldest first, as JSON ``[[duration_ms, censored], ...]``:
    predictions (p50, p90) are computed from them when asked for, not at every ingest.
    """

    __tablename__ = "test_states"
    __test__ = False
    test_id: Mapped[str] = mapped_column(
        ForeignKey("test_cases.id", ondelete="CASCADE"), primary_key=True
    )
    environment: Mapped[str] = mapped_column(String(200), primary_key=True)
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(12))
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    flake_score: Mapped[float] = mapped_column(Float)
    flake_score_low: Mapped[float] = mapped_column(Float)
    flake_score_high: Mapped[float] = mapped_column(Float)
    pass_rate: Mapped[float | None] = mapped_column(Float)
    total_runs: Mapped[int] = mapped_column(Integer)
    failed_runs: Mapped[int] = mapped_column(Integer)
    flaky_runs: Mapped[int] = mapped_column(Integer)
    first_flaky_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_flaky_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_run_id: Mapped[str] = mapped_column(String(36))
    check_name: Mapped[str | None] = mapped_column(String(300))
    durations: Mapped[str] = mapped_column(Text, default="[]")
    data: Mapped[str] = mapped_column(Text)


class TestEvent(Base):
    """A state transition of a test (healthy, flaky, broken, quarantined) and its evidence."""

    __tablename__ = "test_events"
    __test__ = False
    __table_args__ = (
        Index("ix_test_events_repo_at", "repo_id", "at"),
        Index("ix_test_events_test_at", "test_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    test_id: Mapped[str] = mapped_column(ForeignKey("test_cases.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(200))
    from_state: Mapped[str] = mapped_column(String(12))
    to_state: Mapped[str] = mapped_column(String(12))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    run_ids: Mapped[str] = mapped_column(Text)  # JSON list
    commit_sha: Mapped[str | None] = mapped_column(String(64))


class DailyRollup(Base):
    """Per repository and UTC day: counters updated at ingest, read by trend analytics."""

    __tablename__ = "daily_rollups"
    repo_id: Mapped[str] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    runs: Mapped[int] = mapped_column(Integer, default=0)
    test_runs: Mapped[int] = mapped_column(Integer, default=0)
    failed_test_runs: Mapped[int] = mapped_column(Integer, default=0)
    flaky_test_runs: Mapped[int] = mapped_column(Integer, default=0)
    flaky_tests: Mapped[int] = mapped_column(Integer, default=0)  # distinct, first flake of the day
    flake_score_sum: Mapped[float] = mapped_column(Float, default=0.0)  # over those tests


class Quarantine(Base):
    """A user's decision that a test's failures must not fail the build (until ``expires_at``)."""

    __tablename__ = "quarantines"
    test_id: Mapped[str] = mapped_column(
        ForeignKey("test_cases.id", ondelete="CASCADE"), primary_key=True
    )
    repo_id: Mapped[str] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(36))


class Webhook(Base):
    """An outgoing webhook subscription; the signing secret is stored encrypted."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(String(300))  # comma-separated
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """The outbox: one event for one webhook, delivered at least once by a background worker."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # X-Testlens-Delivery
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(50))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    attempt_log: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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


class ServerSecret(Base):
    """Random server-wide keys (token signing, secret encryption), shared by all processes."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
