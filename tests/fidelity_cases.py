"""The requests of the fidelity suite: HTTP as real clients use it, against httpbin's
endpoints (which its FastAPI port httpbinx shares, mostly), each sent as raw bytes.

Every case is sent to the app alone and to the app behind a proxy, and the two answers
are compared (tests/fidelity.py says what may differ)."""

from __future__ import annotations

import base64

from tests.fidelity import Case

_BOUNDARY = "fidelity-boundary-7d3a"
_MULTIPART = (
    f"--{_BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="field"\r\n\r\n'
    "valeur é\r\n"
    f"--{_BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="upload"; filename="notes.txt"\r\n'
    "Content-Type: text/plain\r\n\r\n"
    "line one\nline two\n\r\n"
    f"--{_BOUNDARY}--\r\n"
).encode()
_BLOB = bytes(range(256)) * 200  # 51,200 bytes, every byte value
_AUTH = "Basic " + base64.b64encode(b"user:secret").decode()

HTTP_CASES: list[Case] = [
    # query strings and paths: repeated keys, escapes, non-ASCII, odd but legal characters
    Case("query repeated keys", "/get?a=1&a=2&b=%C3%A9t%C3%A9&c=&d"),
    Case("query escapes", "/get?x=a%20b+c&y=%2F%3F%26%3D&z=%E2%82%AC&&w=?/:@"),
    Case("path escapes", "/anything/a%2Fb/caf%C3%A9/%7Euser;p=1/x:y@z!$&'()*+,="),
    Case("path double slashes", "/anything//two//slashes/"),
    Case("path dot segments escaped", "/anything/a/%2E%2E/b/%2e/c"),
    Case("long query", "/get?" + "&".join(f"k{i}=v{i}" for i in range(300))),
    Case("absolute-form target", "http://fidelity.example:8080/get?via=absolute"),
    Case("unknown path", "/no/such/thing"),
    Case("method not allowed", "/get", method="DELETE"),
    # headers: repeated, non-ASCII (obs-text bytes), cookies
    Case("repeated request headers", "/headers", headers=[("X-Dup", "one"), ("X-Dup", "two")]),
    Case("non-ASCII request header", "/headers", headers=[("X-Name", "café".encode())]),
    Case("cookies sent", "/cookies", headers=[("Cookie", "a=1; b=two"), ("Cookie", "c=3")]),
    Case("several Set-Cookie", "/cookies/set?a=1&b=2&c=%C3%A9"),
    Case("cookie deleted", "/cookies/delete?a", headers=[("Cookie", "a=1")]),
    Case(
        "repeated response headers",
        "/response-headers?X-Multi=1&X-Multi=2&Set-Cookie=x%3D1&Set-Cookie=y%3D2",
    ),
    Case("non-ASCII response header", "/response-headers?X-Latin=%C3%A9t%C3%A9"),
    # redirects, relative and absolute
    Case("relative redirects", "/relative-redirect/2"),
    Case("absolute redirects", "/absolute-redirect/2"),
    Case("redirect 307 to a path", "/redirect-to?url=%2Fget%3Fx%3D1&status_code=307"),
    Case("redirect elsewhere", "/redirect-to?url=https%3A%2F%2Fexample.org%2Fa%3Fb"),
    # bodies: forms, multipart, chunked, Expect: 100-continue, binary, other methods
    Case(
        "urlencoded form",
        "/post",
        method="POST",
        headers=[("Content-Type", "application/x-www-form-urlencoded")],
        body=b"a=1&b=%C3%A9t%C3%A9&a=2&empty=",
    ),
    Case(
        "multipart upload",
        "/post",
        method="POST",
        headers=[("Content-Type", f"multipart/form-data; boundary={_BOUNDARY}")],
        body=_MULTIPART,
    ),
    Case(
        "chunked upload",
        "/post",
        method="POST",
        headers=[("Content-Type", "application/json")],
        body=b'{"items": [' + b",".join(b'"%d"' % i for i in range(3000)) + b"]}",
        chunked=True,
    ),
    Case(
        "Expect: 100-continue",
        "/put",
        method="PUT",
        headers=[("Content-Type", "text/plain; charset=utf-8")],
        body="un texte accentué\n".encode() * 500,
        expect=True,
    ),
    Case("binary body without a type", "/anything", method="POST", body=_BLOB),
    Case("empty POST", "/post", method="POST"),
    Case(
        "PATCH json",
        "/patch",
        method="PATCH",
        headers=[("Content-Type", "application/json")],
        body=b'{"name": "\xc3\xa9"}',
    ),
    Case("DELETE", "/delete", method="DELETE"),
    # ranges, conditional requests
    Case("range", "/range/1000", headers=[("Range", "bytes=100-199")]),
    Case("suffix range", "/range/1000", headers=[("Range", "bytes=-50")]),
    Case("unsatisfiable range", "/range/100", headers=[("Range", "bytes=500-600")]),
    Case("ETag match", "/etag/abc", headers=[("If-None-Match", '"abc"')]),
    Case(
        "not modified", "/cache", headers=[("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")]
    ),
    # compressed and streamed bodies, slow streams
    Case("gzip", "/gzip", headers=[("Accept-Encoding", "gzip")]),
    Case("deflate", "/deflate", headers=[("Accept-Encoding", "deflate")]),
    Case("brotli", "/brotli", headers=[("Accept-Encoding", "br")]),
    Case("streamed lines", "/stream/5"),
    Case("streamed bytes", "/stream-bytes/20000?seed=7&chunk_size=1000", seeded=True),
    # bytes 3 s apart, where the gateway's /drip route has a two-second timeout
    # (tests/fidelity_servers.routes): it bounds the wait for the answer, not a stream's gaps
    Case("slow stream", "/drip?duration=6&numbytes=2&code=200&delay=0"),
    Case("bytes", "/bytes/3000?seed=3", seeded=True),
    # auth challenges
    Case("basic auth challenge", "/basic-auth/user/secret"),
    Case("basic auth", "/basic-auth/user/secret", headers=[("Authorization", _AUTH)]),
    Case("bearer challenge", "/bearer"),
    # HEAD, OPTIONS, statuses, content types
    Case("HEAD", "/get", method="HEAD"),
    Case("HEAD of bytes", "/range/500", method="HEAD"),
    Case("OPTIONS", "/get", method="OPTIONS"),
    Case(
        "CORS preflight",
        "/post",
        method="OPTIONS",
        headers=[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "X-Custom"),
        ],
    ),
    Case("status 418", "/status/418"),
    Case("status 500 from the app", "/status/500"),
    Case("status 204", "/status/204"),
    Case("status 304", "/status/304"),
    Case("UTF-8 page", "/encoding/utf8"),
    Case("image negotiated", "/image", headers=[("Accept", "image/png")]),
    Case("links page", "/links/3/1"),
    Case("base64 body", "/base64/SGVsbG8sIHdvcmxkIOKcqA%3D%3D"),
    Case("user agent", "/user-agent", headers=[("User-Agent", "fidelity/1.0 (+ünïcode)".encode())]),
]
