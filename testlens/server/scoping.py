"""Tenant-scoped lookups: the one place that turns an id or name into a row of the caller's
tenant, and anything else (missing, or another tenant's) into the same 404.

Every area finds what a request names through here, so no query can forget the tenant.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import not_found
from .models import ApiKey, Repository, Run, TestCase, Webhook
from .models.results import name_key


def find_repo(session: Session, tenant_id: str, name: str) -> Repository:
    """The tenant's repository ``name``, matched case-insensitively as uploads are."""
    repo = session.scalar(
        select(Repository).where(
            Repository.tenant_id == tenant_id, Repository.name_key == name_key(name)
        )
    )
    if repo is None:
        raise not_found("repository", name)
    return repo


def find_test(session: Session, tenant_id: str, test_id: str) -> tuple[TestCase, Repository]:
    row = session.execute(
        select(TestCase, Repository)
        .join(Repository, Repository.id == TestCase.repo_id)
        .where(TestCase.id == test_id, Repository.tenant_id == tenant_id)
    ).first()
    if row is None:
        raise not_found("test", test_id)
    return row[0], row[1]


def find_webhook(session: Session, tenant_id: str, webhook_id: str) -> Webhook:
    hook = session.scalar(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant_id)
    )
    if hook is None:
        raise not_found("webhook", webhook_id)
    return hook


def find_key(session: Session, tenant_id: str, key_id: str) -> ApiKey:
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
    if key is None:
        raise not_found("API key", key_id)
    return key


def find_repo_by_id(session: Session, tenant_id: str, repo_id: str) -> Repository:
    repo = session.scalar(
        select(Repository).where(Repository.id == repo_id, Repository.tenant_id == tenant_id)
    )
    if repo is None:
        raise not_found("repository", repo_id)
    return repo


def find_run(session: Session, tenant_id: str, run_id: str) -> tuple[Run, Repository]:
    row = session.execute(
        select(Run, Repository)
        .join(Repository, Repository.id == Run.repo_id)
        .where(Run.id == run_id, Repository.tenant_id == tenant_id)
    ).first()
    if row is None:
        raise not_found("run", run_id)
    return row[0], row[1]


def repo_id_named(session: Session, tenant_id: str, name: str) -> str | None:
    """The id of the tenant's repository ``name`` (matched case-insensitively), or None: for
    callers to whom a repository without uploads yet is no error (a first run has no history
    to plan with)."""
    found: str | None = session.scalar(
        select(Repository.id).where(
            Repository.tenant_id == tenant_id, Repository.name_key == name_key(name)
        )
    )
    return found
