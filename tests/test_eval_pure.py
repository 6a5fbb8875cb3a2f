"""The eval harness's pure parts: grading, statistics, datasets, target strings (issue 19)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from router.eval.dataset import DatasetError, example_path, load_dataset, parse_dataset
from router.eval.grading import (
    VerdictError,
    extract_choice,
    grade_choice,
    grade_exact,
    grader_request,
    normalize,
    parse_verdict,
)
from router.eval.stats import bootstrap_ci, mean, percentile
from router.eval.targets import TargetError, parse_target, parse_targets, split_targets


def test_normalized_exact_match_folds_case_punctuation_whitespace_and_articles() -> None:
    assert normalize("  The Pacific\tOcean. ") == "pacific ocean"
    assert grade_exact("The Pacific Ocean.", ["pacific ocean"]).score == 1.0
    assert grade_exact("Let me think.\nFinal answer: 42", ["42"]).score == 1.0  # the marked part
    assert grade_exact("W", ["w"]).score == 1.0
    assert grade_exact("about 42, maybe 43", ["42"]).score == 0.0  # not a substring match
    assert grade_exact("femur", ["thigh bone", "femur"]).score == 1.0  # any accepted alias


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D.", "D"),
        ("The answer is (B).", "B"),
        ("Answer: **C** because of X", "C"),
        ("B. Helicase unwinds it", "B"),
        ("I would pick D here", "D"),
        ("A or C, hard to say", None),
        ("no letter at all", None),
    ],
)
def test_choice_letters_are_read_from_answers(answer: str, letter: str | None) -> None:
    assert extract_choice(answer, "ABCD") == letter


def test_choice_grading_scores_only_the_correct_letter() -> None:
    assert grade_choice("The answer is B", "B", "ABCD").score == 1.0
    wrong = grade_choice("The answer is C", "B", "ABCD")
    assert (wrong.score, wrong.reason) == (0.0, "chose C, correct is B")
    assert grade_choice("E", "B", "ABCD").score == 0.0  # not one of the choices


def test_verdicts_parse_and_bad_ones_are_refused() -> None:
    grade = parse_verdict('```json\n{"score": 0.5, "reason": "half"}\n```')
    assert (grade.score, grade.reason) == (0.5, "half")
    for bad in (
        "not json",
        "[1]",
        '{"score": 1.5, "reason": "x"}',
        '{"score": true, "reason": "x"}',
        '{"score": 1}',
    ):
        with pytest.raises(VerdictError):
            parse_verdict(bad)


def test_the_grader_request_asks_for_a_json_schema_verdict_and_names_no_target() -> None:
    body = grader_request(
        {"model": "judge"}, [{"role": "user", "content": "Q?"}], "RUBRIC-TEXT", "ANSWER-TEXT"
    )
    assert body["model"] == "judge"
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["score", "reason"]
    text = json.dumps(body["messages"])
    assert "RUBRIC-TEXT" in text
    assert "ANSWER-TEXT" in text
    assert "Q?" in text


def test_bootstrap_interval_on_a_known_distribution() -> None:
    """300 ones in 1000: the mean's 95% interval is 0.3 ± 1.96·sqrt(0.21/1000) ≈ ±0.028."""
    values = [1.0] * 300 + [0.0] * 700
    random.Random(1).shuffle(values)
    ci = bootstrap_ci(values)
    assert ci is not None
    low, high = ci
    assert low < 0.3 < high
    assert 0.262 <= low <= 0.28
    assert 0.32 <= high <= 0.338
    assert bootstrap_ci(values) == ci  # a fixed seed: the same interval every run
    assert bootstrap_ci([0.7] * 20) == (pytest.approx(0.7), pytest.approx(0.7))
    assert bootstrap_ci([]) is None
    # a wider sample of a normal distribution: the interval covers the true mean
    rng = random.Random(7)
    normal = [rng.gauss(10.0, 2.0) for _ in range(400)]
    low, high = bootstrap_ci(normal) or (0.0, 0.0)
    assert low < 10.0 < high
    assert 0.3 < high - low < 0.5  # ≈ 2 · 1.96 · 2 / sqrt(400) = 0.39


def test_percentiles_and_mean() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None
    assert mean([1.0, 2.0]) == 1.5
    assert mean([]) is None


