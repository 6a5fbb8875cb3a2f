"""A/B: this tree's sidecar against other commits' (or copies'), beside the floor, in one run.

    python -m ops.bench.ab --base REF [--seconds 20] [--stream]
    python -m ops.bench.ab --base-tree DIR ...
    python -m ops.bench.ab --base-tree cut1=DIR1 --base-tree cut2=DIR2 ...
    python -m ops.bench.ab --base REF --load [--traced all|ratio] [--rounds 4] [--seconds 10]
    python -m ops.bench.ab --base REF --instructions [--traced ratio] [--requests 2000]

Each other commit is checked out into a temporary `git worktree` (a DIR is taken as it is: another
copy of the project, for example one with a layer cut out) and its sidecar started from there
(same interpreter, same installed dependencies, same generated config), so they differ only by
their code. Direct, floor, the bases and this tree's sidecar then take one request at a time in a
fresh random order every round, as phase 1 of the benchmark does; the table shows each one's p50
and p99 (time to first token with `--stream`), what it adds over direct, and its CPU per request.
It is how each tuning step's effect was measured; several copies, each with one more layer of the
request path cut out, give that path's cost layer by layer in one run (an ablation ladder).

`--load` compares throughput instead: every target (the floor, the bases, this tree) runs as
`--copies` processes (2: each process's own hash seed and memory layout move it a few per cent)
side by side on the server core, all loaded at once by wrk (128 connections shared out), for
`--rounds` rounds of `--seconds`. Sharing one core, each target's requests per second measure
its CPU cost per request while the machine's drift hits all of them alike: the median of the
per-round ratios to the floor repeats within about one per cent from run to run, where
throughput measured one after another on a shared VM moves by tens of per cent. The sidecars
log at `info` (as the benchmark's throughput phase); `--traced all` exports every span to the
fake upstream (an OTLP sink), `--traced ratio` 10% of traces, `--traced unsampled` configures
the export and samples nothing.

`--instructions` counts instead of timing: each target runs alone under valgrind's callgrind
(with its cache simulation), takes `--requests` requests four at a time after a warm-up, and
the table shows the instructions it executed per request (every thread) and its simulated
first-level cache misses. Counts repeat within about half a per cent from run to run, where
time on a shared VM moves by several per cent: it settles effects of a per cent or two that
timing cannot, and says nothing about what a real CPU's caches and the machine add to them.
Under callgrind a process runs some 50 times slower, so the span exporter's 200 ms flush
is stretched to 10 s to send about as often per request as at full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ops.bench import client
from ops.bench.harness import (
    MODEL,
    PY,
    ROOT,
    _clean_env,
    _closed_port,
    _wait_ready,
    connections_each,
    loaded_at_once,
    sidecar_yaml,
)
from ops.bench.procs import Cores, Proc, pin, spawn

STREAM_CHUNKS, STREAM_CHUNK_MS = "8", "1"


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """`ref` checked out in a temporary worktree, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fusion-ab-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(path), ref], cwd=ROOT, check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def _sidecar_from(tree: Path, config: Path) -> list[str]:
    """argv running the sidecar of `tree` (its `router` package ahead of the installed one)."""
    bootstrap = (
        "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
        "runpy.run_module('router', run_name='__main__', alter_sys=True)"
    )
    return [PY, "-c", bootstrap, str(tree), "serve", "--config", str(config), "--port", "0"]


def _prepared(
    stack: ExitStack, bases: Sequence[tuple[str, str, Path | None]]
) -> tuple[Cores, Path, int, dict[str, Path]]:
    """What a run needs: the cores (this process pinned to the load core), a log folder, a
    closed port (the config's dead provider, held by `stack`) and each base's project copy (its
    DIR, or its ref checked out for the run and removed with `stack`)."""
    cores = Cores.plan()
    pin(0, cores.load)
    logdir = Path(tempfile.mkdtemp(prefix="fusion-ab-logs-"))
    dead = stack.enter_context(_closed_port())
    trees = {
        name: tree if tree is not None else stack.enter_context(worktree(ref))
        for name, ref, tree in bases
    }
    return cores, logdir, dead.getsockname()[1], trees


