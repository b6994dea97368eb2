"""The benchmark's machinery: server processes, load runs, CPU accounting, rounds.

Servers run as subprocesses on free loopback ports, each in a session of its
own so that stopping one stops its whole process group (a uvicorn supervisor
and its workers, an nginx master and its worker). `Processes` stops every
server it started when its `with` block ends, however it ends; the children
also ask the kernel for SIGTERM should the harness itself die first.

Load comes from wrk. With two cores or more, servers run on the first allowed
core and wrk (and this process) on the second, so the load generator never
takes the server's core. A comparison (`Group`) runs in rounds: each round
starts fresh server processes, warms them up and loads the variants in an
order rotated from round to round; the machine's other load is watched
(`/proc/stat`) and a run disturbed by it is measured again.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
QUIET = 0.10  # other processes' share of a core below which the machine counts as quiet
RERUN = 0.15  # ... above which a load run is measured again


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Cores:
    """Where servers and load run: separate cores when the machine has two."""

    server: int | None
    load: int | None

    @classmethod
    def detect(cls) -> Cores:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(allowed[0], allowed[1])

    def pin(self, core: int | None, argv: Sequence[str]) -> list[str]:
        return ["taskset", "-c", str(core), *argv] if core is not None else list(argv)

    def describe(self) -> str:
        if self.server is None:
            return "no pinning (fewer than 2 cores, or no taskset)"
        return f"servers on core {self.server}, wrk on core {self.load}"


def ensure_tool(binary: str, package: str) -> str | None:
    """The tool's path, installing its Debian package first when it is missing
    (apt-get, as root or through passwordless sudo); None, said why, when it cannot."""
    found = shutil.which(binary) or _sbin(binary)
    if found or shutil.which("apt-get") is None:
        if not found:
            log(f"{binary} is missing and there is no apt-get; install {package} yourself")
        return found
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            log(f"{binary} is missing; install {package} (needs root)")
            return None
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    log(f"{binary} is missing: installing the Debian package {package}")
    for attempt in range(2):
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
        if attempt == 0:  # a stale package index is the usual reason
            update = [*prefix, "apt-get", "update", "-qq"]
            subprocess.run(update, env=env, capture_output=True, check=False)
    else:
        log(f"installing {package} failed: {done.stderr.strip()[-400:]}")
        return None
    return shutil.which(binary) or _sbin(binary)


def _sbin(binary: str) -> str | None:
    for directory in ("/usr/sbin", "/sbin"):
        candidate = Path(directory, binary)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# --- server processes -------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM if the harness dies without cleaning up.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerFailed(RuntimeError):
    pass


@dataclass(slots=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """Every live process of this server (its process group)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(entry)) == self.process.pid:
                        found.append(int(entry))
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's processes."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def http_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


class Processes:
    """Starts servers and guarantees they are stopped when the block ends."""

    def __init__(self, workdir: Path, cores: Cores, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.cores = cores
        self.env = env
        self._servers: list[Server] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        ready_path: str | None = "/",
        timeout: float = 90.0,
    ) -> Server:
        """Start `argv` (pinned by the caller, see `Cores.pin`), and wait until it answers
        `ready_path` unless that is None."""
        log_path = self.workdir / f"{name.replace(' ', '_').replace('/', '_')}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, out of reach of Ctrl-C
                preexec_fn=_die_with_parent,
            )
        server = Server(name, port, process, log_path)
        self._servers.append(server)
        if ready_path is not None:
            self.wait_ready(server, ready_path, timeout)
        return server

    def wait_ready(self, server: Server, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        answering_since: float | None = None
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerFailed(
                    f"{server.name} exited with code {server.process.returncode}:\n"
                    + server.log_tail()
                )
            status = http_status(server.port, path)
            if status == 200:
                return
            if status is not None:  # up, but answering something else: a moment, no more
                answering_since = answering_since or time.monotonic()
                if time.monotonic() - answering_since > 10:
                    raise ServerFailed(
                        f"{server.name} answers {path} with {status}:\n{server.log_tail()}"
                    )
            time.sleep(0.05)
        raise ServerFailed(f"{server.name} was not ready within {timeout:g}s:\n{server.log_tail()}")

    def stop(self, server: Server) -> None:
        if server in self._servers:
            self._servers.remove(server)
        _stop_group(server.process)

    def stop_all(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.process.pid, signal.SIGTERM)
        for server in servers:
            _stop_group(server.process)

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self._servers)


