"""A quick run of the benchmark (`python -m ops.bench --quick`), so that it cannot rot.

Speed is measured by the benchmark and never asserted here: this only checks that the harness
starts its processes, runs every phase, stops, and reports a number for every measurement.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops.bench.ab import _bases

ROOT = Path(__file__).resolve().parent.parent
# 1 in flight, 32 in flight, 128 in flight, streaming, memory, fusion, failover, soak
PHASES = range(1, 9)


@pytest.mark.timeout(150)  # the quick run takes about 25 s; headroom for a loaded CI machine
def test_quick_benchmark_reports_every_phase_with_numbers(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ops.bench", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=140)
    except subprocess.TimeoutExpired:
        process.terminate()  # SIGTERM: the harness stops its servers on the way out
        process.communicate(timeout=20)
        raise
    assert process.returncode == 0, stderr[-4000:]

    result = json.loads((tmp_path / "latest.json").read_text())
    rows = result["rows"]
    assert {row["phase"] for row in rows} == set(PHASES)
    for row in rows:
        assert isinstance(row["sidecar"], int | float), row
        assert math.isfinite(row["sidecar"]), row
        assert row["passed"] in (True, False, None), row
    for phase in (1, 2, 3, 4, 5):  # the floor is measured beside the sidecar in these
        assert any(
            row["phase"] == phase and isinstance(row["floor"], int | float) for row in rows
        ), phase
    for name, attempts in result["details"]["healthy_attempts"].items():
        assert attempts["succeeded"] > 0, name  # the sidecar's own metrics were read
        assert attempts["failed"] == {}, name  # no failure hidden from clients by a retry
    assert result["machine"]["python"]
    assert result["command"].endswith("-m ops.bench --quick --results-dir " + str(tmp_path))

    table = (tmp_path / "latest.md").read_text()
    assert table in stdout
    table_rows = [
        line for line in table.splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert len(table_rows) == len(rows) + 1  # the header, then one line per measurement
    assert {line.split("|")[1].strip() for line in table_rows[1:]} == {str(p) for p in PHASES}


@pytest.mark.timeout(120)
def test_ab_compares_other_copies_with_this_tree() -> None:
    """`python -m ops.bench.ab`: other copies' sidecars beside this tree's, each under its name,
    with numbers (here the copies are this tree itself, so the test needs no git history)."""
    argv = [sys.executable, "-m", "ops.bench.ab", "--seconds", "1"]
    argv += ["--base-tree", f"one={ROOT}", "--base-tree", f"two={ROOT}"]
    process = subprocess.run(
        argv,
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in process.stdout.splitlines()
        if line.startswith("| ") and "---" not in line and "target" not in line
    }
    assert set(rows) == {"direct", "floor", "one", "two", "this tree"}
    for name in ("floor", "one", "two", "this tree"):
        p50, p99, added, cpu = (float(cell) for cell in rows[name])
        assert 0 < p50 <= p99, rows[name]
        assert math.isfinite(added), rows[name]
        assert cpu > 0, rows[name]


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="--load drives wrk (CI installs it)")
def test_ab_load_measures_each_copy_against_the_floor_side_by_side() -> None:
    """`python -m ops.bench.ab --load`: the floor, a base and this tree under load at once,
    every span exported, each with requests/s, its ratio to the floor and CPU per request."""
    argv = [sys.executable, "-m", "ops.bench.ab", "--load", "--seconds", "1", "--rounds", "2"]
    argv += ["--copies", "1", "--traced", "all", "--base-tree", str(ROOT)]
    process = subprocess.run(
        argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    assert process.returncode == 0, process.stderr[-4000:]
    assert "spans: all" in process.stdout
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in process.stdout.splitlines()
        if line.startswith("| ") and "---" not in line and "target" not in line
    }
    assert set(rows) == {"floor", "base", "this tree"}  # (a lone base is "base")
    assert rows["floor"][1] == "1.000x"
    for name in ("base", "this tree"):
        rps, ratio, rounds, cpu = rows[name]
        assert float(rps.replace(",", "")) > 0, rows[name]
        assert 0 < float(ratio.removesuffix("x")) < 2, rows[name]
        assert len(rounds.split(",")) == 2, rows[name]
        assert float(cpu) > 0, rows[name]


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="--instructions runs callgrind")
def test_ab_instructions_counts_each_copy_under_callgrind() -> None:
    """`python -m ops.bench.ab --instructions`: a base and this tree, each alone under
    callgrind, with instructions and cache misses per request and the ratio to the base
    (here the same code: near 1)."""
    argv = [sys.executable, "-m", "ops.bench.ab", "--instructions", "--requests", "40"]
    argv += ["--traced", "ratio", "--base-tree", str(ROOT)]
    process = subprocess.run(
        argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=230
    )
    assert process.returncode == 0, process.stderr[-4000:]
    assert "40 requests each" in process.stdout
    assert "spans: ratio" in process.stdout
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in process.stdout.splitlines()
        if line.startswith("| ") and "---" not in line and "target" not in line
    }
    assert set(rows) == {"base", "this tree"}
    assert rows["base"][1] == "1.000x"
    for name in ("base", "this tree"):
        instructions, versus, i_misses, d_misses = rows[name]
        # (a request is about a million; counting from start-up would read tens of millions)
        assert 100_000 < float(instructions.replace(",", "")) < 10_000_000, rows[name]
        assert 0.5 < float(versus.removesuffix("x")) < 2, rows[name]
        assert float(i_misses.replace(",", "")) > 0
        assert float(d_misses.replace(",", "")) > 0


def test_ab_names_its_bases() -> None:
    """A lone base is "base"; several keep their names (a bare DIR is named by its path);
    a name that repeats or hides a fixed row is refused."""
    assert _bases(["abc123"], []) == [("base", "abc123", None)]
    assert _bases([], ["/x/y"]) == [("base", "/x/y", Path("/x/y"))]
    assert _bases([], ["/data/a=b", "c=/d=e"]) == [
        ("/data/a=b", "/data/a=b", Path("/data/a=b")),
        ("c", "/d=e", Path("/d=e")),
    ]
    assert _bases(["main"], ["cut=/x/y"]) == [
        ("main", "main", None),
        ("cut", "/x/y", Path("/x/y")),
    ]
    for refs, trees in (([], ["a=/x", "a=/y"]), ([], ["floor=/x", "b=/y"])):
        with pytest.raises(SystemExit):
            _bases(refs, trees)
