"""A page of a list, as every service returns one, and how every list reads one.

A page is found in two steps: the ids of its rows, from the filter and the order alone, then those rows. With an
index that covers the filter and the order (db/tables.py has one for each order a face offers), the first step
reads the index only, never the table: skipping to page 5000 steps over index entries, not rows, so the last page
costs about what the first does. The total is counted from the same index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, TypeVarTuple

from sqlalchemy import ColumnElement, FromClause, Select, func, select

T = TypeVar("T")
Row = TypeVarTuple("Row")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int
    page: int
    per_page: int


def paged(
    rows: Select[*Row],
    key: Any,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[Any],
    *,
    limit: Any,
    offset: Any,
) -> Select[*Row]:
    """`rows` (a select of the listed rows, with any joins it needs) for one page: the page's `key`s (the table's
    primary key), filtered by `where` and ordered by `order`, from `offset` on, `limit` of them; then the rows
    themselves, in the same order. `limit` and `offset` are numbers or bound parameters."""
    ids = select(key).where(*where).order_by(*order).limit(limit).offset(offset).subquery("page")
    return rows.join(ids, key == ids.c[key.key]).order_by(*order)


def counted(table: FromClause, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
    """How many rows `where` admits: the list's total, counted from the index that serves its pages."""
    return select(func.count()).select_from(table).where(*where)


def offset_of(page: int, per_page: int) -> int:
    return (page - 1) * per_page
