"""ORM tables of the core domain."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    case,
    func,
    literal_column,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from cloudplane.domain.status_words import VISIBLE_TASKS
from cloudplane.domain.times import assume_utc

# SQLite has no 64-bit autoincrement alias but INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return assume_utc(value)


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, typed as a Table (insert and update of hot paths use it without the ORM)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    company: Mapped[str | None] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(20), default="free")
    status: Mapped[str] = mapped_column(String(20), default="active")
    balance: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=0)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When dunning suspended the account's servers for an overdue invoice (services/billing.py); None otherwise.
    dunning_suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The account's customer at Stripe, made when its first card is added (services/payment_methods.py).
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("username", name="uq_users_username"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    username: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), default="user")
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class SystemSecret(Base):
    """Secrets the service makes for itself on first start (the JWT signing key), shared by every process."""

    __tablename__ = "system_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefreshToken(Base):
    """One refresh token of a sign-in session (`family_id`); each use replaces it with a new one. Presenting a
    token already used revokes the whole family (RFC 6819 5.2.2.3): someone else holds a copy."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """A creating POST made with an `Idempotency-Key`: claimed while in flight, then the reply to replay, sealed
    under a key derived from the Idempotency-Key (api/common/idempotency.py), which is itself never stored."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "key_hash", name="uq_idempotency_account_key_hash"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # sha256 of the account and the Idempotency-Key.
    key_hash: Mapped[str] = mapped_column(String(64))
    # HMAC, under the key, of method, path and body: the same key with another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="in_flight")
    response_status: Mapped[int | None] = mapped_column(Integer)
    # AES-GCM nonce and ciphertext of the reply's headers and body.
    response_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Location(Base):
    __tablename__ = "locations"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(100))
    region: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(50), default="simulator")
    available: Mapped[bool] = mapped_column(Boolean, default=True)


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    cpu: Mapped[int] = mapped_column(Integer)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    price_monthly: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    available: Mapped[bool] = mapped_column(Boolean, default=True)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    distribution: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(50))
    architecture: Mapped[str] = mapped_column(String(20), default="x86_64")
    available: Mapped[bool] = mapped_column(Boolean, default=True)


