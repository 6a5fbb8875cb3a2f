"""The command line: `serve`, `check`, `explain`, `demo`, `mcp`, `eval` (and `python -m router` is the same program)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from router import __version__, logs, native
from router.app import create_app
from router.catalog import Catalog
from router.config import LoadedConfig, load_config
from router.demo import run_demo
from router.errors import ConfigError, RouterError, ShuttingDown
from router.eval.dataset import DEFAULT_GRADER
from router.explain import explain, render_text
from router.policy_loader import PolicyStore, check_policy_dir
from router.policy_view import PolicyView
from router.server_limits import (
    BIND_FIX,
    KEEPALIVE_TIMEOUT_S,
    InboundLimits,
    bind_refusal,
    is_loopback,
    shutdown_budget,
)
from router.sidecar_token import token_from_env
from router.state import SERVICES

_BACKLOG = 128  # the listener's accept queue (aiohttp's TCPSite default)
# The collector's young-generation threshold while serving (CPython's default is 700). With a
# hundred requests in flight, their live objects alone pass 700 between two requests, so the
# collector ran every few requests, traversing all of them each time: 14-52 µs a request at 128
# in flight, the most with every span exported (each span's objects count too), for no garbage
# (a served request leaves no reference cycles: `tests/test_gc.py`). At 10,000 the live objects
# of 128 traced requests still crossed it (2-7 µs a request); at 20,000 it runs about once in
# two seconds there, pausing at most 6.4 ms, less than a full collection did at the default
# (11.7 ms) (ops/bench/README.md, issue 20).
_GC_YOUNG_THRESHOLD = 20_000


def _config_path(arg: str | None) -> str | None:
    return arg or os.environ.get("ROUTER_CONFIG") or None


def _print_problems(error: ConfigError, stream: object = sys.stderr) -> None:
    for problem in error.problems:
        print(f"{problem.severity}: {problem}", file=stream)  # type: ignore[call-overload]


def _load(path: str | None) -> LoadedConfig:
    loaded = load_config(path)
    jurisdiction = os.environ.get("ROUTER_JURISDICTION")
    if jurisdiction:
        config = loaded.config.model_copy(update={"jurisdiction": jurisdiction.strip().lower()})
        loaded = loaded.model_copy(update={"config": config})
    return loaded


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM/SIGINT, then drain in-flight requests (bounded)."""
    logs.configure(os.environ.get("ROUTER_LOG_LEVEL", "info"))
    log = logs.get_logger()
    try:
        loaded = _load(_config_path(args.config))
        server = loaded.config.server
        host = args.host or os.environ.get("ROUTER_HOST") or server.host
        port = (
            args.port
            if args.port is not None
            else int(os.environ.get("ROUTER_PORT") or server.port)
        )
        token = server.auth_token_env is not None
        trusted = bool(args.trusted_network) or server.trusted_network
        refusal = bind_refusal(host, token=token, trusted=trusted)
        if refusal is not None:  # before anything is built or bound
            log.error("server.refused", host=host, reason=refusal, fix=BIND_FIX)
            return 2  # (`serve` writes JSON lines only: the reason and the fix are in this one)
        app = create_app(loaded, host=host)
    except ConfigError as exc:
        log.error("config.invalid", problems=[str(p) for p in exc.problems])
        return 2
    if loaded.embedded:
        log.warning(
            "config.embedded_default",
            message="NO CONFIG GIVEN: serving the EMBEDDED DEFAULT (simulated providers, example prices). "
            "Pass --config or set ROUTER_CONFIG for real providers.",
        )
    if not is_loopback(host) and not token:  # (trusted: `bind_refusal` let it through)
        log.warning(
            "server.public_bind",
            host=host,
            trusted_network=True,
            message="serving beyond loopback WITHOUT a token, as the network is said to be "
            "trusted; set server.auth_token_env to require one",
        )
    coroutine = _serve(app, host, port, loaded)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        stopped = asyncio.run(coroutine)
    else:
        stopped = uvloop.run(coroutine)
    log.info(
        "server.stopped",
        took_s=round(time.monotonic() - stopped.signalled, 3) if stopped.signalled else None,
        grace_s=server.shutdown_grace_s,
        drained=stopped.drained,
        cut=stopped.cut,
        closed_in_time=stopped.closed_in_time,
    )
    return 0


@dataclass(slots=True)
class _Stopped:
    """How the shutdown went, for the `server.stopped` line."""

    signalled: float | None = None  # time.monotonic() at SIGTERM/SIGINT
    drained: int = 0  # chat requests that finished within the drain
    cut: int = 0  # chat requests still running when it ended: answered 503 `shutting_down`
    closed_in_time: bool = True  # connections and the app closed within the grace


