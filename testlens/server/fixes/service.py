"""Fix attempts: recording them (GitHub pull requests, the API) and judging their effect.

A pull request says which tests it fixes with a ``Fixes-test: <test>`` line in its
description (one per test) or a link to a test's page (``.../tests/<id>``); each named test
gets one attempt per pull request, which follows the pull request's state. Once merged, the
attempt's verdict compares the test's failure rate on the mainline before the merge with the
rate since (:func:`testlens.core.flakiness.fix_effect`); a verified fix resolves the test
through the same state machinery and webhooks as detection at ingest.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...core import flakiness as detection
from ...core.flakiness import FixEffect
from ...core.identity import TestKey, match_tests
from ...core.model import TestCase as ReportedTest
from ..database import Database
from ..errors import invalid_field, not_found
from ..models import FixAttempt, Repository, TestCase, TestEvent, TestState, iso
from ..scoping import find_repo_by_id, find_test
from ..settings import DEFAULT_MAINLINE_BRANCHES
from ..webhooks import payloads
from . import queries
from .schemas import (
    CodeChanges,
    Effectiveness,
    FixAttemptDetail,
    FixAttemptIn,
    FixAttemptItem,
    FixAttemptList,
    Rate,
    RepoRef,
    Status,
    StatusFilter,
    Summary,
    Verdict,
)

logger = logging.getLogger(__name__)

OPEN_ACTIONS = frozenset({"opened", "edited", "reopened", "synchronize"})
"""Pull request actions after which the named tests have a pending attempt."""

_TRAILER = re.compile(r"^[ \t>*-]*fixes-test:[ \t]*(\S[^\r\n]*?)[ \t]*$", re.I | re.M)
_TEST_LINK = re.compile(r"/tests/([0-9a-f]{32})\b")
_TEST_ID = re.compile(r"[0-9a-f]{32}")


def named_tests(body: str | None) -> list[str]:
    """The tests a pull request description names, in order, each once: the value of each
    ``Fixes-test:`` line (any case, also in a list or a quote) and the id of each link to
    a test's page."""
    text = body or ""
    found = [match.group(1) for match in _TRAILER.finditer(text)]
    found += [match.group(1) for match in _TEST_LINK.finditer(text)]
    return list(dict.fromkeys(found))


def resolve_test(session: Session, repo_id: str, reference: str) -> str | None:
    """The id of the repository's test a reference names, or None if it names none or
    several: a test id; a node id or ``file::name`` (matched as ``/api/v1`` orchestration
    matches requested tests, :func:`~testlens.core.identity.match_tests`); or
    ``Class.name`` (``com.acme.CartTest.testPay`` or ``CartTest.testPay``)."""
    if _TEST_ID.fullmatch(reference):
        return queries.test_in_repo(session, repo_id, reference)
    if "::" in reference or reference.endswith(".py"):
        key = TestKey.from_nodeid(reference.removeprefix("./"))
        stored = queries.tests_in_file(session, repo_id, key.file)
        matched = match_tests([key], stored.keys()).get(key)
        return None if matched is None else stored[matched]
    classname, dot, name = reference.rpartition(".")
    if not dot or not classname or not name:
        return None
    candidates = [
        test_id
        for stored_class, test_id in queries.tests_named(session, repo_id, name)
        if stored_class == classname or stored_class.endswith("." + classname)
    ]
    return candidates[0] if len(candidates) == 1 else None


