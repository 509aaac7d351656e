"""CloudVPS Pro's monitoring routes: /api/v1/vps/{id}/metrics, usage now and its history, from the samples the
metrics jobs take of each running server a minute apart (services/metrics.py); /api/v1/vps/{id}/console, a console
page's address and its one-time password (services/console.py, api/console.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel, Field

from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.cloudvps.envelope import cloudvps_renderer
from cloudplane.api.cloudvps.vps import VpsId, parse_vps_id
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import face_route_class
from cloudplane.services import console, metrics
from cloudplane.services.metrics import Usage

router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["CloudVPS monitoring"],
    responses={
        **errors(400, 401, 403, 422, 429),
        404: {"model": ErrorEnvelope, "description": "No such VPS in your account"},
        409: {"model": ErrorEnvelope, "description": "The VPS's provider reports no metrics"},
    },
)


class Units(BaseModel):
    cpu_usage: Literal["percent"] = "percent"
    ram_usage: Literal["percent"] = "percent"
    disk_usage: Literal["percent"] = "percent"
    network_in: Literal["MB"] = "MB"
    network_out: Literal["MB"] = "MB"
    uptime: Literal["seconds"] = "seconds"


class HistoryPoint(BaseModel):
    timestamp: datetime
    cpu: float = Field(description="percent of the VPS's CPUs, averaged over the interval")
    ram: float = Field(description="percent of the plan's memory")
    disk: float | None = Field(description="percent of the plan's disk; null where the provider cannot tell")
    network_in: float = Field(description="MB received in the interval")
    network_out: float = Field(description="MB sent in the interval")


class MetricsOut(BaseModel):
    cpu_usage: float = Field(description="percent, from the latest sample; 0 unless the VPS is running")
    ram_usage: float = Field(description="percent of the plan's memory")
    disk_usage: float | None = Field(description="percent of the plan's disk")
    network_in: float = Field(description="MB received over the period")
    network_out: float = Field(description="MB sent over the period")
    uptime: int = Field(description="seconds since the VPS last started; 0 unless it is running")
    period_start: datetime
    period_end: datetime
    interval: int = Field(
        description="seconds between history points: the sample interval (60) within the last day, else 3600"
    )
    units: Units = Units()
    metrics_history: list[HistoryPoint]


class MetricsReply(BaseModel):
    success: bool = True
    data: MetricsOut


def metrics_out(u: Usage) -> MetricsOut:
    return MetricsOut(
        cpu_usage=u.cpu_percent,
        ram_usage=u.ram_percent,
        disk_usage=u.disk_percent,
        network_in=u.network_in_mb,
        network_out=u.network_out_mb,
        uptime=u.uptime_s,
        period_start=u.start,
        period_end=u.end,
        interval=u.resolution_s,
        metrics_history=[
            HistoryPoint(
                timestamp=p.at,
                cpu=p.cpu_percent,
                ram=p.ram_percent,
                disk=p.disk_percent,
                network_in=p.network_in_mb,
                network_out=p.network_out_mb,
            )
            for p in u.history
        ],
    )


@router.get("/vps/{vps_id}/metrics", response_model=MetricsReply)
async def vps_metrics(
    vps_id: VpsId,
    core: CoreDep,
    principal: PrincipalDep,
    period: Annotated[
        Literal["hour", "day", "week", "month"], Query(description="The span up to end_time (now)")
    ] = "hour",
    start_time: Annotated[
        AwareDatetime | None, Query(description="ISO 8601 with a time zone; overrides the period's start")
    ] = None,
    end_time: Annotated[AwareDatetime | None, Query(description="ISO 8601 with a time zone; now when left out")] = None,
) -> Response:
    """Usage now (CPU, memory and disk in percent, uptime in seconds) and over the period (network in MB), with its
    history: a point a minute within the last day, an hour further back (kept a month). Samples are taken a
    minute apart while the VPS runs."""
    usage = await read(
        core, metrics.usage, core, principal, parse_vps_id(vps_id), period=period, start=start_time, end=end_time
    )
    return reply(MetricsReply(data=metrics_out(usage)))


class ConsoleOut(BaseModel):
    console_url: str = Field(description="A page with a live terminal on the VPS; it asks for vnc_password")
    vnc_password: str = Field(description="Opens one session, once, before expires_at; shown only in this reply")
    expires_at: datetime


class ConsoleReply(BaseModel):
    success: bool = True
    data: ConsoleOut


@router.get("/vps/{vps_id}/console", response_model=ConsoleReply)
async def vps_console(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Open a console on the running VPS: a page served by Cloudplane with a terminal over a WebSocket (LXC: a shell
    in the container; the simulator: a shell that says it is simulated). Its password works once, for an hour."""
    ticket = await write(core, console.open_console, core, principal, parse_vps_id(vps_id))
    return reply(
        ConsoleReply(
            data=ConsoleOut(console_url=ticket.url, vnc_password=ticket.password, expires_at=ticket.expires_at)
        )
    )
