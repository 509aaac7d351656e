"""Subscription tiers and the quotas each grants (VibeCaaS document; pro's figures are the document's example)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

TIERS = ("free", "hobby", "pro", "team", "enterprise")


@dataclass(frozen=True)
class Quotas:
    max_apps: int
    max_cpu: int  # millicores
    max_memory: int  # MiB
    max_storage: int  # MiB
    gpu_enabled: bool

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


QUOTAS = {
    "free": Quotas(max_apps=3, max_cpu=500, max_memory=1024, max_storage=2048, gpu_enabled=False),
    "hobby": Quotas(max_apps=5, max_cpu=1000, max_memory=2048, max_storage=5120, gpu_enabled=False),
    "pro": Quotas(max_apps=20, max_cpu=2000, max_memory=8192, max_storage=20480, gpu_enabled=True),
    "team": Quotas(max_apps=50, max_cpu=8000, max_memory=32768, max_storage=102400, gpu_enabled=True),
    "enterprise": Quotas(max_apps=1000, max_cpu=64000, max_memory=262144, max_storage=1048576, gpu_enabled=True),
}
