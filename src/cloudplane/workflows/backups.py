"""Automatic backups: every hour, on the hour, the servers whose schedule is due get their daily backup (a snapshot
operation each, run by the snapshot workflow) once, however many processes run."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.services import backups
from cloudplane.workflows.schedules import Ran, periodic


# After a downtime, the hours missed in the last day still run (a daily backup taken late is wanted); older ones
# do not (each server's hour comes once a day: more would be several backups of one server at once).
@periodic("backups", every=timedelta(hours=1), catch_up=timedelta(hours=23))
def hourly_backups(core: Core, session: Session, tick: datetime) -> Ran:
    summary, started = backups.take_due_backups(core, session, tick)
    return Ran(summary, started)
