"""A page past the middle of a list is read from the list's far end (services/pages.py `window`): every page, read
either way, holds the rows the whole list has at its place, in the list's order, under every order a face offers."""

from __future__ import annotations

import pytest

from cloudplane.services.pages import Window, window
from tests.conftest import eventually
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (1, Window(2, 0, from_end=False)),
        (2, Window(2, 2, from_end=False)),
        (3, Window(2, 1, from_end=True)),  # rows 4 and 5 of 0..6: skip row 6 from the end, take 2
        (4, Window(1, 0, from_end=True)),  # row 6 alone
        (5, Window(0, 0, from_end=True)),  # past the end: nothing
    ],
)
def test_a_page_past_the_middle_is_counted_from_the_end(page: int, expected: Window) -> None:
    assert window(7, page, 2) == expected


def pages_of(items: list, per_page: int) -> list[list]:
    return [items[i : i + per_page] for i in range(0, len(items), per_page)] + [[]]


async def test_every_page_of_every_server_order_is_the_lists_own(client, tenant, create_running_server) -> None:
    # Seven servers, two of them stopped, labels in neither creation nor id order, one label repeated.
    labels = ["delta", "Alpha", "echo", "bravo", "alpha", "charlie", "foxtrot"]
    made = [await create_running_server(tenant, label=label) for label in labels]
    for server in made[1:3]:
        r = await client.post(f"/api/servers/{server['id']}/stop", headers=tenant.headers)
        assert r.status_code == 200, r.text

        async def get(server_id=server["id"]) -> dict:
            return (await client.get(f"/api/servers/{server_id}", headers=tenant.headers)).json()

        await eventually(get, lambda s: s["status"] == "stopped" and s["task_state"] is None)
    for sort in ("created_at", "name", "status"):
        for order in ("asc", "desc"):
            for status in (None, "running"):
                query = f"sort={sort}&order={order}" + (f"&status={status}" if status else "")
                whole = (await client.get(f"/api/v1/vps?{query}&limit=100", headers=tenant.headers)).json()
                ids = [v["id"] for v in whole["data"]]
                assert len(ids) == (5 if status else 7)
                for number, expected in enumerate(pages_of(ids, 2), start=1):
                    r = await client.get(f"/api/v1/vps?{query}&limit=2&page={number}", headers=tenant.headers)
                    got = [v["id"] for v in r.json()["data"]]
                    assert got == expected, (query, number)
                    assert r.json()["pagination"]["total"] == len(ids)
    letscloud = [
        s["id"] for s in (await client.get("/api/servers?per_page=100", headers=tenant.headers)).json()["servers"]
    ]
    for number, expected in enumerate(pages_of(letscloud, 3), start=1):
        r = await client.get(f"/api/servers?per_page=3&page={number}", headers=tenant.headers)
        assert [s["id"] for s in r.json()["servers"]] == expected


async def test_every_page_of_ssh_keys_and_operations_is_the_lists_own(client, tenant) -> None:
    for i in range(5):
        body = {"title": f"key-{i}", "key": ed25519_public_key(f"k{i}")}
        r = await client.post("/api/ssh-keys", json=body, headers=tenant.headers)
        assert r.status_code == 201, r.text
    ids = [k["id"] for k in (await client.get("/api/ssh-keys?per_page=100", headers=tenant.headers)).json()["ssh_keys"]]
    assert len(ids) == 5
    for number, expected in enumerate(pages_of(ids, 2), start=1):
        r = await client.get(f"/api/ssh-keys?per_page=2&page={number}", headers=tenant.headers)
        assert [k["id"] for k in r.json()["ssh_keys"]] == expected, number
