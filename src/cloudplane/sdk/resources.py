"""The resources of a client (servers, ssh_keys, snapshots, plans, images, locations, operations, account), written
once as plans over the sans-IO core; a sync Client runs them to their result, an AsyncClient to an awaitable."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from cloudplane.sdk.errors import Ambiguous, NotFound, OperationFailed, OperationTimeout
from cloudplane.sdk.models import Accepted, Account, Image, Location, Operation, Plan, Server, Snapshot, SSHKey
from cloudplane.sdk.protocol import Plan as Steps
from cloudplane.sdk.protocol import Request, RetryPolicy, Sleep, call

T = TypeVar("T")
PER_PAGE = 100  # the service's largest page


class Runner(Protocol):
    policy: RetryPolicy
    poll_interval_s: float

    def run(self, plan: Steps[Any]) -> Any:
        """The plan's result (sync client) or an awaitable of it (async client)."""


class Resource:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def _run(self, plan: Steps[Any]) -> Any:
        return self._runner.run(plan)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Steps[Any]:
        data, _ = yield from call(Request("GET", path, params=params), self._runner.policy)
        return data

    def _all(self, path: str, key: str, make: Callable[[dict[str, Any]], T]) -> Steps[list[T]]:
        """Every item of a paged list, page after page."""
        items: list[T] = []
        page = 1
        while True:
            data = yield from self._get(path, {"page": page, "per_page": PER_PAGE})
            items.extend(make(d) for d in data[key])
            if not data[key] or len(items) >= data["total"]:
                return items
            page += 1

    def _operation(self, operation_id: str) -> Steps[Operation]:
        data = yield from self._get(f"/operations/{operation_id}")
        return Operation.of(data, self._bound_wait)

    def _accepted(self, request: Request, make: Callable[[dict[str, Any]], T] | None) -> Steps[Accepted[T]]:
        """Send an action; the resource it returned and its operation (named in the body's `operation_id` or the
        Operation-Location header)."""
        data, reply = yield from call(request, self._runner.policy)
        operation_id = (data or {}).get("operation_id") if isinstance(data, dict) else None
        if not operation_id and (location := reply.headers.get("operation-location")):
            operation_id = location.rstrip("/").rsplit("/", 1)[-1]
        operation = (yield from self._operation(operation_id)) if operation_id else None
        return Accepted(make(data) if make and data else None, operation)

    def _bound_wait(self, operation: Operation, timeout: float | None, on_progress: Any) -> Any:
        return self._run(self._wait(operation, timeout, on_progress))

    def _wait(
        self, operation: Operation, timeout: float | None, on_progress: Callable[[Operation], Any] | None
    ) -> Steps[Operation]:
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = self._runner.poll_interval_s
        seen: tuple[str, int] | None = None
        current = operation
        while True:
            if (current.status, current.progress) != seen:
                seen = (current.status, current.progress)
                if on_progress is not None:
                    on_progress(current)
            if current.status == "failed":
                message = current.error_message or f"operation {current.kind} failed"
                raise OperationFailed(message, code=current.error_code or "OPERATION_FAILED", operation=current)
            if current.finished:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise OperationTimeout(
                    f"operation {current.id} ({current.kind}) still {current.status} after {timeout}s",
                    operation=current,
                )
            pause = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            yield Sleep(pause)
            interval = min(interval * 1.5, 2.0)
            current = yield from self._operation(current.id)

    def _named(
        self,
        name_or_id: str | int,
        by_id: Callable[[int], Steps[T]],
        every: Callable[[], Steps[list[T]]],
        name_of: Callable[[T], str],
        kind: str,
    ) -> Steps[T]:
        """The object with this id or name: NotFound, or Ambiguous (listing the matches' ids) if several share it."""
        text = str(name_or_id)
        if text.isascii() and text.isdigit():
            try:
                return (yield from by_id(int(text)))
            except NotFound:
                pass  # a name may be all digits too
        matches = [o for o in (yield from every()) if name_of(o) == text]
        if not matches:
            raise NotFound(f"No {kind} named {text!r}", status=404, code="NOT_FOUND", details={"name": text})
        if len(matches) > 1:
            ids = [getattr(m, "id", None) for m in matches]
            raise Ambiguous(
                f"{len(matches)} {kind}s are named {text!r} (ids {', '.join(map(str, ids))}): give the id",
                code="AMBIGUOUS_NAME",
                details={"name": text, "matches": ids},
            )
        return matches[0]


