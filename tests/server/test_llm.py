"""The optional language model, against a fake OpenAI-compatible API on loopback: what is
sent (the model, the key, the evidence, never a secret), what comes back (trimmed, capped,
refused when empty or not a fitting diff), and that failures, 5xx answers and timeouts give
None without raising; without the settings nothing is built and nothing is called."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_llm import FakeLLM

from testlens.cli import main
from testlens.server.llm import MARKER, LanguageModel, scrub
from testlens.server.settings import Settings

API_KEY = "sk-test-7c1d0e5f9a8b4c2d"

# Secrets as they turn up in test output, each with the part that must never leave.
SECRETS = {
    "github token": ("GITHUB_TOKEN=ghp_R4nd0mT0kenV4lue1234567890abcdefXYZ", "ghp_R4nd0m"),
    "github token in prose": (
        "fatal: could not read from https://github.com with "
        "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
        "ghs_16C7e42F",
    ),
    "fine-grained github token": (
        "token github_pat_11ABCDEFG0abcdefghij_KLMNOPQRSTUVWXYZ0123456789abcdefghijklmno rejected",
        "github_pat_11ABCDEFG0",
    ),
    "testlens key": (
        "uploading with tl_sk_q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c",
        "q1w2e3r4t5y6",
    ),
    "aws access key": (
        "botocore: credential AKIAIOSFODNN7EXAMPLE not valid",
        "AKIAIOSFODNN7EXAMPLE",
    ),
    "aws secret key": (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI",
    ),
    "slack token": (
        "slack: posting with xoxb-2951234567-4412345678901-AbCdEfGhIjKlMnOpQrStUvWx",
        "AbCdEfGhIjKl",
    ),
    "google api key": ("maps?key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "AIzaSyA1b2C3"),
    "jwt": (
        "session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c expired",
        "SflKxwRJSMeKKF2QT4fw",
    ),
    "bearer token": (
        "curl -H 'X-Trace: 1' --oauth2-bearer x; Bearer 9f8e7d6c5b4a3928170af5e4d3c2b1a0 refused",
        "9f8e7d6c5b4a3928",
    ),
    "authorization header": (
        "> Authorization: Basic dXNlcjpodW50ZXIyMDI0\n> Accept: */*",
        "dXNlcjpodW50",
    ),
    "authorization in a dict": (
        "headers={'Authorization': 'token 0a1b2c3d4e5f60718293', 'Accept': 'json'}",
        "0a1b2c3d4e5f6071",
    ),
    "pem private key": (
        "key = '''-----BEGIN RSA PRIVATE KEY-----\n"
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t\n"
        "RgWTaWP0+5yUbo9YEVx0=\n-----END RSA PRIVATE KEY-----'''",
        "MIIEowIBAAKCAQEAu1SU1",
    ),
    "pem key cut short": (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "MIIEvQIBADAN",
    ),
    "password in a database url": (
        "OperationalError: could not connect to postgresql://shop:Sup3r-S3cret@db:5432/shop",
        "Sup3r-S3cret",
    ),
    "token in a query string": (
        "GET https://api.example.com/v1/items?page=2&access_token=q8w7e6r5t4y3 -> 401",
        "q8w7e6r5t4y3",
    ),
    "password in an environment dump": ("PGPASSWORD=correct-horse-battery-staple", "correct-horse"),
    "password in json": ('{"user": "bob", "password": "hunter2-again"}', "hunter2-again"),
    "escaped json": ('body: "{\\"api_key\\": \\"k-31337-zzz\\"}"', "k-31337-zzz"),
    "passwd": ("mysql --user=root passwd=letmein99 shop", "letmein99"),
    "secret=": ("client_secret=csec_0011223344 sent", "csec_0011223344"),
    "token=": ("NPM token=npm_AbCdEf0123456789 invalid", "npm_AbCdEf"),
    "python locals": ("password   = 'pytest-local-pw'", "pytest-local-pw"),
    "yaml": ("  api-key: yaml-key-998877", "yaml-key-998877"),
    "command-line flag": ("run.sh --db-password s3cr3tflag --verbose", "s3cr3tflag"),
    "presigned url": (
        "PUT https://bucket.s3.amazonaws.com/a?X-Amz-Signature=8f1c2d3e4f5a6b7c&X-Amz-Date=1",
        "8f1c2d3e4f5a6b7c",
    ),
    "basic auth with token user": (
        "git clone https://x-access-token:gha1b2c3d4e5f6@github.com/acme/shop.git",
        "gha1b2c3d4e5f6",
    ),
}

# Text a model needs and that must come through unchanged.
PLAIN = [
    "AssertionError: assert 503 == 200",
    "requests.exceptions.ConnectionError: HTTPConnectionPool(host='localhost', port=8000)",
    "tests/test_shop.py::TestShop::test_pay[visa-3]",
    "expected token ')' but found ','",
    "os.path.join(tmp, 'a.txt') not found; see https://docs.example.com/errors#E42",
    "java.net.SocketTimeoutException: Read timed out after 5000 ms at com.acme.Client.get",
    "git@github.com:acme/shop.git",
    "user@example.com was not notified",
]


@pytest.mark.parametrize("name", SECRETS)
def test_scrub_removes_each_kind_of_secret(name):
    text, secret = SECRETS[name]
    scrubbed = scrub(text)
    assert secret not in scrubbed
    assert MARKER in scrubbed


@pytest.mark.parametrize("text", PLAIN)
def test_scrub_keeps_what_is_not_secret(text):
    assert scrub(text) == text


def test_scrub_keeps_the_context_around_a_secret():
    scrubbed = scrub("OperationalError: could not connect to postgresql://shop:pw@db:5432/shop")
    assert scrubbed == "OperationalError: could not connect to postgresql://[secret]@db:5432/shop"
    assert scrub("DB_PASSWORD=x make test") == "DB_PASSWORD=[secret] make test"
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----"
    assert scrub(f"key:\n{pem}\nloaded") == "key:\n[secret]\nloaded"


# The model


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


def configured(fake: FakeLLM, tmp_path: Path, **env: str) -> LanguageModel:
    settings = Settings.from_env(
        {
            "TESTLENS_DATA_DIR": str(tmp_path),
            "TESTLENS_LLM_BASE_URL": fake.url,
            "TESTLENS_LLM_MODEL": "flake-explainer-1",
            "TESTLENS_LLM_API_KEY": API_KEY,
            **env,
        }
    )
    model = LanguageModel.from_settings(settings)
    assert model is not None
    return model


def evidence(*planted: str) -> dict[str, object]:
    """What the root-cause analysis collects, with ``planted`` text in its messages."""
    return {
        "category": "network_dependency",
        "confidence": 0.82,
        "signatures": [
            {
                "error_type": "requests.exceptions.ConnectionError",
                "message": "Max retries exceeded with url: /v1/rates (Caused by "
                "NewConnectionError: [Errno 111] Connection refused)",
                "frames": ["tests/test_rates.py:test_converts", "shop/rates.py:fetch"],
                "count": 7,
            },
            *({"error_type": "", "message": text, "count": 1} for text in planted),
        ],
        "flips": {"runs": 40, "failed": 9, "pattern": "PPFPPPFPFPPPPFFP"},
        "environments": {"os": {"ubuntu-22.04": [9, 30], "macos-14": [0, 10]}},
        "order_dependency": None,
        "co_failing": [["tests/test_rates.py::test_rounds", 6]],
    }


def test_explain_sends_the_evidence_with_the_model_and_key(fake, tmp_path):
    fake.reply = "  Seven failures are a refused connection to the rates API on Ubuntu runners.\n"
    fake.answered_model = "flake-explainer-1-2024-06"
    model = configured(fake, tmp_path)
    explanation = model.explain(evidence())
    model.close()
    assert explanation is not None
    assert explanation.text == (
        "Seven failures are a refused connection to the rates API on Ubuntu runners."
    )
    assert explanation.model == "flake-explainer-1-2024-06"  # the model that answered
    text, model_used = explanation  # the (text, model) pair the root-cause analysis takes
    assert (text, model_used) == (explanation.text, explanation.model)
    (request,) = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.json["model"] == "flake-explainer-1"
    for fact in ("network_dependency", "0.82", "Connection refused", '"count": 7', "ubuntu-22.04"):
        assert fact in request.text
    assert "test_rounds" in request.text


def test_no_secret_in_the_evidence_reaches_the_model(fake, tmp_path):
    planted = [text for text, _ in SECRETS.values()]
    model = configured(fake, tmp_path)
    assert model.explain(evidence(*planted)) is not None
    model.close()
    (request,) = fake.requests
    arrived = request.body.decode() + request.text
    assert arrived.count(MARKER) >= len(SECRETS)
    leaked = [name for name, (_, secret) in SECRETS.items() if secret in arrived]
    assert leaked == []


def test_the_environments_openai_key_is_not_sent_to_a_server_without_one(
    fake, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-meant-for-something-else")
    model = configured(fake, tmp_path, TESTLENS_LLM_API_KEY="")
    assert model.explain(evidence()) is not None
    model.close()
    assert "sk-meant-for-something-else" not in fake.requests[0].headers["authorization"]


def test_a_server_error_is_retried_once(fake, tmp_path):
    fake.failures = 1
    model = configured(fake, tmp_path)
    explanation = model.explain(evidence())
    model.close()
    assert explanation is not None
    assert len(fake.requests) == 2


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failing_server_gives_none_after_one_prompt_retry(fake, tmp_path, caplog, status):
    fake.failures, fake.status = 10, status
    model = configured(fake, tmp_path)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        assert model.explain(evidence(*(text for text, _ in SECRETS.values()))) is None
    elapsed = time.monotonic() - started
    model.close()
    assert len(fake.requests) == 2
    assert elapsed < 5  # the fake's Retry-After: 60 is not honoured
    assert f"{status}" in caplog.text and "built-in analysis stands" in caplog.text
    assert API_KEY not in caplog.text
    assert [name for name, (_, secret) in SECRETS.items() if secret in caplog.text] == []


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_refused_request_is_not_retried(fake, tmp_path, status):
    fake.failures, fake.status = 10, status
    model = configured(fake, tmp_path)
    assert model.explain(evidence()) is None
    model.close()
    assert len(fake.requests) == 1


def test_a_timeout_gives_none_without_raising(fake, tmp_path, caplog):
    fake.delay = 5
    model = configured(fake, tmp_path, TESTLENS_LLM_TIMEOUT_SECONDS="0.3")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="testlens.server.llm"):
        assert model.explain(evidence()) is None
    elapsed = time.monotonic() - started
    model.close()
    assert elapsed < 4  # two attempts of 0.3 s and a backoff, not the server's 5 s
    assert len(fake.requests) == 2
    assert "APITimeoutError" in caplog.text


def test_a_server_that_is_down_gives_none(tmp_path):
    fake = FakeLLM()  # never started: nothing listens on its port
    model = configured(fake, tmp_path)
    assert model.explain(evidence()) is None
    model.close()


@pytest.mark.parametrize("reply", ["", "   \n  ", "<think>The ports differ...</think>\n"])
def test_an_empty_answer_is_rejected(fake, tmp_path, reply):
    fake.reply = reply
    model = configured(fake, tmp_path)
    assert model.explain(evidence()) is None
    model.close()


def test_the_answer_is_trimmed_and_capped(fake, tmp_path):
    sentence = "The rates API refuses connections on Ubuntu runners in seven failures. "
    fake.reply = "<think>network?</think>\n\n" + sentence * 20
    model = configured(fake, tmp_path)
    explanation = model.explain(evidence())
    model.close()
    assert explanation is not None
    assert len(explanation.text) <= 600
    assert explanation.text.startswith("The rates API refuses")
    assert explanation.text.endswith("failures.")
    assert "<think>" not in explanation.text and "\n" not in explanation.text


# Settings


def test_without_settings_no_model_is_built(tmp_path):
    settings = Settings.from_env({"TESTLENS_DATA_DIR": str(tmp_path)})
    assert LanguageModel.from_settings(settings) is None


@pytest.mark.parametrize(
    "env",
    [
        {"TESTLENS_LLM_BASE_URL": "http://127.0.0.1:11434/v1"},
        {"TESTLENS_LLM_MODEL": "llama3.1"},
        {"TESTLENS_LLM_BASE_URL": "ftp://models.example.com", "TESTLENS_LLM_MODEL": "m"},
        {
            "TESTLENS_LLM_BASE_URL": "http://h/v1",
            "TESTLENS_LLM_MODEL": "m",
            "TESTLENS_LLM_TIMEOUT_SECONDS": "0",
        },
    ],
)
def test_incomplete_or_invalid_settings_are_refused(tmp_path, env):
    with pytest.raises(ValueError, match="TESTLENS_LLM"):
        Settings.from_env({"TESTLENS_DATA_DIR": str(tmp_path), **env})


def test_the_api_key_is_never_shown(tmp_path):
    settings = Settings.from_env(
        {
            "TESTLENS_DATA_DIR": str(tmp_path),
            "TESTLENS_LLM_BASE_URL": "http://127.0.0.1:11434/v1/",
            "TESTLENS_LLM_MODEL": "llama3.1",
            "TESTLENS_LLM_API_KEY": API_KEY,
        }
    )
    assert API_KEY not in repr(settings)
    assert settings.llm_base_url == "http://127.0.0.1:11434/v1"


def test_the_server_does_not_start_without_the_openai_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # as if it were not installed
    env = {
        "TESTLENS_DATA_DIR": str(tmp_path),
        "TESTLENS_LLM_BASE_URL": "http://127.0.0.1:8001/v1",
        "TESTLENS_LLM_MODEL": "qwen2.5-coder",
    }
    result = CliRunner().invoke(main, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    assert "pip install 'testlens[llm]'" in result.output
    assert not (tmp_path / "testlens.db").exists()  # it stopped before anything else


# Fix proposals

TEST_FILE = "tests/test_rates.py"
SOURCE = """\
import requests

