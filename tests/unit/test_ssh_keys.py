"""Tests for cloudplane.domain.ssh_keys, checked against real ssh-keygen output where available."""

from __future__ import annotations

import base64
import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from cloudplane.domain.ssh_keys import ParsedKey, SSHKeyError, parse_public_key

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen is not installed")

SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
CURVES = {"nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(), "nistp521": ec.SECP521R1()}


def wire_string(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return len(data).to_bytes(4, "big") + data


def wire_mpint(value: int) -> bytes:
    # One spare bit so a set top bit gets the leading zero byte RFC 4251 requires.
    return wire_string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


def key_line(key_type: str, blob: bytes, comment: str = "") -> str:
    line = f"{key_type} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


def blob_of(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


def sha256_fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def ed25519_raw() -> bytes:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def ec_point(curve_name: str, form=serialization.PublicFormat.UncompressedPoint) -> bytes:
    key = ec.generate_private_key(CURVES[curve_name]).public_key()
    return key.public_bytes(serialization.Encoding.X962, form)


def ed25519_blob() -> bytes:
    return wire_string("ssh-ed25519") + wire_string(ed25519_raw())


def ecdsa_blob(curve_name: str = "nistp256", point: bytes | None = None) -> bytes:
    point = ec_point(curve_name) if point is None else point
    return wire_string(f"ecdsa-sha2-{curve_name}") + wire_string(curve_name) + wire_string(point)


def rsa_blob(n: int, e: int = 65537) -> bytes:
    return wire_string("ssh-rsa") + wire_mpint(e) + wire_mpint(n)


def sk_ed25519_blob(application: bytes = b"ssh:") -> bytes:
    return wire_string(SK_ED25519) + wire_string(ed25519_raw()) + wire_string(application)


def sk_ecdsa_blob(application: bytes = b"ssh:") -> bytes:
    return (
        wire_string(SK_ECDSA) + wire_string("nistp256") + wire_string(ec_point("nistp256")) + wire_string(application)
    )


SECURITY_KEYS = [(SK_ED25519, sk_ed25519_blob), (SK_ECDSA, sk_ecdsa_blob)]


def cryptography_line(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def ed25519_line(comment: str = "") -> str:
    return key_line("ssh-ed25519", ed25519_blob(), comment)


def reject(text: str) -> str:
    with pytest.raises(SSHKeyError) as excinfo:
        parse_public_key(text)
    return str(excinfo.value)


def ssh_keygen_fingerprint(pub_path: Path) -> tuple[int, str]:
    out = subprocess.run([SSH_KEYGEN, "-lf", str(pub_path)], check=True, capture_output=True, text=True).stdout
    bits, fingerprint = out.split()[:2]
    return int(bits), fingerprint


@needs_ssh_keygen
@pytest.mark.parametrize(
    ("keygen_args", "key_type", "bits"),
    [
        (["-t", "ed25519"], "ssh-ed25519", 256),
        (["-t", "ecdsa", "-b", "256"], "ecdsa-sha2-nistp256", 256),
        (["-t", "ecdsa", "-b", "384"], "ecdsa-sha2-nistp384", 384),
        (["-t", "ecdsa", "-b", "521"], "ecdsa-sha2-nistp521", 521),
        (["-t", "rsa", "-b", "2048"], "ssh-rsa", 2048),
        (["-t", "rsa", "-b", "3072"], "ssh-rsa", 3072),
        (["-t", "rsa", "-b", "4096"], "ssh-rsa", 4096),
    ],
)
def test_accepts_ssh_keygen_keys_with_matching_fingerprint(tmp_path, keygen_args, key_type, bits):
    key_path = tmp_path / "id_key"
    subprocess.run(
        [SSH_KEYGEN, *keygen_args, "-N", "", "-C", "alice@laptop", "-q", "-f", str(key_path)],
        check=True,
    )
    pub_path = tmp_path / "id_key.pub"
    text = pub_path.read_text()

    parsed = parse_public_key(text)

    assert (parsed.bits, parsed.fingerprint) == ssh_keygen_fingerprint(pub_path)
    assert parsed.key_type == key_type
    assert parsed.bits == bits
    assert parsed.comment == "alice@laptop"
    assert parsed.normalized == text.strip()


@needs_ssh_keygen
@pytest.mark.parametrize(("key_type", "make_blob"), SECURITY_KEYS)
def test_security_keys_match_ssh_keygen(tmp_path, key_type, make_blob):
    pub_path = tmp_path / "id_sk.pub"
    pub_path.write_text(key_line(key_type, make_blob(), "yubikey") + "\n")

    parsed = parse_public_key(pub_path.read_text())

    assert (parsed.bits, parsed.fingerprint) == ssh_keygen_fingerprint(pub_path)


@pytest.mark.parametrize(("key_type", "make_blob"), SECURITY_KEYS)
def test_accepts_security_keys(key_type, make_blob):
    blob = make_blob()

    parsed = parse_public_key(key_line(key_type, blob, "yubikey"))

    assert parsed == ParsedKey(
        key_type=key_type,
        bits=256,
        fingerprint=sha256_fingerprint(blob),
        comment="yubikey",
        normalized=key_line(key_type, blob, "yubikey"),
    )


@pytest.mark.parametrize(
    ("make_key", "key_type", "bits"),
    [
        (ed25519.Ed25519PrivateKey.generate, "ssh-ed25519", 256),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ecdsa-sha2-nistp256", 256),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ecdsa-sha2-nistp384", 384),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ecdsa-sha2-nistp521", 521),
        (lambda: rsa.generate_private_key(65537, 2048), "ssh-rsa", 2048),
    ],
)
def test_accepts_cryptography_keys(make_key, key_type, bits):
    line = cryptography_line(make_key())

    parsed = parse_public_key(line)

    assert parsed.key_type == key_type
    assert parsed.bits == bits
    assert parsed.fingerprint == sha256_fingerprint(blob_of(line))
    assert parsed.comment == ""
    assert parsed.normalized == line


def test_normalizes_whitespace_and_line_endings():
    blob = ed25519_blob()
    b64 = base64.b64encode(blob).decode()

    parsed = parse_public_key(f"\n  \tssh-ed25519   {b64} \t alice   at  laptop \r\n\r\n")

    assert parsed.comment == "alice at laptop"
    assert parsed.normalized == f"ssh-ed25519 {b64} alice at laptop"
    assert parsed.fingerprint == sha256_fingerprint(blob)


def test_no_comment_gives_empty_comment_and_no_trailing_space():
    line = ed25519_line()

    parsed = parse_public_key(f"{line} \r\n")

    assert parsed.comment == ""
    assert parsed.normalized == line


def test_error_is_a_value_error():
    assert issubclass(SSHKeyError, ValueError)


def test_rejects_dsa():
    numbers = dsa.generate_private_key(1024).private_numbers().public_numbers
    params = numbers.parameter_numbers
    blob = (
        wire_string("ssh-dss")
        + wire_mpint(params.p)
        + wire_mpint(params.q)
        + wire_mpint(params.g)
        + wire_mpint(numbers.y)
    )

    assert "DSA" in reject(key_line("ssh-dss", blob, "old@box"))
    assert "'ssh-dss'" in reject(key_line("ssh-ed25519", blob))


@pytest.mark.parametrize("bits", [1024, 1536])
def test_rejects_small_rsa(bits):
    message = reject(cryptography_line(rsa.generate_private_key(65537, bits)))

    assert str(bits) in message
    assert "2048" in message


def test_rejects_rsa_one_bit_short_of_2048():
    message = reject(key_line("ssh-rsa", rsa_blob((1 << 2046) | 1)))

    assert "2047" in message
    assert "2048" in message


def test_rejects_rsa_larger_than_openssh_supports():
    assert "16384" in reject(key_line("ssh-rsa", rsa_blob((1 << 16384) | 1)))


@pytest.mark.parametrize(
    "make_private",
    [
        lambda: ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        lambda: rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        lambda: b"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n",
    ],
    ids=["openssh", "pkcs8", "pem-rsa", "putty"],
)
def test_rejects_private_keys(make_private):
    message = reject(make_private().decode())

    assert "private key" in message
    assert ".pub" in message


def test_rejects_private_key_pasted_after_public_key():
    private = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )

    assert "private key" in reject(ed25519_line("me") + "\n" + private.decode())


def test_rejects_keys_on_several_lines():
    message = reject(f"{ed25519_line('a')}\n{ed25519_line('b')}\n")

    assert "2 lines" in message
    assert "one key at a time" in message


def test_blank_lines_around_the_key_are_not_extra_keys():
    line = ed25519_line("me")

    assert parse_public_key(f"\n\n{line}\r\n   \r\n").normalized == line


@pytest.mark.parametrize("second", ["ssh-ed25519 AAAA", "ssh-dss AAAA", "ssh-rsa-cert-v01@openssh.com AAAA"])
def test_rejects_second_key_type_on_the_same_line(second):
    assert "more than one key" in reject(f"{ed25519_line()} {second}")


@pytest.mark.parametrize(
    ("declared", "blob"),
    [
        ("ssh-rsa", ed25519_blob()),
        ("ecdsa-sha2-nistp384", ecdsa_blob("nistp256")),
        ("ssh-ed25519", sk_ed25519_blob()),
        (SK_ECDSA, ecdsa_blob("nistp256")),
    ],
)
def test_rejects_type_that_disagrees_with_blob(declared, blob):
    actual = blob[4 : 4 + int.from_bytes(blob[:4], "big")].decode()

    message = reject(key_line(declared, blob))

    assert repr(declared) in message
    assert repr(actual) in message


def test_type_mismatch_with_garbage_type_does_not_echo_it():
    blob = wire_string("x" * 500) + wire_string(ed25519_raw())

    message = reject(key_line("ssh-ed25519", blob))

    assert "unknown" in message
    assert "x" * 50 not in message


@pytest.mark.parametrize(
    "data",
    [
        "not*base64!",
        base64.b64encode(ecdsa_blob("nistp256")).decode().rstrip("="),
        "AAAAC3NzaC1lZDI1NTE5é===",
        "AAAA====",
        "AAAAC3NzaC1lZDI1NTE5AB==",
    ],
    ids=["bad-chars", "missing-padding", "non-ascii", "excess-padding", "nonzero-spare-bits"],
)
def test_rejects_invalid_base64(data):
    assert "base64" in reject(f"ssh-ed25519 {data} me")


@pytest.mark.parametrize(
    ("key_type", "make_blob"),
    [
        ("ssh-ed25519", ed25519_blob),
        ("ecdsa-sha2-nistp256", lambda: ecdsa_blob("nistp256")),
        ("ecdsa-sha2-nistp521", lambda: ecdsa_blob("nistp521")),
        ("ssh-rsa", lambda: blob_of(cryptography_line(rsa.generate_private_key(65537, 2048)))),
        (SK_ED25519, sk_ed25519_blob),
        (SK_ECDSA, sk_ecdsa_blob),
    ],
)
def test_rejects_every_truncation_and_trailing_bytes(key_type, make_blob):
    blob = make_blob()
    assert parse_public_key(key_line(key_type, blob)).bits > 0

    for cut in range(1, len(blob)):
        message = reject(key_line(key_type, blob[:cut]))
        assert "truncated or corrupted" in message or "base64" in message, cut

    assert "extra bytes" in reject(key_line(key_type, blob + b"\0"))
    assert "extra bytes" in reject(key_line(key_type, blob + wire_string("more")))


def rsa_blob_with_raw_modulus(raw: bytes) -> bytes:
    return wire_string("ssh-rsa") + wire_mpint(65537) + wire_string(raw)


@pytest.mark.parametrize(
    ("key_type", "blob", "detail"),
    [
        ("ssh-ed25519", wire_string("ssh-ed25519") + wire_string(b"\1" * 31), "32 bytes"),
        ("ssh-ed25519", wire_string("ssh-ed25519") + b"\xff" * 4 + b"\1" * 32, "cut off"),
        (
            "ecdsa-sha2-nistp256",
            wire_string("ecdsa-sha2-nistp256") + wire_string("nistp384") + wire_string(ec_point("nistp384")),
            "nistp384",
        ),
        (
            "ecdsa-sha2-nistp384",
            ecdsa_blob("nistp384", ec_point("nistp384", serialization.PublicFormat.CompressedPoint)),
            "uncompressed",
        ),
        (
            "ecdsa-sha2-nistp256",
            ecdsa_blob("nistp256", b"\x04" + b"\1" * 64),
            "not on the nistp256 curve",
        ),
        ("ssh-rsa", rsa_blob((1 << 2047) | 1, e=65536), "RSA numbers"),
        ("ssh-rsa", rsa_blob_with_raw_modulus(b"\x80" + b"\1" * 256), "negative"),
        ("ssh-rsa", rsa_blob_with_raw_modulus(b"\0\1" + b"\1" * 256), "leading zeros"),
        (SK_ED25519, sk_ed25519_blob(application=b"ssh:\0evil"), "application is not text"),
    ],
)
def test_rejects_malformed_blobs(key_type, blob, detail):
    message = reject(key_line(key_type, blob))

    assert "truncated or corrupted" in message
    assert detail in message


def test_rejects_off_curve_point_from_a_real_key():
    blob = ecdsa_blob("nistp256")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])

    assert "not on the nistp256 curve" in reject(key_line("ecdsa-sha2-nistp256", tampered))


