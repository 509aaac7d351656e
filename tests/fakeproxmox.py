"""A Proxmox VE API on loopback for the Proxmox provider's tests: HTTPS (a self-signed certificate made at start),
API-token auth, and the calls the provider makes, answered in the shapes of tests/fixtures/proxmox/recorded.json
(the API viewer's), with a node's VMs kept in memory so the contract suite can drive them. Faults replay the
recorded failures: a 500, a 401, a task ending with a non-OK exit status and its log."""

from __future__ import annotations

import copy
import datetime
import ipaddress
import itertools
import json
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "proxmox" / "recorded.json").read_text())
NODE = "pve"
TOKEN_ID = "cloudplane@pve!control"
TOKEN_SECRET = "0b2c4e6a-8d1f-4a3b-9c5e-7f1a2b3c4d5e"
TEMPLATES = {"debian-12": 9000, "ubuntu-22-04": 9001}
FOREIGN_VMID = 100


@dataclass
class VM:
    config: dict[str, Any]
    status: str = "stopped"
    qmpstatus: str = "stopped"
    snapshots: dict[str, str] = field(default_factory=dict)


@dataclass
class Task:
    upid: str
    type: str
    vmid: int
    exitstatus: str = "OK"
    log: list[dict[str, Any]] = field(default_factory=lambda: [{"n": 1, "t": "TASK OK"}])
    polls_left: int = 1


