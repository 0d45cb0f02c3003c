"""Polling with a deadline: every wait in the harness and the e2e tests goes through `wait_until`.

A wait loop always sleeps between attempts and always ends (STYLE.md rule 20); on time-out the
error names what was awaited and the last value or error seen, so a failed wait explains itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline (an AssertionError, so pytest reports a failure)."""


def wait_until(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `probe` until it returns something other than None (or False), and return that.

    Exceptions listed in `retry_on` count as "not yet" and are reported if the deadline passes;
    any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = probe()
        except retry_on as err:
            last = err
        else:
            if value is not None and value is not False:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what} (last seen: {last!r})")
        time.sleep(interval_s)
