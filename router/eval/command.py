"""`fusion-router eval`: the CLI glue from options to a run, its files and its table."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import aiohttp

from router.config import LoadedConfig
from router.eval import report
from router.eval.dataset import (
    DEFAULT_GRADER,
    EXAMPLE,
    DatasetError,
    Item,
    example_path,
    load_dataset,
)
from router.eval.progress import Progress
from router.eval.results import RESULTS, Result, ResultsFile, read_results
from router.eval.runner import Job, plan_jobs, run_jobs
from router.eval.sidecar import Connection, in_process, remote
from router.eval.targets import FUSION, Target, TargetError, parse_target, parse_targets
from router.sidecar_token import TOKEN_ENV


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """The command's options, as parsed."""

    dataset: str | None
    example: bool
    targets: str
    grader: str = DEFAULT_GRADER
    url: str | None = None
    config: str | None = None  # with --url: the sidecar's config, to tell simulated providers
    out: str | None = None
    concurrency: int = 4
    limit: int | None = None
    repeats: int = 1


@dataclass(frozen=True, slots=True)
class _Run:
    items: list[Item]
    targets: list[Target]
    grader: Target | None
    dataset: str
    out: Path


def _prepare(options: EvalOptions) -> _Run:
    """The run the options describe; raises DatasetError, TargetError or ValueError."""
    if options.example == (options.dataset is not None):
        raise ValueError("give a DATASET file or --example (one of them)")
    for name in ("concurrency", "repeats", "limit"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be at least 1")
    path = example_path() if options.example else Path(str(options.dataset))
    items = load_dataset(path, limit=options.limit)
    targets = parse_targets(options.targets)
    needs_grader = any(i.grading == "rubric" for i in items)
    grader = parse_target(options.grader) if needs_grader and options.grader else None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(options.out or f"eval-{stamp}")
    return _Run(items, targets, grader, EXAMPLE if options.example else str(path), out)


class PreflightError(Exception):
    """The sidecar cannot run this eval: unreachable, refusing the token, or not serving a
    target or the grader. Found before any call is paid for."""


async def preflight(connection: Connection, run: _Run) -> None:
    """`GET /v1/models` once: the sidecar answers, takes the token, and serves every target
    and the grader (by name; inline panels are checked by the calls themselves)."""
    headers = {"Authorization": f"Bearer {connection.token}"} if connection.token else {}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{connection.base_url}/models", headers=headers) as response,
        ):
            if response.status in (401, 403):
                raise PreflightError(
                    f"the sidecar at {connection.base_url} refused the token "
                    f"(HTTP {response.status}): set ${TOKEN_ENV}"
                )
            listed = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise PreflightError(f"cannot reach the sidecar at {connection.base_url}: {exc}") from exc
    served = {str(m.get("id")) for m in listed.get("data") or [] if isinstance(m, dict)}
    for target in [*run.targets, *([run.grader] if run.grader else [])]:
        model = str(target.fields["model"])
        if model != FUSION and model not in served:
            role = "grader" if target is run.grader else "target"
            raise PreflightError(
                f"{role} {target.label!r}: the sidecar does not serve {model!r} here "
                "(GET /v1/models lists what it serves under its policy)"
            )


async def _drive(
    run: _Run, options: EvalOptions, jobs: list[Job], loaded: LoadedConfig | None, sink: _Sink
) -> None:
    if options.url is not None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            connection = await remote(session, options.url, options.config)
        await _run_on(connection, run, options, jobs, sink)
        return
    assert loaded is not None  # noqa: S101  # the CLI loads it when there is no --url
    async with in_process(loaded) as local:
        await _run_on(local, run, options, jobs, sink)


async def _run_on(
    connection: Connection, run: _Run, options: EvalOptions, jobs: list[Job], sink: _Sink
) -> None:
    sink.source = connection.source
    sink.simulated = (
        None if connection.simulation is None else bool(connection.simulation.sim_providers)
    )
    await preflight(connection, run)
    await run_jobs(connection, jobs, run.grader, sink, concurrency=options.concurrency)


class _Sink:
    """Each result as it arrives: appended to results.jsonl, counted on the progress line."""

    def __init__(self, file: ResultsFile, progress: Progress) -> None:
        self.file, self.progress = file, progress
        self.source = "sidecar (not reached)"
        self.simulated: bool | None = None  # the sidecar has simulated providers (None: unknown)

    def __call__(self, result: Result) -> None:
        self.file.append(result)
        self.progress.add(result)


def run_eval(
    options: EvalOptions,
    load: Callable[[], LoadedConfig],
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Run the eval `options` describe (`load`: the config for an in-process sidecar), write
    its files, print its table. 0 when it ran (errors in calls included), 2 for bad input,
    130 when interrupted (what was done is written, and a rerun resumes)."""
    try:
        run = _prepare(options)
    except (DatasetError, TargetError, ValueError) as exc:
        print(f"error: {exc}", file=stderr)
        return 2
    loaded = load() if options.url is None else None
    try:
        done, skipped = read_results(run.out / RESULTS)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: --out {run.out}: cannot read {RESULTS}: {exc}", file=stderr)
        return 2
    done_keys = {r.key for r in done if r.error is None}  # a rerun retries what failed
    jobs = plan_jobs(run.items, run.targets, options.repeats, done_keys)
    total = len(run.items) * len(run.targets) * options.repeats
    if done:
        print(
            f"eval: resuming in {run.out}: {total - len(jobs)} of {total} already done"
            + (f" ({skipped} unreadable line(s) ignored)" if skipped else ""),
            file=stderr,
        )
    per_target = {t.label: sum(1 for j in jobs if j.target is t) for t in run.targets}
    progress = Progress(stderr, per_target, tty=stderr.isatty())
    try:
        file = ResultsFile(run.out / RESULTS)
    except OSError as exc:
        print(f"error: --out {run.out}: cannot write {RESULTS} there: {exc}", file=stderr)
        return 2
    sink = _Sink(file, progress)
    interrupted = False
    try:
        if jobs:
            asyncio.run(_drive(run, options, jobs, loaded, sink))
    except KeyboardInterrupt:
        interrupted = True
    except PreflightError as exc:
        file.close()
        file.discard_if_empty()  # a run refused before any call leaves nothing behind
        print(f"error: {exc}", file=stderr)
        return 2
    finally:
        progress.close()
        file.close()
    results, _skipped = read_results(run.out / RESULTS)
    summary = report.summarize(
        results,
        targets=[t.label for t in run.targets],
        item_ids=[i.id for i in run.items],
        repeats=options.repeats,
        dataset=run.dataset,
        grader=run.grader.label if run.grader else None,
        sidecar=sink.source,
        interrupted=interrupted,
        simulated_setup=sink.simulated,
    )
    report.write_all(summary, run.out)
    print(report.table(summary), file=stdout)
    print(
        f"wrote {run.out}/: {RESULTS}, {report.SUMMARY}, {report.REPORT}, {report.CHART}",
        file=stdout,
    )
    return 130 if interrupted else 0
