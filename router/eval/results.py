"""`results.jsonl`: one record per item x target x repeat, appended as each arrives, read back
to resume and to report."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"

Key = tuple[str, str, int]  # (item id, target label, repeat)


@dataclass(frozen=True, slots=True)
class CallError:
    """Why a call gave no usable answer: which call (`target` or `grader`), the HTTP status
    (None: no answer at all), the sidecar's error code and message."""

    stage: str
    code: str
    message: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """One answer and its grade. `grade` is None when `error` is set: an error is not a zero.
    `cost_usd` and the tokens are the target's call only; the grader's are kept apart."""

    item: str
    target: str
    repeat: int
    grading: str
    answer: str | None = None
    grade: float | None = None
    reason: str | None = None
    error: CallError | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    served_by: tuple[str, ...] = ()
    simulated: bool | None = None
    fusion: dict[str, Any] | None = None
    grader_cost_usd: float = 0.0

    @property
    def key(self) -> Key:
        return (self.item, self.target, self.repeat)

    @property
    def answered(self) -> bool:
        """The target's call succeeded (whatever the grader then did)."""
        return self.error is None or self.error.stage != "target"

    def to_json(self) -> str:
        data = asdict(self)
        data["served_by"] = list(self.served_by)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        error = values.get("error")
        values["error"] = CallError(**error) if isinstance(error, dict) else None
        values["served_by"] = tuple(values.get("served_by") or ())
        values["item"], values["target"] = str(values["item"]), str(values["target"])
        values["repeat"] = int(values["repeat"])
        return cls(**values)


def read_results(path: Path) -> tuple[list[Result], int]:
    """The records in `path` (none if it does not exist), and how many lines were skipped as
    unreadable (a line cut short by a crash). A later record for the same key wins."""
    if not path.exists():
        return [], 0
    found: dict[Key, Result] = {}
    skipped = 0
    for line in path.read_text("utf-8").splitlines():
        if not line.strip():
            continue
        try:
            result = Result.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError, KeyError, ValueError):
            skipped += 1
            continue
        found[result.key] = result
    return list(found.values()), skipped


class ResultsFile:
    """`results.jsonl` open for appending: each record written whole and flushed at once, so
    an interrupted run keeps everything that had arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        if path.stat().st_size and not _ends_with_newline(path):
            self._file.write("\n")  # a cut-short last line stays alone on its line

    def append(self, result: Result) -> None:
        self._file.write(result.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def discard_if_empty(self) -> None:
        """Remove the file if nothing was ever written to it, and its folder if that leaves
        it empty (a run refused before its first call)."""
        if self.path.exists() and self.path.stat().st_size == 0:
            self.path.unlink()
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only if empty


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, 2)
        return file.read(1) == b"\n"
