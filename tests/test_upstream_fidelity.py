"""What a url backend's upstream receives: the client's Host (or the one the backend
names), the forwarded headers, the URL's base path, and TLS (verified, own CA, mTLS,
unverified), against real uvicorn servers on loopback, https with a CA made here."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from gateway import upstream as upstream_module
from gateway.app import Gateway
from gateway.cli import main
from gateway.settings import Settings
from gateway.types import Receive, Scope, Send
from tests import apps
from tests.harness import ThreadServer, write_routes


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    with ThreadServer(apps.asgi) as server:
        yield server


def _gateway(tmp_path: Path, backends: str, routes: str = "") -> ThreadServer:
    text = f"version: 1\nbackends:\n{backends}default: main\nroutes:\n{routes or '  []'}\n"
    path = write_routes(tmp_path, text.replace("routes:\n  []", "routes: []"))
    return ThreadServer(Gateway(Settings(config=str(path))))


def _hosts_gateway(tmp_path: Path, upstream: ThreadServer) -> ThreadServer:
    """Three backends on `upstream` that differ by their `host`: the client's (default,
    `/x`), the URL's own (`/own`), and one named (`/named`)."""
    backends = f"""\
  main: {{url: "{upstream.url}"}}
  own: {{url: "{upstream.url}", host: upstream}}
  named: {{url: "{upstream.url}", host: "shop.example.com:8443"}}
"""
    routes = """\
  - {id: own, path: /own, backend: own}
  - {id: named, path: /named, backend: named}
"""
    return _gateway(tmp_path, backends, routes)


def _seen(url: str, path: str = "/x", **options: object) -> dict[str, object]:
    r = httpx.get(url + path, timeout=10, **options)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    seen: dict[str, object] = r.json()
    return seen


