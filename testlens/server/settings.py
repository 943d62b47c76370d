"""Runtime settings, read once from ``TESTLENS_*`` environment variables.

Zero configuration gives a working server: an SQLite file in ``./testlens-data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    data_dir: Path
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("TESTLENS_DATA_DIR", "testlens-data")).resolve()
        url = env.get("TESTLENS_DATABASE_URL") or f"sqlite:///{data_dir / 'testlens.db'}"
        return cls(
            database_url=url,
            data_dir=data_dir,
            max_upload_bytes=int(env.get("TESTLENS_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)),
        )
