"""Dependencies every face uses: the Core, the calling principal, pagination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from cloudplane.core import Core
from cloudplane.domain.errors import Unauthorized
from cloudplane.services.accounts import Principal, authenticate_api_key


def get_core(request: Request) -> Core:
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]


def current_principal(request: Request, core: CoreDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("Missing API key: send `Authorization: Bearer <your API key>`")
    return authenticate_api_key(core.db, credentials.strip())


PrincipalDep = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class Pagination:
    page: int
    per_page: int


def pagination(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    per_page: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
) -> Pagination:
    return Pagination(page=page, per_page=per_page)


PageDep = Annotated[Pagination, Depends(pagination)]
