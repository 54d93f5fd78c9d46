"""The trial's path: one context per search, one ONNX export, the space as built reaches every reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from evaluators.latency import LatencyEvaluator, LocalDevice
from search_spaces import build_model, load_preset
from tests.cli import read_trials, run_cli

ROOT = Path(__file__).resolve().parent.parent


def onnx_signature(path: Path) -> tuple:
    model = onnx.load(str(path))
    graph = model.graph
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    return ([i.name for i in graph.input], [o.name for o in graph.output], dims,
            [n.op_type for n in graph.node], [o.version for o in model.opset_import])


@pytest.mark.slow
def test_export_after_a_digits_search_keeps_its_class_count_and_resolution(tmp_path):
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=1")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "best"
    exported = subprocess.run([sys.executable, "-m", "mnas_nni.export", str(tmp_path / "run"), "--out", str(out)],
                              capture_output=True, text=True, check=False, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    assert summary["num_classes"] == 10 and summary["resolution"] == 32  # digits, not the 1000/224 defaults
    assert "NUM_CLASSES = 10" in (out / "model.py").read_text()
    assert onnx_signature(out / "model.onnx")[2][-1] == 10


def test_the_shipped_onnx_is_the_graph_the_search_measured(tmp_path):
    from mnas_nni.export import export

    arch = load_preset("mnasnet_small")
    shipped = export(arch, tmp_path / "out", num_classes=10, resolution=32)["model.onnx"]
    measured_dir = tmp_path / "measured"

    class KeepFile(LatencyEvaluator):  # the evaluator's own export, kept for a look instead of deleted
        def _measure_guarded(self, onnx_path, shape):
            measured_dir.mkdir(exist_ok=True)
            (measured_dir / "model.onnx").write_bytes(Path(onnx_path).read_bytes())
            return super()._measure_guarded(onnx_path, shape)

    torch.manual_seed(0)
    evaluator = KeepFile(LocalDevice(runs=2, warmup=1), cache_path=None, lock_dir=tmp_path / "locks")
    evaluator.measure(build_model(arch, num_classes=10), arch.key, (1, 3, 32, 32))
    assert onnx_signature(shipped) == onnx_signature(measured_dir / "model.onnx")
    assert onnx_signature(shipped)[1] == ["logits"]


@pytest.mark.slow
def test_a_search_describes_its_device_once_not_once_per_trial(tmp_path):
    count = tmp_path / "describes.txt"
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=3",
                     "device._target_=tests.counting_device.CountingLocalDevice", f"+device.count_file={count}",
                     env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_trials(tmp_path)) == 3
    assert count.read_text().splitlines() == ["describe"]


def test_search_failure_reward_reaches_the_controller():
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        for word in ("ppo_rnn", "ppo_rnn_short"):
            cfg = compose("config", overrides=[f"strategy={word}", "search.failure_reward=-0.5"])
            assert instantiate(cfg.strategy).failure_reward == -0.5
        cfg = compose("config")
        assert "checkpoint_every" not in cfg.search  # a knob nothing read is gone
