"""Vast.ai's GPU marketplace over its REST API (https://docs.vast.ai/api-reference), as a `MarketplaceProvider`.

Shapes follow Vast.ai's API reference and its CLI (vast-ai/vast-cli): offers from `POST /bundles/` with a JSON
filter, rentals with `PUT /asks/{id}/`, instances under `/instances/`. Sizes come in MB (`gpu_ram`, `cpu_ram`) and
disk in GB. The API key is sent as a Bearer header and never appears in an error, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import weakref
from typing import Any

import httpx

from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers.base import SUPPORTED, Features, MachineState, Pacing
from cloudplane.providers.marketplace import (
    Instance,
    MarketFeature,
    Offer,
    OfferQuery,
    RentRequest,
    gpu_model_matches,
)

logger = logging.getLogger(__name__)

# `actual_status` (Vast.ai's container state). Decided from Vast.ai's status table (docs: "show instance") and
# SkyPilot's Vast provider, which waits on the same pending words and fails on the same failed ones:
# - null/created/scheduling/loading: the contract exists and the container is being placed or pulled. Billing
#   of storage has started, so a retry of rent must find this instance, not wait for RUNNING.
# - exited: the container process died. It is a failure unless the user asked to stop (see `vast_machine_state`).
# - unknown/offline: the host stopped sending heartbeats or left Vast.ai; nothing on our side brings it back.
# - frozen: paused with memory kept. It still bills the GPU, but does no work, so it reads as STOPPED.
# A status Vast.ai adds later reads as PROVISIONING (as SkyPilot does), so it is waited on, not destroyed.
VAST_PENDING_STATUSES = frozenset({None, "created", "scheduling", "loading"})
VAST_FAILED_STATUSES = frozenset({"exited", "unknown", "offline"})
VAST_STATES: dict[str | None, MachineState] = {
    **{status: MachineState.PROVISIONING for status in VAST_PENDING_STATUSES},
    **{status: MachineState.ERROR for status in VAST_FAILED_STATUSES},
    "running": MachineState.RUNNING,
    "rebooting": MachineState.REBOOTING,
    "restarting": MachineState.REBOOTING,
    "stopped": MachineState.STOPPED,
    "frozen": MachineState.STOPPED,
}


def vast_machine_state(actual_status: str | None, intended_status: str | None = None) -> MachineState:
    """The table above, corrected by `intended_status` (what the user last asked for): Vast.ai flips that at
    once and the container follows, so the gap between the two is a transition, and a stopped container that
    reports "exited" was stopped on purpose."""
    if actual_status == "exited" and intended_status == "stopped":
        return MachineState.STOPPED
    state = VAST_STATES.get(actual_status, MachineState.PROVISIONING)
    if intended_status == "stopped" and state in (MachineState.RUNNING, MachineState.PROVISIONING):
        return MachineState.STOPPING
    if intended_status == "running" and state == MachineState.STOPPED:
        return MachineState.STARTING
    return state


# Vast.ai documents no label limit; staying short keeps the console readable and the token marker intact.
MAX_LABEL_CHARS = 128
_TOKEN_MARKER = re.compile(r"\s*\[cp:([^\]\s]+)\]\s*$")


def label_with_token(label: str, token: str) -> str:
    """The label Vast.ai stores: the user's label, trimmed if need be, then the marker `find_by_token` looks for."""
    marker = f"[cp:{token}]"
    if len(marker) >= MAX_LABEL_CHARS:
        raise ValueError("rent token too long for a Vast.ai label")
    room = MAX_LABEL_CHARS - len(marker) - 1
    label = label.strip()[:room].rstrip()
    return f"{label} {marker}" if label else marker


def split_label(stored: str | None) -> tuple[str, str | None]:
    """(user label, token) from a stored label; the token is None for instances Cloudplane did not rent."""
    stored = stored or ""
    match = _TOKEN_MARKER.search(stored)
    if match is None:
        return stored, None
    return stored[: match.start()], match.group(1)


def _mb_to_gb(value: Any) -> float:
    return round(float(value or 0) / 1024, 1)


def _compute_cap(value: Any) -> Any:
    # Vast.ai writes 8.9 as 890; the GPU Cloud Manager document writes 89.
    return value // 10 if isinstance(value, int) and value >= 100 else value


