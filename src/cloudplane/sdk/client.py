"""The two shells around the sans-IO core: `Client` (blocking, httpx.Client) and `AsyncClient` (httpx.AsyncClient).
Each only performs the instructions a plan yields (one HTTP exchange, or a sleep); what to send, when to retry and
what a reply means live in protocol.py and resources.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from cloudplane import __version__
from cloudplane.sdk import resources as r
from cloudplane.sdk.protocol import Done, Plan, Reply, Request, RetryPolicy, Sleep, TransportFailure, advance

API_PREFIX = "/api"  # the LetsCloud face; /api/v1 (operations list) hangs below it


class _Base:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        poll_interval_s: float = 0.5,
        user_agent: str = f"cloudplane-sdk/{__version__}",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = retry or RetryPolicy()
        self.poll_interval_s = poll_interval_s
        self._options: dict[str, Any] = {
            "base_url": self.base_url + API_PREFIX,
            "timeout": timeout_s,
            "headers": {"Authorization": f"Bearer {token}", "User-Agent": user_agent, "Accept": "application/json"},
        }
        self.servers = r.Servers(self)
        self.ssh_keys = r.SSHKeys(self)
        self.snapshots = r.Snapshots(self)
        self.operations = r.Operations(self)
        self.plans = r.Plans(self)
        self.images = r.Images(self)
        self.locations = r.Locations(self)
        self.account = r.AccountInfo(self)

    def run(self, plan: Plan[Any]) -> Any:
        raise NotImplementedError  # each shell carries plans out its own way

    @staticmethod
    def _arguments(request: Request) -> dict[str, Any]:
        return {"json": request.json, "params": request.params, "headers": request.headers}

    @staticmethod
    def _reply(response: httpx.Response) -> Reply:
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


class Client(_Base):
    """A blocking client: `Client("https://cloud.example.com", "cp_...")`; use it as a context manager or close()."""

    def __init__(self, base_url: str, token: str, *, transport: httpx.BaseTransport | None = None, **kw: Any) -> None:
        super().__init__(base_url, token, **kw)
        self._http = httpx.Client(transport=transport, **self._options)

    def run(self, plan: Plan[Any]) -> Any:
        outcome: Reply | TransportFailure | None = None
        while not isinstance(step := advance(plan, outcome), Done):
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                outcome = None
            else:
                outcome = self._exchange(step)
        return step.value

    def _exchange(self, request: Request) -> Reply | TransportFailure:
        try:
            return self._reply(self._http.request(request.method, request.path, **self._arguments(request)))
        except httpx.TransportError as e:
            return TransportFailure(f"{type(e).__name__}: {e}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The same resources, every call awaitable: `server, op = await client.servers.create(...)`."""

    def __init__(
        self, base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None, **kw: Any
    ) -> None:
        super().__init__(base_url, token, **kw)
        self._http = httpx.AsyncClient(transport=transport, **self._options)

    async def run(self, plan: Plan[Any]) -> Any:
        outcome: Reply | TransportFailure | None = None
        while not isinstance(step := advance(plan, outcome), Done):
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                outcome = None
            else:
                outcome = await self._exchange(step)
        return step.value

    async def _exchange(self, request: Request) -> Reply | TransportFailure:
        try:
            return self._reply(await self._http.request(request.method, request.path, **self._arguments(request)))
        except httpx.TransportError as e:
            return TransportFailure(f"{type(e).__name__}: {e}")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
