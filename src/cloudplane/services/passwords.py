"""Root passwords for new servers: generated when not given, handed to providers only as a crypt(3) hash."""

from __future__ import annotations

import ctypes
import ctypes.util
import secrets
import string
import warnings
from collections.abc import Callable

from cloudplane.domain.errors import ValidationFailed

ALPHABET = string.ascii_letters + string.digits
# crypt(3)'s salt alphabet; SHA-512 crypt takes up to 16 of them.
SALT_ALPHABET = string.ascii_letters + string.digits + "./"
# sizeof(struct crypt_data) in libxcrypt and glibc: the scratch space crypt_rn needs.
CRYPT_DATA_SIZE = 32768


def _random_text(alphabet: str, length: int) -> str:
    """`length` characters drawn uniformly from `alphabet` (at most 256 of them) with one read of the system's
    randomness, not one per character: bytes past the largest multiple of the alphabet's size are dropped."""
    usable = 256 - 256 % len(alphabet)
    text: list[str] = []
    while len(text) < length:
        text += (alphabet[b % len(alphabet)] for b in secrets.token_bytes(length * 2) if b < usable)
    return "".join(text[:length])


def generate_root_password(length: int = 20) -> str:
    return _random_text(ALPHABET, length)


MIN_LENGTH, MAX_LENGTH = 8, 128


def check_root_password(password: str, *, field: str = "password") -> None:
    """The rule for a root password a person chose: 8 to 128 characters, none of them a control character (a NUL
    would cut the password short where crypt(3) reads it, a line break would end the line chpasswd reads)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationFailed(f"Password must be {MIN_LENGTH} to {MAX_LENGTH} characters long", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise ValidationFailed("Password must not contain control characters (tabs, line breaks, NUL)", field=field)


# SHA-512 crypt's work factor: glibc's default for a password a person chose (guessable, so every round slows an
# attacker who has the hash), the algorithm's minimum for one Cloudplane generated (20 random letters and digits,
# 119 bits: no number of rounds makes guessing it any less hopeless, and each costs the request CPU time).
CHOSEN_ROUNDS = 5000
GENERATED_ROUNDS = 1000


def _sha512_setting(rounds: int) -> bytes:
    prefix = "$6$" if rounds == CHOSEN_ROUNDS else f"$6$rounds={rounds}$"
    return (prefix + _random_text(SALT_ALPHABET, 16)).encode()


def _libcrypt_hasher() -> Callable[[str, int], str] | None:
    """SHA-512 crypt through libcrypt's reentrant `crypt_rn`, called with ctypes, which releases the GIL for the
    call: hashing (about 2 ms of CPU) then runs beside the rest of the process instead of stopping it, as the
    standard library's `crypt` does. None where libcrypt lacks `crypt_rn` (not glibc/libxcrypt)."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        return None
    try:
        crypt_rn = ctypes.CDLL(name).crypt_rn
    except (OSError, AttributeError):
        return None
    crypt_rn.restype = ctypes.c_char_p
    crypt_rn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)

    def shadow_hash(password: str, rounds: int) -> str:
        data = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
        result = crypt_rn(password.encode(), _sha512_setting(rounds), data, CRYPT_DATA_SIZE)
        if not result:
            raise ValueError("libcrypt refused the password")
        return result.decode()

    return shadow_hash


def _stdlib_hasher() -> Callable[[str, int], str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt as _crypt  # stdlib until Python 3.13
        except ImportError:  # pragma: no cover - Python >= 3.13
            import legacycrypt as _crypt  # type: ignore[no-redef]

    def shadow_hash(password: str, rounds: int) -> str:
        return _crypt.crypt(password, _sha512_setting(rounds).decode())

    return shadow_hash


_hash = _libcrypt_hasher() or _stdlib_hasher()


def shadow_hash(password: str, *, generated: bool = False) -> str:
    """SHA-512 crypt, the format /etc/shadow and cloud-init's `chpasswd` accept on every Linux image; `generated`
    for a password `generate_root_password` made (see GENERATED_ROUNDS)."""
    return _hash(password, GENERATED_ROUNDS if generated else CHOSEN_ROUNDS)
