"""Request and response models of ``/api/fix-attempts`` (the Unfold dialect, plus testlens'
verdict)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["pending", "merged", "closed"]
StatusFilter = Literal["pending", "merged", "closed", "all"]
VerdictState = Literal["verified", "ineffective", "pending"]


class CodeChanges(BaseModel):
    files_changed: int = Field(0, ge=0, le=1_000_000)
    lines_added: int = Field(0, ge=0, le=100_000_000)
    lines_removed: int = Field(0, ge=0, le=100_000_000)


class FixAttemptIn(BaseModel):
    """A fix attempt recorded through the API (source ``api``)."""

    test_id: str = Field(min_length=1, max_length=64)
    pr_url: str | None = Field(None, max_length=2000)
    pr_number: int | None = Field(None, ge=1, le=2_147_483_647)
    branch_name: str | None = Field(None, max_length=300)
    root_cause_category: str | None = Field(None, max_length=40)
    ai_explanation: str | None = Field(None, max_length=20_000)
    confidence: float | None = Field(None, ge=0, le=1)
    status: Status = "pending"
    merged_at: datetime | None = Field(
        None, description="When the fix reached the mainline; required when status is merged."
    )
    code_changes: CodeChanges | None = None


class RepoRef(BaseModel):
    id: str
    name: str
    github_url: str


class FixAttemptItem(BaseModel):
    id: str
    test_id: str
    test_name: str
    test_file_path: str
    pr_url: str | None
    pr_number: int | None
    branch_name: str | None
    root_cause_category: str | None
    ai_explanation: str | None
    status: Status
    merged: bool
    merged_at: str | None
    confidence: float | None
    model_used: str | None
    created_at: str
    repo: RepoRef


class Summary(BaseModel):
    total: int
    pending: int
    merged: int
    closed: int


class FixAttemptList(BaseModel):
    fix_attempts: list[FixAttemptItem]
    summary: Summary


class Effectiveness(BaseModel):
    runs_since_fix: int = Field(description="Mainline runs of the test since the merge.")
    failures_before: int = Field(description="Failing mainline runs in the window before it.")
    failures_after: int
    success_rate: float | None = Field(
        description="Share of the runs since the merge that passed (null before any)."
    )


class Rate(BaseModel):
    runs: int
    failures: int
    rate: float = Field(description="Posterior mean of the failure rate.")
    low: float = Field(description="Lower end of its 95% credible interval.")
    high: float = Field(description="Upper end of its 95% credible interval.")


class Verdict(BaseModel):
    state: VerdictState
    probability_improved: float | None = Field(
        description="Chance that the rate after the merge is below the rate before it "
        "(null until merged)."
    )
    before: Rate | None
    after: Rate | None
    clean_runs_needed: int | None = Field(
        description="Further consecutive passing mainline runs that would verify the fix; "
        "null once decided, before the merge, or when no number up to the window would."
    )
    reason: str


class FixAttemptDetail(BaseModel):
    id: str
    test_id: str
    pr_url: str | None
    pr_number: int | None
    status: Status
    confidence: float | None
    code_changes: CodeChanges
    effectiveness: Effectiveness
    verdict: Verdict