async def run(
    bases: Sequence[tuple[str, str, Path | None]],
    seconds: float,
    stream: bool,
    pause_s: float = 0.0,
) -> str:
    """The A/B table (markdown) of `bases`: (name, git ref or label, the project copy or None)."""
    procs: dict[str, Proc] = {}
    with ExitStack() as stack:
        cores, logdir, dead_port, trees = _prepared(stack, bases)
        try:
            upstream_args = ["--latency-ms", "0", "--chunks", STREAM_CHUNKS]
            upstream_args += ["--chunk-ms", STREAM_CHUNK_MS]
            up = spawn(
                "upstream", [PY, "-m", "ops.bench.upstream", *upstream_args], logdir, cores.upstream
            ).wait()
            procs["direct"] = up
            config = logdir / "router.yaml"
            config.write_text(sidecar_yaml(up, up, up, dead_port, ROOT / "policies"))
            env = _clean_env(ROUTER_LOG_LEVEL="warning")
            procs["floor"] = spawn(
                "floor", [PY, "-m", "ops.bench.floor", "--upstream", up.base], logdir, cores.server
            ).wait()
            for number, (name, tree) in enumerate(trees.items()):
                procs[name] = spawn(  # (logs as base-N.log: a name may hold a slash)
                    f"base-{number}", _sidecar_from(tree, config), logdir, cores.server, env=env
                ).wait()
            procs["this tree"] = spawn(
                "sidecar",
                [PY, "-m", "router", "serve", "--config", str(config), "--port", "0"],
                logdir,
                cores.server,
                env=env,
            ).wait()
            for name in [*trees, "this tree"]:
                await _wait_ready(procs[name], "/readyz")
            payload = client.body(MODEL, stream=stream)
            for proc in procs.values():  # warm up
                await client.closed_loop(proc.chat_url, payload, 1, 0.5, stream=stream)
            cpu_before = {name: proc.cpu_s() for name, proc in procs.items()}
            samples = await client.interleaved(
                {name: (proc.chat_url, payload) for name, proc in procs.items()},
                seconds,
                stream=stream,
                pause_s=pause_s,
            )
            cpu = {name: proc.cpu_s() - cpu_before[name] for name, proc in procs.items()}
        finally:
            for proc in procs.values():
                proc.stop()
    what = "time to first token" if stream else "latency"
    direct = samples["direct"]
    against = ", ".join(f"{name} = {ref}" for name, ref, _ in bases)
    lines = [
        f"A/B at 1 in flight, interleaved, {what} ({against}; {direct.requests} requests each)",
        "",
        "| target | p50 ms | p99 ms | added p50 ms | CPU per request ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, sample in samples.items():
        added = sample.p(0.5) - direct.p(0.5)
        per_request = cpu[name] * 1000 / sample.requests if sample.requests else float("nan")
        cpu_cell = "-" if name == "direct" else f"{per_request:.3f}"  # the fake serves them all
        lines.append(
            f"| {name} | {sample.p(0.5):.3f} | {sample.p(0.99):.3f} | {added:+.3f} | {cpu_cell} |"
        )
        if sample.errors:
            lines.append(f"|   ({name}: {sample.errors} errors, first: {sample.first_error}) |")
    return "\n".join(lines)


TRACED_ENV = {
    "off": {},
    "all": {"OTEL_SERVICE_NAME": "fusion-router-bench"},
    "ratio": {
        "OTEL_SERVICE_NAME": "fusion-router-bench",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "unsampled": {"OTEL_SERVICE_NAME": "fusion-router-bench", "OTEL_TRACES_SAMPLER": "always_off"},
}
CALLGRIND_SLOWDOWN = 50  # about how much slower a process runs under callgrind
WARM_UP_REQUESTS = 300


def callgrind_totals(path: Path) -> dict[str, int]:
    """The event totals (`Ir`, `I1mr`, ...) of every callgrind dump `path` names (the dump
    files `path`, `path.1`, ...), summed."""
    totals: dict[str, int] = {}
    dumps = [
        f for f in path.parent.iterdir() if re.fullmatch(rf"{re.escape(path.name)}(\.\d+)?", f.name)
    ]
    for dump in sorted(dumps):
        events: list[str] = []
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:") and events:
                for event, count in zip(events, line.split()[1:], strict=False):
                    totals[event] = totals.get(event, 0) + int(count)
                break
    return totals


async def _callgrind_control(proc: Proc, action: str) -> None:
    """`callgrind_control ACTION` for the callgrind run of `proc`."""
    control = await asyncio.create_subprocess_exec(
        "callgrind_control", action, str(proc.process.pid), stdout=subprocess.DEVNULL
    )
    if await control.wait() != 0:
        raise SystemExit(f"ops.bench.ab: callgrind_control {action} failed")


async def _counted_requests(
    argv: Sequence[str], name: str, logdir: Path, env: dict[str, str], requests: int
) -> tuple[int, dict[str, int]]:
    """The sidecar `argv` under callgrind, instrumented only for `requests` requests (after a
    warm-up): how many answered, and the events counted."""
    out = logdir / f"callgrind.{name}"
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--cache-sim=yes"]
    command += [f"--callgrind-out-file={out}", *argv]
    proc = spawn(name, command, logdir, None, env=env).wait(300)
    try:
        await _wait_ready(proc, "/readyz", 300)
        payload = client.body(MODEL)
        await client.closed_loop(proc.chat_url, payload, 4, 600, max_requests=WARM_UP_REQUESTS)
        await _callgrind_control(proc, "--instr=on")
        sample = await client.closed_loop(proc.chat_url, payload, 4, 3600, max_requests=requests)
        await _callgrind_control(proc, "--instr=off")
        await _callgrind_control(proc, "--dump")
    finally:
        proc.stop()
    if sample.errors:
        raise SystemExit(f"ops.bench.ab: {name} answered {sample.errors} requests with errors")
    return sample.requests, callgrind_totals(out)


async def run_instructions(
    bases: Sequence[tuple[str, str, Path | None]], requests: int, traced: str
) -> str:
    """The instructions-per-request table (markdown) of `bases` and this tree."""
    counted: dict[str, tuple[int, dict[str, int]]] = {}
    with ExitStack() as stack:
        _cores, logdir, dead_port, trees = _prepared(stack, bases)
        up = spawn("upstream", [PY, "-m", "ops.bench.upstream", "--latency-ms", "0"], logdir, None)
        stack.callback(up.stop)
        upstream = up.wait()
        config = logdir / "router.yaml"
        config.write_text(sidecar_yaml(upstream, upstream, upstream, dead_port, ROOT / "policies"))
        env = _clean_env(ROUTER_LOG_LEVEL="info", **TRACED_ENV[traced])
        if traced != "off":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = upstream.base
            env["OTEL_BSP_SCHEDULE_DELAY"] = str(200 * CALLGRIND_SLOWDOWN)
        argv = {name: _sidecar_from(tree, config) for name, tree in trees.items()}
        argv["this tree"] = [PY, "-m", "router", "serve", "--config", str(config), "--port", "0"]
        for number, (name, command) in enumerate(argv.items()):
            counted[name] = await _counted_requests(
                command, f"target-{number}", logdir, env, requests
            )
    first = next(iter(counted))
    against = ", ".join(f"{name} = {ref}" for name, ref, _ in bases)
    lines = [
        f"A/B in instructions under callgrind ({against}; {requests} requests each, 4 in "
        f"flight, info logs, spans: {traced})",
        "",
        f"| target | instructions per request | vs {first} | L1 instruction misses per "
        "request | L1 data misses per request |",
        "| --- | --- | --- | --- | --- |",
    ]
    base_ir = counted[first][1].get("Ir", 0) / max(1, counted[first][0])
    for name, (answered, totals) in counted.items():
        per = {event: count / max(1, answered) for event, count in totals.items()}
        versus = per.get("Ir", 0) / base_ir if base_ir else float("nan")
        data_misses = per.get("D1mr", 0) + per.get("D1mw", 0)
        lines.append(
            f"| {name} | {per.get('Ir', 0):,.0f} | {versus:.3f}x | {per.get('I1mr', 0):,.0f} "
            f"| {data_misses:,.0f} |"
        )
    return "\n".join(lines)


async def run_load(
    bases: Sequence[tuple[str, str, Path | None]],
    seconds: int,
    rounds: int,
    copies: int,
    traced: str,
) -> str:
    """The side-by-side throughput table (markdown) of `bases`, the floor and this tree."""
    procs: dict[str, list[Proc]] = {}
    every: list[Proc] = []
    with ExitStack() as stack:
        cores, logdir, dead_port, trees = _prepared(stack, bases)
        try:
            up = spawn(
                "upstream",
                [PY, "-m", "ops.bench.upstream", "--latency-ms", "0"],
                logdir,
                cores.upstream,
            )
            every.append(up)  # (each process stopped at the end whatever happens next)
            up = up.wait()
            config = logdir / "router.yaml"
            config.write_text(sidecar_yaml(up, up, up, dead_port, ROOT / "policies"))
            env = _clean_env(ROUTER_LOG_LEVEL="info", **TRACED_ENV[traced])
            if traced != "off":
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = up.base  # the fake upstream is a sink too
            argv = {"floor": [PY, "-m", "ops.bench.floor", "--upstream", up.base]}
            argv |= {name: _sidecar_from(tree, config) for name, tree in trees.items()}
            argv["this tree"] = [PY, "-m", "router", "serve", "--config", str(config)]
            argv["this tree"] += ["--port", "0"]
            for copy in range(copies):
                for number, (name, command) in enumerate(argv.items()):
                    proc = spawn(
                        f"load-{number}-{copy}",
                        command,
                        logdir,
                        cores.server,
                        env=None if name == "floor" else env,
                    )
                    every.append(proc)
                    procs.setdefault(name, []).append(proc)
            for name, copies_of in procs.items():
                copies_of[:] = [proc.wait() for proc in copies_of]  # (each with its port)
                for proc in copies_of:
                    if name != "floor":
                        await _wait_ready(proc, "/readyz")
                    await client.closed_loop(proc.chat_url, client.body(MODEL), 8, 0.5)
            each = connections_each(sum(len(copies_of) for copies_of in procs.values()))
            together = await loaded_at_once(
                procs, rounds=rounds, seconds=seconds, load_core=cores.load
            )
            rps = {name: [r.rps for r in rs] for name, rs in together.items()}
            cpu_ms = {
                name: [r.cpu_s * 1000 / max(1, r.requests) for r in rs]
                for name, rs in together.items()
            }
            errors = {name: sum(r.errors for r in rs) for name, rs in together.items()}
        finally:
            for proc in every:
                proc.stop()
    against = ", ".join(f"{name} = {ref}" for name, ref, _ in bases)
    lines = [
        f"A/B under load, side by side on one core ({against}; {copies} processes each, "
        f"{each} connections each, {rounds} rounds of {seconds} s, info logs, spans: {traced})",
        "",
        "| target | req/s (median round) | vs floor (median of rounds) | rounds | "
        "CPU per request ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in procs:
        ratios = [a / b for a, b in zip(rps[name], rps["floor"], strict=True)]
        cells = ", ".join(f"{r:.3f}" for r in ratios)
        lines.append(
            f"| {name} | {statistics.median(rps[name]):,.0f} | {statistics.median(ratios):.3f}x "
            f"| {cells} | {statistics.median(cpu_ms[name]):.3f} |"
        )
        if errors[name]:
            lines.append(f"|   ({name}: {errors[name]} non-2xx or socket errors) |")
    return "\n".join(lines)


def _bases(refs: Sequence[str], trees: Sequence[str]) -> list[tuple[str, str, Path | None]]:
    """(name, label, copy) for each `--base` and `--base-tree [NAME=]DIR`; a lone one is "base"."""
    found: list[tuple[str, str, Path | None]] = [(ref, ref, None) for ref in refs]
    for spec in trees:
        name, named, path = spec.partition("=")
        if not named or not name or "/" in name:  # a bare DIR (which may itself hold a "=")
            name, path = spec, spec
        found.append((name, path, Path(path)))
    if len(found) == 1:
        found = [("base", found[0][1], found[0][2])]
    names = [name for name, _, _ in found]
    if len(set(names)) != len(names) or {"direct", "floor", "this tree"} & set(names):
        raise SystemExit(f"ops.bench.ab: base names must be distinct and new: {names}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--base", action="append", default=[], help="a commit (branch, tag) to compare to"
    )
    parser.add_argument(
        "--base-tree",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="another copy of the project to compare to",
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="length of the run (--load: of a round)"
    )
    parser.add_argument("--stream", action="store_true", help="time to first token instead")
    parser.add_argument("--pause-ms", type=float, default=0.0, help="pause between requests")
    parser.add_argument(
        "--load", action="store_true", help="throughput side by side on one core, under wrk"
    )
    parser.add_argument("--rounds", type=int, default=4, help="--load: rounds")
    parser.add_argument("--copies", type=int, default=2, help="--load: processes per target")
    parser.add_argument(
        "--instructions", action="store_true", help="instructions per request, under callgrind"
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="--instructions: requests counted"
    )
    parser.add_argument(
        "--traced",
        choices=sorted(TRACED_ENV),
        default="off",
        help="--load, --instructions: spans exported",
    )
    args = parser.parse_args(argv)
    if not args.base and not args.base_tree:
        parser.error("name at least one --base or --base-tree")
    bases = _bases(args.base, args.base_tree)
    if args.instructions:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            parser.error("--instructions needs valgrind (callgrind) on the PATH")
        if args.load or args.stream or args.pause_ms:
            parser.error("--instructions counts whole answers: no --load, --stream, --pause-ms")
        print(asyncio.run(run_instructions(bases, args.requests, args.traced)))
        return 0
    if args.load:
        if shutil.which("wrk") is None:
            parser.error("--load needs wrk on the PATH")
        if args.stream or args.pause_ms:
            parser.error("--load measures whole answers under load: no --stream, no --pause-ms")
        table = run_load(bases, int(args.seconds), args.rounds, args.copies, args.traced)
        print(asyncio.run(table))
        return 0
    print(asyncio.run(run(bases, args.seconds, args.stream, args.pause_ms / 1000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
