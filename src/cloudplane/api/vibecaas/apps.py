"""VibeCaaS application routes (/api/v1/apps): container apps in that document's shapes. Deployments and the
start/stop/restart/scale/logs/metrics actions are not served yet."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic.json_schema import JsonDict

from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.api.common.schemas import Request as BaseRequest
from cloudplane.api.vibecaas.envelope import page_fields, vibecaas_renderer
from cloudplane.services import apps, sources
from cloudplane.services.apps import (
    DEFAULTS,
    ENV_NAME,
    ENV_VALUE,
    INT_FIELDS,
    MAX_ENV_NAME,
    MAX_ENV_VALUE,
    MAX_ENV_VARS,
    MAX_NAME,
    NAME,
    TEXT_FIELDS,
    AppView,
)
from cloudplane.services.pages import Page

_NO_SUCH_APP: Responses = {404: {"model": ErrorEnvelope, "description": "No such application in your account"}}
_QUOTA: Responses = {
    403: {"model": ErrorEnvelope, "description": "Beyond your tier's quotas (`error.details` name the limit)"}
}
router = APIRouter(
    route_class=face_route_class(vibecaas_renderer),
    tags=["VibeCaaS applications"],
    responses=errors(400, 401, 403, 422, 429),
)

AppStatus = Literal["running", "stopped", "failed"]
AppId = Annotated[str, Path(description="The application's id, a UUID")]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME.pattern, max_length=MAX_ENV_NAME)]
EnvValue = Annotated[str, StringConstraints(pattern=ENV_VALUE.pattern, max_length=MAX_ENV_VALUE)]
# JSON Schema counts 1000.0 as an integer; strict validation alone would refuse it.
WholeNumber = Annotated[int, BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
# pydantic states a key pattern as `patternProperties`, which lets other names through; `propertyNames` does not.
_ENV_NAMES: JsonDict = {"propertyNames": {"pattern": ENV_NAME.pattern, "maxLength": MAX_ENV_NAME}}


# Published as https only: the other sources (git://, file://, paths, addresses) depend on the operator's settings.
def _SOURCE_DOCUMENTED(schema: JsonDict) -> None:  # noqa: N802 - stands where a constant of its kind does
    for branch in cast(list[JsonDict], schema.get("anyOf", [schema])):
        if "pattern" in branch:
            branch["pattern"] = sources.DOCUMENTED.pattern


def _text(field: str, description: str, **kwargs: Any) -> Any:
    pattern, longest = TEXT_FIELDS[field]
    return Field(pattern=pattern.pattern, max_length=longest, description=description, **kwargs)


def _whole(field: str, description: str, **kwargs: Any) -> Any:
    least, greatest = INT_FIELDS[field]
    return Field(ge=least, le=greatest, description=description, **kwargs)


def _omittable(**kwargs: Any) -> Any:
    """A field an update may leave out (it is then unset, and stays as it is) but, its type not allowing None,
    may not send as null."""
    return Field(default=None, **kwargs)


_DESCRIPTIONS = {
    "description": "What the app is for",
    "framework": 'The framework it is built with, e.g. "fastapi"',
    "github_repo": "The https URL of its git repository (no credentials in it); git://, file:// URLs and local "
    "paths where the operator allows them",
    "branch": "The branch deployed",
    "port": "The port the app listens on",
    "cpu_limit": "CPU per replica, in millicores (at most your tier's max_cpu)",
    "memory_limit": "Memory per replica, in MiB (at most your tier's max_memory)",
    "storage_limit": "Persistent storage, in MiB (at most your tier's max_storage)",
    "gpu_enabled": "Whether it runs with a GPU (tiers with gpu_enabled only)",
    "health_check_path": "The HTTP path probed for health; null checks only that the port is open",
}


class Request(BaseRequest):
    # Strict: the document's types exactly (`0` is not false, "1000" is not 1000).
    model_config = ConfigDict(extra="forbid", strict=True)


class AppCreate(Request):
    name: str = Field(
        pattern=NAME.pattern,
        max_length=MAX_NAME,
        description=f"Unique in your account; a DNS label of at most {MAX_NAME} characters, part of the app's URL",
    )
    description: str | None = _text("description", _DESCRIPTIONS["description"], default=None)
    framework: str | None = _text("framework", _DESCRIPTIONS["framework"], default=None)
    github_repo: str | None = _text(
        "github_repo", _DESCRIPTIONS["github_repo"], default=None, json_schema_extra=_SOURCE_DOCUMENTED
    )
    branch: str = _text("branch", _DESCRIPTIONS["branch"], default=DEFAULTS["branch"])
    environment_variables: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        max_length=MAX_ENV_VARS,
        description="Variables set in the app's environment: names of letters, digits and underscores",
        json_schema_extra=_ENV_NAMES,
    )
    port: WholeNumber = _whole("port", _DESCRIPTIONS["port"], default=DEFAULTS["port"])
    cpu_limit: WholeNumber = _whole("cpu_limit", _DESCRIPTIONS["cpu_limit"], default=DEFAULTS["cpu_limit"])
    memory_limit: WholeNumber = _whole("memory_limit", _DESCRIPTIONS["memory_limit"], default=DEFAULTS["memory_limit"])
    storage_limit: WholeNumber = _whole(
        "storage_limit", _DESCRIPTIONS["storage_limit"], default=DEFAULTS["storage_limit"]
    )
    gpu_enabled: bool = Field(default=False, description=_DESCRIPTIONS["gpu_enabled"])
    health_check_path: str | None = _text("health_check_path", _DESCRIPTIONS["health_check_path"], default=None)


class AppUpdate(Request):
    """The fields to change; those left out stay as they are, and null clears a field that may be empty."""

    description: str | None = _text("description", _DESCRIPTIONS["description"], default=None)
    framework: str | None = _text("framework", _DESCRIPTIONS["framework"], default=None)
    github_repo: str | None = _text(
        "github_repo", _DESCRIPTIONS["github_repo"], default=None, json_schema_extra=_SOURCE_DOCUMENTED
    )
    branch: str = _text("branch", _DESCRIPTIONS["branch"], default=None)
    environment_variables: dict[EnvName, EnvValue | None] = _omittable(
        max_length=MAX_ENV_VARS,
        description="Merged into the app's variables: each name given is set, and a null value removes it",
        json_schema_extra=_ENV_NAMES,
    )
    port: WholeNumber = _whole("port", _DESCRIPTIONS["port"], default=None)
    cpu_limit: WholeNumber = _whole("cpu_limit", _DESCRIPTIONS["cpu_limit"], default=None)
    memory_limit: WholeNumber = _whole("memory_limit", _DESCRIPTIONS["memory_limit"], default=None)
    storage_limit: WholeNumber = _whole("storage_limit", _DESCRIPTIONS["storage_limit"], default=None)
    gpu_enabled: bool = _omittable(description=_DESCRIPTIONS["gpu_enabled"])
    health_check_path: str | None = _text("health_check_path", _DESCRIPTIONS["health_check_path"], default=None)


class Resources(BaseModel):
    cpu: int = Field(description="Millicores")
    memory: int = Field(description="MiB")
    storage: int = Field(description="MiB")
    gpu: bool


class AppOut(BaseModel):
    id: str
    name: str
    description: str | None
    framework: str | None
    status: AppStatus = Field(description='"stopped" until the app has been deployed')
    url: str
    created_at: datetime
    resources: Resources
    github_repo: str | None
    branch: str
    environment_variables: dict[str, str]
    port: int
    cpu_limit: int
    memory_limit: int
    storage_limit: int
    gpu_enabled: bool
    health_check_path: str | None
    replicas: int
    updated_at: datetime


class AppList(BaseModel):
    items: list[AppOut]
    total: int
    page: int
    pages: int
    limit: int


def app_out(view: AppView) -> AppOut:
    app = view.app
    return AppOut(
        id=app.id,
        name=app.name,
        description=app.description,
        framework=app.framework,
        status=app.status,  # type: ignore[arg-type]
        url=view.url,
        created_at=app.created_at,
        resources=Resources(cpu=app.cpu_limit, memory=app.memory_limit, storage=app.storage_limit, gpu=app.gpu_enabled),
        github_repo=app.github_repo,
        branch=app.branch,
        environment_variables=view.environment_variables,
        port=app.port,
        cpu_limit=app.cpu_limit,
        memory_limit=app.memory_limit,
        storage_limit=app.storage_limit,
        gpu_enabled=app.gpu_enabled,
        health_check_path=app.health_check_path,
        replicas=app.replicas,
        updated_at=app.updated_at,
    )


def app_list(result: Page) -> AppList:
    return AppList(items=[app_out(v) for v in result.items], **page_fields(result))


@router.get("/apps", response_model=AppList)
async def list_apps(
    core: CoreDep,
    principal: PrincipalDep,
    status: Annotated[AppStatus | None, Query(description="Only applications in this status")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
) -> Response:
    """Your applications, newest first."""
    return reply(app_list(await read(core, apps.list_apps, core, principal, page=page, per_page=limit, status=status)))


@router.post(
    "/apps",
    status_code=201,
    response_model=AppOut,
    responses={**_QUOTA, 409: {"model": ErrorEnvelope, "description": "An app of that name exists"}},
)
def create_app(body: AppCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Create an application. It is "stopped" until deployed; its URL is https://{name}-{username}.{domain}."""
    return reply(app_out(apps.create_app(core, principal, **body.model_dump())), 201)


@router.get("/apps/{app_id}", response_model=AppOut, responses=_NO_SUCH_APP)
async def get_app(app_id: AppId, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(app_out(await read(core, apps.get_app, core, principal, app_id)))


@router.put("/apps/{app_id}", response_model=AppOut, responses={**_NO_SUCH_APP, **_QUOTA})
def update_app(app_id: AppId, body: AppUpdate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Change the fields given; the name stays."""
    return reply(app_out(apps.update_app(core, principal, app_id, **body.model_dump(exclude_unset=True))))


@router.delete("/apps/{app_id}", status_code=204, responses=_NO_SUCH_APP)
def delete_app(app_id: AppId, core: CoreDep, principal: PrincipalDep) -> Response:
    apps.delete_app(core, principal, app_id)
    return Response(status_code=204)
