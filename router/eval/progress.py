"""Progress on stderr: a one-line bar redrawn with `\r` on a terminal, else a line per target
when its last call is in."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import TextIO

from router.eval.results import Result

WIDTH = 30


def bar(done: int, total: int, width: int = WIDTH) -> str:
    """`[#####.....]`: `done` of `total` as a bar `width` characters wide."""
    filled = width if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class Progress:
    """Counts results as they arrive and shows them on `stream`."""

    def __init__(self, stream: TextIO, per_target: Mapping[str, int], *, tty: bool) -> None:
        self.stream, self.tty = stream, tty
        self.expected = dict(per_target)
        self.total = sum(per_target.values())
        self.done: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.started = time.monotonic()
        if tty and self.total:
            self._draw()

    def add(self, result: Result) -> None:
        self.done[result.target] += 1
        if result.error is not None:
            self.errors[result.target] += 1
        if self.tty:
            self._draw()
        elif self.done[result.target] == self.expected.get(result.target):
            self.stream.write(
                f"eval: {result.target}: {self.done[result.target]} done, "
                f"{self.errors[result.target]} error(s)\n"
            )
            self.stream.flush()

    def _draw(self) -> None:
        done = sum(self.done.values())
        errors = sum(self.errors.values())
        elapsed = time.monotonic() - self.started
        self.stream.write(
            f"\r{bar(done, self.total)} {done}/{self.total} calls, {errors} error(s), "
            f"{elapsed:.0f} s "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.total:
            self.stream.write("\n")
            self.stream.flush()
