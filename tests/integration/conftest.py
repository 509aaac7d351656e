"""Fixtures integration tests share: Stripe (pointed at the session's localstripe) switched on for one test, a
client of localstripe itself, and a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from cloudplane.services.stripe_gateway import StripeGateway

API_KEY = "sk_test_cloudplane"
WEBHOOK_SECRET = "whsec_cloudplane_tests"


@pytest.fixture
def stripe_on(core: Any, localstripe: str) -> Iterator[StripeGateway]:
    """The session's core with Stripe configured (pointed at localstripe) for one test."""
    gateway = StripeGateway(core.db, API_KEY, webhook_secret=WEBHOOK_SECRET, api_base=localstripe)
    core.stripe = gateway
    yield gateway
    core.stripe = None


@pytest.fixture
async def stripe_api(localstripe: str) -> Any:
    """A client of localstripe itself, to see what Stripe holds."""
    async with httpx.AsyncClient(base_url=localstripe, auth=(API_KEY, "")) as c:
        yield c


@dataclass
class Inbox:
    """What a real SMTP server on loopback received."""

    port: int
    received: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.received.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted"

    def to(self, address: str) -> list[Message]:
        return [m for rcpt, m in self.received if address in rcpt]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[Inbox]:
    for _ in range(3):  # another process may take the free port first
        inbox = Inbox(free_port())
        controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
        try:
            controller.start()
        except OSError:
            continue
        yield inbox
        controller.stop()
        return
    pytest.fail("no SMTP server could start on a free loopback port")
