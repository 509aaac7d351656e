"""The workflow of a deployment (operation kind `deploy`): fetch the app's source and build it into a release
(services/builds.py), its stages and the build's log recorded on the deployment as it goes.

A run that stops anywhere is finished by running it again: a release already in place is taken as it is, and a
half-made build is thrown away and made again (builds are repeatable; nothing outside the build directory and the
app's cache is touched before the release is renamed into place).
"""

from __future__ import annotations

from sqlalchemy import select

from cloudplane.db.tables import Deployment, utcnow
from cloudplane.domain.builds import BuildLog, tail
from cloudplane.domain.errors import CloudplaneError
from cloudplane.services import builds
from cloudplane.services.deployments import LOG_TAIL_LINES
from cloudplane.workflows import steps
from cloudplane.workflows.kinds import register
from cloudplane.workflows.steps import Changes, Job

# Build logs of runs in this process, by operation: a failure's handler reads the log's tail from it.
_logs: dict[str, BuildLog] = {}


class BuildError(CloudplaneError):
    code = "BUILD_FAILED"
    status_code = 422


def _request(job: Job) -> builds.BuildRequest:
    with steps.core().db.connect() as conn:
        row = conn.execute(
            select(Deployment.app_id, Deployment.source_url, Deployment.branch, Deployment.commit_requested).where(
                Deployment.id == job.target_id
            )
        ).one()
    return builds.BuildRequest(
        app_id=row.app_id,
        deployment_id=job.target_id,
        source_url=row.source_url,
        branch=row.branch,
        commit=row.commit_requested,
    )


async def _deploy(job: Job) -> None:
    settings = steps.core().settings
    log = _logs.setdefault(job.id, BuildLog(settings.apps_build_log_bytes))
    request = await steps.db(_request, job)
    log.line(f"[deployment {request.deployment_id}: {request.source_url} {request.commit or request.branch}]")
    await steps.progress(
        job, 10, Changes(deployment={"status": "building", "started_at": utcnow(), "log": log.text()}), stage="building"
    )

    async def report(percent: int, what: str) -> None:
        """A stage reached: the operation's progress and the log so far, recorded."""
        log.line(f"[{what}]")
        await steps.progress(job, percent, Changes(deployment={"log": log.text()}))

    try:
        release = await builds.build(settings, request, log, report)
    except builds.BuildFailed as failure:
        raise BuildError(f"{failure.message}. The log ends:\n{tail(log.text(), LOG_TAIL_LINES)}") from None
    _logs.pop(job.id, None)
    await steps.succeed(
        job,
        Changes(
            deployment={
                "status": "built",
                "commit_sha": release.commit_sha,
                "framework": release.framework,
                "release_path": str(release.path),
                "log": log.text(),
                "error": None,
                "finished_at": utcnow(),
            }
        ),
    )


async def _deploy_failed(job: Job, message: str) -> Changes:
    log = _logs.pop(job.id, None)
    changes = {"status": "failed", "error": message, "finished_at": utcnow()}
    if log is not None:
        changes["log"] = log.text()
    return Changes(deployment=changes)


register("deploy", _deploy, _deploy_failed)
