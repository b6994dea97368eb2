"""A Flask app that reads request bodies the ways apps do (raw, form, files) and gives
answers of its own (an error answer with its own body and headers; /same, the
answer of tests.apps' /same, or another status or type on request)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/echo")
def echo() -> Response:
    """The body as the app read it, and what the server said about its end."""
    return Response(
        request.get_data(),
        mimetype="application/octet-stream",
        headers={"X-Input-Terminated": str(request.environ.get("wsgi.input_terminated"))},
    )


@app.post("/form")
def form() -> Any:
    files = {
        name: {
            "filename": part.filename,
            "size": len(data := part.read()),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        for name, part in request.files.items()
    }
    return jsonify(form=request.form.to_dict(), files=files)


@app.get("/unavailable")
def unavailable() -> Any:
    answer = jsonify(error="maintenance", until="10:00")
    answer.status_code = 503
    answer.headers["Retry-After"] = "120"
    answer.headers["X-App-Error"] = "maintenance"
    return answer


@app.get("/same")
def same() -> Response:
    return Response(
        json.dumps({"title": "Dune"}),
        status=int(request.args.get("status", "200")),
        mimetype=request.args.get("type", "application/json"),
    )
