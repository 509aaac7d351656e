"""The workflow of renting a GPU instance from a marketplace: rent the offer, wait for it to run."""

from __future__ import annotations

from typing import Any

from cloudplane.domain.errors import ProviderError
from cloudplane.domain.states import ServerStatus
from cloudplane.providers.base import MachineState
from cloudplane.providers.marketplace import Instance, RentRequest
from cloudplane.workflows import steps
from cloudplane.workflows.kinds import register
from cloudplane.workflows.servers import remove_what_create_made
from cloudplane.workflows.steps import Changes, Job


def instance_details(instance: Instance) -> dict[str, Any]:
    """The server columns a rented instance fills in."""
    return {
        "gpu_model": instance.gpu_model or None,
        "gpu_count": instance.gpu_count or None,
        "cpu_count": instance.cpu_count or None,
        "ram_gb": instance.ram_gb or None,
        "storage_gb": instance.storage_gb or None,
        "price_per_hour": instance.price_per_hour or None,
        "region": instance.region or None,
        "ipv4": instance.public_ipaddr,
        "provider_data": {
            "machine_id": instance.machine_id,
            "image": instance.image,
            "onstart_script": instance.onstart_script,
            "ssh_host": instance.ssh_host,
            "ssh_port": instance.ssh_port,
            "public_ipaddr": instance.public_ipaddr,
            "status_detail": instance.status_detail,
        },
    }


async def _rent(job: Job) -> None:
    assert job.provider is not None
    params = job.params
    request = RentRequest(
        token=job.id,
        offer_id=params["offer_id"],
        image=params["image"],
        label=params["label"],
        onstart_script=params.get("onstart_script"),
        ssh_key=params.get("ssh_key"),
    )
    if job.provider_ref is None:  # a run that stopped before recording the instance finds it by the token
        instance = await steps.rent_instance(job.provider, request)
        await steps.progress(
            job, 30, Changes(server={"provider_ref": instance.instance_id, **instance_details(instance)})
        )
        ref = instance.instance_id
    else:
        ref = job.provider_ref
    await steps.wait_for(job, ref, MachineState.RUNNING)
    running = await steps.get_instance(job.provider, ref)
    if running is None:
        raise ProviderError(f"Instance {ref} disappeared at {job.provider}", retryable=False)
    instance = running
    await steps.succeed(
        job, Changes(server={"status": ServerStatus.RUNNING, "task_state": None, **instance_details(instance)})
    )


register("rent", _rent, remove_what_create_made)