async def _serve(app: web.Application, host: str, port: int, loaded: LoadedConfig) -> _Stopped:
    """Listen until SIGTERM/SIGINT; then stop accepting, drain in-flight requests, cut what is
    left with a 503, close: all within `server.shutdown_grace_s` of the signal."""
    log = logs.get_logger()
    config = loaded.config.server
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    services = app[SERVICES]
    store = services.policy

    def reload_policies() -> None:
        result = store.reload()
        log.info("policy.reload_requested", trigger="SIGHUP", ok=result.ok, changed=result.changed)

    loop.add_signal_handler(signal.SIGHUP, reload_policies)
    drain_s, answer_s, close_s = shutdown_budget(config.shutdown_grace_s)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT_S,
        shutdown_timeout=close_s / 4,  # only what is still running at the very end waits for it
    )
    await runner.setup()
    stopped = _Stopped()
    listener: asyncio.Server | None = None
    try:
        if runner.server is None:  # pragma: no cover - `setup` made it
            raise RuntimeError("the runner has no server after setup")
        limits = InboundLimits(
            runner.server,
            head_timeout_s=config.head_timeout_s,
            max_connections=config.max_connections,
            metrics=services.metrics,
        )
        listener = await loop.create_server(limits, host or None, port, backlog=_BACKLOG)
        addresses = [sock.getsockname() for sock in listener.sockets]
        # Everything built so far lives as long as the process: move it out of the collector's
        # sight, so a full collection scans only what requests left behind (short pauses).
        gc.collect()
        gc.freeze()
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        log.info(
            "server.listening",
            addresses=[f"{a[0]}:{a[1]}" for a in addresses],
            port=addresses[0][1] if addresses else port,
            config=loaded.source,
            jurisdiction=loaded.config.jurisdiction,
            version=__version__,
            span_modules=native.current_status().reason,  # "compiled", or why the source runs
        )
        await stop.wait()
        stopped.signalled = started = time.monotonic()
        runtime = services.runtime
        listener.close()  # no new connections; open ones get 503 `shutting_down` for new requests
        runtime.draining = True
        running = set(runtime.requests)
        log.info(
            "server.draining",
            grace_s=config.shutdown_grace_s,
            inflight=len(running),
            connections=limits.open,
        )
        if running:
            await asyncio.wait(running, timeout=max(0.0, started + drain_s - time.monotonic()))
        left = [task for task in runtime.requests if not task.done()]
        stopped.drained, stopped.cut = len(running) - len(left), len(left)
        for task in left:  # each still gets its answer (503, or an in-band error) and its line
            task.cancel(msg=ShuttingDown.CANCEL_MESSAGE)
        if left:
            await asyncio.wait(left, timeout=answer_s)
    finally:
        if listener is not None:
            listener.close()  # (already, unless something failed before the signal)
        end = (stopped.signalled or time.monotonic()) + config.shutdown_grace_s
        try:
            async with asyncio.timeout(max(end - time.monotonic(), close_s / 2)):
                await runner.cleanup()
        except TimeoutError:
            stopped.closed_in_time = False
    return stopped


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config; print every problem; non-zero exit if any is an error."""
    path = _config_path(args.config)
    try:
        loaded = _load(path)
    except ConfigError as exc:
        _print_problems(exc, sys.stdout)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stdout)
        return 1
    config = loaded.config
    catalog = Catalog.from_config(config)
    problems = check_policy_dir(loaded.policies_dir, catalog.models, required=[config.jurisdiction])
    errors = [p for p in problems if p.severity == "error"]
    for problem in [*loaded.warnings, *problems]:
        print(f"{problem.severity}: {problem}")
    if errors:
        print(f"{len(errors)} problem(s) found")
        return 1
    print(
        f"ok: {loaded.source}: {len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.routes)} routes, {len(config.panels)} panels; jurisdiction {config.jurisdiction}"
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the plan and every decision for a model, route or panel; call nothing."""
    try:
        loaded = _load(_config_path(args.config))
        catalog = Catalog.from_config(loaded.config)
        store = PolicyStore(
            loaded.policies_dir, catalog.models, required=[loaded.config.jurisdiction]
        )
        view = PolicyView.for_request(
            store, loaded.config.jurisdiction, args.jurisdiction, catalog.models
        )
        result = explain(args.model, catalog, view)
    except ConfigError as exc:
        _print_problems(exc)
        return 2
    except RouterError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else render_text(result))
    return 0


