"""`fusion-router eval` end to end: a sidecar in front of fake upstreams with known answers,
driven over HTTP (`--url`, with a token), its files read back (issue 19)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from router.app import create_app
from router.eval.command import EvalOptions, run_eval
from router.eval.report import CHART, REPORT, SUMMARY
from router.eval.results import RESULTS
from tests.fakes import openai_server
from tests.fakes.script import Answer, Delay, Status, Wall
from tests.fusion_setup import JUDGE_REPLY, MODELS, fusion_yaml
from tests.helpers import config_from_yaml, serve

TOKEN = "eval-test-token"
PRICE_PER_CALL = (11 * 1.0 + 7 * 2.0) / 1e6  # the fake's default usage at the test bed's prices


@dataclass
class Bed:
    url: str
    wall: Wall
    config: Path

    def options(self, dataset: Path, targets: str, out: Path, **more: Any) -> EvalOptions:
        """The eval's options against this sidecar (`--url`, `--config`) for `targets`."""
        return EvalOptions(
            dataset=str(dataset),
            example=False,
            targets=targets,
            url=self.url,
            config=str(self.config),
            out=str(out),
            **more,
        )


@asynccontextmanager
async def bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bed]:
    """The fusion test bed (eight models on one fake OpenAI server, panel `trio`), behind a
    sidecar that wants a bearer token; its config on disk, for telling simulated providers."""
    wall = Wall()
    for m in MODELS:
        wall.script(f"up-{m}", Answer(f"answer from {m}"))
    wall.script("up-judge-m", Answer(JUDGE_REPLY))
    async with serve(openai_server.make_app(wall)) as upstream:
        text = fusion_yaml(
            str(upstream.make_url("")).rstrip("/"),
            panel_extra="server: {auth_token_env: EVAL_TEST_TOKEN}\n",
        )
        config = tmp_path / "router.yaml"
        config.write_text(text)
        app = create_app(config_from_yaml(text), environ={"EVAL_TEST_TOKEN": TOKEN})
        monkeypatch.setenv("ROUTER_TOKEN", TOKEN)
        async with serve(app) as server:
            yield Bed(str(server.make_url("")).rstrip("/"), wall, config)


def write_dataset(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


async def run(options: EvalOptions) -> tuple[int, str, str]:
    """`run_eval` in a thread of its own (it runs its own event loop), as the CLI would."""
    out, err = io.StringIO(), io.StringIO()

    def load() -> Any:
        raise AssertionError("no in-process sidecar with --url")

    code = await asyncio.to_thread(run_eval, options, load, out, err)
    return code, out.getvalue(), err.getvalue()


def read_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / RESULTS).read_text().splitlines() if line]


def summary_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / SUMMARY).read_text())
    return data


def by_target(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in summary["targets"]}


MIXED: list[dict[str, Any]] = [
    {"id": "q1", "prompt": "Capital of France?", "answer": "Paris"},
    {"id": "q2", "prompt": "Capital of the UK?", "answer": "London"},
    {"id": "q3", "prompt": "Which?", "choices": ["red", "blue", "green"], "answer": "B"},
    {"id": "q4", "prompt": "Explain tides.", "rubric": "SECRET-RUBRIC: mentions the moon"},
]


