"""The bodies of the orchestration API, in the Shifty dialect's camelCase (``/api/v1``), and
of testlens' own worker protocol (claims, heartbeats, releases; docs/orchestration.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..ingest.form import REPO_PATTERN

MAX_FILES = 50_000
MAX_TESTS = 200_000
Path = Annotated[str, Field(min_length=1, max_length=1000)]


class OrchestrateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    testFiles: list[Path] = Field(min_length=1, max_length=MAX_FILES)
    workerCount: int = Field(default=5, ge=1, le=20)
    project: str | None = Field(
        default=None,
        pattern=REPO_PATTERN.pattern,
        description="The repository (owner/name) whose history predicts durations.",
    )
    branch: str | None = Field(default=None, max_length=300)
    commitSha: str | None = Field(default=None, max_length=64)
    metadata: dict[str, Any] | None = None
    ciBuildId: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="The CI build's identity: every machine of one CI build may create the "
        "run with the same list and gets the same run.",
    )
    strategy: Literal["queue", "static"] = "queue"
    environment: str | None = Field(default=None, max_length=200)
    tests: list[Path] | None = Field(
        default=None,
        max_length=MAX_TESTS,
        description="Test ids (path::name) to run instead of or inside whole files.",
    )


class OpenRunRequest(BaseModel):
    """A run of plain uploads, opened by a test runner that publishes live events before it
    uploads its report (``POST /api/v1/runs``; testlens' own, not the Shifty dialect's)."""

    model_config = ConfigDict(extra="forbid")
    project: str = Field(pattern=REPO_PATTERN.pattern, description="The repository (owner/name).")
    ciBuildId: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The CI run's id (the uploads' workflow_run_id): every machine of it "
        "gets the same run, and so do its uploads.",
    )
    branch: str | None = Field(default=None, max_length=300)
    commitSha: str | None = Field(default=None, max_length=64)
    environment: str | None = Field(default=None, max_length=200)
    totalTests: int | None = Field(
        default=None, ge=0, le=MAX_TESTS, description="The caller's tests: logs run:start."
    )
    shardIndex: int = Field(default=0, ge=0, le=10_000)
    totalShards: int = Field(default=1, ge=1, le=10_000)


class OpenRunResponse(BaseModel):
    runId: str
    status: str


class ShardEstimate(BaseModel):
    index: int
    testCount: int
    estimatedDuration: float = Field(description="Predicted milliseconds (p50 sums).")


class OrchestrateResponse(BaseModel):
    runId: str
    status: str
    workerCount: int
    totalTests: int
    shards: list[ShardEstimate]


class CancelResponse(BaseModel):
    success: bool
    message: str


class QueueStats(BaseModel):
    waiting: int = Field(description="Items not handed out yet.")
    active: int = Field(description="Items held by a worker.")
    completed: int = Field(description="Items with a result.")
    failed: int = Field(description="Items lost (their workers died three times) or timed out.")


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batchId: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")
    worker: str | None = Field(default=None, max_length=200)
    nodeIndex: int | None = Field(default=None, ge=0, le=10_000)
    rerun: Literal["failed", "all"] | None = None
    attempt: int | None = Field(
        default=None, ge=1, le=1000, description="The CI attempt of a rerun (e.g. 2)."
    )


class ClaimedItem(BaseModel):
    id: int
    file: str
    tests: list[str] | None = Field(description="The test ids to run, or null: the whole file.")
    retries: int = Field(description="Retries a failing test of this item may use.")
    estimatedDuration: float


class ClaimResponse(BaseModel):
    status: Literal["claimed", "wait"]
    batchId: str | None = None
    items: list[ClaimedItem] = []
    project: str | None = None
    environment: str | None = None
    leaseSeconds: float | None = None
    heartbeatSeconds: float | None = None
    retryAfter: float | None = Field(default=None, description="Seconds, with status wait.")


class HeartbeatResponse(BaseModel):
    status: Literal["active", "expired", "cancelled", "done"]
    leaseSeconds: float


class ReleaseResponse(BaseModel):
    released: int


class RunSummary(BaseModel):
    id: str
    status: str
    totalTests: int
    passedTests: int
    failedTests: int
    durationMs: float
    branch: str | None
    commitSha: str | None
    createdAt: str | None
    completedAt: str | None


class RunList(BaseModel):
    runs: list[RunSummary]


class RunDetail(BaseModel):
    id: str
    status: str
    totalTests: int
    passedTests: int
    failedTests: int
    flakyTests: int
    durationMs: float
    workerCount: int
    shardStrategy: str
    branch: str | None
    commitSha: str | None
    metadata: dict[str, Any]
    reason: str | None = Field(description="Why the run failed or was cancelled, if it was.")


class RunResult(BaseModel):
    id: str
    testFile: str
    testName: str
    status: str
    durationMs: float
    retryCount: int
    healingAttempted: bool
    traceUrl: str | None


class RunWithResults(BaseModel):
    run: RunDetail
    results: list[RunResult]
    totalResults: int


class FailedTest(BaseModel):
    testFile: str
    testName: str
    errorMessage: str | None


class FailedTests(BaseModel):
    failedTests: list[FailedTest]
