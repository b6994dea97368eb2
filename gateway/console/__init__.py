"""The operator console: a page served by the gateway under the admin prefix.

    page      the page and its assets (package data), with a strict Content-Security-Policy
    sampler   rate, error ratio, p50 and p99 per route and backend, one sampler per serve
    routes    its paths under the admin prefix

The page reads and acts through the admin API only, with the admin API's own
authorisation: it holds no data of its own and bypasses no rule.
"""

from gateway.console.page import ASSETS, VERSION
from gateway.console.routes import console_routes
from gateway.console.sampler import Sampler

__all__ = ["ASSETS", "VERSION", "Sampler", "console_routes"]
