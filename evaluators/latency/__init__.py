"""Measured latency of sampled models on a target device (MnasNet: Pixel 1, one thread, batch 1).

    device = hydra.utils.instantiate(cfg.device)          # LocalDevice | SshDevice | AdbDevice
    evaluator = LatencyEvaluator(device, cache_path=..., lock_dir=...)
    result = evaluator.measure(model, arch_key, (1, 3, 224, 224))   # -> LatencyResult (ms)

Modules: export (ONNX), device (the plugin surface), local / ssh / adb (plugins), android_benchmarks
(tools run over adb), ort_runner (the measuring script), lock (one measurement per device), cache (SQLite),
evaluator (export -> lock -> measure -> cache), layers / table / predictor / modes (the layer-wise latency
table measured once per device, its calibrated predictor, and `latency.mode=measure|predict|predict_verify`).
"""

from .adb import AdbCliTransport, AdbDevice, AdbutilsTransport, cpu_mask
from .android_benchmarks import (
    BenchmarkJob,
    ExecutorRunnerParser,
    ExecutorRunnerRunner,
    OnnxPerfTestParser,
    OnnxPerfTestRunner,
    TFLiteBenchmarkModelParser,
    TFLiteBenchmarkModelRunner,
)
from .cache import DEFAULT_CACHE_PATH, LatencyCache
from .device import LatencyDevice
from .evaluator import LatencyEvaluator
from .export import ONNX_OPSET, export_onnx
from .layers import arch_signatures, space_signatures
from .local import LocalDevice
from .lock import DEFAULT_LOCK_DIR, device_lock, read_intervals
from .modes import MODES, PredictedLatency, PredictedResult, latency_for_mode
from .predictor import (
    BuildReport,
    LatencyPredictor,
    MissingLayerError,
    Terms,
    build_table,
    error_summary,
    fit_calibration,
)
from .result import LatencyResult, summarize
from .ssh import SshDevice
from .table import LatencyTable, default_table_path

__all__ = [
    "DEFAULT_CACHE_PATH",
    "DEFAULT_LOCK_DIR",
    "MODES",
    "ONNX_OPSET",
    "AdbCliTransport",
    "AdbDevice",
    "AdbutilsTransport",
    "BenchmarkJob",
    "BuildReport",
    "ExecutorRunnerParser",
    "ExecutorRunnerRunner",
    "LatencyCache",
    "LatencyDevice",
    "LatencyEvaluator",
    "LatencyPredictor",
    "LatencyResult",
    "LatencyTable",
    "LocalDevice",
    "MissingLayerError",
    "OnnxPerfTestParser",
    "OnnxPerfTestRunner",
    "PredictedLatency",
    "PredictedResult",
    "SshDevice",
    "TFLiteBenchmarkModelParser",
    "TFLiteBenchmarkModelRunner",
    "Terms",
    "arch_signatures",
    "build_table",
    "cpu_mask",
    "default_table_path",
    "device_lock",
    "error_summary",
    "export_onnx",
    "fit_calibration",
    "latency_for_mode",
    "read_intervals",
    "space_signatures",
    "summarize",
]
