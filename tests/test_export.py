"""Export: a generated torch-only model.py that reproduces the searched network exactly, ONNX, the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from mnas_core.errors import ArchitectureError, ConfigError
from mnas_nni.export import export, import_model_file, main, render_model_code, resolve_source, scaled_recipe
from mnas_nni.run.records import FAILED, SUCCEEDED, TrialLog, TrialRecord
from search_spaces import ArchSpec, MnasSpace, build_model, load_preset

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("nni", "mnas_nni", "search_spaces")

# Runs in a fresh interpreter where importing nni, mnas_nni or search_spaces fails: model.py must need only torch.
STANDALONE = """
import sys
for name in {forbidden!r}:
    sys.modules[name] = None
sys.path.insert(0, sys.argv[1])
import torch
from model import build_model
model = build_model().eval()
model.load_state_dict(torch.load(sys.argv[2], map_location="cpu"))
x = torch.load(sys.argv[3])
with torch.no_grad():
    torch.save(model(x), sys.argv[4])
"""


def random_sample(space: MnasSpace, seed: int) -> dict:
    rng = random.Random(seed)
    sample = {label: rng.choice(list(m.values)) for label, m in space.simplify().items()}
    # Make sure every kind of layer is in the network, whatever the draw.
    sample.update({"block1/conv_op": "conv", "block1/se_ratio": 0.25, "block2/skip": "pool",
                   "block3/conv_op": "dsconv", "block4/conv_op": "mbconv6", "block4/se_ratio": 0.25,
                   "block5/skip": "pool", "block5/conv_op": "mbconv3"})
    return sample


def scramble_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics, so weights landing on the wrong layer would show in the output."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


def check_export(model: torch.nn.Module, arch: ArchSpec, out: Path, tmp_path: Path, subprocess_check: bool) -> None:
    model.eval()
    scramble_batchnorm(model, 1)
    weights = tmp_path / "searched.pt"
    torch.save(model.state_dict(), weights)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)

    paths = export(arch, out, num_classes=10, resolution=32, weights=weights)
    source = paths["model.py"].read_text()
    assert "holds the trained weights" in source and "UNTRAINED" not in source  # given weights: says so
    for name in FORBIDDEN:
        assert f"import {name}" not in source and f"from {name}" not in source

    if subprocess_check:  # in a fresh interpreter that cannot import the project at all
        torch.save(x, tmp_path / "x.pt")
        run = subprocess.run([sys.executable, "-c", STANDALONE.format(forbidden=FORBIDDEN), str(out),
                              str(paths["state_dict.pt"]), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        assert torch.equal(torch.load(tmp_path / "y.pt"), expected)

    # Same module structure: the searched model's own state_dict loads strictly into the generated one.
    generated = import_model_file(paths["model.py"]).build_model(10).eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    assert list(generated.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        assert torch.equal(generated(x), expected)

    session = ort.InferenceSession(str(paths["model.onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    for row in range(2):
        (logits,) = session.run(None, {session.get_inputs()[0].name: x[row:row + 1].numpy()})
        np.testing.assert_allclose(logits, expected[row:row + 1].numpy(), atol=1e-4, rtol=0)

    assert ArchSpec.load(paths["arch.json"]) == arch
    recipe = yaml.safe_load(paths["retrain.yaml"].read_text())["retrain"]
    assert Path(recipe["arch"]) == paths["arch.json"].resolve()
    assert (recipe["num_classes"], recipe["resolution"], recipe["epochs"], recipe["lr"]) == (10, 32, 350, 0.256)


def test_export_of_a_random_sample_reproduces_the_searched_model(tmp_path):
    space = MnasSpace(num_classes=10, resolution=32)
    sample = random_sample(space, seed=7)
    model = space.freeze(sample)
    arch = space.arch_from_sample(sample)
    assert {b.op for b in arch.blocks} == {"conv", "dsconv", "mbconv"}
    check_export(model, arch, tmp_path / "out", tmp_path, subprocess_check=True)


def test_export_of_a_preset_reproduces_the_builder(tmp_path):
    arch = load_preset("mnasnet_small")
    check_export(build_model(arch, num_classes=10), arch, tmp_path / "small", tmp_path, subprocess_check=False)


def test_generated_code_holds_only_the_layers_used():
    plain = render_model_code(load_preset("mobilenet_v2"), 1000, 224)
    assert "SqueezeExcite" not in plain and "PoolShortcut" not in plain and "def conv_body" not in plain
    assert "import torch.nn.functional" not in plain
    assert "class SqueezeExcite" in render_model_code(load_preset("mnasnet_a1"), 1000, 224)
    compile(plain, "model.py", "exec")


def test_initialised_weights_are_seeded(tmp_path):
    arch = load_preset("mnasnet_small")
    first = export(arch, tmp_path / "a", num_classes=10, resolution=32, seed=3)
    second = export(arch, tmp_path / "b", num_classes=10, resolution=32, seed=3)
    a, b = torch.load(first["state_dict.pt"]), torch.load(second["state_dict.pt"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sources_trial_log_and_presets(tmp_path):
    log = TrialLog(tmp_path / "run" / "trials.jsonl")
    a1, small = load_preset("mnasnet_a1").to_dict(), load_preset("mnasnet_small").to_dict()
    log.append(TrialRecord(trial=1, status=SUCCEEDED, arch=a1, reward=0.5, accuracy=0.5, latency_ms=10))
    log.append(TrialRecord(trial=2, status=SUCCEEDED, arch=small, reward=0.7, accuracy=0.7, latency_ms=10))
    log.append(TrialRecord(trial=3, status=FAILED, error="NaN loss"))
    hydra_dir = tmp_path / "run" / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "config.yaml").write_text("search_space:\n  num_classes: 10\ndata:\n  resolution: 32\n")

    best, hints = resolve_source(str(log.path))
    assert best.name == "mnasnet_small" and hints == {"num_classes": 10, "resolution": 32}
    assert resolve_source(str(tmp_path / "run"), trial=1)[0].name == "mnasnet_a1"  # the run directory works too
    with pytest.raises(ArchitectureError, match="trial 3 .* failed"):
        resolve_source(str(log.path), trial=3)
    with pytest.raises(ArchitectureError, match="trial 9 is not in"):
        resolve_source(str(log.path), trial=9)
    assert resolve_source("mnasnet_b1")[0].name == "mnasnet_b1"
    path = load_preset("mnasnet_a1").save(tmp_path / "a1.json")
    assert resolve_source(str(path))[0].key == load_preset("mnasnet_a1").key
    with pytest.raises(ConfigError, match="--trial and --answer need a trials.jsonl"):
        resolve_source("mnasnet_a1", trial=2)
    # --answer: the most accurate trial meeting the run's T (here trial 2: 0.7 at 10 ms <= 12 ms)
    (tmp_path / "run" / "config.resolved.yaml").write_text("reward:\n  target_ms: 12.0\n")
    assert resolve_source(str(tmp_path / "run"), answer=True)[0].name == "mnasnet_small"
    (tmp_path / "run" / "config.resolved.yaml").write_text("reward:\n  target_ms: 5.0\n")
    with pytest.raises(ArchitectureError, match="no trial .* meets its latency target"):
        resolve_source(str(tmp_path / "run"), answer=True)


def test_scale_knob_scales_batch_and_lr_linearly():
    recipe = {"batch_size": 4096, "lr": 0.256, "scale": 0.0625, "epochs": 350}
    assert scaled_recipe(recipe) == {"batch_size": 256, "lr": pytest.approx(0.016), "scale": 0.0625, "epochs": 350}
    with pytest.raises(ConfigError):
        scaled_recipe({**recipe, "scale": 0})


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    torch.save(build_model(load_preset("mnasnet_a1"), 10).state_dict(), tmp_path / "a1.pt")
    with pytest.raises(ConfigError, match="does not fit this architecture"):
        export(load_preset("mnasnet_small"), tmp_path / "out", num_classes=10, resolution=32,
               weights=tmp_path / "a1.pt")
    # A Lightning-style checkpoint (keys under 'model.') is unwrapped.
    state = build_model(load_preset("mnasnet_small"), 10).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ckpt.pt")
    paths = export(load_preset("mnasnet_small"), tmp_path / "ok", num_classes=10, resolution=32,
                   weights=tmp_path / "ckpt.pt")
    exported = torch.load(paths["state_dict.pt"])
    assert all(torch.equal(exported[k], state[k]) for k in state)


def test_cli_bad_path_exits_2_with_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mnas_nni.export", "/no/such/arch.json", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "/no/such/arch.json" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("source, extra", [
    ("no_such_preset", []),
    ("trials.jsonl", ["--trial", "4"]),
    ("0123456789abcdef0123456789abcdef", ["--tracking-uri", "sqlite:////no/such/mlflow.db"]),
    ("0123456789abcdef0123456789abcdef", ["--tracking-uri", "http://127.0.0.1:9"]),
])
def test_cli_bad_sources_exit_2_with_one_line(tmp_path, capsys, monkeypatch, source, extra):
    monkeypatch.chdir(tmp_path)
    Path("trials.jsonl").write_text("")
    assert main([source, "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_exports_a_preset(tmp_path, capsys):
    assert main(["mnasnet_small", "--out", str(tmp_path / "out"), "--num-classes", "10", "--resolution", "32"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_classes"] == 10 and summary["resolution"] == 32
    assert {Path(p).name for p in summary["files"].values()} == {
        "model.py", "arch.json", "state_dict.pt", "model.onnx", "retrain.yaml", "README.md"}


def test_an_export_of_a_search_says_its_weights_are_untrained_and_its_training_command_runs(tmp_path):
    import shlex
    import stat

    from tests.cli import run_cli

    search = run_cli(tmp_path, "strategy=random", "search.max_trials=1", "data.resolution=16")
    assert search.returncode == 0, search.stderr[-3000:]
    out = tmp_path / "best"
    exported = subprocess.run([sys.executable, "-m", "mnas_nni.export", str(tmp_path / "run"), "--out", str(out)],
                              capture_output=True, text=True, timeout=300, check=False)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "not trained" in exported.stderr and "python -m mnas_nni.train" in exported.stderr
    assert stat.S_IMODE((out / "model.onnx").stat().st_mode) == 0o644  # readable, like every other file
    readme = (out / "README.md").read_text()
    assert "not trained weights" in readme
    assert "UNTRAINED weights" in (out / "model.py").read_text()  # the model's own docstring says it too
    (command,) = [line.strip() for line in readme.splitlines() if line.strip().startswith("python -m mnas_nni.train")]
    assert "data=digits" in command and f"retrain.arch={out.resolve()}" in command
    one_step = ["retrain.scale=0.0078125", "retrain.epochs=1", "retrain.limit_train_batches=1",
                "retrain.limit_val_batches=1", "tracking=none", f"hydra.run.dir={tmp_path / 'train'}"]
    trained = subprocess.run([sys.executable, *shlex.split(command)[1:], *one_step], capture_output=True, text=True,
                             timeout=600, cwd=tmp_path, check=False)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "train" / "state_dict.pt").is_file()
