"""What a real ``testlens serve`` writes to its access log holds no credential: presigned
signatures are masked, and API keys are refused in URLs (and masked there too)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
from builders import served

from testlens.server.logredact import RedactQueries, redact


def test_secret_parameters_are_masked_and_others_kept():
    path = "/api/testDurations/jobs/j/report?expires=1767225600&signature=AbC-123_xyz&x=1"
    assert redact(path) == "/api/testDurations/jobs/j/report?expires=1767225600&signature=***&x=1"
    assert redact("/api/repos?API_KEY=tl_sk_abc&page=2") == "/api/repos?API_KEY=***&page=2"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, "%s %s", ("GET", path), None)
    RedactQueries().filter(record)
    assert "AbC-123_xyz" not in record.getMessage()


def test_the_access_log_of_a_real_server_holds_no_secret(tmp_path: Path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TESTLENS_")},
        "TESTLENS_DATA_DIR": str(tmp_path),
    }
    log = tmp_path / "server.log"
    with served(env, log) as (_process, url), httpx.Client(base_url=url, timeout=10) as client:
        signed = client.put(
            "/api/testDurations/jobs/j/report",
            params={"expires": "1767225600", "signature": "SIGNATURE-SECRET-42"},
        )
        assert signed.status_code == 403
        keyed = client.get("/api/repos", params={"api_key": "tl_sk_KEY-SECRET-42"})
        assert keyed.status_code == 400
        assert keyed.json()["code"] == "INVALID_FIELD"
        assert keyed.json()["details"]["field"] == "api_key"
    written = log.read_text()
    assert "/api/testDurations/jobs/j/report?expires=1767225600&signature=***" in written
    assert "SIGNATURE-SECRET-42" not in written
    assert "KEY-SECRET-42" not in written