class Servers(Resource):
    def list(self) -> Any:
        """All your servers: list[Server]."""
        return self._run(self._all("/servers", "servers", Server.of))

    def get(self, server_id: int) -> Any:
        return self._run(self._get_server(server_id))

    def _get_server(self, server_id: int) -> Steps[Server]:
        return Server.of((yield from self._get(f"/servers/{int(server_id)}")))

    def find(self, name_or_id: str | int) -> Any:
        """The server with this id or label; NotFound, or Ambiguous if several share the label."""
        return self._run(self._find(name_or_id))

    def _find(self, name_or_id: str | int) -> Steps[Server]:
        every = lambda: self._all("/servers", "servers", Server.of)  # noqa: E731
        return (yield from self._named(name_or_id, self._get_server, every, lambda s: s.label, "server"))

    def create(
        self,
        *,
        label: str,
        plan: str,
        image: str,
        location: str,
        hostname: str | None = None,
        password: str | None = None,
        ssh_keys: builtins.list[int] | None = None,
    ) -> Any:
        """Create a server: Accepted(server, operation); the server's `root_password` is set when the service
        generated one (shown only here)."""
        body: dict[str, Any] = {"label": label, "plan_slug": plan, "image_slug": image, "location_slug": location}
        if hostname:
            body["hostname"] = hostname
        if password:
            body["password"] = password
        if ssh_keys:
            body["ssh_keys"] = list(ssh_keys)
        return self._run(self._accepted(Request.post("/servers", body), Server.of))

    def _action(self, server_id: int, action: str) -> Any:
        return self._run(self._accepted(Request.post(f"/servers/{int(server_id)}/{action}"), Server.of))

    def start(self, server_id: int) -> Any:
        """Accepted(server, operation)."""
        return self._action(server_id, "start")

    def stop(self, server_id: int) -> Any:
        return self._action(server_id, "stop")

    def reboot(self, server_id: int) -> Any:
        return self._action(server_id, "reboot")

    def delete(self, server_id: int) -> Any:
        """Delete a server and its disk: Accepted(None, operation)."""
        return self._run(self._accepted(Request("DELETE", f"/servers/{int(server_id)}"), None))


class SSHKeys(Resource):
    def list(self) -> Any:
        return self._run(self._all("/ssh-keys", "ssh_keys", SSHKey.of))

    def get(self, key_id: int) -> Any:
        return self._run(self._get_key(key_id))

    def _get_key(self, key_id: int) -> Steps[SSHKey]:
        return SSHKey.of((yield from self._get(f"/ssh-keys/{int(key_id)}")))

    def find(self, name_or_id: str | int) -> Any:
        """The key with this id or title."""
        return self._run(self._find(name_or_id))

    def _find(self, name_or_id: str | int) -> Steps[SSHKey]:
        every = lambda: self._all("/ssh-keys", "ssh_keys", SSHKey.of)  # noqa: E731
        return (yield from self._named(name_or_id, self._get_key, every, lambda k: k.title, "SSH key"))

    def create(self, *, title: str, public_key: str) -> Any:
        """Add a public key: the SSHKey (no operation: it is there at once)."""
        return self._run(self._create(title, public_key))

    def _create(self, title: str, public_key: str) -> Steps[SSHKey]:
        data, _ = yield from call(Request.post("/ssh-keys", {"title": title, "key": public_key}), self._runner.policy)
        return SSHKey.of(data)

    def delete(self, key_id: int) -> Any:
        return self._run(self._accepted(Request("DELETE", f"/ssh-keys/{int(key_id)}"), None))


