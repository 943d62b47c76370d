"""The GitHub App's REST client against a fake GitHub served over HTTP (``fake_github``):
App JWTs the fake verifies with the App's public key, installation tokens and their cache,
the branch + commit + draft PR + comment sequence, file reads, and GitHub's errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_github import FakeGitHub

from testlens.cli import main
from testlens.server.github.client import GitHubApp, GitHubError, web_url
from testlens.server.settings import Settings

APP_ID = "424242"
INSTALLATION = 7001
REPO = "Acme/Shop"
FILES = {"tests/test_shop.py": "def test_pay():\n    assert pay()\n", "README.md": "# shop\n"}


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def private_pem(key: rsa.RSAPrivateKey) -> str:
    return _pem(key)


@pytest.fixture(scope="module")
def server(key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fake = FakeGitHub(APP_ID, public.decode()).start()
    yield fake
    fake.stop()


@pytest.fixture
def github(server: FakeGitHub) -> FakeGitHub:
    """The fake with a fresh repository, its tokens and its call log emptied."""
    server.repos.clear()
    server.revoke_tokens()
    server.calls.clear()
    server.jwts.clear()
    server.token_lifetime = timedelta(hours=1)
    server.add_repo(REPO, INSTALLATION, FILES)
    return server


@pytest.fixture
def app(github: FakeGitHub, private_pem: str) -> GitHubApp:
    return GitHubApp(APP_ID, private_pem, github.url)


def test_branch_commit_draft_pull_request_and_comment(
    app: GitHubApp, github: FakeGitHub, private_pem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repo = github.repos[REPO.lower()]
    main = app.default_branch_sha(INSTALLATION, REPO, "main")
    assert main == repo.refs["heads/main"]

    app.create_branch(INSTALLATION, REPO, "testlens/fix-test-pay", main)
    fixed = "def test_pay():\n    assert pay(retries=3)\n"
    sha = app.commit_files(
        INSTALLATION,
        REPO,
        "testlens/fix-test-pay",
        "Fix the flaky test_pay",
        {"tests/test_shop.py": fixed, "tests/conftest.py": "import pytest\n"},
    )
    pull = app.create_pull_request(
        INSTALLATION,
        REPO,
        head="testlens/fix-test-pay",
        base="main",
        title="Fix flaky test_pay",
        body="Fixes-test: tests/test_shop.py::test_pay",
    )
    app.comment(INSTALLATION, REPO, pull["number"], "Root cause: a race on the payment mock.")

    # One commit on the new branch, child of main, with both files; main untouched.
    assert repo.refs["heads/testlens/fix-test-pay"] == sha
    assert repo.commits[sha].parents == [main]
    assert repo.commits[sha].message == "Fix the flaky test_pay"
    assert repo.files(sha) == {
        **FILES,
        "tests/test_shop.py": fixed,
        "tests/conftest.py": "import pytest\n",
    }
    assert repo.refs["heads/main"] == main
    assert repo.files("main") == FILES
    # A draft pull request, and the comment on it.
    assert pull["draft"] is True
    assert pull["html_url"].endswith(f"/pull/{pull['number']}")
    assert repo.pulls == [pull]
    assert pull["head"] == {"ref": "testlens/fix-test-pay", "sha": sha}
    assert repo.comments[pull["number"]] == ["Root cause: a race on the payment mock."]
    # Files read back, from either branch; a missing one is None.
    assert app.file_text(INSTALLATION, REPO, "tests/test_shop.py", "testlens/fix-test-pay") == fixed
    assert (
        app.file_text(INSTALLATION, REPO, "tests/test_shop.py", "main")
        == FILES["tests/test_shop.py"]
    )
    assert app.file_text(INSTALLATION, REPO, "tests/missing.py", "main") is None

    # One token for the whole sequence; every call as GitHub asks for it.
    assert len(github.token_calls()) == 1
    calls = [c for c in github.calls if c.auth == "token"]
    # ref; new ref; ref, commit, 2 blobs, tree, commit, ref update; pull; comment; 3 reads
    assert len(calls) == 14
    assert all(c.headers["authorization"].startswith("token ") for c in calls)
    for call in github.calls:
        assert call.headers["x-github-api-version"] == "2022-11-28"
        raw = "/contents/" in call.path
        assert call.headers["accept"] == (
            "application/vnd.github.raw+json" if raw else "application/vnd.github+json"
        )
    # Neither the key, a JWT nor a token is logged.
    for secret in (*github.tokens, *github.jwts, private_pem.splitlines()[1]):
        assert secret not in caplog.text


def test_the_jwt_is_rs256_backdated_and_ten_minutes_long(
    app: GitHubApp, github: FakeGitHub, key: rsa.RSAPrivateKey
) -> None:
    app.installation_token(INSTALLATION)
    (token,) = github.jwts
    claims = jwt.decode(token, key.public_key(), algorithms=["RS256"])
    assert claims["iss"] == APP_ID
    assert abs(claims["iat"] - (time.time() - 60)) < 5
    assert claims["exp"] - claims["iat"] == 600
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_a_token_is_reused_until_five_minutes_before_it_expires(
    app: GitHubApp, github: FakeGitHub, private_pem: str
) -> None:
    first = app.installation_token(INSTALLATION)
    app.default_branch_sha(INSTALLATION, REPO, "main")
    app.default_branch_sha(INSTALLATION, REPO, "main")
    assert app.installation_token(INSTALLATION) == first
    assert len(github.token_calls()) == 1

    # Tokens that live less than the five-minute margin are replaced on every use.
    github.token_lifetime = timedelta(minutes=4, seconds=50)
    other = GitHubApp(APP_ID, private_pem, github.url)
    other.default_branch_sha(INSTALLATION, REPO, "main")
    other.default_branch_sha(INSTALLATION, REPO, "main")
    assert len(github.token_calls()) == 3
    # Just over the margin: cached again.
    github.token_lifetime = timedelta(minutes=5, seconds=30)
    third = GitHubApp(APP_ID, private_pem, github.url)
    third.default_branch_sha(INSTALLATION, REPO, "main")
    third.default_branch_sha(INSTALLATION, REPO, "main")
    assert len(github.token_calls()) == 4


def test_a_revoked_token_is_replaced_once(app: GitHubApp, github: FakeGitHub) -> None:
    app.default_branch_sha(INSTALLATION, REPO, "main")
    github.revoke_tokens()
    app.default_branch_sha(INSTALLATION, REPO, "main")
    assert len(github.token_calls()) == 2


def test_github_errors_raise_with_status_and_message(app: GitHubApp, github: FakeGitHub) -> None:
    main = app.default_branch_sha(INSTALLATION, REPO, "main")
    with pytest.raises(GitHubError) as exists:
        app.create_branch(INSTALLATION, REPO, "main", main)
    assert exists.value.status == 422
    assert exists.value.message == "Reference already exists"

    with pytest.raises(GitHubError) as unknown:
        app.default_branch_sha(INSTALLATION, "acme/elsewhere", "main")
    assert (unknown.value.status, unknown.value.message) == (404, "Not Found")

    with pytest.raises(GitHubError) as invalid:
        app.create_pull_request(INSTALLATION, REPO, head="nope", base="main", title="t", body="")
    assert invalid.value.status == 422
    assert invalid.value.message.startswith("Validation Failed")

    with pytest.raises(GitHubError) as no_installation:
        app.installation_token(9999)
    assert no_installation.value.status == 404


def test_a_wrong_key_is_refused_by_github(github: FakeGitHub) -> None:
    stranger = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(GitHubError) as refused:
        GitHubApp(APP_ID, stranger, github.url).installation_token(INSTALLATION)
    assert refused.value.status == 401
    assert github.jwts == []


def test_no_answer_is_an_error_with_status_zero(private_pem: str) -> None:
    from builders import free_port

    app = GitHubApp(APP_ID, private_pem, f"http://127.0.0.1:{free_port()}/api/v3")
    with pytest.raises(GitHubError) as failed:
        app.installation_token(INSTALLATION)
    assert failed.value.status == 0


def test_web_url_of_github_ghe_com_and_enterprise_server() -> None:
    assert web_url("https://api.github.com") == "https://github.com"
    assert web_url("https://api.github.com/") == "https://github.com"
    assert web_url("https://api.octocorp.ghe.com") == "https://octocorp.ghe.com"
    assert web_url("https://github.acme.internal/api/v3") == "https://github.acme.internal"
    assert web_url("http://10.0.0.5:8080/api/v3/") == "http://10.0.0.5:8080"


def test_the_app_from_settings(tmp_path: Path, private_pem: str) -> None:
    base = {"database_url": "sqlite://", "data_dir": tmp_path}
    assert GitHubApp.from_settings(Settings(**base)) is None
    key_file = tmp_path / "app.pem"
    key_file.write_text(private_pem)
    app = GitHubApp.from_settings(
        Settings(**base, github_app_id=APP_ID, github_private_key_file=key_file)
    )
    assert app is not None
    assert private_pem.splitlines()[1] not in repr(app)

    with pytest.raises(ValueError, match="go together"):
        GitHubApp.from_settings(Settings(**base, github_app_id=APP_ID))
    not_a_key = tmp_path / "secret-name.pem"
    not_a_key.write_text("hunter2-not-a-key")
    for path in (not_a_key, tmp_path / "missing.pem"):
        with pytest.raises(ValueError) as refused:
            GitHubApp.from_settings(
                Settings(**base, github_app_id=APP_ID, github_private_key_file=path)
            )
        assert "secret-name" not in str(refused.value)
        assert "missing" not in str(refused.value)
        assert "hunter2" not in str(refused.value)


def test_a_key_file_that_holds_no_key_stops_the_server_in_one_line(tmp_path):
    key = tmp_path / "app.pem"
    key.write_text("not a key\n")
    env = {
        "TESTLENS_DATA_DIR": str(tmp_path),
        "TESTLENS_GITHUB_APP_ID": "123",
        "TESTLENS_GITHUB_PRIVATE_KEY_FILE": str(key),
    }
    result = CliRunner().invoke(main, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: TESTLENS_GITHUB_PRIVATE_KEY_FILE does not hold an unencrypted PEM private key"
    )
    assert "Traceback" not in result.output and "not a key" not in result.output
