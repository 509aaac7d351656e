"""The tenant filter is written once (services/tenancy.py): no service or workflow compares an account id with
the caller's by hand, where a forgotten or mistyped comparison would leak another account's objects."""

from __future__ import annotations

import re
from pathlib import Path

import cloudplane

SOURCES = Path(cloudplane.__file__).parent
BY_HAND = re.compile(r"account_id\s*==\s*(principal\.account_id|bindparam\(\s*[\"']account_id[\"']\s*\))")


def test_no_service_writes_the_tenant_filter_by_hand() -> None:
    offenders = [
        f"{path.relative_to(SOURCES)}:{number}: {line.strip()}"
        for folder in ("services", "workflows", "api")
        for path in sorted((SOURCES / folder).rglob("*.py"))
        if path.name != "tenancy.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BY_HAND.search(line)
    ]
    assert offenders == [], "use services.tenancy.mine/MINE:\n" + "\n".join(offenders)


def test_the_rule_sees_a_hand_written_filter() -> None:
    assert BY_HAND.search("select(App).where(App.account_id == principal.account_id)")
    assert BY_HAND.search('_servers.c.account_id == bindparam("account_id")')
    assert not BY_HAND.search("select(App).where(mine(App, principal))")
