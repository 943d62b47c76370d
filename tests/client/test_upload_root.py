"""The ``root`` an upload names, so that the server can make absolute test paths relative:
``testlens upload``'s ``--root``, else the CI's checkout directory, else the git work tree
around the current directory; the pytest plugin's rootdir. Observed as the real server reads
the form."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from builders import RERUN_XML
from click.testing import CliRunner

from testlens.cli import main
from testlens.client import ci_env
from testlens.server.ingest import form

NO_CI = dict.fromkeys(("GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "BUILDKITE", "JENKINS_URL"))
"""CliRunner removes variables set to None: the upload then runs as outside any CI."""


@pytest.fixture
def sent_roots(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The ``root`` of each upload the live server reads, in order."""
    roots: list[str | None] = []
    read = form.read_metadata

    def recording(fields):
        meta = read(fields)
        roots.append(meta.root)
        return meta

    monkeypatch.setattr(form, "read_metadata", recording)
    return roots


def git_repository(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "web").mkdir()
    return path.resolve()  # git names the work tree by its real path


def upload(server, tenant, *args: str, env: dict[str, str | None]):
    report_env = {"TESTLENS_SERVER": server.url, "TESTLENS_TOKEN": tenant.key, **env}
    result = CliRunner().invoke(main, ["upload", *args], env=report_env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": "/home/runner/work/shop/shop"},
            "/home/runner/work/shop/shop",
        ),
        ({"GITLAB_CI": "true", "CI_PROJECT_DIR": "/builds/acme/shop"}, "/builds/acme/shop"),
        (
            {"CIRCLECI": "true", "CIRCLE_WORKING_DIRECTORY": "~/project", "HOME": "/home/circleci"},
            "/home/circleci/project",
        ),
        (
            {"CIRCLECI": "true", "CIRCLE_WORKING_DIRECTORY": "~/project", "HOME": "/root/"},
            "/root/project",
        ),
        ({"CIRCLECI": "true", "CIRCLE_WORKING_DIRECTORY": "~/project"}, None),  # no HOME
        ({"CIRCLECI": "true", "CIRCLE_WORKING_DIRECTORY": "/srv/app"}, "/srv/app"),
        (
            {
                "BUILDKITE": "true",
                "BUILDKITE_BUILD_CHECKOUT_PATH": "/var/lib/buildkite-agent/builds/a-1/acme/shop",
            },
            "/var/lib/buildkite-agent/builds/a-1/acme/shop",
        ),
        (
            {"JENKINS_URL": "http://ci", "WORKSPACE": "/var/jenkins_home/workspace/shop"},
            "/var/jenkins_home/workspace/shop",
        ),
        # Another CI's variable means nothing to this one.
        ({"GITLAB_CI": "true", "GITHUB_WORKSPACE": "/home/runner/work/shop/shop"}, None),
        ({}, None),
    ],
)
def test_the_ci_checkout_directory(env, expected):
    assert ci_env.detect(env).workspace == expected


def test_upload_sends_the_ci_checkout_as_root(tenant, server, tmp_path, sent_roots):
    report = tmp_path / "unit.xml"
    report.write_bytes(RERUN_XML)
    github = {
        **NO_CI,
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_WORKSPACE": "/home/runner/work/shop/shop",
    }
    upload(server, tenant, str(report), env=github)
    # --root wins over the CI; a relative one is taken from the current directory.
    upload(server, tenant, str(report), "--root", "/srv/checkout", "--commit", "1" * 40, env=github)
    upload(server, tenant, str(report), "--root", ".", "--commit", "2" * 40, env=github)
    assert sent_roots == ["/home/runner/work/shop/shop", "/srv/checkout", os.getcwd()]


def test_outside_ci_the_root_is_the_git_work_tree(
    tenant, server, tmp_path, monkeypatch, sent_roots
):
    top = git_repository(tmp_path / "shop")
    report = tmp_path / "unit.xml"
    report.write_bytes(RERUN_XML)
    monkeypatch.chdir(top / "web")
    upload(server, tenant, str(report), "--repo", "acme/shop", env=NO_CI)
    # Outside any work tree nothing says where the repository is: no root is sent.
    monkeypatch.chdir(tmp_path)
    upload(server, tenant, str(report), "--repo", "acme/shop", "--commit", "1" * 40, env=NO_CI)
    assert sent_roots == [str(top), None]


def test_git_that_is_missing_or_hangs_gives_no_root(tmp_path, monkeypatch):
    top = git_repository(tmp_path / "shop")
    assert ci_env.git_toplevel(str(top / "web")) == str(top)
    empty = tmp_path / "no-git"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert ci_env.git_toplevel(str(top)) is None
    hanging = tmp_path / "slow-git"
    hanging.mkdir()
    (hanging / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (hanging / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(hanging))
    monkeypatch.setattr(ci_env, "GIT_TIMEOUT", 0.2)
    started = time.monotonic()
    assert ci_env.git_toplevel(str(top)) is None
    assert time.monotonic() - started < 5


def test_the_pytest_plugin_sends_its_rootdir(project, server, tenant, sent_roots):
    """Node ids, the plugin's test identities, are relative to the rootdir, whatever
    directory the CI checked out."""
    project.makepyfile(test_one="def test_one():\n    pass\n")
    project.makeini("[pytest]\n")
    (project.path / "sub").mkdir()
    (project.path / "sub" / "test_two.py").write_text("def test_two():\n    pass\n")
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--testlens", f"--testlens-server={server.url}",
        f"--testlens-token={tenant.key}", "--testlens-repo=acme/plugin-root", "sub",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    assert "testlens: uploaded 1 tests" in result.stdout.str()
    assert sent_roots == [str(project.path)]
