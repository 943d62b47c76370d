"""The upload answer, in the Unfold CI dialect."""

from __future__ import annotations

from pydantic import BaseModel, Field


class IngestResponse(BaseModel):
    success: bool
    tests_processed: int = Field(description="Distinct tests in the report.")
    flaky_detected: int = Field(description="Tests this upload made or kept flaky.")
    run_id: str
