"""A fleet written straight into the databases as the API leaves it, fast enough for 100k of everything: the rows a
create, a rent, a snapshot, a registration, an SSH key, an app and an API key make once their workflows have run
(the object, its succeeded operation, the events they wrote, and the provider's side: the simulator's machines and
snapshots, the simulated marketplace's rentals). Shared by the scale benches (bench_reconciler.py, bench_scale.py).

Rows are inserted with executemany in chunks, with explicit ids (PostgreSQL's sequences are moved past them in
`finish`), and timestamps that advance a millisecond per object in the order they are seeded, ending about now.
The event types come from the product's vocabulary (domain/events.py), the app defaults from services/apps.py, the
SSH keys through the product's own parser and a rented instance's server columns from the workflow's own
`instance_details` over what the simulated marketplace lists.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, func, insert, select, text, update

from cloudplane.config import Settings
from cloudplane.db.engine import Database
from cloudplane.db.tables import (
    Account,
    ApiKey,
    App,
    Event,
    Executor,
    Image,
    Location,
    Operation,
    Plan,
    Server,
    Snapshot,
    SSHKey,
    User,
    table_of,
)
from cloudplane.domain.events import OPERATION_EVENTS, EventType
from cloudplane.domain.ssh_keys import parse_public_key
from cloudplane.providers.simmarket import SimulatedMarketplace, simmkt_instances, simmkt_offers
from cloudplane.providers.simulator import PRIVATE_NET, PUBLIC_NET, address, sim_machines, sim_snapshots
from cloudplane.services.accounts import API_KEY_PREFIX, hash_api_key
from cloudplane.services.apps import DEFAULTS as APP_DEFAULTS
from cloudplane.services.auth import hash_password
from cloudplane.services.servers import hostname_from_label
from cloudplane.workflows.gpu import instance_details

SEED_CHUNK = 5000
PLAN, IMAGE, LOCATION = "basic-1gb", "ubuntu-22-04", "nyc1"
MARKET = "vast_ai"  # the simulated marketplace's name when no Vast.ai key is set
GPU_IMAGE = "pytorch/pytorch:latest"
CLIENT_IP = "127.0.0.1"
PASSWORD = "bench-password-1"  # every seeded user's; hashed once


def chunks(items: Iterable[Any], size: int = SEED_CHUNK) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def engine_for(url: str) -> Engine:
    """An engine to seed with; on SQLite without waiting for each commit to reach the disk (a bench's own file: a
    crash of the machine is no concern, and the service opens it with its own settings)."""
    engine = create_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def no_sync(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute("PRAGMA synchronous=OFF")

    return engine


class Seeder:
    """Seeds one database (and the simulator's, a sibling file on SQLite) for the bootstrap admin, who must exist:
    run the service once on it first."""

    def __init__(self, database_url: str) -> None:
        settings = Settings(database_url=database_url)
        self.database_url = database_url
        self.is_postgres = database_url.startswith("postgresql")
        self.db = engine_for(database_url)
        self.sim_url = settings.simulator_database_url
        self.sim = self.db if self.sim_url == database_url else engine_for(self.sim_url)
        with self.db.begin() as conn:
            admin = conn.execute(select(User.id, User.account_id).where(User.email == "admin@localhost")).one()
            self.admin_user, self.admin_account = admin.id, admin.account_id
            self.plan = conn.execute(
                select(Plan.id, Plan.cpu, Plan.ram_mb, Plan.disk_gb).where(Plan.slug == PLAN)
            ).one()
            self.image_id = conn.scalar(select(Image.id).where(Image.slug == IMAGE))
            self.location_id = conn.scalar(select(Location.id).where(Location.slug == LOCATION))
            # The process that ran the workflows: the service's first start registered itself.
            self.executor_id = conn.scalar(select(Executor.id).order_by(Executor.started_at).limit(1))
        self._stamp = datetime.now(UTC) - timedelta(hours=6)
        self._touched: set[str] = set()  # tables given explicit ids (one database on PostgreSQL)

    # Ids and times.

    def stamp(self) -> datetime:
        """The next object's creation time: a millisecond after the previous one's."""
        self._stamp += timedelta(milliseconds=1)
        return self._stamp

    def next_id(self, engine: Engine, table: Table, column: str = "id") -> int:
        with engine.connect() as conn:
            return (conn.scalar(select(func.max(table.c[column]))) or 0) + 1

    def put(
        self, *tables: tuple[Table, list[dict[str, Any]]], sim: tuple[Table, list[dict[str, Any]]] | None = None
    ) -> None:
        """Insert each table's rows in one transaction of the database, then `sim`'s in the simulator's, with
        explicit ids if given (`finish` moves PostgreSQL's sequences past them)."""
        for engine, batch in ((self.db, tables), (self.sim, (sim,) if sim else ())):
            with engine.begin() as conn:
                for table, rows in batch:
                    if rows:
                        conn.execute(insert(table), rows)
                        if isinstance(rows[0].get("id"), int):
                            self._touched.add(table.name)

    # What an operation leaves behind.

    def operation(
        self,
        kind: str,
        *,
        account_id: int,
        actor: int,
        server_id: int,
        target: tuple[str, str],
        at: datetime,
        snapshot_id: int | None = None,
        op_id: str | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A succeeded operation and its two events (accepted, then succeeded), as services/operations.py and the
        workflow's `succeed` write them."""
        op_id = op_id or str(uuid.uuid4())
        request_id = os.urandom(16).hex()
        op = {
            "id": op_id,
            "account_id": account_id,
            "kind": kind,
            "target_type": target[0],
            "target_id": target[1],
            "server_id": server_id,
            "snapshot_id": snapshot_id,
            "status": "succeeded",
            "progress": 100,
            "params": None,
            "executor_id": self.executor_id,
            "attempts": 1,
            "actor_user_id": actor,
            "request_id": request_id,
            "client_ip": CLIENT_IP,
            "created_at": at,
            "updated_at": at,
            "started_at": at,
            "finished_at": at,
        }
        kind_events = OPERATION_EVENTS[kind]
        evs = [
            self.event(
                type_,
                account_id=account_id,
                actor=actor,
                target=target,
                data={"kind": kind, "server_id": server_id},
                at=at,
                operation_id=op_id,
                request_id=request_id,
            )
            for type_ in (kind_events.accepted, kind_events.succeeded)
        ]
        return op, evs

    @staticmethod
    def event(
        type_: EventType,
        *,
        account_id: int,
        actor: int,
        target: tuple[str, str],
        data: dict[str, Any],
        at: datetime,
        operation_id: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """An outbox row as services/events.py `record` writes it."""
        return {
            "id": str(uuid.uuid4()),
            "type": str(type_),
            "account_id": account_id,
            "actor_user_id": actor,
            "target_type": target[0],
            "target_id": target[1],
            "operation_id": operation_id,
            "request_id": request_id or os.urandom(16).hex(),
            "client_ip": CLIENT_IP,
            "data": data,
            "created_at": at,
        }

    # The seeded objects.

    def servers(self, count: int, *, account_id: int | None = None, actor: int | None = None) -> int:
        """`count` running catalog servers made by createServer: each with its succeeded create operation, its two
        events and its running simulator machine (whose token is the operation's id). Returns the first id."""
        account_id = account_id or self.admin_account
        actor = actor or self.admin_user
        first_server, first_machine = self.next_id(self.db, table_of(Server)), self.next_id(self.sim, sim_machines)
        plan = self.plan
        for batch in chunks(range(count)):
            servers, operations, events, machines = [], [], [], []
            for i in batch:
                server_id, machine_id = first_server + i, first_machine + i
                hostname, at = f"bench-{server_id}", self.stamp()
                op, evs = self.operation(
                    "create",
                    account_id=account_id,
                    actor=actor,
                    server_id=server_id,
                    target=("server", str(server_id)),
                    at=at,
                )
                servers.append(
                    {
                        "id": server_id,
                        "account_id": account_id,
                        "label": hostname,
                        "hostname": hostname,
                        "status": "running",
                        "provider": "simulator",
                        "provider_ref": f"sim-{machine_id}",
                        "plan_id": plan.id,
                        "image_id": self.image_id,
                        "location_id": self.location_id,
                        "ipv4": address(PUBLIC_NET, machine_id),
                        "private_ipv4": address(PRIVATE_NET, machine_id),
                        "created_at": at,
                        "updated_at": at,
                    }
                )
                operations.append(op)
                events += evs
                machines.append(
                    {
                        "id": machine_id,
                        "token": op["id"],
                        "hostname": hostname,
                        "state": "running",
                        "cpu": plan.cpu,
                        "ram_mb": plan.ram_mb,
                        "disk_gb": plan.disk_gb,
                        "image": IMAGE,
                        "location": LOCATION,
                        "ssh_keys": "",
                        "disk_generation": 0,
                        "created_at": at,
                    }
                )
            self.put(
                (table_of(Server), servers),
                (table_of(Operation), operations),
                (table_of(Event), events),
                sim=(sim_machines, machines),
            )
        return first_server

    def gpu_instances(self, count: int) -> int:
        """`count` running GPU instances rented from the simulated marketplace (POST /api/v1/instances): the
        market's rentals (offers taken in turn; each offer is marked as held by its last rental), then servers
        whose columns are what the rent workflow fills in from the market's view of them, with their succeeded
        rent operations and events. Returns the first server's id."""
        if not count:
            return 0
        first_server = self.next_id(self.db, table_of(Server))
        first_instance = self.next_id(self.sim, simmkt_instances)
        with self.sim.connect() as conn:
            offers = conn.execute(select(simmkt_offers.c.offer_id).order_by(simmkt_offers.c.offer_id)).scalars().all()
        tokens = [str(uuid.uuid4()) for _ in range(count)]
        stamps = [self.stamp() for _ in range(count)]
        for batch in chunks(range(count)):
            self.put(
                sim=(
                    simmkt_instances,
                    [
                        {
                            "id": first_instance + i,
                            "token": tokens[i],
                            "offer_id": offers[i % len(offers)],
                            "status": "running",
                            "target_status": None,
                            "ready_at": None,
                            "label": f"gpu-{first_server + i}",
                            "image": GPU_IMAGE,
                            "onstart_script": None,
                            "ssh_key": None,
                            "disk_gb": 20,
                            "created_at": stamps[i],
                        }
                        for i in batch
                    ],
                )
            )
        with self.sim.begin() as conn:
            for i in range(max(0, count - len(offers)), count):
                conn.execute(
                    update(simmkt_offers)
                    .where(simmkt_offers.c.offer_id == offers[i % len(offers)])
                    .values(rented_by=tokens[i])
                )
        # What the workflow reads back from the market once the instance runs.
        market = SimulatedMarketplace(Database(self.sim_url), name=MARKET)
        listed = {i.token: i for i in asyncio.run(market.list_instances())}
        market.db.read_engine.dispose()
        market.db.write_engine.dispose()
        for batch in chunks(range(count)):
            servers, operations, events = [], [], []
            for i in batch:
                server_id, instance, at = first_server + i, listed[tokens[i]], stamps[i]
                assert instance.offer_id is not None
                op, evs = self.operation(
                    "rent",
                    account_id=self.admin_account,
                    actor=self.admin_user,
                    server_id=server_id,
                    target=("server", str(server_id)),
                    at=at,
                    op_id=tokens[i],
                )
                details = instance_details(instance)
                servers.append(
                    {
                        "id": server_id,
                        "account_id": self.admin_account,
                        "label": instance.label,
                        "hostname": hostname_from_label(instance.label),
                        "status": "running",
                        "provider": MARKET,
                        "provider_ref": instance.instance_id,
                        "offer_id": instance.offer_id,
                        "created_at": at,
                        "updated_at": at,
                        **details,
                    }
                )
                operations.append(op)
                events += evs
            self.put((table_of(Server), servers), (table_of(Operation), operations), (table_of(Event), events))
        return first_server

    def snapshots(self, server_id: int, count: int, *, account_id: int, actor: int) -> None:
        """`count` available snapshots of one simulator server (POST /api/servers/{id}/snapshots), each with its
        succeeded operation, two events and the simulator's snapshot."""
        with self.db.connect() as conn:
            ref = conn.scalar(select(Server.provider_ref).where(Server.id == server_id))
        assert ref is not None and ref.startswith("sim-")
        machine_id = int(ref.removeprefix("sim-"))
        size = max(1, self.plan.disk_gb // 10)
        first_snapshot = self.next_id(self.db, table_of(Snapshot))
        first_sim = self.next_id(self.sim, sim_snapshots)
        for batch in chunks(range(count)):
            snapshots, operations, events, sims = [], [], [], []
            for i in batch:
                snapshot_id, at = first_snapshot + i, self.stamp()
                op, evs = self.operation(
                    "snapshot",
                    account_id=account_id,
                    actor=actor,
                    server_id=server_id,
                    target=("snapshot", str(snapshot_id)),
                    snapshot_id=snapshot_id,
                    at=at,
                )
                snapshots.append(
                    {
                        "id": snapshot_id,
                        "account_id": account_id,
                        "server_id": server_id,
                        "label": f"snapshot-{snapshot_id}",
                        "description": None,
                        "kind": "manual",
                        "status": "available",
                        "size_gb": size,
                        "provider_ref": f"simsnap-{first_sim + i}",
                        "created_at": at,
                    }
                )
                operations.append(op)
                events += evs
                sims.append(
                    {
                        "id": first_sim + i,
                        "token": op["id"],
                        "machine_id": machine_id,
                        "size_gb": size,
                        "disk_generation": 0,
                        "created_at": at,
                    }
                )
            self.put(
                (table_of(Snapshot), snapshots),
                (table_of(Operation), operations),
                (table_of(Event), events),
                sim=(sim_snapshots, sims),
            )

    def ssh_keys(self, count: int) -> None:
        """`count` ed25519 keys of the admin's account (POST /api/ssh-keys), each read by the product's own parser,
        with its ssh_key.created event."""
        first = self.next_id(self.db, table_of(SSHKey))
        prefix = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32)
        for batch in chunks(range(count)):
            keys, events = [], []
            for i in batch:
                key_id, at, title = first + i, self.stamp(), f"key-{first + i}"
                blob = base64.b64encode(prefix + os.urandom(32)).decode()
                parsed = parse_public_key(f"ssh-ed25519 {blob} bench@{key_id}")
                keys.append(
                    {
                        "id": key_id,
                        "account_id": self.admin_account,
                        "title": title,
                        "public_key": parsed.normalized,
                        "key_type": parsed.key_type,
                        "fingerprint": parsed.fingerprint,
                        "created_at": at,
                    }
                )
                events.append(
                    self.event(
                        EventType.SSH_KEY_CREATED,
                        account_id=self.admin_account,
                        actor=self.admin_user,
                        target=("ssh_key", str(key_id)),
                        data={"fingerprint": parsed.fingerprint, "title": title},
                        at=at,
                    )
                )
            self.put((table_of(SSHKey), keys), (table_of(Event), events))

    def users(self, count: int) -> list[tuple[int, int]]:
        """`count` users registered through POST /api/v1/auth/register (each with an account of its own, free tier,
        and a user.registered event); all share one password, hashed once. Returns (user id, account id) pairs."""
        first_user, first_account = self.next_id(self.db, table_of(User)), self.next_id(self.db, table_of(Account))
        password_hash = hash_password(PASSWORD)
        made = []
        for batch in chunks(range(count)):
            accounts, users, events = [], [], []
            for i in batch:
                user_id, account_id, at = first_user + i, first_account + i, self.stamp()
                name, email = f"bench-user-{user_id}", f"bench-user-{user_id}@example.com"
                accounts.append(
                    {
                        "id": account_id,
                        "name": name,
                        "email": email,
                        "company": None,
                        "tier": "free",
                        "status": "active",
                        "balance": 0,
                        "currency": "USD",
                        "created_at": at,
                    }
                )
                users.append(
                    {
                        "id": user_id,
                        "account_id": account_id,
                        "email": email,
                        "username": name,
                        "name": name,
                        "role": "user",
                        "status": "active",
                        "password_hash": password_hash,
                        "created_at": at,
                    }
                )
                events.append(
                    self.event(
                        EventType.USER_REGISTERED,
                        account_id=account_id,
                        actor=user_id,
                        target=("user", str(user_id)),
                        data={"email": email},
                        at=at,
                    )
                )
                made.append((user_id, account_id))
            self.put((table_of(Account), accounts), (table_of(User), users), (table_of(Event), events))
        return made

    def apps(self, owners: Iterable[tuple[int, int, int]]) -> None:
        """Apps made by POST /api/v1/apps with the defaults, stopped, each with its app.created event: `count` of
        them for each (user id, account id, count) given."""

        def rows() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
            for user_id, account_id, count in owners:
                for n in range(count):
                    app_id, at, name = str(uuid.uuid4()), self.stamp(), f"app-{n}"
                    app = {"id": app_id, "account_id": account_id, "name": name, "status": "stopped"}
                    app |= APP_DEFAULTS | {"replicas": 1, "created_at": at, "updated_at": at}
                    yield (
                        app,
                        self.event(
                            EventType.APP_CREATED,
                            account_id=account_id,
                            actor=user_id,
                            target=("app", app_id),
                            data={"name": name},
                            at=at,
                        ),
                    )

        for batch in chunks(rows()):
            self.put((table_of(App), [a for a, _ in batch]), (table_of(Event), [e for _, e in batch]))

    def api_keys(self, user_id: int, account_id: int, count: int) -> str:
        """`count` API keys of a user (POST /api/v1/api-keys), each with its api_key.created event; returns the
        plain text of the first (the others' are thrown away, as the API shows a key once)."""
        first = self.next_id(self.db, table_of(ApiKey))
        plains: list[str] = []
        for batch in chunks(range(count)):
            keys, events = [], []
            for i in batch:
                key_id, at, plain = first + i, self.stamp(), API_KEY_PREFIX + secrets.token_urlsafe(32)
                if not plains:
                    plains.append(plain)
                keys.append(
                    {
                        "id": key_id,
                        "user_id": user_id,
                        "name": f"key-{key_id}",
                        "prefix": plain[:10],
                        "key_hash": hash_api_key(plain),
                        "created_at": at,
                    }
                )
                events.append(
                    self.event(
                        EventType.API_KEY_CREATED,
                        account_id=account_id,
                        actor=user_id,
                        target=("api_key", str(key_id)),
                        data={"user_id": user_id, "name": f"key-{key_id}"},
                        at=at,
                    )
                )
            self.put((table_of(ApiKey), keys), (table_of(Event), events))
        return plains[0]

    def finish(self) -> None:
        """PostgreSQL's sequences past the explicit ids (the API's next insert must not collide); ANALYZE on both
        databases, so the planner knows the tables' new sizes, and on PostgreSQL VACUUM too: a database that has
        run a while has its visibility map set by autovacuum, and without it no index-only scan is cheap."""
        if self.is_postgres:
            with self.db.begin() as conn:
                for name in sorted(self._touched):
                    conn.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
                    )
        for engine in {self.db, self.sim}:
            with engine.connect() as conn:
                vacuum = "VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text(vacuum))

    def dispose(self) -> None:
        self.db.dispose()
        self.sim.dispose()


def timed(parts: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    """Run `fn`, adding its wall time to `parts[name]`."""
    t = time.perf_counter()
    try:
        return fn()
    finally:
        parts[name] = parts.get(name, 0.0) + time.perf_counter() - t


def seed(database_url: str, count: int) -> int:
    """`count` running servers of the admin's account, each with its succeeded create operation, its events and its
    running simulator machine; returns the id of the first."""
    seeder = Seeder(database_url)
    try:
        first = seeder.servers(count)
        seeder.finish()
        return first
    finally:
        seeder.dispose()