class Snapshots(Resource):
    def list(self, server_id: int) -> Any:
        return self._run(self._all(f"/servers/{int(server_id)}/snapshots", "snapshots", Snapshot.of))

    def get(self, server_id: int, snapshot_id: int) -> Any:
        return self._run(self._get_snapshot(server_id, snapshot_id))

    def _get_snapshot(self, server_id: int, snapshot_id: int) -> Steps[Snapshot]:
        return Snapshot.of((yield from self._get(f"/servers/{int(server_id)}/snapshots/{int(snapshot_id)}")))

    def find(self, server_id: int, name_or_id: str | int) -> Any:
        """The server's snapshot with this id or label."""
        return self._run(self._find(server_id, name_or_id))

    def _find(self, server_id: int, name_or_id: str | int) -> Steps[Snapshot]:
        one = lambda snapshot_id: self._get_snapshot(server_id, snapshot_id)  # noqa: E731
        every = lambda: self._all(f"/servers/{int(server_id)}/snapshots", "snapshots", Snapshot.of)  # noqa: E731
        return (yield from self._named(name_or_id, one, every, lambda s: s.label, "snapshot"))

    def create(self, server_id: int, *, label: str, description: str | None = None) -> Any:
        """Snapshot a server: Accepted(snapshot, operation)."""
        body = {"label": label, **({"description": description} if description else {})}
        return self._run(self._accepted(Request.post(f"/servers/{int(server_id)}/snapshots", body), Snapshot.of))

    def restore(self, server_id: int, snapshot_id: int) -> Any:
        """Put the server's disk back as it was: Accepted(server, operation)."""
        path = f"/servers/{int(server_id)}/snapshots/{int(snapshot_id)}/restore"
        return self._run(self._accepted(Request.post(path), Server.of))

    def delete(self, server_id: int, snapshot_id: int) -> Any:
        path = f"/servers/{int(server_id)}/snapshots/{int(snapshot_id)}"
        return self._run(self._accepted(Request("DELETE", path), None))


class Operations(Resource):
    def get(self, operation_id: str) -> Any:
        return self._run(self._operation(operation_id))

    def list(self, *, status: str | None = None, limit: int = 20) -> Any:
        """Your latest operations, newest first (from /api/v1/operations: targets in its words, e.g. vps-12)."""
        return self._run(self._list(status, limit))

    def _list(self, status: str | None, limit: int) -> Steps[builtins.list[Operation]]:
        params: dict[str, Any] = {"limit": max(1, min(limit, 100))}
        if status:
            params["status"] = status
        data = yield from self._get("/v1/operations", params)
        return [Operation.of(d, self._bound_wait) for d in data["data"]]

    def wait(
        self, operation_id: str, timeout: float | None = 600.0, on_progress: Callable[[Operation], Any] | None = None
    ) -> Any:
        """Follow an operation by id until it ends (see Operation.wait)."""
        return self._run(self._wait_by_id(operation_id, timeout, on_progress))

    def _wait_by_id(self, operation_id: str, timeout: float | None, on_progress: Any) -> Steps[Operation]:
        operation = yield from self._operation(operation_id)
        return (yield from self._wait(operation, timeout, on_progress))


class Catalog(Resource):
    path = ""
    key = ""
    make: Callable[[dict[str, Any]], Any]

    def list(self) -> Any:
        return self._run(self._all(self.path, self.key, type(self).make))


class Plans(Catalog):
    path, key, make = "/plans", "plans", Plan.of


class Images(Catalog):
    path, key, make = "/images", "images", Image.of


class Locations(Catalog):
    path, key, make = "/locations", "locations", Location.of


class AccountInfo(Resource):
    def get(self) -> Any:
        """The account the token belongs to (also how `cloudplane login` checks a token)."""
        return self._run(self._account())

    def _account(self) -> Steps[Account]:
        return Account.of((yield from self._get("/account")))
