"""Defaults for upload metadata, read from the CI system's own environment variables.

Every supported CI names the repository, branch, commit, run, pull request and checkout
directory somewhere; this maps each one onto the ingest form so that
``testlens upload report.xml`` needs no flags. Outside a CI, the checkout directory is git's.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.identity import is_absolute

_REMOTE = re.compile(r"(?:[:/])([^/:]+/[^/]+?)(?:\.git)?/?$")


@dataclass(frozen=True, slots=True)
class CiContext:
    provider: str | None = None
    repo: str | None = None
    branch: str | None = None
    commit: str | None = None
    workflow_run_id: str | None = None
    pr_number: str | None = None
    check_name: str | None = None
    workspace: str | None = None
    """Where the job checked the repository out: the upload's ``root``."""


GIT_TIMEOUT = 3.0
"""Seconds ``git`` may take to name the work tree; a hung git must not hold an upload."""


def git_toplevel(cwd: str | None = None) -> str | None:
    """The top directory of the git work tree ``cwd`` (default: the current directory) is
    in; None when git is missing, slow, or finds no work tree there."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=cwd,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    top = os.fsdecode(done.stdout.strip())
    return top if done.returncode == 0 and top else None


def _home(path: str | None, env: Mapping[str, str]) -> str | None:
    """``path`` with a leading ``~`` expanded from ``env``'s HOME (CircleCI writes its working
    directory as ``~/project``); None when it cannot be."""
    if not path or not path.startswith("~"):
        return path
    home = env.get("HOME")
    if not home or path[1:2] not in ("", "/", "\\"):
        return None
    return home.rstrip("/\\") + path[1:]


def repo_from_remote(url: str | None) -> str | None:
    """``owner/repo`` from a git remote URL (https or ssh form)."""
    if not url:
        return None
    match = _REMOTE.search(url.strip())
    return match.group(1) if match else None


def _pr_from_ref(ref: str | None) -> str | None:
    match = re.match(r"refs/pull/(\d+)/", ref or "")
    return match.group(1) if match else None


def _strip_branch(ref: str | None) -> str | None:
    if not ref:
        return None
    for prefix in ("refs/heads/", "origin/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def detect(env: Mapping[str, str]) -> CiContext:
    """The CI context of the current job, or an empty one outside a known CI."""
    g = env.get
    if g("GITHUB_ACTIONS") == "true":
        return CiContext(
            "github",
            g("GITHUB_REPOSITORY"),
            g("GITHUB_HEAD_REF") or g("GITHUB_REF_NAME"),
            g("GITHUB_SHA"),
            g("GITHUB_RUN_ID"),
            _pr_from_ref(g("GITHUB_REF")),
            g("GITHUB_JOB"),
            g("GITHUB_WORKSPACE"),
        )
    if g("GITLAB_CI") == "true":
        return CiContext(
            "gitlab",
            g("CI_PROJECT_PATH"),
            g("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME") or g("CI_COMMIT_REF_NAME"),
            g("CI_COMMIT_SHA"),
            g("CI_PIPELINE_ID"),
            g("CI_MERGE_REQUEST_IID"),
            g("CI_JOB_NAME"),
            g("CI_PROJECT_DIR"),
        )
    if g("CIRCLECI") == "true":
        owner, name = g("CIRCLE_PROJECT_USERNAME"), g("CIRCLE_PROJECT_REPONAME")
        pr = g("CIRCLE_PR_NUMBER") or (g("CIRCLE_PULL_REQUEST") or "").rsplit("/", 1)[-1] or None
        return CiContext(
            "circleci",
            f"{owner}/{name}" if owner and name else None,
            g("CIRCLE_BRANCH"),
            g("CIRCLE_SHA1"),
            g("CIRCLE_WORKFLOW_ID"),
            pr,
            g("CIRCLE_JOB"),
            _home(g("CIRCLE_WORKING_DIRECTORY"), env),
        )
    if g("BUILDKITE") == "true":
        pr = g("BUILDKITE_PULL_REQUEST")
        return CiContext(
            "buildkite",
            repo_from_remote(g("BUILDKITE_REPO")),
            g("BUILDKITE_BRANCH"),
            g("BUILDKITE_COMMIT"),
            g("BUILDKITE_BUILD_ID"),
            pr if pr and pr != "false" else None,
            g("BUILDKITE_LABEL"),
            g("BUILDKITE_BUILD_CHECKOUT_PATH"),
        )
    if g("JENKINS_URL"):
        return CiContext(
            "jenkins",
            repo_from_remote(g("GIT_URL")),
            g("CHANGE_BRANCH") or g("BRANCH_NAME") or _strip_branch(g("GIT_BRANCH")),
            g("GIT_COMMIT"),
            g("BUILD_TAG") or g("BUILD_ID"),
            g("CHANGE_ID"),
            g("JOB_NAME"),
            g("WORKSPACE"),
        )
    return CiContext()


def run_fields(given: Mapping[str, str | None]) -> dict[str, str]:
    """The upload form's metadata: each field as ``given``, else as the CI job's environment
    says (see :func:`detect`), so that uploads from the command and from the pytest plugin
    describe a run the same way. Fields known to neither are left out.

    ``root`` falls back to the CI's checkout directory, then to the git work tree around the
    current directory: the server makes absolute test file paths relative to it, so that a
    test's identity does not depend on where the repository was checked out. A relative root
    is taken from the current directory; a CI's that is not absolute is left out rather than
    have the server refuse the upload.
    """
    context = detect(os.environ)
    fields: dict[str, str] = {}
    for name in ("repo", "branch", "commit", "workflow_run_id", "pr_number", "check_name"):
        value = given.get(name) or getattr(context, name)
        if value:
            fields[name] = str(value)
    if root := given.get("root"):
        fields["root"] = root if is_absolute(root) else os.path.abspath(root)
    elif (root := context.workspace or git_toplevel()) and is_absolute(root):
        fields["root"] = root
    if context.provider:
        fields["provider"] = context.provider
    if given.get("environment"):
        fields["environment"] = str(given["environment"])
    return fields


_PARALLEL_SUFFIX = re.compile(r" \d+/\d+$")  # GitLab's "test 2/4" for parallel jobs


def run_key(env: Mapping[str, str]) -> str | None:
    """The identity every node of one sharded CI job shares, or None outside a known CI.

    It names the CI run and the job (not the node: parallel nodes of a job share it), and
    deliberately not the attempt: a node re-run alone ("re-run failed jobs") must get the
    plan its first attempt ran, or the re-run would run another node's tests.
    """
    g = env.get
    parts: tuple[str | None, ...]
    if g("GITHUB_ACTIONS") == "true":
        parts = ("github", g("GITHUB_RUN_ID"), g("GITHUB_JOB"))
    elif g("GITLAB_CI") == "true":
        parts = ("gitlab", g("CI_PIPELINE_ID"), _PARALLEL_SUFFIX.sub("", g("CI_JOB_NAME") or ""))
    elif g("CIRCLECI") == "true":
        parts = ("circleci", g("CIRCLE_WORKFLOW_ID"), g("CIRCLE_JOB"))
    elif g("BUILDKITE") == "true":
        parts = (
            "buildkite",
            g("BUILDKITE_BUILD_ID"),
            g("BUILDKITE_STEP_ID") or g("BUILDKITE_LABEL"),
        )
    elif g("JENKINS_URL"):
        parts = ("jenkins", g("BUILD_TAG") or g("BUILD_ID"))
    else:
        return None
    if not all(parts):
        return None
    return "/".join(part for part in parts if part)


@dataclass(frozen=True, slots=True)
class CiNode:
    """Where this job stands among the parallel copies of one CI job, and which attempt it is.

    ``index`` counts from 0 whatever the CI counts from; ``attempt`` counts from 1. Each is
    None where the CI does not say: GitHub Actions has no variable for a matrix leg's index
    (workflows pass ``strategy.job-index``), and only some CIs count retried jobs.
    """

    index: int | None = None
    total: int | None = None
    attempt: int | None = None

    @property
    def retried(self) -> bool:
        return self.attempt is not None and self.attempt > 1


def _number(text: str | None, offset: int = 0) -> int | None:
    try:
        return int(text) + offset if text else None
    except ValueError:
        return None


def node(env: Mapping[str, str]) -> CiNode:
    """This job's node index, node count and attempt, from the CI's own variables.

    A retried job keeps its CI run's identity (see :func:`run_key`) and its node index, which
    is how an orchestrated run recognises it and hands it back its own work.
    """
    g = env.get
    if g("GITHUB_ACTIONS") == "true":
        return CiNode(attempt=_number(g("GITHUB_RUN_ATTEMPT")))
    if g("GITLAB_CI") == "true":
        # CI_NODE_INDEX counts from 1 and is set only for parallel jobs; retries are counted
        # from 0 by the GitLab versions that have CI_JOB_RETRY_COUNT.
        return CiNode(
            _number(g("CI_NODE_INDEX"), -1),
            _number(g("CI_NODE_TOTAL")),
            _number(g("CI_JOB_RETRY_COUNT"), 1),
        )
    if g("CIRCLECI") == "true":
        return CiNode(_number(g("CIRCLE_NODE_INDEX")), _number(g("CIRCLE_NODE_TOTAL")))
    if g("BUILDKITE") == "true":
        return CiNode(
            _number(g("BUILDKITE_PARALLEL_JOB")),
            _number(g("BUILDKITE_PARALLEL_JOB_COUNT")),
            _number(g("BUILDKITE_RETRY_COUNT"), 1),
        )
    return CiNode()


def _job_name(env: Mapping[str, str]) -> str | None:
    """The CI job's name, the same for every parallel node of the job."""
    name = detect(env).check_name
    return _PARALLEL_SUFFIX.sub("", name) if name else None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.+-]+", "-", text.lower()).strip("-")


def _system() -> str:
    return _slug(platform.system()) or "unknown"


def runner_environment(env: Mapping[str, str], job: str | None = None) -> str:
    """Where an uploaded report's tests ran, by default: the runner's OS and architecture,
    and the CI job's name where the CI gives it (``linux-x86_64-unit-tests``), so that matrix
    legs on different platforms or jobs keep separate histories."""
    parts = [_system(), _slug(platform.machine()) or "unknown"]
    job = job or _job_name(env)
    if job:
        parts.append(_slug(job))
    return "-".join(part for part in parts if part)[:200]


def python_environment() -> str:
    """Where a pytest run's tests run, by default: the OS and the Python version
    (``linux-py3.12``), the two things that most often make one test behave differently."""
    return f"{_system()}-py{sys.version_info.major}.{sys.version_info.minor}"
