"""The client as a CI job gets it: the wheel the live server serves at ``/client/``, checked
as downloaded, then pip-installed from the server's URL into a fresh venv by the README's own
CI recipes and used there as a user would (commands, parsing, uploads with each CI's
variables, the pytest plugin), with none of the server's dependencies installed.

The venv is made once for the module; its dependencies come from the package index, as in a
CI job. The recipes are read out of the README and run as written, except that ``/tmp/testlens``
is a temporary directory and ``python3`` this interpreter.
"""

from __future__ import annotations

import base64
import configparser
import csv
import email.parser
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from builders import RERUN_XML

from testlens.server.client_dist import build_wheel, client_requirements

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "testlens"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
WHEEL = f"testlens-{PROJECT['version']}-py3-none-any.whl"
DIST_INFO = f"testlens-{PROJECT['version']}.dist-info"
SERVER_PACKAGES = {
    re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower()
    for r in PROJECT["optional-dependencies"]["server"]
}
RECIPE_VENV = "/tmp/testlens"

# Variables of this machine's own CI (or of the pytest running this) must not leak into a job.
_FOREIGN = ("GITHUB_", "GITLAB_", "CI_", "CIRCLE", "BUILDKITE", "JENKINS", "TESTLENS_", "PYTEST_")
_FOREIGN_NAMES = {
    *("CI", "GIT_URL", "GIT_COMMIT", "GIT_BRANCH", "BUILD_TAG", "BUILD_ID", "BRANCH_NAME"),
    *("CHANGE_ID", "CHANGE_BRANCH", "JOB_NAME", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"),
}


def job_env(**variables: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_FOREIGN) and name not in _FOREIGN_NAMES
    }
    return {**env, **variables}


def sh(
    script: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``script`` as CI runs a step: bash, stopping at the first failing command."""
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(args: list[str | Path], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


# The README's CI recipes --------------------------------------------------------------------


def readme_recipes() -> dict[str, str]:
    """Each CI's YAML block of the README's "CI recipes" section."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### CI recipes\n")
    end = readme.find("\n## ", start)
    blocks = re.findall(r"```yaml\n(.*?)```", readme[start:end], re.DOTALL)
    found = {}
    for block in blocks:
        if "continue-on-error" in block:
            found["github"] = block
        elif "allow_failure" in block:
            found["gitlab"] = block
        elif "command: |" in block:
            found["circleci"] = block
    assert set(found) == {"github", "gitlab", "circleci"}, blocks
    return found


def recipe_script(block: str) -> str:
    """The shell the step runs: the block's last ``run: |``, ``command: |`` or ``script:``,
    each list item (GitLab) one line."""
    lines = block.splitlines()
    (start,) = [
        i for i, line in enumerate(lines) if re.fullmatch(r"\s*(run: \||command: \||script:)", line)
    ][-1:]
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    script = textwrap.dedent("\n".join(body))
    return "\n".join(re.sub(r"^- ", "", line) for line in script.splitlines())


def localized(script: str, venv: Path) -> str:
    return script.replace("python3 -m venv", f"{shlex.quote(sys.executable)} -m venv").replace(
        RECIPE_VENV, str(venv)
    )


def test_the_readme_recipes_install_the_served_wheel_and_never_fail_the_build():
    recipes = readme_recipes()
    install = f'/tmp/testlens/bin/pip install "$TESTLENS_SERVER/client/{WHEEL}"'
    for name, block in recipes.items():
        script = recipe_script(block)
        assert script.startswith(f"python3 -m venv {RECIPE_VENV}"), (name, script)
        assert install in script, (name, script)
        assert "/tmp/testlens/bin/testlens upload test-results/" in script, (name, script)
    assert "if: always()" in recipes["github"]
    assert "continue-on-error: true" in recipes["github"]
    assert "when: always" in recipes["gitlab"]
    assert "allow_failure: true" in recipes["gitlab"]
    assert "when: always" in recipes["circleci"]
    assert recipe_script(recipes["circleci"]).rstrip().splitlines()[-1].startswith("echo ")


