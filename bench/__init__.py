"""The gateway's benchmark: `python -m bench` prints one table of ratios.

Every measurement puts the gateway next to what a user would run instead
(the app alone under uvicorn, Flask under gunicorn, nginx in front of an
upstream), measured in the same run on the same machine, so the ratios mean
something even where the absolute numbers do not travel. docs/benchmarks.md
explains how to read the table and records a full run.

Modules:

- `harness`: options, tools (wrk, nginx), server processes, load runs, the table.
- `tables`: the route files the servers load.
- `inprocess`: the in-process backends, metrics cost and memory (rows 1, 2, 3, 7).
- `scale`: route table size, over HTTP and as a matching micro-benchmark (row 4).
- `remote`: the remote upstream against nginx, and HTTP client transports (row 5).
- `flip`: how fast a saved routes file takes effect (row 6).
- `transports`, `variant`: alternative upstream clients, for measurement only.
- `legacy_asgi`: the Flask app behind a2wsgi, as a user would serve it without the gateway.
- `profile`: a py-spy profile of a loaded gateway worker, summarised (`python -m bench.profile`).
"""