async def test_exact_choice_and_rubric_grades_through_a_fake_grader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bed(tmp_path, monkeypatch) as b:
        b.wall.script("up-m1", Answer("Paris"))
        b.wall.script("up-m2", Answer("The answer is (B)."))
        b.wall.script(
            "up-sub2",
            [
                Answer('{"score": 0.75, "reason": "mentions the moon"}'),
                Answer('{"score": 0.25, "reason": "vague"}'),
            ],
        )
        out = tmp_path / "out"
        options = b.options(
            write_dataset(tmp_path / "d.jsonl", MIXED),
            "m1,m2",
            out,
            grader="sub2",
            concurrency=1,  # in order: q4 to m1 is graded first
        )
        code, stdout, _err = await run(options)
    assert code == 0
    rows = {(r["item"], r["target"]): r for r in read_rows(out)}
    assert len(rows) == 8
    assert rows["q1", "m1"]["grade"] == 1.0
    assert rows["q2", "m1"]["grade"] == 0.0
    assert rows["q3", "m1"]["grade"] == 0.0
    assert rows["q3", "m2"]["grade"] == 1.0
    assert rows["q4", "m1"]["grade"] == 0.75
    assert rows["q4", "m1"]["reason"] == "mentions the moon"
    assert rows["q4", "m2"]["grade"] == 0.25
    summary = by_target(summary_of(out))
    assert summary["m1"]["score"] == pytest.approx((1 + 0 + 0 + 0.75) / 4)
    assert summary["m2"]["score"] == pytest.approx((0 + 0 + 1 + 0.25) / 4)
    assert summary_of(out)["simulated"] is False  # the fakes speak the openai protocol
    assert summary_of(out)["grader"] == "sub2"
    # the rubric reached the grader only, and the grader never learned which target answered
    for call in b.wall.calls:
        text = json.dumps(call.body)
        if call.model == "up-sub2":
            assert "SECRET-RUBRIC" in text
            assert call.body["response_format"]["type"] == "json_schema"
            assert "m1" not in text.replace("up-sub2", "")
            assert "m2" not in text.replace("up-sub2", "")
        else:
            assert "SECRET-RUBRIC" not in text
    # the grader's cost is apart: two calls, not in the targets' cost
    assert summary_of(out)["grader_cost_usd"] == pytest.approx(2 * PRICE_PER_CALL)
    assert summary["m1"]["cost_usd_total"] == pytest.approx(4 * PRICE_PER_CALL)
    assert "m1" in stdout
    assert "SIMULATED" not in stdout


async def test_cost_and_latency_are_the_sums_of_the_calls_fusion_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{"id": f"q{i}", "prompt": f"Question {i}?", "answer": "x"} for i in range(4)]
    async with bed(tmp_path, monkeypatch) as b:
        b.wall.script("up-sub1", Delay(0.06, Answer("y")))
        out = tmp_path / "out"
        code, _o, _e = await run(
            b.options(write_dataset(tmp_path / "d.jsonl", items), "sub1,fusion/trio", out)
        )
        calls = list(b.wall.calls)
    assert code == 0
    rows = read_rows(out)
    summary = by_target(summary_of(out))
    routed = [r for r in rows if r["target"] == "sub1"]
    fused = [r for r in rows if r["target"] == "fusion/trio"]
    # each routed answer's cost is what the sidecar said (router.cost_usd) for one call
    assert all(r["cost_usd"] == pytest.approx(PRICE_PER_CALL) for r in routed)
    assert all(r["input_tokens"] == 11 and r["output_tokens"] == 7 for r in routed)
    sub1_calls = [c for c in calls if c.model == "up-sub1"]
    assert summary["sub1"]["cost_usd_total"] == pytest.approx(len(sub1_calls) * PRICE_PER_CALL)
    # fusion: the `fusion` object's cost, every panel, judge and synthesis call counted
    fusion_calls = len(calls) - len(sub1_calls)
    assert fusion_calls == 4 * 5  # three panelists, the judge, the synthesizer
    assert summary["fusion/trio"]["cost_usd_total"] == pytest.approx(fusion_calls * PRICE_PER_CALL)
    assert summary["fusion/trio"]["cost_usd_total"] == pytest.approx(
        sum(r["cost_usd"] for r in fused)
    )
    assert summary["fusion/trio"]["cost_usd_per_item"] == pytest.approx(5 * PRICE_PER_CALL)
    fusion = fused[0]["fusion"]
    assert fusion["panel"] == "trio"
    assert [s["model"] for s in fusion["seats"]] == ["m1", "m2", "m3"]
    assert {s["status"] for s in fusion["seats"]} == {"answered"}
    assert fusion["degraded"] == []
    assert fusion["judge"] == "judge-m"
    assert fusion["synthesizer"] == "synth-m"
    assert fusion["cost_usd"] == pytest.approx(fused[0]["cost_usd"])
    # latency: measured per call (the fake waits 60 ms), percentiles of those calls
    latencies = sorted(r["latency_ms"] for r in routed)
    assert latencies[0] >= 60
    assert summary["sub1"]["latency_ms_p50"] == pytest.approx(
        (latencies[1] + latencies[2]) / 2, abs=0.11
    )
    assert summary["sub1"]["latency_ms_p95"] <= latencies[-1] + 0.1
    assert summary["sub1"]["latency_ms_p95"] >= latencies[-2]


