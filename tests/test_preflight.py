"""Settings that would fail every trial fail the search at startup, in one line, before any training."""

from __future__ import annotations

import pytest
import torch

from evaluators.accuracy import train_proxy
from evaluators.data import DigitsDataModule
from mnas_core.errors import TrialError
from search_spaces import build_model, load_preset
from tests.cli import read_trials, run_cli


def assert_one_line_before_training(tmp_path, result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert all(f in lines[0] for f in fragments), lines[0]
    assert not read_trials(tmp_path), "no trial may run"


def test_zero_epochs_fails_at_startup(tmp_path):
    assert_one_line_before_training(tmp_path, run_cli(tmp_path, "train.epochs=0"), "train.epochs")


def test_an_unwritable_latency_lock_folder_fails_at_startup(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli(tmp_path, f"latency.lock_dir={tmp_path / 'a-file' / 'locks'}")
    assert_one_line_before_training(tmp_path, result, "latency lock folder", "latency.lock_dir")


def test_an_unwritable_home_fails_at_startup(tmp_path):
    # /proc takes no new folder, not even from root: NNI's ~/nni-experiments cannot be made there.
    result = run_cli(tmp_path, env={"HOME": "/proc"})
    assert_one_line_before_training(tmp_path, result, "nni-experiments", "HOME")


@pytest.mark.parametrize("module", ["mnas_nni", "mnas_nni.train"])
def test_an_unwritable_run_folder_fails_before_hydra_makes_it(tmp_path, module):
    # /proc takes no new folder, not even from root; Hydra itself would fail there with a traceback.
    extra = ("+experiment=retrain",) if module == "mnas_nni.train" else ()
    result = run_cli(tmp_path, *extra, "hydra.run.dir=/proc/mnas-run", module=module)
    assert_one_line_before_training(tmp_path, result, "/proc/mnas-run cannot be created", "hydra.run.dir")


def test_a_folder_of_corrupt_jpegs_fails_at_startup(tmp_path):
    for wnid in ("n01", "n02"):
        folder = tmp_path / "imagenet" / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{wnid}_{i}.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    result = run_cli(tmp_path, "data=imagenet", f"data.root={tmp_path / 'imagenet'}", "data.holdout=2",
                     "data.resolution=32", "data.num_workers=0")
    assert_one_line_before_training(tmp_path, result, "cannot be read", "data.root")


def test_a_diverging_loss_fails_the_trial_with_the_reason():
    torch.manual_seed(0)
    model = build_model(load_preset("mnasnet_small"), num_classes=10)
    with pytest.raises(TrialError, match="diverged|non-finite"):
        train_proxy(model, DigitsDataModule(), epochs=1, optimizer="adam", lr=1e6, limit_train_batches=10,
                    limit_val_batches=1)


@pytest.mark.slow
def test_a_search_whose_first_trials_all_fail_alike_stops_with_the_reason(tmp_path):
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=6", "search.stop_after_failures=2",
                     "train.optimizer=sgd", "train.lr=1e30")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "2 trials in a row failed" in result.stderr and "non-finite loss" in result.stderr
    trials = read_trials(tmp_path)
    assert [t["status"] for t in trials] == ["failed", "failed"]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["mnasnet_a1", "--resolution", "0"], "--resolution must be at least 8"),
    (["mnasnet_a1", "--num-classes", "0"], "--num-classes must be at least 1"),
    (["no_such_arch"], "nor block strings"),
])
def test_describe_says_what_is_wrong(argv, fragment, capsys):
    from mnas_nni.describe import main

    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_describe_takes_block_strings(capsys):
    from mnas_nni.describe import main

    assert main(["r1_k3_s11_e1_i32_o16, r2_k5_s22_e6_i16_o24", "--resolution", "32", "--json"]) == 0
    assert '"r2_k5_s22_e6_i16_o24"' in capsys.readouterr().out


def test_export_of_a_folder_without_trials_says_what_it_needs(tmp_path, capsys):
    from mnas_nni.export import main

    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "holds neither trials.jsonl" in capsys.readouterr().err
