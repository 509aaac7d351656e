from cloudplane.domain.states import ACTIONS, ServerStatus, refusal_reason


def test_every_action_has_a_distinct_task_state() -> None:
    states = [a.task_state for a in ACTIONS.values()]
    assert len(states) == len(set(states))


def test_power_actions_follow_the_documented_table() -> None:
    assert ACTIONS["start"].allowed_from == {ServerStatus.STOPPED}
    assert ACTIONS["stop"].allowed_from == {ServerStatus.RUNNING}
    assert ACTIONS["reboot"].allowed_from == {ServerStatus.RUNNING}
    # The LetsCloud document: restoring a running server is a 409.
    assert ServerStatus.RUNNING not in ACTIONS["restore"].allowed_from
    assert ServerStatus.CREATING not in ACTIONS["delete"].allowed_from


def test_refusal_reason_says_what_would_let_the_action_run() -> None:
    assert "must be stopped" in refusal_reason(ACTIONS["start"], "running", None)
    assert "busy (rebooting)" in refusal_reason(ACTIONS["stop"], "running", "rebooting")
