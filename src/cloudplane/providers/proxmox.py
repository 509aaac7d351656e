"""The Proxmox VE provider: QEMU VMs on one node of a Proxmox VE cluster, driven through its HTTP API (proxmoxer).

A server is a VM cloned (full or linked) from a template VM that has a cloud-init drive, given its size, its
hostname and root's keys through Proxmox's cloud-init options, then started. Long calls answer with a task UPID;
every such call waits for its task to stop and fails with the task's log tail when it did not end OK.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from cloudplane.domain.errors import NotFound, ProxmoxError
from cloudplane.providers.base import (
    SUPPORTED,
    Capabilities,
    CreateRequest,
    Feature,
    Features,
    FirewallRule,
    Machine,
    MachineState,
    Metrics,
    RebuildRequest,
    SnapshotInfo,
    not_implemented_yet,
    pages_of,
    refusal,
    refused,
    token_hash,
)
from cloudplane.providers.terminal import Terminal

try:
    import requests
    from proxmoxer import ProxmoxAPI, ResourceException
except ImportError:  # the provider refuses to start without them; importing this module stays cheap and safe
    ProxmoxAPI = None
    ResourceException = None
    requests = None  # type: ignore[assignment]

T = TypeVar("T")
log = logging.getLogger(__name__)

# Every Cloudplane VM carries both tags: `cloudplane`, and `cp-<hash of its create token>` to find it by.
TAG = "cloudplane"
TOKEN_TAG_PREFIX = "cp-"
SNAPSHOT_PREFIX = "cps-"
# The VM's description holds its whole token (a tag only has room for its hash); set by the clone itself, so a VM
# whose create stopped before it was tagged is still recognised by the create's retry.
DESCRIPTION_TOKEN = re.compile(r"^cloudplane-token: (\S+)$", re.MULTILINE)
VMID = re.compile(r"[0-9]{3,9}", re.ASCII)
DISK_SIZE = re.compile(r"(?:^|,)size=([0-9.]+)([KMGT]?)(?:,|$)")
UNITS_GB = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1 / 1024**3}
NEXTID_ATTEMPTS = 5

# Proxmox's states, from `status` (running, stopped) refined by `qmpstatus` (QEMU's own: paused, prelaunch...)
# where the answer has it, and overridden by a `lock` that says the VM is being made or rolled back.
STATES: dict[str, MachineState] = {
    "running": MachineState.RUNNING,
    "stopped": MachineState.STOPPED,
    "paused": MachineState.SUSPENDED,  # frozen in memory by `suspend`; `resume` thaws it, `stop` powers it off
    "prelaunch": MachineState.STARTING,
    "inmigrate": MachineState.PROVISIONING,
    "postmigrate": MachineState.RUNNING,
    "shutdown": MachineState.STOPPING,
    "suspended": MachineState.SUSPENDED,
    "internal-error": MachineState.ERROR,
    "io-error": MachineState.ERROR,
    "guest-panicked": MachineState.ERROR,
}
LOCK_STATES: dict[str, MachineState] = {
    "clone": MachineState.PROVISIONING,
    "create": MachineState.PROVISIONING,
    "rollback": MachineState.RESTORING,
    # Hibernated to disk by someone on the host (a stopped VM with its memory saved): `start` wakes it.
    "suspended": MachineState.STOPPED,
}
PENDING_STATES = frozenset({"prelaunch", "inmigrate", "shutdown"})
FAILED_STATES = frozenset({"internal-error", "io-error", "guest-panicked"})


def machine_state(status: Mapping[str, Any]) -> MachineState:
    """The one mapping of a Proxmox VM's status (`status/current`, or an entry of the node's VM list) to ours."""
    lock = status.get("lock")
    if lock in LOCK_STATES:
        return LOCK_STATES[lock]
    return STATES.get(status.get("qmpstatus") or status.get("status") or "", MachineState.ERROR)


def token_tag(token: str) -> str:
    return f"{TOKEN_TAG_PREFIX}{token_hash(token)}"


def snapshot_name(token: str) -> str:
    return f"{SNAPSHOT_PREFIX}{token_hash(token)}"


def tags_of(entry: Mapping[str, Any]) -> set[str]:
    """Proxmox lists tags separated by `;` (older versions also wrote `,` or spaces)."""
    return {t for t in re.split(r"[;, ]+", str(entry.get("tags") or "")) if t}


def cloudplane_tag(entry: Mapping[str, Any]) -> str | None:
    """The `cp-<hash>` tag of a Cloudplane VM; None for any other VM (and for templates)."""
    tags = tags_of(entry)
    if TAG not in tags or entry.get("template"):
        return None
    return next((t for t in sorted(tags) if t.startswith(TOKEN_TAG_PREFIX)), None)


def encode_ssh_keys(keys: Sequence[str]) -> str:
    """`sshkeys` as Proxmox wants it: the keys one a line, then URL-encoded as a whole (spaces as %20, `+` as %2B),
    on top of the form encoding of the request itself."""
    return quote("\n".join(keys), safe="")


def parse_token_id(token_id: str) -> tuple[str, str]:
    """`user@realm!tokenname` (as Proxmox shows a token's id) into the user and the token's name."""
    user, bang, name = token_id.partition("!")
    if not bang or "@" not in user or not name:
        raise ProxmoxError(
            f"CLOUDPLANE_PROXMOX_TOKEN_ID {token_id!r} is not user@realm!tokenname (e.g. cloudplane@pve!control)",
            retryable=False,
        )
    return user, name


def disk_size_gb(spec: str | None) -> float:
    """The size in a disk's config line (`local-lvm:vm-105-disk-0,size=2G`); 0 when it has none."""
    match = DISK_SIZE.search(spec or "")
    return float(match.group(1)) * UNITS_GB[match.group(2)] if match else 0.0


class ProxmoxProvider:
    """Machines are QEMU VMs of one node tagged `cloudplane` and `cp-<token hash>`; other VMs are never touched.

    A machine's ref is its VMID; a snapshot's ref is `<vmid>/<snapshot name>`. Images are templates: `templates`
    maps catalog image slugs to template VMIDs, and `default_template` (when set) serves any other image. Root gets
    the request's keys (`sshkeys`) and password hash (`cipassword`: Proxmox keeps a crypt hash as it is and passes it
    on to cloud-init), the VM's name is the hostname (Proxmox's cloud-init takes the hostname from it), `ipconfig0`
    says how it gets its address. Addresses are not reported: Proxmox only knows them through the guest agent.
    """

    features = Features(
        Feature,
        {
            Feature.CREATE: SUPPORTED,
            Feature.START: SUPPORTED,
            Feature.STOP: SUPPORTED,
            Feature.REBOOT: SUPPORTED,
            Feature.DELETE: SUPPORTED,
            Feature.SNAPSHOT: SUPPORTED,
            Feature.RESTORE: SUPPORTED,
            Feature.DELETE_SNAPSHOT: SUPPORTED,
            Feature.METRICS: SUPPORTED,
            Feature.SUSPEND: SUPPORTED,
            Feature.RESUME: SUPPORTED,
            Feature.REBUILD: refused(
                "not implemented yet on proxmox: a fresh disk means cloning the template again and moving its disk "
                "into the VM (move_disk to target-vmid), which is not written yet; delete the server and create a "
                "new one instead"
            ),
            Feature.CONSOLE: refused(
                "not implemented yet on proxmox: the console needs a termproxy ticket relayed over Proxmox's "
                "websocket; use the node's own web console meanwhile"
            ),
            Feature.FIREWALL: refused(
                "not implemented yet on proxmox: the rules would go into the VM's Proxmox firewall "
                "(/nodes/{node}/qemu/{vmid}/firewall/rules), which Cloudplane does not write yet"
            ),
            Feature.EXTRA_IPS: refused(
                "not implemented yet on proxmox: it needs a second address in the VM's cloud-init network config"
            ),
            Feature.RESET_PASSWORD: refused(
                "not implemented yet on proxmox: it needs the VM's QEMU guest agent (/nodes/{node}/qemu/{vmid}/agent/"
                "set-user-password), which Cloudplane does not call yet; log in with the server's SSH key meanwhile"
            ),
            Feature.RESIZE: not_implemented_yet("proxmox"),
        },
    )

    def __init__(
        self,
        url: str,
        token_id: str,
        token_secret: str,
        *,
        node: str,
        templates: Mapping[str, int] | None = None,
        default_template: int | None = None,
        storage: str | None = None,
        full_clone: bool = True,
        verify_tls: bool | str = True,
        disk: str = "scsi0",
        ipconfig0: str = "ip=dhcp",
        stop_timeout_s: int = 60,
        task_poll_s: float = 1.0,
        task_timeout_s: float = 900.0,
        request_timeout_s: float = 30.0,
        name: str = "proxmox",
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        if ProxmoxAPI is None:
            raise ProxmoxError("proxmoxer is not installed: pip install proxmoxer requests", retryable=False)
        parts = urlsplit(url if "//" in url else f"https://{url}")
        if parts.scheme != "https" or not parts.hostname:
            raise ProxmoxError(
                f"CLOUDPLANE_PROXMOX_URL {url!r}: give the API's https URL (e.g. https://pve.example.com:8006)",
                retryable=False,
            )
        if not templates and default_template is None:
            raise ProxmoxError(
                "No Proxmox template: set CLOUDPLANE_PROXMOX_TEMPLATE_VMID or CLOUDPLANE_PROXMOX_TEMPLATES "
                "(e.g. debian-12=9000,ubuntu-22-04=9001)",
                retryable=False,
            )
        user, token_name = parse_token_id(token_id)
        self.name = name
        self.url = url
        self.node = node
        self.templates = dict(templates or {})
        self.default_template = default_template
        self.storage = storage
        self.full_clone = full_clone
        self.disk = disk
        self.ipconfig0 = ipconfig0
        self.stop_timeout_s = stop_timeout_s
        self.task_poll_s = task_poll_s
        self.task_timeout_s = task_timeout_s
        self._sleep = sleep
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self._api = ProxmoxAPI(
            host,
            port=parts.port or 8006,
            user=user,
            token_name=token_name,
            token_value=token_secret,
            verify_ssl=verify_tls,
            timeout=request_timeout_s,
            service="PVE",
        )
        # A VM's token never changes once cloned; keyed on the VMID and the token tag, as VMIDs are reused.
        self._tokens: dict[tuple[str, str], str] = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(images=None if self.default_template is not None else frozenset(self.templates))

    # -- the API ------------------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **params: Any) -> Any:
        """One API call in a worker thread; its `data`, or a ProxmoxError: retryable for 5xx, timeouts and lost
        connections, not for 4xx."""
        return await asyncio.to_thread(self._call_sync, method, path, params)

    def _call_sync(self, method: str, path: str, params: dict[str, Any]) -> Any:
        try:
            data = getattr(self._api(path), method)(**params)
        except ResourceException as error:
            raise self._error(error, method, path) from None
        except requests.exceptions.RequestException as error:
            raise ProxmoxError(
                f"Proxmox ({self.url}) did not answer {method.upper()} /{path}: {type(error).__name__}: {error}",
                retryable=True,
                path=path,
            ) from None
        except OSError as error:  # requests' own checks before it connects: a CA file that is not there
            raise ProxmoxError(f"Cannot call Proxmox ({self.url}): {error}", retryable=False, path=path) from None
        # A body that is not JSON (a proxy's error page): proxmoxer hands it back as {"errors": <the bytes>}.
        body = data.get("errors") if isinstance(data, dict) and len(data) == 1 else data
        if isinstance(body, bytes):
            raise ProxmoxError(
                f"Proxmox ({self.url}) answered {method.upper()} /{path} with something other than JSON: "
                f"{body[:120].decode(errors='replace')!r}",
                retryable=True,
                path=path,
            )
        return data

    def _error(self, error: Any, method: str, path: str) -> ProxmoxError:
        status = int(error.status_code)
        reason = str(error.content or error.status_message or "").strip()
        if isinstance(error.errors, dict) and error.errors:
            # Parameter verification failures name each parameter in the body's `errors`.
            reason += " (" + "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(error.errors.items())) + ")"
        if status == 401:
            message = (
                f"Proxmox ({self.url}) refused the API token (401 {reason}): check CLOUDPLANE_PROXMOX_TOKEN_ID and "
                "CLOUDPLANE_PROXMOX_TOKEN_SECRET"
            )
        elif status == 403:
            message = (
                f"The Proxmox API token may not {method.upper()} /{path} (403 {reason}): grant it the VM.* privileges"
            )
        else:
            message = f"Proxmox ({self.url}) answered {method.upper()} /{path} with {status}: {reason}"
        return ProxmoxError(message, retryable=status >= 500 or status in (408, 429), status=status, path=path)

    @staticmethod
    def _missing(error: ProxmoxError) -> bool:
        """Proxmox answers 500 "Configuration file ... does not exist" for an unknown VMID, and similar for
        snapshots."""
        return "does not exist" in error.message or "no such" in error.message.lower()

    async def _wait(self, upid: Any, what: str) -> None:
        """Wait for the task to stop; a ProxmoxError with the task's exit status and log tail unless it ended OK. A
        call that answered without a UPID (done at once, as some do on older versions) needs no wait."""
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            return
        node = upid.split(":")[1]
        deadline = time.monotonic() + self.task_timeout_s
        while True:
            status = await self._call("get", f"nodes/{node}/tasks/{upid}/status")
            if status.get("status") == "stopped":
                break
            if time.monotonic() > deadline:
                raise ProxmoxError(
                    f"Proxmox task {upid} ({what}) still runs after {self.task_timeout_s:g} s",
                    retryable=True,
                    upid=upid,
                )
            await self._sleep(self.task_poll_s)
        exit_status = status.get("exitstatus")
        if exit_status == "OK":
            return
        try:
            lines = await self._call("get", f"nodes/{node}/tasks/{upid}/log", start=0, limit=500)
            tail = " | ".join(str(line.get("t", "")) for line in (lines or [])[-5:])
        except ProxmoxError as error:
            tail = f"(its log could not be read: {error.message})"
        raise ProxmoxError(
            f"Proxmox could not {what}: the task ended with {exit_status!r}; its log ends: {tail}",
            retryable=False,
            upid=upid,
            exitstatus=exit_status,
        )

    async def _task(self, method: str, path: str, what: str, **params: Any) -> None:
        await self._wait(await self._call(method, path, **params), what)

    def _vm_path(self, vmid: str, rest: str = "") -> str:
        return f"nodes/{self.node}/qemu/{vmid}{'/' + rest if rest else ''}"

    # -- lookups ------------------------------------------------------------------------------------------

    async def _config(self, vmid: str) -> dict[str, Any] | None:
        """The VM's config if it is a Cloudplane VM; None for an unknown VMID, a foreign VM, a ref we never issue."""
        if not VMID.fullmatch(vmid):
            return None
        try:
            config = await self._call("get", self._vm_path(vmid, "config"))
        except ProxmoxError as error:
            if self._missing(error):
                return None
            raise
        return config if cloudplane_tag(config) is not None else None

    async def _lookup(self, vmid: str) -> dict[str, Any]:
        config = await self._config(vmid)
        if config is None:
            raise NotFound(f"No Proxmox machine {vmid}", ref=vmid)
        return config

    async def _status(self, vmid: str) -> dict[str, Any]:
        return dict(await self._call("get", self._vm_path(vmid, "status/current")))

    def _machine(self, vmid: str, config: Mapping[str, Any], status: Mapping[str, Any]) -> Machine:
        tag = cloudplane_tag(config) or ""
        token = self._tokens.get((vmid, tag))
        if token is None and (match := DESCRIPTION_TOKEN.search(str(config.get("description") or ""))):
            token = self._tokens[(vmid, tag)] = match.group(1)
        return Machine(
            ref=vmid,
            state=machine_state({**status, "lock": config.get("lock") or status.get("lock")}),
            hostname=str(config.get("name") or status.get("name") or ""),
            token=token,
        )

    async def _get(self, vmid: str) -> Machine | None:
        config = await self._config(vmid)
        if config is None:
            return None
        return self._machine(vmid, config, await self._status(vmid))

    async def _entries(self) -> builtins.list[dict[str, Any]]:
        """The node's VMs with their full status (`qmpstatus` included)."""
        return list(await self._call("get", f"nodes/{self.node}/qemu", full=1))

    async def _find(self, token: str, hostname: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """The VM (VMID, config) a create with this token made: by its tag, or, given the hostname, an untagged VM
        of that name whose description carries the token (a create that stopped between its clone and tagging)."""
        tag = token_tag(token)
        for entry in await self._entries():
            vmid = str(entry["vmid"])
            tagged = tag in tags_of(entry) and TAG in tags_of(entry)
            if not tagged and not (hostname and entry.get("name") == hostname and not entry.get("template")):
                continue
            try:
                config = await self._call("get", self._vm_path(vmid, "config"))
            except ProxmoxError as error:
                if self._missing(error):
                    continue  # deleted since the listing
                raise
            match = DESCRIPTION_TOKEN.search(str(config.get("description") or ""))
            if match and match.group(1) == token:
                return vmid, config
        return None

    # -- the contract -------------------------------------------------------------------------------------

    async def find_by_token(self, token: str) -> Machine | None:
        found = await self._find(token)
        if found is None or cloudplane_tag(found[1]) is None:
            return None
        return self._machine(found[0], found[1], await self._status(found[0]))

    async def get(self, ref: str) -> Machine | None:
        if not VMID.fullmatch(ref):
            # A ref never issued: no such machine, once the API has answered (a probe learns that it does).
            await self._call("get", "version")
            return None
        return await self._get(ref)

    async def list(self) -> builtins.list[Machine]:
        """VMs tagged `cloudplane` on the node, from one listing (plus one config read per VM the first time it is
        seen, for its token)."""
        machines = []
        for entry in await self._entries():
            tag = cloudplane_tag(entry)
            if tag is None:
                continue
            vmid = str(entry["vmid"])
            config: Mapping[str, Any] = entry
            if (vmid, tag) not in self._tokens:
                try:
                    config = await self._call("get", self._vm_path(vmid, "config"))
                except ProxmoxError as error:
                    if self._missing(error):
                        continue
                    raise
            machines.append(self._machine(vmid, {**entry, **config}, entry))
        return sorted(machines, key=lambda m: m.hostname + m.ref)

    def list_pages(self, size: int) -> AsyncIterator[builtins.list[Machine]]:
        """A node lists its VMs in one call; a node holds what its cores and memory fit."""
        return pages_of(self.list, size)

    async def get_many(self, refs: Sequence[str]) -> builtins.list[Machine]:
        found = await asyncio.gather(*(self._get(ref) for ref in dict.fromkeys(refs)))
        return [m for m in found if m is not None]

    def _template(self, image: str) -> int:
        template = self.templates.get(image, self.default_template)
        if template is None:
            raise ProxmoxError(
                f"Image {image!r} has no Proxmox template (the templates are: "
                f"{', '.join(f'{k}={v}' for k, v in sorted(self.templates.items())) or 'none'}); add it to "
                "CLOUDPLANE_PROXMOX_TEMPLATES",
                retryable=False,
            )
        return template

    async def _clone(self, request: CreateRequest, template: int) -> str:
        """A new VM cloned from the template, on a VMID from /cluster/nextid; another VMID when that one was taken
        meanwhile (by another client of the cluster)."""
        params: dict[str, Any] = {
            "name": request.hostname,
            "description": f"cloudplane-token: {request.token}\ncloudplane-name: {request.name}",
            "full": 1 if self.full_clone else 0,
        }
        if self.full_clone and self.storage:
            params["storage"] = self.storage  # a linked clone stays on the template's storage
        for attempt in range(NEXTID_ATTEMPTS):
            vmid = str(await self._call("get", "cluster/nextid"))
            try:
                upid = await self._call("post", self._vm_path(str(template), "clone"), newid=int(vmid), **params)
            except ProxmoxError as error:
                if "already exists" in error.message and attempt + 1 < NEXTID_ATTEMPTS:
                    continue
                raise
            await self._wait(upid, f"clone template {template} into VM {vmid}")
            return vmid
        raise AssertionError("unreachable: the last attempt raises")

    async def _unlocked(self, vmid: str) -> dict[str, Any]:
        """The VM's config once no task (a clone another process started) holds its lock."""
        deadline = time.monotonic() + self.task_timeout_s
        while True:
            config = dict(await self._call("get", self._vm_path(vmid, "config")))
            if not config.get("lock") or time.monotonic() > deadline:
                return config
            await self._sleep(self.task_poll_s)

    def cloud_init(self, request: CreateRequest) -> dict[str, Any]:
        """The VM's size and cloud-init options (and its tags, last, set once all else is done)."""
        options: dict[str, Any] = {
            "cores": request.cpu,
            "memory": request.ram_mb,
            "ciuser": "root",
            "ipconfig0": self.ipconfig0,
        }
        if request.ssh_public_keys:
            options["sshkeys"] = encode_ssh_keys(request.ssh_public_keys)
        if request.root_password_hash:
            options["cipassword"] = request.root_password_hash
        return options

    async def create(self, request: CreateRequest) -> Machine:
        """Clone the template, set the size and cloud-init options, grow the disk to the plan's, start, then tag the
        VM. Idempotent on the token, which the clone writes into the VM's description and the last step into its
        tags: a retry returns the tagged VM, and finishes an untagged one its lost predecessor cloned.

        An image without a template, or a template disk larger than the plan's, is refused (not retryable). A
        failure once the VM exists (a clone, resize or start task ending badly) removes the VM again; a retry then
        starts from scratch. Two creates with one token running at once could clone twice: Proxmox has no unique
        name to stop that, and a token belongs to one operation, which runs one create at a time.
        """
        template = self._template(request.image)
        found = await self._find(request.token, request.hostname)
        if found is not None and cloudplane_tag(found[1]) is not None:
            return self._machine(found[0], found[1], await self._status(found[0]))
        vmid = found[0] if found is not None else await self._clone(request, template)
        try:
            config = await self._unlocked(vmid)
            await self._call("put", self._vm_path(vmid, "config"), **self.cloud_init(request))
            current_gb = disk_size_gb(config.get(self.disk))
            if current_gb > request.disk_gb:
                raise ProxmoxError(
                    f"Image {request.image!r} (template {template}) has a {current_gb:g} GB disk; the plan has "
                    f"{request.disk_gb} GB",
                    retryable=False,
                )
            if current_gb < request.disk_gb:
                await self._task(
                    "put", self._vm_path(vmid, "resize"), "grow the disk", disk=self.disk, size=f"{request.disk_gb}G"
                )
            if (await self._status(vmid)).get("status") != "running":
                await self._task("post", self._vm_path(vmid, "status/start"), f"start VM {vmid}")
            await self._call("put", self._vm_path(vmid, "config"), tags=f"{TAG};{token_tag(request.token)}")
        except BaseException:
            try:
                await self._remove(vmid)
            except Exception:  # noqa: BLE001 - the create's own error is the one to report; a retry finds the VM
                log.exception("proxmox: VM %s of a failed create could not be removed", vmid)
            raise
        machine = await self._get(vmid)
        assert machine is not None, "the VM was tagged just now"
        return machine

    async def start(self, ref: str) -> None:
        """Idempotent. Starts a stopped VM (or one hibernated on the host), resumes a paused one."""
        await self._lookup(ref)
        status = await self._status(ref)
        state = status.get("qmpstatus") or status.get("status")
        if state == "paused":
            await self._task("post", self._vm_path(ref, "status/resume"), f"resume VM {ref}")
        elif status.get("status") != "running":
            await self._task("post", self._vm_path(ref, "status/start"), f"start VM {ref}")

    async def stop(self, ref: str) -> None:
        """Idempotent. Asks the guest to shut down (ACPI) and has Proxmox power it off after `stop_timeout_s`
        (`forceStop`); a paused VM cannot hear ACPI and is powered off at once."""
        await self._lookup(ref)
        status = await self._status(ref)
        if status.get("status") == "stopped":
            return
        if status.get("qmpstatus") == "paused":
            await self._task("post", self._vm_path(ref, "status/stop"), f"power off VM {ref}")
        else:
            await self._task(
                "post",
                self._vm_path(ref, "status/shutdown"),
                f"shut down VM {ref}",
                forceStop=1,
                timeout=self.stop_timeout_s,
            )

    async def _running(self, ref: str, what: str) -> dict[str, Any]:
        await self._lookup(ref)
        status = await self._status(ref)
        if machine_state(status) not in (MachineState.RUNNING, MachineState.SUSPENDED):
            raise ProxmoxError(f"Cannot {what} a machine that is {machine_state(status)}", retryable=False)
        return status

    async def reboot(self, ref: str) -> None:
        """Only a running machine reboots (a guest reboot through ACPI); it stays RUNNING throughout."""
        status = await self._running(ref, "reboot")
        if machine_state(status) != MachineState.RUNNING:
            raise ProxmoxError(f"Cannot reboot a machine that is {machine_state(status)}", retryable=False)
        await self._task("post", self._vm_path(ref, "status/reboot"), f"reboot VM {ref}")

    async def suspend(self, ref: str) -> None:
        """`status/suspend` without `todisk`: QEMU pauses the VM, its memory kept by the host."""
        status = await self._running(ref, "suspend")
        if machine_state(status) == MachineState.RUNNING:
            await self._task("post", self._vm_path(ref, "status/suspend"), f"suspend VM {ref}")

    async def resume(self, ref: str) -> None:
        status = await self._running(ref, "resume")
        if machine_state(status) == MachineState.SUSPENDED:
            await self._task("post", self._vm_path(ref, "status/resume"), f"resume VM {ref}")

    async def delete(self, ref: str) -> None:
        """Idempotent: an unknown machine is already gone. Powers the VM off, then destroys it with its disks and
        snapshots (`purge`, `destroy-unreferenced-disks`)."""
        if await self._config(ref) is None:
            return
        await self._remove(ref)

    async def _remove(self, vmid: str) -> None:
        if (await self._status(vmid)).get("status") != "stopped":
            await self._task("post", self._vm_path(vmid, "status/stop"), f"power off VM {vmid}")
        try:
            await self._task(
                "delete", self._vm_path(vmid), f"destroy VM {vmid}", purge=1, **{"destroy-unreferenced-disks": 1}
            )
        except ProxmoxError as error:
            if not self._missing(error):
                raise

    async def _snapshots(self, vmid: str) -> set[str]:
        return {str(s.get("name")) for s in await self._call("get", self._vm_path(vmid, "snapshot"))} - {"current"}

    async def snapshot(self, ref: str, token: str) -> SnapshotInfo:
        """Idempotent on the token, which names the snapshot. Disk only (no `vmstate`): a restore boots afresh.
        size_gb is the machine's disk size, an upper bound: Proxmox does not report a snapshot's size."""
        config = await self._lookup(ref)
        name = snapshot_name(token)
        if name not in await self._snapshots(ref):
            await self._task(
                "post",
                self._vm_path(ref, "snapshot"),
                f"snapshot VM {ref}",
                snapname=name,
                description=f"cloudplane-token: {token}",
            )
        return SnapshotInfo(ref=f"{ref}/{name}", machine_ref=ref, size_gb=round(disk_size_gb(config.get(self.disk))))

    @staticmethod
    def _parse_snapshot_ref(snapshot_ref: str) -> tuple[str, str]:
        vmid, _, name = snapshot_ref.partition("/")
        if not VMID.fullmatch(vmid) or not re.fullmatch(rf"{SNAPSHOT_PREFIX}[0-9a-f]{{16}}", name, re.ASCII):
            raise NotFound(f"No Proxmox snapshot {snapshot_ref}", ref=snapshot_ref)
        return vmid, name

    async def delete_snapshot(self, snapshot_ref: str) -> None:
        """Idempotent: an unknown snapshot, or one whose machine is gone, is already deleted."""
        try:
            vmid, name = self._parse_snapshot_ref(snapshot_ref)
        except NotFound:
            return
        if await self._config(vmid) is None or name not in await self._snapshots(vmid):
            return
        await self._task("delete", self._vm_path(vmid, f"snapshot/{name}"), f"delete snapshot {name} of VM {vmid}")

    async def restore(self, ref: str, snapshot_ref: str) -> None:
        """Rolls a stopped machine back to the snapshot (`rollback`); it stays stopped."""
        await self._lookup(ref)
        vmid, name = self._parse_snapshot_ref(snapshot_ref)
        if vmid != ref:
            raise ProxmoxError(f"Snapshot {snapshot_ref} does not belong to {ref}", retryable=False)
        state = machine_state(await self._status(ref))
        if state != MachineState.STOPPED:
            raise ProxmoxError(f"Cannot restore a machine that is {state}; stop it first", retryable=False)
        if name not in await self._snapshots(ref):
            raise ProxmoxError(f"No snapshot {snapshot_ref}", retryable=False)
        await self._task("post", self._vm_path(ref, f"snapshot/{name}/rollback"), f"roll VM {ref} back to {name}")

    async def metrics(self, ref: str) -> Metrics:
        """From `status/current`: `cpu` is already the share of the VM's own CPUs Proxmox measured over its last
        interval, `mem` QEMU's view of the guest's memory, and the byte counters run since the VM started. All
        zeros for a stopped VM."""
        await self._lookup(ref)
        status = await self._status(ref)
        if status.get("status") != "running":
            return Metrics(0.0, 0, 0, 0, 0, 0)
        return Metrics(
            cpu_percent=round(min(100.0, max(0.0, float(status.get("cpu") or 0) * 100)), 1),
            memory_used_mb=int(status.get("mem") or 0) // 2**20,
            disk_read_bytes=int(status.get("diskread") or 0),
            disk_write_bytes=int(status.get("diskwrite") or 0),
            net_rx_bytes=int(status.get("netin") or 0),
            net_tx_bytes=int(status.get("netout") or 0),
            uptime_s=int(status.get("uptime") or 0),
        )

    async def rebuild(self, ref: str, request: RebuildRequest) -> None:
        raise refusal(self, Feature.REBUILD)

    async def console(self, ref: str) -> Terminal:
        raise refusal(self, Feature.CONSOLE)

    async def set_firewall(self, ref: str, rules: Sequence[FirewallRule]) -> None:
        raise refusal(self, Feature.FIREWALL)

    async def add_address(self, ref: str, address: str) -> None:
        raise refusal(self, Feature.EXTRA_IPS)

    async def set_root_password(self, ref: str, password_hash: str) -> None:
        raise refusal(self, Feature.RESET_PASSWORD)
