"""Numeric ids in paths, by the one rule of `domain/ids.py`: a path id with any other character is refused
before it reaches a query (422 where the face validates paths, 404 where a face parses its own id format)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from cloudplane.domain.ids import MAX_ID, parse_id

__all__ = ["MAX_ID", "Id", "parse_id"]


def _ascii_id(value: Any) -> Any:
    # Path parameters arrive as text; anything else (an int in a test, say) is left to the int validator.
    if isinstance(value, str) and parse_id(value) is None:
        raise PydanticCustomError("id_digits", f"An id is a whole number from 1 to {MAX_ID}, in ASCII digits (0-9)")
    return value


# Path first: FastAPI then writes its bounds into the OpenAPI document as `minimum`/`maximum`.
Id = Annotated[int, Path(ge=1, le=MAX_ID, description="The object's id"), BeforeValidator(_ascii_id)]
