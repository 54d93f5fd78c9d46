"""What the strategy benches share: a strategy composed exactly as `strategy=<word>` composes it, driven offline
through NNI's sequential engine with a FunctionalEvaluator, and the bookkeeping of a run (time split, memory).

`bench/strategies.py` (the MNAS space, NASWOT objective) and `bench/hw_nas_bench.py` (NAS-Bench-201 tables)
both drive their searches with `drive`.
"""

from __future__ import annotations

import logging
import os
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    logging.getLogger("nni").setLevel(logging.ERROR)
    logging.getLogger("strategies").setLevel(logging.ERROR)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


def compose(overrides: list[str]) -> Any:
    """The app's config (conf/config.yaml) composed with these overrides, as the CLI would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        return hydra_compose("config", overrides=overrides)


def make_strategy(word: str, seed: int, overrides: dict[str, Any], context: Sequence[str] = ()):
    """The strategy of ``strategy=<word>`` exactly as the CLI composes it (Hydra, defaults lists included);
    `context`: the run's other CLI overrides its config reads (``reward.target_ms=5.3``)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose([f"strategy={word}", *context]).strategy
    OmegaConf.update(cfg, "seed", seed, force_add=True)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return instantiate(cfg)


class FrozenSample(nn.Module):
    """What a bench trial receives: just the sample (the objective looks up or builds what it needs itself), so a
    strategy-heavy benchmark does not build a network per trial."""

    def __init__(self, sample: dict):
        super().__init__()
        self.sample = dict(sample)


def rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process (Linux /proc; ru_maxrss elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return {k: int(fields[f].split()[0]) / 1024 for k, f in (("now", "VmRSS"), ("peak", "VmHWM"))}
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"now": peak, "peak": peak}


def drive(strategy: Any, model_space: Any, evaluate: Callable[[Any], dict], budget: int) -> dict[str, Any]:
    """Run ``strategy`` over ``model_space`` for at most ``budget`` trials; ``evaluate(model)`` returns the trial's
    final metric (reported to NNI here). Returns the wall time, the time spent evaluating, and memory."""
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import SimplifiedModelSpace

    from mnas_nni import nni_adapter

    nni_adapter.skip_tpe_submission_sleep()
    spent = [0.0]

    def trial(model: Any) -> None:
        start = time.perf_counter()
        metric = evaluate(model)
        spent[0] += time.perf_counter() - start
        nni.report_final_result(metric)

    quiet()
    space = SimplifiedModelSpace.from_model(model_space, FunctionalEvaluator(trial))
    engine = SequentialExecutionEngine(max_model_count=budget)
    before = rss_mb()
    start = time.perf_counter()
    strategy(space, engine)
    wall = time.perf_counter() - start
    after = rss_mb()
    out: dict[str, Any] = {"wall_s": wall, "eval_s": spent[0], "rss_before_mb": before["now"],
                           "rss_after_mb": after["now"], "rss_peak_mb": after["peak"]}
    if hasattr(strategy, "timing"):
        out["controller"] = dict(strategy.timing)
        out["counters"] = dict(strategy.counters)
    return out


def log_bench_run(uri: str, experiment: str, run_name: str, files: Sequence[Path],
                  dicts: dict[str, Any] | None = None) -> None:
    """One MLflow run of a bench: its files (PNG, JSON) as artifacts and `dicts` as JSON artifacts, in an
    experiment that opens in MLflow's model-training view."""
    import mlflow

    from mnas_nni.tracking import EXPERIMENT_KIND

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, tags={EXPERIMENT_KIND: "custom_model_development"})
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name):
        for path in files:
            mlflow.log_artifact(str(path))
        for name, value in (dicts or {}).items():
            mlflow.log_dict(value, name)
