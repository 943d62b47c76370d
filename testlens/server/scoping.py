"""Tenant-scoped lookups: the one place that turns an id or name into a row of the caller's
tenant, and anything else (missing, or another tenant's) into the same 404.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import not_found
from .models import Repository, TestCase


def find_repo(session: Session, tenant_id: str, name: str) -> Repository:
    repo = session.scalar(
        select(Repository).where(Repository.tenant_id == tenant_id, Repository.name == name)
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
