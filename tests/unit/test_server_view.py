"""The pieces of the one server view: status words from one table, prices computed once, field names per face."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cloudplane.api.cloudvps.envelope import CLOUDVPS_FIELDS
from cloudplane.api.common.faces import LETSCLOUD_FIELDS, RequestInvalid, face_details
from cloudplane.domain.errors import BadRequest, ValidationFailed
from cloudplane.domain.pricing import annual_from_monthly, monthly_from_hourly, transfer_allowance_gb
from cloudplane.domain.states import ServerStatus, TaskState
from cloudplane.domain.status_words import STATUS_WORDS, VISIBLE_TASKS, status_words


def test_every_status_and_task_has_its_words() -> None:
    assert len(STATUS_WORDS) == len(ServerStatus) * (len(TaskState) + 1) * 2
    for (status, task, suspended), words in STATUS_WORDS.items():
        # The current-state word is the one list filters compute in SQL: the visible task, else "suspended" for a
        # suspended server, else the status.
        expected = task if task in VISIBLE_TASKS else "suspended" if suspended else status
        assert words.state == expected, (status, task, suspended)
        # LetsCloud's enum, and "suspended", which every face shows for a suspended server.
        assert words.letscloud in {"running", "stopped", "starting", "stopping", "rebooting", "error", "suspended"}
        assert words.letscloud != "suspended" or suspended


@pytest.mark.parametrize(
    ("status", "task", "state", "letscloud", "letscloud_task", "gpu"),
    [
        ("running", None, "suspended", "suspended", None, "suspended"),
        ("stopped", None, "suspended", "suspended", None, "suspended"),
        ("running", "suspending", "suspended", "suspended", "suspending", "suspended"),
        ("stopped", "resuming", "suspended", "suspended", "resuming", "suspended"),
    ],
)
def test_a_suspended_server_shows_suspended_on_every_face(
    status: str, task: str | None, state: str, letscloud: str, letscloud_task: str | None, gpu: str
) -> None:
    words = status_words(status, task, suspended=True)
    assert (words.state, words.letscloud, words.letscloud_task, words.gpu) == (state, letscloud, letscloud_task, gpu)
    assert status_words(status, task).state != "suspended"  # the flag, not the status, says it


@pytest.mark.parametrize(
    ("status", "task", "state", "letscloud", "letscloud_task", "gpu"),
    [
        ("creating", None, "creating", "starting", "creating", "loading"),
        ("running", None, "running", "running", None, "running"),
        ("running", "stopping", "stopping", "stopping", "stopping", "stopping"),
        ("running", "rebooting", "rebooting", "rebooting", "rebooting", "running"),
        ("running", "snapshotting", "running", "running", "snapshotting", "running"),
        ("stopped", "starting", "starting", "starting", "starting", "loading"),
        ("stopped", "restoring", "restoring", "stopped", "restoring", "stopped"),
        ("stopped", "deleting", "deleting", "stopping", "deleting", "destroying"),
        ("error", None, "error", "error", None, "error"),
    ],
)
def test_each_face_word(
    status: str, task: str | None, state: str, letscloud: str, letscloud_task: str | None, gpu: str
) -> None:
    words = status_words(status, task)
    assert (words.state, words.letscloud, words.letscloud_task, words.gpu) == (state, letscloud, letscloud_task, gpu)


def test_a_status_the_table_does_not_know_yet_still_has_words() -> None:
    words = status_words("suspended", None)
    assert (words.state, words.letscloud, words.gpu) == ("suspended", "error", "suspended")


def test_monthly_from_hourly_is_exact_to_the_cent() -> None:
    # 0.0545 * 730 is 39.785: a float holds a bit less (39.78 when rounded), and half-even rounding gives 39.78.
    assert round(0.0545 * 730, 2) == 39.78
    assert monthly_from_hourly(Decimal("0.0545")) == Decimal("39.79")
    assert monthly_from_hourly(Decimal("1.5000")) == Decimal("1095.00")
    assert monthly_from_hourly(Decimal("0.1") + Decimal("0.2")) == Decimal("219.00")
    assert annual_from_monthly(Decimal("19.99")) == Decimal("199.99")
    assert transfer_allowance_gb(2048) == 1000 and transfer_allowance_gb(4096) == 2000


def test_neutral_field_ids_become_each_faces_names() -> None:
    cases = {
        "plan": ("plan_slug", "plan_id"),
        "image": ("image_slug", "operating_system"),
        "location": ("location_slug", "location"),
        "label": ("label", "name"),
        "ssh_keys[2]": ("ssh_keys[2]", "ssh_keys[2]"),
        "hostname": ("hostname", "hostname"),
    }
    for neutral, (letscloud, cloudvps) in cases.items():
        error = ValidationFailed("no", field=neutral, choices=["a"])
        assert face_details(error, LETSCLOUD_FIELDS) == {"field": letscloud, "choices": ["a"]}
        assert face_details(error, CLOUDVPS_FIELDS) == {"field": cloudvps, "choices": ["a"]}
        assert error.details["field"] == neutral, "the error itself is left as it is"
    assert face_details(BadRequest("no"), CLOUDVPS_FIELDS) == {}
    # A field the face's own schema refused is named as the request named it.
    assert face_details(RequestInvalid("no", field="plan"), LETSCLOUD_FIELDS) == {"field": "plan"}
