"""SSH keys of an account: validated, fingerprinted as `ssh-keygen -lf` prints, one of each per account."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from cloudplane.core import Core
from cloudplane.db.tables import SSHKey
from cloudplane.domain.errors import Conflict, NotFound, ValidationFailed
from cloudplane.domain.ssh_keys import ParsedKey, SSHKeyError, parse_public_key
from cloudplane.services.accounts import Principal
from cloudplane.services.servers import Page


def list_keys(core: Core, principal: Principal, *, page: int, per_page: int) -> Page:
    mine = SSHKey.account_id == principal.account_id
    with core.db.read() as s:
        total = s.scalar(select(func.count()).select_from(SSHKey).where(mine)) or 0
        items = s.scalars(
            select(SSHKey).where(mine).order_by(SSHKey.id).offset((page - 1) * per_page).limit(per_page)
        ).all()
    return Page(items=items, total=total, page=page, per_page=per_page)


def get_key(core: Core, principal: Principal, key_id: int) -> SSHKey:
    with core.db.read() as s:
        key = s.scalar(select(SSHKey).where(SSHKey.id == key_id, SSHKey.account_id == principal.account_id))
    if key is None:
        raise NotFound("SSH key not found", key_id=key_id)
    return key


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
                select(SSHKey.id).where(
                    SSHKey.account_id == principal.account_id, SSHKey.fingerprint == parsed.fingerprint
                )
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
    except IntegrityError:  # a concurrent insert of the same key won the race
        raise duplicate from None
    return key


def delete_key(core: Core, principal: Principal, key_id: int) -> None:
    with core.db.write() as s:
        result = s.execute(delete(SSHKey).where(SSHKey.id == key_id, SSHKey.account_id == principal.account_id))
    if result.rowcount != 1:
        raise NotFound("SSH key not found", key_id=key_id)


def ensure_keys(core: Core, principal: Principal, public_keys: Sequence[str], *, field: str = "ssh_keys") -> list[int]:
    """The ids of these public keys in the caller's account, in order and without repeats: a key the account holds
    (same fingerprint) is reused whatever its title; another is added, titled by its comment or fingerprint.
    A key that does not parse is refused, naming `field[i]`, before anything is added."""
    parsed = []
    for i, text in enumerate(public_keys):
        try:
            parsed.append(parse_public_key(text))
        except SSHKeyError as e:
            raise ValidationFailed(f"{field}[{i}]: {e}", field=f"{field}[{i}]") from None
    if not parsed:
        return []
    try:
        return _ensure_parsed(core, principal, parsed)
    except IntegrityError:  # a concurrent request added one of these keys first; now it is there to reuse
        return _ensure_parsed(core, principal, parsed)


def _ensure_parsed(core: Core, principal: Principal, parsed: list[ParsedKey]) -> list[int]:
    fingerprints = list(dict.fromkeys(k.fingerprint for k in parsed))
    with core.db.write() as s:
        held = dict(
            s.execute(
                select(SSHKey.fingerprint, SSHKey.id).where(
                    SSHKey.account_id == principal.account_id, SSHKey.fingerprint.in_(fingerprints)
                )
            ).all()
        )
        for key in parsed:
            if key.fingerprint not in held:
                row = SSHKey(
                    account_id=principal.account_id,
                    title=(key.comment.strip() or key.fingerprint)[:200],
                    public_key=key.normalized,
                    key_type=key.key_type,
                    fingerprint=key.fingerprint,
                )
                s.add(row)
                s.flush()
                held[key.fingerprint] = row.id
    return [held[f] for f in fingerprints]
