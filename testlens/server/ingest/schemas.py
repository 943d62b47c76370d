"""The upload form and its answer, in the Unfold CI dialect."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ...core.parsers import format_names
from .form import _MAX_PR_NUMBER, _TEXT_FIELDS, REPO_PATTERN  # form owns the limits

_DESCRIPTIONS = {
    "file": "The report: JUnit XML or a JSON format, optionally gzipped.",
    "repo": "The repository, 'owner/name'.",
    "framework": "The test framework, e.g. 'pytest'.",
    "format": "The report's format, when not told by its content.",
    "pr_number": "The pull request the run is for.",
}


def _form_schema() -> dict[str, Any]:
    """The upload form as ``form`` reads it (its fields, their lengths), for the OpenAPI
    document: the endpoint reads the form itself, under size limits, so FastAPI cannot."""
    fields: dict[str, Any] = {
        "file": {"type": "string", "format": "binary"},
        "repo": {"type": "string", "pattern": REPO_PATTERN.pattern},
        **{name: {"type": "string", "maxLength": n} for name, n in _TEXT_FIELDS.items()},
        "framework": {  # not blank
            "type": "string",
            "minLength": 1,
            "maxLength": _TEXT_FIELDS["framework"],
            "pattern": r"\S",
        },
        "format": {"type": "string", "enum": format_names()},
        "pr_number": {"type": "integer", "minimum": 1, "maximum": _MAX_PR_NUMBER},
    }
    for name, description in _DESCRIPTIONS.items():
        fields[name]["description"] = description
    return {"type": "object", "required": ["file", "repo", "framework"], "properties": fields}


UPLOAD_FORM: dict[str, Any] = {
    "required": True,
    "content": {"multipart/form-data": {"schema": _form_schema()}},
}
"""The request body of ``POST /api/test-results`` (its route's ``openapi_extra``)."""


class IngestResponse(BaseModel):
    success: bool
    tests_processed: int = Field(description="Distinct tests in the report.")
    flaky_detected: int = Field(description="Tests this upload made or kept flaky.")
    run_id: str
