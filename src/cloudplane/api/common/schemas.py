"""The base of every face's request models: unknown fields refused, and text no store can hold refused at input.

PostgreSQL's text cannot hold NUL, and no UTF-8 store (SQLite's driver, crypt, argon2's C code) can hold a lone
surrogate, which JSON's `\\ud800` escapes produce: such text is a 422 naming its field, on every database alike,
rather than a 500 from deep inside a library or a value stored on one database and refused on the other.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Text cannot contain the NUL character (\\u0000) or a lone surrogate (\\ud800-\\udfff); remove it"


def _has_unstorable(text: str) -> bool:
    # ASCII text (known without reading it) holds no surrogate, and a NUL is found at memchr's speed: a 14 MB base64
    # attachment is checked in microseconds rather than the regular expression's half second.
    return "\x00" in text if text.isascii() else _UNSTORABLE.search(text) is not None


def _unstorable(text: str) -> PydanticCustomError | None:
    return PydanticCustomError("unstorable_text", UNSTORABLE_MESSAGE) if _has_unstorable(text) else None


def _first_unstorable(value: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Where in a parsed JSON value the first unstorable text is, or None. A bad dict key is reported at its dict:
    the location is echoed in the reply, which cannot carry the key itself."""
    if isinstance(value, str):
        return loc if _has_unstorable(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _has_unstorable(key):
                return loc
            found = _first_unstorable(item, (*loc, key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_unstorable(item, (*loc, index))
            if found is not None:
                return found
    return None


class Request(BaseModel):
    """A request body: unknown fields are refused (`role`, `owner_id` ...), and so is unstorable text anywhere."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        loc = _first_unstorable(data, ())
        if loc is not None:
            # The input is not echoed (a surrogate could not be rendered as JSON).
            # A ValidationError keeps its location, so the face names the field ("password", "ssh_keys.1").
            error = InitErrorDetails(
                type=PydanticCustomError("unstorable_text", UNSTORABLE_MESSAGE), loc=loc or ("body",), input=None
            )
            raise ValidationError.from_exception_data(cls.__name__, [error])
        return data


def _storable(text: str) -> str:
    error = _unstorable(text)
    if error is not None:
        raise error
    return text


# For text that arrives outside a body model (form fields, query strings) and reaches a store or a library.
StorableText = Annotated[str, AfterValidator(_storable)]
