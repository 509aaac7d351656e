"""The verified-key cache: answers without I/O for KEY_CACHE_TTL_S, then asks the database again."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import update

from cloudplane.db.tables import ApiKey, utcnow
from cloudplane.domain.errors import Unauthorized
from cloudplane.services import accounts


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(accounts, "_now", clock)
    return clock


def new_key(core: Any, label: str) -> tuple[int, str]:
    user = accounts.create_user(core.db, email=f"{label}-{time.monotonic_ns()}@example.com", name="Cache Test")
    _, key = accounts.create_api_key(core.db, user_id=user.id)
    return user.id, key


def test_a_key_revoked_elsewhere_works_until_the_ttl_passes_then_not(core: Any, clock: Clock) -> None:
    user_id, key = new_key(core, "ttl")
    principal = accounts.authenticate_api_key(core.db, key)
    assert principal.user_id == user_id
    # Another process revokes it: this one does not hear of it.
    with core.db.write() as s:
        s.execute(update(ApiKey).where(ApiKey.user_id == user_id).values(revoked_at=utcnow()))

    clock.now += accounts.KEY_CACHE_TTL_S - 0.5
    assert accounts.cached_principal(key) == principal
    assert accounts.authenticate_api_key(core.db, key) == principal

    clock.now += 1
    assert accounts.cached_principal(key) is None
    with pytest.raises(Unauthorized):
        accounts.authenticate_api_key(core.db, key)


def test_forgetting_a_users_keys_keeps_the_other_users_keys(core: Any, clock: Clock) -> None:
    first_id, first_key = new_key(core, "first")
    _, second_key = new_key(core, "second")
    second = accounts.authenticate_api_key(core.db, second_key)
    accounts.authenticate_api_key(core.db, first_key)

    accounts.forget_user_keys(first_id)

    assert accounts.cached_principal(first_key) is None
    assert accounts.cached_principal(second_key) == second


def test_an_unknown_key_is_never_cached(core: Any, clock: Clock) -> None:
    key = accounts.API_KEY_PREFIX + "x" * 43
    with pytest.raises(Unauthorized):
        accounts.authenticate_api_key(core.db, key)

    assert accounts.cached_principal(key) is None
