"""Every workaround for NNI 3.0 lives here, each with a comment naming the NNI behaviour it works around.

NNI 3.0 is the last release (upstream archived in 2024); we run it on torch 2.13, numpy 2 and
pytorch-lightning 2.x, which it predates.

The one exception is the remote training service: its machine checks live in `mnas_nni/nni_remote.py`, and
with them its two workarounds (the python shim that skips NNI's `pip install nni --upgrade`, the one-file
trial code directory), commented there. The app calls it through `prepare_remote`, imported here.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

from mnas_nni.nni_database import prepare_trial_database, results_the_stop_missed  # noqa: F401 - NNI's database
from mnas_nni.nni_remote import prepare_remote  # noqa: F401 - the app calls nni_adapter.prepare_remote

log = logging.getLogger(__name__)


def silence_import_warnings() -> None:
    """NNI's `nas/nn/pytorch/layers.py` wraps every public name of `torch.nn` at import and warns for each one
    that is not an `nn.Module` subclass (`Buffer`, `LinearCrossEntropyOptions` in torch 2.13). The wrapping
    is harmless; the warnings are noise on every start."""
    warnings.filterwarnings("ignore", message=r".* is found to be not a nn\.Module", category=RuntimeWarning)


def import_strategies_quietly() -> None:
    """`nni.nas.strategy` imports gym whenever it is installed (the `rl` extra, for PolicyBasedRL), and
    gym 0.26 prints a deprecation notice to stderr on import. Import it once with stderr muted."""
    import contextlib
    import importlib.util
    import io

    if importlib.util.find_spec("gym") is not None:
        with contextlib.redirect_stderr(io.StringIO()):
            import gym  # noqa: F401
    import nni.nas.strategy  # noqa: F401


def quiet_nni_console() -> None:
    """NNI prints INFO lines for every step to the console, through its own handler and again through the
    root logger's; our progress bar shows progress, and the experiment log file under the run directory
    keeps them all. Console handlers get NNI's warnings and errors only."""
    import logging

    def console_handlers(logger: logging.Logger):
        return [h for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]

    def drop_nni_info(record: logging.LogRecord) -> bool:
        # The sequential engine logs every failed model at ERROR with its whole traceback (twice: through
        # NNI's handler and the root's); our console prints one line per failure, the log file keeps these.
        if record.name == "nni.nas.execution.sequential":
            return False
        # A resume that grows search.max_trials makes NNI's experiment resume log, at ERROR/WARNING, a
        # multi-line "Config is found but does not match the current config" diff and "loading will probably
        # fail": a budget change is expected and the load works; the log file keeps the diff.
        if record.name in ("nni.nas.experiment.experiment", "nni.experiment.experiment") and (
                "does not match the current config" in str(record.msg) or "inconsistent config" in str(record.msg)
                or "will NOT be overridden" in str(record.msg)):
            return False
        # Reloading a sequential experiment's checkpointed config warns that its `training_service` (the one NNI
        # itself filled in when it saved) "will be ignored": twice per resume, about nothing the user set.
        if record.name == "nni.nas.experiment.config.experiment" and "will be ignored for sequential" in str(record.msg):
            return False
        return not (record.name.startswith("nni") and record.levelno < logging.WARNING)

    for handler in console_handlers(logging.getLogger("nni")) + console_handlers(logging.getLogger()):
        if drop_nni_info not in handler.filters:
            handler.addFilter(drop_nni_info)