def pull_request_event(
    session: Session, repo: Repository, action: str, pull: dict[str, Any], now: datetime
) -> None:
    """Bring the attempts of one pull request in line with a ``pull_request`` webhook.

    ``pull`` is the event's ``pull_request`` object. While the pull request is open
    (opened, edited, reopened, synchronize) each test its description names has a pending
    attempt; an edit that stops naming a test closes that test's attempt (naming it again
    reopens it). Closing it merged marks the named tests' attempts merged (time, merge
    commit, size of the change), closing it unmerged marks them closed. Replays of an event
    change nothing. A reference to no known test stores nothing and is logged. Other
    actions (labels, reviews, ...) are ignored.
    """
    number = pull.get("number")
    if not isinstance(number, int):
        return
    if action in OPEN_ACTIONS:
        status = "pending"
    elif action == "closed":
        status = "merged" if pull.get("merged") else "closed"
    else:
        return
    wanted: list[str] = []
    for reference in named_tests(pull.get("body")):
        test_id = resolve_test(session, repo.id, reference)
        if test_id is None:
            logger.info(
                "pull request #%s of %s names no known test: %r", number, repo.name, reference
            )
        elif test_id not in wanted:
            wanted.append(test_id)
    existing = {
        attempt.test_id: attempt for attempt in queries.attempts_of_pull(session, repo.id, number)
    }
    for test_id in wanted:
        attempt = existing.get(test_id)
        if attempt is None:
            test = session.get(TestCase, test_id)
            attempt = FixAttempt(
                id=str(uuid.uuid4()),
                tenant_id=repo.tenant_id,
                repo_id=repo.id,
                test_id=test_id,
                source="pull_request",
                # What the pull request set out to fix: the test's cause when it was opened.
                root_cause_category=test.root_cause_category if test is not None else None,
                pr_number=number,
                status="pending",
                merged=False,
                verdict="pending",
                files_changed=0,
                lines_added=0,
                lines_removed=0,
                created_at=now,
                updated_at=now,
            )
            session.add(attempt)
        _follow_pull(attempt, pull, status, now)
    for test_id, attempt in existing.items():
        if test_id not in wanted and attempt.status == "pending":
            attempt.status = "closed"
            attempt.updated_at = now
    if status == "merged":  # runs since the merge may be stored already (a late delivery)
        session.flush()
        for attempt in queries.attempts_of_pull(session, repo.id, number):
            judged = _judge(session, attempt, repo, DEFAULT_MAINLINE_BRANCHES)
            if judged is not None:
                _settle(session, attempt, repo, judged, now)


def _follow_pull(attempt: FixAttempt, pull: dict[str, Any], status: str, now: datetime) -> None:
    """Copy what the pull request says now onto its attempt; a merged attempt stays merged
    (GitHub sends edits of merged pull requests too)."""
    head = pull.get("head")
    branch = _text(head.get("ref")) if isinstance(head, dict) else None
    values: dict[str, Any] = {
        "pr_url": _text(pull.get("html_url")) or attempt.pr_url,
        "branch_name": branch[:300] if branch else attempt.branch_name,
        "files_changed": _count(pull.get("changed_files"), attempt.files_changed),
        "lines_added": _count(pull.get("additions"), attempt.lines_added),
        "lines_removed": _count(pull.get("deletions"), attempt.lines_removed),
    }
    if attempt.status != "merged":
        values["status"] = status
        if status == "merged":
            values["merged"] = True
            values["merged_at"] = _time(pull.get("merged_at")) or now
            values["merge_commit_sha"] = (_text(pull.get("merge_commit_sha")) or "")[:64] or None
    changed = False
    for name, value in values.items():
        if getattr(attempt, name) != value:
            setattr(attempt, name, value)
            changed = True
    if changed:
        attempt.updated_at = now


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


# --- the API ------------------------------------------------------------------------------


def record(
    database: Database,
    tenant_id: str,
    body: FixAttemptIn,
    mainline_branches: tuple[str, ...],
    now: datetime,
) -> FixAttemptDetail:
    """Store a fix attempt sent through the API (source ``api``) and judge it at once: a
    fix merged in the past may already have the runs that prove it."""
    merged_at = _utc(body.merged_at)
    if body.status != "merged" and merged_at is not None:
        raise invalid_field(
            "merged_at", "absent unless status is merged", "merged_at needs status merged"
        )
    if merged_at is not None and merged_at > now:
        raise invalid_field("merged_at", "a time not in the future", "merged_at is in the future")
    changes = body.code_changes or CodeChanges()
    with database.transaction() as session:
        test, repo = find_test(session, tenant_id, body.test_id)
        attempt = FixAttempt(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            repo_id=repo.id,
            test_id=test.id,
            source="api",
            pr_url=body.pr_url,
            pr_number=body.pr_number,
            branch_name=body.branch_name,
            root_cause_category=body.root_cause_category,
            ai_explanation=body.ai_explanation,
            status=body.status,
            merged=body.status == "merged",
            merged_at=(merged_at or now) if body.status == "merged" else None,
            confidence=body.confidence,
            files_changed=changes.files_changed,
            lines_added=changes.lines_added,
            lines_removed=changes.lines_removed,
            verdict="pending",
            created_at=now,
            updated_at=now,
        )
        session.add(attempt)
        session.flush()
        judged = _judge(session, attempt, repo, mainline_branches)
        if judged is not None:
            _settle(session, attempt, repo, judged, now)
        return _detail(attempt, judged)


