"""A fake GitHub REST API for the tests, served over HTTP on loopback under ``/api/v3`` (as
a GitHub Enterprise Server serves it).

It checks what GitHub checks: the App's JWT against the App's public key (RS256, ``iss``,
at most ten minutes long), and on repository calls an unexpired installation token of the
installation the repository belongs to. It keeps each repository's git objects and refs,
pull requests and comments, answers errors in GitHub's shape (``{"message": ...}``, 422
for a ref that exists or a non-fast-forward update), and records every call. Requests are
handled one at a time on the server's event loop, so its state needs no lock.

Test modules import it like ``builders``: ``from fake_github import FakeGitHub``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from builders import LiveServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

PREFIX = "/api/v3"
REPO = "/repos/{owner}/{name}"


@dataclass(frozen=True)
class Call:
    """One request: its method, path (below the prefix), credential kind ("jwt", "token"
    or None) and headers."""

    method: str
    path: str
    auth: str | None
    headers: dict[str, str]


@dataclass
class Commit:
    tree: str
    parents: list[str]
    message: str


@dataclass
class FakeRepo:
    """A repository's state: git objects, refs (``heads/<branch>`` -> commit), pull
    requests and comments (issue number -> bodies)."""

    full_name: str
    installation_id: int
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, dict[str, str]] = field(default_factory=dict)  # sha -> path -> blob
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[str]] = field(default_factory=dict)
    refuse_pulls: bool = False
    """Answer 422 to new pull requests (as GitHub does when, say, pull requests are off)."""

    def files(self, ref: str) -> dict[str, str]:
        """Path -> text of every file at ``ref`` (a branch or a commit sha)."""
        commit = self.commits[self.refs.get(f"heads/{ref}", ref)]
        return {path: self.blobs[sha].decode() for path, sha in self.trees[commit.tree].items()}


def _sha(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"message": message, "documentation_url": "https://docs.github.com/rest", **extra},
        status_code=status,
    )


class FakeGitHub:
    """The fake API for one App (``app_id``, verified with ``public_key_pem``).

    ``token_lifetime``: how long the installation tokens it issues live (GitHub: an hour).
    """

    def __init__(self, app_id: str, public_key_pem: str) -> None:
        self.app_id = app_id
        self.public_key = public_key_pem
        self.token_lifetime = timedelta(hours=1)
        self.installations: set[int] = set()
        self.repos: dict[str, FakeRepo] = {}
        self.tokens: dict[str, tuple[int, datetime]] = {}
        self.jwts: list[str] = []
        self.calls: list[Call] = []
        self._server: LiveServer | None = None
        self.url = ""

    # Set-up --------------------------------------------------------------------------------

    def add_repo(
        self, full_name: str, installation_id: int, files: dict[str, str], branch: str = "main"
    ) -> FakeRepo:
        """A repository of ``installation_id`` with one commit of ``files`` on ``branch``."""
        self.installations.add(installation_id)
        repo = FakeRepo(full_name, installation_id)
        blobs = {path: self._blob(repo, text.encode()) for path, text in files.items()}
        tree = _sha("tree", sorted(blobs.items()))
        repo.trees[tree] = blobs
        commit = _sha("commit", tree, "initial")
        repo.commits[commit] = Commit(tree, [], "initial")
        repo.refs[f"heads/{branch}"] = commit
        self.repos[full_name.lower()] = repo
        return repo

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def token_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path.endswith("/access_tokens")]

    def start(self) -> FakeGitHub:
        self._server = LiveServer(self._app()).start()
        self.url = f"{self._server.url}{PREFIX}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    # Checks --------------------------------------------------------------------------------

    def _record(self, request: Request, auth: str | None) -> None:
        path = request.url.path.removeprefix(PREFIX)
        self.calls.append(Call(request.method, path, auth, dict(request.headers)))

    def _app_auth(self, request: Request) -> JSONResponse | None:
        """None when the request carries a valid JWT of the App, else GitHub's 401."""
        self._record(request, "jwt")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer":
            return _error(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError:
            return _error(401, "A JSON web token could not be decoded")
        if claims["iss"] != self.app_id:
            return _error(401, "'Issuer' claim ('iss') must be an Integer")
        if claims["exp"] - claims["iat"] > 600 or claims["iat"] > time.time() + 1:
            return _error(401, "'Expiration time' claim ('exp') is too far in the future")
        self.jwts.append(token)
        return None

    def _repo(self, request: Request) -> FakeRepo | JSONResponse:
        """The repository a call names, if its installation token may use it."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        self._record(request, "token" if scheme in ("token", "Bearer") else None)
        issued = self.tokens.get(token)
        if scheme not in ("token", "Bearer") or issued is None:
            return _error(401, "Bad credentials")
        installation_id, expires_at = issued
        if datetime.now(UTC) >= expires_at:
            return _error(401, "Bad credentials")
        params = request.path_params
        repo = self.repos.get(f"{params['owner']}/{params['name']}".lower())
        if repo is None or repo.installation_id != installation_id:
            return _error(404, "Not Found")
        return repo

    def _blob(self, repo: FakeRepo, content: bytes) -> str:
        sha = _sha("blob", content)
        repo.blobs[sha] = content
        return sha

    # Endpoints -----------------------------------------------------------------------------

    async def access_token(self, request: Request) -> Response:
        refused = self._app_auth(request)
        if refused is not None:
            return refused
        installation_id = int(request.path_params["installation_id"])
        if installation_id not in self.installations:
            return _error(404, "Not Found")
        token = "ghs_" + secrets.token_hex(18)
        expires_at = (datetime.now(UTC) + self.token_lifetime).replace(microsecond=0)
        self.tokens[token] = (installation_id, expires_at)
        return JSONResponse(
            {
                "token": token,
                "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
                "permissions": {"contents": "write", "pull_requests": "write"},
                "repository_selection": "selected",
            },
            status_code=201,
        )

    async def get_ref(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        ref = request.path_params["ref"]
        sha = repo.refs.get(ref)
        if sha is None:
            return _error(404, "Not Found")
        return JSONResponse(
            {"ref": f"refs/{ref}", "object": {"sha": sha, "type": "commit", "url": ""}}
        )

    async def create_ref(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await request.json()
        ref = str(body["ref"]).removeprefix("refs/")
        if ref in repo.refs:
            return _error(422, "Reference already exists")
        if body["sha"] not in repo.commits:
            return _error(422, "Object does not exist")
        repo.refs[ref] = body["sha"]
        return JSONResponse(
            {"ref": body["ref"], "object": {"sha": body["sha"], "type": "commit"}},
            status_code=201,
        )

    async def update_ref(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await request.json()
        ref = request.path_params["ref"]
        current = repo.refs.get(ref)
        if current is None:
            return _error(422, "Reference does not exist")
        commit = repo.commits.get(body["sha"])
        if commit is None:
            return _error(422, "Object does not exist")
        if not body.get("force") and current not in commit.parents:
            return _error(422, "Update is not a fast forward")
        repo.refs[ref] = body["sha"]
        return JSONResponse({"ref": f"refs/{ref}", "object": {"sha": body["sha"]}})

    async def delete_ref(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        if repo.refs.pop(request.path_params["ref"], None) is None:
            return _error(422, "Reference does not exist")
        return Response(status_code=204)

    async def create_blob(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await request.json()
        if body.get("encoding") == "base64":
            content = base64.b64decode(body["content"])
        else:
            content = str(body["content"]).encode()
        return JSONResponse({"sha": self._blob(repo, content), "url": ""}, status_code=201)

    async def get_commit(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        sha = request.path_params["sha"]
        commit = repo.commits.get(sha)
        if commit is None:
            return _error(404, "Not Found")
        return JSONResponse(
            {
                "sha": sha,
                "tree": {"sha": commit.tree},
                "parents": [{"sha": p} for p in commit.parents],
                "message": commit.message,
            }
        )

    async def create_tree(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await request.json()
        base = repo.trees.get(body.get("base_tree", ""), {})
        entries = dict(base)
        for entry in body["tree"]:
            if entry["type"] != "blob" or entry["sha"] not in repo.blobs:
                return _error(422, "GitRPC::BadObjectState")
            entries[entry["path"]] = entry["sha"]
        sha = _sha("tree", sorted(entries.items()))
        repo.trees[sha] = entries
        listed = [
            {"path": p, "mode": "100644", "type": "blob", "sha": s} for p, s in entries.items()
        ]
        return JSONResponse({"sha": sha, "tree": listed}, status_code=201)

    async def create_commit(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await request.json()
        if body["tree"] not in repo.trees or any(p not in repo.commits for p in body["parents"]):
            return _error(422, "Tree SHA does not exist")
        sha = _sha("commit", body["tree"], body["parents"], body["message"])
        repo.commits[sha] = Commit(body["tree"], list(body["parents"]), body["message"])
        return JSONResponse(
            {"sha": sha, "tree": {"sha": body["tree"]}, "message": body["message"]},
            status_code=201,
        )

    async def create_pull(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        body = await request.json()
        if repo.refuse_pulls:
            return _error(422, "Validation Failed", errors=[{"message": "refused"}])
        for side in ("head", "base"):
            if f"heads/{body[side]}" not in repo.refs:
                return _error(
                    422,
                    "Validation Failed",
                    errors=[{"resource": "PullRequest", "field": side, "code": "invalid"}],
                )
        number = len(repo.comments) + 1  # issues and pull requests share numbers
        pull = {
            "number": number,
            "html_url": f"https://github.example/{repo.full_name}/pull/{number}",
            "state": "open",
            "draft": bool(body.get("draft", False)),
            "title": body["title"],
            "body": body.get("body"),
            "head": {"ref": body["head"], "sha": repo.refs[f"heads/{body['head']}"]},
            "base": {"ref": body["base"]},
        }
        repo.pulls.append(pull)
        repo.comments[number] = []
        return JSONResponse(pull, status_code=201)

    async def create_comment(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        number = int(request.path_params["number"])
        if number not in repo.comments:
            return _error(404, "Not Found")
        body = await request.json()
        repo.comments[number].append(body["body"])
        return JSONResponse({"id": len(repo.comments[number]), "body": body["body"]}, 201)

    async def get_contents(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        if request.headers.get("accept") != "application/vnd.github.raw+json":
            return _error(415, "Unsupported media type in this fake")
        ref = request.query_params.get("ref", "main")
        commit = repo.commits.get(repo.refs.get(f"heads/{ref}", ref))
        if commit is None:
            return _error(404, "No commit found for the ref " + ref)
        blob = repo.trees[commit.tree].get(request.path_params["path"])
        if blob is None:
            return _error(404, "Not Found")
        return Response(repo.blobs[blob], media_type="application/vnd.github.raw")

    def _app(self) -> Starlette:
        routes = [
            Route(
                "/app/installations/{installation_id:int}/access_tokens",
                (self.access_token),
                methods=["POST"],
            ),
            Route(REPO + "/git/ref/{ref:path}", (self.get_ref), methods=["GET"]),
            Route(REPO + "/git/refs", (self.create_ref), methods=["POST"]),
            Route(REPO + "/git/refs/{ref:path}", (self.update_ref), methods=["PATCH"]),
            Route(REPO + "/git/refs/{ref:path}", (self.delete_ref), methods=["DELETE"]),
            Route(REPO + "/git/blobs", (self.create_blob), methods=["POST"]),
            Route(REPO + "/git/commits/{sha}", (self.get_commit), methods=["GET"]),
            Route(REPO + "/git/trees", (self.create_tree), methods=["POST"]),
            Route(REPO + "/git/commits", (self.create_commit), methods=["POST"]),
            Route(REPO + "/pulls", (self.create_pull), methods=["POST"]),
            Route(
                REPO + "/issues/{number:int}/comments",
                (self.create_comment),
                methods=["POST"],
            ),
            Route(REPO + "/contents/{path:path}", (self.get_contents), methods=["GET"]),
        ]
        return Starlette(routes=[Mount(PREFIX, routes=routes)])