def experiment_config(execution: str, *, max_trials: int, concurrency: int, working_dir: str, port: int | None = None,
                      machines: list[dict] | None = None, nni_manager_ip: str | None = None,
                      trial_code_directory: str | None = None, max_trial_duration: str | None = None):
    """Build a `NasExperimentConfig`.

    The execution engine goes through the constructor: NNI 3.0 fails validation when it is assigned after
    construction. The sequential engine re-raises a trial's exception unless `continue_on_failure` is set;
    we want a failed trial recorded and the search to go on.
    """
    from nni.nas.experiment import NasExperimentConfig
    from nni.nas.experiment.config import SequentialEngineConfig

    if execution == "sequential":
        config = NasExperimentConfig(SequentialEngineConfig(continue_on_failure=True), "simplified")
    elif execution in ("local", "remote"):
        config = NasExperimentConfig("ts", "simplified", execution)
        config.trial_concurrency = concurrency
        if execution == "local":
            config.training_service.use_active_gpu = False  # RemoteConfig has no such field (assigning raises)
        else:
            from nni.experiment.config import RemoteMachineConfig

            # `machines` come from `prepare_remote`: checked over SSH, python_path = our python shim folder.
            config.training_service.machine_list = [RemoteMachineConfig(**m) for m in machines or []]
            # reuse_mode=False selects NNI's v3 remote service (nni_node/training_service/remote_v3): one trial
            # keeper daemon per machine that dials back to the manager's websocket. reuse_mode=True is the
            # older TrialDispatcher path.
            config.training_service.reuse_mode = False
            # The NAS trial command is `<this process's sys.executable> -m nni.nas.execution.training_service
            # trial`, an absolute path that need not exist on a machine. `_trial_command_params` is NNI's own
            # hook for the trial command's python: plain `python` resolves on every machine to the python
            # shim, because NNI puts python_path first on PATH for the trial keeper and trials inherit it.
            config._trial_command_params = {"python": "python"}
            if nni_manager_ip:
                config.nni_manager_ip = nni_manager_ip
        if trial_code_directory:
            # NNI copies the trial code directory to every machine (a tarball per experiment) and it defaults
            # to the working directory - for us the repository with its virtual environment. The NAS config
            # refuses any root `trial_code_directory` but the working directory (NasExperimentConfig.
            # _canonicalize); the training service's own field is only filled from the root when unset.
            config.training_service.trial_code_directory = trial_code_directory
    else:
        raise ValueError(f"unknown execution {execution!r}")
    config.max_trial_number = max_trials
    config.experiment_working_directory = working_dir
    if max_trial_duration:
        config.max_trial_duration = max_trial_duration
    return config


def make_experiment(space, evaluator, strategy, config, on_final_metric, on_training_end, experiment_id=None,
                    after_training_end=None, stopped=lambda: False, guarded_write=lambda path, write: write()):
    """A `NasExperiment` whose engine reports every trial's raw final metric and end to us first.

    NNI canonicalises a dict final metric to its `default` float before strategies see `model.metric`;
    the raw dict (accuracy, latency, ...) is only on the `FinalMetricEvent`. Callbacks registered on the
    engine right after it is created run before the strategy's own.

    The training-service engine holds submitted models by weak reference and silently drops the metric and
    trial-end events of a model nobody references any more - NNI's own Random strategy keeps none - so
    we keep a strong reference to every submitted model.

    NNI checkpoints the strategy only when an experiment starts and stops, so a killed search loses it.
    `after_training_end` runs once every callback of a trial's end - the strategy's included - has run:
    the place to checkpoint a strategy that has taken the result in.

    A search stopped on purpose (`stopped()`): the trial that was cut short ends as `Interrupted`; NNI would
    tell the strategy (which counts it as a failure) and then checkpoint that state when it stops. Neither
    happens: the interrupted trial's end reaches nobody, and the checkpoint of the last finished trial stands,
    so a resumed search runs that trial again.
    """
    from nni.nas.execution.event import ModelEventType
    from nni.nas.experiment import NasExperiment
    from nni.nas.space import ModelStatus

    class RecordingExperiment(NasExperiment):
        def execution_engine_factory(self, config):
            engine = super().execution_engine_factory(config)
            engine.register_model_event_callback(ModelEventType.FinalMetric, on_final_metric)
            engine.register_model_event_callback(ModelEventType.TrainingEnd, on_training_end)
            submitted: list = []
            submit = engine.submit_models

            def submit_and_keep(*models):
                submitted.extend(models)
                return submit(*models)

            engine.submit_models = submit_and_keep
            dispatch = engine.dispatch_model_event

            def dispatch_then_checkpoint(event, **kwargs):
                ended = getattr(event, "event_type", event) in (ModelEventType.TrainingEnd, "training_end")
                if ended and (stopped() or getattr(event, "status", None) == ModelStatus.Interrupted):
                    return
                dispatch(event, **kwargs)
                if ended and after_training_end is not None:
                    after_training_end(self)

            engine.dispatch_model_event = dispatch_then_checkpoint
            return engine

        def save_checkpoint(self) -> None:
            """NNI's own writes config.json and state.ckpt in place (open('w'), torch.save), so a search
            killed while it saves leaves a checkpoint that cannot be loaded; each file is written under a
            temporary name and renamed. torch.save reports a full disk as a RuntimeError with no errno, so the
            state is serialized in memory and written by Python (a full disk is an OSError for
            `guarded_write`)."""
            if not stopped():
                guarded_write(self._checkpoint_directory, self._write_checkpoint)

        def _write_checkpoint(self) -> None:
            import nni
            from nni.nas.utils.serializer import TorchSerializer, get_default_serializer

            from mnas_nni.run.disk_space import write_file_atomically

            directory = self._checkpoint_directory
            directory.mkdir(parents=True, exist_ok=True)
            serializer = get_default_serializer()
            files = {directory / "config.json": nni.dump(self.config.json(), indent=2).encode()}
            if self._engine is not None:
                state = directory / f"state.ckpt{serializer.suffix}"
                if isinstance(serializer, TorchSerializer):
                    import torch

                    buffer = io.BytesIO()
                    torch.save(self.state_dict(), buffer)
                    files[state] = buffer.getvalue()
                else:
                    files[state] = nni.dump(self.state_dict(), indent=2).encode()
            for path, data in files.items():
                write_file_atomically(path, data)

    return RecordingExperiment(space, evaluator, strategy, config, id=experiment_id)


