"""The one retry helper: call, and on a retryable error wait (exponential backoff) and call again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def retry(call: Callable[[], T], *, retries: int, retry_on: type[BaseException] | tuple[type[BaseException], ...],
          delay_s: float = 0.5, max_delay_s: float = 10.0, what: str = "call",
          give_up: Callable[[BaseException], bool] = lambda err: False,
          on_retry: Callable[[BaseException, int, float], None] | None = None) -> T:
    """`call()` up to `retries + 1` times. An error of a `retry_on` type (unless `give_up(err)`) is retried
    after `delay_s`, doubling up to `max_delay_s`; the last attempt's error propagates unchanged."""
    delay = delay_s
    for attempt in range(retries + 1):
        try:
            return call()
        except retry_on as err:
            if attempt == retries or give_up(err):
                raise
            if on_retry is not None:
                on_retry(err, attempt + 1, delay)
            else:
                log.warning("%s failed (%s); retry %d of %d in %.1f s", what, err, attempt + 1, retries, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
    raise AssertionError("unreachable")
