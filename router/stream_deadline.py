"""The request deadline over a served stream: one timer, armed while the upstream is being asked.

`asyncio.timeout_at` around the event loop of a stream costs its setup (a context object, the
current task, a timer) on the path to the first token, after the upstream answered. This does
the same job with the setup moved off that path: the handler schedules `arm` just before it
asks the router for the stream, so the timer is armed during the upstream round trip, when the
loop is otherwise idle. It cancels the handler's task only once the stream is `open` (until
then the attempt's own clocks stop a late upstream, as they did before), and `ours` tells that
cancellation apart from any other, as `asyncio.timeout` does. A deadline that passed before the
stream opened is reported by `open` instead (a task cannot cancel itself where it stands).
"""

from __future__ import annotations

import asyncio
import time


class StreamDeadline:
    """Cancel the current task at `deadline` (a `time.monotonic()` instant) once the stream is open."""

    __slots__ = (
        "_cancelled",
        "_cancelling",
        "_deadline",
        "_disarmed",
        "_handle",
        "_loop",
        "_open",
        "_task",
        "expired",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - handlers always run in a task
            raise RuntimeError("StreamDeadline needs a running task")
        self._loop = loop
        self._task = task
        self._cancelling = task.cancelling()
        self._deadline = deadline
        self._handle: asyncio.TimerHandle | None = None
        self._open = False
        self._cancelled = False  # whether this deadline cancelled the task
        self._disarmed = False
        self.expired = False

    def arm(self) -> None:
        """Start the timer (scheduled with `call_soon`, it runs at the handler's first wait)."""
        if self._handle is None and not self.expired and not self._disarmed:
            delay = max(0.0, self._deadline - time.monotonic())
            self._handle = self._loop.call_at(self._loop.time() + delay, self._fire)

    def open(self) -> bool:
        """The stream has opened: from now on the deadline cancels the task. True if the
        deadline has passed already (the caller ends the stream with a deadline error)."""
        self._open = True
        self.arm()  # in case the handler never waited before the stream opened
        return self.expired or time.monotonic() >= self._deadline

    def _fire(self) -> None:
        self.expired = True
        if self._open:
            self._cancel()

    def _cancel(self) -> None:
        self._cancelled = True
        self._task.cancel()

    def ours(self) -> bool:
        """Was the `CancelledError` being handled this deadline's alone? Then the task is
        uncancelled and the caller may answer with a deadline error."""
        return self._cancelled and self._task.uncancel() <= self._cancelling

    def disarm(self) -> None:
        """Stop the timer for good (the stream ended, one way or another; a pending `arm` is void)."""
        self._open = False
        self._disarmed = True
        if self._handle is not None:
            self._handle.cancel()
