"""Request and response models of the webhooks API."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from .outbox import EVENTS


class WebhookIn(BaseModel):
    """The body of ``POST /api/webhooks``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    events: list[str] = Field(min_length=1)
    secret: str = Field(min_length=16, max_length=512)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Parsed by the client that will send to it, so what passes here can be requested.
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if (
            url is None
            or url.scheme not in ("http", "https")
            or not url.host
            or any(ch.isspace() for ch in value)
        ):
            raise PydanticCustomError("url", "must be an http:// or https:// URL with a host")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [event for event in value if event not in EVENTS]
        if unknown:
            raise PydanticCustomError(
                "event",
                "unknown event {event}; known events: {known}",
                {"event": repr(unknown[0]), "known": ", ".join(EVENTS)},
            )
        return list(dict.fromkeys(value))


class WebhookOut(BaseModel):
    """A subscription as the API shows it; the secret is write-only and never shown."""

    id: str
    url: str
    events: list[str]
    created_at: str


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class AttemptLogEntry(BaseModel):
    at: str
    status_code: int | None
    error: str | None = Field(description="None when the attempt delivered.")
    duration_ms: float


class DeliveryOut(BaseModel):
    id: str = Field(description="Also sent as X-Testlens-Delivery, the same across retries.")
    event: str
    status: str = Field(description="pending, delivered or dead")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    attempts_log: list[AttemptLogEntry]


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryOut]
    page: int
    has_more: bool


class Redelivered(BaseModel):
    delivery: DeliveryOut