class VastAIProvider:
    """Vast.ai's marketplace. Every call raises `ProviderError` on failure: retryable for timeouts, 429 and 5xx,
    not for a rejected key or a refused request."""

    simulated = False
    features = Features(MarketFeature, {MarketFeature.START: SUPPORTED, MarketFeature.STOP: SUPPORTED})
    # A rented machine takes minutes to pull its image and boot; no point asking every second.
    pacing = Pacing(poll_interval_s=5.0, timeout_s=1800.0)

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://console.vast.ai/api/v0",
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 20,
        name: str = "vast_ai",
    ) -> None:
        if not api_key:
            raise ValueError("a Vast.ai API key is required")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        # An injected client (tests) serves every caller; our own are one per event loop, as an AsyncClient's
        # connections belong to the loop that opened them, and searches (the API's loop) and rents (the workflow
        # engine's loop) run on different ones.
        self._client = client
        self._loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"VastAIProvider(base_url={self.base_url!r})"

    def _client_here(self) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        loop = asyncio.get_running_loop()
        client = self._loop_clients.get(loop)
        if client is None:
            client = self._loop_clients[loop] = httpx.AsyncClient(timeout=self._timeout_s)
        return client

    async def aclose(self) -> None:
        """Close the client this loop uses (those of other loops close with their loops)."""
        if self._client is None:
            client = self._loop_clients.pop(asyncio.get_running_loop(), None)
            if client is not None:
                await client.aclose()

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]")

    async def _request(self, method: str, path: str, *, json: Any = None, missing_ok: bool = False) -> Any:
        """One call; the reply's JSON, or None for a 404 when `missing_ok`. Never retries: a rent is not safe to
        resend blindly, and the workflow that called us decides when to try again."""
        try:
            response = await self._client_here().request(
                method,
                f"{self.base_url}{path}",
                json=json,
                headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
                timeout=self._timeout_s,
            )
        except httpx.TimeoutException:
            logger.warning("vast.ai %s %s timed out", method, path)
            raise ProviderError(f"Vast.ai did not answer {method} {path} in time", retryable=True) from None
        except httpx.HTTPError as exc:
            logger.warning("vast.ai %s %s failed: %s", method, path, type(exc).__name__)
            raise ProviderError(f"Could not reach Vast.ai ({type(exc).__name__})", retryable=True) from None
        status = response.status_code
        logger.debug("vast.ai %s %s -> %s", method, path, status)
        if status == 404 and missing_ok:
            return None
        if status in (401, 403):
            raise ProviderError("Vast.ai rejected the API key", retryable=False, http_status=status)
        if status == 429:
            raise ProviderError("Vast.ai is rate limiting requests", retryable=True, http_status=status)
        if status >= 500:
            raise ProviderError(f"Vast.ai failed with HTTP {status}", retryable=True, http_status=status)
        if status >= 400:
            error, message = self._error_text(response)
            unavailable = error == "no_such_ask" or "not available" in message.lower()
            raise ProviderError(
                f"Vast.ai refused {method} {path}: {message or error or f'HTTP {status}'}",
                retryable=False,
                http_status=status,
                **({"reason": "offer_unavailable"} if unavailable else {}),
            )
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"Vast.ai sent a reply to {method} {path} that is not JSON", retryable=True) from None

    def _error_text(self, response: httpx.Response) -> tuple[str, str]:
        """Vast.ai's {"success": false, "error": ..., "msg": ...}; some endpoints send only msg, message or text."""
        try:
            body = response.json()
        except ValueError:
            return "", self._redact(response.text).strip()[:200]  # redact before cutting: no half key
        if not isinstance(body, dict):
            return "", ""
        message = str(body.get("msg") or body.get("message") or body.get("detail") or "")
        return self._redact(str(body.get("error") or ""))[:100], self._redact(message)[:300]

    def _offer(self, raw: dict[str, Any]) -> Offer:
        reliability = raw.get("reliability2", raw.get("reliability")) or 0.0
        return Offer(
            provider=self.name,
            offer_id=str(raw["id"]),
            machine_id=raw.get("machine_id"),
            name=f"Vast.ai Machine {raw.get('machine_id')}",  # as the GPU Cloud Manager document names them
            gpu_model=str(raw.get("gpu_name") or ""),
            gpu_count=int(raw.get("num_gpus") or 0),
            gpu_ram_gb=_mb_to_gb(raw.get("gpu_ram")),
            cpu_count=int(raw.get("cpu_cores_effective") or raw.get("cpu_cores") or 0),
            ram_gb=_mb_to_gb(raw.get("cpu_ram")),
            storage_gb=float(raw.get("disk_space") or 0),
            price_per_hour=float(raw.get("dph_total") or 0),
            region=str(raw.get("geolocation") or ""),
            # Vast.ai's "rented" can be null; only an explicit true means someone holds it.
            available=bool(raw.get("rentable")) and raw.get("rented") is not True,
            reliability=float(reliability),
            extra={
                key: value
                for key, value in (
                    ("compute_cap", _compute_cap(raw.get("compute_cap"))),
                    ("score", raw.get("score")),
                    ("dlperf", raw.get("dlperf")),
                    ("cuda_max_good", raw.get("cuda_max_good")),
                    ("verified", raw.get("verified")),
                )
                if value is not None
            },
        )

    def _instance(self, raw: dict[str, Any]) -> Instance:
        actual = raw.get("actual_status")
        label, token = split_label(raw.get("label"))
        message = (raw.get("status_msg") or "").strip()
        word = actual or "pending"
        # mem_limit is the container's own memory in GB; cpu_ram is the whole host's, in MB.
        mem_limit = raw.get("mem_limit")
        ram_gb = (
            round(float(mem_limit), 1)
            if isinstance(mem_limit, int | float)
            else _mb_to_gb(float(raw.get("cpu_ram") or 0) * float(raw.get("gpu_frac") or 1))
        )
        ssh_port = raw.get("ssh_port")
        return Instance(
            provider=self.name,
            instance_id=str(raw["id"]),
            offer_id=str(raw["ask_contract_id"]) if raw.get("ask_contract_id") is not None else None,
            machine_id=raw.get("machine_id"),
            state=vast_machine_state(actual, raw.get("intended_status")),
            status_detail=f"{word}: {message}" if message else word,
            label=label,
            gpu_model=str(raw.get("gpu_name") or ""),
            gpu_count=int(raw.get("num_gpus") or 0),
            cpu_count=int(raw.get("cpu_cores_effective") or raw.get("cpu_cores") or 0),
            ram_gb=ram_gb,
            storage_gb=float(raw.get("disk_space") or 0),
            price_per_hour=float(raw.get("dph_total") or 0),
            region=str(raw.get("geolocation") or ""),
            image=str(raw.get("image_uuid") or ""),
            onstart_script=raw.get("onstart"),
            ssh_host=raw.get("ssh_host") or None,
            ssh_port=int(ssh_port) if ssh_port is not None else None,
            public_ipaddr=(raw.get("public_ipaddr") or "").strip() or None,
            token=token,
        )

    @staticmethod
    def search_filter(query: OfferQuery) -> dict[str, Any]:
        """The JSON filter `POST /bundles/` takes, as the Vast.ai CLI builds it. A region that is a two-letter
        country code is filtered by Vast.ai (its geolocation filter takes those); any other region is matched
        against the offer's geolocation text here."""
        body: dict[str, Any] = {"verified": {"eq": True}, "external": {"eq": False}}
        if query.available:
            body["rentable"] = {"eq": True}
            body["rented"] = {"eq": False}
        if query.gpu_model:
            body["gpu_name"] = {"eq": query.gpu_model.replace("_", " ")}
        if query.min_gpu_count is not None:
            body["num_gpus"] = {"gte": query.min_gpu_count}
        if query.max_price is not None:
            body["dph_total"] = {"lte": query.max_price}
        region = (query.region or "").strip()
        if len(region) == 2 and region.isalpha():
            body["geolocation"] = {"eq": region.upper()}
        order = {"price": ["dph_total", "asc"], "reliability": ["reliability2", "desc"]}.get(query.sort or "")
        body["order"] = [order or ["score", "desc"]]
        body["type"] = "on-demand"
        body["limit"] = max(query.limit, 0)
        return body

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        """Vast.ai's verified on-demand offers matching `query`. Read-only."""
        reply = await self._request("POST", "/bundles/", json=self.search_filter(query))
        raw_offers = reply.get("offers") if isinstance(reply, dict) else None
        if isinstance(raw_offers, dict):
            raw_offers = [raw_offers]  # the API reference's example shows one offer as an object
        if not isinstance(raw_offers, list):
            raise ProviderError("Vast.ai's offer search reply has no offers list", retryable=True)
        offers = [self._offer(raw) for raw in raw_offers if isinstance(raw, dict) and "id" in raw]
        region = (query.region or "").strip()
        if region and not (len(region) == 2 and region.isalpha()):
            offers = [o for o in offers if region.lower() in o.region.lower()]
        if query.gpu_model:
            offers = [o for o in offers if gpu_model_matches(query.gpu_model, o.gpu_model)]
        if query.available:
            offers = [o for o in offers if o.available]
        return offers[: max(query.limit, 0)]

    async def rent(self, request: RentRequest) -> Instance:
        """`PUT /asks/{offer_id}/`: billing starts now. Idempotent on `request.token`, which goes into the
        instance label: the call first lists instances for it, so a retry after a timeout, a 5xx or a crash finds
        the instance the lost reply was about instead of renting a second, paid one. Never call the PUT without
        that look-up. The SSH key is attached after the rent (`POST /instances/{id}/ssh/`); if that fails the
        instance is kept and the error raised, and the retry that finds the instance attaches the key again."""
        existing = await self.find_by_token(request.token)
        if existing is not None:
            if request.ssh_key:
                await self._attach_ssh_key(existing.instance_id, request.ssh_key, again=True)
            return existing
        body: dict[str, Any] = {
            "client_id": "me",
            "image": request.image,
            "disk": request.disk_gb,
            "label": label_with_token(request.label, request.token),
            "runtype": "ssh",
        }
        if request.onstart_script:
            body["onstart"] = request.onstart_script
        reply = await self._request("PUT", f"/asks/{request.offer_id}/", json=body)
        if not isinstance(reply, dict) or not reply.get("success") or reply.get("new_contract") is None:
            raise ProviderError(
                f"Vast.ai did not rent offer {request.offer_id}: {self._redact(str(reply))[:200]}",
                retryable=False,
                reason="offer_unavailable",
            )
        instance_id = str(reply["new_contract"])
        logger.info("vast.ai rented offer %s as instance %s", request.offer_id, instance_id)
        if request.ssh_key:
            await self._attach_ssh_key(instance_id, request.ssh_key)
        instance = await self.get_instance(instance_id)
        if instance is None:
            # Just made and not listed yet: report what we know; the next poll has the rest.
            instance = Instance(
                provider=self.name,
                instance_id=instance_id,
                state=MachineState.PROVISIONING,
                status_detail="pending",
                label=request.label,
                image=request.image,
                onstart_script=request.onstart_script,
                storage_gb=float(request.disk_gb),
                token=request.token,
            )
        return dataclasses.replace(instance, offer_id=instance.offer_id or request.offer_id)

    async def _attach_ssh_key(self, instance_id: str, ssh_key: str, *, again: bool = False) -> None:
        try:
            await self._request("POST", f"/instances/{instance_id}/ssh/", json={"ssh_key": ssh_key})
        except ProviderError as exc:
            # On a retry the key is usually attached already, and Vast.ai refuses a duplicate.
            if not again or exc.retryable or exc.details.get("http_status") in (401, 403):
                raise
            logger.info("vast.ai kept the SSH key already on instance %s", instance_id)

    async def find_by_token(self, token: str) -> Instance | None:
        for instance in await self.list_instances():
            if instance.token == token:
                return instance
        return None

    async def get_instance(self, instance_id: str) -> Instance | None:
        """`GET /instances/{id}/`, whose reply holds the one instance under the plural key "instances"."""
        reply = await self._request("GET", f"/instances/{instance_id}/", missing_ok=True)
        raw = reply.get("instances") if isinstance(reply, dict) else None
        if isinstance(raw, list):
            raw = next((r for r in raw if isinstance(r, dict) and str(r.get("id")) == instance_id), None)
        if not isinstance(raw, dict) or raw.get("id") is None:
            return None
        return self._instance(raw)

    async def list_instances(self) -> list[Instance]:
        reply = await self._request("GET", "/instances/")
        raw_instances = reply.get("instances") if isinstance(reply, dict) else None
        if not isinstance(raw_instances, list):
            raise ProviderError("Vast.ai's instance list reply has no instances list", retryable=True)
        return [self._instance(raw) for raw in raw_instances if isinstance(raw, dict) and raw.get("id") is not None]

    async def _set_state(self, instance_id: str, state: str) -> None:
        reply = await self._request("PUT", f"/instances/{instance_id}/", json={"state": state}, missing_ok=True)
        if reply is None:
            raise NotFound(f"No Vast.ai instance {instance_id}", ref=instance_id)

    async def start(self, instance_id: str) -> None:
        """`PUT /instances/{id}/ {"state": "running"}`; asking again is harmless. It may wait in "scheduling"
        until the host has the GPUs free again."""
        await self._set_state(instance_id, "running")

    async def stop(self, instance_id: str) -> None:
        """`PUT /instances/{id}/ {"state": "stopped"}`; asking again is harmless. Storage keeps billing."""
        await self._set_state(instance_id, "stopped")

    async def destroy(self, instance_id: str) -> None:
        """`DELETE /instances/{id}/`: irreversible, the disk goes. An unknown instance is already gone."""
        await self._request("DELETE", f"/instances/{instance_id}/", missing_ok=True)
