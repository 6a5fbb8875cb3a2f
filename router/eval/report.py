"""What an eval's results say: `summary.json`, `report.md`, `cost_vs_score.png`, the table."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from router.eval.results import Result
from router.eval.stats import RESAMPLES, SEED, bootstrap_ci, mean, percentile

SUMMARY, REPORT, CHART = "summary.json", "report.md", "cost_vs_score.png"
SIMULATED_NOTE = (
    "SIMULATED: simulated providers answered (the embedded default or `protocol: sim`). These "
    "scores show the harness working, not any model's quality."
)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def target_summary(label: str, results: Sequence[Result], expected: int) -> dict[str, Any]:
    """One target's line of `summary.json`. Its score is the mean over graded items (an item's
    repeats averaged first), its interval a bootstrap over those items; errors are counted
    apart, never scored 0. Cost per item: the target's calls' cost over the answered calls."""
    by_item: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.grade is not None and r.error is None:
            by_item[r.item].append(r.grade)
    item_scores = [sum(g) / len(g) for g in by_item.values()]
    answered = [r for r in results if r.answered]
    latencies = [r.latency_ms for r in answered if r.latency_ms is not None]
    cost = sum(r.cost_usd for r in results)
    ci = bootstrap_ci(item_scores)
    return {
        "target": label,
        "n": sum(len(g) for g in by_item.values()),
        "items": len(item_scores),
        "score": _round(mean(item_scores), 4),
        "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
        "errors": sum(1 for r in results if r.error is not None),
        "error_codes": dict(
            Counter(f"{r.error.stage}:{r.error.code}" for r in results if r.error is not None)
        ),
        "missing": max(0, expected - len(results)),
        "cost_usd_total": round(cost, 8),
        "cost_usd_per_item": round(cost / len(answered), 8) if answered else None,
        "latency_ms_p50": _round(percentile(latencies, 50), 1),
        "latency_ms_p95": _round(percentile(latencies, 95), 1),
        "grader_cost_usd": round(sum(r.grader_cost_usd for r in results), 8),
    }


def simulated_of(results: Iterable[Result], setup: bool | None = None) -> bool | None:
    """True if any answer came from a simulated provider; None if that is unknown for some
    and none is known simulated; else False. With no answer at all: `setup`, whether the
    sidecar has simulated providers (None: unknown)."""
    flags = [r.simulated for r in results if r.answered]
    if not flags:
        return setup
    if any(f is True for f in flags):
        return True
    return None if any(f is None for f in flags) else False


def summarize(
    results: Sequence[Result],
    *,
    targets: Sequence[str],
    item_ids: Sequence[str],
    repeats: int,
    dataset: str,
    grader: str | None,
    sidecar: str,
    interrupted: bool = False,
    simulated_setup: bool | None = None,
) -> dict[str, Any]:
    """`summary.json`: the run's results for these `targets` and items (others in the file,
    from an earlier run's other items, are left out)."""
    wanted = set(item_ids)
    mine = [r for r in results if r.item in wanted and r.target in targets and r.repeat < repeats]
    per_target = [
        target_summary(t, [r for r in mine if r.target == t], len(wanted) * repeats)
        for t in targets
    ]
    return {
        "dataset": dataset,
        "grader": grader,
        "simulated": simulated_of(mine, simulated_setup),
        "sidecar": sidecar,
        "items": len(wanted),
        "repeats": repeats,
        "interrupted": interrupted,
        "ci": {
            "level": 0.95,
            "method": "percentile bootstrap",
            "resamples": RESAMPLES,
            "seed": SEED,
        },
        "grader_cost_usd": round(sum(t["grader_cost_usd"] for t in per_target), 8),
        "targets": per_target,
    }


