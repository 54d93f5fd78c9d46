"""A search from a composed config: build the parts each config word names, run them through NNI, record.

    run_search(cfg)  =  check settings -> open the run directory -> build the parts (every bad input fails
                        here, before any training) -> run NNI's experiment -> the recorded trials
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from mnas_core.errors import ConfigError
from mnas_nni import nni_adapter, plugins
from mnas_nni.run import disk_space, preflight, resume, stopping
from mnas_nni.run.confirm import confirm_count, confirm_top_k
from mnas_nni.run.context import SETTINGS, TrialContext, context_for
from mnas_nni.run.lock import own_run_dir, release_all, release_run_dir
from mnas_nni.run.observers import FailureGuard, ObserverGroup, SearchInfo, SearchObserver, TrialLogObserver
from mnas_nni.run.recorder import TrialRecorder, record_from_metric
from mnas_nni.run.records import (
    TrialLog,
    TrialRecord,
    load_records,
    set_aside_failed_after,
    set_aside_torn_tail,
)
from mnas_nni.tracking import mask_secrets
from mnas_nni.tracking.console import ConsoleObserver, keep_file_only_records_off_console
from mnas_nni.trial import evaluate_trial

log = logging.getLogger(__name__)
EXECUTIONS = ("sequential", "local", "remote")


def run_dir_of(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def given_overrides() -> list[str] | None:
    """The keys set on this command line (`train.epochs=2` -> `train.epochs`), or None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task
            if o not in resume.INJECTED_CHOICES]  # the run's own groups, put there for the resume


def check_search_settings(search: dict[str, Any]) -> None:
    if search["execution"] not in EXECUTIONS:
        raise ConfigError(f"search.execution={search['execution']!r} is unknown; use one of {', '.join(EXECUTIONS)}")
    if not isinstance(search["max_trials"], int) or search["max_trials"] < 1:
        raise ConfigError(f"search.max_trials must be a positive integer, got {search['max_trials']!r}")
    if not isinstance(search["concurrency"], int) or search["concurrency"] < 1:
        raise ConfigError(f"search.concurrency must be a positive integer, got {search['concurrency']!r}")


def build_space(cfg: DictConfig, datamodule: Any):
    overrides = {"resolution": int(datamodule.resolution)}
    wanted, classes = cfg.search_space.get("num_classes"), int(datamodule.num_classes)
    if wanted is None:
        overrides["num_classes"] = classes
    elif int(wanted) != classes:
        raise ConfigError(f"search_space.num_classes={wanted} but the data has {classes} classes; "
                          "drop the override (null takes the data's) or point data.root at the matching data")
    return plugins.build("search_space", cfg.search_space, _convert_="all", **overrides)  # plain lists: NNI traces them


@dataclass
class SearchParts:
    """Everything a search runs with, built (and so checked) before the first trial."""

    run_dir: Path
    config: dict[str, Any]  # resolved; search_space.num_classes / resolution as built
    context: TrialContext
    space: Any
    strategy: Any
    tracker: SearchObserver
    device_info: dict[str, Any]
    remote: dict[str, Any] = field(default_factory=dict)
    resume_state: dict[str, Any] = field(default_factory=dict)


def build_parts(cfg: DictConfig, run_dir: Path | None = None) -> SearchParts:
    """Every part a config word names. Bad input (reward, data folder, device, tracker, remote machines)
    fails here with one line, before anything is trained."""
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    search = config["search"]
    check_search_settings(search)
    resume_state: dict[str, Any] = {}
    if search.get("resume"):  # continue an earlier search in its own run directory, with its own config
        run_dir = resume.find_run_dir(search["resume"], Path.cwd() / "outputs")
        own_run_dir(run_dir)  # before reading its state: a second resume of it stops here
        resume_state = resume.read_state(run_dir)
        config = resume.resumed_config(run_dir, config, given_overrides())
        cfg = OmegaConf.create(config)
        search = config["search"]
    run_dir = Path(run_dir or run_dir_of(cfg)).resolve()
    preflight.check_folders(run_dir, config["latency"])
    own_run_dir(run_dir)  # a second search started in this folder is refused in one line
    remote: dict[str, Any] = {}
    if search["execution"] == "remote":  # an unreachable or refusing machine fails here, before anything else
        remote = nni_adapter.prepare_remote(search.get("machines"), nni_manager_ip=search.get("nni_manager_ip"),
                                            port=int(search["port"]), working_dir=run_dir / "nni")
    nni_adapter.apply_patches()
    context = context_for({key: config[key] for key in SETTINGS})
    context.reward  # noqa: B018 - built now: a bad target or exponent fails before the data is loaded
    space = build_space(cfg, context.datamodule)
    preflight.check_data_decodes(context.datamodule)
    context.evaluator  # noqa: B018 - built now: bad train.* settings fail before the first trial
    config["search_space"].update(num_classes=space.config.num_classes, resolution=space.config.resolution)
    strategy = plugins.build("strategy", cfg.strategy, _convert_="all")
    device_info = context.device.describe()  # reaches the device once: unreachable, key refused, no phone
    context.latency  # noqa: B018 - latency.mode=predict*: a missing, damaged or foreign layer table fails here
    tracker = plugins.build("tracking", cfg.tracking)
    return SearchParts(run_dir, config, context, space, strategy, tracker, device_info, remote, resume_state)


