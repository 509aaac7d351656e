"""The workflows of a server's network: applying its firewall rules to its machine, attaching an extra address."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import bindparam, delete, select

from cloudplane.db.tables import FirewallRule, IpAddress
from cloudplane.domain.errors import ProviderError
from cloudplane.domain.states import ServerStatus
from cloudplane.providers import base
from cloudplane.providers.base import pacing_of
from cloudplane.workflows import steps
from cloudplane.workflows.kinds import register
from cloudplane.workflows.steps import Changes, Job

_RULES = (
    select(
        FirewallRule.action, FirewallRule.protocol, FirewallRule.source, FirewallRule.port_from, FirewallRule.port_to
    )
    .where(FirewallRule.server_id == bindparam("b_id"))
    .order_by(FirewallRule.position)
)


def stored_rules(job: Job) -> tuple[base.FirewallRule, ...]:
    with steps.core().db.connect() as conn:
        return tuple(base.FirewallRule(*row) for row in conn.execute(_RULES, {"b_id": job.server_id}))


async def _machine_of(job: Job) -> str | None:
    """The server's machine; once made, when the server is still being created. None: it has none (deleted, or
    its create failed), so there is nothing to filter."""
    assert job.provider is not None
    pacing = pacing_of(steps.compute(job.provider))
    deadline = time.monotonic() + pacing.timeout_s
    while True:
        server = await steps.db(steps.server_now, job)
        if server.deleted_at is not None or server.provider_ref is not None:
            return None if server.deleted_at is not None else server.provider_ref
        if server.status != ServerStatus.CREATING:
            return None
        if time.monotonic() > deadline:
            raise ProviderError("Timed out waiting for the server to be created", retryable=False)
        await asyncio.sleep(pacing.poll_interval_s)


async def _firewall(job: Job) -> None:
    """Apply the server's rules as they are now, again until what was applied is what is stored: of two changes
    applied concurrently, the last to finish applies the newest rules."""
    assert job.provider is not None
    ref = await _machine_of(job)
    applied = None
    while ref is not None:
        rules = await steps.db(stored_rules, job)
        if rules == applied:
            break
        await steps.set_machine_firewall(job.provider, ref, rules)
        applied = rules
    await steps.succeed(job)


async def _firewall_failed(job: Job, message: str) -> Changes:
    """The rules stay stored (GET shows them) and the operation says why they were not applied; the server's own
    state is not the firewall's to change."""
    return Changes()


register("firewall", _firewall, _firewall_failed)


async def _attach_ip(job: Job) -> None:
    """Give the server's machine the address the request took for it (once the machine is made); a re-run gives it
    again, which changes nothing. A server deleted meanwhile has no machine to give it to: its delete releases it."""
    assert job.provider is not None
    ref = await _machine_of(job)
    if ref is not None:
        await steps.add_machine_address(job.provider, ref, job.params["address"])
    await steps.succeed(job)


def release_address(job: Job) -> None:
    with steps.core().db.begin() as conn:
        conn.execute(
            delete(IpAddress).where(IpAddress.server_id == job.server_id, IpAddress.address == job.params["address"])
        )


async def _attach_ip_failed(job: Job, message: str) -> Changes:
    """The address goes back to the pool: the server does not keep an address its machine never got."""
    if job.params.get("address"):
        await steps.db(release_address, job)
    return Changes()


register("attach_ip", _attach_ip, _attach_ip_failed)
