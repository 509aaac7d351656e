"""SSH keys of an account: validated, fingerprinted as `ssh-keygen -lf` prints, one of each per account; or made
here as an ed25519 pair whose private half is handed over once and never kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import SSHKey
from cloudplane.domain.errors import Conflict, NotFound, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.ids import parse_id
from cloudplane.domain.ssh_keys import ParsedKey, SSHKeyError, parse_public_key
from cloudplane.services import events
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import Page, counted, paged_window, window
from cloudplane.services.tenancy import mine


def list_keys(core: Core, principal: Principal, *, page: int, per_page: int) -> Page:
    owned = [mine(SSHKey, principal)]
    with core.db.read() as s:
        total = s.scalar(counted(SSHKey.__table__, owned)) or 0
        items = s.scalars(
            paged_window(select(SSHKey), SSHKey.id, owned, [SSHKey.id], window(total, page, per_page))
        ).all()
    return Page(items=items, total=total, page=page, per_page=per_page)


def get_key(core: Core, principal: Principal, key_id: int) -> SSHKey:
    with core.db.read() as s:
        key = s.scalar(select(SSHKey).where(SSHKey.id == key_id, mine(SSHKey, principal)))
    if key is None:
        raise NotFound("SSH key not found", key_id=key_id)
    return key


def _named(session: Session, principal: Principal, name: str) -> SSHKey | None:
    """The caller's key whose id is `name` (its digits), else the oldest of those titled `name`."""
    key_id = parse_id(name)
    key = None
    if key_id is not None:
        key = session.scalar(select(SSHKey).where(SSHKey.id == key_id, mine(SSHKey, principal)))
    if key is None:
        titled = select(SSHKey).where(SSHKey.title == name, mine(SSHKey, principal)).order_by(SSHKey.id).limit(1)
        key = session.scalar(titled)
    return key


def find_key(core: Core, principal: Principal, slug_or_title: str) -> SSHKey:
    """The caller's key named so (see `_named`)."""
    with core.db.read() as s:
        key = _named(s, principal, slug_or_title)
    if key is None:
        raise NotFound("SSH key not found", key=slug_or_title)
    return key


def keys_named(session: Session, principal: Principal, names: Sequence[str], *, field: str) -> list[int]:
    """In the caller's transaction: the ids of the caller's keys these names give (see `_named`), in order;
    NotFound naming `field` for a name that gives none."""
    ids = []
    for name in names:
        key = _named(session, principal, name)
        if key is None:
            raise NotFound(f"SSH key {name!r} not found; list your keys for their slugs and titles", field=field)
        ids.append(key.id)
    return ids


def generate_key(core: Core, principal: Principal, *, title: str) -> tuple[SSHKey, str]:
    """A new ed25519 pair: its public half added to the account like any key, its private half (OpenSSH format)
    returned to be handed over once. Nothing keeps the private half."""
    private = Ed25519PrivateKey.generate()
    public_line = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private_text = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    return create_key(core, principal, title=title, public_key=public_line.decode()), private_text


def create_key(core: Core, principal: Principal, *, title: str, public_key: str) -> SSHKey:
    title = title.strip()
    if not title:
        raise ValidationFailed("Title must not be empty", field="title")
    try:
        parsed = parse_public_key(public_key)
    except SSHKeyError as e:
        raise ValidationFailed(str(e), field="key") from None
    duplicate = Conflict("This SSH key is already in your account", field="key", fingerprint=parsed.fingerprint)
    try:
        with core.db.write() as s:
            exists = s.scalar(
                select(SSHKey.id).where(mine(SSHKey, principal), SSHKey.fingerprint == parsed.fingerprint)
            )
            if exists is not None:
                raise duplicate
            key = SSHKey(
                account_id=principal.account_id,
                title=title,
                public_key=parsed.normalized,
                key_type=parsed.key_type,
                fingerprint=parsed.fingerprint,
            )
            s.add(key)
            s.flush()
            _created(s, key)
    except IntegrityError:  # a concurrent insert of the same key won the race
        raise duplicate from None
    return key


def delete_key(core: Core, principal: Principal, key_id: int) -> None:
    with core.db.write() as s:
        result = s.execute(delete(SSHKey).where(SSHKey.id == key_id, mine(SSHKey, principal)))
        if cast(CursorResult[Any], result).rowcount != 1:
            raise NotFound("SSH key not found", key_id=key_id)
        events.record(
            s, EventType.SSH_KEY_DELETED, account_id=principal.account_id, target_type="ssh_key", target_id=key_id
        )


def _created(session: Session, key: SSHKey) -> None:
    events.record(
        session,
        EventType.SSH_KEY_CREATED,
        account_id=key.account_id,
        target_type="ssh_key",
        target_id=key.id,
        data={"fingerprint": key.fingerprint, "title": key.title},
    )


def parse_public_keys(public_keys: Sequence[str], *, field: str = "ssh_keys") -> list[ParsedKey]:
    """Parse OpenSSH public key lines; one that does not parse is refused, naming `field[i]`."""
    parsed = []
    for i, text in enumerate(public_keys):
        try:
            parsed.append(parse_public_key(text))
        except SSHKeyError as e:
            raise ValidationFailed(f"{field}[{i}]: {e}", field=f"{field}[{i}]") from None
    return parsed


def register_keys(session: Session, account_id: int, parsed: Sequence[ParsedKey]) -> list[int]:
    """In the caller's transaction: the ids of these keys in the account, in order and without repeats. A key the
    account holds (same fingerprint) is reused whatever its title; another is added, titled by its comment or
    fingerprint. A concurrent insert of the same key makes the transaction fail with IntegrityError; running it
    again then reuses that key."""
    if not parsed:
        return []
    fingerprints = list(dict.fromkeys(k.fingerprint for k in parsed))
    held = dict(
        session.execute(
            select(SSHKey.fingerprint, SSHKey.id).where(
                SSHKey.account_id == account_id, SSHKey.fingerprint.in_(fingerprints)
            )
        ).all()
    )
    for key in parsed:
        if key.fingerprint not in held:
            row = SSHKey(
                account_id=account_id,
                title=(key.comment.strip() or key.fingerprint)[:200],
                public_key=key.normalized,
                key_type=key.key_type,
                fingerprint=key.fingerprint,
            )
            session.add(row)
            session.flush()
            _created(session, row)
            held[key.fingerprint] = row.id
    return [held[f] for f in fingerprints]
