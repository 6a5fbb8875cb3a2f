"""Drive an eval: every item x target x repeat not already in results.jsonl, through the
sidecar's HTTP API, graded as it arrives, `concurrency` calls at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, replace

import aiohttp

from router.eval.calls import Outcome, post_chat
from router.eval.dataset import Item
from router.eval.grading import (
    Grade,
    VerdictError,
    grade_choice,
    grade_exact,
    grader_request,
    parse_verdict,
)
from router.eval.results import CallError, Key, Result
from router.eval.sidecar import Connection
from router.eval.targets import Target

REQUEST_TIMEOUT_S = 900.0  # the sidecar's own deadlines bound a call; this only a wedged socket


@dataclass(frozen=True, slots=True)
class Job:
    """One call to make: an item, asked of a target, the `repeat`-th time."""

    item: Item
    target: Target
    repeat: int

    @property
    def key(self) -> Key:
        return (self.item.id, self.target.label, self.repeat)


def plan_jobs(
    items: Sequence[Item], targets: Sequence[Target], repeats: int, done: Container[Key]
) -> list[Job]:
    """The jobs still to do, repeat by repeat, item by item, each item to every target in turn
    (an interrupted run has covered the targets evenly); those in `done` are skipped."""
    return [
        job
        for repeat in range(repeats)
        for item in items
        for target in targets
        if (job := Job(item, target, repeat)).key not in done
    ]


def _simulated(connection: Connection, *outcomes: Outcome) -> bool | None:
    if connection.simulation is None:
        return None
    return any(
        connection.simulation.any_simulated(o.reply.models, o.reply.provider)
        for o in outcomes
        if o.reply is not None
    )


async def run_job(
    session: aiohttp.ClientSession, connection: Connection, job: Job, grader: Target | None
) -> Result:
    """Ask the target, grade its answer (the grader, for a rubric, sees no target name)."""
    item = job.item
    base = Result(item.id, job.target.label, job.repeat, item.grading)
    asked = await post_chat(
        session,
        connection.base_url,
        {**job.target.fields, "messages": list(item.messages)},
        token=connection.token,
        stage="target",
    )
    reply = asked.reply
    if reply is None:
        return replace(base, error=asked.error, latency_ms=round(asked.latency_ms, 1))
    answered = replace(
        base,
        answer=reply.text,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        cost_usd=reply.cost_usd,
        latency_ms=round(asked.latency_ms, 1),
        served_by=reply.models,
        fusion=reply.fusion,
        simulated=_simulated(connection, asked),
    )
    if item.grading == "exact":
        return _graded(answered, grade_exact(reply.text, item.answers))
    if item.grading == "choice":
        return _graded(answered, grade_choice(reply.text, item.answers[0], item.letters))
    if grader is None:
        return replace(answered, error=CallError("grader", "no_grader", "no grader given"))
    assert item.rubric is not None  # noqa: S101  # a rubric item has one
    verdict = await post_chat(
        session,
        connection.base_url,
        grader_request(grader.fields, item.messages, item.rubric, reply.text),
        token=connection.token,
        stage="grader",
    )
    answered = replace(
        answered,
        grader_cost_usd=verdict.reply.cost_usd if verdict.reply else 0.0,
        simulated=_simulated(connection, asked, verdict),
    )
    if verdict.reply is None:
        return replace(answered, error=verdict.error)
    try:
        return _graded(answered, parse_verdict(verdict.reply.text))
    except VerdictError as exc:
        return replace(answered, error=CallError("grader", "grader_malformed", str(exc)[:500]))


def _graded(result: Result, grade: Grade) -> Result:
    return replace(result, grade=grade.score, reason=grade.reason)


async def run_jobs(
    connection: Connection,
    jobs: Sequence[Job],
    grader: Target | None,
    on_result: Callable[[Result], None],
    *,
    concurrency: int = 4,
) -> None:
    """Run `jobs`, `concurrency` at a time, handing each result to `on_result` as it arrives
    (it appends it to results.jsonl). Cancelling this cancels the calls in flight; what
    arrived before stays handed over."""
    queue = list(reversed(jobs))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=max(concurrency * 2, 10))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def worker() -> None:
            while queue:
                job = queue.pop()
                on_result(await run_job(session, connection, job, grader))

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(jobs)))):
                group.create_task(worker())
