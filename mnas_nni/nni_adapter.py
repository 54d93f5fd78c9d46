"""Every workaround for NNI 3.0 lives here, each with a comment naming the NNI behaviour it works around.

NNI 3.0 is the last release (upstream archived in 2024); we run it on torch 2.13, numpy 2 and
pytorch-lightning 2.x, which it predates.
"""

from __future__ import annotations

import warnings


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
        config.training_service.use_active_gpu = False if execution == "local" else None
        if execution == "remote":
            from nni.experiment.config import RemoteMachineConfig

            config.training_service.machine_list = [RemoteMachineConfig(**m) for m in machines or []]
            config.training_service.reuse_mode = False
            if nni_manager_ip:
                config.nni_manager_ip = nni_manager_ip
        if trial_code_directory:
            config.trial_code_directory = trial_code_directory
    else:
        raise ValueError(f"unknown execution {execution!r}")
    config.max_trial_number = max_trials
    config.experiment_working_directory = working_dir
    if max_trial_duration:
        config.max_trial_duration = max_trial_duration
    return config


def make_experiment(space, evaluator, strategy, config, on_final_metric, on_training_end, experiment_id=None):
    """A `NasExperiment` whose engine reports every trial's raw final metric and end to us first.

    NNI canonicalises a dict final metric to its `default` float before strategies see `model.metric`;
    the raw dict (accuracy, latency, ...) is only on the `FinalMetricEvent`. Callbacks registered on the
    engine right after it is created run before the strategy's own.

    The training-service engine holds submitted models by weak reference and silently drops the metric and
    trial-end events of a model nobody references any more - NNI's own Random strategy keeps none - so
    we keep a strong reference to every submitted model.
    """
    from nni.nas.execution.event import ModelEventType
    from nni.nas.experiment import NasExperiment

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
            return engine

    return RecordingExperiment(space, evaluator, strategy, config, id=experiment_id)


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
