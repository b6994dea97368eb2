"""The aiohttp client that url backends proxy through: its options, and the request
class it builds each proxied request with.

One pooled `aiohttp.ClientSession` is shared by every remote backend of a gateway
process (connections are pooled per origin inside it). It adds nothing of its own
to a request: no environment proxies, no cookies, no redirects followed, no header
the client did not send (aiohttp's automatic `User-Agent`, `Accept`,
`Accept-Encoding`, and a `Content-Type` guessed for a body), the response bytes
relayed as the upstream encoded them.

`ProxiedRequest` is the session's `request_class` (a documented option): aiohttp
builds each request in steps (`update_headers`, `update_auto_headers`, ...), two
of which only redo, per request, what a proxied request never needs.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import hdrs
from aiohttp.connector import Connection
from multidict import CIMultiDict

# Seconds to open a connection (TCP and TLS), whatever the route's timeout: a
# working upstream connects in milliseconds, and SYN retries take over two minutes
# to give up. Past it the upstream is unreachable (502), not slow.
CONNECT_TIMEOUT = 10.0

# The headers aiohttp would otherwise make up: only what the client sent goes upstream.
_NEVER_ADDED: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in (hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE, hdrs.USER_AGENT)
)


class ProxiedRequest(aiohttp.ClientRequest):
    """A request carrying the headers it is given, in their order, and nothing else.

    The stock request copies the headers once more, header by header, to put a Host
    first, and per request builds and merges the set of automatic headers to skip
    (aiohttp's maintainers call skipping them a rarely used feature, and it has no
    fast path). The gateway gives every request its Host, first (`HTTPBackend`),
    and skips every automatic header, so both come down to a copy and a constant.
    tests/test_upstream_fidelity.py checks what reaches the upstream, header by
    header, so a change of aiohttp's under these steps fails there."""

    _skip_auto_headers = _NEVER_ADDED  # also read when a body's headers are added

    def update_headers(self, headers: Any) -> None:
        if isinstance(headers, CIMultiDict) and hdrs.HOST in headers:
            # The session made this dict for this request; copied all the same, as a
            # retried request (a dropped keep-alive connection) is built from it again.
            self.headers = headers.copy()
        else:
            super().update_headers(headers)

    def update_auto_headers(self, skip_auto_headers: Any) -> None:
        return None  # none: see _NEVER_ADDED


class ProxiedResponse(aiohttp.ClientResponse):
    """A response whose connection goes back to the pool only if its status is below 500.

    A server may close a connection after an error without saying so in the answer:
    uvicorn does, once Starlette has sent the 500 of an app that raised (it logs the
    traceback first, which takes milliseconds). A request sent on that connection in
    between is reset, and only an idempotent one can be tried again (aiohttp does,
    once); a POST would get a 502 for another request's failure. A 5xx costs the
    next request a new connection instead."""

    async def start(self, connection: Connection) -> ProxiedResponse:
        protocol = connection.protocol
        await super().start(connection)
        if self.status >= 500 and protocol is not None:
            protocol.force_close()  # closed, not pooled, when it is released
            if self.closed:  # released already: the whole answer came with its head
                protocol.close()
        return self


def new_client(max_connections: int = 512) -> aiohttp.ClientSession:
    """The shared client. Only connecting is timed here (WebSocket handshakes
    included): the dispatcher times the answer, as for every backend (a stream may
    rightly last for hours, and a slow upload is not a slow answer)."""
    return _session(aiohttp.TCPConnector(limit=max_connections, limit_per_host=0))


def websocket_client(http: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """The client for WebSocket handshakes: `http`'s own options and connections, and it
    never follows a redirect. `ws_connect` has no option for that (its requests follow
    up to 10), so a trace stops one: the 3xx ends the handshake as a refusal, which
    reaches the client as the upstream gave it. Following it would take the client's
    cookies and credentials wherever the upstream points."""
    assert http.connector is not None  # an open session's
    return _session(http.connector, owner=False, trace_configs=[_NO_REDIRECT])


def _session(
    connector: aiohttp.BaseConnector,
    owner: bool = True,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        connector=connector,
        connector_owner=owner,
        auto_decompress=False,  # relay the upstream's encoding untouched
        cookie_jar=aiohttp.DummyCookieJar(),
        request_class=ProxiedRequest,
        response_class=ProxiedResponse,
        trust_env=False,
        trace_configs=trace_configs,
    )


async def _refuse_redirect(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestRedirectParams
) -> None:
    answer = params.response
    answer.close()
    raise aiohttp.WSServerHandshakeError(
        answer.request_info,
        (),
        status=answer.status,
        message="redirected",
        headers=answer.headers,
    )


_NO_REDIRECT = aiohttp.TraceConfig()
_NO_REDIRECT.on_request_redirect.append(_refuse_redirect)
