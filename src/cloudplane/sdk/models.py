"""What the SDK returns: plain dataclasses read from the service's replies, each keeping the reply it came from
in `raw` (for `--json` output and fields this SDK does not name)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

T = TypeVar("T")

FINISHED = frozenset({"succeeded", "failed"})


@dataclass(frozen=True)
class Plan:
    slug: str
    name: str
    cpu: int
    ram_mb: int
    disk_gb: int
    price_monthly: Decimal
    available: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Plan:
        return cls(d["slug"], d["name"], d["cpu"], d["ram"], d["disk"], Decimal(d["price"]), d["available"], d)


@dataclass(frozen=True)
class Image:
    slug: str
    name: str
    distribution: str
    version: str
    architecture: str
    available: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Image:
        return cls(d["slug"], d["name"], d["distribution"], d["version"], d["architecture"], d["available"], d)


@dataclass(frozen=True)
class Location:
    slug: str
    name: str
    country: str
    region: str
    available: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Location:
        return cls(d["slug"], d["name"], d["country"], d["region"], d["available"], d)


@dataclass(frozen=True)
class SSHKey:
    id: int
    title: str
    fingerprint: str
    public_key: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> SSHKey:
        return cls(d["id"], d["title"], d["fingerprint"], d["public_key"], d)


@dataclass(frozen=True)
class Snapshot:
    id: int
    server_id: int
    label: str
    status: str
    size_gb: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Snapshot:
        return cls(d["id"], d["server_id"], d["label"], d["status"], d["size"], d)


@dataclass(frozen=True)
class Server:
    id: int
    label: str
    hostname: str
    status: str
    task_state: str | None
    ip_address: str | None
    plan: str
    image: str
    location: str
    root_password: str | None = field(repr=False, compare=False)
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Server:
        return cls(
            d["id"],
            d["label"],
            d["hostname"],
            d["status"],
            d.get("task_state"),
            d.get("ip_address"),
            d["plan"]["slug"],
            d["image"]["slug"],
            d["location"]["slug"],
            d.get("root_password"),
            d,
        )


@dataclass(frozen=True)
class Account:
    email: str
    name: str
    balance: Decimal
    currency: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Account:
        return cls(d.get("email", ""), d.get("name", ""), Decimal(d.get("balance", 0)), d.get("currency", ""), d)


@dataclass(frozen=True)
class Operation:
    """A long action (create, stop, snapshot ...): its status and progress as last read. `wait()` follows it
    until it ends (awaitable on an AsyncClient)."""

    id: str
    kind: str
    status: str  # pending, running, succeeded, failed
    progress: int
    target_type: str
    target_id: int | str
    error_code: str | None
    error_message: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    _wait: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, d: dict[str, Any], wait: Callable[..., Any] | None = None) -> Operation:
        error = d.get("error") or {}
        target = d.get("target") or {}
        return cls(
            d["id"],
            d["kind"],
            d["status"],
            d["progress"],
            target.get("type", ""),
            target.get("id", ""),
            error.get("code"),
            error.get("message"),
            d,
            wait,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def wait(self, timeout: float | None = 600.0, on_progress: Callable[[Operation], Any] | None = None) -> Any:
        """Poll until the operation ends; the finished Operation. Raises OperationFailed if it failed and
        OperationTimeout if `timeout` seconds pass first. `on_progress(operation)` is called with each reading
        whose status or progress moved."""
        if self._wait is None:
            raise RuntimeError("this Operation is not bound to a client")
        return self._wait(self, timeout, on_progress)


@dataclass(frozen=True)
class Accepted(Generic[T]):
    """The reply to an action: the resource as the service returned it (None for a delete) and the operation that
    carries the action out (None for one the service finished at once). Unpacks: `server, op = ...`."""

    resource: T | None
    operation: Operation | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.resource, self.operation))
