"""Runtime settings, read once from ``TESTLENS_*`` environment variables.

Zero configuration gives a working server: an SQLite file in ``./testlens-data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# Branches whose runs are evidence of flakiness on their own (docs/flakiness.md).
DEFAULT_MAINLINE_BRANCHES = ("main", "master", "trunk", "develop")
# Outgoing webhook delivery (docs/webhooks.md): field -> environment variable.
_WEBHOOK_ENV = {
    "webhook_max_attempts": "TESTLENS_WEBHOOK_MAX_ATTEMPTS",
    "webhook_backoff_base_seconds": "TESTLENS_WEBHOOK_BACKOFF_BASE_SECONDS",
    "webhook_backoff_cap_seconds": "TESTLENS_WEBHOOK_BACKOFF_CAP_SECONDS",
    "webhook_poll_seconds": "TESTLENS_WEBHOOK_POLL_SECONDS",
    "webhook_timeout_seconds": "TESTLENS_WEBHOOK_TIMEOUT_SECONDS",
}


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

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("TESTLENS_DATA_DIR", "testlens-data")).resolve()
        url = env.get("TESTLENS_DATABASE_URL") or f"sqlite:///{data_dir / 'testlens.db'}"
        # Each webhook setting is parsed as the type of its default (int or float).
        defaults = {field.name: field.default for field in fields(cls)}
        webhook = {
            name: type(defaults[name])(env[var]) for name, var in _WEBHOOK_ENV.items() if var in env
        }
        return cls(
            database_url=url,
            data_dir=data_dir,
            max_upload_bytes=int(env.get("TESTLENS_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)),
            mainline_branches=tuple(
                b.strip()
                for b in env.get(
                    "TESTLENS_MAINLINE_BRANCHES", ",".join(DEFAULT_MAINLINE_BRANCHES)
                ).split(",")
                if b.strip()
            ),
            **webhook,
        )
