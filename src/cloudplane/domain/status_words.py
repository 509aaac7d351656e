"""What each face calls a server's state: one table from (status, task_state) to the word every face shows."""

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
_TASK_ROWS: dict[TaskState, tuple[str | None, str | None, str | None, str | None]] = {
    TaskState.STARTING: ("starting", "starting", "starting", "loading"),
    TaskState.STOPPING: ("stopping", "stopping", "stopping", "stopping"),
    TaskState.REBOOTING: ("rebooting", "rebooting", "rebooting", None),
    # A snapshot leaves the server as it was (running or stopped); only LetsCloud's task_state says it.
    TaskState.SNAPSHOTTING: (None, None, "snapshotting", None),
    TaskState.RESTORING: ("restoring", None, "restoring", None),
    # LetsCloud's enum has no "deleting": the nearest state it knows, and the exact one in task_state.
    TaskState.DELETING: ("deleting", "stopping", "deleting", "destroying"),
}

# The tasks that show as the current state; list filters compute the same word in SQL from this set.
VISIBLE_TASKS = frozenset(task for task, row in _TASK_ROWS.items() if row[0] is not None)


def _words(status: ServerStatus, task: TaskState | None) -> StatusWords:
    base = _STATUS_ROWS[status]
    if task is None:
        return StatusWords(*base)
    over = _TASK_ROWS[task]
    # A server being created shows "creating" as LetsCloud's task whatever else it does.
    task_word = base[2] if status is ServerStatus.CREATING else over[2]
    return StatusWords(over[0] or base[0], over[1] or base[1], task_word, over[3] or base[3])


STATUS_WORDS: dict[tuple[str, str | None], StatusWords] = {
    (status.value, task.value if task else None): _words(status, task)
    for status in ServerStatus
    for task in (None, *TaskState)
}


def status_words(status: str, task_state: str | None) -> StatusWords:
    """The words for a server's (status, task_state); a status this table does not know yet shows as it is."""
    words = STATUS_WORDS.get((status, task_state))
    if words is None:
        task = task_state if task_state in VISIBLE_TASKS else None
        words = StatusWords(task or status, "error", task_state, task or status)
    return words
