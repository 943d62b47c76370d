"""Retention: how long each tenant keeps what the server stores."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime


class RetentionPolicy(Base):
    """A tenant's own retention, in days; a null column keeps the server's default
    (``TESTLENS_RETENTION_*``), so changing a default reaches every tenant that set none."""

    __tablename__ = "retention_policies"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    results_days: Mapped[int | None] = mapped_column(Integer)
    runs_days: Mapped[int | None] = mapped_column(Integer)
    events_days: Mapped[int | None] = mapped_column(Integer)
    deliveries_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
