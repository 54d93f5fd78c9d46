"""One export per runtime: what the latency devices measure and what `python -m mnas_nni.export` ships are the
same graph (eval mode, batch 1). ONNX (opset 17, input `input`, output `logits`) for ONNX Runtime; a `.pte`
program lowered to XNNPACK (`torch.export` -> ExecuTorch) for ExecuTorch, the runtime PyTorch models ship in on
phones."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnas_core.errors import ConfigError

ONNX_OPSET = 17
RUNTIMES = ("onnxruntime", "executorch")  # device.runtime
MODEL_SUFFIX = {"onnxruntime": ".onnx", "executorch": ".pte"}
RUNTIME_EXTRA = {"executorch": "executorch"}  # the pip extra that installs a runtime


def check_runtime(runtime: str, installed_here: bool = True) -> None:
    """A known runtime, and with `installed_here` one whose package this interpreter imports (a board's or
    another Python's packages are its runner's to report), else one line naming the fix."""
    import importlib.util

    if runtime not in RUNTIMES:
        raise ConfigError(f"device.runtime={runtime!r} is unknown; use one of {', '.join(RUNTIMES)}")
    if installed_here and runtime != "onnxruntime" and importlib.util.find_spec(runtime) is None:
        raise ConfigError(f"device.runtime={runtime} needs the {runtime} package: "
                          f"pip install 'mnas-nni[{RUNTIME_EXTRA[runtime]}]'")


def export_for_runtime(runtime: str, model: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    """The model file `runtime` runs (`path` takes the runtime's suffix)."""
    target = Path(path).with_suffix(MODEL_SUFFIX[runtime])
    return export_pte(model, input_shape, target) if runtime == "executorch" else export_onnx(model, input_shape, target)


def _dummy_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise ConfigError(f"input_shape must look like (1, C, H, W) with positive sizes, got {shape}")
    first_param = next(model.parameters(), None)
    device = first_param.device if first_param is not None else torch.device("cpu")
    dtype = first_param.dtype if first_param is not None and first_param.is_floating_point() else torch.float32
    return torch.zeros((1, *shape[1:]), device=device, dtype=dtype)


def _write_atomically(target: Path, write: Any) -> Path:
    """`write(tmp_path)` into a temporary file beside `target`, then renamed: readers never see half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp_name)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600: an exported model is for others to read too
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def export_pte(model: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    """Write ``model`` as an ExecuTorch program lowered to XNNPACK (batch 1, float32) and return the path."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise ConfigError("exporting for ExecuTorch needs the executorch package: "
                          f"pip install 'mnas-nni[{RUNTIME_EXTRA['executorch']}]'") from None
    dummy = _dummy_input(model, input_shape)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            program = torch.export.export(model, (dummy,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    finally:
        model.train(was_training)

    def write(tmp_name: str) -> None:
        with open(tmp_name, "wb") as f:
            f.write(lowered.buffer)

    return _write_atomically(Path(path), write)


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    """Write ``model`` as ONNX to ``path`` and return it.

    Batch is forced to 1 (the paper's setting); the model's train/eval mode is restored afterwards.
    The legacy TorchScript exporter (dynamo=False) is used: it needs no onnxscript and, for the same model,
    writes the same bytes every time. The file appears atomically, so concurrent readers never see half of it.
    """
    dummy = _dummy_input(model, input_shape)
    was_training = model.training

    def write(tmp_name: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
            # The pool shortcut's channel slice cannot be constant-folded; the exporter says so on every export.
            warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1", category=UserWarning)
            torch.onnx.export(
                model, (dummy,), tmp_name, dynamo=False, opset_version=ONNX_OPSET,
                input_names=["input"], output_names=["logits"], do_constant_folding=True,
            )

    try:
        model.eval()
        return _write_atomically(Path(path), write)
    finally:
        model.train(was_training)
