"""Pull requests testlens opens to fix a flaky test: the real app, with a model and the
GitHub App configured against a fake OpenAI-compatible API (``fake_llm``) and a fake GitHub
(``fake_github``), each app on a database of its own (the session's shared server, with no
model, would analyse the tests first)."""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from html import escape
from pathlib import Path

import httpx
import pytest
from builders import LiveServer, make_tenant, upload
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_github import FakeGitHub, FakeRepo
from fake_llm import FakeLLM
from sqlalchemy import select, update

from testlens.server.app import create_app
from testlens.server.database import Database
from testlens.server.fixes.proposals import branch_name
from testlens.server.fixes.service import pull_request_event
from testlens.server.models import FixAttempt, Repository, utcnow
from testlens.server.settings import Settings

APP_ID = "31337"
TEST_FILE = "tests/test_tags.py"
SOURCE = (
    "from shop import tags\n"
    "\n"
    "\n"
    "def test_tags():\n"
    '    found = tags("sale", "new")\n'
    '    assert list(found) == ["new", "sale"]\n'
    "\n"
    "\n"
    "def test_ok():\n"
    "    assert True\n"
)
FIXED = SOURCE.replace("assert list(found) ==", "assert sorted(found) ==")
FIX = f"""Compare the tags without relying on the set's iteration order.

```diff
--- a/{TEST_FILE}
+++ b/{TEST_FILE}
@@ -4,3 +4,3 @@
 def test_tags():
     found = tags("sale", "new")
-    assert list(found) == ["new", "sale"]
+    assert sorted(found) == ["new", "sale"]
```
"""
SLEEP_ONLY = f"""Give the tags time to settle.

```diff
--- a/{TEST_FILE}
+++ b/{TEST_FILE}
@@ -1 +1,2 @@
+import time
 from shop import tags
@@ -4,3 +5,4 @@
 def test_tags():
     found = tags("sale", "new")
+    time.sleep(2)
     assert list(found) == ["new", "sale"]
```
"""
EXPLANATION = "The test compares a set's items in iteration order, which varies between runs."
UNORDERED = "AssertionError: assert ['sale', 'new'] == ['new', 'sale']"
LEAKED = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
_installations = itertools.count(9100)
_commits = itertools.count(1)


class Model(FakeLLM):
    """The fake model, answering explanation and fix requests apart as a real one would:
    ``reply`` explains, ``fix`` is the answer to a request for a fix."""

    def __init__(self) -> None:
        self.fix = FIX
        super().__init__(EXPLANATION)

    @property
    def reply(self) -> str | None:
        asked = self.requests[-1] if self.requests else None
        return self.fix if asked is not None and _asks_for_fix(asked) else self._explanation

    @reply.setter
    def reply(self, value: str | None) -> None:
        self._explanation = value

    def fix_requests(self) -> list:
        return [request for request in self.requests if _asks_for_fix(request)]


def _asks_for_fix(request) -> bool:
    return "unified diff" in request.json["messages"][0]["content"]


def report(name: str, attempts: list[str | None], others: tuple[str, ...] = ("test_ok",)) -> bytes:
    """A pytest JUnit report: ``name``'s attempts in order (a failure message, or None for a
    pass: a failure then a pass is a retry that passed), and ``others`` passing."""
    module = TEST_FILE.removesuffix(".py").replace("/", ".")
    parts = ['<testsuites><testsuite name="pytest">']
    for test, message in [*((name, m) for m in attempts), *((o, None) for o in others)]:
        attrs = f'classname="{module}" name="{test}" file="{TEST_FILE}" time="0.2"'
        child = (
            f'<failure message="{escape(message)}">{escape(message)}</failure>' if message else ""
        )
        parts.append(f"<testcase {attrs}>{child}</testcase>")
    parts.append("</testsuite></testsuites>")
    return "".join(parts).encode()


def send(client: httpx.Client, repo: str, body: bytes, **fields: str) -> None:
    commit = f"{next(_commits):040x}"
    answer = upload(client, body, repo=repo, commit=commit, branch="main", **fields)
    assert answer.status_code == 201, answer.text


def id_of(client: httpx.Client, repo: str, name: str) -> str:
    repos = client.get("/api/repos").json()["repos"]
    repo_id = next(r["id"] for r in repos if r["name"] == repo)
    tests = client.get(f"/api/repos/{repo_id}").json()["tests"]
    return next(t["id"] for t in tests if t["name"] == name)