def cmd_demo(_args: argparse.Namespace) -> int:
    """Run the demo on the embedded default."""
    return asyncio.run(run_demo(sys.stdout))


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve Fusion as MCP tools on stdin/stdout, forwarding to a running sidecar.

    stdout carries the protocol only: the JSON log lines go to stderr."""
    logs.configure(os.environ.get("ROUTER_LOG_LEVEL", "warning"), json=True, stream=sys.stderr)
    from router import mcp_server  # deferred: the MCP SDK is loaded by this command only

    try:
        asyncio.run(mcp_server.serve_stdio(args.url, token_from_env()))
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Ask a dataset of the targets through a sidecar (in-process, or `--url`); grade, report."""
    from router.eval.command import EvalOptions, run_eval  # deferred: matplotlib loads here only

    options = EvalOptions(
        dataset=args.dataset,
        example=args.example,
        targets=args.targets,
        grader=args.grader,
        url=args.url,
        config=args.config,
        out=args.out,
        concurrency=args.concurrency,
        limit=args.limit,
        repeats=args.repeats,
    )

    def load() -> LoadedConfig:  # for the in-process sidecar, which logs errors only, on stderr
        logs.configure("error", json=True, stream=sys.stderr)
        return _load(_config_path(args.config))

    try:
        return run_eval(options, load, sys.stdout, sys.stderr)
    except ConfigError as exc:
        _print_problems(exc)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-router", description="An OpenAI-compatible LLM routing sidecar."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument(
        "--config", help="config file (default: $ROUTER_CONFIG, else the embedded default)"
    )
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument(
        "--trusted-network",
        action="store_true",
        help="serve beyond loopback without a token (as server.trusted_network: true)",
    )
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate the config and policies")
    check.add_argument(
        "--config", help="config file (default: $ROUTER_CONFIG, else the embedded default)"
    )
    check.set_defaults(func=cmd_check)
    explain_cmd = sub.add_parser("explain", help="show the plan and policy decisions for a model")
    explain_cmd.add_argument(
        "--model", required=True, help="catalog model, route or fusion/<panel>"
    )
    explain_cmd.add_argument(
        "--jurisdiction", help="extra jurisdiction(s) to narrow by, comma separated"
    )
    explain_cmd.add_argument(
        "--config", help="config file (default: $ROUTER_CONFIG, else the embedded default)"
    )
    explain_cmd.add_argument("--json", action="store_true", help="print JSON")
    explain_cmd.set_defaults(func=cmd_explain)
    demo = sub.add_parser("demo", help="show routed requests on the embedded default")
    demo.set_defaults(func=cmd_demo)
    mcp = sub.add_parser(
        "mcp", help="serve Fusion as MCP tools on stdio, forwarding to a running sidecar"
    )
    mcp.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="the sidecar's base URL (default http://127.0.0.1:8080); token from $ROUTER_TOKEN",
    )
    mcp.set_defaults(func=cmd_mcp)
    eval_cmd = sub.add_parser(
        "eval",
        help="ask a JSONL dataset of models, routes and panels; grade; report score and cost",
        description="Every call goes through the sidecar's POST /v1/chat/completions. Targets: "
        "catalog models, routes, fusion/<panel>, or inline panels fusion:{JSON} "
        "(NAME=TARGET labels one). See docs/eval.md.",
    )
    eval_cmd.add_argument("dataset", nargs="?", help="JSONL dataset (or --example)")
    eval_cmd.add_argument(
        "--example", action="store_true", help="the shipped example dataset (research questions)"
    )
    eval_cmd.add_argument(
        "--targets", required=True, help="comma-separated targets, e.g. gpt-5.5,fusion/budget"
    )
    eval_cmd.add_argument(
        "--grader",
        default=DEFAULT_GRADER,
        help=f"the model that grades rubric items (default {DEFAULT_GRADER})",
    )
    eval_cmd.add_argument(
        "--url",
        help="a running sidecar's base URL (token from $ROUTER_TOKEN); default: start one "
        "in this process",
    )
    eval_cmd.add_argument(
        "--config",
        help="config for the in-process sidecar (default: $ROUTER_CONFIG, else the embedded "
        "default); with --url, the sidecar's config, to tell simulated providers",
    )
    eval_cmd.add_argument(
        "--out", help="output folder (default eval-<UTC timestamp>); reused: resume"
    )
    eval_cmd.add_argument("--concurrency", type=int, default=4, help="calls at a time (default 4)")
    eval_cmd.add_argument("--limit", type=int, help="the first N items only")
    eval_cmd.add_argument(
        "--repeats", type=int, default=1, help="ask each item N times (default 1)"
    )
    eval_cmd.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
