"""The admin API's answers about edits: the emergency switch (`POST /-/flip-all`),
what a refused edit answers, and the origin check of a change a browser sends.

An edit is refused with nothing changed (`EDIT_REFUSALS`: a bad request for the
table, a store that did not take it, a result that would be invalid, a file that
could not be written), or stored and then applied or not; every answer says which,
in JSON.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import JSONResponse, Response

from gateway.control import ControlPlane
from gateway.fleet.store import StoreError, StoreUnavailable
from gateway.inventory.commands import FlipAll
from gateway.routefile.editing import EditError
from gateway.routefile.model import ConfigError

EDIT_REFUSALS = (EditError, StoreError, ConfigError, OSError)


async def flip_all(control: ControlPlane, payload: object, by: str) -> Response:
    """Every route to one backend, but those it does not implement (as `gateway flip
    --all` does): `changed` lists the routes moved, `left` the others and why."""
    if not (
        isinstance(payload, dict)
        and set(payload) == {"backend"}
        and isinstance(payload["backend"], str)
    ):
        return JSONResponse({"error": 'the body must be {"backend": "<name>"}'}, 400)
    backend = payload["backend"]
    edit = FlipAll(backend)
    try:
        outcome = await control.edit(edit, f"flip route=* backend={backend}", by, "flip")
    except EDIT_REFUSALS as exc:
        return refusal(exc)
    if outcome.error is not None:
        return not_applied(outcome.error.problems)
    return JSONResponse(
        {
            "backend": backend,
            "changed": list(outcome.result.changed),
            "left": edit.left,
            "unknown": edit.unknown,
        }
    )


def refusal(exc: Exception) -> Response:
    """The answer to an edit the control plane refused: nothing was changed."""
    if isinstance(exc, EditError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    if isinstance(exc, StoreUnavailable):
        return JSONResponse({"error": f"{exc}; nothing was changed"}, status_code=503)
    if isinstance(exc, StoreError):
        return JSONResponse({"error": str(exc)}, status_code=409)
    if isinstance(exc, OSError):  # the file source's atomic write left the file as it was
        error = f"cannot write: {exc.strerror or exc}; nothing was changed"
        return JSONResponse({"error": error}, status_code=500)
    assert isinstance(exc, ConfigError)  # the last of EDIT_REFUSALS
    return JSONResponse(
        {
            "error": "the change would leave the route file invalid; nothing was changed",
            "problems": [str(p) for p in exc.problems],
        },
        status_code=409,
    )


def not_applied(problems: tuple[str, ...]) -> Response:
    """The answer to an edit that was stored but whose table could not be applied."""
    return JSONResponse(
        {"error": "the file was written but could not be applied", "problems": list(problems)},
        status_code=500,
    )


def foreign_origin(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The origin of a browser's page that is not this gateway's, or None.

    Browsers send `Origin` with every request a page makes other than GET and HEAD;
    a client that is not a browser sends none, and is judged by the token alone."""
    found = dict(headers)
    origin = found.get(b"origin")
    if origin is None:
        return None
    shown = origin.decode("latin-1")
    host = found.get(b"host", b"").decode("latin-1")
    if shown == "null" or urlsplit(shown).netloc.lower() != host.lower():
        return shown
    return None