# The wheel as served --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(server) -> httpx.Response:
    """``GET /client/testlens.whl`` without any credentials."""
    response = httpx.get(f"{server.url}/client/testlens.whl", timeout=60)
    assert response.status_code == 200, response.text
    return response


def record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_the_wheel_is_public_and_served_under_both_names(served, server):
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"] == f'attachment; filename="{WHEEL}"'
    versioned = httpx.get(f"{server.url}/client/{WHEEL}", timeout=60)
    assert versioned.status_code == 200
    assert versioned.content == served.content
    assert zipfile.is_zipfile(io.BytesIO(served.content))


def test_another_version_is_a_404_naming_the_served_one(server):
    response = httpx.get(f"{server.url}/client/testlens-0.0.1-py3-none-any.whl", timeout=60)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "NOT_FOUND"
    assert body["details"] == {"filename": "testlens-0.0.1-py3-none-any.whl", "available": WHEEL}


def test_the_wheel_holds_the_client_and_not_the_server(served):
    expected = {"testlens/__init__.py", "testlens/cli.py"} | {
        path.relative_to(ROOT).as_posix()
        for room in ("core", "client")
        for path in (PACKAGE / room).rglob("*.py")
    }
    dist_info = {f"{DIST_INFO}/{n}" for n in ("METADATA", "WHEEL", "entry_points.txt", "RECORD")}
    with zipfile.ZipFile(io.BytesIO(served.content)) as wheel:
        names = wheel.namelist()
    assert len(names) == len(set(names))
    assert set(names) == expected | dist_info
    assert not [n for n in names if n.startswith("testlens/server") or "__pycache__" in n]


def test_the_wheel_metadata_names_the_client_dependencies_only(served):
    with zipfile.ZipFile(io.BytesIO(served.content)) as wheel:
        metadata = email.parser.Parser().parsestr(wheel.read(f"{DIST_INFO}/METADATA").decode())
        wheel_file = email.parser.Parser().parsestr(wheel.read(f"{DIST_INFO}/WHEEL").decode())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(wheel.read(f"{DIST_INFO}/entry_points.txt").decode())
    assert metadata["Name"] == "testlens"
    assert metadata["Version"] == PROJECT["version"]
    assert metadata["Requires-Python"] == PROJECT["requires-python"]
    requires = sorted(r.replace(" ", "") for r in metadata.get_all("Requires-Dist"))
    # read from the installed distribution: a mismatch means pyproject.toml changed since
    # `pip install -e '.[dev]'`
    assert requires == sorted(r.replace(" ", "") for r in PROJECT["dependencies"])
    assert not {re.split(r"[<>=!~;\[]", r)[0].lower() for r in requires} & SERVER_PACKAGES
    assert wheel_file["Root-Is-Purelib"] == "true"
    assert wheel_file["Tag"] == "py3-none-any"
    assert dict(entry_points["console_scripts"]) == {"testlens": "testlens.cli:main"}
    assert dict(entry_points["pytest11"]) == {"testlens": "testlens.client.pytest_plugin"}


def test_the_record_lists_every_file_with_its_hash(served):
    with zipfile.ZipFile(io.BytesIO(served.content)) as wheel:
        rows = list(csv.reader(wheel.read(f"{DIST_INFO}/RECORD").decode().splitlines()))
        assert sorted(row[0] for row in rows) == sorted(wheel.namelist())
        for path, digest, size in rows:
            if path == f"{DIST_INFO}/RECORD":
                assert digest == size == ""
                continue
            data = wheel.read(path)
            assert digest == record_digest(data), path
            assert int(size) == len(data), path


def test_the_openapi_document_declares_a_binary_download(anonymous):
    paths = anonymous.get("/openapi.json").json()["paths"]
    for path in ("/client/testlens.whl", "/client/{filename}"):
        answer = paths[path]["get"]["responses"]["200"]
        assert answer["content"] == {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
        }


def test_only_requirements_without_an_extra_are_the_clients():
    requires = [
        "click>=8.1",
        "fastapi>=0.110; extra == 'server'",
        'tomli>=2; python_version < "3.11"',
        "pytest>=8 ; python_version >= '3.11' and extra=='dev'",
    ]
    assert client_requirements(requires) == ["click>=8.1", 'tomli>=2; python_version < "3.11"']
    assert client_requirements(None) == []


