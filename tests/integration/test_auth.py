"""Sign-in for the CloudVPS and VibeCaaS faces: both request shapes, superset replies, tokens done right."""

from __future__ import annotations

import itertools
import time

import jwt
import pytest

from cloudplane.services.auth import AUDIENCE, ISSUER, signing_key

_n = itertools.count()


def fresh_email() -> str:
    return f"auth{next(_n)}-{time.monotonic_ns()}@example.com"


async def register(client, **body):
    body = {"email": fresh_email(), "password": "correct horse battery", **body}
    r = await client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    return body, r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_register_cloudvps_shape_answers_both_documents(client) -> None:
    body, reply = await register(client, name="John Doe")
    assert reply["success"] is True
    data = reply["data"]
    assert data["token"] == reply["access_token"] and data["expires_in"] == reply["expires_in"] == 3600
    assert data["user"]["email"] == body["email"] and data["user"]["name"] == "John Doe"
    assert data["user"]["role"] == "user" and data["user"]["id"].startswith("user-")
    assert reply["token_type"] == "bearer" and reply["refresh_token"]
    assert "password" not in str(reply) and "hash" not in str(reply)


async def test_register_vibecaas_shape_and_login_by_username(client) -> None:
    username = f"johndoe{next(_n)}"
    body, reply = await register(client, username=username, full_name="John Doe")
    assert reply["username"] == username and reply["full_name"] == "John Doe" and reply["tier"] == "free"
    r = await client.post("/api/v1/auth/login", json={"username": username, "password": body["password"]})
    assert r.status_code == 200 and r.json()["access_token"]
    me = await client.get("/api/v1/users/me", headers=bearer(r.json()["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == username and set(me.json()["quotas"]) == {
        "max_apps",
        "max_cpu",
        "max_memory",
        "max_storage",
        "gpu_enabled",
    }


async def test_oauth2_password_form(client) -> None:
    body, _ = await register(client)
    r = await client.post("/api/v1/auth/token", data={"username": body["email"], "password": body["password"]})
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "bearer" and r.json()["expires_in"] == 3600
    servers = await client.get("/api/servers", headers=bearer(r.json()["access_token"]))
    assert servers.status_code == 200, "a JWT works on every face"


@pytest.mark.parametrize("login", ["\x00", "john\x00doe", "user\x00@example.com"])
async def test_a_login_name_with_a_nul_byte_is_422_naming_it(client, login: str) -> None:
    # Found by schemathesis on PostgreSQL, whose text cannot hold NUL: it was a 500. No account can have such a
    # name, so refusing it as input tells nothing about which accounts exist.
    form = await client.post("/api/v1/auth/token", data={"username": login, "password": "0"})
    assert form.status_code == 422 and form.json()["error"]["details"]["field"] == "username", form.text
    body = await client.post("/api/v1/auth/login", json={"username": login, "password": "whatever it is"})
    assert body.status_code == 422 and body.json()["error"]["details"]["field"] == "username", body.text


async def test_duplicate_email_is_409_in_the_envelope(client) -> None:
    body, _ = await register(client)
    r = await client.post("/api/v1/auth/register", json={"email": body["email"], "password": "another password"})
    assert r.status_code == 409
    assert r.json()["success"] is False and r.json()["error"]["code"] == "CONFLICT"
    assert r.json()["error"]["details"]["field"] == "email"


async def test_weak_password_and_bad_email_are_422(client) -> None:
    r = await client.post("/api/v1/auth/register", json={"email": fresh_email(), "password": "short"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "password"
    r = await client.post("/api/v1/auth/register", json={"email": "not-an-email", "password": "long enough pw"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "email"
    r = await client.post(
        "/api/v1/auth/register", json={"email": fresh_email(), "password": "long enough pw", "role": "admin"}
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "role"


async def test_unknown_user_and_wrong_password_get_the_same_answer(client) -> None:
    body, _ = await register(client)
    wrong = await client.post("/api/v1/auth/login", json={"email": body["email"], "password": "wrong password"})
    unknown = await client.post("/api/v1/auth/login", json={"email": fresh_email(), "password": "wrong password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_refresh_rotates_and_reuse_revokes_the_family(client) -> None:
    _, reply = await register(client)
    first_refresh = reply["refresh_token"]
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first_refresh})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first_refresh
    assert (await client.get("/api/v1/users/me", headers=bearer(second["access_token"]))).status_code == 200

    reused = await client.post("/api/v1/auth/refresh", headers=bearer(first_refresh))
    assert reused.status_code == 401 and "already used" in reused.json()["error"]["message"]
    # The whole family is gone: the newer refresh token and its access token too.
    assert (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    ).status_code == 401
    assert (await client.get("/api/v1/users/me", headers=bearer(second["access_token"]))).status_code == 401


async def test_refresh_with_the_access_token_as_bearer_as_the_documents_show(client) -> None:
    """Both documents: `POST /auth/refresh` with `Authorization: Bearer {token}` and no body."""
    _, reply = await register(client)
    r = await client.post("/api/v1/auth/refresh", headers=bearer(reply["access_token"]))
    assert r.status_code == 200, r.text
    renewed = r.json()
    assert renewed["success"] is True and renewed["data"]["token"] == renewed["access_token"]
    assert renewed["access_token"] != reply["access_token"] and renewed["refresh_token"] != reply["refresh_token"]
    assert (await client.get("/api/v1/users/me", headers=bearer(renewed["access_token"]))).status_code == 200
    # The session's earlier refresh token gave way to the new one; the session itself lives on.
    old = await client.post("/api/v1/auth/refresh", json={"refresh_token": reply["refresh_token"]})
    assert old.status_code == 401 and "revoked" in old.json()["error"]["message"]
    assert (await client.get("/api/v1/users/me", headers=bearer(renewed["access_token"]))).status_code == 200
    again = await client.post("/api/v1/auth/refresh", json={"refresh_token": renewed["refresh_token"]})
    assert again.status_code == 200


async def test_refresh_with_the_access_token_of_an_ended_session_is_401(client) -> None:
    _, reply = await register(client)
    assert (await client.post("/api/v1/auth/logout", headers=bearer(reply["access_token"]))).status_code == 200
    r = await client.post("/api/v1/auth/refresh", headers=bearer(reply["access_token"]))
    assert r.status_code == 401 and r.json()["success"] is False


async def test_logout_ends_the_session(client) -> None:
    _, reply = await register(client)
    access = reply["access_token"]
    r = await client.post("/api/v1/auth/logout", headers=bearer(access))
    assert r.status_code == 200 and r.json()["success"] is True
    assert r.json()["data"] == {"signed_out": True}
    assert (await client.get("/api/v1/users/profile", headers=bearer(access))).status_code == 401
    assert (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": reply["refresh_token"]})
    ).status_code == 401


async def test_password_change_revokes_sessions(client) -> None:
    body, reply = await register(client)
    access = reply["access_token"]
    r = await client.post(
        "/api/v1/users/change-password",
        json={"current_password": "wrong one", "new_password": "a new password"},
        headers=bearer(access),
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "current_password"
    r = await client.post(
        "/api/v1/users/change-password",
        json={"current_password": body["password"], "new_password": "a new password"},
        headers=bearer(access),
    )
    assert r.status_code == 200 and r.json()["data"] == {"password_changed": True, "sessions_ended": 1}
    assert (await client.get("/api/v1/users/profile", headers=bearer(access))).status_code == 401
    old = await client.post("/api/v1/auth/login", json={"email": body["email"], "password": body["password"]})
    new = await client.post("/api/v1/auth/login", json={"email": body["email"], "password": "a new password"})
    assert old.status_code == 401 and new.status_code == 200


def _forge(core, claims: dict, key: str | None = None, algorithm: str = "HS256") -> str:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, "typ": "access", "jti": "j", "sid": "s"}
    return jwt.encode({**base, **claims}, key or signing_key(core.db), algorithm=algorithm)


@pytest.mark.parametrize(
    "case",
    ["alg_none", "wrong_audience", "wrong_issuer", "expired", "refresh_as_access", "bad_signature", "no_typ"],
)
async def test_bad_tokens_are_401(client, core, case) -> None:
    _, reply = await register(client)
    good = jwt.decode(reply["access_token"], options={"verify_signature": False})
    claims = {"sub": good["sub"], "sid": good["sid"], "jti": good["jti"]}
    now = int(time.time())
    token = {
        "alg_none": lambda: jwt.encode({**good}, None, algorithm="none"),
        "wrong_audience": lambda: _forge(core, {**claims, "aud": "someone-else"}),
        "wrong_issuer": lambda: _forge(core, {**claims, "iss": "evil"}),
        "expired": lambda: _forge(core, {**claims, "iat": now - 100, "exp": now - 1}),
        "refresh_as_access": lambda: reply["refresh_token"],
        "bad_signature": lambda: _forge(core, claims, key="not-the-key-but-long-enough-for-hmac"),
        "no_typ": lambda: jwt.encode(
            {k: v for k, v in {**good}.items() if k != "typ"}, signing_key(core.db), algorithm="HS256"
        ),
    }[case]()
    r = await client.get("/api/v1/users/me", headers=bearer(token))
    assert r.status_code == 401, (case, r.text)
    assert (await client.get("/api/v1/users/me", headers=bearer(_forge(core, claims)))).status_code == 200


@pytest.mark.parametrize("sub", ["abc", "٣", "１", "1.0", "0", "-1", " 1", str(2**63), ""])
async def test_a_token_whose_sub_is_not_an_ascii_user_id_is_401(client, core, sub: str) -> None:
    _, reply = await register(client)
    good = jwt.decode(reply["access_token"], options={"verify_signature": False})
    token = _forge(core, {"sub": sub, "sid": good["sid"], "jti": good["jti"]})
    r = await client.get("/api/v1/users/me", headers=bearer(token))
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "UNAUTHORIZED"


async def test_a_token_whose_session_belongs_to_another_user_is_401(client, core) -> None:
    _, mine = await register(client)
    _, theirs = await register(client)
    me = jwt.decode(mine["access_token"], options={"verify_signature": False})
    them = jwt.decode(theirs["access_token"], options={"verify_signature": False})
    # My user id with their live session, and their user id with my live session: each names a real user and a
    # real session, just not together.
    for sub, sid in [(me["sub"], them["sid"]), (them["sub"], me["sid"])]:
        r = await client.get("/api/v1/users/me", headers=bearer(_forge(core, {"sub": sub, "sid": sid, "jti": "x1"})))
        assert r.status_code == 401, r.text
        out = await client.post("/api/v1/auth/logout", headers=bearer(_forge(core, {"sub": sub, "sid": sid})))
        assert out.status_code in (200, 401), out.text
    # Neither sign-out above ended a session of the other user.
    for reply in (mine, theirs):
        assert (await client.get("/api/v1/users/me", headers=bearer(reply["access_token"]))).status_code == 200
    # A refresh token presented under another user's id is refused too, and stays usable by its owner.
    refresh = jwt.decode(theirs["refresh_token"], options={"verify_signature": False})
    forged = _forge(core, {"sub": me["sub"], "sid": refresh["sid"], "jti": refresh["jti"], "typ": "refresh"})
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": forged})).status_code == 401
    assert (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": theirs["refresh_token"]})
    ).status_code == 200


async def test_access_token_is_not_a_refresh_token(client) -> None:
    _, reply = await register(client)
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": reply["access_token"]})
    assert r.status_code == 401


async def test_api_keys_made_listed_and_revoked_through_the_api(client) -> None:
    _, reply = await register(client)
    headers = bearer(reply["access_token"])
    r = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert r.status_code == 201
    made = r.json()["data"]
    assert made["key"].startswith("cp_") and made["name"] == "ci"
    assert (await client.get("/api/servers", headers=bearer(made["key"]))).status_code == 200
    listed = (await client.get("/api/v1/api-keys", headers=headers)).json()["data"]
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0] and "hash" not in str(listed)
    assert (await client.delete(f"/api/v1/api-keys/{made['id']}", headers=headers)).status_code == 204
    assert (await client.get("/api/servers", headers=bearer(made["key"]))).status_code == 401


async def test_profiles_read_and_update(client) -> None:
    _, reply = await register(client, name="Old Name")
    headers = bearer(reply["access_token"])
    profile = (await client.get("/api/v1/users/profile", headers=headers)).json()
    assert profile["success"] and profile["data"]["name"] == "Old Name" and profile["data"]["status"] == "active"
    r = await client.put("/api/v1/users/profile", json={"name": "Jane Doe"}, headers=headers)
    assert r.json()["data"]["name"] == "Jane Doe"
    r = await client.put("/api/v1/users/me", json={"full_name": "John Smith"}, headers=headers)
    assert r.status_code == 200 and r.json()["full_name"] == "John Smith"
    r = await client.put("/api/v1/users/me", json={"role": "admin"}, headers=headers)
    assert r.status_code == 422
    assert (await client.get("/api/v1/users/me", headers=headers)).json()["role"] == "user"


async def test_admin_routes_are_403_to_users_and_work_for_admins(client, make_tenant) -> None:
    user, admin = make_tenant(), make_tenant("admin")
    assert (await client.get("/api/v1/admin/users", headers=user.headers)).status_code == 403
    listed = await client.get("/api/v1/admin/users", headers=admin.headers)
    assert listed.status_code == 200 and listed.json()["pagination"]["total"] >= 2
    target = f"user-{user.principal.user_id}"
    forbidden = await client.put(f"/api/v1/admin/users/{target}/tier", json={"tier": "pro"}, headers=user.headers)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "FORBIDDEN"
    r = await client.put(f"/api/v1/admin/users/{target}/tier", json={"tier": "pro"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["tier"] == "pro"
    assert (
        await client.put(f"/api/v1/admin/users/{target}/tier", json={"tier": "gold"}, headers=admin.headers)
    ).status_code == 422
    assert (await client.post(f"/api/v1/admin/users/{target}/suspend", headers=user.headers)).status_code == 403
    r = await client.post(f"/api/v1/admin/users/{target}/suspend", headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "suspended"
    suspended = await client.get("/api/servers", headers=user.headers)
    assert suspended.status_code == 403 and "suspended" in suspended.json()["error"]
    assert (await client.post(f"/api/v1/admin/users/{target}/activate", headers=admin.headers)).status_code == 200
    assert (await client.get("/api/servers", headers=user.headers)).status_code == 200
    assert (await client.post("/api/v1/admin/users/user-999999999/suspend", headers=admin.headers)).status_code == 404


async def test_login_rehashes_a_password_stored_with_weaker_parameters(client, core) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy import select, update

    from cloudplane.db.tables import User

    body, _ = await register(client)
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(body["password"])
    with core.db.write() as s:
        s.execute(update(User).where(User.email == body["email"]).values(password_hash=weak))
    r = await client.post("/api/v1/auth/login", json={"email": body["email"], "password": body["password"]})
    assert r.status_code == 200
    with core.db.read() as s:
        stored = s.scalar(select(User.password_hash).where(User.email == body["email"]))
    assert stored != weak and "m=19456,t=2,p=1" in stored and stored.startswith("$argon2id$")
