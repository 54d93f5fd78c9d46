"""Full training (`python -m mnas_nni.train`): the recipe's schedule and scaling, resume of a killed run, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from evaluators.retrain import RecipeSchedule, TfEma, rmsprop_tf_eps
from mnas_core.errors import ArchitectureError, ConfigError, DatasetNotFoundError
from mnas_nni.__main__ import config_dir
from mnas_nni.train import build_datamodule, check_recipe, run_training
from tests.imagenet_folder import write_imagenet_folder
from tests.retrain_run import TINY, run_and_kill, run_train


def compose_retrain(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=["+experiment=retrain", *overrides])


def official_lr(step: int, peak: float, steps_per_epoch: float, warmup_epochs: float = 5, decay: float = 0.97,
                decay_epochs: float = 2.4) -> float:
    """The official MnasNet build_learning_rate: TF exponential_decay(staircase) replaced by a linear warm-up."""
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        return peak * step / warmup_steps
    return peak * decay ** (step // (steps_per_epoch * decay_epochs))


def test_lr_schedule_equals_the_official_formula_at_10_steps() -> None:
    steps_per_epoch, peak = 312.5, 0.016  # 10,000 images at batch 32: a fractional epoch length, as TF's
    schedule = RecipeSchedule(steps_per_epoch, warmup_epochs=5, lr_decay=0.97, lr_decay_epochs=2.4)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.RMSprop([weight], lr=peak, alpha=0.9, eps=rmsprop_tf_eps(1e-3), momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    chosen = [0, 1, 780, 1561, 1562, 1563, 2249, 2250, 7499, 109375]  # warm-up, its end, decay boundaries
    seen = {}
    for step in range(max(chosen) + 1):
        if step in chosen:
            seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    for step in chosen:
        assert seen[step] == pytest.approx(official_lr(step, peak, steps_per_epoch), rel=1e-9, abs=1e-15), step
    # The warm-up ends at step int(5 * 312.5); the decay counts from step 0 (2.4 epochs = 750 steps), as TF's.
    assert seen[1561] == pytest.approx(peak * 1561 / 1562) and seen[1562] == pytest.approx(peak * 0.97**2)
    assert seen[2249] == pytest.approx(peak * 0.97**2) and seen[2250] == pytest.approx(peak * 0.97**3)


def test_scale_multiplies_batch_and_peak_lr_as_documented() -> None:
    cfg = compose_retrain("retrain.arch=mnasnet_a1", "retrain.scale=0.0625", "data=digits")
    recipe = check_recipe(dict(cfg.retrain))
    assert (recipe["batch_size"], recipe["lr"]) == (256, pytest.approx(0.016))  # the yaml's comment
    assert build_datamodule(dict(cfg.data), {**recipe, "resolution": 16}).batch_size == 256
    unscaled = check_recipe({**dict(cfg.retrain), "scale": 1.0})
    assert (unscaled["batch_size"], unscaled["lr"]) == (4096, pytest.approx(0.256))
    for bad in (0, -0.5, "big"):
        with pytest.raises(ConfigError, match="retrain.scale must be a number > 0"):
            check_recipe({**dict(cfg.retrain), "scale": bad})


def test_tf_ema_follows_the_weights_early_then_uses_its_decay() -> None:
    ema, current = [torch.zeros(1)], [torch.ones(1)]
    TfEma(0.9999)(ema, current, torch.tensor(0))
    assert float(ema[0]) == pytest.approx(1 - 1 / 10)  # decay (1 + 0) / (10 + 0)
    ema = [torch.zeros(1)]
    TfEma(0.5)(ema, current, torch.tensor(1000))
    assert float(ema[0]) == pytest.approx(0.5)


def test_bad_scale_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_train(tmp_path, "retrain.scale=0")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: retrain.scale must be a number > 0")
    assert "Traceback" not in result.stderr


def test_bad_inputs_fail_before_training(tmp_path: Path) -> None:
    bad_arch = tmp_path / "bad.json"
    bad_arch.write_text(json.dumps({"blocks": ["r1_k4_s11_e1_i32_o16"]}))
    with pytest.raises(ArchitectureError) as refused:
        run_training(compose_retrain(*TINY[1:], f"retrain.arch={bad_arch}"), run_dir=tmp_path / "a")
    assert "kernel must be odd" in str(refused.value) and "\n" not in str(refused.value)

    root = write_imagenet_folder(tmp_path / "imagenet", train_per_class=2, val_per_class=1)
    (root / "train" / "n09999999").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"class folder .*n09999999 holds no images"):
        run_training(compose_retrain(*TINY[1:], "data=imagenet", f"data.root={root}"), run_dir=tmp_path / "b")

    with pytest.raises(ConfigError, match="retrain.init=supernet is not available yet"):
        run_training(compose_retrain(*TINY[1:], "retrain.init=supernet"), run_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="retrain.num_classes=1000 but the data has 10 classes"):
        run_training(compose_retrain(*TINY[1:], "retrain.num_classes=1000"), run_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="no checkpoints/last.ckpt"):
        run_training(compose_retrain(*TINY[1:], f"retrain.resume={tmp_path}"), run_dir=tmp_path / "e")


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_step_count(tmp_path: Path) -> None:
    settings = ("retrain.epochs=2", "retrain.checkpoint_every_steps=2")  # 4 steps an epoch
    uninterrupted = run_train(tmp_path, *settings, run_dir=tmp_path / "full")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    killed = run_and_kill(tmp_path, 3, tmp_path / "killed", *settings)  # after step 3; last.ckpt holds step 2
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = run_train(tmp_path, *settings, f"retrain.resume={tmp_path / 'killed'}", run_dir=tmp_path / "again")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    done = json.loads((tmp_path / "killed" / "results.json").read_text())  # a resumed run finishes in its own dir
    assert full["steps"] == done["steps"] == 8
    assert done["history"][-1]["epoch"] == 1

    other = run_train(tmp_path, *settings, "retrain.arch=mnasnet_a1", f"retrain.resume={tmp_path / 'killed'}",
                      run_dir=tmp_path / "other")
    assert other.returncode == 2
    line = other.stderr.strip().splitlines()[-1]
    assert "is a checkpoint of another architecture (mnasnet_small" in line and "mnasnet_a1" in line


@pytest.mark.parametrize(("signal_name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_mid_epoch_saves_the_step_and_resume_ends_at_the_same_step_count(tmp_path: Path, signal_name: str,
                                                                                code: int) -> None:
    settings = ("retrain.epochs=2", "retrain.checkpoint_every_steps=1000")  # 4 steps an epoch; no periodic save
    stopped = run_and_kill(tmp_path, 3, tmp_path / "stopped", *settings, signal_name=signal_name)
    assert stopped.returncode == code, stopped.stderr[-2000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert f"stopped by {signal_name} at step 3" in line and "resume it with: python -m mnas_nni.train" in line, line
    assert f"retrain.resume={tmp_path / 'stopped'}" in line and "retrain.arch=mnasnet_small" in line
    assert (tmp_path / "stopped" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "stopped" / "results.json").exists()
    resumed = run_train(tmp_path, *settings, f"retrain.resume={tmp_path / 'stopped'}", run_dir=tmp_path / "again")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "stopped" / "results.json").read_text())["steps"] == 8


def test_an_exported_folder_names_its_search_for_the_trainer(tmp_path: Path) -> None:
    from mnas_nni.export import export, search_provenance
    from mnas_nni.train_support import resolve_arch
    from search_spaces import load_preset

    run_dir = tmp_path / "search"
    run_dir.mkdir()
    (run_dir / "trials.jsonl").write_text("")
    assert search_provenance(str(run_dir)) == {"search_run_dir": str(run_dir.resolve())}
    assert search_provenance("runs:/0123456789abcdef0123456789abcdef") == {
        "mlflow_run": "runs:/0123456789abcdef0123456789abcdef"}
    assert search_provenance("mnasnet_a1") == {}
    paths = export(load_preset("mnasnet_small"), tmp_path / "best", 10, 32,
                   provenance=search_provenance(str(run_dir)))
    source = resolve_arch(str(paths["arch.json"].parent))
    assert source.arch.name == "mnasnet_small" and source.search_run_dir == str(run_dir.resolve())


def test_rmsprop_starts_like_tf() -> None:
    from evaluators.retrain import init_rmsprop_like_tf

    lr, eps = 0.01, 1e-3
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.RMSprop([weight], lr=lr, alpha=0.9, eps=rmsprop_tf_eps(eps), momentum=0.9)
    init_rmsprop_like_tf(optimizer)
    weight.grad = torch.ones(1)
    optimizer.step()
    tf_mean_square = 0.9 * 1.0 + 0.1 * 1.0**2  # TF: ms starts at 1; update lr * g / sqrt(ms + eps)
    assert float(-weight) == pytest.approx(lr / math.sqrt(tf_mean_square + eps), rel=0.05)