def apply_patches() -> None:
    """Every process-wide NNI workaround, once, before strategies are built (each is idempotent)."""
    silence_import_warnings()
    import_strategies_quietly()
    load_json_without_comment_stripping()
    load_own_checkpoints_fully()
    ignore_resume_data_commands()


def trial_evaluator(function, **arguments):
    """NNI's `FunctionalEvaluator`: `function(model, **arguments)` runs for every sampled model. The
    arguments are plain data (they are serialized to reach a training-service trial process)."""
    from nni.nas.evaluator import FunctionalEvaluator

    return FunctionalEvaluator(function, **arguments)


def run_or_resume(experiment, port: int, resume: bool, trials_left: int = 0) -> None:
    """`NasExperiment.resume()` reloads the strategy and engine state from the experiment's checkpoint
    directory; it needs the experiment in NNI's manifest (~/nni-experiments/.experiment), which a killed
    search leaves there. `trials_left`: the trials the resumed search still owes its budget (the
    checkpointed strategy has seen the rest)."""
    quiet_nni_console()
    if resume:
        prepare_trial_database(experiment, trials_left)
        experiment.resume(port=port, wait_completion=True, debug=False)
    else:
        experiment.run(port=port, wait_completion=True, debug=False)


def ignore_resume_data_commands() -> None:
    """On resume NNI's node manager sends the finished trials back to the tuner (IMPORT_DATA, and
    ADD_CUSTOMIZED_TRIAL_JOB for recovered ones) before its first trial request. NAS's tuner channel knows
    neither command: `TunerCommandChannel.receive` raises "Unknown command type", the listener thread dies,
    the request is never seen, and the resumed search waits forever. Our strategies restore their history
    from their own checkpoint, so the channel skips both commands."""
    from nni.runtime.tuner_command_channel.channel import TunerCommandChannel
    from nni.runtime.tuner_command_channel.command_type import CommandType

    receive = TunerCommandChannel._receive
    if getattr(receive, "_skips_resume_data", False):
        return
    skipped = (CommandType.ImportData, CommandType.AddCustomizedTrialJob)

    def receive_skipping_resume_data(self):
        while True:
            command_type, data = receive(self)
            if command_type not in skipped:
                return command_type, data
            log.debug("NNI channel: skipped %s on resume (strategies restore their own history)", command_type)

    receive_skipping_resume_data._skips_resume_data = True  # type: ignore[attr-defined]
    TunerCommandChannel._receive = receive_skipping_resume_data


