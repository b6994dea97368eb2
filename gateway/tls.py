"""TLS towards https upstreams: the `ssl.SSLContext` a url backend's `TLSSpec` asks for.

Verified by default against the system's CAs, or against the backend's own `ca`
bundle; with `cert` (and `key`) the gateway presents a client certificate (mTLS).
`verify: false` turns every check off, which `gateway check` warns about. The
same function builds the context a running backend uses and checks, when a route
file is loaded, that the files it names are readable PEM, so a bad path is a
problem with a line number rather than failed requests.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.routefile.model import GatewayConfig, TLSSpec


def client_context(tls: TLSSpec) -> ssl.SSLContext:
    """The context for connections to one upstream (raises OSError or ssl.SSLError)."""
    context = ssl.create_default_context(cafile=tls.ca)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


def check(tls: TLSSpec) -> str | None:
    """Why the files `tls` names cannot be used, in plain words, or None if they can."""
    for key, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if path is not None:
            try:
                Path(path).open("rb").close()
            except OSError as exc:
                return f"cannot read its {key!r} file {path}: {exc.strerror or exc}"
    try:
        client_context(tls)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or str(exc)
        return f"its TLS files are not usable PEM ({reason}); check 'ca', 'cert' and 'key'"
    return None


def warnings(config: GatewayConfig) -> list[str]:
    """`gateway check`'s warning for every https backend that does not verify its upstream."""
    return [
        f"backend {spec.name!r} does not verify {spec.target}'s certificate (verify: false): "
        "anyone on the path can read and change its traffic; give it 'ca:' instead"
        for spec in config.backends
        if spec.kind == "url" and spec.target.startswith("https://") and not spec.tls.verify
    ]
