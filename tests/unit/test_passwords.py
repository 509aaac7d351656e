"""Root password hashes: SHA-512 crypt that /etc/shadow and cloud-init accept, made off the GIL where libcrypt
allows it, and the same as the standard library's crypt would make."""

from __future__ import annotations

import re
import warnings

from cloudplane.services import passwords

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


def test_a_hash_is_sha512_crypt_with_its_own_salt_and_verifies() -> None:
    first, second = passwords.shadow_hash("correct horse"), passwords.shadow_hash("correct horse")
    assert re.fullmatch(r"\$6\$[A-Za-z0-9./]{16}\$[A-Za-z0-9./]{86}", first), first
    assert first != second  # a fresh salt each time
    assert crypt.crypt("correct horse", first) == first
    assert crypt.crypt("wrong horse", first) != first


def test_a_generated_password_takes_the_minimum_rounds_a_chosen_one_the_default() -> None:
    generated = passwords.generate_root_password()
    made = passwords.shadow_hash(generated, generated=True)
    assert made.startswith("$6$rounds=1000$") and crypt.crypt(generated, made) == made
    assert not passwords.shadow_hash("chosen by a person").startswith("$6$rounds=")


def test_libcrypt_and_the_standard_library_agree_on_a_setting() -> None:
    libcrypt = passwords._libcrypt_hasher()
    assert libcrypt is not None, "glibc/libxcrypt's crypt_rn should be found on Linux"
    made = libcrypt("pässwörd with unicode", passwords.CHOSEN_ROUNDS)
    assert crypt.crypt("pässwörd with unicode", made) == made


def test_generated_passwords_use_the_whole_alphabet_evenly() -> None:
    drawn = "".join(passwords.generate_root_password() for _ in range(5000))  # 100 000 characters
    assert set(drawn) == set(passwords.ALPHABET)
    expected = len(drawn) / len(passwords.ALPHABET)
    counts = [drawn.count(c) for c in passwords.ALPHABET]
    # Each count is within 2.5 % (one standard deviation) of the expected; a byte taken modulo 62 would favour 8
    # characters by 21 %, far outside these bounds (4.8 standard deviations).
    assert max(counts) < expected * 1.12 and min(counts) > expected * 0.88, (min(counts), max(counts), expected)
