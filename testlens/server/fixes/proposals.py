"""Pull requests testlens opens: a draft fix for a flaky test whose root cause is clear.

Off unless both a language model (:mod:`testlens.server.llm`) and the GitHub App
(:mod:`testlens.server.github.client`) are configured, and ``TESTLENS_FIX_PULL_REQUESTS`` is
not ``off``. The root-cause analyser calls :meth:`FixPullRequests.consider` after storing a
test's analysis; a test qualifies when it is flaky, its category names a cause in its own
code (:func:`~testlens.core.fix_proposals.suggestion_for`) with a confidence at the
threshold or above, its repository is installed and has a default branch, and no fix of it
is pending or merged and testlens never opened one for it: one pull request per test, ever,
so a closed one (people said no) is not proposed again.

The model proposes a diff against the test's file as it is on the default branch; the guard
rails (:func:`~testlens.core.fix_proposals.check`) refuse one that only sleeps, retries,
waits longer or asks less. An allowed one becomes a branch, one commit and a draft pull
request whose description carries the evidence and a ``Fixes-test:`` line, so the
``pull_request`` events GitHub sends back follow the same attempt
(:func:`~testlens.server.fixes.service.pull_request_event`). The model and GitHub are asked
outside any database transaction. A refusal or a GitHub error is logged and stores
nothing: the test is considered again at its next analysis. A branch created for an attempt
that then failed is deleted again, so that it does not block the next one; a branch of that
name that was there before (someone's own, or one the deletion could not remove) makes
GitHub refuse the next attempt until someone deletes it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ...core.fix_proposals import REASONS, check, suggestion_for
from ...core.identity import TestKey, pytest_nodeid
from ...core.rootcause import CONFIDENCE_THRESHOLD
from ..database import DATABASE_DOWN, Database
from ..github.client import GitHubApp, GitHubError
from ..llm import LanguageModel, Proposal, scrub
from ..models import FixAttempt, Repository, TestCase, utcnow
from ..rootcause.service import Analysis
from ..settings import Settings

log = logging.getLogger("testlens.server.fixes.proposals")

BRANCH_PREFIX = "testlens/fix-"
SLUG_CHARS = 40
"""The most characters of the test's name a branch name keeps."""
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_MAX_TITLE_NAME = 120
_MAX_MESSAGE_CHARS = 300
_FLIPS = {".": "passed", "f": "failed, then passed on retry", "F": "failed"}


@dataclass(frozen=True, slots=True)
class _Target:
    """What a pull request for one test needs from the database."""

    test_id: str
    name: str
    shown: str  # the test as people name it (a pytest node id where it is one)
    file: str
    tenant_id: str
    repo_id: str
    repo: str  # owner/name
    installation_id: int
    base: str  # the default branch


@dataclass(frozen=True, slots=True)
class _Opened:
    url: str
    number: int
    branch: str
    proposal: Proposal
    lines: tuple[int, int]  # added, removed


def branch_name(test_name: str, test_id: str) -> str:
    """``testlens/fix-<slug>-<hash>``: the test's name as letters, digits and dashes (safe in
    any git ref), cut short, and a hash of its id that keeps two tests of one name apart.
    The same test always gets the same branch, so two processes analysing it at once cannot
    open two pull requests: GitHub refuses the second branch."""
    slug = _NOT_SLUG.sub("-", test_name.lower()).strip("-")[:SLUG_CHARS].strip("-") or "test"
    digest = hashlib.sha256(test_id.encode()).hexdigest()[:8]
    return f"{BRANCH_PREFIX}{slug}-{digest}"


