"""Validation of book input: the one place where the legacy app's rules live.

Both the JSON API and the HTML form go through :func:`validate_book`. The messages are
part of the public contract: the new app reproduces them byte for byte.
"""

from __future__ import annotations

from typing import Any

from legacy_flask.db import INT64_MAX, INT64_MIN

#: The fields a client may send, in the order they are checked.
FIELDS = ("title", "author", "year")

NOT_AN_OBJECT = "request body must be a JSON object"
NO_FIELDS = "no fields to update"


class ValidationError(ValueError):
    """Input that breaks one of the rules; ``str(error)`` is the client-facing message."""


def validate_book(data: object, *, partial: bool = False) -> dict[str, Any]:
    """Check a book payload and return the cleaned fields.

    With ``partial=False`` (create) title and author are required and a missing year
    becomes ``None``. With ``partial=True`` (update) any non-empty subset is accepted
    and only the given fields are returned.

    Checks run in a fixed order and the first failure wins: the payload is an object,
    no unknown field (the first in sorted order is reported), then title, author, year.
    """
    if not isinstance(data, dict):
        raise ValidationError(NOT_AN_OBJECT)
    unknown = sorted(str(key) for key in data if key not in FIELDS)
    if unknown:
        raise ValidationError(f"unknown field: {unknown[0]}")

    cleaned: dict[str, Any] = {}
    for name in ("title", "author"):
        if name not in data:
            if partial:
                continue
            raise ValidationError(f"{name} is required")
        value = data[name]
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"{name} must be a non-empty string")
        cleaned[name] = value.strip()

    if "year" in data:
        year = data["year"]
        if year is not None:
            if isinstance(year, bool) or not isinstance(year, int):
                raise ValidationError("year must be an integer or null")
            if not INT64_MIN <= year <= INT64_MAX:
                raise ValidationError("year is out of range")
        cleaned["year"] = year
    elif not partial:
        cleaned["year"] = None

    if not cleaned:
        raise ValidationError(NO_FIELDS)
    return cleaned