def _stop_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # The leader may be gone while workers linger; the group id still names them.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into the same unwinding as Ctrl-C, so cleanup always runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- load with wrk, and what it cost ------------------------------------------------


_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.0f %.0f %.0f %.0f %.0f\\n", summary.requests,
    summary.duration, latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk run against one variant."""

    requests: int
    rps: float
    p99_ms: float
    errors: int  # socket errors and non-2xx/3xx answers
    cpu: float  # CPU seconds the variant's counted servers used meanwhile
    foreign: float  # share of a core used meanwhile by processes not ours

    @property
    def cost(self) -> float:
        """CPU seconds per completed request."""
        return self.cpu / self.requests if self.requests else float("inf")


def _busy_seconds() -> float:
    """CPU time the whole machine has spent busy (user, nice, system), all cores."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """This process and its reaped children (wrk): CPU time so far."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Wrk:
    """wrk with one thread, pinned to the load core, and the machine's load watched."""

    def __init__(
        self, binary: str, workdir: Path, cores: Cores, connections: int, procs: Processes
    ) -> None:
        self.binary = binary
        self.cores = cores
        self.connections = connections
        self.procs = procs
        self.script = workdir / "report.lua"
        self.script.write_text(_WRK_REPORT)
        self.foreign: list[float] = []  # share of a core used by others, per kept run
        self.reruns = 0
        self.waiting_budget = 90.0  # seconds of waiting for quiet, over the whole run

    def _ours(self) -> float:
        return self.procs.cpu_seconds() + _own_seconds()

    def wait_quiet(self, patience: float = 20.0) -> None:
        """Wait until other processes leave the cores alone: up to `patience` s each
        time and `waiting_budget` s in all, so a busy machine slows a run only so much
        (its footer then says the machine was busy)."""
        started = time.monotonic()
        deadline = started + min(patience, self.waiting_budget)
        while True:
            busy, ours, begun = _busy_seconds(), self._ours(), time.monotonic()
            time.sleep(0.25)
            foreign = (_busy_seconds() - busy - (self._ours() - ours)) / (time.monotonic() - begun)
            if foreign < QUIET or time.monotonic() > deadline:
                break
        self.waiting_budget -= time.monotonic() - started

    def run(self, url: str, seconds: int, counted: Sequence[Server] = ()) -> Load:
        argv = [self.binary, "-t1", f"-c{self.connections}", f"-d{max(seconds, 1)}s"]
        argv += ["--timeout", "5s", "-s", str(self.script), url]
        cpu_before = sum(s.cpu_seconds() for s in counted)
        ours_before, busy_before, started = self._ours(), _busy_seconds(), time.monotonic()
        done = subprocess.run(
            self.cores.pin(self.cores.load, argv), capture_output=True, text=True, check=False
        )
        elapsed = time.monotonic() - started
        foreign = max(0.0, _busy_seconds() - busy_before - (self._ours() - ours_before)) / elapsed
        cpu = sum(s.cpu_seconds() for s in counted) - cpu_before
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed on {url}: {done.stderr.strip() or done.stdout}")
        requests, duration_us, p99, socket_errors, status_errors = map(float, line.split()[1:])
        return Load(
            requests=int(requests),
            rps=requests / (duration_us / 1e6),
            p99_ms=p99 / 1000,
            errors=int(socket_errors + status_errors),
            cpu=cpu,
            foreign=foreign,
        )

    def measure(self, url: str, seconds: int, counted: Sequence[Server]) -> Load:
        """A run that counts: redone once if other processes took a core's share meanwhile."""
        load = self.run(url, seconds, counted)
        if load.foreign > RERUN:
            self.reruns += 1
            self.wait_quiet()
            load = self.run(url, seconds, counted)
        self.foreign.append(load.foreign)
        return load