def test_rejects_random_garbage_blobs():
    rng = random.Random(1234)
    for _ in range(200):
        garbage = rng.randbytes(rng.randrange(1, 200))
        reject(key_line("ssh-ed25519", garbage))
        reject(key_line("ssh-ed25519", wire_string("ssh-ed25519") + garbage))


@pytest.mark.parametrize("text", ["", "   ", "\r\n\n\t "])
def test_rejects_empty_input(text):
    assert "No SSH public key" in reject(text)


def test_accepts_exactly_16_kib_and_rejects_one_byte_more():
    line = ed25519_line()
    at_limit = line + " " + "c" * (16 * 1024 - len(line) - 1)
    assert len(at_limit) == 16 * 1024

    assert parse_public_key(at_limit).comment == "c" * (16 * 1024 - len(line) - 1)
    assert "16 KiB" in reject(at_limit + "c")


def test_size_limit_counts_bytes_not_characters():
    line = ed25519_line()
    text = line + " " + "é" * (16 * 1024 - len(line) - 1)

    assert "16 KiB" in reject(text)


@pytest.mark.parametrize(
    "options",
    [
        'command="echo hi"',
        'command="/usr/bin/backup --quiet"',
        "no-pty,no-port-forwarding",
        "restrict",
        'from="10.0.0.0/8",no-agent-forwarding',
    ],
)
def test_rejects_authorized_keys_options(options):
    message = reject(f"{options} {ed25519_line('me')}")

    assert "authorized_keys options" in message