def _fmt(value: Any, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def _rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in summary["targets"]:
        ci = t["ci95"]
        rows.append(
            [
                t["target"],
                str(t["n"]),
                _fmt(t["score"], ".3f"),
                "-" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                str(t["errors"]) + (f" (+{t['missing']} missing)" if t["missing"] else ""),
                _fmt(t["cost_usd_per_item"], ".6f"),
                _fmt(t["cost_usd_total"], ".6f"),
                _fmt(t["latency_ms_p50"], ".0f"),
                _fmt(t["latency_ms_p95"], ".0f"),
            ]
        )
    return rows


HEADER = ["target", "n", "score", "ci95", "errors", "$/item", "$ total", "p50 ms", "p95 ms"]


def title(summary: dict[str, Any]) -> str:
    """The report's title: SIMULATED first when simulated providers answered."""
    name = Path(summary["dataset"]).name if summary["dataset"] != "example" else "example"
    if summary["simulated"] is True:
        return f"SIMULATED eval: {name} (not model quality)"
    return f"Eval: {name}"


def table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width text table, its header line saying SIMULATED if so."""
    rows = [HEADER, *_rows(summary)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    simulated = summary["simulated"]
    head = f"{title(summary)}; grader {summary['grader'] or '-'}"
    if simulated is None:
        head += "; simulated: unknown (the sidecar's config could not be read)"
    lines.insert(0, head)
    lines.append(f"grader cost (not in the targets' cost): ${summary['grader_cost_usd']:.6f}")
    if summary["interrupted"]:
        lines.append("INTERRUPTED: partial results; rerun with the same --out to resume")
    return "\n".join(lines)


def markdown(summary: dict[str, Any]) -> str:
    """`report.md`."""
    out = [f"# {title(summary)}", ""]
    if summary["simulated"] is True:
        out += [f"> **{SIMULATED_NOTE}**", ""]
    elif summary["simulated"] is None:
        out += ["> Whether simulated providers answered is unknown (config not readable).", ""]
    if summary["interrupted"]:
        out += ["> **Interrupted**: partial results; rerun with the same `--out` to resume.", ""]
    out += [
        f"- dataset: `{summary['dataset']}` ({summary['items']} items x {summary['repeats']} "
        "repeat(s))",
        f"- grader: `{summary['grader'] or '-'}` (its cost, ${summary['grader_cost_usd']:.6f}, "
        "is not in the targets' cost)",
        f"- sidecar: {summary['sidecar']}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(" --- " for _ in HEADER) + "|",
        *("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _rows(summary)),
        "",
        f"![cost vs score]({CHART})",
        "",
        "## How to read it",
        "",
        "- **score**: the mean grade (0-1) over the items graded; an item asked several times "
        "(`--repeats`) counts once, as the mean of its repeats.",
        "- **ci95**: a 95% percentile-bootstrap interval of that mean over items "
        f"({RESAMPLES} resamples, seed {SEED}); overlapping intervals mean the data cannot "
        "tell those targets apart.",
        "- **errors**: calls that got no grade (an HTTP error after the sidecar's own retries, "
        "or a grader that failed); they are not counted as 0 in the score.",
        "- **$/item**: the target's calls' cost (`router.cost_usd` or `fusion.cost_usd`, "
        "estimated from catalog prices) over its answered calls.",
    ]
    errors = [t for t in summary["targets"] if t["error_codes"]]
    if errors:
        out += ["", "## Errors", ""]
        for t in errors:
            codes = ", ".join(f"{k} x {v}" for k, v in sorted(t["error_codes"].items()))
            out.append(f"- `{t['target']}`: {codes}")
    return "\n".join(out) + "\n"


def chart(summary: dict[str, Any], path: Path) -> None:
    """`cost_vs_score.png`: one labelled point per scored target at (cost per item, score),
    with its ci95 as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)  # Agg, whatever the environment's backend
    ax = figure.add_subplot()
    for t in summary["targets"]:
        if t["score"] is None or t["cost_usd_per_item"] is None:
            continue
        low, high = t["ci95"]
        x, y = t["cost_usd_per_item"], t["score"]
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=4)
        ax.annotate(t["target"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("cost per item (USD)")
    ax.set_ylabel("score (mean, 95% CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.margins(x=0.2)
    ax.grid(alpha=0.3)
    ax.set_title(title(summary), fontsize=10, color="red" if summary["simulated"] else "black")
    figure.tight_layout()
    figure.savefig(path, format="png")


def write_all(summary: dict[str, Any], out: Path) -> None:
    """`summary.json`, `report.md` and `cost_vs_score.png` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    (out / REPORT).write_text(markdown(summary), "utf-8")
    chart(summary, out / CHART)
