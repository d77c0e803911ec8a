"""The one way the tests wait: on a condition, with a bound, never a bare sleep (the machine is shared and noisy)."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from typing import Any

# A bound derived from the configuration (check intervals, DNS hold times) is what an idle machine shows; the
# tests run on shared 2-core machines next to other jobs, so they wait this many times longer before calling it
# a failure. How fast it really was is printed, and measured by the benchmarks (tests/bench/), never asserted.
LOADED = 5


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException, RuntimeError),
) -> Any:
    """The predicate's first truthy value within `timeout`; the errors in `retry_on` count as not yet.

    The one way the tests wait: on a condition, with a bound, never a bare sleep. The failure names `what`
    and the last thing seen (a falsy value or an error), which is usually the diagnosis."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except retry_on as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    seen = f" (last: {last!r})" if last not in (None, False) else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
