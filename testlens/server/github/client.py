"""The GitHub App's REST calls: App authentication, installation tokens, and the handful of
calls that open a pull request (a branch, one commit of several files, a draft PR, a
comment) or read a file.

An App authenticates in two steps: a short RS256 JWT signed with its private key proves it
is the App, and buys a token for one installation (an hour's worth), which every call on
that installation's repositories then carries. Tokens are cached per installation until
five minutes before they expire, so a burst of calls costs one token request, and a call
never starts with a token about to lapse mid-way.

Nothing here logs a key, a JWT or a token; httpx logs request lines only, never headers.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from ..models import utcnow
from ..settings import SettingError, Settings

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
JWT_BACKDATE = 60
"""Seconds a JWT's ``iat`` is set in the past, as GitHub advises against clock drift."""
JWT_LIFETIME = 600
"""Seconds from ``iat`` to ``exp``: GitHub's ten-minute maximum."""
TOKEN_MARGIN = timedelta(minutes=5)
"""A cached installation token is replaced this long before it expires."""
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_MAX_MESSAGE_CHARS = 500


class GitHubError(Exception):
    """GitHub refused a call (or did not answer): ``status`` is its HTTP status (0 when
    there was no answer, or none that could be used), ``message`` GitHub's own ``message``
    when it gave one."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"GitHub answered {status} to {method} {path}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: datetime


def web_url(api_url: str) -> str:
    """GitHub's web address for the REST API at ``api_url``: ``https://github.com`` for
    ``https://api.github.com`` (and ``https://X.ghe.com`` for ``https://api.X.ghe.com``),
    ``https://HOST`` for a GitHub Enterprise Server's ``https://HOST/api/v3``."""
    parts = urlsplit(api_url.rstrip("/"))
    path = parts.path
    netloc = parts.netloc
    if path.endswith("/api/v3"):
        path = path.removesuffix("/api/v3")
    elif not path and netloc.startswith("api."):
        netloc = netloc.removeprefix("api.")
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _repo_path(repo: str) -> str:
    """``/repos/owner/name`` for ``repo`` ("owner/name"), each part escaped."""
    owner, slash, name = repo.partition("/")
    if not owner or not slash or not name or "/" in name:
        raise ValueError(f"{repo!r} is not an owner/name repository")
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def _branch_path(branch: str) -> str:
    return quote(branch, safe="/")


