"""Instructions per request under valgrind's callgrind: the measure load cannot move.

The server runs under `valgrind --tool=callgrind --instr-atstart=no`, so it
starts at a few times its native cost and counts nothing. Once it answers,
`warmup` requests go over one keep-alive connection; then instrumentation is
switched on (`callgrind_control -i on`), the counters zeroed, `requests` more
are sent one after the other, and the counters dumped (`-d`). The dump's total
divided by `requests` is what one request cost the server process: every
thread (the WSGI pool too), the event loop's idle turns included. Other
processes do not enter the count; with the string hash seed fixed, two runs
of one build still differ by up to 0.3% (idle turns and pool wake-ups follow
the timing).
"""

from __future__ import annotations

import http.client
import subprocess
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
        send(requests)
        _control(server.pid, "-d", "measured")
        conn.close()
        dumps = sorted(workdir.glob(f"{name}.{server.pid}.callgrind.*"))
        if not dumps:
            raise ServerFailed(f"{name}: callgrind wrote no dump")
        cost = _total(dumps[-1]) / requests
        log(f"  {name}: {cost:,.0f} instructions per request")
        return cost
    finally:
        procs.stop(server)
