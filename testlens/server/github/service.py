"""What GitHub's deliveries do: checked and stored on receipt, applied later.

A delivery is authenticated by its signature alone (an HMAC of the raw body with the App's
webhook secret), stored under its GUID so a redelivery or a replay is recognised, and
answered at once; the worker (:mod:`.tasks`) applies it afterwards with :func:`apply`.
Events testlens does not act on (``ping`` included) are stored as already processed.

An installation belongs to one tenant (:func:`tenant_for`): its repositories become that
tenant's repositories, matched by name as uploads are, and stay with their history when the
App leaves them (only ``installation_id`` and ``installed_at`` are cleared). An installation
no tenant could be chosen for is kept without one until ``testlens github link`` names it
(:func:`link`); which repositories it has is then read back from its stored deliveries
(:func:`known_repositories`), so nothing it said before is lost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..database import Database
from ..errors import ApiError, ErrorCode, missing_field
from ..ingest.queries import repository_id
from ..models import CiJob, GithubDelivery, GithubInstallation, Repository, Tenant, utcnow
from .schemas import Accepted

log = logging.getLogger("testlens.server.github")

HANDLED = frozenset(
    {"installation", "installation_repositories", "workflow_job", "check_run", "pull_request"}
)
"""Events the worker applies; any other is stored as processed and otherwise ignored."""
PULL_REQUEST_ACTIONS = frozenset({"opened", "edited", "reopened", "closed", "synchronize"})
MAX_BODY_BYTES = 25 * 1024 * 1024
"""GitHub caps a delivery's payload at 25 MB."""
SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
_MAX_BIGINT = 2**63 - 1


class Unusable(Exception):
    """A payload that lacks what its event needs: recorded as its error, never retried."""


# Receiving ---------------------------------------------------------------------------------


def disabled() -> ApiError:
    """404 ``GITHUB_APP_DISABLED``: the server has no webhook secret, so no delivery could
    be authenticated (a 404, like ``/metrics`` while it is off: nothing is served here)."""
    return ApiError(
        ErrorCode.GITHUB_APP_DISABLED,
        "The GitHub App is not configured on this server (TESTLENS_GITHUB_WEBHOOK_SECRET)",
    )


