"""One trial: the search's trial context scores the sampled model (by default: latency measured on the
device, then a short proxy training; see `evaluator=`) and the result is reported to NNI.

`evaluate_trial` is the function NNI's `FunctionalEvaluator` runs for every sampled model, in-process or in
a training-service trial process. Its keyword arguments are plain dicts (they are serialized to reach a
trial process). It reports one final metric dict: `default` (what strategies optimise, the MNAS reward),
accuracy, latency, params, multiply-adds, timings and, on failure, the reason.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nni
from torch import nn

from mnas_core.errors import TrialError, one_line
from mnas_nni.run import resume, stopping
from mnas_nni.run.context import context_for
from mnas_nni.run.records import FAILED
from mnas_nni.tracking.console import LOG_FILE_ONLY

log = logging.getLogger(__name__)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise TrialError in this (main) thread once `seconds` have passed. Trials run in the main thread of
    the search process (sequential engine) or of their own trial process (training services)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TrialError(f"trial ran past search.trial_timeout_s={seconds:g} s and was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def evaluate_trial(model: nn.Module, *, failure_reward: float = 0.0, timeout_s: float | None = None,
                   replay: dict[str, dict] | None = None, **settings: Any) -> None:
    """NNI entry point. A failing trial still reports its reason (and `failure_reward`), then re-raises so
    NNI marks it failed; the search goes on. An architecture whose result a killed search recorded after its
    last checkpoint (`replay`, see mnas_nni/run/resume.py) reports that result instead of training again."""
    context = context_for(settings)
    arch = getattr(model, "arch", None)
    known = (replay or {}).get(resume.arch_key(arch.to_dict())) if arch is not None else None
    if known is not None and known["replayed_trial"] not in context.replayed:
        context.replayed.add(known["replayed_trial"])
        nni.report_final_result({**known, "default": known["default"] if known["default"] is not None
                                 else float(failure_reward)})
        return
    started = time.perf_counter()
    try:
        with stopping.trial_running(), deadline(timeout_s):
            metric = context.run(model)
    except stopping.TrialInterrupted:
        raise KeyboardInterrupt from None  # past Lightning's handler: NNI marks the model interrupted and stops
    except Exception as err:
        arch_dict = arch.to_dict() if arch is not None else None
        log.exception("trial failed (%s: %s); its architecture: %s", type(err).__name__, one_line(err), arch_dict,  # noqa: TRY401 - the reason on the first line, for grep
                      extra=LOG_FILE_ONLY)
        nni.report_final_result({
            "default": float(failure_reward),
            "status": FAILED,
            "error": f"{type(err).__name__}: {one_line(err)}",
            "arch": arch_dict,
            "duration_seconds": time.perf_counter() - started,
            "nni_trial_id": nni.get_trial_id(),
        })
        raise
    metric["nni_trial_id"] = nni.get_trial_id()
    nni.report_final_result(metric)