class FixPullRequests:
    """Opens fix pull requests for the tests the analyser hands it (thread-safe: it keeps
    no state of its own)."""

    def __init__(self, database: Database, model: LanguageModel, github: GitHubApp) -> None:
        self._database = database
        self._model = model
        self._github = github

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        database: Database,
        model: LanguageModel | None,
        github: GitHubApp | None,
    ) -> FixPullRequests | None:
        """The opener, or None when the model or the App is missing or the setting is off."""
        if model is None or github is None or settings.fix_pull_requests == "off":
            return None
        return cls(database, model, github)

    def consider(self, test_id: str, analysis: Analysis) -> None:
        """Open a draft pull request fixing ``test_id`` if it qualifies (module docstring).
        Never raises for GitHub or for a bug of its own (the analyser goes on with the next
        test); a database outage is left to the analyser, which waits it out."""
        try:
            with self._database.read() as session:
                target = _target(session, test_id, analysis)
            if target is None:
                return
            opened = self._open(target, analysis)
            if opened is not None:
                _record(self._database, target, analysis, opened)
        except DATABASE_DOWN:
            raise
        except GitHubError as exc:
            log.warning("no fix pull request for test %s: %s", test_id, exc)
        except Exception:
            log.exception("no fix pull request for test %s: an unexpected error", test_id)

    def _open(self, target: _Target, analysis: Analysis) -> _Opened | None:
        github, installation, repo = self._github, target.installation_id, target.repo
        head = github.default_branch_sha(installation, repo, target.base)
        source = github.file_text(installation, repo, target.file, head)
        if source is None:
            log.info(
                "no fix pull request for test %s: %s is not on %s of %s",
                target.test_id,
                target.file,
                target.base,
                repo,
            )
            return None
        proposal = self._model.propose_fix(target.shown, {target.file: source}, analysis.evidence)
        if proposal is None:
            return None  # the model's module logged why
        guard = check(proposal.diff)
        if not guard.allowed:
            log.info(
                "no fix pull request for test %s: the guard rails refused the proposed fix (%s)",
                target.test_id,
                ", ".join(guard.reasons),
            )
            return None
        branch = branch_name(target.name, target.test_id)
        github.create_branch(installation, repo, branch, head)
        title = f"Fix flaky test {_cut(target.name, _MAX_TITLE_NAME)}"
        message = f"{title}\n\n{proposal.summary}\n\nFixes-test: {target.test_id}\n"
        try:
            github.commit_files(installation, repo, branch, message, proposal.files)
            pull = github.create_pull_request(
                installation,
                repo,
                head=branch,
                base=target.base,
                title=title,
                body=_body(target.test_id, target.shown, analysis, proposal, guard.reasons),
                draft=True,
            )
            number, url = pull.get("number"), pull.get("html_url")
            if not isinstance(number, int) or not isinstance(url, str):
                raise GitHubError(0, "the pull request answer lacks its number or html_url")
        except Exception:
            self._delete_branch(installation, repo, branch)
            raise
        lines = _changed_lines(source, proposal.files.get(target.file, source))
        log.info("opened fix pull request %s for test %s", url, target.test_id)
        return _Opened(url, number, branch, proposal, lines)

    def _delete_branch(self, installation: int, repo: str, branch: str) -> None:
        """Delete the branch of an attempt that failed after creating it (the failure itself
        is what gets reported; this one is only logged)."""
        try:
            self._github.delete_branch(installation, repo, branch)
        except GitHubError as exc:
            log.warning(
                "the branch %s of a failed fix attempt is left in %s: %s", branch, repo, exc
            )


def _target(session: Session, test_id: str, analysis: Analysis) -> _Target | None:
    """The test and repository a pull request would be for, if the test qualifies."""
    verdict = analysis.verdict
    if (
        verdict.confidence < CONFIDENCE_THRESHOLD
        or suggestion_for(verdict.category) != "pull_request"  # unknown, infrastructure
    ):
        return None
    row = session.execute(
        select(TestCase, Repository)
        .join(Repository, Repository.id == TestCase.repo_id)
        .where(TestCase.id == test_id)
    ).first()
    if row is None:
        return None
    test, repo = row
    if (
        test.state != "flaky"
        or not test.file
        or repo.installation_id is None
        or not repo.default_branch
        or _has_blocking_attempt(session, test_id)
    ):
        return None
    key = TestKey(test.file, test.suite, test.classname, test.name)
    return _Target(
        test_id=test.id,
        name=test.name,
        shown=pytest_nodeid(key),
        file=test.file.removeprefix("./"),
        tenant_id=repo.tenant_id,
        repo_id=repo.id,
        repo=repo.name,
        installation_id=repo.installation_id,
        base=repo.default_branch,
    )


def _has_blocking_attempt(session: Session, test_id: str) -> bool:
    """Whether a fix of the test is under way or merged, or testlens ever proposed one."""
    found = session.scalar(
        select(FixAttempt.id)
        .where(
            FixAttempt.test_id == test_id,
            or_(FixAttempt.source == "testlens", FixAttempt.status.in_(("pending", "merged"))),
        )
        .limit(1)
    )
    return found is not None