async def test_failures_are_errors_not_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{"id": f"q{i}", "prompt": f"Question {i}?", "answer": "Paris"} for i in range(3)]
    async with bed(tmp_path, monkeypatch) as b:
        b.wall.script("up-m1", Answer("Paris"))
        b.wall.script("up-m2", Status(500))  # every call: the sidecar retries, then gives up
        b.wall.script("up-m3", Answer("Paris"))
        out = tmp_path / "out"
        code, stdout, _e = await run(
            b.options(write_dataset(tmp_path / "d.jsonl", items), "m1,m2", out)
        )
    assert code == 0
    summary = by_target(summary_of(out))
    assert summary["m1"] == {**summary["m1"], "n": 3, "score": 1.0, "errors": 0}
    assert summary["m2"]["n"] == 0
    assert summary["m2"]["score"] is None  # no zeros hidden in a mean
    assert summary["m2"]["ci95"] is None
    assert summary["m2"]["errors"] == 3
    rows = [r for r in read_rows(out) if r["target"] == "m2"]
    assert all(r["grade"] is None for r in rows)
    assert {r["error"]["stage"] for r in rows} == {"target"}
    assert {r["error"]["status"] for r in rows} == {502}
    codes = summary["m2"]["error_codes"]
    assert sum(codes.values()) == 3
    assert codes == {"target:all_providers_failed": 3}  # the sidecar's code, as it logged it
    assert len(b.wall.calls_to("up-m2")) == 3 * 2  # after the sidecar's own retry each time
    assert "m2" in (out / REPORT).read_text().split("## Errors", 1)[1]
    (m2_line,) = [line for line in stdout.splitlines() if line.startswith("m2 ")]
    assert m2_line.split()[1:5] == ["0", "-", "-", "3"]  # n, score, ci95, errors


async def test_one_failed_item_leaves_the_mean_over_the_graded_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{"id": f"q{i}", "prompt": f"Question {i}?", "answer": "Paris"} for i in range(3)]
    async with bed(tmp_path, monkeypatch) as b:
        b.wall.script("up-m1", [Answer("Paris"), *[Status(500)] * 3, Answer("Paris")])
        out = tmp_path / "out"
        code, _o, _e = await run(
            b.options(write_dataset(tmp_path / "d.jsonl", items), "m1", out, concurrency=1)
        )
        attempts = len(b.wall.calls_to("up-m1"))
    assert code == 0
    summary = by_target(summary_of(out))["m1"]
    failed = attempts - 2  # the two answered items took one call each
    assert failed >= 2  # the sidecar retried before giving up
    assert (summary["n"], summary["errors"], summary["score"]) == (2, 1, 1.0)


async def test_a_rerun_resumes_calling_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [
        {"id": f"q{i}", "prompt": f"Question number {i}?", "answer": "Paris"} for i in range(4)
    ]
    dataset = str(write_dataset(tmp_path / "d.jsonl", items))
    out = tmp_path / "out"
    options = EvalOptions(
        dataset=dataset,
        example=False,
        targets="m1,m2",
        url="",
        config=None,
        out=str(out),
        repeats=2,
    )
    async with bed(tmp_path, monkeypatch) as b:
        b.wall.script("up-m1", Answer("Paris"))
        options = replace(options, url=b.url, config=str(b.config))
        assert (await run(options))[0] == 0
        full = (out / RESULTS).read_text().splitlines()
        assert len(full) == 4 * 2 * 2
        # as if interrupted: five results kept, the sixth cut short mid-line
        (out / RESULTS).write_text("\n".join(full[:5]) + "\n" + full[5][:40])
        kept = {(r["item"], r["target"], r["repeat"]) for r in map(json.loads, full[:5])}
        b.wall.calls.clear()
        code, _o, err = await run(options)
        called = [(c.model, c.body["messages"][-1]["content"]) for c in b.wall.calls]
    assert code == 0
    assert "resuming" in err
    assert "5 of 16 already done" in err
    assert len(called) == 16 - 5  # only the missing ones were asked
    missing = [
        (i, t, r) for r in range(2) for i in (f"q{n}" for n in range(4)) for t in ("m1", "m2")
    ]
    missing = [k for k in missing if k not in kept]
    expected = sorted((f"up-{t}", f"Question number {i[1:]}?") for i, t, _r in missing)
    assert sorted(called) == expected
    rows = read_rows_lenient(out)
    assert {(r["item"], r["target"], r["repeat"]) for r in rows} == {
        (f"q{n}", t, r) for n in range(4) for t in ("m1", "m2") for r in range(2)
    }
    summary = by_target(summary_of(out))
    assert summary["m1"]["n"] == 8
    assert summary["m1"]["score"] == 1.0
    assert summary["m2"]["score"] == 0.0