def analysed(client: httpx.Client, test_id: str, after: str | None = None) -> dict:
    """The test's detail once an analysis newer than ``after`` is stored."""
    deadline = time.monotonic() + 30
    while True:
        body = client.get(f"/api/tests/{test_id}").json()
        done = body["last_analyzed_at"]
        if done is not None and (after is None or done > after):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def settled(client: httpx.Client) -> None:
    """Wait for a later failing test's analysis: the analyser takes tests in the order they
    became due, so every test analysed before it has been considered for a pull request."""
    repo = f"acme/later-{uuid.uuid4().hex[:6]}"
    send(client, repo, report("test_later", ["ConnectionRefusedError: [Errno 111] refused"]))
    analysed(client, id_of(client, repo, "test_later"))


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def github(key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fake = FakeGitHub(APP_ID, public.decode()).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    with Model() as fake:
        yield fake


@pytest.fixture(scope="module")
def key_file(key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("app") / "app.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@contextmanager
def serving(configured: Settings) -> Iterator[tuple[Database, httpx.Client]]:
    """An app of its own on ``configured``, and a client of a fresh tenant."""
    app = create_app(configured)
    live = LiveServer(app).start()
    tenant = make_tenant(app.state.database, live)
    try:
        yield app.state.database, tenant.client
    finally:
        tenant.client.close()
        live.stop()


def configure(
    settings: Settings, tmp_path: Path, github: FakeGitHub, model: Model, key_file: Path, **extra
) -> Settings:
    values = {
        "database_url": f"sqlite:///{tmp_path / 'prs.db'}",
        "llm_base_url": model.url,
        "llm_model": "fixer-1",
        "github_app_id": APP_ID,
        "github_private_key_file": key_file,
        "github_api_url": github.url,
        **extra,
    }
    return replace(settings, **values)


@pytest.fixture(scope="module")
def both(
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    github: FakeGitHub,
    model: Model,
    key_file: Path,
) -> Iterator[tuple[Database, httpx.Client]]:
    """The app with both the model and the App, which opens pull requests."""
    configured = configure(settings, tmp_path_factory.mktemp("prs"), github, model, key_file)
    with serving(configured) as served:
        yield served


@pytest.fixture
def fakes(github: FakeGitHub, model: Model) -> tuple[FakeGitHub, Model]:
    github.calls.clear()
    model.requests.clear()
    model.fix = FIX
    return github, model


def installed(database: Database, client: httpx.Client, github: FakeGitHub, repo: str) -> FakeRepo:
    """``repo`` on the fake GitHub with the test file on main, and in testlens with a first
    passing run, linked to its installation with main as its default branch."""
    installation = next(_installations)
    fake = github.add_repo(repo, installation, {TEST_FILE: SOURCE, "README.md": "# tags\n"})
    send(client, repo, report("test_tags", [None]))
    with database.transaction() as session:
        session.execute(
            update(Repository)
            .where(Repository.name == repo)
            .values(installation_id=installation, default_branch="main")
        )
    return fake


def attempts_of(database: Database, test_id: str) -> list[FixAttempt]:
    with database.read() as session:
        return list(session.scalars(select(FixAttempt).where(FixAttempt.test_id == test_id)))


def test_a_flaky_test_with_a_clear_cause_gets_one_draft_pull_request(both, fakes):
    database, client = both
    github, model = fakes
    repo = f"acme/tags-{uuid.uuid4().hex[:6]}"
    fake = installed(database, client, github, repo)
    send(client, repo, report("test_tags", [None]), environment="macos-py3.12")
    leaky = f"{UNORDERED}\n +  where found = tags(token={LEAKED!r})"  # a secret in the output
    send(client, repo, report("test_tags", [leaky, None]), environment="linux-py3.12")
    test_id = id_of(client, repo, "test_tags")

    deadline = time.monotonic() + 30
    while not (listed := client.get("/api/fix-attempts").json())["fix_attempts"]:
        assert time.monotonic() < deadline, "no fix attempt was recorded"
        time.sleep(0.2)
    detail = client.get(f"/api/tests/{test_id}").json()
    assert detail["state"] == "flaky"
    assert detail["root_cause_category"] == "unordered_collection"
    assert detail["suggested_action"] == "pull_request"

    # One draft pull request from the fix branch, with the model's change committed on it.
    assert len(fake.pulls) == 1
    pull = fake.pulls[0]
    branch = pull["head"]["ref"]
    assert re.fullmatch(r"testlens/fix-test-tags-[0-9a-f]{8}", branch), branch
    assert pull["draft"] is True and pull["base"]["ref"] == "main"
    assert "test_tags" in pull["title"]
    assert fake.files(branch)[TEST_FILE] == FIXED
    assert fake.files("main")[TEST_FILE] == SOURCE  # the default branch is left alone
    body = pull["body"]
    assert f"Fixes-test: {test_id}" in body.splitlines()
    assert "`unordered_collection`" in body
    assert f"{detail['root_cause_confidence']:.2f}" in body
    assert EXPLANATION in body  # the model's explanation, as stored on the test
    assert "Compare the tags without relying on the set's iteration order." in body
    assert "1× `AssertionError`" in body  # the signature with its count
    assert "tests/test_tags.py::test_tags" in body
    assert "by environment: `linux-py3.12` 1 of 1, `macos-py3.12` 0 of 1" in body
    assert "[secret]" in body and LEAKED not in body  # scrubbed from the failure message
    assert all(LEAKED not in r.body.decode() for r in model.requests)

    # The model was asked once for a fix, with the file from the default branch.
    (asked,) = model.fix_requests()
    assert SOURCE.splitlines()[5] in asked.text and "unordered_collection" in asked.text

    # One attempt, from testlens, with what the pull request is.
    assert listed["summary"]["total"] == 1
    (item,) = listed["fix_attempts"]
    assert item["test_id"] == test_id
    assert item["pr_url"] == pull["html_url"] and item["pr_number"] == pull["number"]
    assert item["branch_name"] == branch and item["status"] == "pending"
    assert item["root_cause_category"] == "unordered_collection"
    assert item["ai_explanation"] == EXPLANATION
    assert item["confidence"] == detail["root_cause_confidence"]
    assert item["model_used"] == "fixer-1"
    (stored,) = attempts_of(database, test_id)
    assert stored.source == "testlens"
    assert (stored.files_changed, stored.lines_added, stored.lines_removed) == (1, 1, 1)

    # GitHub's events for the pull request follow the same attempt; closed, it stays the
    # test's only one: new failures are analysed, and no second pull request is opened.
    with database.transaction() as session:
        linked = session.scalars(select(Repository).where(Repository.name == repo)).one()
        closed = {**pull, "state": "closed", "merged": False}
        pull_request_event(session, linked, "closed", closed, utcnow())
    assert [a.status for a in attempts_of(database, test_id)] == ["closed"]
    send(client, repo, report("test_tags", [UNORDERED, None]))
    analysed(client, test_id, after=detail["last_analyzed_at"])
    settled(client)
    assert len(fake.pulls) == 1 and len(model.fix_requests()) == 1
    assert [a.source for a in attempts_of(database, test_id)] == ["testlens"]


def test_a_fix_that_only_sleeps_opens_nothing(both, fakes, caplog):
    database, client = both
    github, model = fakes
    model.fix = SLEEP_ONLY
    repo = f"acme/sleepy-{uuid.uuid4().hex[:6]}"
    fake = installed(database, client, github, repo)
    with caplog.at_level(logging.INFO, logger="testlens.server.fixes.proposals"):
        send(client, repo, report("test_tags", [UNORDERED, None]))
        test_id = id_of(client, repo, "test_tags")
        analysed(client, test_id)
        settled(client)
    assert len(model.fix_requests()) == 1  # asked, and refused
    refused = [r.getMessage() for r in caplog.records if "guard rails refused" in r.getMessage()]
    assert len(refused) == 1 and "(sleep)" in refused[0] and test_id in refused[0]
    assert fake.pulls == [] and set(fake.refs) == {"heads/main"}
    assert not any(c.method != "GET" for c in github.calls if "/repos/" in c.path)
    assert attempts_of(database, test_id) == []


def test_unknown_causes_and_fixes_under_way_get_no_pull_request(both, fakes):
    database, client = both
    github, model = fakes
    repo = f"acme/unsure-{uuid.uuid4().hex[:6]}"
    fake = installed(database, client, github, repo)
    # A person's pull request already names test_tags (pending).
    send(client, repo, report("test_vague", [None]))
    tags = id_of(client, repo, "test_tags")
    with database.transaction() as session:
        linked = session.scalars(select(Repository).where(Repository.name == repo)).one()
        mine = {"number": 77, "body": f"Fixes-test: {tags}", "head": {"ref": "fix/tags"}}
        pull_request_event(session, linked, "opened", mine, utcnow())

    send(client, repo, report("test_tags", [UNORDERED, None], others=("test_vague",)))
    send(client, repo, report("test_vague", ["AssertionError: assert 2 == 3", None]))
    vague = analysed(client, id_of(client, repo, "test_vague"))
    settled(client)
    assert vague["state"] == "flaky" and vague["root_cause_category"] == "unknown"
    assert vague["suggested_action"] == "quarantine"
    tags_detail = client.get(f"/api/tests/{tags}").json()
    assert tags_detail["suggested_action"] == "pull_request"
    never_failed = client.get(f"/api/tests/{id_of(client, repo, 'test_ok')}").json()
    assert never_failed["suggested_action"] is None
    assert model.fix_requests() == [] and fake.pulls == []
    assert github.calls == []
    assert [(a.source, a.pr_number) for a in attempts_of(database, tags)] == [("pull_request", 77)]


@pytest.mark.parametrize("failure", ["branch exists", "installation removed"])
def test_a_github_error_stores_nothing_and_the_analyser_goes_on(both, fakes, caplog, failure):
    database, client = both
    github, model = fakes
    repo = f"acme/refused-{uuid.uuid4().hex[:6]}"
    fake = installed(database, client, github, repo)
    tags = id_of(client, repo, "test_tags")
    if failure == "branch exists":  # someone's, or left by an attempt that failed later
        fake.refs[f"heads/{branch_name('test_tags', tags)}"] = fake.refs["heads/main"]
    else:
        github.installations.discard(fake.installation_id)
    with caplog.at_level(logging.WARNING, logger="testlens.server.fixes.proposals"):
        send(client, repo, report("test_tags", [UNORDERED, None]))
        analysed(client, tags)
        settled(client)  # a later test is still analysed
    warned = [r.getMessage() for r in caplog.records if r.name.endswith("proposals")]
    assert len(warned) == 1 and tags in warned[0], warned
    assert ("422" if failure == "branch exists" else "404") in warned[0]
    assert not any(token in warned[0] for token in github.tokens)
    assert fake.pulls == [] and attempts_of(database, tags) == []
    assert len(model.fix_requests()) == (1 if failure == "branch exists" else 0)


def test_a_pull_request_refused_after_its_branch_leaves_no_branch_behind(both, fakes):
    database, client = both
    github, model = fakes
    repo = f"acme/refusing-{uuid.uuid4().hex[:6]}"
    fake = installed(database, client, github, repo)
    fake.refuse_pulls = True
    send(client, repo, report("test_tags", [UNORDERED, None]))
    tags = id_of(client, repo, "test_tags")
    first = analysed(client, tags)
    settled(client)
    assert len(model.fix_requests()) == 1 and fake.pulls == []
    branch = branch_name("test_tags", tags)
    assert f"heads/{branch}" not in fake.refs  # created, then deleted again
    assert attempts_of(database, tags) == []
    # The next analysis tries again, and nothing is in its way.
    fake.refuse_pulls = False
    send(client, repo, report("test_tags", [UNORDERED, None]))
    analysed(client, tags, after=first["last_analyzed_at"])
    settled(client)
    assert [pull["head"]["ref"] for pull in fake.pulls] == [branch]
    assert fake.files(branch)[TEST_FILE] == FIXED
    assert [a.source for a in attempts_of(database, tags)] == ["testlens"]


@pytest.mark.parametrize("missing", ["model", "app", "setting off"])
def test_nothing_is_asked_of_github_or_the_model_unless_both_are_configured(
    settings, tmp_path, github, model, key_file, fakes, missing
):
    extra: dict[str, object] = {
        "model": {"llm_base_url": None, "llm_model": None},
        "app": {"github_app_id": None, "github_private_key_file": None},
        "setting off": {"fix_pull_requests": "off"},
    }[missing]
    configured = configure(settings, tmp_path, github, model, key_file, **extra)
    with serving(configured) as (database, client):
        repo = f"acme/off-{uuid.uuid4().hex[:6]}"
        fake = installed(database, client, github, repo)
        send(client, repo, report("test_tags", [UNORDERED, None]))
        tags = id_of(client, repo, "test_tags")
        detail = analysed(client, tags)
        settled(client)
    assert detail["suggested_action"] == "pull_request"
    assert github.calls == [] and fake.pulls == []
    assert model.fix_requests() == []
    assert (model.requests == []) == (missing == "model")
    assert attempts_of(database, tags) == []
