"""device.runtime=executorch: a model lowered to XNNPACK as a .pte program, measured in executorch.runtime beside
ONNX Runtime; a runtime that is not installed is one line naming the pip extra."""

from __future__ import annotations

import importlib.util
import sqlite3

import pytest
import torch

from evaluators.latency import LocalDevice
from evaluators.latency.export import check_runtime, export_for_runtime
from mnas_core.errors import ConfigError
from search_spaces.builder import build_model
from search_spaces.presets import load_preset
from tests.cli import read_trials, run_cli

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch is not installed (pip install 'mnas-nni[executorch]')")


@needs_executorch
def test_a_frozen_model_as_a_pte_program_gives_the_pytorch_models_logits(tmp_path):
    from executorch.runtime import Runtime

    torch.manual_seed(0)
    model = build_model(load_preset("mnasnet_small"), num_classes=10).eval()
    path = export_for_runtime("executorch", model, (1, 3, 32, 32), tmp_path / "model")
    assert path.suffix == ".pte" and path.stat().st_mode & 0o777 == 0o644
    images = torch.randn(1, 3, 32, 32)
    logits = Runtime.get().load_program(str(path)).load_method("forward").execute([images])[0]
    with torch.no_grad():
        expected = model(images)
    assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()


@needs_executorch
def test_the_local_device_measures_a_pte_program_and_keys_its_numbers_by_runtime(tmp_path):
    device = LocalDevice(runtime="executorch", warmup=2, runs=5)
    assert device.name == "local-cpu1-executorch" and LocalDevice().name == "local-cpu1"  # cache and table keys
    assert device.describe()["runtime"] == "executorch" and device.runtime_id().startswith("executorch 1.")
    model = build_model(load_preset("mnasnet_small"), num_classes=10)
    result = device.measure(export_for_runtime("executorch", model, (1, 3, 32, 32), tmp_path / "m"), (1, 3, 32, 32))
    assert result.runs == 5 and result.median_ms > 0


@needs_executorch
@pytest.mark.slow
def test_a_two_trial_search_measures_under_executorch(tmp_path):
    result = run_cli(tmp_path, "search.max_trials=2", "strategy=random", "device.runtime=executorch")
    assert result.returncode == 0, result.stderr[-2000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 2 and all(t["status"] == "succeeded" and t["latency_ms"] > 0 for t in trials)
    with sqlite3.connect(tmp_path / "latency.sqlite") as cache:  # measured under ExecuTorch, and keyed so
        rows = cache.execute("SELECT device, runtime FROM latency").fetchall()
    assert len(rows) == 2 and all(d == "local-cpu1-executorch" and r.startswith("executorch ") for d, r in rows)


def test_an_unknown_or_missing_runtime_is_one_line_naming_the_fix(monkeypatch):
    with pytest.raises(ConfigError, match="device.runtime='tflite' is unknown; use one of onnxruntime, executorch"):
        LocalDevice(runtime="tflite")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(ConfigError) as caught:
        check_runtime("executorch")
    assert str(caught.value) == ("device.runtime=executorch needs the executorch package: "
                                 "pip install 'mnas-nni[executorch]'")


@needs_executorch
def test_export_ships_the_pte_program_for_a_search_measured_under_executorch(tmp_path):
    import yaml
    from executorch.runtime import Runtime

    from mnas_nni.export import export_source, import_model_file
    from mnas_nni.exporting.arch_source import hints_from_run_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(
        {"search_space": {"num_classes": 10, "resolution": 32}, "device": {"runtime": "executorch"}}))
    assert hints_from_run_dir(run) == {"num_classes": 10, "resolution": 32, "runtime": "executorch"}

    _, _, _, paths = export_source("mnasnet_small", tmp_path / "out", num_classes=10, resolution=32,
                                   runtime="executorch")
    model = import_model_file(paths["model.py"]).build_model(10)
    model.load_state_dict(torch.load(paths["state_dict.pt"], weights_only=True))
    images = torch.randn(1, 3, 32, 32)
    logits = Runtime.get().load_program(str(paths["model.pte"])).load_method("forward").execute([images])[0]
    with torch.no_grad():
        assert torch.allclose(logits, model.eval()(images), atol=1e-4)
    assert "`model.pte`" in (tmp_path / "out" / "README.md").read_text()
    onnx_only = export_source("mnasnet_small", tmp_path / "plain", num_classes=10, resolution=32)[3]
    assert "model.pte" not in onnx_only and onnx_only["model.onnx"].is_file()
