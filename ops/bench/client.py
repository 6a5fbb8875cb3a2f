"""Load generators: a closed-loop aiohttp client (latency, SSE time to first token) and wrk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

LUA = Path(__file__).resolve().parent / "post.lua"
JSON_HEADERS = {"Content-Type": "application/json"}


def body(model: str, *, stream: bool = False, content: str = "Say hello.") -> bytes:
    """A small chat request, encoded once."""
    data: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        data["stream"] = True
    return json.dumps(data, separators=(",", ":")).encode()


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of `samples` (NaN if empty)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Sample:
    """What one target answered during a measurement."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    requests: int = 0
    seconds: float = 0.0
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 2),
            "p50_ms": round(self.p(0.5), 3),
            "p90_ms": round(self.p(0.9), 3),
            "p99_ms": round(self.p(0.99), 3),
        }


def _first_token(line: bytes) -> bool:
    """True for an SSE `data:` line whose first choice carries non-empty content."""
    if not line.startswith(b"data: {"):
        return False
    try:
        data = json.loads(line[6:])
        return bool(data["choices"][0]["delta"].get("content"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False


async def one_request(
    http: aiohttp.ClientSession, url: str, payload: bytes, stream: bool, sample: Sample
) -> CIMultiDictProxy[str] | None:
    """One call; its latency (or time to first token) goes into `sample`. Returns its headers."""
    started = time.perf_counter()
    try:
        async with http.post(url, data=payload, headers=JSON_HEADERS) as response:
            if stream:
                first: float | None = None
                done = False
                async for line in response.content:
                    if first is None and _first_token(line):
                        first = time.perf_counter()
                    elif line.startswith(b"data: [DONE]"):
                        done = True
                ok = response.status == 200 and first is not None and done
                elapsed = (first or time.perf_counter()) - started
            else:
                await response.read()
                ok = response.status == 200
                elapsed = time.perf_counter() - started
            sample.requests += 1
            if ok:
                sample.latencies_ms.append(elapsed * 1000)
            else:
                sample.error(f"HTTP {response.status} from {url}")
            return response.headers
    except (aiohttp.ClientError, TimeoutError) as exc:
        sample.requests += 1
        sample.error(f"{type(exc).__name__}: {exc}")
        return None


def session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60), raise_for_status=False
    )


async def interleaved(
    targets: Mapping[str, tuple[str, bytes]],
    seconds: float,
    *,
    stream: bool = False,
    max_rounds: int = 100_000,
    pause_s: float = 0.0,
) -> dict[str, Sample]:
    """One request in flight, the targets taken in a fresh random order every round.

    Interleaving spreads the machine's noise evenly over the targets, so their difference is
    the cost of what stands between them (the client's own cost cancels out). `pause_s`
    between requests lets a server finish what it does after answering (an application
    calling a model rarely sends its next request within a millisecond of the last answer).
    """
    samples = {name: Sample() for name in targets}
    sessions = {name: session(1) for name in targets}
    rng = random.Random(7)
    names = list(targets)
    try:
        started = time.perf_counter()
        end = started + seconds
        rounds = 0
        while time.perf_counter() < end and rounds < max_rounds:
            rng.shuffle(names)
            for name in names:
                url, payload = targets[name]
                await one_request(sessions[name], url, payload, stream, samples[name])
                if pause_s:
                    await asyncio.sleep(pause_s)
            rounds += 1
        elapsed = time.perf_counter() - started
        for sample in samples.values():
            sample.seconds = elapsed
    finally:
        for http in sessions.values():
            await http.close()
    return samples


async def closed_loop(
    url: str,
    payload: bytes,
    concurrency: int,
    seconds: float,
    *,
    stream: bool = False,
    max_requests: int = 1_000_000,
) -> Sample:
    """`concurrency` workers, each sending its next request as soon as the last one answered."""
    sample = Sample()
    async with session(concurrency) as http:
        started = time.perf_counter()
        end = started + seconds
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < end and sent < max_requests:
                sent += 1
                await one_request(http, url, payload, stream, sample)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        sample.seconds = time.perf_counter() - started
    return sample


@dataclass
class WrkResult:
    """What wrk reported."""

    rps: float
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": self.seconds,
            "rps": round(self.rps, 2),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
        }


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def parse_wrk(output: str) -> WrkResult:
    """Requests/s, request count, errors and latency percentiles from wrk's report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1000,
        errors=errors,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
    )


def run_wrk(
    url: str, payload: bytes, connections: int, seconds: int, core: int | None
) -> WrkResult:
    """wrk (one thread, `connections` keep-alive connections) POSTing `payload` for `seconds`."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, seconds)}s", "--timeout", "10s"]
    argv += ["--latency", "-s", str(LUA)]
    env = {**os.environ, "BENCH_BODY": payload.decode()}
    process = subprocess.Popen(
        [*argv, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    if core is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(process.pid, {core})
    output, _ = process.communicate(timeout=seconds + 60)
    return parse_wrk(output)