def check_signature(secret: str, body: bytes, signature: str | None) -> None:
    """Raise 401 ``INVALID_WEBHOOK_SIGNATURE`` unless ``signature`` is ``sha256=`` and the
    HMAC-SHA256 of ``body`` with ``secret``, compared in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if signature is None or not hmac.compare_digest(expected.encode(), signature.encode()):
        raise ApiError(
            ErrorCode.INVALID_WEBHOOK_SIGNATURE,
            f"{SIGNATURE_HEADER} is missing or is not the signature of this body with the "
            "App's webhook secret",
            {"header": SIGNATURE_HEADER},
        )


def _header(name: str, value: str | None, longest: int) -> str:
    if not value:
        raise missing_field(name, "the header GitHub sends with every delivery")
    if len(value) > longest:
        raise ApiError(
            ErrorCode.INVALID_FIELD,
            f"{name} is longer than {longest} characters",
            {"field": name, "expected": f"at most {longest} characters"},
        )
    return value


def _payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        payload = None
    if not isinstance(payload, dict):
        raise ApiError(ErrorCode.INVALID_JSON, "The delivery's body is not a JSON object")
    return payload


def receive(
    database: Database,
    secret: str,
    body: bytes,
    signature: str | None,
    event: str | None,
    delivery: str | None,
) -> Accepted:
    """Authenticate and store one delivery (the headers' values are passed as sent).

    The signature is checked before anything else is read, so an unauthenticated caller
    learns nothing. A delivery GUID already stored is a duplicate: answered the same, and
    neither stored nor processed again."""
    check_signature(secret, body, signature)
    event = _header(EVENT_HEADER, event, 60)
    guid = _header(DELIVERY_HEADER, delivery, 64)
    payload = _payload(body)
    action = payload.get("action")
    now = utcnow()
    row = {
        "id": guid,
        "event": event,
        "action": action[:60] if isinstance(action, str) else None,
        "installation_id": _bigint(_dict(payload.get("installation")).get("id")),
        "payload": body.decode("utf-8"),
        "received_at": now,
        "processed_at": None if event in HANDLED else now,
        "attempts": 0,
    }
    with database.transaction() as session:
        # On the connection: the ORM's bulk insert would not say whether a row went in.
        stored = session.connection().execute(database.upsert(GithubDelivery, ["id"]), row).rowcount
    return Accepted(delivery=guid, event=event, duplicate=stored == 0)


# Applying ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownRepository:
    """A repository an installation was given, and when (the delivery that said so)."""

    github_id: int
    full_name: str
    added_at: datetime


def apply(
    database: Database, session: Session, tenant_setting: str | None, delivery_id: str
) -> None:
    """Apply the stored delivery ``delivery_id`` in ``session`` (the caller's transaction,
    which holds the delivery). Raises :class:`Unusable` for a payload that lacks what its
    event needs; any other exception is a failure worth retrying."""
    delivery = session.get(GithubDelivery, delivery_id)
    if delivery is None:
        return
    payload = _dict(json.loads(delivery.payload))
    at = delivery.received_at
    installation = _installation(database, session, tenant_setting, payload, at)
    if delivery.event == "installation":
        if installation is None:
            raise Unusable("the payload has no installation")
        _installation_event(database, session, installation, delivery.action, at)
        return
    if delivery.event == "installation_repositories":
        if installation is None:
            raise Unusable("the payload has no installation")
        _repositories_event(database, session, installation, delivery.action, payload, at)
        return
    repo = _repository_of(database, session, installation, payload, at)
    if repo is None:
        return
    if delivery.event in ("workflow_job", "check_run") and delivery.action == "completed":
        _record_job(database, session, repo, delivery.event, payload)
    elif delivery.event == "pull_request" and delivery.action in PULL_REQUEST_ACTIONS:
        from ..fixes.service import pull_request_event

        pull = payload.get("pull_request")
        if not isinstance(pull, dict):
            raise Unusable("the payload has no pull_request")
        pull_request_event(session, repo, delivery.action, pull, utcnow())


def _installation_event(
    database: Database,
    session: Session,
    installation: GithubInstallation,
    action: str | None,
    at: datetime,
) -> None:
    """Which repositories an installation has is read back from its deliveries (this one
    included), so that an ``unsuspend`` without a list restores the right ones."""
    if action == "deleted":
        installation.removed_at = at
        _unlink(session, installation.id)
    elif action == "suspend":
        _unlink(session, installation.id)
    elif action in ("created", "unsuspend", "new_permissions_accepted"):
        if action == "created":
            installation.removed_at = None
        _link_all(database, session, installation, known_repositories(session, installation.id))


def _repositories_event(
    database: Database,
    session: Session,
    installation: GithubInstallation,
    action: str | None,
    payload: dict[str, Any],
    at: datetime,
) -> None:
    if installation.removed_at is not None:
        return
    if action == "added":
        added = _repositories(payload.get("repositories_added"), at)
        _link_all(database, session, installation, added)
    elif action == "removed":
        removed = _repositories(payload.get("repositories_removed"), at)
        _unlink(session, installation.id, [r.github_id for r in removed])


def _record_job(
    database: Database, session: Session, repo: Repository, kind: str, payload: dict[str, Any]
) -> None:
    """One CiJob per job and attempt; a redelivered completion updates the same row."""
    job = _dict(payload.get(kind))
    external_id = _bigint(job.get("id"))
    if external_id is None:
        raise Unusable(f"the payload's {kind} has no id")
    if kind == "workflow_job":
        run_id = job.get("run_id")
        workflow_run_id = str(run_id) if run_id is not None else None
        attempt = job.get("run_attempt")
        head_branch = job.get("head_branch")
    else:
        workflow_run_id = None
        attempt = 1
        head_branch = _dict(job.get("check_suite")).get("head_branch")
    values = {
        "id": str(uuid.uuid4()),
        "repo_id": repo.id,
        "kind": kind,
        "external_id": external_id,
        "name": _text(job.get("name"), 300) or "",
        "workflow_run_id": _text(workflow_run_id, 100),
        "run_attempt": attempt if isinstance(attempt, int) and 0 < attempt < 2**31 else 1,
        "head_sha": _text(job.get("head_sha"), 64),
        "head_branch": _text(head_branch, 300),
        "conclusion": _text(job.get("conclusion"), 40),
        "started_at": _time(job.get("started_at")),
        "completed_at": _time(job.get("completed_at")),
    }
    changed = ("name", "workflow_run_id", "head_sha", "head_branch", "conclusion")
    upsert = database.upsert(
        CiJob,
        ["repo_id", "kind", "external_id", "run_attempt"],
        update=(*changed, "started_at", "completed_at"),
    )
    session.execute(upsert, values)


# Installations and tenants -----------------------------------------------------------------


def tenant_for(session: Session, tenant_setting: str | None) -> str | None:
    """The tenant a new installation belongs to: the one ``TESTLENS_GITHUB_TENANT`` names,
    else the server's only tenant, else none (until ``testlens github link``)."""
    if tenant_setting:
        return session.scalar(select(Tenant.id).where(Tenant.name == tenant_setting))
    tenants = list(session.scalars(select(Tenant.id).limit(2)))
    return tenants[0] if len(tenants) == 1 else None


def _installation(
    database: Database,
    session: Session,
    tenant_setting: str | None,
    payload: dict[str, Any],
    at: datetime,
) -> GithubInstallation | None:
    """The payload's installation, stored on first sight with its tenant if one can be
    chosen (if none can, a warning says how to link it, once). One stored without a tenant
    takes one as soon as one can be chosen (say, the server's first tenant was created)."""
    data = _dict(payload.get("installation"))
    installation_id = _bigint(data.get("id"))
    if installation_id is None:
        return None
    account = _dict(data.get("account"))
    login = _text(account.get("login"), 300)
    installation = session.get(GithubInstallation, installation_id)
    if installation is None:
        tenant_id = tenant_for(session, tenant_setting)
        owner = _dict(_dict(payload.get("repository")).get("owner"))
        session.execute(
            database.upsert(GithubInstallation, ["id"]),
            {
                "id": installation_id,
                "tenant_id": tenant_id,
                "account_login": login or _text(owner.get("login"), 300) or "",
                "account_type": _text(account.get("type"), 40),
                "created_at": at,
            },
        )
        installation = session.get(GithubInstallation, installation_id)
        assert installation is not None  # inserted now, or just now by another process
        if tenant_id is None:
            _warn_unlinked(installation, tenant_setting)
    elif installation.tenant_id is None:
        tenant_id = tenant_for(session, tenant_setting)
        if tenant_id is not None:
            installation.tenant_id = tenant_id
            known = known_repositories(session, installation_id)
            _link_all(database, session, installation, known)
    if login and installation.account_login != login:
        installation.account_login = login
        installation.account_type = _text(account.get("type"), 40)
    return installation


def _warn_unlinked(installation: GithubInstallation, tenant_setting: str | None) -> None:
    reason = (
        f"TESTLENS_GITHUB_TENANT names no tenant ({tenant_setting!r})"
        if tenant_setting
        else "the server has several tenants (or none) and TESTLENS_GITHUB_TENANT is unset"
    )
    log.warning(
        "GitHub installation %d (%s) belongs to no tenant, as %s: its repositories are "
        "linked once `testlens github link %d TENANT` names one (docs/github.md)",
        installation.id,
        installation.account_login or "unknown account",
        reason,
        installation.id,
    )


def link(database: Database, installation_id: int, tenant_name: str) -> list[str]:
    """Give installation ``installation_id`` to tenant ``tenant_name`` (``testlens github
    link``), linking at once the repositories its stored deliveries name; returns their
    names. A repository it had in another tenant stays there, unlinked, with its history.
    Raises LookupError when the installation or the tenant is unknown."""
    with database.transaction() as session:
        installation = session.get(GithubInstallation, installation_id)
        if installation is None:
            raise LookupError(
                f"no delivery from GitHub installation {installation_id} has arrived yet"
            )
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant_name))
        if tenant_id is None:
            raise LookupError(f"no tenant is named {tenant_name!r}")
        if installation.tenant_id != tenant_id:
            _unlink(session, installation_id)
        installation.tenant_id = tenant_id
        if installation.removed_at is not None:
            return []
        known = known_repositories(session, installation_id)
        _link_all(database, session, installation, known)
        return [repo.full_name for repo in known]


