"""One trial: measure the sampled model's latency on the device, train it briefly for accuracy, score it.

`evaluate_trial` is the function NNI's `FunctionalEvaluator` runs for every sampled model, in-process or in
a training-service trial process. Its keyword arguments are plain dicts (they are serialized to reach a
trial process). It reports one final metric dict: `default` (what strategies optimise, the MNAS reward),
accuracy, latency, params, multiply-adds, timings and, on failure, the reason.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nni
from torch import nn

from mnas_nni import resume
from mnas_nni.errors import DeviceError, TrialError
from mnas_nni.instantiate import instantiate
from mnas_nni.records import FAILED, SUCCEEDED

log = logging.getLogger(__name__)
_DATAMODULES: dict[str, Any] = {}  # one per data config and process: the data is loaded once


def datamodule_for(data_cfg: dict[str, Any]) -> Any:
    key = json.dumps(data_cfg, sort_keys=True, default=str)
    if key not in _DATAMODULES:
        _DATAMODULES[key] = instantiate(data_cfg, "data")
    return _DATAMODULES[key]


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


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


def measure_with_retries(evaluator: Any, model: nn.Module, arch_key: str, shape: tuple[int, ...], retries: int):
    """A device that is briefly unreachable or slow gets `retries` more tries before the trial fails."""
    for attempt in range(retries + 1):
        try:
            return evaluator.measure(model, arch_key, shape)
        except DeviceError as err:
            if attempt == retries:
                raise type(err)(f"{err} (gave up after {retries + 1} attempts)") from None
            log.warning("latency measurement failed (%s); retrying (%d/%d)", err, attempt + 1, retries)
            time.sleep(min(2.0 ** attempt, 10.0))


def run_trial(model: nn.Module, *, data: dict, train: dict, device: dict, reward: dict, latency: dict,
              seed: int = 0) -> dict[str, Any]:
    """Latency first (cheap, and a device fault then costs no training), then proxy training, then the reward."""
    from evaluators.accuracy import train_proxy
    from evaluators.latency import LatencyEvaluator
    from search_spaces.profile import profile_model

    arch = getattr(model, "arch", None)
    if arch is None:
        raise TrialError("the sampled model carries no architecture (.arch); use a search_spaces model space")
    datamodule = datamodule_for(data)
    resolution = int(datamodule.resolution)
    profile = profile_model(model, resolution)

    started = time.perf_counter()
    evaluator = LatencyEvaluator(instantiate(device, "device"), cache_path=latency.get("cache_path"),
                                 lock_dir=latency["lock_dir"], outlier_rel_tol=latency["outlier_rel_tol"],
                                 interval_log=latency.get("interval_log"))
    measured = measure_with_retries(evaluator, model, arch.key, (1, 3, resolution, resolution),
                                    int(latency.get("retries", 0)))
    measure_seconds = time.perf_counter() - started

    proxy = train_proxy(model, datamodule, seed=seed, **train)
    if not math.isfinite(proxy.accuracy):
        raise TrialError(f"validation accuracy is {proxy.accuracy}; lower the learning rate")
    score = instantiate(reward, "reward")
    return {
        "default": score(proxy.accuracy, measured.median_ms),
        "status": SUCCEEDED,
        "accuracy": proxy.accuracy,
        "latency_ms": measured.median_ms,
        "latency": measured.to_dict(),
        "params": profile.params,
        "macs": profile.macs,
        "train_seconds": proxy.seconds,
        "measure_seconds": measure_seconds,
        "history": proxy.history,
        "arch": arch.to_dict(),
    }


_REPLAYED: set[int] = set()


def evaluate_trial(model: nn.Module, *, failure_reward: float = 0.0, timeout_s: float | None = None,
                   replay: dict[str, dict] | None = None, **settings: Any) -> None:
    """NNI entry point. A failing trial still reports its reason (and `failure_reward`), then re-raises so
    NNI marks it failed; the search goes on. An architecture whose result a killed search recorded after its
    last checkpoint (`replay`, see mnas_nni/resume.py) reports that result instead of training again."""
    arch = getattr(model, "arch", None)
    known = (replay or {}).get(resume.arch_key(arch.to_dict())) if arch is not None else None
    if known is not None and known["replayed_trial"] not in _REPLAYED:
        _REPLAYED.add(known["replayed_trial"])
        nni.report_final_result({**known, "default": known["default"] if known["default"] is not None
                                 else float(failure_reward)})
        return
    started = time.perf_counter()
    try:
        with deadline(timeout_s):
            metric = run_trial(model, **settings)
    except Exception as err:
        arch = getattr(model, "arch", None)
        nni.report_final_result({
            "default": float(failure_reward),
            "status": FAILED,
            "error": one_line(err),
            "arch": arch.to_dict() if arch is not None else None,
            "duration_seconds": time.perf_counter() - started,
            "nni_trial_id": nni.get_trial_id(),
        })
        raise
    metric["duration_seconds"] = time.perf_counter() - started
    metric["nni_trial_id"] = nni.get_trial_id()
    nni.report_final_result(metric)
