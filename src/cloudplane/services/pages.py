"""A page of a list, as every service returns one, and how every list reads one.

A page is found in two steps: the ids of its rows, from the filter and the order alone, then those rows. With an
index that covers the filter and the order (db/tables.py has one for each order a face offers), the first step
reads the index only, never the table: skipping to page 5000 steps over index entries, not rows. The total is
counted from the same index, first: a page past the middle of the list is then read from the list's far end (the
index walked backwards, `window`), so no page steps over more than half the entries and the last page costs what
the first does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, TypeVarTuple

from sqlalchemy import ColumnElement, FromClause, Select, UnaryExpression, func, select
from sqlalchemy.sql import operators

T = TypeVar("T")
Row = TypeVarTuple("Row")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int
    page: int
    per_page: int


@dataclass(frozen=True)
class Window:
    """Where a page's rows are in its list: `limit` rows after skipping `offset`, counted from the list's start, or
    from its end when `from_end` (the order reversed)."""

    limit: int
    offset: int
    from_end: bool


def window(total: int, page: int, per_page: int) -> Window:
    """The cheaper way to a page of a list of `total` rows: from the start up to the middle, from the end after."""
    start = offset_of(page, per_page)
    if start * 2 <= total:
        return Window(per_page, start, from_end=False)
    end = min(total, start + per_page)
    return Window(max(0, end - start), total - end, from_end=True)


def _reversed(item: Any) -> Any:
    """An ORDER BY item the other way round (each database puts NULLs at the other end too, so the reversal is
    exact)."""
    if isinstance(item, UnaryExpression) and item.modifier is operators.desc_op:
        return item.element.asc()
    if isinstance(item, UnaryExpression) and item.modifier is operators.asc_op:
        return item.element.desc()
    return item.desc()


def paged(
    rows: Select[*Row],
    key: Any,
    where: Sequence[ColumnElement[bool]],
    order: Sequence[Any],
    *,
    limit: Any,
    offset: Any,
    from_end: bool = False,
) -> Select[*Row]:
    """`rows` (a select of the listed rows, with any joins it needs) for one page: the page's `key`s (the table's
    primary key), filtered by `where` and ordered by `order`, from `offset` on, `limit` of them (counted from the
    end of the list when `from_end`, see `window`); then the rows themselves, in `order`. `limit` and `offset` are
    numbers or bound parameters."""
    walk = [_reversed(item) for item in order] if from_end else order
    ids = select(key).where(*where).order_by(*walk).limit(limit).offset(offset).subquery("page")
    return rows.join(ids, key == ids.c[key.key]).order_by(*order)


def paged_window(
    rows: Select[*Row], key: Any, where: Sequence[ColumnElement[bool]], order: Sequence[Any], at: Window
) -> Select[*Row]:
    """`paged` for the page `at` names."""
    return paged(rows, key, where, order, limit=at.limit, offset=at.offset, from_end=at.from_end)


def counted(table: FromClause, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
    """How many rows `where` admits: the list's total, counted from the index that serves its pages."""
    return select(func.count()).select_from(table).where(*where)


def offset_of(page: int, per_page: int) -> int:
    return (page - 1) * per_page
