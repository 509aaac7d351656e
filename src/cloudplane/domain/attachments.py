"""Files attached to support messages: base64 decoded in chunks under a size limit (an oversized file is refused
once its decoded bytes pass the limit, never decoded whole first), and the type told from the bytes themselves
against an allowlist; what the client claims is never believed."""

from __future__ import annotations

import binascii
import re

from cloudplane.domain.errors import PayloadTooLarge, ValidationFailed

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_FILENAME_CHARS = 255
# Characters of base64 decoded at a time: a multiple of 4, so every chunk but the last decodes on its own.
CHUNK_CHARS = 256 * 1024
_WHITESPACE = str.maketrans("", "", " \t\r\n")
_DATA_URL = re.compile(r"data:[^,;]{0,100}(;[^,;]{0,100})*;base64,")

# Leading bytes of the binary types allowed (the WHATWG MIME-sniffing signatures); anything else must be text.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),  # an empty archive
    (b"\x1f\x8b\x08", "application/gzip"),
)
ALLOWED_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "application/zip",
                 "application/gzip", "text/plain")  # fmt: skip
# Text is UTF-8 without control characters other than tab, line breaks, form feed and ESC (colours in logs).
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def decode_base64(text: str, *, field: str, limit: int = MAX_ATTACHMENT_BYTES) -> bytes:
    """The bytes `text` encodes (standard base64, padding optional, line breaks ignored, a `data:...;base64,`
    prefix allowed). Refused, naming `field`: text that is not base64 (422), and bytes past `limit` (413), found
    while decoding: at most one chunk is decoded beyond the limit."""
    prefix = _DATA_URL.match(text, 0, 300)
    start = prefix.end() if prefix else 0
    out = bytearray()
    carry = ""
    padded = False
    for offset in range(start, len(text), CHUNK_CHARS):
        piece = carry + _without_whitespace(text[offset : offset + CHUNK_CHARS])
        whole = len(piece) - len(piece) % 4
        piece, carry = piece[:whole], piece[whole:]
        if piece:
            padded = _decode_into(out, piece, padded, field)
            if len(out) > limit:
                raise _too_large(field, limit)
    if carry:
        if len(carry) == 1:
            raise _not_base64(field)
        _decode_into(out, carry + "=" * (4 - len(carry)), padded, field)
        if len(out) > limit:
            raise _too_large(field, limit)
    if not out:
        raise ValidationFailed(f"{field}: the file is empty; attach a file with some content", field=field)
    return bytes(out)


def _without_whitespace(chunk: str) -> str:
    # Most senders send no line breaks: looking for one costs a memchr, removing them a pass over the chunk.
    if any(c in chunk for c in " \t\r\n"):
        return chunk.translate(_WHITESPACE)
    return chunk


def _decode_into(out: bytearray, piece: str, padded: bool, field: str) -> bool:
    """Decode one chunk onto `out`; returns whether it ended in padding (after which no data may follow)."""
    if padded:
        raise _not_base64(field)
    try:
        out += binascii.a2b_base64(piece.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _not_base64(field) from None
    return piece.endswith("=")


def _not_base64(field: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: not valid base64; send the file's bytes encoded as standard base64 (RFC 4648, A-Z a-z 0-9 + /)",
        field=field,
    )


def _too_large(field: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{field}: the file is larger than {limit // (1024 * 1024)} MiB ({limit} bytes), the most an attachment "
        "may be; attach a smaller or compressed file",
        field=field,
        limit_bytes=limit,
    )


def detect_type(data: bytes) -> str | None:
    """The allowed type the bytes are, or None: a signature of an allowed binary type, else UTF-8 text."""
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if _BINARY.search(data):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text/plain"


def require_allowed_type(data: bytes, field: str) -> str:
    content_type = detect_type(data)
    if content_type is None:
        raise ValidationFailed(
            f"{field}: this kind of file cannot be attached; attach PNG, JPEG, GIF or WebP images, PDF, ZIP or gzip "
            "archives, or UTF-8 text (logs)",
            field=field,
            allowed_types=list(ALLOWED_TYPES),
        )
    return content_type


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\"\\/]")


def safe_filename(name: str) -> str:
    """The name a file is stored and offered under: its last path part, without control characters or quotes."""
    base = re.split(r"[/\\]", name)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip().lstrip(".")
    return cleaned[:MAX_FILENAME_CHARS] or "attachment"
