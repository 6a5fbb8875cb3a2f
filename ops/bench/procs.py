"""Child processes of the benchmark: start pinned, learn their port, read RSS and CPU, stop."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> list[int]:
    """The cores this process may run on (affinity first, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Cores:
    """Who runs where: the measured server alone on its core, the rest on the others."""

    server: int | None
    upstream: int | None
    load: int | None

    @classmethod
    def plan(cls) -> Cores:
        cores = usable_cores()
        if len(cores) < 2 or not hasattr(os, "sched_setaffinity"):
            return cls(None, None, None)
        if len(cores) == 2:
            return cls(cores[0], cores[1], cores[1])
        return cls(cores[0], cores[1], cores[2])

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (fewer than 2 usable cores or no sched_setaffinity)"
        shared = " (shared)" if self.upstream == self.load else ""
        return (
            f"floor and sidecar on core {self.server}; fake upstream on core {self.upstream}; "
            f"load generator on core {self.load}{shared}"
        )


def pin(pid: int, core: int | None) -> None:
    """Pin a process (0: this one) to one core, where the platform allows."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {core})


def _listening_port_from_proc(pid: int) -> int | None:
    """The TCP port `pid` listens on, from /proc (for a server that does not print it)."""
    try:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        for table in ("tcp", "tcp6"):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    return int(fields[1].rsplit(":", 1)[1], 16)
    except OSError:
        return None
    return None


def _port_from_log(path: Path) -> int | None:
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if (
                    isinstance(data, dict)
                    and str(data.get("event", "")).endswith("listening")
                    and isinstance(data.get("port"), int)
                ):
                    return int(data["port"])
    return None


@dataclass
class Proc:
    """A started server: its process, port and log file."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def chat_url(self) -> str:
        return f"{self.base}/v1/chat/completions"

    def pids(self) -> list[int]:
        """This process and its live descendants (the sidecar's span exporter process)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
        return found

    def rss_mib(self) -> float:
        """Resident set size now, in MiB, of the process and its descendants (NaN where /proc
        is missing)."""
        total, seen = 0.0, False
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
                        seen = True
        return total if seen else float("nan")

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far (all threads, and the live descendants'),
        NaN where /proc is missing."""
        total, seen = 0.0, False
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
                seen = True
        return total if seen else float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Pending:
    """A started process whose port is not known yet."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait(self, timeout_s: float = 30.0) -> Proc:
        """Wait for the port it listens on (from its log line, else from /proc)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = _port_from_log(self.log) or _listening_port_from_proc(self.process.pid)
            if port:
                return Proc(self.name, self.process, port, self.log)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{self.name} did not start listening (exit {self.process.returncode}):\n{tail}"
        )

    def stop(self) -> None:
        Proc(self.name, self.process, 0, self.log).stop()


def spawn(
    name: str,
    argv: Sequence[str],
    logdir: Path,
    core: int | None,
    env: Mapping[str, str] | None = None,
) -> Pending:
    """Start `argv` pinned to `core`, its stdout and stderr in `logdir/<name>.log`.

    The port comes from a JSON line whose `event` ends in `listening` (the fake upstream, the
    floor, and the sidecar's `server.listening` when its log level shows it), else from the
    process's listening socket in /proc (the sidecar at `ROUTER_LOG_LEVEL=warning`).
    """
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(env) if env is not None else None,
        )
    pin(process.pid, core)
    return Pending(name, process, log)


def start(
    name: str,
    argv: Sequence[str],
    logdir: Path,
    core: int | None,
    env: Mapping[str, str] | None = None,
) -> Proc:
    """`spawn`, then wait for the port."""
    return spawn(name, argv, logdir, core, env).wait()
