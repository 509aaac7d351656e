"""Validate a user-supplied OpenSSH public key line and compute its SHA256 fingerprint."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

MAX_INPUT_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
# OpenSSH itself refuses larger moduli, so such a key could never be used to log in.
MAX_RSA_BITS = 16384

_CERT_SUFFIX = "-cert-v01@openssh.com"
_SK_ED25519 = "sk-ssh-ed25519@openssh.com"
_SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
_APPLICATION = "security key application"
# The fields after the type string, by key type (RFC 4253, RFC 5656, RFC 8709, OpenSSH's PROTOCOL.u2f).
_FIELDS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("Ed25519 key",),
    "ecdsa-sha2-nistp256": ("curve name", "EC point"),
    "ecdsa-sha2-nistp384": ("curve name", "EC point"),
    "ecdsa-sha2-nistp521": ("curve name", "EC point"),
    _SK_ED25519: ("Ed25519 key", _APPLICATION),
    _SK_ECDSA: ("curve name", "EC point", _APPLICATION),
    "ssh-rsa": ("RSA exponent", "RSA modulus"),
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


class _Fields:
    """Splits a key blob into its length-prefixed fields (RFC 4251), naming the one that is missing or cut off.

    cryptography validates the key itself but answers "Invalid data" for any framing fault; this only frames.
    """

    def __init__(self, blob: bytes) -> None:
        self._blob = blob
        self._pos = 0

    def next(self, what: str) -> bytes:
        if len(self._blob) - self._pos < 4:
            raise _corrupt(f"{what} is missing")
        size = int.from_bytes(self._blob[self._pos : self._pos + 4], "big")
        start = self._pos + 4
        if size > len(self._blob) - start:
            raise _corrupt(f"{what} is cut off")
        self._pos = start + size
        return self._blob[start : self._pos]

    def finish(self) -> None:
        if self._pos != len(self._blob):
            raise SSHKeyError(
                "The key data has unexpected extra bytes after the key. Copy the whole line from your .pub file again."
            )


def _text(raw: bytes, what: str) -> str:
    if b"\0" in raw:
        raise _corrupt(f"{what} is not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _corrupt(f"{what} is not text") from None


def _mpint_bits(raw: bytes, what: str) -> int:
    # OpenSSH refuses negative and non-minimal mpints; cryptography accepts the latter, so check both here.
    if raw and raw[0] & 0x80:
        raise _corrupt(f"{what} is negative")
    if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
        raise _corrupt(f"{what} has superfluous leading zeros")
    return int.from_bytes(raw, "big").bit_length()


def _check_fields(key_type: str, fields: dict[str, bytes]) -> None:
    """The rules cryptography does not enforce, or enforces without saying which field is wrong."""
    if "curve name" in fields:
        expected = key_type.removeprefix("sk-").removesuffix("@openssh.com").removeprefix("ecdsa-sha2-")
        found = _text(fields["curve name"], "curve name")
        if found != expected:
            raise _corrupt(f"it names curve {found[:20]!r} instead of {expected!r}")
    if _APPLICATION in fields and not _text(fields[_APPLICATION], _APPLICATION).startswith("ssh:"):
        raise _corrupt(f"the {_APPLICATION} does not start with 'ssh:'")
    if key_type == "ssh-rsa":
        _mpint_bits(fields["RSA exponent"], "RSA exponent")
        bits = _mpint_bits(fields["RSA modulus"], "RSA modulus")
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


def _load(key_type: str, data: str) -> int:
    """Load the key with cryptography (which knows every accepted type, sk- ones included); return its bits."""
    try:
        key = load_ssh_public_key(f"{key_type} {data}".encode("ascii"))
    except NotImplementedError:
        # cryptography, like OpenSSH, only reads uncompressed points.
        raise _corrupt("the EC point is not in uncompressed form") from None
    except ValueError:
        # The framing and the fields checked above are sound, so what is left is the key's own value.
        if key_type == "ssh-rsa":
            raise _corrupt("the RSA numbers are invalid") from None
        if "ed25519" in key_type:
            raise _corrupt("the Ed25519 key is not 32 bytes") from None
        curve_name = key_type.removeprefix("sk-").removesuffix("@openssh.com").removeprefix("ecdsa-sha2-")
        raise _corrupt(f"the EC point is not on the {curve_name} curve") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    return 256


def _is_type_token(token: str) -> bool:
    return token in _FIELDS or token == "ssh-dss" or token.endswith(_CERT_SUFFIX)


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
    # Like OpenSSH, only accept the canonical encoding (exact padding, zero spare bits); cryptography is laxer.
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
    if key_type not in _FIELDS:
        raise _unsupported_type(tokens)
    if len(tokens) < 2:
        raise SSHKeyError(f"The key data after {key_type!r} is missing. Paste the whole line from your .pub file.")
    comment_tokens = tokens[2:]
    if any(_is_type_token(token) for token in comment_tokens):
        raise SSHKeyError("Found more than one key on the line; expected exactly one. Add one key at a time.")

    blob = _decode_base64(tokens[1])
    reader = _Fields(blob)
    blob_type = _text(reader.next("key type"), "key type")
    if blob_type != key_type:
        described = repr(blob_type) if _is_type_token(blob_type) else "a different or unknown"
        raise SSHKeyError(
            f"The line says {key_type!r} but the key data holds {described} key. "
            "Paste the line from your .pub file unchanged."
        )
    fields = {name: reader.next(name) for name in _FIELDS[key_type]}
    reader.finish()
    _check_fields(key_type, fields)
    bits = _load(key_type, tokens[1])

    # ssh-keygen -lf hashes the whole blob; cryptography's ssh_key_fingerprint drops an sk- key's application.
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
