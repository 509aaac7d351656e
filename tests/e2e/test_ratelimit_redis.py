"""Rate limits shared through the real Redis: several OS processes hammering one key together admit exactly the
limit. They use CLOUDPLANE_TEST_REDIS_URL when set, else a redis-server the session starts (`redis_url` in
tests/conftest.py); a missing or unreachable Redis fails these tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from cloudplane.api.common.ratelimit import RateLimiter
from cloudplane.domain.errors import RateLimited

PROCESSES = 4
CALLS_PER_PROCESS = 100
# Large enough that every process is still competing when the window fills: with 50 the first process to wake
# often took nearly all of it before the others had started.
LIMIT = 200

# Each process builds its own limiter and opens its connections on a warm-up key, says it is ready, waits for
# a common start time so all compete from the first call, then fires its calls from 20 concurrent tasks and
# reports what it saw.
WORKER = """
import asyncio, json, sys, time
from cloudplane.api.common.ratelimit import RateLimiter
from cloudplane.domain.errors import RateLimited

async def main(url, prefix, key, limit, calls):
    limiter = RateLimiter(url, key_prefix=prefix)
    outcomes = {"admitted": 0, "refused": 0, "retry_after_s": []}

    async def attempts(count):
        for _ in range(count):
            try:
                await limiter.hit(key, (limit,))
            except RateLimited as error:
                outcomes["refused"] += 1
                outcomes["retry_after_s"].append(int(error.headers["Retry-After"]))
            else:
                outcomes["admitted"] += 1

    await asyncio.gather(*(limiter.hit(key + ":warm-up", ("1000/minute",)) for _ in range(20)))
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    await asyncio.sleep(start_at - time.time())
    await asyncio.gather(*(attempts(calls // 20) for _ in range(20)))
    await limiter.aclose()
    print(json.dumps(outcomes), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
"""


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis at {redis_url} is unreachable ({error}); these tests need a real Redis")
    prefix = f"cloudplane-test-{uuid.uuid4().hex}"
    yield prefix
    leftovers = list(client.scan_iter(f"{prefix}:*"))
    if leftovers:
        client.delete(*leftovers)
    client.close()
    assert not leftovers, f"the test did not clean up {leftovers}"


def test_the_session_redis_is_the_configured_one_or_its_own(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    configured = os.environ.get("CLOUDPLANE_TEST_REDIS_URL")
    if configured:
        assert redis_url == configured
        return
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        config = {**client.config_get("dir"), **client.config_get("save")}
    finally:
        client.close()
    # Started by tests/conftest.py in the session's temporary directory, writing nothing to disk.
    assert Path(config["dir"]).is_relative_to(tmp_path_factory.getbasetemp())
    assert config["save"] == ""


@pytest.fixture
async def redis_limiter(redis_url: str, key_prefix: str) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(redis_url, key_prefix=key_prefix)
    yield limiter
    await limiter.reset()
    await limiter.aclose()


async def test_processes_sharing_redis_admit_exactly_the_limit(
    redis_url: str, key_prefix: str, redis_limiter: RateLimiter
) -> None:
    key = "account:1"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, key_prefix, key, f"{LIMIT}/minute", str(CALLS_PER_PROCESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            ready = worker.stdout.readline()
            assert ready.strip() == "ready", worker.communicate()[1]
        started = time.monotonic()
        start_at = time.time() + 0.2
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{start_at}\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err
            reports.append(json.loads(out))
        elapsed_s = time.monotonic() - started
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    admitted = sum(report["admitted"] for report in reports)
    refused = sum(report["refused"] for report in reports)
    assert admitted == LIMIT, reports
    assert refused == PROCESSES * CALLS_PER_PROCESS - LIMIT
    # Every process really competed, rather than one finishing before the others started.
    assert all(report["admitted"] > 0 for report in reports), [report["admitted"] for report in reports]
    assert all(1 <= s <= 60 for report in reports for s in report["retry_after_s"])
    assert elapsed_s < 10
    # The count lives in Redis, so a fresh limiter in this process sees the window as full.
    with pytest.raises(RateLimited):
        await redis_limiter.hit(key, (f"{LIMIT}/minute",))


async def test_redis_limiter_counts_down_and_refused_requests_cost_nothing(redis_limiter: RateLimiter) -> None:
    states = [await redis_limiter.hit("account:2", ("10/hour", "3/minute")) for _ in range(3)]
    assert [(s.limit, s.remaining) for s in states if s] == [(3, 2), (3, 1), (3, 0)]
    assert all(s is not None and 0 < s.reset_epoch - time.time() <= 61 for s in states)

    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            await redis_limiter.hit("account:2", ("10/hour", "3/minute"))
    assert refused.value.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60

    hour = await redis_limiter.hit("account:2", ("10/hour",))
    assert hour is not None and hour.remaining == 6


async def test_reset_clears_only_this_limiters_prefix(
    redis_url: str, key_prefix: str, redis_limiter: RateLimiter
) -> None:
    neighbour = RateLimiter(redis_url, key_prefix=key_prefix + "-neighbour")
    try:
        await neighbour.hit("account:3", ("1/minute",))
        await redis_limiter.hit("account:3", ("1/minute",))
        await redis_limiter.reset()

        assert await redis_limiter.hit("account:3", ("1/minute",)) is not None
        with pytest.raises(RateLimited):
            await neighbour.hit("account:3", ("1/minute",))
    finally:
        await neighbour.reset()
        await neighbour.aclose()


def test_two_api_processes_together_admit_no_more_than_the_limit(redis_url: str, service_factory) -> None:
    """QUALITY.md: with Redis configured, API processes share one count per account."""

    settings = {"redis_url": redis_url, "rate_limit_key_prefix": f"cp-e2e-{uuid.uuid4().hex}"}
    first = service_factory(**settings)
    first.start()
    second = service_factory(**settings)
    second.start()
    headers = {"Authorization": f"Bearer {first.api_key}"}

    async def hammer() -> list[int]:
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            replies = await asyncio.gather(*(client.get(f"{(first, second)[i % 2].url}/api/plans") for i in range(100)))
        return [r.status_code for r in replies]

    codes = asyncio.run(hammer())
    assert codes.count(200) == 60, codes  # the free tier: 60 a minute, across both processes
    assert codes.count(429) == 40
