"""The one rule for numeric ids: ASCII digits only, 1 to 2**63 - 1.

Python's `int()` and `str.isdigit()` accept Arabic-Indic, full-width and superscript digits (`int("٣") == 3`,
`"²".isdigit()`, yet `int("²")` raises), and pydantic's int parsing accepts `"3_0"` and `" 3"`: each would either
answer 500 or name another object. Every face (and the token check) parses ids through `parse_id`.
"""

from __future__ import annotations

import re

# Ids are 64-bit: a larger number can name nothing, and would overflow the database driver.
MAX_ID = 2**63 - 1
# `[0-9]` rather than `\d`, which matches every Unicode decimal digit; at most 19 digits, so int() stays cheap.
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(text: str) -> int | None:
    """The id `text` names, or None when it is not 1-19 ASCII digits within 1..MAX_ID."""
    if not _ASCII_DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None
