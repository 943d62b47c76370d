"""Where the shared corpus of real reports lives (``../shared/corpus`` beside the checkout).

A missing corpus is an error, never a skip: tests that compare against real reports must run.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("TESTLENS_CORPUS", ROOT.parent / "shared" / "corpus"))
REPORTS = CORPUS / "reports"
DURATIONS = CORPUS / "durations"

if not REPORTS.is_dir():
    raise RuntimeError(f"test corpus not found at {CORPUS}; set TESTLENS_CORPUS")
