"""The request's one deadline: a `time.monotonic()` instant, fixed when the request arrives.

It comes from the config's `server.deadline_s`, narrowed (never widened) by the caller's
`X-Router-Deadline-Ms`. Everything below gets the instant, not a duration: routing stops
attempting when it is near, each attempt's clocks are cut to it (`ProviderCall.deadline`, down
to the socket's wait), fusion's stages end by shares of it, and a stream's relay ends at it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from router.errors import InvalidRequest

DEADLINE_HEADER = "X-Router-Deadline-Ms"
MAX_DEADLINE_MS = 3_600_000


def request_deadline(headers: Mapping[str, str], default_s: float) -> float:
    """The instant this request must be answered by; `InvalidRequest` for a bad header.

    The header takes ASCII digits only (``str.isdigit`` would take "²" or "٣").
    """
    raw = headers.get(DEADLINE_HEADER)
    budget = default_s
    if raw is not None:
        if (
            not (raw.isascii() and raw.isdigit())
            or len(raw) > len(str(MAX_DEADLINE_MS))
            or not 1 <= int(raw) <= MAX_DEADLINE_MS
        ):
            raise InvalidRequest(
                f"{DEADLINE_HEADER} must be an integer from 1 to {MAX_DEADLINE_MS}",
                param=DEADLINE_HEADER,
            )
        budget = min(default_s, int(raw) / 1000)
    return time.monotonic() + budget
