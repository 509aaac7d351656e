"""Validate a user-supplied OpenSSH public key line and compute its SHA256 fingerprint."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from cryptography.hazmat.primitives.asymmetric import ec, rsa

MAX_INPUT_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
# OpenSSH itself refuses larger moduli, so such a key could never be used to log in.
MAX_RSA_BITS = 16384

_CERT_SUFFIX = "-cert-v01@openssh.com"
_CURVES: dict[str, ec.EllipticCurve] = {
    "nistp256": ec.SECP256R1(),
    "nistp384": ec.SECP384R1(),
    "nistp521": ec.SECP521R1(),
}
_ACCEPTED_TYPES_HINT = (
    "ssh-ed25519, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, "
    "sk-ecdsa-sha2-nistp256@openssh.com or ssh-rsa (2048 bits or more)"
)


class SSHKeyError(ValueError):
    """Raised for a key we refuse; str(e) is a short user-facing message saying what is wrong and what to do."""


@dataclass(frozen=True)
class ParsedKey:
    """An accepted public key; `bits` and `fingerprint` match what `ssh-keygen -lf` prints."""

    key_type: str
    bits: int
    fingerprint: str
    comment: str
    normalized: str


def _corrupt(detail: str) -> SSHKeyError:
    return SSHKeyError(
        f"The key data is truncated or corrupted ({detail}). Copy the whole line from your .pub file again."
    )


class _Reader:
    """Reads SSH wire-format fields (RFC 4251) from a key blob."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def string(self, what: str) -> bytes:
        if len(self._data) - self._pos < 4:
            raise _corrupt(f"{what} is missing")
        size = int.from_bytes(self._data[self._pos : self._pos + 4], "big")
        start = self._pos + 4
        if size > len(self._data) - start:
            raise _corrupt(f"{what} is cut off")
        self._pos = start + size
        return self._data[start : self._pos]

    def text(self, what: str) -> str:
        raw = self.string(what)
        if b"\0" in raw:
            raise _corrupt(f"{what} is not text")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _corrupt(f"{what} is not text") from None

    def mpint(self, what: str) -> int:
        raw = self.string(what)
        if raw and raw[0] & 0x80:
            raise _corrupt(f"{what} is negative")
        if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
            raise _corrupt(f"{what} has superfluous leading zeros")
        return int.from_bytes(raw, "big")

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise SSHKeyError(
                "The key data has unexpected extra bytes after the key. Copy the whole line from your .pub file again."
            )


def _read_rsa(reader: _Reader) -> int:
    e = reader.mpint("RSA exponent")
    n = reader.mpint("RSA modulus")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise SSHKeyError(
            f"This RSA key is only {bits} bits; at least {MIN_RSA_BITS} bits are required. "
            "Generate a new key, e.g. `ssh-keygen -t ed25519`."
        )
    if bits > MAX_RSA_BITS:
        raise SSHKeyError(
            f"This RSA key is {bits} bits; OpenSSH does not support more than {MAX_RSA_BITS}. "
            "Generate a new key, e.g. `ssh-keygen -t ed25519`."
        )
    try:
        rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise _corrupt("the RSA numbers are invalid") from None
    return bits


def _read_ed25519(reader: _Reader) -> int:
    if len(reader.string("Ed25519 key")) != 32:
        raise _corrupt("the Ed25519 key is not 32 bytes")
    return 256


def _read_ecdsa(reader: _Reader, curve_name: str) -> int:
    found = reader.text("curve name")
    if found != curve_name:
        raise _corrupt(f"it names curve {found[:20]!r} instead of {curve_name!r}")
    point = reader.string("EC point")
    curve = _CURVES[curve_name]
    # OpenSSH only reads uncompressed points, so a compressed one would be unusable.
    if not point or point[0] != 0x04:
        raise _corrupt("the EC point is not in uncompressed form")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except ValueError:
        raise _corrupt(f"the EC point is not on the {curve_name} curve") from None
    return curve.key_size


def _security_key(inner: Callable[[_Reader], int], reader: _Reader) -> int:
    bits = inner(reader)
    reader.text("security key application")
    return bits