def test_the_upstream_gets_the_clients_host_unless_the_backend_names_another(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    with _hosts_gateway(tmp_path, upstream) as gw:
        client_host = f"127.0.0.1:{gw.port}"
        assert _seen(gw.url)["headers"]["host"] == client_host  # type: ignore[index]
        assert _seen(gw.url, headers={"Host": "books.example.org"})["headers"]["host"] == (  # type: ignore[index]
            "books.example.org"
        )
        own = _seen(gw.url, "/own")["headers"]
        assert own["host"] == f"127.0.0.1:{upstream.port}"  # type: ignore[index]
        assert own["x-forwarded-host"] == client_host  # type: ignore[index]
        named = _seen(gw.url, "/named")["headers"]
        assert named["host"] == "shop.example.com:8443"  # type: ignore[index]
        assert named["x-forwarded-host"] == client_host  # type: ignore[index]


def test_forwarded_headers_name_the_client_and_what_it_spoke_to(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    with _gateway(tmp_path, f'  main: {{url: "{upstream.url}"}}\n') as gw:
        plain = _seen(gw.url)["headers"]
        assert plain["x-forwarded-for"] == "127.0.0.1"  # type: ignore[index]
        assert plain["x-forwarded-proto"] == "http"  # type: ignore[index]
        assert plain["x-forwarded-port"] == str(gw.port)  # type: ignore[index]
        assert plain["forwarded"] == f'for=127.0.0.1;host="127.0.0.1:{gw.port}";proto=http'  # type: ignore[index]
        # From a trusted proxy (loopback, by default) the chain is extended, and the
        # client's scheme, Host and port it states pass on.
        sent = {
            "Host": "books.example.org",
            "Forwarded": 'for="[2001:db8::7]";proto=https',
            "X-Forwarded-For": "198.51.100.4",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Port": "8443",
            "X-Forwarded-Host": "shop.example",
        }
        chained = _seen(gw.url, headers=sent)["headers"]
        assert chained["x-forwarded-for"] == "198.51.100.4, 127.0.0.1"  # type: ignore[index]
        assert chained["x-forwarded-proto"] == "https"  # type: ignore[index]
        assert chained["x-forwarded-host"] == "shop.example"  # type: ignore[index]
        assert chained["x-forwarded-port"] == "8443"  # type: ignore[index]
        assert chained["forwarded"] == (  # type: ignore[index]
            'for="[2001:db8::7]";proto=https, for=127.0.0.1;host=books.example.org;proto=http'
        )


def test_a_url_with_a_base_path_prefixes_every_request(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    with _gateway(tmp_path, f'  main: {{url: "{upstream.url}/base/"}}\n') as gw:
        seen = _seen(gw.url, "/books/a%2Fb?q=1")
    assert seen["path"] == "/base/books/a/b"
    assert seen["query"] == "q=1"


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA of the test's own, a server certificate for 127.0.0.1, a client certificate
    (key and certificate in one file, and in two), and a CA nobody trusts."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    files = {name: folder / f"{name}.pem" for name in ("ca", "server", "client", "crt", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client = ca.issue_cert("gateway.test")
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    client.cert_chain_pems[0].write_to_path(str(files["crt"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    files["other"] = folder / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(files["other"]))
    return files


@pytest.fixture(scope="module")
def https(pki: dict[str, Path]) -> Iterator[str]:
    with ThreadServer(apps.asgi, ssl_certfile=str(pki["server"])) as server:
        yield f"https://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def mtls(pki: dict[str, Path]) -> Iterator[str]:
    options = {"ssl_ca_certs": str(pki["ca"]), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    with ThreadServer(apps.asgi, ssl_certfile=str(pki["server"]), **options) as server:
        yield f"https://127.0.0.1:{server.port}"


def test_https_upstreams_are_verified(tmp_path: Path, pki: dict[str, Path], https: str) -> None:
    backends = f"""\
  main: {{url: "{https}", ca: {pki["ca"]}}}
  system: {{url: "{https}"}}
  stranger: {{url: "{https}", ca: {pki["other"]}}}
  blind: {{url: "{https}", verify: false}}
"""
    routes = """\
  - {id: system, path: /system, backend: system}
  - {id: stranger, path: /stranger, backend: stranger}
  - {id: blind, path: /blind, backend: blind}
"""
    with _gateway(tmp_path, backends, routes) as gw:
        seen = _seen(gw.url)
        assert seen["headers"]["x-forwarded-proto"] == "http"  # type: ignore[index]
        for path in ("/system", "/stranger"):  # a certificate from a CA it does not trust
            r = httpx.get(gw.url + path, timeout=10)
            assert r.status_code == 502, path
            assert r.json()["kind"] == "connect"
        assert _seen(gw.url, "/blind")["path"] == "/blind"


def test_a_client_certificate_opens_an_mtls_upstream(
    tmp_path: Path, pki: dict[str, Path], mtls: str
) -> None:
    backends = f"""\
  main: {{url: "{mtls}", ca: {pki["ca"]}, cert: {pki["client"]}}}
  split: {{url: "{mtls}", ca: {pki["ca"]}, cert: {pki["crt"]}, key: {pki["key"]}}}
  anonymous: {{url: "{mtls}", ca: {pki["ca"]}}}
"""
    routes = """\
  - {id: split, path: /split, backend: split}
  - {id: anonymous, path: /anonymous, backend: anonymous}
"""
    with _gateway(tmp_path, backends, routes) as gw:
        assert _seen(gw.url)["path"] == "/x"
        assert _seen(gw.url, "/split")["path"] == "/split"
        r = httpx.get(gw.url + "/anonymous", timeout=10)  # refused without a certificate
        assert r.status_code == 502
        assert r.json()["backend"] == "anonymous"


def test_tls_files_are_relative_to_the_route_file_and_checked_when_loaded(
    tmp_path: Path, pki: dict[str, Path], https: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(pki["ca"].read_bytes())
    (tmp_path / "certs" / "junk.pem").write_text("not a certificate\n")
    good = f'version: 1\nbackends:\n  main: {{url: "{https}", ca: certs/ca.pem}}\ndefault: main\n'
    path = write_routes(tmp_path, good)
    assert main(["check", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
    with ThreadServer(Gateway(Settings(config=str(path)))) as gw:
        assert _seen(gw.url)["path"] == "/x"

    bad = f"""\
version: 1
backends:
  missing: {{url: "{https}", ca: certs/nope.pem}}
  junk: {{url: "{https}", cert: certs/junk.pem}}
default: missing
"""
    write_routes(tmp_path, bad)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    nope = tmp_path / "certs" / "nope.pem"
    assert err[0] == (
        f"{path}:3:18: backend 'missing': cannot read its 'ca' file {nope}: "
        "No such file or directory"
    )
    assert err[1].startswith(f"{path}:4:15: backend 'junk': its TLS files are not usable PEM")
    assert err[-1] == f"{path}: 2 problems; nothing was applied"


def test_check_refuses_misplaced_upstream_keys_and_warns_about_verify_false(
    tmp_path: Path, https: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = """\
version: 1
backends:
  app: {asgi: "tests.apps:asgi", host: upstream, verify: false}
  plain: {url: "http://127.0.0.1:9", ca: ca.pem}
  odd: {url: "http://127.0.0.1:9", host: "a b/c"}
  keyless: {url: "https://127.0.0.1:9", key: k.pem}
default: app
"""
    path = write_routes(tmp_path, bad)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:6] == [
        f"{path}:3:34: backend 'app': 'host' is for url backends only",
        f"{path}:3:50: backend 'app': 'verify' is for url backends only",
        f"{path}:4:38: backend 'plain': 'ca' is for https:// URLs; this backend speaks plain http",
        f"{path}:5:42: backend 'odd': 'host' is 'preserve' (the client's Host), 'upstream' "
        "(the URL's) or a host such as 'shop.example.com' (got 'a b/c')",
        f"{path}:6:18: backend 'keyless': cannot read its 'key' file {tmp_path / 'k.pem'}: "
        "No such file or directory",
        f"{path}:6:41: backend 'keyless': 'key' needs 'cert', the certificate it signs",
    ]

    write_routes(tmp_path, f'version: 1\nbackends:\n  b: {{url: "{https}", verify: false}}\n')
    assert main(["check", str(path)]) == 0
    out, err_text = capsys.readouterr()
    assert err_text.splitlines()[0] == (
        f"{path}: warning: backend 'b' does not verify {https}'s certificate (verify: false): "
        "anyone on the path can read and change its traffic; give it 'ca:' instead"
    )
    assert err_text.count("warning") == 1
    assert out.startswith(f"{path}: OK (0 routes, 1 backends, default: none, 1 warning(s))")


def test_the_upstream_gets_the_clients_bytes_and_no_header_it_did_not_send(
    tmp_path: Path, upstream: ThreadServer
) -> None:
    with _gateway(tmp_path, f'  main: {{url: "{upstream.url}"}}\n') as gw:
        sent = {"X-Name": "café".encode(), "User-Agent": "ünï/1".encode()}
        r = httpx.post(gw.url + "/x", content=b"\x00\x01 raw", headers=sent, timeout=10)
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    # The UTF-8 bytes as sent (the echo shows them as Latin-1), not encoded twice.
    assert seen["x-name"] == "café".encode().decode("latin-1")
    assert seen["user-agent"] == "ünï/1".encode().decode("latin-1")
    assert "content-type" not in seen  # none sent, none guessed
    assert r.json()["body"] == "\x00\x01 raw"
    # The upstream's Date gives way to the gateway's own: one Date, as from any server.
    assert len(r.headers.get_list("date")) == 1


# --- the request head, header by header -----------------------------------------------


async def _head_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the request's headers as the server parsed them, in order, and how
    many body bytes came."""
    if scope["type"] != "http":
        return
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    headers = [
        [name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]
    ]
    body = json.dumps({"headers": headers, "size": size}).encode()
    length = str(len(body)).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
    )
    await send({"type": "http.response.body", "body": body})


def _raw(port: int, head: str, body: bytes = b"") -> dict[str, Any]:
    """Send exactly `head` (and `body`), nothing an HTTP client would add; the echo.
    The connection closes after the answer (`Connection: close`, or HTTP/1.0)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK", answer
    seen: dict[str, Any] = json.loads(rest.partition(b"\r\n\r\n")[2])
    return seen


def _forwarded(host: str) -> list[list[str]]:
    return [
        ["x-forwarded-for", "127.0.0.1"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-host", host],
        ["x-forwarded-port", "80"],
        ["forwarded", f"for=127.0.0.1;host={host};proto=http"],
    ]


def test_the_upstream_gets_the_clients_headers_in_order_and_only_those(tmp_path: Path) -> None:
    """Host first (the client's, the one the backend names, or the URL's), then the client's
    headers as sent, less the hop-by-hop ones, then the forwarded ones; nothing an HTTP
    client adds of its own (User-Agent, Accept, Accept-Encoding, a guessed
    Content-Type), and only the framing a body needs."""
    with ThreadServer(_head_echo) as upstream:
        # Its own request id, so that the gateway makes none.
        head = "Host: books.example.org\nX-One: 1\nConnection: close, x-gone\nX-Request-ID: r-1\n"
        head += "X-Gone: a\n"
        with _hosts_gateway(tmp_path, upstream) as gw:
            get = _raw(gw.port, f"GET /x HTTP/1.1\n{head}X-Two: 2, 3\n")
            own = _raw(gw.port, f"GET /own HTTP/1.1\n{head}X-Two: 2, 3\n")
            named = _raw(gw.port, f"GET /named HTTP/1.1\n{head}X-Two: 2, 3\n")
            sized = _raw(gw.port, f"POST /x HTTP/1.1\n{head}Content-Length: 4\n", b"abcd")
            chunked = f"PUT /x HTTP/1.1\n{head}Transfer-Encoding: chunked\n"
            streamed = _raw(gw.port, chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            hostless = _raw(gw.port, "GET /x HTTP/1.0\nX-Request-ID: r-1\n")
    host = ["host", "books.example.org"]
    first = [["x-one", "1"], ["x-request-id", "r-1"]]
    client = [*first, ["x-two", "2, 3"]]
    assert get == {"headers": [host, *client, *_forwarded("books.example.org")], "size": 0}
    assert own["headers"] == [
        ["host", f"127.0.0.1:{upstream.port}"],
        *client,
        *_forwarded("books.example.org"),
    ]
    assert named["headers"][0] == ["host", "shop.example.com:8443"]
    assert named["headers"][1:] == [*client, *_forwarded("books.example.org")]
    assert sized == {
        "headers": [
            host,
            *first,
            ["content-length", "4"],
            *_forwarded("books.example.org"),
        ],
        "size": 4,
    }
    assert streamed == {
        "headers": [
            host,
            *first,
            *_forwarded("books.example.org"),
            ["transfer-encoding", "chunked"],
        ],
        "size": 5,
    }
    # A client that sent no Host (HTTP/1.0): the URL's own, and no host to forward.
    assert hostless["headers"] == [
        ["host", f"127.0.0.1:{upstream.port}"],
        ["x-request-id", "r-1"],
        ["x-forwarded-for", "127.0.0.1"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-port", "80"],
        ["forwarded", "for=127.0.0.1;proto=http"],
    ]


def test_header_names_made_once_are_bounded_and_every_name_still_passes(tmp_path: Path) -> None:
    """The client's header names are kept, made once, for aiohttp (`upstream._NAMES`);
    past the bound, new names still reach the upstream, and nothing more is kept."""
    upstream = ThreadServer(_head_echo)
    with upstream, _gateway(tmp_path, f'  main: {{url: "{upstream.url}"}}\n') as gw:
        for batch in range(0, upstream_module._NAMES.limit + 200, 50):
            names = [f"x-n{n}" for n in range(batch, batch + 50)]
            head = "".join(f"{name}: {n}\n" for n, name in enumerate(names))
            seen = _raw(gw.port, f"GET /x HTTP/1.1\nHost: h\nConnection: close\n{head}")
            assert seen["headers"][1:51] == [[name, str(n)] for n, name in enumerate(names)]
    assert len(upstream_module._NAMES) == upstream_module._NAMES.limit


async def _peer_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the port of the connection the request came on."""
    if scope["type"] != "http":
        return
    body = str(scope["client"][1]).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_answers_read_to_their_end_leave_their_connection_to_the_next_request(
    tmp_path: Path,
) -> None:
    """One request after another goes over one pooled upstream connection: each answer
    gives its connection back once its body is read, and only once."""
    upstream = ThreadServer(_peer_echo)
    gw = _gateway(tmp_path, f'  main: {{url: "{upstream.url}"}}\n')
    with upstream, gw, httpx.Client(base_url=gw.url, timeout=10) as client:
        ports = [client.get("/x").text for _ in range(20)]
    assert len(set(ports)) == 1, ports