# The wheel installed from the server's URL ----------------------------------------------------


@pytest.fixture(scope="module")
def venv(server, tmp_path_factory) -> Path:
    """A fresh venv with the client, installed by the GitHub recipe's commands up to the
    upload, and pytest (as in the environment a project's tests run in)."""
    where = tmp_path_factory.mktemp("client")
    venv = where / "testlens"
    script = recipe_script(readme_recipes()["github"])
    install = "\n".join(line for line in script.splitlines() if "testlens upload" not in line)
    done = sh(localized(install, venv), job_env(TESTLENS_SERVER=server.url), where, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run([venv / "bin" / "pip", "install", "--quiet", "pytest"], job_env(), where)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_the_installed_client_works_without_the_server(venv, tmp_path):
    env = job_env()
    testlens = venv / "bin" / "testlens"
    listed = run([testlens, "--help"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    for command in ("parse", "upload", "shard", "flaky", "durations", "serve", "db", "keys"):
        assert re.search(rf"^  {command}\s", listed.stdout, re.MULTILINE), listed.stdout
    assert re.search(r"^  serve\s+\(needs testlens\[server\]\)", listed.stdout, re.MULTILINE)

    report = tmp_path / "junit.xml"
    report.write_bytes(RERUN_XML)
    parsed = run([testlens, "parse", report], env, tmp_path)
    assert parsed.returncode == 0, parsed.stderr
    document = json.loads(parsed.stdout)
    assert document["format"] == "junit"
    assert document["summary"]["tests"] == 3
    assert document["summary"]["flaky"] == 1

    served = run([testlens, "serve"], env, tmp_path)
    assert served.returncode != 0
    assert "needs the server's dependencies" in served.stderr
    assert "pip install 'testlens[server]'" in served.stderr

    python = venv / "bin" / "python"
    for module in ("fastapi", "sqlalchemy", "uvicorn", "testlens.server"):
        imported = run([python, "-c", f"import {module}"], env, tmp_path)
        assert imported.returncode != 0, module
        assert "ModuleNotFoundError" in imported.stderr, imported.stderr
    listing = run([python, "-m", "pip", "list", "--format", "json"], env, tmp_path)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listing.stdout)}
    assert "testlens" in installed
    assert not installed & SERVER_PACKAGES

    helped = run([python, "-m", "pytest", "--help"], env, tmp_path)
    assert helped.returncode == 0, helped.stderr
    for option in ("--testlens", "--testlens-server", "--testlens-shard", "--testlens-quarantine"):
        assert re.search(rf"^\s+{option}\b", helped.stdout, re.MULTILINE), option


def _sha() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "acme/web",
    "GITHUB_REF_NAME": "main",
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_RUN_ID": "7001",
    "GITHUB_JOB": "unit-tests",
}
GITLAB = {
    "GITLAB_CI": "true",
    "CI_PROJECT_PATH": "acme/web",
    "CI_COMMIT_REF_NAME": "feature/login",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/login",
    "CI_MERGE_REQUEST_IID": "42",
    "CI_PIPELINE_ID": "88123",
    "CI_JOB_NAME": "testlens",  # the upload job; --check-name names the test job
}
CIRCLECI = {
    "CIRCLECI": "true",
    "CIRCLE_PROJECT_USERNAME": "acme",
    "CIRCLE_PROJECT_REPONAME": "web",
    "CIRCLE_BRANCH": "feature/cart",
    "CIRCLE_PULL_REQUEST": "https://github.com/acme/web/pull/9",
    "CIRCLE_WORKFLOW_ID": "5b1e9c1a-4c55-4c2e-9b0c-0f6f2d1f2a10",
    "CIRCLE_JOB": "unit-tests",
}
# CI -> (its variables, the commit's variable, what the stored run must say)
CASES = {
    "github": (GITHUB, "GITHUB_SHA", ("github", "main", "7001", None)),
    "gitlab": (GITLAB, "CI_COMMIT_SHA", ("gitlab", "feature/login", "88123", 42)),
    "circleci": (
        CIRCLECI,
        "CIRCLE_SHA1",
        ("circleci", "feature/cart", "5b1e9c1a-4c55-4c2e-9b0c-0f6f2d1f2a10", 9),
    ),
}
_UPLOADED = re.compile(r"tests, \d+ flaky, run (\S+)$", re.MULTILINE)


