"""The metrics jobs: every minute, a sample of each running server's counters (taken once however many processes
run, by the one whose tick it is); every hour, the previous hour's samples rolled up and the old ones removed."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.services import metrics
from cloudplane.workflows.schedules import Ran, periodic


# Only the current minute: a sample taken late would be a wrong one.
@periodic(
    "metrics-sample",
    every=timedelta(seconds=60),
    catch_up=timedelta(0),
    every_setting="metrics_sample_interval_s",
)
def sample_servers(core: Core, session: Session, tick: datetime) -> Ran:
    # The provider calls take time (seconds, over a big fleet): after the tick commits, on the engine's loop.
    async def take() -> None:
        await metrics.sample(core, tick)

    return Ran("sampling", then=take)


# The hours of the last day a downtime missed are rolled up too: their samples are still kept.
@periodic("metrics-rollup", every=timedelta(seconds=metrics.HOUR_S), catch_up=metrics.KEEP_SAMPLES)
def roll_up_hour(core: Core, session: Session, tick: datetime) -> Ran:
    return Ran(metrics.roll_up(session.connection(), tick))