class GitHubApp:
    """One GitHub App: its JWT, its installations' tokens (cached, thread-safe), and the REST
    calls testlens makes on their repositories (``repo`` is always ``"owner/name"``).

    ``http`` lets a caller share a client (its base URL is ignored: ``api_url`` is used);
    by default the App keeps its own. Every failure raises :class:`GitHubError`."""

    def __init__(
        self,
        app_id: str,
        private_key_pem: str,
        api_url: str = DEFAULT_API_URL,
        http: httpx.Client | None = None,
    ) -> None:
        self._app_id = app_id
        self._key = private_key_pem
        self._api_url = api_url.rstrip("/")
        self._http = http or httpx.Client(timeout=TIMEOUT, follow_redirects=False)
        self._tokens: dict[int, _Token] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"GitHubApp(app_id={self._app_id!r}, api_url={self._api_url!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> GitHubApp | None:
        """The App the settings configure, or None when they configure none. Half a
        configuration (an id without a key, or a key without an id), or a key file that
        cannot be read, is an error: the server refuses to start rather than fail later."""
        app_id, key_file = settings.github_app_id, settings.github_private_key_file
        if app_id is None and key_file is None:
            return None
        if app_id is None or key_file is None:
            raise SettingError(
                "TESTLENS_GITHUB_APP_ID and TESTLENS_GITHUB_PRIVATE_KEY_FILE go together: "
                "set both, or neither"
            )
        return cls(app_id, _read_key(key_file), settings.github_api_url)

    # Authentication ------------------------------------------------------------------------

    def app_jwt(self) -> str:
        """A JWT that authenticates as the App for ten minutes, backdated a minute."""
        issued = int(time.time()) - JWT_BACKDATE
        claims = {"iat": issued, "exp": issued + JWT_LIFETIME, "iss": self._app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def installation_token(self, installation_id: int) -> str:
        """A token for ``installation_id``: the cached one while it has more than five
        minutes left, else a new one (``POST /app/installations/{id}/access_tokens``)."""
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached is not None and utcnow() < cached.expires_at - TOKEN_MARGIN:
                return cached.value
            body = self._request(
                "POST",
                f"/app/installations/{int(installation_id)}/access_tokens",
                f"Bearer {self.app_jwt()}",
            )
            token = _token(body)
            self._tokens[installation_id] = token
            return token.value

    # Repository calls ----------------------------------------------------------------------

    def default_branch_sha(self, installation_id: int, repo: str, branch: str) -> str:
        """The commit ``branch`` points at (named for its use: the base of a new branch)."""
        ref = self._call(
            installation_id, "GET", f"{_repo_path(repo)}/git/ref/heads/{_branch_path(branch)}"
        )
        return str(ref["object"]["sha"])

    def create_branch(self, installation_id: int, repo: str, branch: str, from_sha: str) -> None:
        """Create ``branch`` at ``from_sha`` (GitHub answers 422 if it exists)."""
        self._call(
            installation_id,
            "POST",
            f"{_repo_path(repo)}/git/refs",
            {"ref": f"refs/heads/{branch}", "sha": from_sha},
        )

    def delete_branch(self, installation_id: int, repo: str, branch: str) -> None:
        """Delete ``branch`` (GitHub answers 204, or 422 when it does not exist)."""
        self._send(
            installation_id, "DELETE", f"{_repo_path(repo)}/git/refs/heads/{_branch_path(branch)}"
        )

    def commit_files(
        self,
        installation_id: int,
        repo: str,
        branch: str,
        message: str,
        files: Mapping[str, str],
    ) -> str:
        """Write ``files`` (path -> text) on ``branch`` as one commit, returning its sha.

        Through the git data API, so any number of files is one commit: a blob per file, a
        tree on the branch head's tree, a commit on the head, then the branch moved to it
        (not forced: if someone pushed meanwhile, GitHub refuses with 422 and nothing is
        lost). Files are written as regular files (mode 100644)."""
        path = _repo_path(repo)
        head = self.default_branch_sha(installation_id, repo, branch)
        base_tree = self._call(installation_id, "GET", f"{path}/git/commits/{head}")["tree"]
        entries = []
        for name, text in files.items():
            blob = self._call(
                installation_id,
                "POST",
                f"{path}/git/blobs",
                {"content": base64.b64encode(text.encode()).decode(), "encoding": "base64"},
            )
            entries.append({"path": name, "mode": "100644", "type": "blob", "sha": blob["sha"]})
        tree = self._call(
            installation_id,
            "POST",
            f"{path}/git/trees",
            {"base_tree": base_tree["sha"], "tree": entries},
        )
        commit = self._call(
            installation_id,
            "POST",
            f"{path}/git/commits",
            {"message": message, "tree": tree["sha"], "parents": [head]},
        )
        sha = str(commit["sha"])
        self._call(
            installation_id,
            "PATCH",
            f"{path}/git/refs/heads/{_branch_path(branch)}",
            {"sha": sha, "force": False},
        )
        return sha

    def create_pull_request(
        self,
        installation_id: int,
        repo: str,
        *,
        head: str,
        base: str,
        title: str,
        body: str,
        draft: bool = True,
    ) -> dict[str, Any]:
        """Open a pull request of ``head`` into ``base`` (a draft by default): GitHub's pull
        request object (``number``, ``html_url``, ...)."""
        return self._call(
            installation_id,
            "POST",
            f"{_repo_path(repo)}/pulls",
            {"title": title, "head": head, "base": base, "body": body, "draft": draft},
        )

    def comment(self, installation_id: int, repo: str, number: int, body: str) -> None:
        """Comment on issue or pull request ``number``."""
        self._call(
            installation_id,
            "POST",
            f"{_repo_path(repo)}/issues/{int(number)}/comments",
            {"body": body},
        )

    def file_text(self, installation_id: int, repo: str, path: str, ref: str) -> str | None:
        """The text of the file at ``path`` on ``ref`` (a branch, tag or sha), or None when
        there is no such file. Read as raw content, which serves files up to 100 MB."""
        url = f"{_repo_path(repo)}/contents/{quote(path.strip('/'), safe='/')}"
        try:
            response = self._send(
                installation_id,
                "GET",
                url,
                params={"ref": ref},
                accept="application/vnd.github.raw+json",
            )
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        return response.content.decode("utf-8", errors="replace")

    # Plumbing ------------------------------------------------------------------------------

    def _call(
        self,
        installation_id: int,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        response = self._send(installation_id, method, path, json=body)
        return _json_object(response, method, path)

    def _send(
        self,
        installation_id: int,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        accept: str = "application/vnd.github+json",
    ) -> httpx.Response:
        """One installation call; a 401 (the token revoked early) gets one new token and one
        retry."""
        for retry in (False, True):
            token = self.installation_token(installation_id)
            response = self._exchange(
                method, path, f"token {token}", json=json, params=params, accept=accept
            )
            if response.status_code != 401 or retry:
                break
            with self._lock:
                cached = self._tokens.get(installation_id)
                if cached is not None and cached.value == token:
                    del self._tokens[installation_id]
        _raise_for(response, method, path)
        return response

    def _request(self, method: str, path: str, authorization: str) -> dict[str, Any]:
        response = self._exchange(method, path, authorization)
        _raise_for(response, method, path)
        return _json_object(response, method, path)

    def _exchange(
        self,
        method: str,
        path: str,
        authorization: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        accept: str = "application/vnd.github+json",
    ) -> httpx.Response:
        headers = {
            "Accept": accept,
            "Authorization": authorization,
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "testlens",
        }
        try:
            return self._http.request(
                method, self._api_url + path, json=json, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise GitHubError(0, f"no answer: {type(exc).__name__}", method, path) from None


def _raise_for(response: httpx.Response, method: str, path: str) -> None:
    if response.is_success:
        return
    message = response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
        details = [e.get("message") for e in body.get("errors") or () if isinstance(e, dict)]
        if any(details):
            message += ": " + "; ".join(str(d) for d in details if d)
    raise GitHubError(response.status_code, message[:_MAX_MESSAGE_CHARS], method, path)


def _json_object(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GitHubError(response.status_code, "the answer is not a JSON object", method, path)
    return body


def _token(body: dict[str, Any]) -> _Token:
    """An access token answer's token and expiry (UTC when GitHub names no zone)."""
    try:
        expires_at = datetime.fromisoformat(str(body["expires_at"]))
        value = body["token"]
    except (KeyError, ValueError):
        value = None
    if not isinstance(value, str) or not value:
        raise GitHubError(0, "the access token answer lacks its token or expires_at")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    return _Token(value, expires_at)


def _read_key(path: Path) -> str:
    """The PEM private key in ``path``, checked now so that a wrong file stops the server at
    start-up. Errors say what is wrong, never the file's name or content."""
    try:
        pem = path.read_text()
        serialization.load_pem_private_key(pem.encode(), password=None)
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingError(
            f"TESTLENS_GITHUB_PRIVATE_KEY_FILE cannot be read ({type(exc).__name__})"
        ) from None
    except (ValueError, TypeError):
        raise SettingError(
            "TESTLENS_GITHUB_PRIVATE_KEY_FILE does not hold an unencrypted PEM private key"
        ) from None
    return pem
