"""Deployments of apps (VibeCaaS): a build of the app's git source at a branch or commit into an immutable release,
carried by a durable operation of kind `deploy` (workflows/deployments.py). This is the first part of a
deployment's life: it ends `built` (or `failed`, with its log's tail); rolling the release out is a later part.

An app is the caller's own; its git URL is checked when a deployment is asked for (services/sources.py, and for an
https URL every address it resolves to, services/outbound.py) and again when the build clones it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import Deployment, Operation
from cloudplane.domain.errors import NotFound, ValidationFailed
from cloudplane.services import operations, outbound, sources
from cloudplane.services.accounts import Principal
from cloudplane.services.apps import TEXT_FIELDS, canonical_id, owned_app
from cloudplane.services.operations import OperationView, Target
from cloudplane.services.pages import Page, counted, paged_window, window
from cloudplane.services.tenancy import mine

# pending: asked for; building: its operation fetches and builds; built: its release is on disk (a later change
# adds deploying and running); failed: the build failed (its error ends with the log's tail).
STATUSES = ("pending", "building", "built", "failed")
SOURCES = ("github", "git")
COMMIT = re.compile(r"^[0-9a-fA-F]{4,40}$")
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class DeploymentView:
    deployment: Deployment
    operation: OperationView | None


def check_commit(commit: str | None) -> str | None:
    if commit is not None and not COMMIT.fullmatch(commit):
        raise ValidationFailed("commit must be a commit id: 4 to 40 hexadecimal digits", field="commit")
    return commit.lower() if commit else None


def check_branch(branch: str) -> str:
    pattern, longest = TEXT_FIELDS["branch"]
    if len(branch) > longest or not pattern.fullmatch(branch) or ".." in branch:
        raise ValidationFailed(f"branch must match {pattern.pattern} in at most {longest} characters", field="branch")
    return branch


def check_source_url(core: Core, url: str | None) -> str:
    """The app's git URL if a build may fetch it now: allowed by the sources policy and, for https, every address
    its host resolves to public (unless the operator allows private ones). Blocking (it resolves the name)."""
    if url is None:
        raise ValidationFailed(
            "The app has no github_repo to build from: set it with PUT /api/v1/apps/{app_id}", field="github_repo"
        )
    settings = core.settings
    sources.check_source(
        url, allow_local=settings.apps_allow_local_sources, allow_private=settings.apps_allow_private_sources
    )
    if not sources.is_local(url):
        outbound.resolve(url, allow_private=settings.apps_allow_private_sources, field="github_repo")
    return url


def _operation_of(session: Session, deployment: Deployment) -> OperationView | None:
    if deployment.operation_id is None:
        return None
    op = session.get(Operation, deployment.operation_id)
    return None if op is None else operations.view(op)


def create_deployment(
    core: Core,
    principal: Principal,
    *,
    app_id: str,
    source: str = "github",
    branch: str | None = None,
    commit: str | None = None,
) -> DeploymentView:
    """Ask for a build of the app's source at `branch` (default: the app's) or `commit`: a pending deployment and
    its operation, handed to the workflow engine once committed. Blocking: it resolves the source's host."""
    if source not in SOURCES:
        raise ValidationFailed(f"source must be one of {', '.join(SOURCES)}", field="source")
    commit = check_commit(commit)
    with core.db.read() as s:
        app = owned_app(s, principal, app_id)
        url, default_branch = app.github_repo, app.branch
    branch = check_branch(branch or default_branch)
    check_source_url(core, url)
    assert url is not None
    with core.db.write() as s:
        app = owned_app(s, principal, app_id)  # still there, and still the same source
        if app.github_repo != url:
            check_source_url(core, app.github_repo)
        deployment = Deployment(
            id=str(uuid.uuid4()),
            account_id=principal.account_id,
            app_id=app.id,
            source=source,
            source_url=app.github_repo,
            branch=branch,
            commit_requested=commit,
            status="pending",
        )
        s.add(deployment)
        s.flush()
        op = operations.new_operation(
            s, account_id=principal.account_id, kind="deploy", target=Target("deployment", deployment.id)
        )
        deployment.operation_id = op.id
        s.flush()
        view = DeploymentView(deployment, _operation_of(s, deployment))
    operations.launch(op)
    return view


def list_deployments(
    core: Core,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    app_id: str | None = None,
    status: str | None = None,
) -> Page[DeploymentView]:
    """A page of the caller's deployments, newest first; of one app (its own) and in one status if given."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}", field="status")
    where = [mine(Deployment, principal)]
    if app_id is not None:
        try:
            where.append(Deployment.app_id == canonical_id(app_id))
        except NotFound:
            return Page(items=[], total=0, page=page, per_page=per_page)
    if status is not None:
        where.append(Deployment.status == status)
    order = (Deployment.created_at.desc(), Deployment.id.desc())
    with core.db.read() as s:
        total = s.scalar(counted(Deployment.__table__, where)) or 0
        rows = s.scalars(
            paged_window(select(Deployment), Deployment.id, where, order, window(total, page, per_page))
        ).all()
        items = [DeploymentView(d, _operation_of(s, d)) for d in rows]
    return Page(items=items, total=total, page=page, per_page=per_page)


def _owned(session: Session, principal: Principal, deployment_id: str) -> Deployment:
    found = session.scalar(
        select(Deployment).where(Deployment.id == canonical_deployment_id(deployment_id), mine(Deployment, principal))
    )
    if found is None:
        raise NotFound("Deployment not found", deployment_id=deployment_id)
    return found


def canonical_deployment_id(deployment_id: str) -> str:
    try:
        return canonical_id(deployment_id)
    except NotFound:
        raise NotFound("Deployment not found", deployment_id=deployment_id) from None


def get_deployment(core: Core, principal: Principal, deployment_id: str) -> DeploymentView:
    with core.db.read() as s:
        deployment = _owned(s, principal, deployment_id)
        return DeploymentView(deployment, _operation_of(s, deployment))
