"""Forwarded headers against a real `cloudplane serve`: by default nobody picks the address the per-IP sign-in
limit counts; only proxies named in CLOUDPLANE_TRUSTED_PROXIES are believed."""

from __future__ import annotations

import httpx


def remaining_after_sign_ins(url: str, forwarded_for: list[str]) -> list[int]:
    """X-RateLimit-Remaining of the per-IP sign-in limit after one failed sign-in per X-Forwarded-For value."""
    seen = []
    for index, address in enumerate(forwarded_for):
        r = httpx.post(
            f"{url}/api/v1/auth/login",
            json={"email": f"nobody{index}@example.com", "password": "wrong password"},
            headers={"X-Forwarded-For": address, "X-Forwarded-Proto": "https"},
            timeout=10,
        )
        assert r.status_code == 401, r.text
        seen.append(int(r.headers["x-ratelimit-remaining"]))
    return seen


def test_by_default_x_forwarded_for_does_not_change_the_counted_address(service_factory) -> None:
    service = service_factory(simulator_time_scale="0")
    service.start()
    # Each request claims another address, yet all count against 127.0.0.1: one budget going down.
    assert remaining_after_sign_ins(service.url, ["203.0.113.1", "203.0.113.2", "198.51.100.7"]) == [99, 98, 97]


def test_a_named_proxy_is_believed(service_factory) -> None:
    service = service_factory(simulator_time_scale="0", trusted_proxies="127.0.0.1, ::1")
    service.start()
    # Through the named proxy, each client address has a budget of its own.
    assert remaining_after_sign_ins(service.url, ["203.0.113.1", "203.0.113.2", "203.0.113.1"]) == [99, 99, 98]