def listing(
    database: Database,
    tenant_id: str,
    limit: int,
    status: StatusFilter,
    repo_id: str | None,
    github: str,
) -> FixAttemptList:
    """The newest attempts (of one repository when ``repo_id`` is given), and the counts
    by status over the same scope (whatever ``status`` and ``limit`` keep). ``github``:
    GitHub's web address (github.com, or the Enterprise Server's host), as /api/repos has it."""
    with database.read() as session:
        if repo_id is not None:
            find_repo_by_id(session, tenant_id, repo_id)
        rows = queries.newest(
            session, tenant_id, repo_id, None if status == "all" else status, limit
        )
        counts = queries.count_by_status(session, tenant_id, repo_id)
    return FixAttemptList(
        fix_attempts=[_item(attempt, test, repo, github) for attempt, test, repo in rows],
        summary=Summary(
            total=sum(counts.values()),
            pending=counts.get("pending", 0),
            merged=counts.get("merged", 0),
            closed=counts.get("closed", 0),
        ),
    )


def detail(
    database: Database, tenant_id: str, attempt_id: str, mainline_branches: tuple[str, ...]
) -> FixAttemptDetail:
    """One attempt with its verdict computed from the runs stored now (stored verdicts are
    brought up to date at ingest; this read changes nothing)."""
    with database.read() as session:
        found = queries.attempt_of_tenant(session, tenant_id, attempt_id)
        if found is None:
            raise not_found("fix attempt", attempt_id)
        attempt, repo = found
        return _detail(attempt, _judge(session, attempt, repo, mainline_branches))


def _item(attempt: FixAttempt, test: TestCase, repo: Repository, github: str) -> FixAttemptItem:
    return FixAttemptItem(
        id=attempt.id,
        test_id=attempt.test_id,
        test_name=test.name,
        test_file_path=test.file,
        pr_url=attempt.pr_url,
        pr_number=attempt.pr_number,
        branch_name=attempt.branch_name,
        root_cause_category=attempt.root_cause_category,
        ai_explanation=attempt.ai_explanation,
        status=_status(attempt.status),
        merged=attempt.merged,
        merged_at=iso(attempt.merged_at),
        confidence=attempt.confidence,
        model_used=attempt.model_used,
        created_at=iso(attempt.created_at) or "",
        repo=RepoRef(id=repo.id, name=repo.name, github_url=f"{github}/{repo.name}"),
    )


def _status(value: str) -> Status:
    if value == "merged":
        return "merged"
    return "closed" if value == "closed" else "pending"


@dataclass(frozen=True, slots=True)
class _Judged:
    effect: FixEffect
    runs_after: int


def _detail(attempt: FixAttempt, judged: _Judged | None) -> FixAttemptDetail:
    effect = judged.effect if judged is not None else None
    after = effect.after if effect is not None else None
    return FixAttemptDetail(
        id=attempt.id,
        test_id=attempt.test_id,
        pr_url=attempt.pr_url,
        pr_number=attempt.pr_number,
        status=_status(attempt.status),
        confidence=attempt.confidence,
        code_changes=CodeChanges(
            files_changed=attempt.files_changed,
            lines_added=attempt.lines_added,
            lines_removed=attempt.lines_removed,
        ),
        effectiveness=Effectiveness(
            runs_since_fix=after.runs if after else 0,
            failures_before=effect.before.failures if effect else 0,
            failures_after=after.failures if after else 0,
            success_rate=(after.runs - after.failures) / after.runs
            if after and after.runs
            else None,
        ),
        verdict=_verdict(attempt, effect),
    )


def _verdict(attempt: FixAttempt, effect: FixEffect | None) -> Verdict:
    if effect is None:
        reason = "closed without merging" if attempt.status == "closed" else "not merged yet"
        return Verdict(
            state="pending",
            probability_improved=None,
            before=None,
            after=None,
            clean_runs_needed=None,
            reason=reason,
        )
    return Verdict(
        state=effect.verdict,
        probability_improved=effect.probability_improved,
        before=Rate(**_rate(effect.before)),
        after=Rate(**_rate(effect.after)),
        clean_runs_needed=effect.clean_runs_needed,
        reason=effect.reason,
    )


def _rate(estimate: detection.RateEstimate) -> dict[str, Any]:
    return {
        "runs": estimate.runs,
        "failures": estimate.failures,
        "rate": estimate.rate,
        "low": estimate.low,
        "high": estimate.high,
    }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- judging ------------------------------------------------------------------------------