_READERS: dict[str, Callable[[_Reader], int]] = {
    "ssh-ed25519": _read_ed25519,
    "ecdsa-sha2-nistp256": partial(_read_ecdsa, curve_name="nistp256"),
    "ecdsa-sha2-nistp384": partial(_read_ecdsa, curve_name="nistp384"),
    "ecdsa-sha2-nistp521": partial(_read_ecdsa, curve_name="nistp521"),
    "sk-ssh-ed25519@openssh.com": partial(_security_key, _read_ed25519),
    "sk-ecdsa-sha2-nistp256@openssh.com": partial(_security_key, partial(_read_ecdsa, curve_name="nistp256")),
    "ssh-rsa": _read_rsa,
}


def _is_type_token(token: str) -> bool:
    return token in _READERS or token == "ssh-dss" or token.endswith(_CERT_SUFFIX)


def _check_text(text: str) -> str:
    """Return the single key line, rejecting anything that is not one public key."""
    if "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text:
        raise SSHKeyError(
            "This is a private key, which must never be shared. "
            "Paste the public key from the matching .pub file instead (e.g. ~/.ssh/id_ed25519.pub)."
        )
    if len(text) > MAX_INPUT_BYTES or len(text.encode("utf-8", "replace")) > MAX_INPUT_BYTES:
        raise SSHKeyError("The key text is larger than 16 KiB. Paste a single public key line from your .pub file.")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SSHKeyError(
            "No SSH public key was given. Paste the contents of your .pub file (e.g. ~/.ssh/id_ed25519.pub)."
        )
    if len(lines) > 1:
        raise SSHKeyError(f"Found {len(lines)} lines; expected exactly one public key. Add one key at a time.")
    return lines[0]


def _unsupported_type(tokens: list[str]) -> SSHKeyError:
    key_type = tokens[0]
    if key_type == "ssh-dss":
        return SSHKeyError(
            "DSA (ssh-dss) keys are insecure and not accepted. Generate a new key with `ssh-keygen -t ed25519`."
        )
    if key_type.endswith(_CERT_SUFFIX):
        return SSHKeyError(
            "SSH certificates are not accepted. Paste the plain public key (.pub), not the -cert.pub file."
        )
    if any(_is_type_token(token) for token in tokens[1:]):
        return SSHKeyError(
            'The key starts with authorized_keys options (such as command="..." or no-pty), '
            "which are not allowed here. Remove them and paste only the key itself."
        )
    return SSHKeyError(f"Unsupported key type {key_type[:40]!r}. Use {_ACCEPTED_TYPES_HINT}.")


def _decode_base64(data: str) -> bytes:
    try:
        blob = base64.b64decode(data, validate=True)
    except ValueError:
        blob = None
    # Like OpenSSH, only accept the canonical encoding (exact padding, zero spare bits).
    if blob is None or base64.b64encode(blob).decode("ascii") != data:
        raise SSHKeyError(
            "The key data is not valid base64; it may have been cut off or altered. "
            "Copy the whole line from your .pub file again."
        )
    return blob


def parse_public_key(text: str) -> ParsedKey:
    """Parse one OpenSSH public key line, raising SSHKeyError if we would not accept it."""
    tokens = _check_text(text).split()
    key_type = tokens[0]
    if key_type not in _READERS:
        raise _unsupported_type(tokens)
    if len(tokens) < 2:
        raise SSHKeyError(f"The key data after {key_type!r} is missing. Paste the whole line from your .pub file.")
    comment_tokens = tokens[2:]
    if any(_is_type_token(token) for token in comment_tokens):
        raise SSHKeyError("Found more than one key on the line; expected exactly one. Add one key at a time.")

    blob = _decode_base64(tokens[1])
    reader = _Reader(blob)
    blob_type = reader.text("key type")
    if blob_type != key_type:
        described = repr(blob_type) if _is_type_token(blob_type) else "a different or unknown"
        raise SSHKeyError(
            f"The line says {key_type!r} but the key data holds {described} key. "
            "Paste the line from your .pub file unchanged."
        )
    bits = _READERS[key_type](reader)
    reader.finish()

    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    comment = " ".join(comment_tokens)
    normalized = f"{key_type} {tokens[1]}"
    if comment:
        normalized += f" {comment}"
    return ParsedKey(
        key_type=key_type,
        bits=bits,
        fingerprint=f"SHA256:{digest}",
        comment=comment,
        normalized=normalized,
    )
