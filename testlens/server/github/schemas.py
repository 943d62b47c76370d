"""What ``POST /api/github/webhooks`` answers (GitHub reads only the status; people reading
its delivery log see the rest)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Accepted(BaseModel):
    """A delivery taken in: stored, or recognised as one stored before."""

    delivery: str = Field(description="The delivery's GUID (X-GitHub-Delivery).")
    event: str = Field(description="The event (X-GitHub-Event).")
    duplicate: bool = Field(
        description="True when this GUID was received before: nothing was stored or done again."
    )