def mainline_of(repo: Repository, mainline_branches: Sequence[str]) -> tuple[str, ...]:
    """The branches whose runs are the mainline of ``repo``: its default branch when GitHub
    told it, else the configured mainline branches."""
    return (repo.default_branch,) if repo.default_branch else tuple(mainline_branches)


def _judge(
    session: Session, attempt: FixAttempt, repo: Repository, mainline_branches: Sequence[str]
) -> _Judged | None:
    """The verdict on a merged attempt from the mainline runs stored now; None unmerged."""
    if not attempt.merged or attempt.merged_at is None:
        return None
    before, after = queries.runs_around(
        session, attempt.test_id, repo.id, mainline_of(repo, mainline_branches), attempt.merged_at
    )
    return _Judged(detection.fix_effect(before, after), after[0])


def _settle(
    session: Session, attempt: FixAttempt, repo: Repository, judged: _Judged, now: datetime
) -> None:
    """Store a new verdict; a fix verified now resolves its test."""
    verdict = judged.effect.verdict
    if verdict == attempt.verdict:
        return
    attempt.verdict = verdict
    attempt.updated_at = now
    if verdict == "verified":
        _resolve_test(session, attempt, repo, judged.effect, now)


def rejudge_after_run(
    session: Session,
    repo_id: str,
    run_id: str,
    now: datetime,
    mainline_branches: Sequence[str] = DEFAULT_MAINLINE_BRANCHES,
) -> None:
    """Judge again the merged, not yet verified fixes of the tests a mainline run just
    stored: one indexed query when the repository has none, which is the common case."""
    attempts = queries.merged_unverified(session, repo_id)
    if not attempts:
        return
    ran = queries.tests_in_run(session, run_id, {attempt.test_id for attempt in attempts})
    if not ran:
        return
    repo = session.get(Repository, repo_id)
    assert repo is not None
    for attempt in attempts:
        if attempt.test_id in ran:
            judged = _judge(session, attempt, repo, mainline_branches)
            if judged is not None:
                _settle(session, attempt, repo, judged, now)


class _Resolved(NamedTuple):
    """A test's transition to healthy by a verified fix, as webhooks take it."""

    test_id: str
    state: detection.TestState
    transition: detection.Transition


def _resolve_test(
    session: Session, attempt: FixAttempt, repo: Repository, effect: FixEffect, now: datetime
) -> None:
    """Resolve the fixed test in every environment where it is flaky: the state, its
    figures on the test's row, an event naming the fix, and the ``resolved_flaky_test``
    webhook, as detection at ingest records a resolution."""
    named = (
        f"pull request #{attempt.pr_number}" if attempt.pr_number else f"fix attempt {attempt.id}"
    )
    if attempt.pr_url:
        named += f" ({attempt.pr_url})"
    reason = f"fix verified: {named}; {effect.reason}"
    rows = session.scalars(select(TestState).where(TestState.test_id == attempt.test_id)).all()
    states: list[detection.TestState] = []
    changes: list[_Resolved] = []
    suite = "testlens"
    for row in rows:
        state, transition = detection.resolve_fixed(
            detection.TestState.from_json(row.data), now, reason
        )
        states.append(state)
        if transition is None:
            continue
        low, high = detection.flake_interval(state)
        row.state, row.since, row.data = state.state, state.since, state.to_json()
        row.flake_score, row.flake_score_low, row.flake_score_high = state.flake_score, low, high
        suite = row.check_name or suite
        session.add(
            TestEvent(
                repo_id=repo.id,
                test_id=attempt.test_id,
                environment=row.environment,
                from_state=transition.from_state,
                to_state=transition.to_state,
                at=now,
                reason=reason,
                run_ids="[]",
                commit_sha=attempt.merge_commit_sha,
            )
        )
        changes.append(_Resolved(attempt.test_id, state, transition))
    if not changes:
        return
    test = session.get(TestCase, attempt.test_id)
    assert test is not None
    combined = detection.combine(states)
    test.state = combined.verdict
    test.flake_score = combined.flake_score
    test.flake_score_low = combined.flake_score_low
    test.flake_score_high = combined.flake_score_high
    payloads.queue_flaky_events(
        session,
        repo.tenant_id,
        repo.name,
        {"name": suite, "provider": "github"},
        attempt.merge_commit_sha,
        changes,
        {
            test.id: ReportedTest(
                name=test.name, classname=test.classname, suite=test.suite, file=test.file
            )
        },
        now,
    )
