"""Request and response models of the retention API."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field, Strict

from ..settings import MAX_RETENTION_DAYS

Days = Annotated[int, Strict(), Interval(ge=1, le=MAX_RETENTION_DAYS)]
"""Whole days, from 1 to 100 years; a string or a fraction is refused, not rounded."""


class RetentionDays(BaseModel):
    """How many days each kind of history is kept."""

    model_config = ConfigDict(frozen=True)

    results_days: int = Field(description="Test results: every attempt of every test.")
    runs_days: int = Field(
        description="Runs (an upload's metadata and totals); a run is deleted only once its "
        "results are, so a shorter value than results_days acts as results_days."
    )
    events_days: int = Field(description="State changes of tests, with their evidence.")
    deliveries_days: int = Field(
        description="Delivered and dead-lettered webhook deliveries (pending ones are kept)."
    )


class RetentionOverrides(BaseModel):
    """The tenant's own retention, the body of ``PUT /api/retention``: a number of days
    replaces the server's default, a null or missing field keeps it."""

    model_config = ConfigDict(extra="forbid")

    results_days: Days | None = None
    runs_days: Days | None = None
    events_days: Days | None = None
    deliveries_days: Days | None = None


class Retention(RetentionDays):
    """The retention in force for the tenant, and where each figure comes from."""

    overrides: RetentionOverrides = Field(description="The tenant's own values (null: default).")
    defaults: RetentionDays = Field(description="The server's defaults (TESTLENS_RETENTION_*).")