@dataclass(frozen=True, slots=True)
class InstallationInfo:
    id: int
    account: str
    tenant: str | None
    removed_at: datetime | None
    repositories: int


def installations(database: Database) -> list[InstallationInfo]:
    """Every installation, with its tenant and how many repositories are linked to it."""
    with database.read() as session:
        rows = session.execute(
            select(GithubInstallation, Tenant.name)
            .outerjoin(Tenant, Tenant.id == GithubInstallation.tenant_id)
            .order_by(GithubInstallation.created_at)
        ).all()
        counts = session.execute(
            select(Repository.installation_id, func.count())
            .where(Repository.installation_id.is_not(None))
            .group_by(Repository.installation_id)
        )
        linked = {installation_id: count for installation_id, count in counts}
    return [
        InstallationInfo(i.id, i.account_login, name, i.removed_at, linked.get(i.id, 0))
        for i, name in rows
    ]


def known_repositories(session: Session, installation_id: int) -> list[KnownRepository]:
    """The repositories installation ``installation_id`` has, as its stored installation
    deliveries tell it, oldest first: a list that replaces (``created``, and any action
    carrying ``repositories``), then additions and removals. Empty once it is deleted."""
    rows = session.execute(
        select(
            GithubDelivery.event,
            GithubDelivery.action,
            GithubDelivery.payload,
            GithubDelivery.received_at,
        )
        .where(
            GithubDelivery.installation_id == installation_id,
            GithubDelivery.event.in_(("installation", "installation_repositories")),
        )
        .order_by(GithubDelivery.received_at)
    )
    known: dict[int, KnownRepository] = {}
    for event, action, text, at in rows:
        payload = _dict(json.loads(text))
        if event == "installation":
            if action == "deleted":
                known = {}
            elif isinstance(payload.get("repositories"), list):
                listed = _repositories(payload["repositories"], at, strict=False)
                known = {r.github_id: known.get(r.github_id, r) for r in listed}
        elif action == "added":
            for repo in _repositories(payload.get("repositories_added"), at, strict=False):
                known.setdefault(repo.github_id, repo)
        elif action == "removed":
            for repo in _repositories(payload.get("repositories_removed"), at, strict=False):
                known.pop(repo.github_id, None)
    return list(known.values())


