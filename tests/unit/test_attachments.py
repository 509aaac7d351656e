"""Attachments' base64 decoding under a limit (counted chunk by chunk, never the whole file first) and their type
from their bytes; and the support tickets' status table."""

from __future__ import annotations

import base64
import tracemalloc

import pytest

from cloudplane.domain import attachments
from cloudplane.domain.attachments import CHUNK_CHARS, decode_base64, detect_type, safe_filename
from cloudplane.domain.errors import PayloadTooLarge, ValidationFailed
from cloudplane.domain.tickets import Party, TicketStatus, moves_from, status_after_reply


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("size", [0, 1, 2, 3, CHUNK_CHARS // 4 * 3 - 1, CHUNK_CHARS // 4 * 3, CHUNK_CHARS * 2 + 1])
def test_decoding_in_chunks_gives_the_bytes_back_whatever_the_length(size: int) -> None:
    data = bytes(i % 251 for i in range(size)) or b"\x01"
    encoded = b64(data)
    assert decode_base64(encoded, field="f") == data
    assert decode_base64(encoded.rstrip("="), field="f") == data
    # Line breaks every 76 characters (MIME), which move every chunk's boundary.
    wrapped = "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_base64(wrapped, field="f") == data
    assert decode_base64("data:image/png;base64," + encoded, field="f") == data


def test_the_limit_is_exact_and_names_the_field() -> None:
    assert len(decode_base64(b64(b"x" * 1000), field="f", limit=1000)) == 1000
    with pytest.raises(PayloadTooLarge) as refused:
        decode_base64(b64(b"x" * 1001), field="attachments[2].data", limit=1000)
    assert refused.value.details == {"field": "attachments[2].data", "limit_bytes": 1000}


def test_an_oversized_file_is_refused_before_it_is_decoded_whole() -> None:
    text = b64(bytes(30 * 1024 * 1024))  # 40 MiB of base64
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decode_base64(text, field="f", limit=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The limit plus about a chunk, never the 30 MiB the text holds.
    assert peak < 3 * 1024 * 1024, peak


@pytest.mark.parametrize(
    "text",
    [
        "abc!",
        "QUJD=QUJD",  # padding inside
        "A",  # a lone character encodes nothing
        "é" * 8,
        b64(b"x" * (CHUNK_CHARS // 4 * 3 - 1)) + "QUJD",  # data after the padding that ends a chunk
    ],
)
def test_what_is_not_base64_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        decode_base64(text, field="attachments[0].data")
    assert refused.value.details["field"] == "attachments[0].data"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0JFIF", "image/jpeg"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7", "application/pdf"),
        (b"PK\x03\x04....", "application/zip"),
        (b"\x1f\x8b\x08\x00", "application/gzip"),
        (b"2026-12-07 error: disk full\n\x1b[31mred\x1b[0m\tok\r\n", "text/plain"),
        ("journal: ünïcode ✓\n".encode(), "text/plain"),
        (b"<html><script>alert(1)</script></html>", "text/plain"),  # served as text, never as a page
        (b"\x7fELF\x02\x01\x01\x00", None),
        (b"MZ\x90\x00\x03\x00", None),
        (b"text with a NUL\x00 inside", None),
        (b"\xc3\x28 invalid UTF-8", None),
    ],
)
def test_the_type_comes_from_the_bytes(data: bytes, expected: str | None) -> None:
    assert detect_type(data) == expected
    assert expected is None or expected in attachments.ALLOWED_TYPES


def test_file_names_lose_paths_controls_and_quotes() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\shot.png") == "shot.png"
    assert safe_filename('a"b\r\n.txt') == "a_b__.txt"
    assert safe_filename(".hidden") == "hidden"
    assert safe_filename("/") == "attachment"
    assert len(safe_filename("x" * 1000)) == 255


def test_the_status_table() -> None:
    open_, working, resolved, closed = TicketStatus
    assert moves_from(Party.OWNER, open_) == ["resolved", "closed"]
    assert moves_from(Party.STAFF, open_) == ["in-progress", "resolved", "closed"]
    assert moves_from(Party.OWNER, resolved) == ["open", "closed"]
    assert moves_from(Party.OWNER, closed) == ["open"]
    assert moves_from(Party.STAFF, working) == ["open", "resolved", "closed"]
    assert status_after_reply(Party.STAFF, open_) is working
    assert status_after_reply(Party.OWNER, resolved) is open_
    assert status_after_reply(Party.OWNER, open_) is None
    assert status_after_reply(Party.STAFF, resolved) is None