def test_dataset_items_and_their_grading() -> None:
    items = parse_dataset(
        [
            '{"id": "a", "prompt": "Capital of France?", "answer": "Paris"}',
            "",
            '{"id": 2, "prompt": "Pick", "choices": ["x", "y"], "answer": "b"}',
            '{"id": "c", "messages": [{"role": "user", "content": "Explain"}], "rubric": "R"}',
            '{"id": "d", "prompt": "Letter?", "answer": "C", "grading": "choice"}',
        ],
        "t.jsonl",
    )
    assert [(i.id, i.grading) for i in items] == [
        ("a", "exact"),
        ("2", "choice"),
        ("c", "rubric"),
        ("d", "choice"),
    ]
    assert items[1].answers == ("B",)
    assert "A. x\nB. y" in items[1].messages[-1]["content"]  # the choices go to the target
    assert "R" not in json.dumps(items[2].messages)  # the rubric never does
    assert items[3].letters.startswith("ABC")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "t.jsonl:2: not valid JSON"),
        ('{"prompt": "q", "answer": "a"}', "t.jsonl:2: missing 'id'"),
        ('{"id": "x", "prompt": "q"}', "t.jsonl:2: give exactly one of 'answer' or 'rubric'"),
        (
            '{"id": "x", "prompt": "q", "answer": "a", "colour": 1}',
            "t.jsonl:2: unknown key(s) colour",
        ),
        (
            '{"id": "ok", "prompt": "q", "answer": "a"}',
            "t.jsonl:2: duplicate id 'ok' (first on line 1)",
        ),
        (
            '{"id": "x", "prompt": "q", "choices": ["a", "b"], "answer": "C"}',
            "t.jsonl:2: a choice item's 'answer' must be one letter of A-B",
        ),
        ('{"id": "x", "answer": "a"}', "t.jsonl:2: give exactly one of 'prompt' or 'messages'"),
    ],
)
def test_bad_dataset_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(DatasetError) as caught:
        parse_dataset(['{"id": "ok", "prompt": "q", "answer": "a"}', line], "t.jsonl")
    assert str(caught.value).startswith(message)


def test_the_shipped_example_loads_with_every_kind_of_item(tmp_path: Path) -> None:
    items = load_dataset(example_path())
    kinds = {i.grading for i in items}
    assert kinds == {"exact", "choice", "rubric"}
    assert 24 <= len(items) <= 36
    assert len(load_dataset(example_path(), limit=5)) == 5
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl")


def test_targets_split_outside_json_and_inline_panels_parse() -> None:
    text = 'gpt-5.5, fusion/budget,mine=fusion:{"panelists": ["a", "b"], "synthesizers": ["c"]},llama3:8b'
    assert len(split_targets(text)) == 4
    targets = parse_targets(text)
    assert [t.label for t in targets] == ["gpt-5.5", "fusion/budget", "mine", "llama3:8b"]
    assert targets[2].fields == {
        "model": "fusion",
        "fusion": {"panelists": ["a", "b"], "synthesizers": ["c"]},
    }
    assert targets[3].fields == {"model": "llama3:8b"}  # a colon in a model name is no panel
    assert [t.is_fusion for t in targets] == [False, True, True, False]
    assert parse_target('fusion/budget:{"quorum": 3}').fields == {
        "model": "fusion/budget",
        "fusion": {"quorum": 3},
    }
    with pytest.raises(TargetError, match="not valid JSON"):
        parse_target("fusion:{bad")
    with pytest.raises(TargetError, match="given twice"):
        parse_targets("m,m")


def test_the_progress_bar_on_a_terminal_and_lines_elsewhere() -> None:
    import io

    from router.eval.progress import Progress, bar
    from router.eval.results import CallError, Result

    assert bar(0, 4, 8) == "[........]"
    assert bar(2, 4, 8) == "[####....]"
    assert bar(4, 4, 8) == "[########]"
    tty = io.StringIO()
    progress = Progress(tty, {"a": 2}, tty=True)
    progress.add(Result("q1", "a", 0, "exact", grade=1.0))
    progress.add(Result("q2", "a", 0, "exact", error=CallError("target", "x", "y", 500)))
    progress.close()
    text = tty.getvalue()
    assert text.count("\r") == 3
    assert "2/2 calls, 1 error(s)" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    progress = Progress(quiet, {"a": 1, "b": 1}, tty=False)
    progress.add(Result("q1", "a", 0, "exact", grade=1.0))
    assert quiet.getvalue() == "eval: a: 1 done, 0 error(s)\n"
    assert "\r" not in quiet.getvalue()
