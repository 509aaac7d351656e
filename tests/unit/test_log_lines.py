"""The root log handler: lines are written by a thread of its own, so a stuck reader of the output never stalls
the code that logs; each line keeps the request id and the time of the moment it was logged."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from cloudplane import context
from cloudplane.observability import QueuedLines, line_formatter


class StuckReader(io.StringIO):
    """An output whose writes wait until the test lets them through, or once 10 s, so a failure cannot hang."""

    def __init__(self) -> None:
        super().__init__()
        self.let_through = threading.Event()
        self.waited_out = False

    def write(self, text: str) -> int:
        if not self.waited_out and not self.let_through.wait(10):
            self.waited_out = True
        return super().write(text)


@pytest.fixture
def handler() -> Iterator[Callable[..., QueuedLines]]:
    made: list[QueuedLines] = []

    def make(stream: io.StringIO, **options: float) -> QueuedLines:
        made.append(QueuedLines(stream, **options))
        made[-1].setFormatter(line_formatter("json"))
        return made[-1]

    yield make
    for h in made:
        h.close()


def logger_to(handler: QueuedLines) -> logging.Logger:
    logger = logging.Logger("cloudplane.test-lines", logging.DEBUG)  # not the root's: no other handler sees it
    logger.addHandler(handler)
    return logger


def test_a_stuck_reader_does_not_stall_the_logging_thread(handler) -> None:
    out = StuckReader()
    log = logger_to(handler(out))
    for n in range(200):
        log.info("line %d", n)
    assert not out.waited_out  # every call above returned while the first write was still stuck
    out.let_through.set()
    log.handlers[0].flush()
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == [f"line {n}" for n in range(200)]


def test_a_line_keeps_the_request_id_and_time_of_its_moment_and_its_message_as_it_was(handler) -> None:
    out = StuckReader()
    log = logger_to(handler(out))
    token = context.begin(request_id="queued-1", client_ip=None)
    mutable = ["before"]
    before = datetime.now(UTC)
    log.info("value %s", mutable)
    context.end(token)
    mutable[0] = "after"
    out.let_through.set()
    log.handlers[0].flush()
    line = json.loads(out.getvalue())
    assert (line["event"], line["request_id"]) == ("value ['before']", "queued-1")
    assert before <= datetime.fromisoformat(line["timestamp"]) <= datetime.now(UTC)


def test_a_warning_is_written_before_the_call_returns(handler) -> None:
    out = io.StringIO()
    log = logger_to(handler(out, interval_s=60.0))  # after a write the writer rests a minute, unless hurried
    log.info("first")
    log.handlers[0].flush()
    log.info("second")
    log.warning("the process dies right after this line")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == [
        "first",
        "second",
        "the process dies right after this line",
    ]


def test_lines_queued_at_close_are_written(handler) -> None:
    out = io.StringIO()
    log = logger_to(handler(out, interval_s=60.0))
    for n in range(50):
        log.info("line %d", n)
    log.handlers[0].close()
    assert len(out.getvalue().splitlines()) == 50


def test_a_credential_in_any_field_of_a_stdlib_line_is_masked(handler) -> None:
    out = io.StringIO()
    log = logger_to(handler(out))
    key = "cp_" + "k" * 40
    log.warning("signed in", extra={"client_ip": f"Bearer {key}", "route": key, "status": 200})
    line = json.loads(out.getvalue())
    assert (line["client_ip"], line["route"], line["status"]) == ("[redacted]", "[redacted]", 200)
    assert key not in out.getvalue()


def test_no_field_of_a_stdlib_line_is_named_like_a_credential() -> None:
    # JsonLines masks values only: a field named like a secret (`token`) would need its value masked whatever it is.
    from cloudplane.observability import _RECORD_EXTRAS, _secret_key

    names = ("event", "level", "logger", "timestamp", "exception", "stack_info", *_RECORD_EXTRAS)
    assert [name for name in names if _secret_key(name)] == []
