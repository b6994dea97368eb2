"""Schemathesis against the new app's OpenAPI document, through the gateway.

The gateway routes every endpoint of the new app to it (the table is made from the
document itself), and answers must stay what the app alone gives: no 5xx the app
alone does not give, every answer valid against the schema. The event stream never
ends, so it is left out. Bounded: a few examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from gateway.app import Gateway
from gateway.settings import Settings
from new_fastapi.app import app as new_app
from tests.harness import ThreadServer, write_routes

# What the answer must be; checks of what the app accepts (schema-valid data it
# rejects, say) judge the app, and hold or fail alike with or without the gateway.
ANSWER_CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
DOCUMENT = new_app.openapi()
STREAMS = {"/books/events"}
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path=list(STREAMS))


def table() -> str:
    lines = [
        "version: 1",
        "backends:",
        '  legacy: {wsgi: "legacy_flask.app:app"}',
        '  new: {asgi: "new_fastapi.app:app"}',
        "default: legacy",
        "routes:",
        "  - {id: openapi, path: /openapi.json, backend: new}",
    ]
    for i, path in enumerate(DOCUMENT["paths"]):
        lines.append(f'  - {{id: new.{i}, path: "{path}", backend: new}}')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    directory = tmp_path_factory.mktemp("schema")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BOOKSTORE_DB", str(directory / "bookstore.db"))
        routes = write_routes(directory, table())
        with (
            ThreadServer(Gateway(Settings(config=str(routes)))) as gateway,
            ThreadServer(new_app) as alone,
        ):
            yield gateway.url, alone.url


def test_the_table_sends_every_endpoint_of_the_new_app_to_it(servers: tuple[str, str]) -> None:
    import httpx

    gateway, _ = servers
    for path in DOCUMENT["paths"]:
        if path in STREAMS:
            continue
        r = httpx.head(gateway + path.replace("{book_id}", "1"), timeout=10)
        assert r.headers["x-gateway-backend"] == "new", path


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_answers_through_the_gateway_match_the_schema(case: Any, servers: tuple[str, str]) -> None:
    gateway, alone = servers
    through = case.call(base_url=gateway, timeout=10)
    if through.status_code >= 500:
        direct = case.call(base_url=alone, timeout=10)
        assert direct.status_code >= 500, (
            f"{case.method} {case.formatted_path}: {through.status_code} through the gateway, "
            f"{direct.status_code} from the app alone: {through.text[:200]}"
        )
    case.validate_response(through, checks=ANSWER_CHECKS)
