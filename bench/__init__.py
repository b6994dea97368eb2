"""The gateway's benchmark: `python -m bench` prints one table of ratios.

Every measurement puts the gateway next to what a user would run instead (the
app alone under uvicorn, nginx in front of gunicorn or of an upstream),
measured in the same run on the same machine, so the ratios mean something
where the absolute numbers do not travel. docs/benchmarks.md explains how to
read the table, how far each measure can be trusted, and records a full run.

Modules:

- `rows`: every row and how it is measured (the method, in one place).
- `harness`: server processes, wrk, CPU accounting from /proc, rounds.
- `instructions`: instructions per request under callgrind.
- `table`: ratios with their spread, verdicts, the printed table.
- `tables`: the route files and the database the servers use.
- `flip`: how fast a saved route file reaches the clients.
- `profile`: where the gateway's own instructions per request go.
- `product`: the few names bench/ imports from the gateway.
- `legacy_asgi`: the Flask app behind a2wsgi, as served without the gateway.
- `cli`: options and the run.
"""
