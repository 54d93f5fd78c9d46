"""A search from a composed config: build the parts each config word names, run them through NNI, record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnas_nni import nni_adapter, resume
from mnas_core.errors import ConfigError
from mnas_core.instantiate import instantiate
from mnas_nni.observers import ObserverGroup, SearchInfo, SearchObserver, TrialLogObserver
from mnas_nni.recorder import TrialRecorder
from mnas_nni.records import TrialRecord, load_records
from mnas_nni.confirm import confirm_count, confirm_top_k
from mnas_nni.context import SETTINGS, context_for
from mnas_nni.trial import evaluate_trial

log = logging.getLogger(__name__)
EXECUTIONS = ("sequential", "local", "remote")


def run_dir_of(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def check_search_settings(search: dict[str, Any]) -> None:
    if search["execution"] not in EXECUTIONS:
        raise ConfigError(f"search.execution={search['execution']!r} is unknown; use one of {', '.join(EXECUTIONS)}")
    if not isinstance(search["max_trials"], int) or search["max_trials"] < 1:
        raise ConfigError(f"search.max_trials must be a positive integer, got {search['max_trials']!r}")
    if not isinstance(search["concurrency"], int) or search["concurrency"] < 1:
        raise ConfigError(f"search.concurrency must be a positive integer, got {search['concurrency']!r}")


def build_space(cfg: DictConfig, datamodule: Any):
    overrides = {"resolution": int(datamodule.resolution)}
    if cfg.search_space.get("num_classes") is None:
        overrides["num_classes"] = int(datamodule.num_classes)
    return instantiate(cfg.search_space, "search_space", _convert_="all", **overrides)  # plain lists: NNI traces them


def run_search(cfg: DictConfig, run_dir: Path | None = None, observers: list[SearchObserver] | None = None
               ) -> list[TrialRecord]:
    """Run one search and return its finished trials (also in `run_dir/trials.jsonl`)."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    search = resolved["search"]
    check_search_settings(search)
    resume_state: dict[str, Any] = {}
    if search.get("resume"):  # continue an earlier search in its own run directory
        run_dir = resume.find_run_dir(search["resume"], Path.cwd() / "outputs")
        resume_state = resume.read_state(run_dir)
    run_dir = Path(run_dir or run_dir_of(cfg)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    remote: dict[str, Any] = {}
    if search["execution"] == "remote":  # an unreachable or refusing machine fails here, before anything else
        remote = nni_adapter.prepare_remote(search.get("machines"), nni_manager_ip=search.get("nni_manager_ip"),
                                            port=int(search["port"]), working_dir=run_dir / "nni")

    # Fail on bad input before any training: reward settings, data folder, device, tracker.
    settings = {key: resolved[key] for key in SETTINGS}
    context = context_for(settings)  # the trials of this process share it
    reward = context.reward
    datamodule = context.datamodule
    confirm_k = confirm_count(search, context.evaluator.kind)  # builds the evaluator: a bad setting fails now
    space = build_space(cfg, datamodule)
    resolved["search_space"].update(num_classes=space.config.num_classes, resolution=space.config.resolution)
    nni_adapter.import_strategies_quietly()
    strategy = instantiate(cfg.strategy, "strategy", _convert_="all")
    device_info = context.device.describe()  # reaches the device once: unreachable, key refused, no phone -> one line
    tracker = instantiate(cfg.tracking, "tracking")

    from mnas_nni.console import ConsoleObserver

    trial_log = run_dir / "trials.jsonl"
    previous = load_records(trial_log)
    # The tracker starts first: a server that is down stops the search before the console shows anything.
    group = ObserverGroup(tracker, TrialLogObserver(trial_log),
                          ConsoleObserver(total=search["max_trials"], top_k=search["top_k"]), *(observers or []))
    if hasattr(strategy, "on_update"):
        strategy.on_update = lambda stats: group.on_controller_update(int(stats.get("update", 0)), stats)

    start = SearchInfo(
        run_dir=run_dir,
        config=resolved,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        device=device_info,
        strategy=cfg.strategy.get("_target_", "?"),
        target_ms=reward.target_ms,
        decisions={label: list(m.values) for label, m in space.simplify().items()},
        resumed=bool(previous),
    )
    try:
        group.on_search_start(start)
    except BaseException:
        group.close()
        raise
    recorder = TrialRecorder(group, first_trial=len(previous) + 1)

    from nni.nas.evaluator import FunctionalEvaluator

    evaluator = FunctionalEvaluator(
        evaluate_trial,
        **settings,
        failure_reward=float(search["failure_reward"]),
        timeout_s=search["trial_timeout_s"],
        replay=resume.replay_table(trial_log, resume_state.get("checkpointed_trials", 0)) if resume_state else None,
    )
    config = nni_adapter.experiment_config(
        search["execution"],
        max_trials=search["max_trials"],
        concurrency=search["concurrency"],
        working_dir=str(run_dir / "nni"),
        **remote,
    )

    def checkpoint(experiment: Any) -> None:
        experiment.save_checkpoint()
        resume.write_state(run_dir, experiment.id, recorder.next_trial - 1)

    experiment = nni_adapter.make_experiment(space, evaluator, strategy, config, recorder.on_final_metric,
                                             recorder.on_training_end, experiment_id=resume_state.get("experiment_id"),
                                             after_training_end=checkpoint)
    resume.write_state(run_dir, experiment.id, resume_state.get("checkpointed_trials", 0))
    nni_adapter.quiet_nni_console()
    nni_adapter.load_json_without_comment_stripping()
    nni_adapter.load_own_checkpoints_fully()
    try:
        nni_adapter.run_or_resume(experiment, int(search["port"]), resume=bool(resume_state))
        recorder.flush()
        confirm_top_k(context, trial_log, confirm_k)  # stand-alone training of the top k (mnas_nni/confirm.py)
    finally:
        recorder.flush()
        records = load_records(trial_log)
        group.on_search_end(records)
        group.close()
    return records
