"""The console's paths under the admin prefix: the page, its assets and the figures.

The admin API serves them with its own rules (`gateway.admin`): the page and its
assets are open, the figures need what every other admin read needs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.console.page import asset_response
from gateway.console.sampler import Sampler


def console_routes(sampler: Sampler) -> list[Route]:
    async def page(request: Request) -> Response:
        response = asset_response("console.html")
        assert response is not None  # the page is package data
        return response

    async def asset(request: Request) -> Response:
        response = asset_response(request.path_params["name"])
        if response is None:
            return JSONResponse({"error": "no such console asset"}, status_code=404)
        return response

    async def figures(request: Request) -> Response:
        return Response(await sampler.figures(), media_type="application/json")

    return [
        Route("/console", page, methods=["GET"]),
        Route("/console/figures", figures, methods=["GET"]),
        Route("/console/{name}", asset, methods=["GET"]),
    ]
