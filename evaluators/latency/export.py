"""The one ONNX export: what the latency devices measure and what `python -m mnas_nni.export` ships are the
same graph (eval mode, batch 1, opset 17, input `input`, output `logits`)."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mnas_core.errors import ConfigError

ONNX_OPSET = 17


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    """Write ``model`` as ONNX to ``path`` and return it.

    Batch is forced to 1 (the paper's setting); the model's train/eval mode is restored afterwards.
    The legacy TorchScript exporter (dynamo=False) is used: it needs no onnxscript and, for the same model,
    writes the same bytes every time. The file appears atomically, so concurrent readers never see half of it.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise ConfigError(f"input_shape must look like (1, C, H, W) with positive sizes, got {shape}")
    shape = (1, *shape[1:])
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    first_param = next(model.parameters(), None)
    device = first_param.device if first_param is not None else torch.device("cpu")
    dtype = first_param.dtype if first_param is not None and first_param.is_floating_point() else torch.float32
    dummy = torch.zeros(shape, device=device, dtype=dtype)
    was_training = model.training
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
            # The pool shortcut's channel slice cannot be constant-folded; the exporter says so on every export.
            warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1", category=UserWarning)
            torch.onnx.export(
                model, (dummy,), tmp_name, dynamo=False, opset_version=ONNX_OPSET,
                input_names=["input"], output_names=["logits"], do_constant_folding=True,
            )
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600: an exported model is for others to read too
        os.replace(tmp_name, target)
    finally:
        model.train(was_training)
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