def read_rows_lenient(out: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (out / RESULTS).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


async def test_an_inline_panel_is_a_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [{"id": "q1", "prompt": "Capital of France?", "answer": "answer from synth-b"}]
    target = (
        'duo=fusion:{"panelists": ["m1", "m2"], "judges": ["judge-m"], "synthesizers": ["synth-b"]}'
    )
    async with bed(tmp_path, monkeypatch) as b:
        out = tmp_path / "out"
        code, stdout, _e = await run(
            EvalOptions(
                dataset=str(write_dataset(tmp_path / "d.jsonl", items)),
                example=False,
                targets=target,
                url=b.url,
                out=str(out),  # no --config: /readyz names test.yaml, not readable from here
            )
        )
        models = sorted(c.model for c in b.wall.calls)
    assert code == 0
    assert models == ["up-judge-m", "up-m1", "up-m2", "up-synth-b"]
    (row,) = read_rows(out)
    assert row["target"] == "duo"
    assert row["grade"] == 1.0
    assert [s["model"] for s in row["fusion"]["seats"]] == ["m1", "m2"]
    assert row["fusion"]["synthesizer"] == "synth-b"
    assert row["simulated"] is None
    assert summary_of(out)["simulated"] is None  # unknown, and said so
    assert "simulated: unknown" in stdout


async def test_a_setup_that_cannot_work_is_refused_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong token, a target or grader the sidecar does not serve, an unreachable sidecar
    and an unusable `--out`: exit 2 with the reason, no upstream call, nothing recorded."""
    items = [
        {"id": "q1", "prompt": "Q?", "answer": "a"},
        {"id": "q2", "prompt": "Explain.", "rubric": "mentions x"},
    ]
    async with bed(tmp_path, monkeypatch) as b:
        dataset = write_dataset(tmp_path / "d.jsonl", items)
        cases = [
            ("ROUTER_TOKEN", "wrong", "m1", "sub2", "refused the token (HTTP 401)"),
            ("ROUTER_TOKEN", TOKEN, "m1,ghost", "sub2", "target 'ghost'"),
            ("ROUTER_TOKEN", TOKEN, "m1", "no-grader", "grader 'no-grader'"),
        ]
        for i, (env, value, targets, grader, said) in enumerate(cases):
            monkeypatch.setenv(env, value)
            out = tmp_path / f"out{i}"
            code, _o, err = await run(b.options(dataset, targets, out, grader=grader))
            assert (code, said in err) == (2, True), err
            assert not (out / RESULTS).exists() or not read_rows(out)
        assert b.wall.calls == []
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        code, _o, err = await run(b.options(dataset, "m1", blocker, grader="sub2"))
        assert (code, "--out" in err) == (2, True), err
    code, _o, err = await run(
        EvalOptions(
            dataset=str(dataset),
            example=False,
            targets="m1",
            url="http://127.0.0.1:9",
            out=str(tmp_path / "unreached"),
        )
    )
    assert (code, "cannot reach the sidecar" in err) == (2, True), err
    assert not (tmp_path / "unreached").exists()  # a refused run leaves nothing behind


async def test_a_rerun_retries_the_calls_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [{"id": f"q{i}", "prompt": f"Question {i}?", "answer": "Paris"} for i in range(2)]
    async with bed(tmp_path, monkeypatch) as b:
        dataset, out = write_dataset(tmp_path / "d.jsonl", items), tmp_path / "out"
        b.wall.script("up-m1", Status(500))
        assert (await run(b.options(dataset, "m1", out)))[0] == 0
        assert by_target(summary_of(out))["m1"]["errors"] == 2
        b.wall.script("up-m1", Answer("Paris"))
        b.wall.calls.clear()
        assert (await run(b.options(dataset, "m1", out)))[0] == 0
        assert len(b.wall.calls) == 2  # only the two that failed, asked again
    summary = by_target(summary_of(out))["m1"]
    assert (summary["errors"], summary["score"]) == (0, 1.0)


def test_a_bad_dataset_line_is_named_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from router.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "q", "answer": "x"}\n{"id": "b", "prompt": "q"}\n')
    code = main(
        [
            "eval",
            str(bad),
            "--targets",
            "m1",
            "--url",
            "http://127.0.0.1:9",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert f"{bad}:2: give exactly one of 'answer' or 'rubric'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking its signature)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_example_on_the_embedded_default_is_labelled_simulated(tmp_path: Path) -> None:
    out = tmp_path / "example"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "router",
            "eval",
            "--example",
            "--targets",
            "gpt-5.5,fusion/budget",
            "--limit",
            "5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={k: v for k, v in __import__("os").environ.items() if k != "ROUTER_CONFIG"},
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {RESULTS, SUMMARY, REPORT, CHART}
    summary = summary_of(out)
    assert summary["simulated"] is True
    assert summary["dataset"] == "example"
    assert summary["grader"] == "claude-opus-4.8"
    targets = by_target(summary)
    assert set(targets) == {"gpt-5.5", "fusion/budget"}
    for t in targets.values():
        assert t["n"] + t["errors"] == 5
        assert t["cost_usd_total"] > 0
        assert t["ci95"][0] <= t["score"] <= t["ci95"][1]
    assert targets["fusion/budget"]["cost_usd_per_item"] > targets["gpt-5.5"]["cost_usd_per_item"]
    assert summary["grader_cost_usd"] > 0
    rows = read_rows(out)
    assert len(rows) == 10
    assert all(r["simulated"] is True for r in rows)
    assert all(r["fusion"]["panel"] == "budget" for r in rows if r["target"] == "fusion/budget")
    assert (out / REPORT).read_text().startswith("# SIMULATED")
    assert result.stdout.splitlines()[0].startswith("SIMULATED")
    assert "eval: gpt-5.5: 5 done" in result.stderr  # not a terminal: a line per target
    # the chart is a real PNG that decodes
    data = (out / CHART).read_bytes()
    assert png_size(data) == (700, 450)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(out / CHART))
    assert pixels.shape[:2] == (450, 700)
    assert pixels.std() > 0  # not a blank image


def test_ctrl_c_writes_what_is_done_and_a_rerun_resumes(tmp_path: Path) -> None:
    """SIGINT mid-run (as Ctrl-C): exit 130, every file written from the results so far,
    marked interrupted; the same command again finishes only the rest."""
    import os
    import signal
    import time

    out = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "router",
        "eval",
        "--example",
        "--targets",
        "gpt-5.5",
        "--limit",
        "12",
        "--concurrency",
        "1",
        "--out",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k != "ROUTER_CONFIG"}

    def default_sigint() -> None:
        # A job a shell starts in the background (CI under `nohup ... &`) ignores SIGINT, and
        # so would the eval it starts: Ctrl-C reaches a foreground command, whose SIGINT acts
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=default_sigint,  # noqa: PLW1509  # (before exec: the child runs no threads)
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        results = out / RESULTS
        if results.exists() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr.decode()
    assert {p.name for p in out.iterdir()} == {RESULTS, SUMMARY, REPORT, CHART}
    summary = summary_of(out)
    assert summary["interrupted"] is True
    first = by_target(summary)["gpt-5.5"]
    done = len(read_rows_lenient(out))
    assert 3 <= done < 12
    assert first["missing"] == 12 - done
    assert "INTERRUPTED" in stdout.decode()
    again = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=60, env=env
    )
    assert again.returncode == 0, again.stderr
    assert f"{done} of 12 already done" in again.stderr
    summary = summary_of(out)
    assert summary["interrupted"] is False
    assert by_target(summary)["gpt-5.5"]["missing"] == 0
    assert len(read_rows_lenient(out)) == 12
