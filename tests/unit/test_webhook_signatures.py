"""Webhook signatures against the references (the CloudVPS document's function, the `standardwebhooks` package), and
the address rules of the outbound URL guard."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from cloudplane.domain.errors import ValidationFailed
from cloudplane.services import outbound, webhooks

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "tests" / "e2e" / "examples" / "verify_webhook_signature.js"


def seed_document() -> Path | None:
    """The CloudVPS Pro document, in shared/seeds beside the repository (or beside a worktree's parent)."""
    for parent in ROOT.parents:
        found = sorted((parent / "shared" / "seeds").glob("002_*.txt"))
        if found:
            return found[0]
    return None


def test_the_verifier_runs_the_documents_function_verbatim() -> None:
    document = seed_document()
    if document is None:
        pytest.skip("shared/seeds is not beside this checkout")
    text = document.read_text()
    section = text[text.index("### Webhook Security") :]
    snippet = section[section.index("```javascript") + len("```javascript\n") : section.index("```\n", 20)]
    assert snippet.strip() in VERIFIER.read_text()


def test_the_hex_signature_is_hmac_sha256_of_the_raw_body_keyed_with_the_secret_as_shown() -> None:
    secret, body = webhooks.new_secret(), b'{"event":"vps.created","data":{"plan":"Professional VPS"}}'
    assert webhooks.signature_hex(secret, body) == hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_the_standard_signature_is_what_the_standard_library_makes_and_verifies() -> None:
    secret, body = webhooks.new_secret(), '{"event":"user.registered","data":{"name":"Zoë"}}'.encode()
    now = int(datetime.now(UTC).timestamp())
    headers = webhooks.signed_headers(secret, "evt-1", "user.registered", body, now)
    reference = Webhook(secret)
    assert headers["webhook-signature"] == reference.sign("evt-1", datetime.fromtimestamp(now, UTC), body)
    assert reference.verify(body, headers)["data"]["name"] == "Zoë"
    assert headers[webhooks.SIGNATURE_HEADER] == webhooks.signature_hex(secret, body)


def test_secrets_are_random_and_in_the_standard_form() -> None:
    made = {webhooks.new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(s.startswith("whsec_") and len(Webhook(s)._whsecret) == 32 for s in made)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("64:ff9b::5db8:d70e", True),  # NAT64 of a public address
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("203.0.113.7", False),  # documentation range
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b:1::a00:1", False),
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert outbound.is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "url",
    ["http://x.example/", "https://u:p@x.example/", "https://x.example/#f", "gopher://x.example/", "https:///path"],
)
def test_syntax_refusals_name_the_field(url: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        outbound.check_syntax(url, allow_private=False)
    assert refused.value.details["field"] == "url"


def test_plain_http_only_when_private_targets_are_allowed() -> None:
    assert outbound.check_syntax("http://127.0.0.1:8080/h", allow_private=True).port == 8080
