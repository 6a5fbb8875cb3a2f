"""The benchmark: the sidecar against a bare aiohttp pass-through and a direct call, in one run.

    .venv/bin/python ops/bench/run.py            # full run (about a minute)
    .venv/bin/python ops/bench/run.py --quick    # a few seconds, for the smoke test

Everything binds 127.0.0.1 port 0. A fake OpenAI-compatible upstream, the floor (a bare
aiohttp pass-through) and the sidecar each run in their own process, pinned to core 0 where
the machine allows; the load generators run on the other core. Ratios are taken within the run,
so they hold on a noisy machine. Results go to stdout and ops/bench/results/latest.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "ops" / "bench" / "results"
PY = sys.executable
BODY = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}]}

UPSTREAM = r"""
import asyncio, json, sys
from aiohttp import web
latency = float(sys.argv[1]) / 1000
chunks = int(sys.argv[2])
ANSWER = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).encode()
def chunk(text, finish=None):
    return ("data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}) + "\n\n").encode()
async def handle(request):
    body = await request.json()
    if latency:
        await asyncio.sleep(latency)
    if not body.get("stream"):
        return web.Response(body=ANSWER, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(chunks):
        await response.write(chunk(f"w{i} "))
    await response.write(chunk("", "stop"))
    await response.write(b"data: [DONE]\n\n")
    return response
async def main():
    app = web.Application(); app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print(runner.addresses[0][1], flush=True); await asyncio.Event().wait()
try:
    import uvloop; uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""

FLOOR = r"""
import asyncio, sys, aiohttp
from aiohttp import web
UP = sys.argv[1]
async def main():
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async def handle(request):
        body = await request.read()
        async with session.post(UP, data=body, headers={"Content-Type": "application/json"}) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": upstream.headers.get("Content-Type", "application/json")})
            await response.prepare(request)
            async for data in upstream.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response
    app = web.Application(); app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print(runner.addresses[0][1], flush=True); await asyncio.Event().wait()
try:
    import uvloop; uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


def _pin(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)]
    return []


@dataclass
class Proc:
    process: subprocess.Popen[str]
    port: int

    def rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_script(code: str, *args: str, core: int = 0) -> Proc:
    process = subprocess.Popen(
        [*_pin(core), PY, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return Proc(process, int(process.stdout.readline()))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sidecar(config: Path, core: int = 0, telemetry: bool = False) -> Proc:
    """`python -m router serve` on a free port, ready when /healthz answers."""
    import urllib.request

    env = {
        **os.environ,
        "ROUTER_LOG_LEVEL": "info" if telemetry else "warning",
        "ROUTER_CONFIG": str(config),
    }
    if telemetry:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = (
            "http://127.0.0.1:9"  # nothing listens: export fails in the background
        )
    port = _free_port()
    process = subprocess.Popen(
        [*_pin(core), PY, "-m", "router", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return Proc(process, port)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the sidecar did not start")


def sidecar_config(directory: Path, upstream_port: int, dead_port: int | None = None) -> Path:
    providers = f"""  up:
    protocol: openai
    base_url: http://127.0.0.1:{upstream_port}/v1
    allow_http: true
    region: us
    max_inflight: 4096"""
    models = """  m:
    provider: up
    upstream_id: m
    vendor: V
    origin: us
    tier: budget
    context_window: 100000
    price: {input_per_mtok: 1, output_per_mtok: 1}"""
    routes = ""
    if dead_port is not None:
        providers += f"""
  dead:
    protocol: openai
    base_url: http://127.0.0.1:{dead_port}/v1
    allow_http: true
    region: us
    breaker: {{reset_timeout_s: 60}}"""
        models += """
  m-dead:
    provider: dead
    upstream_id: m
    vendor: D
    origin: us
    tier: budget
    context_window: 100000
    price: {input_per_mtok: 1, output_per_mtok: 1}"""
        routes = "routes:\n  failover: [m-dead, m]\n"
    path = directory / f"router-{upstream_port}-{dead_port}.yaml"
    path.write_text(
        f"jurisdiction: us\npolicies: {ROOT / 'policies'}\nserver: {{max_inflight: 4096}}\n"
        f"providers:\n{providers}\nmodels:\n{models}\n{routes}"
    )
    return path


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return (
            ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000
            if ordered
            else float("nan")
        )


async def closed_loop(
    url: str, body: dict[str, Any], concurrency: int, seconds: float, stream: bool = False
) -> tuple[float, Latencies]:
    """Requests/s and latencies (time to first token when streaming) from `concurrency` workers."""
    lat = Latencies()
    done = 0
    payload = {**body, "stream": stream}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                started = time.perf_counter()
                async with http.post(url, json=payload) as response:
                    if stream:
                        async for line in response.content:
                            if line.startswith(b"data: {") and b"w0 " in line:
                                lat.samples.append(time.perf_counter() - started)
                                break
                        await response.read()
                    else:
                        await response.read()
                        lat.samples.append(time.perf_counter() - started)
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status} from {url}")
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds, lat


def wrk(url: str, connections: int, seconds: float) -> float | None:
    """Requests/s from wrk (Debian's package), POSTing the body; None when wrk is absent."""
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{json.dumps(BODY)}]]\n"
        )
    result = subprocess.run(
        [
            *_pin(1),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 30,
    )
    os.unlink(script.name)
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    return float(match.group(1)) if match else None


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


async def fusion_overhead(seconds: float) -> dict[str, float]:
    """Fusion latency minus the critical path, on the embedded default's simulated providers."""
    from aiohttp import web

    from router import logs
    from router.app import create_app
    from router.config import load_config

    logs.configure("error")
    loaded = load_config(None)
    sims = {name: p.sim for name, p in loaded.config.providers.items()}
    models = loaded.config.models
    panel = loaded.config.panels["budget"]

    def latency(model: str) -> float:
        profile = sims[models[model].provider]
        return profile.latency_ms if profile else 0.0

    critical = (
        max(latency(m) for m in panel.panelists)
        + latency(panel.judges[0])
        + latency(panel.synthesizers[0])
    )
    app = create_app(loaded, environ={})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        body = {
            "model": "fusion/budget",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        }
        _rps, lat = await closed_loop(url(runner.addresses[0][1]), body, 1, seconds)
    finally:
        await runner.cleanup()
    return {
        "critical_path_ms": critical,
        "p50_ms": lat.pct(0.5),
        "overhead_ms": lat.pct(0.5) - critical,
    }


async def failover_cost(sidecar: Proc, requests: int) -> dict[str, float]:
    """Attempts that reach a dead provider first in a route, and when traffic stops touching it."""
    dead_attempts, first_clean = 0, None
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        for i in range(requests):
            async with http.post(url(sidecar.port), json={**BODY, "model": "failover"}) as response:
                await response.read()
                attempted = response.headers.get("X-Router-Attempted", "").split(",")
                dead_attempts += attempted.count("dead")
                if "dead" not in attempted and first_clean is None:
                    first_clean = (time.perf_counter() - started) * 1000
                if response.status != 200:
                    raise RuntimeError(f"failover request {i} got HTTP {response.status}")
    return {
        "requests": requests,
        "dead_attempts": dead_attempts,
        "ms_until_clean": first_clean or float("nan"),
    }


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


async def run(quick: bool) -> dict[str, Any]:
    secs = 1.5 if quick else 6.0
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="fusion-bench-"))
    up0 = start_script(UPSTREAM, "0", "20", core=1)
    up50 = start_script(UPSTREAM, "50", "20", core=1)
    floor0 = start_script(FLOOR, url(up0.port), core=0)
    floor50 = start_script(FLOOR, url(up50.port), core=0)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    side0 = start_sidecar(sidecar_config(tmp, up0.port, dead_port), core=0)
    side50 = start_sidecar(sidecar_config(tmp, up50.port), core=0)
    procs = [up0, up50, floor0, floor50, side0, side50]
    try:
        await asyncio.sleep(0.5)
        idle_rss = side0.rss_mib()
        for target in (up0, floor0, side0):  # warm up
            await closed_loop(url(target.port), BODY, 4, 0.3)

        _r, direct = await closed_loop(url(up0.port), BODY, 1, secs)
        _r, floor = await closed_loop(url(floor0.port), BODY, 1, secs)
        _r, side = await closed_loop(url(side0.port), BODY, 1, secs)
        rows.append(
            {
                "phase": "1 in flight: added p50 over direct (ms)",
                "floor": floor.pct(0.5) - direct.pct(0.5),
                "sidecar": side.pct(0.5) - direct.pct(0.5),
                "target": "< 0.5",
                "pass": side.pct(0.5) - direct.pct(0.5) < 0.5,
            }
        )
        rows.append(
            {
                "phase": "1 in flight: added p99 over direct (ms)",
                "floor": floor.pct(0.99) - direct.pct(0.99),
                "sidecar": side.pct(0.99) - direct.pct(0.99),
                "target": "< 2",
                "pass": side.pct(0.99) - direct.pct(0.99) < 2,
            }
        )

        floor_rps, floor_lat = await closed_loop(url(floor50.port), BODY, 32, secs)
        side_rps, side_lat = await closed_loop(url(side50.port), BODY, 32, secs)
        rows.append(
            {
                "phase": "32 in flight, 50 ms upstream: req/s",
                "floor": floor_rps,
                "sidecar": side_rps,
                "target": "ratio ≥ 0.95",
                "pass": side_rps / floor_rps >= 0.95,
            }
        )
        rows.append(
            {
                "phase": "32 in flight, 50 ms upstream: p99 (ms)",
                "floor": floor_lat.pct(0.99),
                "sidecar": side_lat.pct(0.99),
                "target": "-",
                "pass": None,
            }
        )

        floor_max = wrk(url(floor0.port), 128, secs)
        side_max = wrk(url(side0.port), 128, secs)
        tool = "wrk"
        if floor_max is None or side_max is None:
            tool = "python client"
            floor_max, _ = await closed_loop(url(floor0.port), BODY, 128, secs)
            side_max, _ = await closed_loop(url(side0.port), BODY, 128, secs)
        rows.append(
            {
                "phase": f"128 in flight ({tool}): max req/s",
                "floor": floor_max,
                "sidecar": side_max,
                "target": "sidecar/floor ≥ 0.40",
                "pass": side_max / floor_max >= 0.40,
                "ratio": side_max / floor_max,
            }
        )

        _r, direct_ttft = await closed_loop(url(up0.port), BODY, 1, secs, stream=True)
        _r, floor_ttft = await closed_loop(url(floor0.port), BODY, 1, secs, stream=True)
        _r, side_ttft = await closed_loop(url(side0.port), BODY, 1, secs, stream=True)
        added = side_ttft.pct(0.5) - direct_ttft.pct(0.5)
        rows.append(
            {
                "phase": "streaming: added time to first token, p50 (ms)",
                "floor": floor_ttft.pct(0.5) - direct_ttft.pct(0.5),
                "sidecar": added,
                "target": "< 1",
                "pass": added < 1,
            }
        )

        rows.append(
            {
                "phase": "idle RSS (MiB)",
                "floor": floor0.rss_mib(),
                "sidecar": idle_rss,
                "target": "< 60",
                "pass": idle_rss < 60,
            }
        )
        rows.append(
            {
                "phase": "RSS after load (MiB)",
                "floor": floor0.rss_mib(),
                "sidecar": side0.rss_mib(),
                "target": "-",
                "pass": None,
            }
        )

        side_tel = start_sidecar(sidecar_config(tmp, up0.port), core=0, telemetry=True)
        procs.append(side_tel)
        await closed_loop(url(side_tel.port), BODY, 4, 0.3)
        _r, tel = await closed_loop(url(side_tel.port), BODY, 1, secs)
        rows.append(
            {
                "phase": "telemetry on (info logs, spans exported): added p50 (ms)",
                "floor": floor.pct(0.5) - direct.pct(0.5),
                "sidecar": tel.pct(0.5) - direct.pct(0.5),
                "target": "-",
                "pass": None,
            }
        )

        fusion = await fusion_overhead(secs)
        rows.append(
            {
                "phase": f"fusion/budget: latency minus critical path {fusion['critical_path_ms']:.0f} ms (ms)",
                "floor": None,
                "sidecar": fusion["overhead_ms"],
                "target": "< 5",
                "pass": fusion["overhead_ms"] < 5,
            }
        )

        failover = await failover_cost(side0, 20 if quick else 100)
        rows.append(
            {
                "phase": f"failover: attempts on a dead provider over {failover['requests']} requests",
                "floor": None,
                "sidecar": failover["dead_attempts"],
                "target": "≤ 5",
                "pass": failover["dead_attempts"] <= 5,
            }
        )
        rows.append(
            {
                "phase": "failover: ms until traffic stops touching it",
                "floor": None,
                "sidecar": failover["ms_until_clean"],
                "target": "-",
                "pass": None,
            }
        )
    finally:
        for proc in procs:
            proc.stop()
    return {
        "machine": machine(),
        "command": " ".join(["python", "ops/bench/run.py", *(["--quick"] if quick else [])]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:,.2f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}  ",
        f"Command: `{result['command']}` ({result['when']})",
        "",
        "| phase | floor (bare aiohttp) | sidecar | target | holds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        holds = "-" if row["pass"] is None else ("yes" if row["pass"] else "NO")
        lines.append(
            f"| {row['phase']} | {fmt(row['floor'])} | {fmt(row['sidecar'])} | {row['target']} | {holds} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds per run (smoke test)")
    args = parser.parse_args()
    result = asyncio.run(run(args.quick))
    table = markdown(result)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(table)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
