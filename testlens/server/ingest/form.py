"""Reading an upload: the form's text fields, validated, and the report file under a size cap
(also after gzip decompression).

Everything here runs before any database work, so a bad upload is refused with a clear 400,
413, 415 or 422 and nothing is stored.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile

from ...core.identity import is_absolute
from ...core.parsers import format_names
from ..errors import (
    invalid_field,
    missing_field,
    too_large,
    unparseable_report,
    unsupported_media_type,
)

_NAME = (
    r"(?:[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}"  # not starting with a dot
    r"|\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,98}"  # one dot, then more than dots
    r"|\.\.[A-Za-z0-9_.-]{1,98})"  # two dots, then anything
)
REPO_PATTERN = re.compile(f"^{_NAME}/{_NAME}$")
"""``owner/name`` as GitHub allows them: at most 100 characters each, and neither ``.`` nor
``..`` (written without look-arounds, which the validators of query parameters lack)."""
_MAX_PR_NUMBER = 2**31 - 1
_READ_CHUNK = 1024 * 1024
FORM_OVERHEAD = 64 * 1024
"""Multipart framing and the small text fields around the file."""
_TEXT_FIELDS = {
    "branch": 300,
    "commit": 64,
    "tree_sha": 64,
    "framework": 100,
    "workflow_run_id": 100,
    "environment": 200,
    "check_name": 300,
    "provider": 100,
    "format": 40,
    "shard": 40,
    "root": 1000,
    "orchestration_run": 36,
    "batch_id": 100,
}
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@dataclass(frozen=True, slots=True)
class RunMetadata:
    repo: str
    framework: str
    branch: str | None = None
    commit: str | None = None
    tree_sha: str | None = None
    pr_number: int | None = None
    workflow_run_id: str | None = None
    environment: str | None = None
    check_name: str | None = None
    provider: str | None = None
    format: str | None = None
    shard: str | None = None
    root: str | None = None
    """The repository's directory on the machine that ran the tests: absolute test file paths
    below it are stored relative to it (:func:`testlens.core.identity.relative_to_root`)."""
    orchestration_run: str | None = None
    """The orchestrated run (``runId``) whose batch this report holds (docs/orchestration.md)."""
    batch_id: str | None = None
    """The batch (the worker's ``batchId``) of ``orchestration_run`` this report holds."""


def check_request(content_type: str, content_length: str | None, limit: int) -> None:
    """Refuse, before reading the body, a body that is not a form or says it is too large."""
    if content_length and content_length.isdigit() and int(content_length) > limit + FORM_OVERHEAD:
        raise too_large(limit, "upload")
    if not content_type.startswith(_FORM_TYPES):
        raise unsupported_media_type("Send the report as multipart/form-data with a 'file' field")


def report_file(form: FormData) -> UploadFile:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise missing_field("file", "test report file (JUnit XML or JSON, optionally gzipped)")
    return upload


def read_metadata(form: Any) -> RunMetadata:
    """Validate the text fields of the upload form."""
    values: dict[str, Any] = {}
    for name, max_length in _TEXT_FIELDS.items():
        value = form.get(name)
        if isinstance(value, UploadFile):
            raise invalid_field(name, "string", f"Field {name} must be text, not a file")
        if value is not None and value.strip():
            value = value.strip()
            if not value.isprintable():
                raise invalid_field(
                    name,
                    "printable text",
                    f"Field {name} contains control characters",
                )
            if len(value) > max_length:
                raise invalid_field(
                    name,
                    f"string of at most {max_length} characters",
                    f"Field {name} is longer than {max_length} characters",
                )
            values[name] = value
    repo = form.get("repo")
    if not isinstance(repo, str) or not repo.strip():
        raise missing_field("repo", "string in format 'owner/repo'")
    if not REPO_PATTERN.match(repo.strip()):
        raise invalid_field(
            "repo",
            "string in format 'owner/repo'",
            f"Invalid repo {repo.strip()!r}: expected 'owner/repo'",
        )
    if "framework" not in values:
        raise missing_field("framework", "string naming the test framework, e.g. 'pytest'")
    if "format" in values and values["format"] not in format_names():
        raise invalid_field(
            "format",
            "one of " + ", ".join(format_names()),
            f"Unknown report format {values['format']!r}",
        )
    if "root" in values and not is_absolute(values["root"]):
        raise invalid_field(
            "root",
            "absolute path",
            f"Field root must be an absolute path, not {values['root']!r}",
        )
    pr_number = form.get("pr_number")
    if isinstance(pr_number, str) and pr_number.strip():
        text = pr_number.strip()
        if not (text.isascii() and text.isdigit() and 0 < int(text) <= _MAX_PR_NUMBER):
            raise invalid_field(
                "pr_number",
                f"integer from 1 to {_MAX_PR_NUMBER}",
                "pr_number must be a positive integer",
            )
        values["pr_number"] = int(text)
    return RunMetadata(repo=repo.strip(), **values)


async def read_report(upload: UploadFile, limit: int) -> bytes:
    """Read the uploaded file, refusing more than ``limit`` bytes before or after gzip."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large(limit, "report")
        chunks.append(chunk)
    data = b"".join(chunks)
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data, limit)
    if not data.strip():
        raise unparseable_report("The report file is empty", "empty")
    return data


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a gzip bomb stops at the cap, not in swap.

    Every member of a multi-member file is read (``cat a.gz b.gz`` is valid gzip), and a
    stream that ends before its member does (a truncated upload, even one cut at a flush
    point, which inflates cleanly as far as it goes) is refused: storing the part that
    arrived would record a run with tests missing.
    """
    parts: list[bytes] = []
    size = 0
    rest = data
    try:
        while rest:
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out = decompressor.decompress(rest, limit - size + 1)
            size += len(out)
            if size > limit or decompressor.unconsumed_tail:
                raise too_large(limit, "decompressed report")
            if not decompressor.eof:
                raise unparseable_report(
                    "The gzip data is truncated: the upload ended before the report did",
                    "truncated gzip",
                )
            parts.append(out)
            rest = decompressor.unused_data
            if rest and rest[:2] != b"\x1f\x8b":
                if rest.strip(b"\x00"):  # some writers pad with zeros; anything else is not gzip
                    raise unparseable_report(
                        "Unexpected data after the gzip stream", "trailing data"
                    )
                rest = b""
    except zlib.error as exc:
        raise unparseable_report(f"Invalid gzip data: {exc}", str(exc)) from None
    return b"".join(parts)
