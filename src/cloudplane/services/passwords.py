"""Root passwords for new servers: generated when not given, handed to providers only as a crypt(3) hash."""

from __future__ import annotations

import secrets
import string
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt  # stdlib until Python 3.13
    except ImportError:  # pragma: no cover - Python >= 3.13
        import legacycrypt as _crypt  # type: ignore[no-redef]

ALPHABET = string.ascii_letters + string.digits


def generate_root_password(length: int = 20) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def shadow_hash(password: str) -> str:
    """SHA-512 crypt, the format /etc/shadow and cloud-init's `chpasswd` accept on every Linux image."""
    return _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_SHA512))
