"""Rate-limit buckets, for the database store shared by every server process
(``testlens/server/ratelimit.py``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class RateLimitBucket(Base):
    """One key's token bucket, as a single number: the time it is full again (the generic
    cell rate algorithm's "theoretical arrival time"), so one ``INSERT ... ON CONFLICT DO
    UPDATE ... RETURNING`` both checks and takes a token, atomically across processes.

    Times are integer microseconds since the epoch, exact in every store. A row whose
    ``full_at`` has passed says no more than a missing row, so old rows are deleted freely.
    """

    __tablename__ = "rate_limits"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    full_at: Mapped[int] = mapped_column(BigInteger, index=True)
    admitted: Mapped[bool] = mapped_column(Boolean)  # whether the last request was let in