API_TOKEN = "ghp_R4nd0mT0kenV4lue1234567890abcdefXYZ"


def test_converts(live_rates):
    rates = requests.get(live_rates.url, timeout=5).json()
    assert rates["EUR"] == 1.08
"""
FIX = """\
Reads the rates from a recorded fixture instead of the live service.

```diff
--- a/tests/test_rates.py
+++ b/tests/test_rates.py
@@ -5,4 +5,4 @@ API_TOKEN = "[secret]"

 def test_converts(live_rates):
-    rates = requests.get(live_rates.url, timeout=5).json()
+    rates = live_rates.recorded()
     assert rates["EUR"] == 1.08
```
"""


def test_a_fix_is_proposed_as_a_diff_that_applies(fake, tmp_path):
    fake.reply = FIX
    model = configured(fake, tmp_path)
    proposal = model.propose_fix(
        "tests/test_rates.py::test_converts", {TEST_FILE: SOURCE}, evidence()
    )
    model.close()
    assert proposal is not None
    assert (
        proposal.summary == "Reads the rates from a recorded fixture instead of the live service."
    )
    assert proposal.model == "flake-explainer-1"
    assert proposal.diff.startswith("--- a/tests/test_rates.py")
    assert proposal.files == {
        TEST_FILE: SOURCE.replace(
            "requests.get(live_rates.url, timeout=5).json()", "live_rates.recorded()"
        )
    }
    (request,) = fake.requests
    assert "def test_converts(live_rates):" in request.text
    assert "unified diff" in request.text
    assert "ghp_R4nd0m" not in request.body.decode() + request.text  # the source was scrubbed


@pytest.mark.parametrize(
    "reply",
    [
        "I would mock the rates service.",
        FIX.replace("tests/test_rates.py", "tests/conftest.py"),
        FIX.replace("-    rates = requests.get", "-    rates = httpx.get"),
        "```diff\n--- /dev/null\n+++ b/tests/fixtures.py\n@@ -0,0 +1 @@\n+RATES = {}\n```",
        "",
    ],
)
def test_an_answer_that_is_not_a_fitting_diff_is_refused(fake, tmp_path, reply):
    fake.reply = reply
    model = configured(fake, tmp_path)
    assert model.propose_fix("test_converts", {TEST_FILE: SOURCE}, evidence()) is None
    model.close()
    assert len(fake.requests) == 1


def test_a_failing_server_proposes_nothing(fake, tmp_path):
    fake.failures = 10
    model = configured(fake, tmp_path)
    assert model.propose_fix("test_converts", {TEST_FILE: SOURCE}, evidence()) is None
    model.close()


def test_a_source_too_long_to_send_is_not_sent(fake, tmp_path):
    model = configured(fake, tmp_path)
    huge = SOURCE + "# padding\n" * 7000
    assert model.propose_fix("test_converts", {TEST_FILE: huge}, evidence()) is None
    assert model.propose_fix("test_converts", {}, evidence()) is None
    model.close()
    assert fake.requests == []
