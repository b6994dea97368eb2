"""The legacy Flask app served the way a user would without the gateway: behind a2wsgi.

uvicorn bench.legacy_asgi:app
"""

from __future__ import annotations

from a2wsgi import WSGIMiddleware

from legacy_flask.app import app as flask_app

app = WSGIMiddleware(flask_app)  # type: ignore[arg-type]
