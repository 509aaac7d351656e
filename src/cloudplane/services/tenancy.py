"""The tenant filter, written once: every query of an account's objects says `mine(Model, principal)` (or, for a
prebuilt Core statement, `MINE(table)` bound with `tenant(principal)`), never the comparison by hand."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import ColumnElement, FromClause, bindparam

from cloudplane.services.accounts import Principal


def mine(model: type[Any], principal: Principal) -> ColumnElement[bool]:
    """Rows of `model` (any table with an `account_id`) that belong to the caller's account."""
    return cast(ColumnElement[bool], model.account_id == principal.account_id)


def MINE(table: FromClause) -> ColumnElement[bool]:  # noqa: N802 - a clause for prebuilt statements, like a constant
    """The tenant filter of a prebuilt Core statement; execute it with `tenant(principal)` among its parameters."""
    # Not "account_id": that name is the column's own in the SET clause of an UPDATE.
    return table.c.account_id == bindparam("tenant_account_id")


def tenant(principal: Principal) -> dict[str, int]:
    """The parameters a statement built with `MINE` needs."""
    return {"tenant_account_id": principal.account_id}
