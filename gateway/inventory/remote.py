"""Reading a remote (`url:`) backend's endpoints from its OpenAPI document.

A `url:` backend may name its document with `openapi:`: a path on the upstream
(`/openapi.json`, fetched from the backend's URL) or a file (JSON or YAML; a relative
path is taken from the route file's folder). Its paths are shifted to what a client
of the gateway requests: the gateway forwards `/x` to the backend URL's path plus `/x`,
so the document's paths (under its first `servers` entry's path, if any) lose the
backend URL's path, and paths outside it are not reachable through the gateway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway import fetch
from gateway.inventory.reading import AppEndpoint, Unreadable, starlette_template

FETCH_TIMEOUT = 5.0  # seconds: an inventory must not hang on a silent upstream
MAX_DOCUMENT = 32 * 2**20  # bytes: the largest real-world specs are a few MiB
_OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def read_openapi(base_url: str, where: str, route_file_dir: Path) -> list[AppEndpoint]:
    """The endpoints a remote backend's OpenAPI document declares, as the gateway sees them."""
    if where.startswith("/"):
        document = _fetch(base_url.rstrip("/") + where)
        source = base_url.rstrip("/") + where
    else:
        path = Path(where)
        if not path.is_absolute():
            path = route_file_dir / path
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Unreadable(f"cannot read the OpenAPI file {source}: {exc}") from None
        document = _parse(text, source)
    return endpoints_of(document, urlsplit(base_url).path, source)


def endpoints_of(document: Any, base_path: str, source: str) -> list[AppEndpoint]:
    paths = document.get("paths") if isinstance(document, dict) else None
    if not isinstance(paths, dict):
        raise Unreadable(f"{source} is not an OpenAPI document (it has no 'paths' mapping)")
    server_path = ""
    servers = document.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        server_path = urlsplit(str(servers[0].get("url", ""))).path.rstrip("/")
    base = base_path.rstrip("/")
    found: dict[tuple[str, str], AppEndpoint] = {}
    for raw_path, operations in paths.items():
        upstream_path = server_path + str(raw_path)
        if base and upstream_path != base and not upstream_path.startswith(base + "/"):
            continue  # the gateway never sends a request there
        path = starlette_template(upstream_path[len(base) :] or "/")
        if not isinstance(operations, dict):
            continue
        for method in _OPERATIONS:
            operation = operations.get(method)
            if not isinstance(operation, dict):
                continue
            name = str(operation.get("operationId") or f"{method} {raw_path}")
            found[(method.upper(), path)] = AppEndpoint(method.upper(), path, name)
    for method, path in list(found):
        if method == "HEAD" and ("GET", path) in found:
            del found[(method, path)]
    return sorted(found.values(), key=lambda e: (e.path, e.method))


def _fetch(url: str) -> Any:
    try:
        status, body = fetch.get(url, FETCH_TIMEOUT, MAX_DOCUMENT)
    except fetch.FetchError as exc:
        raise Unreadable(f"cannot fetch {url}: {exc}") from None
    if status != 200:
        raise Unreadable(f"{url} answered {status}, not an OpenAPI document")
    return _parse(body.decode("utf-8", "replace"), url)


def _parse(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise Unreadable(f"{source} is neither JSON nor YAML") from None
