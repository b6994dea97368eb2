"""The console page and its assets, read once from the package and served as they are.

Nothing on the page comes from anywhere but the gateway: no CDN, no web font, no
inline script or style, so the Content-Security-Policy allows the gateway's own
origin only (`'self'`), and the page works on an air-gapped network. The page's
version is a digest of its assets: it names the assets' URLs (a new version is never
served from a cache) and is shown on the page, so a screenshot says which page made it.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from starlette.responses import Response

_STATIC = files("gateway.console") / "static"
_TYPES = {
    "console.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
_raw = {name: (_STATIC / name).read_bytes() for name in _TYPES}
VERSION = hashlib.sha256(b"".join(_raw[name] for name in sorted(_raw))).hexdigest()[:12]
# The page names its assets with the version; every other asset is served as it is.
ASSETS = {**_raw, "console.html": _raw["console.html"].replace(b"{{version}}", VERSION.encode())}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def asset_response(name: str) -> Response | None:
    """The asset called `name` with its headers, or None when there is none."""
    body = ASSETS.get(name)
    if body is None:
        return None
    # The page is small and always fresh; the other assets are named by the version.
    cache = "no-cache" if name == "console.html" else "public, max-age=31536000, immutable"
    headers = {**_HEADERS, "cache-control": cache}
    return Response(body, media_type=_TYPES[name], headers=headers)
