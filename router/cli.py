"""The command line: `serve`, `check`, `demo` (and `python -m router` is the same program)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from router import __version__, logs
from router.app import create_app
from router.catalog import Catalog
from router.config import LoadedConfig, load_config
from router.demo import run_demo
from router.errors import ConfigError, RouterError
from router.explain import explain, render_text
from router.policy_loader import PolicyStore, check_policy_dir
from router.policy_view import PolicyView
from router.state import SERVICES


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
    """Run the sidecar until SIGTERM/SIGINT, then drain in-flight requests."""
    logs.configure(os.environ.get("ROUTER_LOG_LEVEL", "info"))
    log = logs.get_logger()
    try:
        loaded = _load(_config_path(args.config))
        host = args.host or os.environ.get("ROUTER_HOST") or loaded.config.server.host
        port = (
            args.port
            if args.port is not None
            else int(os.environ.get("ROUTER_PORT") or loaded.config.server.port)
        )
        app = create_app(loaded, host=host)
    except ConfigError as exc:
        _print_problems(exc)
        log.error("config.invalid", problems=[str(p) for p in exc.problems])
        return 2
    if loaded.embedded:
        log.warning(
            "config.embedded_default",
            message="NO CONFIG GIVEN: serving the EMBEDDED DEFAULT (simulated providers, example prices). "
            "Pass --config or set ROUTER_CONFIG for real providers.",
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "server.public_bind",
            host=host,
            message="binding beyond loopback; set server.auth_token_env",
        )
    coroutine = _serve(app, host, port, loaded.config.server.shutdown_grace_s, loaded)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
    log.info("server.stopped")
    return 0


async def _serve(
    app: web.Application, host: str, port: int, grace_s: float, loaded: LoadedConfig
) -> None:
    """Listen until SIGTERM/SIGINT; then stop accepting, drain in-flight requests (bounded), close."""
    log = logs.get_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = app[SERVICES].policy

    def reload_policies() -> None:
        result = store.reload()
        log.info("policy.reload_requested", trigger="SIGHUP", ok=result.ok, changed=result.changed)

    loop.add_signal_handler(signal.SIGHUP, reload_policies)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=grace_s
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=grace_s)
        await site.start()
        # Everything built so far lives as long as the process: move it out of the collector's
        # sight, so a full collection scans only what requests left behind (short pauses).
        gc.collect()
        gc.freeze()
        log.info(
            "server.listening",
            addresses=[f"{a[0]}:{a[1]}" for a in runner.addresses],
            port=runner.addresses[0][1] if runner.addresses else port,
            config=loaded.source,
            jurisdiction=loaded.config.jurisdiction,
            version=__version__,
        )
        await stop.wait()
        log.info("server.draining", grace_s=grace_s)
    finally:
        await runner.cleanup()


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
