"""The one way to page a list: 1-based page numbers, bounded, fetched one row past the page.

Every list endpoint takes ``page`` through :data:`PageNumber`, so a page number out of range
is a 422 with the shared body before any SQL runs (an unbounded number once overflowed the
database's integers), and asks for one row more than it shows to know whether another page
follows without counting the whole list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Query

MAX_PAGE = 1_000_000
"""The highest page number any list accepts: keeps row offsets well inside 64-bit integers."""

T = TypeVar("T")

PageNumber = Annotated[
    int, Query(ge=1, le=MAX_PAGE, description=f"1-based page number (at most {MAX_PAGE}).")
]


@dataclass(frozen=True, slots=True)
class Page:
    """Page ``number`` of a list shown ``size`` rows at a time."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def fetch(self) -> int:
        """Rows to ask for: the page and one more, which tells whether a next page exists."""
        return self.size + 1


@dataclass(frozen=True, slots=True)
class Paged(Generic[T]):
    """The rows of one page, and whether another page follows."""

    items: Sequence[T]
    has_more: bool

    @classmethod
    def of(cls, rows: Sequence[T], page: Page) -> Paged[T]:
        """Cut rows fetched with :attr:`Page.fetch` back to the page."""
        return cls(rows[: page.size], len(rows) > page.size)
