"""The server state machine: which action may start from which state, and what it leads to."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ServerStatus(StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    DELETED = "deleted"


class TaskState(StrEnum):
    STARTING = "starting"
    STOPPING = "stopping"
    REBOOTING = "rebooting"
    REBUILDING = "rebuilding"
    SNAPSHOTTING = "snapshotting"
    RESTORING = "restoring"
    DELETING = "deleting"
    # The root password is being set inside the running server's system.
    RESETTING_PASSWORD = "resetting_password"
    # An administrator's suspension (or its lifting) is being carried out; see `suspended_at` on the server.
    SUSPENDING = "suspending"
    RESUMING = "resuming"


class SnapshotStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"


@dataclass(frozen=True)
class Action:
    name: str
    task_state: TaskState
    allowed_from: frozenset[ServerStatus]
    # Status the server settles in when the action succeeds; None keeps the status it had.
    ends_in: ServerStatus | None
    # How a refusal names it: "Cannot <verb> a server that is ..."; empty: its name.
    verb: str = ""


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("start", TaskState.STARTING, frozenset({ServerStatus.STOPPED}), ServerStatus.RUNNING),
        Action("stop", TaskState.STOPPING, frozenset({ServerStatus.RUNNING}), ServerStatus.STOPPED),
        Action("reboot", TaskState.REBOOTING, frozenset({ServerStatus.RUNNING}), ServerStatus.RUNNING),
        Action(
            "delete",
            TaskState.DELETING,
            frozenset({ServerStatus.RUNNING, ServerStatus.STOPPED, ServerStatus.ERROR}),
            ServerStatus.DELETED,
        ),
        Action(
            "snapshot",
            TaskState.SNAPSHOTTING,
            frozenset({ServerStatus.RUNNING, ServerStatus.STOPPED}),
            None,
        ),
        Action("restore", TaskState.RESTORING, frozenset({ServerStatus.STOPPED}), None),
        # A running server is stopped, rebuilt and started again; a stopped one stays stopped. Not from error: a
        # failed create leaves no machine to re-image (delete it and create another).
        Action("rebuild", TaskState.REBUILDING, frozenset({ServerStatus.RUNNING, ServerStatus.STOPPED}), None),
        # Set inside the running system (its own chpasswd, a VM's guest agent), the same way on every provider.
        Action(
            "reset_password",
            TaskState.RESETTING_PASSWORD,
            frozenset({ServerStatus.RUNNING}),
            None,
            verb="reset the root password of",
        ),
    )
}


# What the owner of a suspended server is told whatever they ask of it.
SUSPENDED_REASON = "This server is suspended by an administrator; contact support to have it unsuspended."


def refusal_reason(action: Action, status: str, task_state: str | None) -> str:
    """A sentence telling the user why `action` cannot run now and what would let it."""
    if task_state:
        return f"Server is busy ({task_state}); wait for it to finish and try again."
    allowed = " or ".join(sorted(s.value for s in action.allowed_from))
    return f"Cannot {action.verb or action.name} a server that is {status}; it must be {allowed}."