def run_search(cfg: DictConfig, run_dir: Path | None = None, observers: list[SearchObserver] | None = None
               ) -> list[TrialRecord]:
    """Run one search and return its finished trials (also in `run_dir/trials.jsonl`)."""
    try:
        parts = build_parts(cfg, run_dir)
    except BaseException:
        release_all()  # set-up failed after taking the folder: a sweep's next job may use it
        raise
    try:
        disk_space.keep_reserve(parts.run_dir)  # a full disk mid-search then loses no finished trial
        return _run(cfg, parts, observers)
    finally:
        disk_space.release_reserve(parts.run_dir)
        release_run_dir(parts.run_dir)


def _run(cfg: DictConfig, parts: SearchParts, observers: list[SearchObserver] | None) -> list[TrialRecord]:
    keep_file_only_records_off_console()
    config, search, run_dir = parts.config, parts.config["search"], parts.run_dir
    confirm_k = confirm_count(search, parts.context.evaluator.kind)
    def guarded_write(path: Path, write: Any) -> None:  # a full disk stops the search once this write is made
        disk_space.write_or_stop(path, write, stopping.abort)

    masked = mask_secrets(config)  # a resume takes the masked values from its own command
    guarded_write(run_dir / resume.CONFIG_FILE, lambda: resume.write_config(run_dir, masked))
    checkpointed = [parts.resume_state.get("checkpointed_trials", 0)]

    def save_state(rerun_failed: bool = False) -> None:  # resume.json: where a resume of this search starts
        guarded_write(run_dir / resume.STATE_FILE,
                      lambda: resume.write_state(run_dir, experiment.id, checkpointed[0], rerun_failed=rerun_failed))

    def stop_for_failures(reason: str) -> None:
        save_state(rerun_failed=True)
        stopping.abort(reason)

    trial_log = run_dir / "trials.jsonl"
    torn = set_aside_torn_tail(trial_log)
    if torn is not None:
        print(f"{trial_log.name}: its last line was cut short (a kill mid-write); set aside in {torn}", flush=True)
    if parts.resume_state.get("rerun_failed"):  # stopped on failures in a row: those trials run again
        side, moved = set_aside_failed_after(trial_log, parts.resume_state.get("checkpointed_trials", 0))
        if moved:
            print(f"{moved} trial(s) that failed before the stop run again (their records: {side})", flush=True)
    if parts.resume_state:
        recovered = recover_missed_results(trial_log, run_dir, parts.resume_state.get("experiment_id"))
        if recovered:
            print(f"{recovered} trial(s) that finished as the search stopped were recorded from NNI's database",
                  flush=True)
    previous = load_records(trial_log)
    # The tracker starts first: a server that is down stops the search before the console shows anything.
    group = ObserverGroup(parts.tracker, TrialLogObserver(trial_log, stopping.abort),
                          ConsoleObserver(total=search["max_trials"], top_k=search["top_k"]),
                          FailureGuard(search["stop_after_failures"], stop_for_failures),
                          *(observers or []))
    if hasattr(parts.strategy, "on_update"):
        parts.strategy.on_update = lambda stats: group.on_controller_update(int(stats.get("update", 0)), stats)
    start = SearchInfo(
        run_dir=run_dir, config=config, config_yaml=yaml.safe_dump(config, sort_keys=False), device=parts.device_info,
        strategy=cfg.strategy.get("_target_", "?"), target_ms=parts.context.reward.target_ms,
        decisions={label: list(m.values) for label, m in parts.space.simplify().items()}, resumed=bool(previous),
    )
    try:
        group.on_search_start(start)
    except BaseException:
        group.close()
        raise
    show_ui_hint(parts.tracker)
    recorder = TrialRecorder(group, first_trial=len(previous) + 1)
    replay = resume.replay_table(trial_log, parts.resume_state.get("checkpointed_trials", 0)) \
        if parts.resume_state else None
    evaluator = nni_adapter.trial_evaluator(evaluate_trial, **{key: config[key] for key in SETTINGS},
                                            failure_reward=float(search["failure_reward"]),
                                            timeout_s=search["trial_timeout_s"], replay=replay)
    experiment_config = nni_adapter.experiment_config(search["execution"], max_trials=search["max_trials"],
                                                      concurrency=search["concurrency"],
                                                      working_dir=str(run_dir / "nni"), **parts.remote)

    def checkpoint(experiment: Any) -> None:
        if recorder.last_ok is False:  # after a success only: failures in a row that stop the search run again
            return
        with stopping.signals_deferred():  # a stop waits until the checkpoint and resume.json agree
            experiment.save_checkpoint()
            checkpointed[0] = recorder.next_trial - 1
            save_state()

    experiment = nni_adapter.make_experiment(parts.space, evaluator, parts.strategy, experiment_config,
                                             recorder.on_final_metric, recorder.on_training_end,
                                             experiment_id=parts.resume_state.get("experiment_id"),
                                             after_training_end=checkpoint, stopped=lambda: stopping.STATE.requested,
                                             guarded_write=guarded_write)
    save_state()
    with stopping.stop_on_signals() as stop:
        try:
            nni_adapter.run_or_resume(experiment, int(search["port"]), resume=bool(parts.resume_state),
                                      trials_left=search["max_trials"] - checkpointed[0])
            stopping.raise_if_stopped()  # NNI ends the run quietly on a KeyboardInterrupt
            recorder.flush()
            confirm_top_k(parts.context, trial_log, confirm_k)  # stand-alone training of the top k (run/confirm.py)
            check_some_succeeded(load_records(trial_log))
        except stopping.SearchAborted as err:
            err.run_dir = run_dir  # type: ignore[attr-defined]
            raise
        except KeyboardInterrupt as err:
            if stop.abort_reason is not None:  # the search stopped itself (a full disk, failures in a row)
                aborted = stopping.SearchAborted(stop.abort_reason)
                aborted.run_dir = run_dir  # type: ignore[attr-defined]
                raise aborted from None
            stopped = err if isinstance(err, stopping.SearchStopped) else stopping.SearchStopped(stop.signum or 2)
            stopped.run_dir = run_dir  # type: ignore[attr-defined]
            raise stopped from None
        finally:
            if not stop.requested:  # a trial cut short by the stop is re-run on resume, not recorded as failed
                recorder.flush()
            records = load_records(trial_log)
            group.on_search_end(records)
            group.close()
            show_ui_hint(parts.tracker)
    return records


def recover_missed_results(trial_log: Path, run_dir: Path, experiment_id: str | None) -> int:
    """Appends to the trial log the results that finished while the search stopped and never reached it
    (mnas_nni/nni_database.py); the resumed search replays them instead of training again."""
    records = load_records(trial_log)
    missed = nni_adapter.results_the_stop_missed(run_dir / "nni", experiment_id,
                                                 {r.nni_trial_id for r in records if r.nni_trial_id})
    log, trial = TrialLog(trial_log), max((r.trial for r in records), default=0)
    for offset, (metric, sample) in enumerate(missed, start=1):
        log.append(record_from_metric(trial + offset, metric, sample))
    return len(missed)


def check_some_succeeded(records: list[TrialRecord]) -> None:
    if records and not any(r.ok for r in records):
        raise stopping.SearchAborted(f"every trial failed ({len(records)}); the last: {records[-1].error}")


def show_ui_hint(tracker: SearchObserver) -> None:
    hint = getattr(tracker, "ui_hint", lambda: None)()
    if hint:
        print(hint, flush=True)
