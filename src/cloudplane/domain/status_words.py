"""What each face calls a server's state: one table from (status, task_state, suspended) to the word every face
shows."""

from __future__ import annotations

from dataclasses import dataclass

from cloudplane.domain.states import ServerStatus, TaskState


@dataclass(frozen=True, slots=True)
class StatusWords:
    # The current-state word: the visible task while one runs, else the status. CloudVPS shows it as the VPS's
    # status, and server lists filter and sort on it.
    state: str
    # LetsCloud's `status` (its document's enum: running, stopped, starting, stopping, rebooting, error) and its
    # `task_state` (what the server is busy with, "creating" included).
    letscloud: str
    letscloud_task: str | None
    # The GPU Cloud Manager's instance status (loading, running, stopping, stopped, destroying, error...).
    gpu: str


# One row per status, then one per task, which shows over the status; None in a task row: as the status shows.
#                       state        letscloud    letscloud_task  gpu
_STATUS_ROWS: dict[ServerStatus, tuple[str, str, str | None, str]] = {
    ServerStatus.CREATING: ("creating", "starting", "creating", "loading"),
    ServerStatus.RUNNING: ("running", "running", None, "running"),
    ServerStatus.STOPPED: ("stopped", "stopped", None, "stopped"),
    ServerStatus.ERROR: ("error", "error", None, "error"),
    ServerStatus.DELETED: ("deleted", "stopped", None, "destroyed"),
}
# An administrator's suspension shows over the status (the power state the server goes back to when it is lifted) on
# every face, under a visible task.
_SUSPENDED_ROW: tuple[str, str, str | None, str] = ("suspended", "suspended", None, "suspended")
_TASK_ROWS: dict[TaskState, tuple[str | None, str | None, str | None, str | None]] = {
    TaskState.STARTING: ("starting", "starting", "starting", "loading"),
    TaskState.STOPPING: ("stopping", "stopping", "stopping", "stopping"),
    TaskState.REBOOTING: ("rebooting", "rebooting", "rebooting", None),
    # A rebuild makes the server afresh: LetsCloud's enum has no word for it, "starting" is what a create shows.
    TaskState.REBUILDING: ("rebuilding", "starting", "rebuilding", "loading"),
    # A snapshot leaves the server as it was (running or stopped); only LetsCloud's task_state says it.
    TaskState.SNAPSHOTTING: (None, None, "snapshotting", None),
    TaskState.RESTORING: ("restoring", None, "restoring", None),
    # LetsCloud's enum has no "deleting": the nearest state it knows, and the exact one in task_state.
    TaskState.DELETING: ("deleting", "stopping", "deleting", "destroying"),
    # A suspension shows as "suspended" from the moment it is asked for until it is lifted; LetsCloud's task_state
    # tells the steps.
    TaskState.SUSPENDING: (None, None, "suspending", None),
    TaskState.RESUMING: (None, None, "resuming", None),
    # The server keeps running throughout: only LetsCloud's task_state says it.
    TaskState.RESETTING_PASSWORD: (None, None, "resetting_password", None),
}

# The tasks that show as the current state; list filters compute the same word in SQL from this set.
VISIBLE_TASKS = frozenset(task for task, row in _TASK_ROWS.items() if row[0] is not None)


def _words(status: ServerStatus, task: TaskState | None, suspended: bool) -> StatusWords:
    base = _SUSPENDED_ROW if suspended else _STATUS_ROWS[status]
    if task is None:
        return StatusWords(*base)
    over = _TASK_ROWS[task]
    # A server being created shows "creating" as LetsCloud's task whatever else it does.
    task_word = _STATUS_ROWS[status][2] if status is ServerStatus.CREATING else over[2]
    return StatusWords(over[0] or base[0], over[1] or base[1], task_word, over[3] or base[3])


STATUS_WORDS: dict[tuple[str, str | None, bool], StatusWords] = {
    (status.value, task.value if task else None, suspended): _words(status, task, suspended)
    for status in ServerStatus
    for task in (None, *TaskState)
    for suspended in (False, True)
}


def status_words(status: str, task_state: str | None, suspended: bool = False) -> StatusWords:
    """The words for a server's (status, task_state, whether an administrator suspended it); a status this table
    does not know yet shows as it is."""
    words = STATUS_WORDS.get((status, task_state, suspended))
    if words is None:
        task = task_state if task_state in VISIBLE_TASKS else None
        shown = task or ("suspended" if suspended else status)
        words = StatusWords(shown, "error", task_state, shown)
    return words