def _record(database: Database, target: _Target, analysis: Analysis, opened: _Opened) -> None:
    """Store the pull request as the test's fix attempt (source ``testlens``). GitHub's
    ``opened`` event may have been applied first and recorded it as a ``pull_request``
    attempt: that one becomes testlens'."""
    now = utcnow()
    values: dict[str, Any] = {
        "source": "testlens",
        "pr_url": opened.url,
        "pr_number": opened.number,
        "branch_name": opened.branch,
        "root_cause_category": analysis.verdict.category,
        "ai_explanation": analysis.explanation,
        "confidence": analysis.verdict.confidence,
        "model_used": opened.proposal.model,
        "files_changed": len(opened.proposal.files),
        "lines_added": opened.lines[0],
        "lines_removed": opened.lines[1],
        "updated_at": now,
    }
    with database.transaction() as session:
        attempt = session.scalar(
            select(FixAttempt).where(
                FixAttempt.repo_id == target.repo_id,
                FixAttempt.pr_number == opened.number,
                FixAttempt.test_id == target.test_id,
            )
        )
        if attempt is None:
            session.add(
                FixAttempt(
                    id=str(uuid.uuid4()),
                    tenant_id=target.tenant_id,
                    repo_id=target.repo_id,
                    test_id=target.test_id,
                    status="pending",
                    merged=False,
                    verdict="pending",
                    created_at=now,
                    **values,
                )
            )
        else:
            for name, value in values.items():
                setattr(attempt, name, value)


def _body(
    test_id: str,
    shown: str,
    analysis: Analysis,
    proposal: Proposal,
    warnings: Sequence[str],
) -> str:
    """The pull request's description: the change, the root cause, the evidence, the guard
    rails' warnings and the ``Fixes-test:`` line. Everything that comes from test output is
    scrubbed of secrets (the repository may be public) and set as code where it could
    otherwise be read as Markdown."""
    verdict = analysis.verdict
    evidence = analysis.evidence
    parts = [
        f"testlens proposes this change to fix the flaky test `{_code(shown)}`.",
        f"> {scrub(proposal.summary)}",
        "### Root cause",
        f"**Category:** `{verdict.category}` · **confidence:** {verdict.confidence:.2f}",
        scrub(analysis.explanation),
        "### Evidence",
        *_evidence_lines(evidence),
        "### Guard rails",
    ]
    if warnings:
        parts.append(
            "The change passed, with these warnings for the reviewer:\n"
            + "\n".join(f"- `{reason}`: {REASONS.get(reason, reason)}" for reason in warnings)
        )
    else:
        parts.append(
            "No added sleep, retry, longer timeout, skip or weaker assertion was found in "
            "this change."
        )
    parts += [
        f"The change was written by `{_code(proposal.model)}` and has not been run: review it, "
        "and mark this pull request ready when it is right. If it is wrong, close it; testlens "
        "does not propose a fix for this test again.",
        f"Fixes-test: {test_id}",
    ]
    return "\n\n".join(parts) + "\n"


def _evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    signatures = evidence.get("signatures") or []
    if signatures:
        lines.append(
            "How it fails (its newest failures, near-identical ones merged):\n"
            + "\n".join(
                f"- {s['count']}× `{_code(s['error_type'] or 'failure')}`: "
                f"`{_code(_cut(scrub(s['message']), _MAX_MESSAGE_CHARS))}`"
                for s in signatures
            )
        )
    concentration = _concentration(evidence.get("groups") or {})
    if concentration:
        lines.append("Where it fails:\n" + "\n".join(concentration))
    outcomes = str(evidence.get("outcomes") or "")
    if outcomes:
        legend = ", ".join(f"`{c}` {meaning}" for c, meaning in _FLIPS.items() if c in outcomes)
        lines.append(f"Its runs, oldest first: `{outcomes}` ({legend}).")
    co_failing = evidence.get("co_failing") or []
    if co_failing:
        lines.append(
            "Also failing in the same runs: "
            + ", ".join(f"`{_code(str(name))}` ({runs})" for name, runs in co_failing[:5])
            + "."
        )
    return lines


def _concentration(groups: Mapping[str, Mapping[str, Sequence[int]]]) -> list[str]:
    """Per dimension that varied (environment, OS, shard, check): each value's failing runs
    of its runs, the most failing first."""
    found = []
    for dimension, values in sorted(groups.items()):
        if len(values) < 2:
            continue
        ranked = sorted(values.items(), key=lambda item: -item[1][0] / max(item[1][1], 1))
        shown = ", ".join(
            f"`{_code(value)}` {failed} of {runs}" for value, (failed, runs) in ranked[:6]
        )
        found.append(f"- failing runs by {dimension}: {shown}")
    return found


def _changed_lines(before: str, after: str) -> tuple[int, int]:
    """Lines added and removed from ``before`` to ``after``."""
    added = removed = 0
    old, new = before.splitlines(), after.splitlines()
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed


def _code(text: str) -> str:
    """``text`` safe inside a Markdown code span: one line, no backticks."""
    return " ".join(text.replace("`", "'").split())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