class SSHKey(Base):
    __tablename__ = "ssh_keys"
    __table_args__ = (
        UniqueConstraint("account_id", "fingerprint", name="uq_ssh_keys_account_fingerprint"),
        # An account's keys in id order (its list); it serves every lookup by account too.
        Index("ix_ssh_keys_account_key", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[str] = mapped_column(Text)
    key_type: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerSSHKey(Base):
    """Which of the account's keys were installed on a server when it was created."""

    __tablename__ = "server_ssh_keys"

    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    ssh_key_id: Mapped[int] = mapped_column(ForeignKey("ssh_keys.id", ondelete="CASCADE"), primary_key=True)


class Server(Base):
    __tablename__ = "servers"
    __table_args__ = (
        # Which servers own these machines (the reconciler, a page of a provider's inventory at a time).
        Index("ix_servers_provider_ref", "provider", "provider_ref"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(253))
    status: Mapped[str] = mapped_column(String(20))
    task_state: Mapped[str | None] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(50))
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    # A catalog server has a plan, image and location; a GPU instance rented from a marketplace has none.
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    ipv4: Mapped[str | None] = mapped_column(String(45))
    private_ipv4: Mapped[str | None] = mapped_column(String(45))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # GPU instances: what was rented, where, at what price, and the provider's own details (ssh host, image...).
    gpu_model: Mapped[str | None] = mapped_column(String(100))
    gpu_count: Mapped[int | None] = mapped_column(Integer)
    cpu_count: Mapped[int | None] = mapped_column(Integer)
    ram_gb: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    storage_gb: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    price_per_hour: Mapped[Decimal | None] = mapped_column(Numeric(10, 4))
    region: Mapped[str | None] = mapped_column(String(100))
    offer_id: Mapped[str | None] = mapped_column(String(100))
    provider_data: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # When an administrator suspended the server; None when it is not suspended. A flag beside `status`, which keeps
    # the power state (running or stopped) the server returns to when the suspension is lifted.
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Lists read a page's ids from an index alone (services/pages.py), then only those rows: one index per order a
# face offers, over an account's live servers. Each is partial on `deleted_at IS NULL` rather than led by it
# (PostgreSQL orders by an index's columns only after equalities, and IS NULL is not one), and ends with what makes
# it covering on both databases, which want every column the query names in the index: `label` and the state's
# columns for PostgreSQL, and `deleted_at` itself for SQLite, which does not count the partial WHERE's column.
_s = Server.__table__.c
# The word a server's list filters and sorts on (domain/status_words.py): the visible task while one runs, else
# "suspended" for a server an administrator suspended, else its status. Its values are written inline, never bound,
# so that both databases match it to the index built on it; migration 0015 built that index from this very
# expression (with "rebuilding"), and a new visible task needs a migration to rebuild it.
SERVER_STATE_WORD = case(
    (_s.task_state.in_([literal_column(f"'{task}'") for task in sorted(VISIBLE_TASKS)]), _s.task_state),
    (_s.suspended_at.isnot(None), literal_column("'suspended'")),
    else_=_s.status,
)


def _live_index(name: str, *columns: Any, where: Any = None) -> Index:
    live = _s.deleted_at.is_(None) if where is None else and_(_s.deleted_at.is_(None), where)
    return Index(name, _s.account_id, *columns, _s.deleted_at, sqlite_where=live, postgresql_where=live)


_live_index("ix_servers_account_live", _s.id)
_live_index("ix_servers_account_created", _s.created_at, _s.id)
_live_index("ix_servers_account_label", func.lower(_s.label), _s.id, _s.label)
_live_index(
    "ix_servers_account_state", SERVER_STATE_WORD, _s.created_at, _s.id, _s.status, _s.task_state, _s.suspended_at
)
_live_index(
    "ix_servers_account_state_label",
    SERVER_STATE_WORD,
    func.lower(_s.label),
    _s.id,
    _s.label,
    _s.status,
    _s.task_state,
    _s.suspended_at,
)
# Every tenant's live servers, for admins: newest first, and by state word.
_LIVE_EVERYWHERE = _s.deleted_at.is_(None)
Index("ix_servers_live", _s.id, _s.deleted_at, sqlite_where=_LIVE_EVERYWHERE, postgresql_where=_LIVE_EVERYWHERE)
Index(
    "ix_servers_live_state", SERVER_STATE_WORD, _s.id, _s.status, _s.task_state, _s.suspended_at, _s.deleted_at,
    sqlite_where=_LIVE_EVERYWHERE, postgresql_where=_LIVE_EVERYWHERE,
)  # fmt: skip
# GPU instances are the servers rented from a marketplace: a few among many.
_live_index("ix_servers_account_rented", _s.id, where=_s.offer_id.isnot(None))


class Snapshot(Base):
    __tablename__ = "snapshots"
    __table_args__ = (
        # A server's live snapshots in id order, covering what their list filters on (services/pages.py).
        Index(
            "ix_snapshots_server_live", "server_id", "id", "account_id", "deleted_at",
            sqlite_where=text("deleted_at IS NULL"), postgresql_where=text("deleted_at IS NULL"),
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20), default="manual")
    status: Mapped[str] = mapped_column(String(20))
    size_gb: Mapped[int | None] = mapped_column(Integer)
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BackupSchedule(Base):
    """A server's automatic backups: one a day at `hour` (UTC), the newest `keep` of them kept."""

    __tablename__ = "backup_schedules"
    # The hourly run reads the schedules due at its hour.
    __table_args__ = (Index("ix_backup_schedules_due", "enabled", "hour"),)

    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    hour: Mapped[int] = mapped_column(Integer)
    keep: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class FirewallRule(Base):
    """One of a server's inbound firewall rules, at `position` in the order they are matched."""

    __tablename__ = "firewall_rules"
    __table_args__ = (UniqueConstraint("server_id", "position", name="uq_firewall_rules_server_position"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(10))
    protocol: Mapped[str] = mapped_column(String(10))
    # Both None: every port (always so for icmp); a single port has both equal.
    port_from: Mapped[int | None] = mapped_column(Integer)
    port_to: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(18))
    description: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IpAddress(Base):
    """An extra public IPv4 address of a server, taken from its location's pool (services/network.py); the row is
    the address's allocation, so no address is ever given twice."""

    __tablename__ = "ip_addresses"
    __table_args__ = (UniqueConstraint("address", name="uq_ip_addresses_address"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(15))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerSample(Base):
    """A server's usage at one moment (`resolution_s` 0: a sample, kept a day) or over one hour (3600: the hour's
    samples rolled up, kept a month), written by the metrics jobs (workflows/metrics.py)."""

    __tablename__ = "server_samples"
    # The hourly roll-up reads an hour of every server's samples, and prunes the old ones, by age.
    __table_args__ = (Index("ix_server_samples_age", "resolution_s", "at"),)

    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True)
    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    cpu_percent: Mapped[float] = mapped_column(Float)
    memory_used_mb: Mapped[int] = mapped_column(Integer)
    disk_used_mb: Mapped[int | None] = mapped_column(Integer)
    # Bytes in and out since the previous sample (over the hour, rolled up); the machine's totals besides, to take
    # the next sample's difference from.
    net_in_bytes: Mapped[int] = mapped_column(BigInteger)
    net_out_bytes: Mapped[int] = mapped_column(BigInteger)
    net_rx_total: Mapped[int] = mapped_column(BigInteger)
    net_tx_total: Mapped[int] = mapped_column(BigInteger)
    uptime_s: Mapped[int | None] = mapped_column(Integer)


class ConsoleSession(Base):
    """A console opened on a server (GET /vps/{id}/console): the page at its id asks for its one-time password,
    kept only as a hash, which opens one terminal session before `expires_at` and never again."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ScheduledRun(Base):
    """One tick of a periodic job (workflows/schedules.py), recorded in the transaction that does its work: the
    primary key lets one process, of however many tick, run each tick once."""

    __tablename__ = "scheduled_runs"

    job: Mapped[str] = mapped_column(String(60), primary_key=True)
    tick_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    executor_id: Mapped[str] = mapped_column(String(128))
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What the run did, in a few words (how many backups it started), for an operator reading the table.
    summary: Mapped[str | None] = mapped_column(Text)


class Operation(Base):
    """A long action, and the durable state of the workflow that carries it out (workflows/engine.py).

    `target_type`/`target_id` name what the user sees it act on (a server, a snapshot, later a deployment or an
    invoice run); `server_id` is the server it holds while it runs (the reconciler leaves such servers alone) and
    `snapshot_id` the snapshot it works with, when there are any.
    """

    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_unfinished", "status"),
        # Newest first, ties by id; by status too (the filter an operations list offers first).
        Index("ix_operations_account_created", "account_id", "created_at", "id"),
        Index("ix_operations_account_status", "account_id", "status", "created_at", "id"),
        Index("ix_operations_target", "target_type", "target_id"),
        Index("ix_operations_executor", "executor_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(64))
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(40))
    # Inputs the workflow needs that are not on the server row (a root password hash); cleared when done.
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The process running it (its executor id) once claimed; every write of the run is fenced by it, so a process
    # that was taken for dead and comes back cannot change what its successor now runs.
    executor_id: Mapped[str | None] = mapped_column(String(128))
    # How many times a process started running it (a restart or a takeover runs it again from `stage`).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where its workflow got to, for a run that resumes it: a step that must not be repeated records it.
    stage: Mapped[str | None] = mapped_column(String(40))
    # Who asked, from where, in which request: copied onto the events the operation writes when it ends.
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    request_id: Mapped[str | None] = mapped_column(String(128))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Base):
    """The outbox: every state change writes its events in its own transaction. Webhooks, streams, metering and
    the audit log read from here. `seq` orders events for consumers that follow the log."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_account_seq", "account_id", "seq"),
        Index("ix_events_target", "target_type", "target_id"),
        Index("ix_events_created", "created_at"),
    )

    seq: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    # None for events of the system itself (none yet); an account's events are its own to read.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(64))
    operation_id: Mapped[str | None] = mapped_column(String(36))
    request_id: Mapped[str | None] = mapped_column(String(128))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Executor(Base):
    """A process running workflows, with its heartbeat: a process whose heartbeat stopped has its unfinished
    workflows taken over by a live one (`taken_over_by`, claimed by one conditional UPDATE)."""

    __tablename__ = "executors"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    taken_over_by: Mapped[str | None] = mapped_column(String(128))
    taken_over_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class App(Base):
    """A container app (VibeCaaS): what to build and run, and the resources each replica may use."""

    __tablename__ = "apps"
    __table_args__ = (
        UniqueConstraint("account_id", "name", name="uq_apps_account_name"),
        Index("ix_apps_account_created", "account_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str | None] = mapped_column(Text)
    framework: Mapped[str | None] = mapped_column(String(50))
    github_repo: Mapped[str | None] = mapped_column(String(2048))
    branch: Mapped[str] = mapped_column(String(255), default="main")
    # A JSON object of names to string values.
    environment_variables: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    port: Mapped[int] = mapped_column(Integer)
    cpu_limit: Mapped[int] = mapped_column(Integer)  # millicores
    memory_limit: Mapped[int] = mapped_column(Integer)  # MiB
    storage_limit: Mapped[int] = mapped_column(Integer)  # MiB
    gpu_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    health_check_path: Mapped[str | None] = mapped_column(String(255))
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default="stopped")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Deployment(Base):
    """A build of an app from its git source into an immutable release (later also its rollout): what was asked
    (source URL, branch, commit), what was found (the commit's sha, the framework), where the release is and the
    build's log (its last CLOUDPLANE_APPS_BUILD_LOG_BYTES)."""

    __tablename__ = "deployments"
    __table_args__ = (
        # The account's deployments newest first, whole, by app or by status (the document's filters).
        Index("ix_deployments_account_created", "account_id", "created_at", "id"),
        Index("ix_deployments_app_created", "app_id", "created_at", "id"),
        Index("ix_deployments_account_status", "account_id", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    # The document's `source` ("github"), and the URL cloned: the app's github_repo when it was asked for.
    source: Mapped[str] = mapped_column(String(20))
    source_url: Mapped[str] = mapped_column(String(2048))
    branch: Mapped[str] = mapped_column(String(255))
    commit_requested: Mapped[str | None] = mapped_column(String(40))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    framework: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    release_path: Mapped[str | None] = mapped_column(String(1024))
    log: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    operation_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Ticket(Base):
    """A support ticket an account opened; its first message is its description (TicketMessage)."""

    __tablename__ = "tickets"
    __table_args__ = (
        # The account's tickets newest first, whole or by status or priority; the admins' queue likewise.
        Index("ix_tickets_account", "account_id", "id"),
        Index("ix_tickets_account_status", "account_id", "status", "id"),
        Index("ix_tickets_account_priority", "account_id", "priority", "id"),
        Index("ix_tickets_status", "status", "id"),
        Index("ix_tickets_assignee", "assignee_user_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # Who opened it: its party, and where mail about it goes.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    subject: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    # The server it is about, one of the account's own when it was opened.
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))
    assignee_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TicketMessage(Base):
    __tablename__ = "ticket_messages"
    __table_args__ = (Index("ix_ticket_messages_ticket", "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Written by staff (an admin, on the admin routes) rather than by the ticket's account.
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TicketAttachment(Base):
    """A file attached to a ticket's message. The bytes live in the row: they commit or roll back with their
    message, every API process reads them wherever it runs, and database backups carry them (10 MiB at most)."""

    __tablename__ = "ticket_attachments"
    __table_args__ = (Index("ix_ticket_attachments_message", "message_id", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("ticket_messages.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    # The type the bytes were found to be (domain/attachments.py), never the client's claim.
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


_UNSENT = text("sent_at IS NULL AND failed_at IS NULL")


class MailOutbox(Base):
    """A mail to send, written in the transaction of what it tells about and sent after the commit (services/mail.py):
    a crash before it is sent loses nothing, a crash between sending and recording it sends it twice."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_due", "next_attempt_at", sqlite_where=_UNSENT, postgresql_where=_UNSENT),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    # What the mail is about ("ticket-12"), for operators reading the table.
    topic: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A sender holds the mail until then; past it, another may take it (its holder died).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsageRecord(Base):
    """One hour of one resource (a server, a GPU instance, an app), metered from its history by the hourly job
    (services/billing.py): seconds in each billable state, what it held, and what the hour cost before the monthly
    cap."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", "hour_at", name="uq_usage_records_resource_hour"),
        Index("ix_usage_records_account_hour", "account_id", "hour_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(20))  # server, gpu, app
    resource_id: Mapped[str] = mapped_column(String(64))
    hour_at: Mapped[datetime] = mapped_column(UTCDateTime)
    label: Mapped[str] = mapped_column(String(255))
    plan: Mapped[str | None] = mapped_column(String(200))
    running_s: Mapped[int] = mapped_column(Integer)
    stopped_s: Mapped[int] = mapped_column(Integer)
    # Integers, so that sums over a month are exact on every database: GB-seconds of storage held, GPU-seconds
    # run, bytes moved (in and out), and the hour's cost in millionths of the currency.
    storage_gb_s: Mapped[int] = mapped_column(BigInteger)
    gpu_s: Mapped[int] = mapped_column(BigInteger)
    transfer_bytes: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    # The resource's monthly price, which its month's hours never exceed (None: no cap, e.g. a GPU at its hourly
    # price); and the transfer a month includes.
    monthly_cap: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    transfer_allowance_gb: Mapped[int | None] = mapped_column(Integer)


class InvoiceCounter(Base):
    """The last invoice number given in a year: the row is locked by the transaction that writes an invoice, so
    numbers are gapless (a rolled-back invoice gives its number back)."""

    __tablename__ = "invoice_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("account_id", "period_start", name="uq_invoices_account_period"),
        Index("ix_invoices_account_issued", "account_id", "issued_at", "id"),
        Index("ix_invoices_status_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(20), unique=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, paid, overdue
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    tax: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InvoiceItem(Base):
    __tablename__ = "invoice_items"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(400))
    resource_type: Mapped[str | None] = mapped_column(String(20))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))


class Payment(Base):
    """Money an account received: a payment (through a gateway, or recorded by an admin) or a credit an admin
    granted. It adds to the account's credit (`accounts.balance`), from which invoices are settled."""

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_account_created", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # payment, credit
    gateway: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    reference: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PaymentMethod(Base):
    """A card saved at the payment gateway (Stripe) for an account: `reference` is the gateway's id (pm_...); what
    is shown of it (brand, last four digits, expiry) is copied here so lists need no call to the gateway."""

    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("reference", name="uq_payment_methods_reference"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    gateway: Mapped[str] = mapped_column(String(20))
    reference: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(20))
    brand: Mapped[str | None] = mapped_column(String(40))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Charge(Base):
    """One charge through the payment gateway, written `pending` before the gateway is asked (intent first) and
    settled `succeeded` or `failed` with its outcome. `idempotency_key` goes to the gateway, so a retried charge is
    never taken twice; `purpose` and `data` say what the money pays for (an upgrade's tier ...)."""

    __tablename__ = "charges"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_charges_idempotency_key"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    gateway: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    reference: Mapped[str | None] = mapped_column(String(255))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Subscription(Base):
    """An account's paid subscription (VibeCaaS): its billing period and what changes at its end. The tier itself
    is the account's (`accounts.tier`, which quotas and rate limits read); an account without a row is on the free
    tier's calendar. `charge_id` is held while an upgrade is being paid, so two upgrades never charge at once."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_period_end", "current_period_end"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    current_period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # The tier the account moves to at the period's end (a downgrade; "free" with cancel_at_period_end).
    pending_tier: Mapped[str | None] = mapped_column(String(20))
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class StripeEvent(Base):
    """A webhook event Stripe delivered, kept by its id so a redelivery is acknowledged and not handled twice."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEndpoint(Base):
    """Where an administrator has webhook events sent. The signing secret is kept sealed (AES-GCM under a key
    derived from the service's secret key, services/webhooks.py): it must be recoverable to sign with, so it cannot
    be hashed, and it is shown once, in the reply that made or rotated it."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Nonce, then ciphertext and tag, of the secret; bound to the endpoint's id.
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    secret_rotated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookSubscription(Base):
    """One event an endpoint receives: the events outbox fans out to these in the transaction that writes the
    event (services/events.py)."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index("ix_webhook_subscriptions_event", "event_type", "endpoint_id"),)

    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), primary_key=True)


# The statuses of a delivery: `pending` (not tried yet), `failed` (its last try failed; another is due at
# `next_attempt_at`), `delivered`, `dead` (out of tries; redeliverable by hand).
WEBHOOK_DUE_STATUSES = ("pending", "failed")


class WebhookDelivery(Base):
    """One event to one endpoint, written with the event; `event_id` is its `webhook-id`, the same on every try and
    on a redelivery. A try claims the row by moving `next_attempt_at` past its timeout (a conditional UPDATE), so a
    process killed mid-try leaves it due again once that passes: at least once, never lost."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index(
            "ix_webhook_deliveries_due", "next_attempt_at",
            sqlite_where=text("status IN ('pending', 'failed')"),
            postgresql_where=text("status IN ('pending', 'failed')"),
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The JSON body as sent, made at the first try and the same on every later one.
    body: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