# --- a comparison in rounds -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A server of a comparison. `counts` names the members whose CPU is this variant's
    cost (itself by default; nginx and gunicorn together); `loaded=False` for a
    server that only serves another member; `fresh=False` keeps one process for the
    whole comparison (an upstream every variant shares)."""

    name: str
    argv: list[str]
    port: int
    counts: tuple[str, ...]
    loaded: bool
    fresh: bool
    timeout: float
    settle: Callable[[Server], None] | None


@dataclass(slots=True)
class Rounds:
    """Each round's load of one variant."""

    runs: list[Load] = field(default_factory=list)


class Group:
    """The servers of one comparison, loaded in turns, stopped together.

    Two processes of the very same server differ by up to 10-17% in
    throughput on a small virtual machine (memory placement, hash seeds), as
    much as the time of day does. So every round starts a fresh process of
    each member (on the same port), warms it up, and loads the variants in a
    rotated order: a median over rounds is a median over processes and moments
    alike, and a ratio taken within each round shows the spread.
    """

    def __init__(
        self, procs: Processes, wrk: Wrk, path: str, *, rounds: int, duration: int, warmup: int
    ) -> None:
        self.procs, self.wrk, self.path = procs, wrk, path
        self.rounds, self.duration, self.warmup = rounds, duration, warmup
        self.members: list[Member] = []
        self.servers: dict[str, Server] = {}  # the current process of each member

    def add(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        counts: Sequence[str] = (),
        loaded: bool = True,
        fresh: bool = True,
        timeout: float = 90.0,
        settle: Callable[[Server], None] | None = None,
    ) -> Server:
        """Start a server and wait until it answers; `settle`, if given, then brings each
        of its processes into the state to measure (a table that came by a reload)."""
        member = Member(name, argv, port, tuple(counts) or (name,), loaded, fresh, timeout, settle)
        self.members.append(member)
        self.servers[name] = self.procs.start(name, argv, port=port, ready_path=None)
        self._await(member)
        return self.servers[name]

    def _await(self, member: Member) -> None:
        self.procs.wait_ready(self.servers[member.name], self.path, member.timeout)
        if member.settle is not None:
            member.settle(self.servers[member.name])

    def _restart(self) -> None:
        """New processes for the fresh members: all launched, then each awaited."""
        fresh = [m for m in self.members if m.fresh]
        for member in fresh:
            self.procs.stop(self.servers[member.name])
        for member in fresh:
            self.servers[member.name] = self.procs.start(
                member.name, member.argv, port=member.port, ready_path=None
            )
        for member in fresh:
            self._await(member)

    def run(self) -> dict[str, Rounds]:
        """Rounds of: fresh processes, a warm-up each, then each variant loaded in turn."""
        loaded = [m for m in self.members if m.loaded]
        results = {m.name: Rounds() for m in loaded}
        for index in range(self.rounds):
            if index:
                self._restart()
            self.wrk.wait_quiet()
            for member in loaded if self.warmup else ():
                self.wrk.run(self.servers[member.name].base + self.path, self.warmup)
            shift = index % len(loaded)
            for member in [*loaded[shift:], *loaded[:shift]]:
                counted = [self.servers[name] for name in member.counts]
                load = self.wrk.measure(
                    self.servers[member.name].base + self.path, self.duration, counted
                )
                results[member.name].runs.append(load)
                log(
                    f"  round {index + 1}/{self.rounds} {member.name}: {load.rps:,.0f} req/s, "
                    f"{load.cost * 1e6:,.0f} us CPU/req, p99 {load.p99_ms:.1f} ms"
                    + (f", {load.errors} errors" if load.errors else "")
                )
        return results

    def stop(self) -> None:
        for server in self.servers.values():
            self.procs.stop(server)
