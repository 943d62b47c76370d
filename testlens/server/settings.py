"""Runtime settings, read once from ``TESTLENS_*`` environment variables.

Zero configuration gives a working server: an SQLite file in ``./testlens-data``. Each
setting is declared once in :data:`DECLARED` (variable, type, default, help, secret or not);
:meth:`Settings.from_env` reads exactly those, and a test checks the README's settings table
against them, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# Branches whose runs are evidence of flakiness on their own (docs/flakiness.md).
DEFAULT_MAINLINE_BRANCHES = ("main", "master", "trunk", "develop")
DEFAULT_DATA_DIR = "testlens-data"


def _branches(text: str) -> tuple[str, ...]:
    return tuple(branch.strip() for branch in text.split(",") if branch.strip())


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``TESTLENS_*`` variable: which field it sets and how its text is read."""

    variable: str
    field: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


DECLARED: tuple[Setting, ...] = (
    Setting("TESTLENS_DATA_DIR", "data_dir", Path, "where the SQLite database lives"),
    Setting(
        "TESTLENS_DATABASE_URL",
        "database_url",
        str,
        "the database, e.g. postgresql://user@host:5432/testlens",
        secret=True,  # may carry a password
    ),
    Setting(
        "TESTLENS_MAX_UPLOAD_BYTES",
        "max_upload_bytes",
        int,
        "upload limit, before and after decompression",
    ),
    Setting(
        "TESTLENS_MAINLINE_BRANCHES",
        "mainline_branches",
        _branches,
        "branches whose runs are statistical evidence of flakiness",
    ),
    Setting(
        "TESTLENS_WEBHOOK_MAX_ATTEMPTS",
        "webhook_max_attempts",
        int,
        "delivery attempts before a webhook delivery is dead-lettered",
    ),
    Setting(
        "TESTLENS_WEBHOOK_BACKOFF_BASE_SECONDS",
        "webhook_backoff_base_seconds",
        float,
        "first retry delay of a webhook delivery (doubling each time, with jitter)",
    ),
    Setting(
        "TESTLENS_WEBHOOK_BACKOFF_CAP_SECONDS",
        "webhook_backoff_cap_seconds",
        float,
        "the longest retry delay of a webhook delivery",
    ),
    Setting(
        "TESTLENS_WEBHOOK_POLL_SECONDS",
        "webhook_poll_seconds",
        float,
        "how often the webhook worker looks for due deliveries",
    ),
    Setting(
        "TESTLENS_WEBHOOK_TIMEOUT_SECONDS",
        "webhook_timeout_seconds",
        float,
        "the HTTP timeout of one webhook delivery attempt",
    ),
    Setting(
        "TESTLENS_SECRET_KEY",
        "secret_key",
        str,
        "signs tokens and presigned URLs and encrypts stored webhook secrets "
        "(default: a random key kept in the database)",
        secret=True,
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    data_dir: Path
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    mainline_branches: tuple[str, ...] = DEFAULT_MAINLINE_BRANCHES
    webhook_max_attempts: int = 8
    webhook_backoff_base_seconds: float = 10.0
    webhook_backoff_cap_seconds: float = 3600.0
    webhook_poll_seconds: float = 1.0
    webhook_timeout_seconds: float = 10.0
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"data_dir": Path(DEFAULT_DATA_DIR)}
        for setting in DECLARED:
            text = env.get(setting.variable, "").strip()
            if not text:
                continue
            try:
                values[setting.field] = setting.parse(text)
            except ValueError:
                shown = "(hidden)" if setting.secret else repr(text)
                raise ValueError(f"{setting.variable}={shown} is not valid") from None
        values["data_dir"] = Path(values["data_dir"]).resolve()
        values.setdefault("database_url", f"sqlite:///{values['data_dir'] / 'testlens.db'}")
        return cls(**values)
