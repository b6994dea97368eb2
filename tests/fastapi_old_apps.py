"""A team's FastAPI service as the oldest supported FastAPI and Starlette run it.

Imported by `tests/test_fastapi_old.py` in subprocesses whose PYTHONPATH puts FastAPI
0.100 and Starlette 0.27 first (`.venv/fastapi-old`); it uses only what those and
today's releases both offer.

- `app`: a router with path parameters, a lifespan that hands the requests its state,
  `request.url_for`, a WebSocket, a handler that raises (Starlette's own 500), a route
  answering HEAD, `/versions`, which says which FastAPI and Starlette serve it, and
  `/me` and `/signout`, which read and end `legacy`'s login (`gateway.legacy_session`).
- `legacy`: the Flask app it replaces, holding the login and one endpoint not moved yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import fastapi
import starlette
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from flask import Flask, jsonify, request, session

from gateway.legacy_session import clear_session, user_required


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # The lifespan's state, handed to every request (`request.state`) by the server.
    yield {"greeting": "hello from the lifespan"}


app = FastAPI(lifespan=lifespan)
books = APIRouter(prefix="/books")


@app.get("/versions")
def versions() -> dict[str, str]:
    return {
        "fastapi": metadata.version("fastapi"),
        "starlette": metadata.version("starlette"),
        "fastapi_dir": str(Path(fastapi.__file__).parent.parent),
        "starlette_dir": str(Path(starlette.__file__).parent.parent),
    }


@books.get("/")
def list_books() -> dict[str, Any]:
    return {"side": "service", "books": [1, 2]}


@books.get("/{book_id}", name="book")
def book(book_id: int, request: Request) -> dict[str, Any]:
    return {
        "id": book_id,
        "greeting": request.state.greeting,
        "self": str(request.url_for("book", book_id=book_id)),
    }


@books.api_route("/{book_id}/cover", methods=["GET", "HEAD"])
def cover(book_id: int) -> dict[str, Any]:
    return {"cover": f"cover-{book_id}.png"}


app.include_router(books)


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("the service is broken")


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"{room}: {text} ({websocket.app.state.name})")
    await websocket.close()


app.state.name = "old-fastapi"


@app.get("/me")
def me(user: Annotated[str, Depends(user_required("user"))]) -> dict[str, str]:
    return {"user": user}


@app.post("/signout")
def sign_out(request: Request) -> dict[str, None]:
    clear_session(request)
    return {"user": None}


legacy = Flask(__name__)
legacy.secret_key = "fastapi-old-test-key"


@legacy.post("/login")
def login() -> Any:
    session["user"] = request.form["user"]
    return jsonify(user=session["user"])


@legacy.get("/whoami")
def whoami() -> Any:
    return jsonify(user=session.get("user"))


@legacy.get("/books/")
def legacy_books() -> Any:
    return jsonify(side="legacy", books=[1, 2])