# Repositories ------------------------------------------------------------------------------


def _link_all(
    database: Database,
    session: Session,
    installation: GithubInstallation,
    repos: list[KnownRepository],
) -> None:
    if installation.tenant_id is None:
        return
    for repo in repos:
        _link(database, session, installation.tenant_id, installation.id, repo, None)


def _link(
    database: Database,
    session: Session,
    tenant_id: str,
    installation_id: int,
    known: KnownRepository,
    default_branch: str | None,
) -> Repository:
    """The tenant's repository ``known.full_name`` (created if new), linked to the
    installation; ``installed_at`` is kept while it stays with the same installation."""
    repo = session.get(Repository, repository_id(database, session, tenant_id, known.full_name))
    assert repo is not None
    repo.github_id = known.github_id
    if repo.installation_id != installation_id or repo.installed_at is None:
        repo.installation_id = installation_id
        repo.installed_at = known.added_at
    if default_branch:
        repo.default_branch = default_branch
    return repo


def _unlink(session: Session, installation_id: int, github_ids: list[int] | None = None) -> None:
    """Repositories leave the installation (all of them, or ``github_ids``); they and their
    history stay."""
    statement = update(Repository).where(Repository.installation_id == installation_id)
    if github_ids is not None:
        statement = statement.where(Repository.github_id.in_(github_ids))
    session.execute(
        statement.values(installation_id=None, installed_at=None).execution_options(
            synchronize_session="fetch"
        )
    )


def _repository_of(
    database: Database,
    session: Session,
    installation: GithubInstallation | None,
    payload: dict[str, Any],
    at: datetime,
) -> Repository | None:
    """The tenant's repository an event is about, linked to its installation (GitHub sends
    an installation only what it can see) and given its default branch; None when the event
    names none, or its installation has no tenant or was removed."""
    data = payload.get("repository")
    if not isinstance(data, dict) or installation is None:
        return None
    if installation.tenant_id is None or installation.removed_at is not None:
        return None
    known = _known(data, at)
    if known is None:
        raise Unusable("the repository lacks its id or full_name")
    branch = _text(data.get("default_branch"), 300)
    return _link(database, session, installation.tenant_id, installation.id, known, branch)


# Reading payloads --------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _bigint(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_BIGINT:
        return value
    return None


def _text(value: Any, longest: int) -> str | None:
    return value[:longest] if isinstance(value, str) else None


def _time(value: Any) -> datetime | None:
    """An ISO-8601 time as GitHub writes them (``Z`` or an offset), or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _known(data: Any, at: datetime) -> KnownRepository | None:
    repo = _dict(data)
    github_id = _bigint(repo.get("id"))
    full_name = repo.get("full_name")
    if github_id is None or not isinstance(full_name, str) or full_name.count("/") != 1:
        return None
    return KnownRepository(github_id, full_name[:300], at)


def _repositories(data: Any, at: datetime, *, strict: bool = True) -> list[KnownRepository]:
    """The repositories of a payload's list; one without its id or full name makes the
    payload :class:`Unusable`, unless not ``strict`` (re-reading what was stored)."""
    found = []
    for item in _list(data):
        repo = _known(item, at)
        if repo is None:
            if strict:
                raise Unusable("a repository lacks its id or full_name")
            continue
        found.append(repo)
    return found
