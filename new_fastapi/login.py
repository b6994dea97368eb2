"""Who is logged in: ``GET /me`` and ``POST /logout``, on the legacy app's session.

The user logs in through the legacy app's login page. Behind the gateway, this app
shares that app's session (``session_from: legacy`` in ``routes.yaml``), so the same
user is seen here, and logging out here logs out there too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel

from gateway.legacy_session import clear_session, user_required
from new_fastapi.models import ErrorBody

router = APIRouter(tags=["login"])

CurrentUser = Annotated[str, Depends(user_required("user"))]


class Me(BaseModel):
    """The logged-in user."""

    user: str


@router.get("/me", responses={401: {"model": ErrorBody, "description": "Not logged in"}})
def me(user: CurrentUser) -> Me:
    return Me(user=user)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def logout(request: Request) -> None:
    clear_session(request)
