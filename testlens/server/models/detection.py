"""What detection keeps at ingest: per-environment test state, state changes, daily rollups."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, UTCDateTime


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
    repo_id: Mapped[str] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), index=True
    )
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
