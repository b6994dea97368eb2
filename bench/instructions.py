"""Instructions per request under valgrind's callgrind: the measure load cannot move.

The server runs under `valgrind --tool=callgrind --instr-atstart=no`, so it
starts at a few times its native cost and counts nothing. Once it answers,
`warmup` requests go over one keep-alive connection; then instrumentation is
switched on (`callgrind_control -i on`), the counters zeroed, `requests` more
are sent one after the other, and the counters dumped (`-d`): every thread of
the server process (the WSGI pool too), the event loop's idle turns included.

Under valgrind those requests take ~50 times as long as they would natively, so
the server's timers (the route file's watch, uvicorn's ticks) would be charged
to them ~50 times over. So the counters are zeroed again, the server left idle
for as long as the requests took, and what it did then is subtracted: per
request is (busy - idle over the same time) / `requests`. Other processes do not
enter the count; with the string hash seed fixed, two runs of one build still
differ by up to 0.3% (thread hand-offs and pool wake-ups follow the timing).
"""

from __future__ import annotations

import http.client
import subprocess
import time
from pathlib import Path

from bench.harness import HOST, Cores, Processes, ServerFailed, log


def callgrind(workdir: Path, name: str, argv: list[str]) -> list[str]:
    """`argv` under callgrind, counting nothing until told to."""
    out = workdir / f"{name}.%p.callgrind"
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *argv,
    ]


def _control(pid: int, *args: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or "Error" in done.stdout:  # it exits 0 on some errors
        raise ServerFailed(f"callgrind_control {' '.join(args)} failed: {done.stdout}{done.stderr}")


def _dump(workdir: Path, name: str, pid: int, label: str) -> int:
    """Dump the counters since they were zeroed; their total."""
    _control(pid, "-d", label)
    dumps = sorted(workdir.glob(f"{name}.{pid}.callgrind.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise ServerFailed(f"{name}: callgrind wrote no dump")
    return _total(dumps[-1])


def _total(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ServerFailed(f"no instruction total in {dump}")


def per_request(
    procs: Processes,
    cores: Cores,
    workdir: Path,
    name: str,
    argv: list[str],
    port: int,
    path: str,
    *,
    warmup: int,
    requests: int,
) -> float:
    """Start `argv` (which listens on `port`) under callgrind on the server core and
    return the instructions one request for `path` costs it."""
    # taskset and env outside valgrind: valgrind does not follow an exec unless told to.
    # A fixed string hash seed: with random ones, two processes of one build differ by
    # up to 0.4% more (dict probes).
    command = cores.pin(cores.server, ["env", "PYTHONHASHSEED=0", *callgrind(workdir, name, argv)])
    server = procs.start(name, command, port=port, ready_path=path, timeout=900)
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)

        def send(count: int) -> None:
            for _ in range(count):
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise ServerFailed(f"{name}: GET {path} answered {response.status}")

        send(warmup)
        _control(server.pid, "-i", "on")
        _control(server.pid, "-z")
        started = time.monotonic()
        send(requests)
        busy = time.monotonic() - started
        busy_total = _dump(workdir, name, server.pid, "measured")
        # What the server does with no request over as long (its timers: a file
        # watched, uvicorn's ticks), which valgrind's slowdown would otherwise charge
        # to the requests ~50 times over.
        _control(server.pid, "-z")
        started = time.monotonic()
        time.sleep(busy)
        idle_total = _dump(workdir, name, server.pid, "idle") * busy / (time.monotonic() - started)
        conn.close()
        cost = (busy_total - idle_total) / requests
        log(
            f"  {name}: {cost:,.0f} instructions per request "
            f"({idle_total / requests:,.0f} more per request over the same time idle)"
        )
        return cost
    finally:
        procs.stop(server)