class ApiError(Exception):
    def __init__(self, recorded: str) -> None:
        reply = RECORDED[recorded]
        self.status = reply["status"]
        self.reason = reply.get("reason", "OK")
        self.body = reply["body"]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class FakeProxmox:
    """One node `pve` with two templates (debian-12: 9000, ubuntu-22-04: 9001, each a 2 GiB scsi0 disk and a
    cloud-init drive) and a foreign running VM 100 that is not Cloudplane's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.vms: dict[int, VM] = {}
        self.tasks: dict[str, Task] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        # Injected faults: (method, path regex, recorded reply name), each answered once instead of the call.
        self.faults: list[tuple[str, str, str]] = []
        # Task types whose next task ends with the recorded failure.
        self.failing_tasks: set[str] = set()
        self.task_polls = 1
        self._pids = itertools.count(0x1A2B3)
        for slug, vmid in TEMPLATES.items():
            self.vms[vmid] = VM(
                {
                    "name": f"{slug}-template",
                    "template": 1,
                    "cores": 1,
                    "memory": 512,
                    "scsi0": f"local-lvm:base-{vmid}-disk-0,size=2G",
                    "ide2": f"local-lvm:vm-{vmid}-cloudinit,media=cdrom",
                    "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
                    "boot": "order=scsi0",
                }
            )
        self.vms[FOREIGN_VMID] = VM(
            {"name": "foreign-running", "cores": 1, "memory": 512, "scsi0": "local-lvm:vm-100-disk-0,size=8G"},
            status="running",
            qmpstatus="running",
        )
        self._dir = tempfile.TemporaryDirectory()
        cert, key = _self_signed(Path(self._dir.name))
        # Clients check the server against it, as they would a cluster's own CA (/etc/pve/pve-root-ca.pem).
        self.ca_file = str(cert)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # its certificate stays until the fake is dropped: clients may still name it

    def fail_next(self, method: str, path: str, recorded: str) -> None:
        self.faults.append((method, path, recorded))

    def calls(self, method: str, pattern: str) -> list[dict[str, str]]:
        return [params for m, p, params in self.requests if m == method and re.search(pattern, p)]

    # -- the API ------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str], auth: str | None) -> Any:
        if auth != f"PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}":
            raise ApiError("unauthorized")
        self.requests.append((method, path, params))
        for fault in self.faults:
            if fault[0] == method and re.search(fault[1], path):
                self.faults.remove(fault)
                raise ApiError(fault[2])
        if path == "version":
            return {"version": "8.1.3", "release": "8.1", "repoid": "b46aac3b42da5d15"}
        if path == "cluster/nextid":
            return str(next(v for v in itertools.count(100) if v not in self.vms))
        if m := re.fullmatch(rf"nodes/{NODE}/tasks/(.+)/(status|log)", path):
            return self._task_reply(m.group(1), m.group(2))
        if path == f"nodes/{NODE}/qemu" and method == "GET":
            return [self._entry(vmid, vm) for vmid, vm in sorted(self.vms.items())]
        m = re.fullmatch(rf"nodes/{NODE}/qemu/([0-9]+)(?:/(.*))?", path)
        if m is None:
            raise ApiError("server_error")
        vmid, rest = int(m.group(1)), m.group(2) or ""
        vm = self.vms.get(vmid)
        if vm is None:
            raise ApiError("unknown_vm") if vmid == 999999 else _missing(vmid)
        return self._vm_call(method, vmid, vm, rest, params)

    def _vm_call(self, method: str, vmid: int, vm: VM, rest: str, params: dict[str, str]) -> Any:
        if (method, rest) == ("GET", "config"):
            return {**vm.config, "digest": f"{hash(json.dumps(vm.config, sort_keys=True)) & 0xFFFFFFFF:040x}"}
        if (method, rest) == ("PUT", "config"):
            if "sshkeys" in params and unquote(params["sshkeys"]) == params["sshkeys"] and " " in params["sshkeys"]:
                raise ApiError("bad_parameter")
            vm.config.update(params)
            return None
        if (method, rest) == ("POST", "clone"):
            newid = int(params["newid"])
            if newid in self.vms:
                raise ApiError("vmid_taken")
            config = {k: v for k, v in vm.config.items() if k != "template"}
            config.update(name=params.get("name", f"Copy-of-VM-{vmid}"), description=params.get("description", ""))
            config["scsi0"] = re.sub(r"(base|vm)-[0-9]+-disk", f"vm-{newid}-disk", config["scsi0"])
            self.vms[newid] = VM(config)
            return self._start_task("qmclone", vmid)
        if (method, rest) == ("PUT", "resize"):
            disk = vm.config[params["disk"]]
            vm.config[params["disk"]] = re.sub(r"size=[^,]+", f"size={params['size']}", disk)
            return self._start_task("qmresize", vmid)
        if (method, rest) == ("GET", "status/current"):
            return self._status(vmid, vm)
        if method == "POST" and rest.startswith("status/"):
            return self._power(vmid, vm, rest.removeprefix("status/"))
        if (method, rest) == ("DELETE", ""):
            if vm.status != "stopped":
                raise _error(500, f"VM {vmid} is running - destroy failed")
            del self.vms[vmid]
            return self._start_task("qmdestroy", vmid)
        if (method, rest) == ("GET", "snapshot"):
            snaps = [{"name": n, "description": d, "snaptime": 1701965986} for n, d in vm.snapshots.items()]
            return [*snaps, {"name": "current", "description": "You are here!", "running": int(vm.status != "stopped")}]
        if (method, rest) == ("POST", "snapshot"):
            if params["snapname"] in vm.snapshots:
                raise _error(500, f"snapshot name '{params['snapname']}' already used")
            vm.snapshots[params["snapname"]] = params.get("description", "")
            return self._start_task("qmsnapshot", vmid)
        if m := re.fullmatch(r"snapshot/([^/]+)(/rollback)?", rest):
            if m.group(1) not in vm.snapshots:
                raise _error(500, f"snapshot '{m.group(1)}' does not exist")
            if method == "DELETE" and not m.group(2):
                del vm.snapshots[m.group(1)]
                return self._start_task("qmdelsnapshot", vmid)
            if method == "POST" and m.group(2):
                vm.status = vm.qmpstatus = "stopped"
                return self._start_task("qmrollback", vmid)
        raise _error(501, f"Method '{method} /nodes/{NODE}/qemu/{{vmid}}/{rest}' not implemented")

    def _power(self, vmid: int, vm: VM, action: str) -> str:
        if action == "start":
            if vm.status == "running":
                raise _error(500, f"VM {vmid} already running")
            task = self._start_task("qmstart", vmid)
            if self.tasks[task].exitstatus == "OK":
                vm.status = vm.qmpstatus = "running"
            return task
        if action in ("stop", "shutdown"):
            vm.status = vm.qmpstatus = "stopped"
            return self._start_task("qmstop" if action == "stop" else "qmshutdown", vmid)
        if vm.status != "running":
            raise _error(500, f"VM {vmid} not running")
        if action == "reboot":
            return self._start_task("qmreboot", vmid)
        if action == "suspend":
            vm.qmpstatus = "paused"
            return self._start_task("qmsuspend", vmid)
        if action == "resume":
            vm.qmpstatus = "running"
            return self._start_task("qmresume", vmid)
        raise _error(501, f"Method 'POST /nodes/{NODE}/qemu/{{vmid}}/status/{action}' not implemented")

    def _start_task(self, kind: str, vmid: int) -> str:
        upid = f"UPID:{NODE}:{next(self._pids):08X}:00C4D5E6:6571F0A2:{kind}:{vmid}:{TOKEN_ID}:"
        task = Task(upid, kind, vmid, polls_left=self.task_polls)
        if kind in self.failing_tasks:
            self.failing_tasks.discard(kind)
            task.exitstatus = RECORDED["task_start_failed"]["body"]["data"]["exitstatus"]
            task.log = copy.deepcopy(RECORDED["task_start_failed_log"]["body"]["data"])
        self.tasks[upid] = task
        return upid

    def _task_reply(self, upid: str, what: str) -> Any:
        task = self.tasks.get(upid)
        if task is None:
            raise _error(500, f"unable to parse worker upid '{upid}'")
        if what == "log":
            return task.log
        base = RECORDED["task_running" if task.polls_left > 0 else "task_ok"]["body"]["data"]
        reply = {**base, "upid": upid, "type": task.type, "id": str(task.vmid)}
        if task.polls_left > 0:
            task.polls_left -= 1
        else:
            reply["exitstatus"] = task.exitstatus
        return reply

    def _status(self, vmid: int, vm: VM) -> dict[str, Any]:
        running = vm.status == "running"
        base = RECORDED["status_current_running"]["body"]["data"]
        reply = {
            **base,
            "vmid": vmid,
            "name": vm.config.get("name"),
            "status": vm.status,
            "qmpstatus": vm.qmpstatus,
            "cpus": int(vm.config.get("cores", 1)),
            "maxmem": int(vm.config.get("memory", 512)) * 2**20,
        }
        if vm.config.get("tags"):
            reply["tags"] = vm.config["tags"]
        else:
            reply.pop("tags")
        if vm.config.get("lock"):
            reply["lock"] = vm.config["lock"]
        if not running:
            reply.update(cpu=0, mem=0, diskread=0, diskwrite=0, netin=0, netout=0, uptime=0)
            reply.pop("pid")
        return reply

    def _entry(self, vmid: int, vm: VM) -> dict[str, Any]:
        status = self._status(vmid, vm)
        keys = ("vmid", "name", "status", "qmpstatus", "cpus", "cpu", "mem", "maxmem", "uptime", "tags", "lock")
        entry = {k: status[k] for k in keys if k in status}
        if vm.config.get("template"):
            entry["template"] = 1
        return entry


def _error(status: int, reason: str) -> ApiError:
    error = ApiError("server_error")
    error.status, error.reason = status, reason
    return error


def _missing(vmid: int) -> ApiError:
    return _error(500, f"Configuration file 'nodes/{NODE}/qemu-server/{vmid}.conf' does not exist")


def _handler(fake: FakeProxmox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as pveproxy does: one TLS handshake per client, not per call
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _serve(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                params.update(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
            path = unquote(url.path).removeprefix("/api2/json/").strip("/")
            try:
                with fake.lock:
                    data = fake.handle(self.command, path, params, self.headers.get("Authorization"))
                status, reason, body = 200, "OK", {"data": data}
            except ApiError as error:
                status, reason, body = error.status, error.reason, error.body
            # A recorded body that is a string goes out as it is, as a proxy in front of the API would answer.
            payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status, reason)
            self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler
