"""Request and response models of the durations APIs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

_SLUG = r"^[A-Za-z0-9_.-]+$"


class PredictedTest(BaseModel):
    id: str
    file: str
    suite: str
    classname: str
    name: str
    nodeid: str
    p50_ms: float
    p90_ms: float
    samples: int = Field(description="Complete (not timed-out) runs behind the estimate.")


class DurationsListing(BaseModel):
    repo: str
    environment: str = Field(description="The environment whose history answered.")
    tests: list[PredictedTest]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CreateDurationsJob(_Camel):
    commit_id: str = Field(min_length=1, max_length=64)
    shard_group_key: str = Field(min_length=1, max_length=250, pattern=r"^[a-zA-Z0-9_-]+$")
    org_slug: str | None = Field(default=None, max_length=150, pattern=_SLUG)
    project_slug: str | None = Field(default=None, max_length=150, pattern=_SLUG)

    @model_validator(mode="after")
    def _both_slugs(self) -> CreateDurationsJob:
        if (self.org_slug is None) != (self.project_slug is None):
            raise ValueError("orgSlug and projectSlug go together")
        return self

    @property
    def project(self) -> str:
        return f"{self.org_slug}/{self.project_slug}" if self.org_slug else ""


class DurationsJobCreated(_Camel):
    test_durations_token: str
    upload_url: str


class DurationsJobSubmitted(_Camel):
    download_url: str
