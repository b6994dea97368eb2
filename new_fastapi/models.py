"""Pydantic models for the bookstore API.

The input models carry the same rules as the legacy app's ``validate_book``; the
exception handlers in :mod:`new_fastapi.errors` turn pydantic's errors into the legacy
messages.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, field_validator

from legacy_flask.db import INT64_MAX, INT64_MIN


def _strip_non_empty(value: str) -> str:
    # str.strip(), exactly as the legacy app does (pydantic's own stripping differs
    # from Python's on a few control characters).
    stripped = value.strip()
    if not stripped:
        raise ValueError("must be a non-empty string")
    return stripped


NonEmptyStr = Annotated[str, Strict(), AfterValidator(_strip_non_empty)]
"""A string that is not blank once surrounding whitespace is stripped; stored stripped."""

Year = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
"""A whole number (JSON ``true`` and ``1.0`` are rejected) that fits SQLite's INTEGER."""


class Book(BaseModel):
    """A book as returned by the API."""

    id: int
    title: str
    author: str
    year: int | None
    updated_at: str = Field(
        description="Last change, ISO-8601 UTC with seconds precision",
        examples=["2024-05-01T12:00:00Z"],
    )


class BookCreate(BaseModel):
    """Body of ``POST /books``."""

    model_config = ConfigDict(extra="forbid")

    title: NonEmptyStr
    author: NonEmptyStr
    year: Year | None = None


class BookUpdate(BaseModel):
    """Body of ``PUT /books/{book_id}``: any non-empty subset of the fields."""

    model_config = ConfigDict(extra="forbid")

    title: NonEmptyStr | None = None
    author: NonEmptyStr | None = None
    year: Year | None = None

    @field_validator("title", "author", mode="before")
    @classmethod
    def _reject_explicit_null(cls, value: object) -> object:
        # Leaving a field out keeps it; sending null for title or author is an error.
        if value is None:
            raise ValueError("must be a non-empty string")
        return value


class ErrorBody(BaseModel):
    """Every error response: ``{"error": "<message>"}``."""

    error: str