def load_json_without_comment_stripping() -> None:
    """`nni.load` strips `//...` as comments by default (json_tricks), so any message carrying a URL or a
    `sqlite:///` path - e.g. the training service's trial-end command with a `file://` log path - fails to
    decode, and the strategy waits forever. NNI's own messages are plain JSON: load them as such."""
    import nni
    from nni.common import serializer

    if getattr(nni.load, "_keeps_comments", False):
        return

    def load(string=None, *, fp=None, preserve_order=False, ignore_comments=False, **kwargs):
        return serializer.load(string, fp=fp, preserve_order=preserve_order, ignore_comments=ignore_comments,
                               **kwargs)

    load._keeps_comments = True  # type: ignore[attr-defined]
    nni.load = load


def load_own_checkpoints_fully() -> None:
    """torch >= 2.6 loads with `weights_only=True` by default, so NNI's `TorchSerializer` refuses the strategy
    checkpoints NNI itself wrote (numpy arrays in Random's and RegularizedEvolution's states) and
    `NasExperiment.resume` fails. The file is the one this search wrote into its own run directory."""
    from nni.nas.utils import serializer

    class OwnCheckpointSerializer(serializer.TorchSerializer):
        def load(self, path):
            import torch

            found = serializer._find_path_with_prefix(path, self.suffix)
            return torch.load(str(found), map_location=self._map_location, weights_only=False)

    if type(serializer.get_default_serializer()).__name__ != "OwnCheckpointSerializer":
        serializer.set_default_serializer(OwnCheckpointSerializer())


# --- TPE --------------------------------------------------------------------------------------------------

def tpe(*, optimize_mode: str = "maximize", seed: int | None = None, tpe_args: dict[str, Any] | None = None,
        resample_duplicates: bool = True, retries: int = 1):
    """`nni.nas.strategy.TPE` (the `strategy=tpe` word), with its duplicate handling made usable for NAS.

    NNI 3.0's `TpeTuner` passes every suggestion through a `Deduplicator` that, on the first duplicate,
    switches to a grid search and from then on replaces each duplicate by the next grid point. The grid starts
    at the first value of every decision, so a converging TPE (which repeats itself often) is dragged to one
    corner of the space: on the MNAS space it does worse than random search. With `resample_duplicates` a
    duplicate is redrawn from TPE `retries` times, then replaced by a uniformly random new point (what NNI's
    random tuner draws); NNI's grid fallback is only the last resort (a nearly exhausted space).
    """
    from nni.algorithms.hpo import random_tuner
    from nni.algorithms.hpo.tpe_tuner import TpeTuner, suggest
    from nni.nas.strategy import TPE

    class ResamplingTpeTuner(TpeTuner):
        def update_search_space(self, space) -> None:
            super().update_search_space(space)
            grid_fallback = self.dedup

            def dedup(params):
                for attempt in range(2 * retries):
                    if grid_fallback._not_dup(params):  # records it when new
                        return params
                    if attempt < retries:
                        params = suggest(self.args, self.rng, self.space, self._history)
                    else:
                        params = random_tuner.suggest(self.rng, self.space)
                return grid_fallback(params)

            self.dedup = dedup

    tpe_args = dict(tpe_args) if tpe_args is not None else None
    strategy = TPE(optimize_mode=optimize_mode, seed=seed, tpe_args=tpe_args)
    if resample_duplicates:
        strategy.tuner = ResamplingTpeTuner(optimize_mode=optimize_mode, seed=seed, tpe_args=tpe_args)
    return strategy


def skip_tpe_submission_sleep() -> None:
    """`nni.nas.strategy.TPE` sleeps 1 s after every submission (nni/nas/strategy/hpo.py); on an in-process
    engine with an instant objective (the benches) that is pure waiting. The tuner itself is untouched."""
    import time

    from nni.nas.strategy import hpo

    class NoSleep:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(_seconds: float) -> None:
            return None

    hpo.time = NoSleep()
