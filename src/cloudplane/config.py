"""Typed settings, read from CLOUDPLANE_* environment variables when first asked for."""

from __future__ import annotations

import ipaddress
import json
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cloudplane.domain.addresses import parse_pools

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


class ConfigurationError(ValueError):
    """A setting that cannot work on this installation; raised at start, naming the setting and the choices."""


def parse_location_providers(text: str) -> dict[str, str]:
    """`fra1=lxc,nyc1=libvirt`, or the JSON object `{"fra1": "lxc", "nyc1": "libvirt"}`."""
    text = text.strip()
    if text.startswith("{"):
        try:
            mapping = json.loads(text)
        except ValueError as error:
            raise ValueError(f"CLOUDPLANE_LOCATION_PROVIDERS is not valid JSON: {error}") from None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise ValueError('CLOUDPLANE_LOCATION_PROVIDERS: a JSON object of strings, e.g. {"fra1": "lxc"}')
        entries = list(mapping.items())
    else:
        entries = []
        for entry in filter(str.strip, text.split(",")):
            location, equals, provider = entry.partition("=")
            if not equals or not location.strip() or not provider.strip():
                raise ValueError(
                    f"CLOUDPLANE_LOCATION_PROVIDERS entry {entry.strip()!r} is not location=provider "
                    "(e.g. fra1=lxc,nyc1=libvirt)"
                )
            entries.append((location, provider))
    result: dict[str, str] = {}
    for location, provider in entries:
        location, provider = location.strip().lower(), provider.strip().lower()
        if result.get(location, provider) != provider:
            raise ValueError(f"CLOUDPLANE_LOCATION_PROVIDERS names location {location!r} twice")
        result[location] = provider
    return result


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLOUDPLANE_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///cloudplane.sqlite",
        description="SQLAlchemy URL of the application database (SQLite file or PostgreSQL).",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str = Field(
        default="",
        description="URL clients reach this service at; used in the OpenAPI `servers` entry.",
    )
    # The simulator's delays are multiplied by this: 1.0 feels like a real cloud, 0 is instant (tests).
    simulator_time_scale: float = 1.0
    simulator_seed: int = 42
    simulator_error_rate: float = 0.0
    simulator_latency_ms: float = 0.0
    # Probability that a create makes the machine yet answers with an error (a classic cloud failure).
    simulator_ghost_create_rate: float = 0.0
    secret_key: str | None = Field(
        default=None,
        description="JWT signing key; when unset one is generated on first start and kept in the database.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (redis://host:6379/0) all API processes share for rate limits; unset keeps counts "
        "in process memory.",
    )
    rate_limits_enabled: bool = True
    # Namespace of the counters in Redis, so several Cloudplane deployments (or test runs) can share one Redis.
    rate_limit_key_prefix: str = "cloudplane-ratelimit"
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or CIDRs of the reverse proxies whose X-Forwarded-For/-Proto are "
        "believed; empty (the default) believes nobody, so no caller picks the address the per-IP limits count.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins (https://panel.example.com) whose browser apps may call the API, or * "
        "for any; empty (the default): none. Credentials are API keys and tokens in headers, never cookies, so no "
        "origin is sent Access-Control-Allow-Credentials.",
    )
    vastai_api_key: str | None = Field(
        default=None, description="Vast.ai API key; unset, a simulated marketplace serves as vast_ai."
    )
    apps_domain: str = Field(
        default="apps.localhost",
        description="Domain under which container apps are reached: https://{app}-{username}.{apps_domain}.",
    )
    default_provider: str = Field(
        default="simulator", description="Provider of every location CLOUDPLANE_LOCATION_PROVIDERS does not name."
    )
    # Where each location's servers run, e.g. "fra1=lxc,nyc1=libvirt" (or JSON). Locations and provider names are
    # checked at start against the catalog and the providers Cloudplane has (providers/registry.py).
    location_providers: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    libvirt_uri: str = Field(default="qemu:///system", description="The libvirt provider's connection URI.")
    libvirt_pool: str = Field(
        default="default", description="Storage pool holding the images (`<slug>.qcow2`) and the servers' disks."
    )
    libvirt_network: str = Field(default="default", description="libvirt network the servers' NICs join.")
    libvirt_domain_type: str | None = Field(
        default=None, description="`kvm` or `qemu` (software emulation); unset: what the host offers."
    )
    libvirt_stop_timeout_s: float = Field(
        default=60.0, description="How long a guest has to shut down after an ACPI request before it is powered off."
    )
    reconcile_interval_s: float = Field(
        default=30.0, ge=0, description="Seconds between reconciler passes in each API process; 0 turns it off."
    )
    executor_id: str | None = Field(
        default=None,
        description="This process's executor id (it holds the operations it runs); unset: host:port. Give each API process its own, the same "
        "across its restarts.",
    )
    dispatch_interval_s: float = Field(
        default=2.0, gt=0, description="Seconds between dispatcher sweeps (pending operations, heartbeats, takeovers)."
    )
    metrics_sample_interval_s: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="Seconds between samples of each running server's usage (GET /vps/{id}/metrics); must divide an "
        "hour.",
    )
    operation_concurrency: int = Field(
        default=1000,
        ge=1,
        description="Operations this process runs at once; more wait, pending, for the dispatcher's next sweep.",
    )
    executor_stale_after_s: float = Field(
        default=15.0,
        gt=0,
        description="A process whose heartbeat is older than this is taken for dead: a live one finishes its work.",
    )
    billing_tax_rate: Decimal = Field(
        default=Decimal(0), ge=0, le=1, description="Tax added to every invoice, as a fraction (0.2 for 20%)."
    )
    billing_due_days: int = Field(default=14, ge=0, description="Days from an invoice's issue to its due date.")
    billing_grace_days: int = Field(
        default=3, ge=0, description="Days past its due date before an unpaid invoice becomes `overdue`."
    )
    billing_dunning_days: int = Field(
        default=7,
        ge=0,
        description="Days an invoice may stay overdue before its account's servers are suspended (paying lifts it).",
    )
    billing_seller: str = Field(
        default="Cloudplane", description="Who invoices: the seller's name and address on invoices, lines split by `|`."
    )
    # Test builds only: `CLOUDPLANE_CRASH_AT=<kind>:<step>` kills the process inside that workflow step, and is
    # ignored unless `CLOUDPLANE_TEST_HOOKS=1`.
    test_hooks: bool = False
    crash_at: str | None = None
    max_page_size: int = 100
    log_level: str = Field(
        default="INFO",
        description="DEBUG, INFO (one access-log line per request), WARNING, ERROR or CRITICAL; any case.",
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="`json`: one JSON object per log line; `console`: readable lines for people."
    )
    metrics_token: str | None = Field(
        default=None, description="When set, `GET /metrics` requires `Authorization: Bearer <token>`."
    )
    # The LXC provider (pip install 'cloudplane[lxc]'; see README "Real servers on this host").
    lxc_path: str = Field(default="/var/lib/cloudplane/lxc", description="Where the LXC provider keeps its containers.")
    lxc_images_path: str = Field(
        default="/var/lib/cloudplane/images",
        description="Root filesystems LXC containers are made from (`cloudplane host prepare` builds them).",
    )
    lxc_bridge: str = Field(default="cpbr0", description="The Linux bridge Cloudplane creates for its containers.")
    lxc_subnet: str = Field(
        default="10.213.0.0/24",
        description="Address range of the bridge; the host takes the first address, containers the rest.",
    )
    # Each location's pool of extra public IPv4 addresses (POST /api/v1/vps/{id}/network/ip): "nyc1=198.51.100.0/28,
    # fra1=203.0.113.10-203.0.113.20" (a CIDR's usable addresses, or a range); `nyc1=` gives nyc1 none. A location it
    # leaves out has its default: the top quarter of lxc_subnet on LXC, else a documentation range
    # (domain/addresses.py DEFAULT_POOLS).
    address_pools: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    lxc_stop_timeout_s: float = Field(
        default=10.0, description="How long a container's init has to halt before a stop pulls the plug."
    )

    # The Proxmox VE provider (see README "Proxmox VE hosts"): an API token, one node, templates with cloud-init.
    proxmox_url: str | None = Field(
        default=None, description="The Proxmox VE API's URL, e.g. https://pve.example.com:8006 (https only)."
    )
    proxmox_token_id: str | None = Field(
        default=None, description="The API token's id as Proxmox shows it: user@realm!tokenname."
    )
    proxmox_token_secret: str | None = Field(default=None, description="The API token's secret (a UUID).")
    proxmox_node: str = Field(default="pve", description="The node whose VMs Cloudplane makes and drives.")
    proxmox_template_vmid: int | None = Field(
        default=None, description="The template VM cloned for any image CLOUDPLANE_PROXMOX_TEMPLATES does not name."
    )
    proxmox_templates: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Template VMIDs per catalog image: `debian-12=9000,ubuntu-22-04=9001` (or a JSON object).",
    )
    proxmox_storage: str | None = Field(
        default=None, description="Storage a full clone's disks go to; unset: the template's."
    )
    proxmox_full_clone: bool = Field(
        default=True, description="Full clones (independent disks); false: linked clones of the template's disk."
    )
    proxmox_verify_tls: bool = Field(
        default=True, description="Check the API's TLS certificate; false only for a node's self-signed one."
    )
    proxmox_ca_file: str | None = Field(
        default=None,
        description="CA certificate the API's certificate is checked against (a cluster's /etc/pve/pve-root-ca.pem); "
        "unset: the system's CAs.",
    )
    proxmox_disk: str = Field(default="scsi0", description="The templates' boot disk, grown to the plan's size.")
    proxmox_ipconfig0: str = Field(
        default="ip=dhcp", description="cloud-init network of the first NIC, as Proxmox's ipconfig0 (ip=dhcp)."
    )
    proxmox_stop_timeout_s: int = Field(
        default=60, description="How long a guest has to shut down after an ACPI request before it is powered off."
    )
    proxmox_task_poll_s: float = Field(default=1.0, gt=0, description="Seconds between looks at a running task.")

    # Mail (support tickets' notifications): sent when smtp_host is set; see README "Support tickets".
    smtp_host: str | None = Field(default=None, description="SMTP server mail is sent through; unset: no mail.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="The SMTP server's port.")
    smtp_user: str | None = Field(default=None, description="User to sign in to the SMTP server as; unset: none.")
    smtp_password: str | None = Field(default=None, description="The SMTP user's password.")
    smtp_from: str = Field(default="cloudplane@localhost", description="The From address of every mail.")
    smtp_starttls: bool = Field(
        default=True, description="Upgrade the connection with STARTTLS before signing in (false: plain SMTP)."
    )
    smtp_timeout_s: float = Field(default=10.0, gt=0, description="How long one SMTP conversation may take.")
    support_email: str | None = Field(
        default=None,
        description="Staff address told of new tickets and customers' replies when no admin is assigned to the ticket.",
    )
    mail_retry_interval_s: float = Field(
        default=30.0, gt=0, description="Seconds between sweeps that send mail left unsent (SMTP down, a crash)."
    )
    # Card payments through Stripe (see README "Payments and subscriptions"); unset, payments are offline.
    stripe_api_key: str | None = Field(
        default=None, description="Stripe secret key (sk_live_... or sk_test_...); unset: no card payments."
    )
    stripe_webhook_secret: str | None = Field(
        default=None,
        description="Signing secret of the Stripe webhook endpoint (whsec_...) that posts to /api/v1/webhooks/stripe; "
        "unset: Stripe's webhooks are refused.",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Base URL of the Stripe API; unset: Stripe's own. Tests point it at localstripe.",
    )
    charges_sweep_s: int = Field(
        default=300,
        ge=60,
        le=86400,
        description="Seconds between sweeps that settle card charges left pending (a process died mid-charge); "
        "must divide a day.",
    )
    # Signed webhooks (README "Webhooks"): the sender in each API process, its retries and its address guard.
    webhooks_enabled: bool = Field(default=True, description="Run the webhook sender in this process.")
    webhooks_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs over plain http and to private, loopback and link-local addresses: for tests "
        "and closed labs only; off, every URL is https and every address it resolves to public.",
    )
    webhooks_poll_interval_s: float = Field(
        default=1.0, gt=0, description="Seconds between the sender's looks for deliveries that are due."
    )
    webhooks_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a receiver has to answer one delivery (connect, send and reply)."
    )
    webhooks_max_attempts: int = Field(
        default=10, ge=1, le=100, description="Tries of one delivery before it is dead (kept, redeliverable by hand)."
    )
    webhooks_backoff_base_s: float = Field(
        default=30.0,
        gt=0,
        description="Wait before the first retry; each further one waits twice as long, up to "
        "CLOUDPLANE_WEBHOOKS_BACKOFF_MAX_S; each wait is a random half to all of that (jitter).",
    )
    webhooks_backoff_max_s: float = Field(
        default=6 * 3600.0, gt=0, description="The longest wait between two tries of one delivery."
    )
    webhooks_concurrency: int = Field(default=16, ge=1, description="Deliveries one process sends at once.")
    # App builds (README "Deploying apps"): where releases live, which git sources are allowed, how long a build may take.
    apps_dir: str | None = Field(
        default=None,
        description="Directory of app releases and build caches; unset: `<database file>-apps` beside the SQLite "
        "database, or ./cloudplane-apps with PostgreSQL.",
    )
    apps_allow_local_sources: bool = Field(
        default=False,
        description="Allow apps to build from git://, file:// URLs and local paths (a git server on this host, a "
        "directory): for tests and single-user installations only; off, only https URLs are cloned.",
    )
    apps_allow_private_sources: bool = Field(
        default=False,
        description="Allow https git URLs whose host resolves to private, loopback or link-local addresses (an "
        "internal git server); off, every address must be public.",
    )
    apps_build_timeout_s: float = Field(
        default=900.0, gt=0, description="How long one build (clone, install, build script) may take in all."
    )
    apps_git_timeout_s: float = Field(default=120.0, gt=0, description="How long fetching a repository may take.")
    apps_build_log_bytes: int = Field(
        default=1024 * 1024, ge=4096, description="How much of a build's log is kept: its last bytes."
    )

    @field_validator("proxmox_templates", mode="before")
    @classmethod
    def _parse_proxmox_templates(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            return json.loads(text)
        templates: dict[str, str] = {}
        for entry in filter(str.strip, text.split(",")):
            image, equals, vmid = entry.partition("=")
            if not equals or not image.strip() or not vmid.strip().isascii() or not vmid.strip().isdigit():
                raise ValueError(
                    f"CLOUDPLANE_PROXMOX_TEMPLATES entry {entry.strip()!r} is not image=vmid (e.g. debian-12=9000)"
                )
            templates[image.strip()] = vmid.strip()
        return templates

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        # logging knows only upper-case names.
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"CLOUDPLANE_LOG_LEVEL {value!r}: one of debug, info, warning, error, critical")
        return level

    @field_validator("metrics_sample_interval_s")
    @classmethod
    def _divides_an_hour(cls, value: int) -> int:
        # Samples fall on the same seconds of every hour, so an hour's roll-up takes whole ones.
        if 3600 % value:
            raise ValueError(
                f"CLOUDPLANE_METRICS_SAMPLE_INTERVAL_S {value}: give one that divides an hour (60, 30, 15...)"
            )
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        # An origin is scheme://host[:port], nothing more: a browser sends exactly that, so anything else never matches.
        for entry in (e.strip() for e in value.split(",")):
            if entry and entry != "*" and not _ORIGIN.fullmatch(entry):
                raise ValueError(
                    f"CLOUDPLANE_CORS_ORIGINS entry {entry!r} is not an origin: give scheme://host[:port] with no "
                    "path or trailing slash (e.g. https://panel.example.com, http://localhost:5173), or *"
                )
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        return [entry for entry in (e.strip() for e in self.cors_origins.split(",")) if entry]

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        # uvicorn would take a mistyped entry as a literal host name that never matches, silently.
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"CLOUDPLANE_TRUSTED_PROXIES entry {entry!r} is not an IP address or CIDR (e.g. 10.0.0.5, "
                    "10.0.0.0/24, ::1)"
                ) from None
        return ",".join(entries)

    @field_validator("location_providers", mode="before")
    @classmethod
    def _parse_location_providers(cls, value: object) -> object:
        return parse_location_providers(value) if isinstance(value, str) else value

    @field_validator("address_pools", mode="before")
    @classmethod
    def _parse_address_pools(cls, value: object) -> object:
        return parse_pools(value) if isinstance(value, str) else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def _sibling_url(self, suffix: str) -> str:
        """A sibling SQLite file (SQLite has one writer per file, so separate stores do not queue behind each
        other), or the same PostgreSQL database."""
        if not self.is_sqlite:
            return self.database_url
        p = Path(self.database_url.split("///", 1)[1])
        return f"sqlite:///{p.with_name(p.stem + suffix + (p.suffix or '.sqlite'))}"

    @property
    def simulator_database_url(self) -> str:
        """The simulator's inventory: the state of a separate (simulated) cloud, so kept apart from ours."""
        return self._sibling_url("-simulator")

    @property
    def apps_path(self) -> Path:
        """Where app releases and build caches live (CLOUDPLANE_APPS_DIR, else beside the database)."""
        if self.apps_dir:
            return Path(self.apps_dir)
        if not self.is_sqlite:
            return Path("cloudplane-apps").resolve()
        p = Path(self.database_url.split("///", 1)[1])
        return p.with_name(p.stem + "-apps").resolve()

    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")


@lru_cache
def get_settings() -> Settings:
    return Settings()
