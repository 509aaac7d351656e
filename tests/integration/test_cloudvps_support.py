"""CloudVPS Pro's support tickets: the document's routes and shapes, the status machine, tenancy (tickets, files and
vps_id), attachments (10 MiB counted while decoding, type from the bytes), the staff side under /admin/tickets, and
mail through a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from cloudplane.db.tables import Event, MailOutbox, TicketAttachment, utcnow
from cloudplane.domain.attachments import MAX_ATTACHMENT_BYTES
from cloudplane.services import mail
from tests.conftest import Tenant
from tests.integration.conftest import Inbox, free_port
from tests.integration.test_cloudvps_vps import V1, api, cloudvps_plans, create_running_vps, vps_app

__all__ = ["api", "cloudvps_plans", "vps_app"]  # fixtures, used by name

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
TICKET = {
    "subject": "VPS Performance Issues",
    "description": "My VPS has been running slowly since yesterday...",
    "priority": "high",
    "category": "technical",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def open_ticket(api: httpx.AsyncClient, tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    r = await api.post(f"{V1}/support/tickets", json={**TICKET, **overrides}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def post_message(api: httpx.AsyncClient, who: Tenant, url: str, text: str, **body: Any) -> httpx.Response:
    return await api.post(url, json={"message": text, **body}, headers=who.headers)


def ticket_events(core: Any, ticket_id: str) -> list[tuple[str, dict[str, Any]]]:
    with core.db.read() as s:
        rows = s.execute(
            select(Event.type, Event.data)
            .where(Event.target_type == "ticket", Event.target_id == ticket_id.removeprefix("ticket-"))
            .order_by(Event.seq)
        ).all()
    return [(t, dict(d)) for t, d in rows]


async def test_a_ticket_is_opened_listed_read_answered_and_closed(api, make_tenant, core) -> None:
    owner, admin = make_tenant(), make_tenant("admin")
    vps = await create_running_vps(api, owner)
    r = await api.post(f"{V1}/support/tickets", json={**TICKET, "vps_id": vps["id"]}, headers=owner.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True and body["message"] == "Ticket created"
    ticket = body["data"]
    assert ticket["id"].startswith("ticket-") and ticket["vps_id"] == vps["id"]
    assert (ticket["subject"], ticket["status"], ticket["priority"], ticket["category"]) == (
        "VPS Performance Issues", "open", "high", "technical",
    )  # fmt: skip
    assert ticket["description"] == TICKET["description"] and ticket["message_count"] == 1
    assert ticket["user_id"] == f"user-{owner.principal.user_id}" and ticket["assigned_to"] is None
    [first] = ticket["messages"]
    assert first["message"] == TICKET["description"] and first["author"]["role"] == "user"

    listed = (await api.get(f"{V1}/support/tickets", headers=owner.headers)).json()
    assert [t["id"] for t in listed["data"]] == [ticket["id"]]
    assert set(listed["data"][0]) >= {"id", "subject", "status", "priority", "category", "created_at",
                                      "updated_at", "message_count"}  # fmt: skip
    assert listed["pagination"] == {"page": 1, "limit": 20, "total": 1, "has_next": False, "has_prev": False}

    r = await post_message(api, owner, f"{V1}/support/tickets/{ticket['id']}/messages", "I tried restarting.")
    assert r.status_code == 201, r.text
    assert r.json()["data"]["message"] == "I tried restarting." and r.json()["ticket"]["message_count"] == 2
    r = await post_message(api, admin, f"{V1}/admin/tickets/{ticket['id']}/messages", "Looking into it.")
    assert r.status_code == 201, r.text
    staff = r.json()["data"]
    assert staff["is_staff"] is True and staff["author"] == {
        "id": f"user-{admin.principal.user_id}", "name": "Test User", "role": "staff",
    }  # fmt: skip
    assert r.json()["ticket"]["status"] == "in-progress"  # staff answering an open ticket take it in hand

    detail = (await api.get(f"{V1}/support/tickets/{ticket['id']}", headers=owner.headers)).json()["data"]
    assert [m["message"] for m in detail["messages"]] == [TICKET["description"], "I tried restarting.",
                                                           "Looking into it."]  # fmt: skip
    assert detail["message_count"] == 3 and detail["status"] == "in-progress"

    r = await api.put(f"{V1}/support/tickets/{ticket['id']}", json={"status": "closed"}, headers=owner.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "closed", r.text
    assert [t for t, _ in ticket_events(core, ticket["id"])] == [
        "ticket.created", "ticket.replied", "ticket.replied", "ticket.status_changed", "ticket.status_changed",
    ]  # fmt: skip
    assert ticket_events(core, ticket["id"])[-1][1] == {"from": "in-progress", "to": "closed", "by": "owner"}


async def test_lists_filter_by_status_and_priority_and_page(api, tenant) -> None:
    made = [await open_ticket(api, tenant, subject=f"t{i}", priority=p) for i, p in enumerate(["low", "high", "high"])]
    await api.put(f"{V1}/support/tickets/{made[0]['id']}", json={"status": "resolved"}, headers=tenant.headers)

    async def ids(query: str) -> list[str]:
        r = await api.get(f"{V1}/support/tickets?{query}", headers=tenant.headers)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["data"]]

    newest_first = [t["id"] for t in reversed(made)]
    assert await ids("") == newest_first
    assert await ids("priority=high") == newest_first[:2]
    assert await ids("status=resolved") == [made[0]["id"]]
    assert await ids("status=open&priority=high") == newest_first[:2]
    assert await ids("status=in-progress") == []
    page2 = (await api.get(f"{V1}/support/tickets?page=2&limit=2", headers=tenant.headers)).json()
    assert [t["id"] for t in page2["data"]] == newest_first[2:]
    assert page2["pagination"] == {"page": 2, "limit": 2, "total": 3, "has_next": False, "has_prev": True}
    r = await api.get(f"{V1}/support/tickets?status=pending", headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "status", r.text


async def test_status_moves_follow_the_table_and_reopen_works(api, make_tenant) -> None:
    owner, admin = make_tenant(), make_tenant("admin")
    ticket = await open_ticket(api, owner)
    url, admin_url = f"{V1}/support/tickets/{ticket['id']}", f"{V1}/admin/tickets/{ticket['id']}"

    async def owner_sets(status: str) -> httpx.Response:
        return await api.put(url, json={"status": status}, headers=owner.headers)

    r = await owner_sets("in-progress")  # only staff take a ticket in hand
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "CONFLICT" and error["details"]["field"] == "status"
    assert error["details"]["allowed"] == ["resolved", "closed"] and "by its owner" in error["message"]

    r = await api.put(admin_url, json={"status": "resolved"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "resolved", r.text
    # Writing on a resolved ticket reopens it.
    r = await post_message(api, owner, f"{url}/messages", "Still slow.")
    assert r.status_code == 201 and r.json()["ticket"]["status"] == "open", r.text

    assert (await owner_sets("closed")).json()["data"]["status"] == "closed"
    r = await post_message(api, owner, f"{url}/messages", "Hello?")
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "status", r.text
    r = await post_message(api, admin, f"{admin_url}/messages", "Hello?")
    assert r.status_code == 409, r.text
    r = await owner_sets("resolved")
    assert r.status_code == 409 and r.json()["error"]["details"]["allowed"] == ["open"], r.text
    r = await owner_sets("open")  # reopen
    assert r.status_code == 200 and r.json()["data"]["status"] == "open", r.text
    r = await api.put(url, json={"priority": "urgent"}, headers=owner.headers)
    assert r.json()["data"]["priority"] == "urgent"
    r = await api.put(url, json={"status": "pending"}, headers=owner.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "status", r.text
    r = await api.put(url, json={"status": "open", "owner_id": 1}, headers=owner.headers)
    assert r.status_code == 422, r.text


async def test_another_accounts_tickets_files_and_servers_are_not_found(api, make_tenant) -> None:
    owner, intruder, admin = make_tenant(), make_tenant(), make_tenant("admin")
    vps = await create_running_vps(api, owner)
    ticket = await open_ticket(api, owner, attachments=[{"filename": "s.png", "data": b64(PNG)}])
    file_url = ticket["messages"][0]["attachments"][0]["url"]
    url = f"{V1}/support/tickets/{ticket['id']}"
    before = (await api.get(url, headers=owner.headers)).json()
    for method, target, body in [
        ("GET", url, None),
        ("PUT", url, {"status": "closed"}),
        ("POST", f"{url}/messages", {"message": "mine now"}),
        ("GET", file_url, None),
    ]:
        for who in (intruder, admin):  # an admin's own /support routes see the admin's own tickets only
            r = await api.request(method, target, json=body, headers=who.headers)
            assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND", (method, target, r.text)
    assert (await api.get(url, headers=owner.headers)).json() == before
    assert (await api.get(f"{V1}/support/tickets", headers=intruder.headers)).json()["data"] == []

    for vps_id in (vps["id"], "vps-999999999", "vps-x", "vps-١"):
        r = await api.post(f"{V1}/support/tickets", json={**TICKET, "vps_id": vps_id}, headers=intruder.headers)
        assert r.status_code == 404, (vps_id, r.text)
        assert r.json()["error"]["details"]["field"] == "vps_id"
    assert (await api.get(f"{V1}/support/tickets", headers=intruder.headers)).json()["data"] == []
    for bad in ("ticket-x", "ticket-0", "ticket-99999999999", "ticket-²"):
        assert (await api.get(f"{V1}/support/tickets/{bad}", headers=owner.headers)).status_code == 404


async def test_a_file_of_exactly_10_mib_is_taken_and_one_byte_more_is_refused_naming_it(api, tenant, core) -> None:
    ticket = await open_ticket(api, tenant)
    url = f"{V1}/support/tickets/{ticket['id']}/messages"
    at_limit = PNG + bytes(MAX_ATTACHMENT_BYTES - len(PNG))
    r = await post_message(api, tenant, url, "big", attachments=[{"filename": "big.png", "data": b64(at_limit)}])
    assert r.status_code == 201, r.text[:500]
    [stored] = r.json()["data"]["attachments"]
    assert (stored["size"], stored["content_type"]) == (MAX_ATTACHMENT_BYTES, "image/png")

    over = [{"filename": "small.txt", "data": b64(b"fine")}, {"filename": "huge.png", "data": b64(at_limit + b"\0")}]
    r = await post_message(api, tenant, url, "bigger", attachments=over)
    assert r.status_code == 413, r.text[:500]
    error = r.json()["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE" and error["details"]["field"] == "attachments[1].data"
    assert "10 MiB" in error["message"] and error["details"]["limit_bytes"] == MAX_ATTACHMENT_BYTES
    detail = (await api.get(f"{V1}/support/tickets/{ticket['id']}", headers=tenant.headers)).json()["data"]
    assert [m["message"] for m in detail["messages"]][-1] == "big"  # nothing of the refused message was kept

    # A body past what two of the largest files need is refused before it is read.
    huge = "A" * (30 * 1024 * 1024)
    r = await post_message(api, tenant, url, "x", attachments=[{"filename": "a", "data": huge}])
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE", r.text[:300]
    # Routes without files keep the 1 MiB limit.
    r = await api.put(f"{V1}/support/tickets/{ticket['id']}", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                      headers={**tenant.headers, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413, r.text[:300]


async def test_a_files_type_comes_from_its_bytes_and_unknown_kinds_are_refused(api, tenant, core) -> None:
    ticket = await open_ticket(api, tenant)
    url = f"{V1}/support/tickets/{ticket['id']}/messages"
    files = [
        {"filename": "fake.png", "content_type": "image/png", "data": b64(b"just a log line\n")},
        {"filename": "real.bin", "content_type": "application/octet-stream", "data": b64(PNG)},
        {"filename": "doc.pdf", "data": "data:application/pdf;base64," + b64(b"%PDF-1.7\n%\xe2\xe3\n")},
        {"filename": "../../etc/passwd\r\nX: y", "data": b64(b"%PDF-1.4\n")[:8] + "\n" + b64(b"%PDF-1.4\n")[8:]},
    ]
    r = await post_message(api, tenant, url, "files", attachments=files)
    assert r.status_code == 201, r.text
    stored = r.json()["data"]["attachments"]
    assert [(a["filename"], a["content_type"]) for a in stored] == [
        ("fake.png", "text/plain"),
        ("real.bin", "image/png"),
        ("doc.pdf", "application/pdf"),
        ("passwd__X: y", "application/pdf"),
    ]
    with core.db.read() as s:
        kept = s.scalar(select(TicketAttachment).where(TicketAttachment.id == int(stored[0]["id"].split("-")[1])))
        assert kept is not None and kept.content_type == "text/plain" and kept.size_bytes == 16

    for data, field_message in [
        (b64(b"\x7fELF\x02\x01\x01" + bytes(50)), "cannot be attached"),
        (b64(b"\xff\xfe\x00\x01binary"), "cannot be attached"),
        ("not base64!", "not valid base64"),
        ("QUJD=QUJD", "not valid base64"),
        ("", "empty"),
    ]:
        r = await post_message(api, tenant, url, "bad", attachments=[{"filename": "x", "data": data}])
        assert r.status_code == 422, (data, r.text)
        assert r.json()["error"]["details"]["field"] == "attachments[0].data"
        assert field_message in r.json()["error"]["message"]
    too_many = [{"filename": f"{i}.txt", "data": b64(b"x")} for i in range(6)]
    r = await post_message(api, tenant, url, "many", attachments=too_many)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "attachments", r.text


async def test_files_download_for_the_tickets_parties_only(api, make_tenant) -> None:
    owner, intruder, admin = make_tenant(), make_tenant(), make_tenant("admin")
    name = "écran 1.png"
    ticket = await open_ticket(api, owner, attachments=[{"filename": name, "data": b64(PNG)}])
    [file] = ticket["messages"][0]["attachments"]
    assert file["url"] == f"{V1}/support/tickets/{ticket['id']}/attachments/{file['id']}"

    r = await api.get(file["url"], headers=owner.headers)
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert (
        r.headers["content-disposition"] == "attachment; filename=\"_cran 1.png\"; filename*=UTF-8''%C3%A9cran%201.png"
    )
    assert "sandbox" in r.headers["content-security-policy"]

    admin_view = (await api.get(f"{V1}/admin/tickets/{ticket['id']}", headers=admin.headers)).json()["data"]
    admin_url = admin_view["messages"][0]["attachments"][0]["url"]
    assert admin_url == f"{V1}/admin/tickets/{ticket['id']}/attachments/{file['id']}"
    r = await api.get(admin_url, headers=admin.headers)
    assert r.status_code == 200 and r.content == PNG
    assert (await api.get(file["url"], headers=intruder.headers)).status_code == 404
    assert (await api.get(admin_url, headers=intruder.headers)).status_code == 403
    # A file is found under its own ticket only.
    other = await open_ticket(api, owner)
    r = await api.get(f"{V1}/support/tickets/{other['id']}/attachments/{file['id']}", headers=owner.headers)
    assert r.status_code == 404


async def test_admins_see_every_ticket_filter_reply_and_assign(api, make_tenant, core) -> None:
    first, second, admin, other_admin = make_tenant(), make_tenant(), make_tenant("admin"), make_tenant("admin")
    a = await open_ticket(api, first, priority="urgent", category="billing")
    b = await open_ticket(api, second, priority="low")

    async def admin_ids(query: str = "") -> list[str]:
        r = await api.get(f"{V1}/admin/tickets?{query}", headers=admin.headers)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["data"]]

    assert (await admin_ids("limit=100"))[:2] == [b["id"], a["id"]]
    listed = await api.get(f"{V1}/admin/tickets?user_id=user-{first.principal.user_id}", headers=admin.headers)
    assert [(t["id"], t["user_email"]) for t in listed.json()["data"]] == [(a["id"], first.email)]
    assert a["id"] in await admin_ids("priority=urgent&category=billing&limit=100")
    assert a["id"] not in await admin_ids("priority=low&limit=100")
    assert (await api.get(f"{V1}/admin/tickets", headers=first.headers)).status_code == 403

    assign = f"{V1}/admin/tickets/{a['id']}/assign"
    r = await api.post(assign, headers=admin.headers)  # no body: the caller takes it
    assert r.status_code == 200 and r.json()["data"]["assigned_to"] == f"user-{admin.principal.user_id}", r.text
    assert await admin_ids(f"assigned_to=user-{admin.principal.user_id}") == [a["id"]]
    assert a["id"] not in await admin_ids("assigned_to=none&limit=100")
    r = await api.post(assign, json={"assignee_id": f"user-{other_admin.principal.user_id}"}, headers=admin.headers)
    assert r.json()["data"]["assigned_to"] == f"user-{other_admin.principal.user_id}"
    r = await api.post(assign, json={"assignee_id": f"user-{first.principal.user_id}"}, headers=admin.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "assignee_id", r.text
    r = await api.post(assign, json={"assignee_id": None}, headers=admin.headers)
    assert r.json()["data"]["assigned_to"] is None
    assert (await api.post(assign, headers=first.headers)).status_code == 403
    assert (await api.post(f"{V1}/admin/tickets/ticket-999999999/assign", headers=admin.headers)).status_code == 404

    r = await api.put(f"{V1}/admin/tickets/{b['id']}", json={"status": "in-progress"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "in-progress", r.text
    assert b["id"] in await admin_ids("status=in-progress&limit=100")
    assert [d for t, d in ticket_events(core, a["id"]) if t == "ticket.assigned"] == [
        {"assignee_user_id": admin.principal.user_id, "previous_assignee_user_id": None},
        {"assignee_user_id": other_admin.principal.user_id, "previous_assignee_user_id": admin.principal.user_id},
        {"assignee_user_id": None, "previous_assignee_user_id": other_admin.principal.user_id},
    ]


def mail_to(core: Any, monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    settings = core.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False, "smtp_timeout_s": 5.0,
                "smtp_from": "support@cloud.test", "support_email": "staff@cloud.test"}
    )  # fmt: skip
    monkeypatch.setattr(core, "settings", settings)


async def test_mail_goes_to_staff_and_owner_through_a_real_smtp_server(
    api, make_tenant, core, smtp_server, monkeypatch
) -> None:
    mail_to(core, monkeypatch, smtp_server.port)
    owner, admin, other_admin = make_tenant(), make_tenant("admin"), make_tenant("admin")
    ticket = await open_ticket(api, owner, subject="Disk full")
    await mail.drain()
    [opened] = smtp_server.to("staff@cloud.test")
    assert opened["Subject"] == f"[{ticket['id']}] New ticket: Disk full"
    assert opened["From"] == "support@cloud.test" and TICKET["description"] in opened.get_payload()

    admin_url = f"{V1}/admin/tickets/{ticket['id']}"
    await api.post(f"{admin_url}/assign", json={"assignee_id": f"user-{other_admin.principal.user_id}"},
                   headers=admin.headers)  # fmt: skip
    await post_message(api, admin, f"{admin_url}/messages", "Try deleting old logs.")
    await api.put(admin_url, json={"status": "resolved"}, headers=admin.headers)
    await post_message(api, owner, f"{V1}/support/tickets/{ticket['id']}/messages", "Logs gone, thanks!")
    await mail.drain()

    to_owner = smtp_server.to(owner.email)
    assert [m["Subject"] for m in to_owner] == [
        f"[{ticket['id']}] Disk full: new reply from support",
        f"[{ticket['id']}] Disk full: now resolved",
    ]
    assert "Try deleting old logs." in to_owner[0].get_payload()
    to_assignee = smtp_server.to(other_admin.email)
    assert [m["Subject"] for m in to_assignee] == [
        f"[{ticket['id']}] Assigned to you: Disk full",
        f"[{ticket['id']}] Reply from customer: Disk full",
    ]
    assert "Logs gone, thanks!" in to_assignee[1].get_payload()
    assert len(smtp_server.to("staff@cloud.test")) == 1  # an assigned ticket's news goes to its assignee
    assert smtp_server.to(admin.email) == []  # who acts is not told of their own act


async def test_mail_waits_in_the_outbox_while_smtp_is_down_and_the_request_still_succeeds(
    api, tenant, core, monkeypatch
) -> None:
    down = free_port()  # nothing listens there
    mail_to(core, monkeypatch, down)
    ticket = await open_ticket(api, tenant, subject="SMTP down")
    await mail.drain()
    with core.db.read() as s:
        [row] = s.scalars(select(MailOutbox).where(MailOutbox.topic == ticket["id"])).all()
    assert row.sent_at is None and row.attempts == 1 and "ConnectionRefusedError" in (row.last_error or "")
    assert row.next_attempt_at > utcnow()  # retried later, with backoff

    for _ in range(3):  # the port may be taken meanwhile: then the mail waits longer
        inbox = Inbox(down)
        controller = Controller(inbox, hostname="127.0.0.1", port=down)
        try:
            controller.start()
            break
        except OSError:
            time.sleep(0.1)
    else:
        pytest.fail("no SMTP server could start on the port the mail waits for")
    try:
        # The sweep, an hour on: the mail goes now, once, however many sweeps run.
        later = utcnow() + timedelta(hours=1)
        assert await mail.deliver_due(core, now=later) >= 1
        assert await mail.deliver_due(core, now=later) == 0
    finally:
        controller.stop()
    [received] = inbox.to("staff@cloud.test")
    assert received["Subject"] == f"[{ticket['id']}] New ticket: SMTP down"
    with core.db.read() as s:
        row = s.scalars(select(MailOutbox).where(MailOutbox.topic == ticket["id"])).one()
    assert row.sent_at is not None and row.attempts == 2


async def test_no_mail_is_queued_when_smtp_is_not_configured(api, tenant, core) -> None:
    assert core.settings.smtp_host is None
    ticket = await open_ticket(api, tenant)
    with core.db.read() as s:
        assert s.scalars(select(MailOutbox).where(MailOutbox.topic == ticket["id"])).all() == []


async def test_a_mail_claimed_by_a_live_sender_waits_and_one_whose_sender_died_is_taken_over(
    core, smtp_server, monkeypatch
) -> None:
    mail_to(core, monkeypatch, smtp_server.port)
    now = utcnow()
    with core.db.write() as s:
        assert mail.enqueue(s, core.settings, to="held@cloud.test", subject="held", body="b", topic="claim-test")
        row = s.scalars(select(MailOutbox).where(MailOutbox.recipient == "held@cloud.test")).one()
        row.claimed_until, row.attempts = now + timedelta(minutes=1), 1  # another process is sending it
    assert all(m.id != row.id for m in mail.claim_due(core, now + timedelta(seconds=30)))
    later = now + timedelta(minutes=2)  # its sender did not finish in time: taken for dead
    assert await mail.deliver_due(core, now=later) >= 1
    [received] = smtp_server.to("held@cloud.test")
    assert received["Subject"] == "held"
    with core.db.read() as s:
        done = s.get(MailOutbox, row.id)
        assert done is not None and done.sent_at is not None and done.attempts == 2