@pytest.mark.parametrize("ci", list(CASES))
def test_the_recipe_uploads_with_the_ci_context(ci, venv, server, tenant, tmp_path):
    variables, commit_variable, (provider, branch, run_id, pr_number) = CASES[ci]
    commit = _sha()
    (tmp_path / "test-results").mkdir()
    (tmp_path / "test-results" / "junit.xml").write_bytes(RERUN_XML)
    env = job_env(
        **variables,
        **{commit_variable: commit},
        TESTLENS_SERVER=server.url,
        TESTLENS_TOKEN=tenant.key,
    )
    script = localized(recipe_script(readme_recipes()[ci]), venv)
    done = sh(script, env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    uploaded = _UPLOADED.search(done.stdout)
    assert uploaded, done.stdout + done.stderr
    stored = tenant.client.get(f"/api/runs/{uploaded.group(1)}")
    assert stored.status_code == 200, stored.text
    run_ = stored.json()["run"]
    assert run_["repo"] == "acme/web"
    assert run_["commit"] == commit
    assert run_["workflow_run_id"] == run_id
    assert run_["branch"] == branch
    assert run_["pr_number"] == pr_number
    assert run_["provider"] == provider
    assert run_["check_name"] == "unit-tests"
    assert run_["summary"]["tests"] == 3


def test_a_refused_upload_does_not_fail_the_circleci_step(venv, server, tmp_path):
    (tmp_path / "test-results").mkdir()
    (tmp_path / "test-results" / "junit.xml").write_bytes(RERUN_XML)
    env = job_env(
        **CIRCLECI, CIRCLE_SHA1=_sha(), TESTLENS_SERVER=server.url, TESTLENS_TOKEN="tl_sk_revoked"
    )
    done = sh(localized(recipe_script(readme_recipes()["circleci"]), venv), env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INVALID_API_KEY" in done.stderr
    assert "testlens: upload failed; the build goes on" in done.stdout


def test_the_pytest_plugin_uploads_from_the_client_install(venv, server, tenant, tmp_path):
    (tmp_path / "test_shop.py").write_text(
        "def test_pay():\n    pass\n\ndef test_add():\n    pass\n"
    )
    commit = _sha()
    env = job_env(
        **GITHUB, GITHUB_SHA=commit, TESTLENS_SERVER=server.url, TESTLENS_TOKEN=tenant.key
    )
    pytest_run = [venv / "bin" / "python", "-m", "pytest", "--testlens", "-p", "no:cacheprovider"]
    done = run(pytest_run, env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    uploaded = re.search(r"uploaded 2 tests .* as run (\S+)", done.stdout)
    assert uploaded, done.stdout
    run_ = tenant.client.get(f"/api/runs/{uploaded.group(1)}").json()["run"]
    assert (run_["repo"], run_["commit"], run_["workflow_run_id"]) == ("acme/web", commit, "7001")
    assert run_["framework"] == "pytest"


def test_the_same_files_make_the_same_wheel(served):
    distribution = importlib.metadata.distribution("testlens")
    assert build_wheel(distribution).content == build_wheel(distribution).content == served.content


# The whole package without the server extra (what `pip install testlens` from an index or a
# checkout gives): the server's modules are there, their dependencies are not.
SERVER_MODULES = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "jwt", "brotli")


@pytest.mark.parametrize("command", ["serve", "db upgrade", "keys list"])
def test_server_commands_name_the_extra_when_its_dependencies_are_missing(command, tmp_path):
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in SERVER_MODULES)
    code = f"import sys; {blocked}; from testlens.cli import main; main()"
    env = job_env(TESTLENS_DATA_DIR=str(tmp_path))
    done = run([sys.executable, "-c", code, *command.split()], env, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "pip install 'testlens[server]'" in done.stderr
    assert "Traceback" not in done.stderr
