"""SSH keys through the LetsCloud face."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from cloudplane.domain.ssh_keys import parse_public_key


def ed25519_public_key(comment: str = "me@laptop") -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{raw} {comment}"


def rsa_public_key(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


async def test_create_get_list_delete(client, tenant) -> None:
    public = ed25519_public_key()
    r = await client.post("/api/ssh-keys", json={"title": "My Laptop Key", "key": public}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["title"] == "My Laptop Key" and key["public_key"] == public
    assert key["fingerprint"] == parse_public_key(public).fingerprint and key["fingerprint"].startswith("SHA256:")

    got = await client.get(f"/api/ssh-keys/{key['id']}", headers=tenant.headers)
    assert got.json() == key
    listed = (await client.get("/api/ssh-keys", headers=tenant.headers)).json()
    assert listed["total"] == 1 and listed["ssh_keys"] == [key]

    assert (await client.delete(f"/api/ssh-keys/{key['id']}", headers=tenant.headers)).status_code == 204
    assert (await client.get(f"/api/ssh-keys/{key['id']}", headers=tenant.headers)).status_code == 404
    assert (await client.delete(f"/api/ssh-keys/{key['id']}", headers=tenant.headers)).status_code == 404


async def test_the_same_key_twice_is_409_even_with_another_comment(client, tenant) -> None:
    public = ed25519_public_key("a@b")
    assert (
        await client.post("/api/ssh-keys", json={"title": "one", "key": public}, headers=tenant.headers)
    ).status_code == 201
    again = public.rsplit(" ", 1)[0] + " other@host"
    r = await client.post("/api/ssh-keys", json={"title": "two", "key": again}, headers=tenant.headers)
    assert r.status_code == 409 and r.json()["details"]["field"] == "key"


async def test_another_account_may_hold_the_same_key(client, make_tenant) -> None:
    public = ed25519_public_key()
    for tenant in (make_tenant(), make_tenant()):
        r = await client.post("/api/ssh-keys", json={"title": "k", "key": public}, headers=tenant.headers)
        assert r.status_code == 201


async def test_weak_private_and_garbage_keys_are_422(client, tenant) -> None:
    private = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )
    cases = {
        "rsa 1024": rsa_public_key(1024),
        "private": private,
        "garbage": "ssh-ed25519 AAAAnotbase64!!",
        "two keys": ed25519_public_key() + "\n" + ed25519_public_key(),
        "dsa": "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
    }
    for name, key in cases.items():
        r = await client.post("/api/ssh-keys", json={"title": name, "key": key}, headers=tenant.headers)
        assert r.status_code == 422, (name, r.text)
        assert r.json()["code"] == "VALIDATION_ERROR" and r.json()["details"]["field"] == "key"
    assert (await client.get("/api/ssh-keys", headers=tenant.headers)).json()["total"] == 0


async def test_a_strong_rsa_key_is_accepted(client, tenant) -> None:
    r = await client.post("/api/ssh-keys", json={"title": "rsa", "key": rsa_public_key(2048)}, headers=tenant.headers)
    assert r.status_code == 201