def test_rejects_options_before_a_dsa_key_as_options():
    assert "options" in reject("no-pty ssh-dss AAAAB3NzaC1kc3M= me")


@pytest.mark.parametrize("key_type", ["ssh-foo", "ecdsa-sha2-nistp224", "AAAAC3NzaC1lZDI1NTE5"])
def test_rejects_unknown_key_types(key_type):
    message = reject(f"{key_type} {base64.b64encode(ed25519_blob()).decode()}")

    assert "Unsupported key type" in message
    assert "ssh-ed25519" in message


def test_rejects_certificates():
    assert "certificate" in reject("ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5 me")


def test_rejects_key_type_without_data():
    assert "missing" in reject("ssh-ed25519\r\n")


@pytest.mark.parametrize(("key_type", "make_blob"), SECURITY_KEYS)
@pytest.mark.parametrize("application", [b"", b"https://example.com", b"ssh"])
def test_rejects_security_key_application_not_starting_with_ssh(key_type, make_blob, application):
    message = reject(key_line(key_type, make_blob(application=application)))

    assert "truncated or corrupted" in message
    assert "'ssh:'" in message


@pytest.mark.parametrize(("key_type", "make_blob"), SECURITY_KEYS)
def test_accepts_security_key_with_an_application_of_its_own(key_type, make_blob):
    blob = make_blob(application=b"ssh:my-server")

    assert parse_public_key(key_line(key_type, blob)).fingerprint == sha256_fingerprint(blob)


def test_rejects_empty_ec_point():
    message = reject(key_line("ecdsa-sha2-nistp256", ecdsa_blob("nistp256", b"")))

    assert "truncated or corrupted" in message
    assert "EC point" in message


def test_accepts_rsa_of_exactly_16384_bits():
    blob = rsa_blob((1 << 16383) | 1)

    assert parse_public_key(key_line("ssh-rsa", blob)).bits == 16384
