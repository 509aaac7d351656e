"""Support tickets' words and their status machine: which party may move a ticket from which status to which, and
where a reply leaves it."""

from __future__ import annotations

from enum import StrEnum


class TicketStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in-progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Party(StrEnum):
    """Who acts on a ticket: the account that opened it, or the provider's staff (an admin)."""

    OWNER = "owner"
    STAFF = "staff"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class Category(StrEnum):
    TECHNICAL = "technical"
    BILLING = "billing"
    ACCOUNT = "account"
    GENERAL = "general"
    SALES = "sales"
    OTHER = "other"


_OPEN, _WORKING, _RESOLVED, _CLOSED = TicketStatus
_BOTH = frozenset(Party)
_STAFF = frozenset({Party.STAFF})

# (from, to) -> who may make the move. The owner closes, resolves and reopens (from resolved or closed); staff
# also take a ticket in hand (in-progress) and put it back.
TRANSITIONS: dict[tuple[TicketStatus, TicketStatus], frozenset[Party]] = {
    (_OPEN, _WORKING): _STAFF,
    (_OPEN, _RESOLVED): _BOTH,
    (_OPEN, _CLOSED): _BOTH,
    (_WORKING, _OPEN): _STAFF,
    (_WORKING, _RESOLVED): _BOTH,
    (_WORKING, _CLOSED): _BOTH,
    (_RESOLVED, _OPEN): _BOTH,
    (_RESOLVED, _WORKING): _STAFF,
    (_RESOLVED, _CLOSED): _BOTH,
    (_CLOSED, _OPEN): _BOTH,
}


def may_move(party: Party, current: TicketStatus, wanted: TicketStatus) -> bool:
    return party in TRANSITIONS.get((current, wanted), frozenset())


def moves_from(party: Party, current: TicketStatus) -> list[str]:
    """The statuses `party` may move a ticket in `current` to, in the order of the enum."""
    return [str(s) for s in TicketStatus if may_move(party, current, s)]


def status_after_reply(party: Party, current: TicketStatus) -> TicketStatus | None:
    """Where a reply leaves the ticket (None: unchanged). Staff answering an open ticket take it in hand; the owner
    writing on a resolved one reopens it. A closed ticket takes no reply until it is reopened: the caller refuses."""
    if party is Party.STAFF and current is _OPEN:
        return _WORKING
    if party is Party.OWNER and current is _RESOLVED:
        return _OPEN
    return None
