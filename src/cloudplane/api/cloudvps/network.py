"""CloudVPS Pro's networking routes (/api/v1/vps/{id}/network): a VPS's addresses, its inbound firewall rules and its
extra IP addresses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.cloudvps.envelope import cloudvps_renderer
from cloudplane.api.cloudvps.vps import Request, VpsId, parse_vps_id
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.services import network
from cloudplane.services.network import ExtraAddress, NetworkView, Rule, RuleSpec

_NOT_FOUND: Responses = {404: {"model": ErrorEnvelope, "description": "No such VPS in your account"}}
_CONFLICT: Responses = {
    409: {"model": ErrorEnvelope, "description": "The VPS is suspended, or its provider cannot filter its traffic"}
}
_NO_ADDRESS: Responses = {
    409: {
        "model": ErrorEnvelope,
        "description": "The VPS is suspended or being deleted, its provider cannot attach extra addresses, or its "
        "location has no pool (NO_ADDRESS_POOL) or no free address left in it (ADDRESS_POOL_EXHAUSTED)",
    }
}
router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["CloudVPS networking"],
    responses={**errors(400, 401, 403, 422, 429), **_NOT_FOUND},
)

# Checked by the service, so that a refusal names the rule as `firewall_rules[2].port` whatever is wrong with it.
Port = Annotated[
    int | str | None,
    Field(
        description='A port (80) or a range ("8000-8100"); left out: every port. None for icmp.',
        examples=[80, "8000-8100"],
    ),
]


class FirewallRuleIn(Request):
    action: str = Field(max_length=10, description="accept or drop", examples=["accept"])
    protocol: str = Field(max_length=10, description="tcp, udp or icmp", examples=["tcp"])
    port: Port = None
    source: str | None = Field(
        default=None, max_length=64, description="An IPv4 network or address; 0.0.0.0/0 (anywhere) when left out"
    )
    description: str | None = Field(default=None, max_length=255)


class NetworkUpdate(Request):
    firewall_rules: list[FirewallRuleIn] = Field(
        max_length=network.MAX_RULES,
        description="Replaces every rule. Inbound traffic is matched in order, the first matching rule decides, "
        "and what matches none is dropped, except replies to connections the VPS opened; [] allows everything.",
    )


class FirewallRuleOut(BaseModel):
    action: str
    protocol: str
    port: int | str | None = Field(description='A port, a range "8000-8100", or null: every port')
    source: str
    description: str | None


class IpAddresses(BaseModel):
    public: str | None
    private: str | None
    extra: list[str] = Field(description="Additional public addresses (POST /vps/{id}/network/ip)")


class NetworkOut(BaseModel):
    vps_id: str
    ip_addresses: IpAddresses
    firewall_rules: list[FirewallRuleOut]
    operation_id: str | None = Field(
        default=None, description="The operation applying the rules, in the reply that changed them; null on reads"
    )


class NetworkReply(BaseModel):
    success: bool = True
    message: str | None = None
    data: NetworkOut


def rule_out(rule: Rule) -> FirewallRuleOut:
    port: int | str | None = None
    if rule.port_from is not None:
        port = rule.port_from if rule.port_to == rule.port_from else f"{rule.port_from}-{rule.port_to}"
    return FirewallRuleOut(
        action=rule.action, protocol=rule.protocol, port=port, source=rule.source, description=rule.description
    )


def network_out(view: NetworkView) -> NetworkOut:
    return NetworkOut(
        vps_id=f"vps-{view.server_id}",
        ip_addresses=IpAddresses(public=view.public_ipv4, private=view.private_ipv4, extra=list(view.extra_ipv4)),
        firewall_rules=[rule_out(r) for r in view.firewall_rules],
        operation_id=view.operation_id,
    )


@router.get("/vps/{vps_id}/network", response_model=NetworkReply)
async def get_network(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    """The VPS's addresses and firewall rules."""
    view = await read(core, network.get_network, core, principal, parse_vps_id(vps_id))
    return reply(NetworkReply(data=network_out(view)))


@router.put("/vps/{vps_id}/network", response_model=NetworkReply, responses=_CONFLICT)
async def update_network(vps_id: VpsId, body: NetworkUpdate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Replace the VPS's firewall rules. They are stored at once and applied to the VPS by an operation (its id in
    the reply). No rules: all inbound traffic is allowed."""
    specs = [RuleSpec(r.action, r.protocol, r.port, r.source, r.description) for r in body.firewall_rules]
    view = await write(core, network.set_firewall, core, principal, parse_vps_id(vps_id), specs)
    return reply(NetworkReply(message="Firewall rules updated", data=network_out(view)))


class ExtraIpOut(BaseModel):
    vps_id: str
    ip_address: str = Field(description="The extra public IPv4 address, taken from the VPS's location's pool")
    type: str = Field(default="public", description="Always public")
    operation_id: str = Field(description="The operation attaching the address to the VPS")


class ExtraIpReply(BaseModel):
    success: bool = True
    message: str | None = None
    data: ExtraIpOut


def extra_ip_out(extra: ExtraAddress) -> ExtraIpOut:
    return ExtraIpOut(vps_id=f"vps-{extra.server_id}", ip_address=extra.address, operation_id=extra.operation_id)


@router.post("/vps/{vps_id}/network/ip", status_code=201, response_model=ExtraIpReply, responses=_NO_ADDRESS)
async def request_extra_ip(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Request an additional public IPv4 address: it is the VPS's at once (listed in GET /vps/{id}/network under
    `ip_addresses.extra`) and attached to it by an operation (its id in the reply). It goes back to the location's
    pool when the VPS is deleted."""
    extra = await write(core, network.attach_extra_ip, core, principal, parse_vps_id(vps_id))
    return reply(ExtraIpReply(message="IP address allocated", data=extra_ip_out(extra)), 201)
