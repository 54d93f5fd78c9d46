"""ImageNet folders as users have them: a 3-class subset searched with the paper's preset, then trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evaluators.data import ImageNetDataModule
from mnas_core.errors import ConfigError, DatasetNotFoundError
from tests.cli import read_trials, run_cli
from tests.imagenet_folder import WNIDS, write_imagenet_folder
from tests.retrain_run import run_train

TINY_SEARCH = ["+experiment=mnas_imagenet", "data.resolution=32", "data.batch_size=4", "data.holdout=6",
               "data.num_workers=0", "search.max_trials=2"]


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_class_count_comes_from_the_folder_and_val_split_reads_val_wnid(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path, train_per_class=4, val_per_class=2)
    proxy = ImageNetDataModule(root, resolution=32, holdout=3)
    assert proxy.num_classes == 3 and proxy.classes == list(WNIDS)
    assert (len(proxy.train_samples), len(proxy.val_samples)) == (9, 3)
    final = ImageNetDataModule(root, resolution=32, val_split="val", batch_size=6, num_workers=0)
    assert (len(final.train_samples), len(final.val_samples)) == (12, 6)
    assert all("/val/" in path for path, _ in final.val_samples)
    assert [label for path, label in final.val_samples] == [WNIDS.index(Path(p).parent.name) for p, _ in
                                                            final.val_samples]
    images, labels = next(iter(final.val_dataloader()))
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [label for _, label in final.val_samples]
    with pytest.raises(ConfigError, match="data.val_split must be one of holdout, val"):
        ImageNetDataModule(root, val_split="test")


def test_bad_folders_are_one_clear_line(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path / "a", train_per_class=2, val_per_class=0)
    (root / "train" / "n09999999").mkdir()
    with pytest.raises(DatasetNotFoundError) as empty:
        ImageNetDataModule(root)
    assert "n09999999 holds no images" in one_line(empty) and "remove the folder" in one_line(empty)

    flat = write_imagenet_folder(tmp_path / "b", train_per_class=2, val_per_class=0)
    for wnid in WNIDS:
        (flat / "val" / wnid).rmdir()
    for k in range(3):
        Image.new("RGB", (8, 8)).save(flat / "val" / f"ILSVRC2012_val_0000000{k}.JPEG")
    (flat / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    with pytest.raises(DatasetNotFoundError) as flat_val:
        ImageNetDataModule(flat, val_split="val")
    message = one_line(flat_val)
    assert "holds 3 images directly" in message and "LOC_val_solution.csv" in message
    assert "re-organise it as val/<wnid>/<image>.JPEG" in message
    ImageNetDataModule(flat, holdout=2)  # the proxy split never reads val/

    stray = write_imagenet_folder(tmp_path / "c", train_per_class=2, val_per_class=1)
    (stray / "val" / WNIDS[0]).rename(stray / "val" / "n00000001")
    with pytest.raises(DatasetNotFoundError, match="has no training folder train/n00000001"):
        ImageNetDataModule(stray, val_split="val")


def test_a_model_data_class_mismatch_fails_at_startup(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path / "imagenet", train_per_class=3, val_per_class=0)
    result = run_cli(tmp_path, *TINY_SEARCH, f"data.root={root}", "search_space.num_classes=1000")
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: search_space.num_classes=1000 but the data has 3 classes")
    assert not read_trials(tmp_path)


@pytest.mark.slow
def test_a_3_class_subset_searches_then_trains_one_epoch_nested_in_mlflow(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path / "imagenet")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search = run_cli(tmp_path, *TINY_SEARCH, f"data.root={root}", "tracking=mlflow",
                     f"tracking.tracking_uri={store}")
    assert search.returncode == 0, search.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert [t["status"] for t in trials] == ["succeeded", "succeeded"], [t.get("error") for t in trials]

    trained = run_train(tmp_path, "data=imagenet", f"data.root={root}", f"retrain.arch={tmp_path / 'run'}",
                        "retrain.resolution=32", "retrain.scale=0.001", "data.num_workers=0",
                        "retrain.limit_train_batches=null", "retrain.limit_val_batches=null", "tracking=mlflow",
                        f"tracking.tracking_uri={store}", run_dir=tmp_path / "train")
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert results["num_classes"] == 3 and results["epochs"] == 1 and results["batch_size"] == 4
    assert results["steps"] == 6  # the 24 training images (val/ evaluates) at batch round(4096 * 0.001)
    assert set(results["final"]) >= {"val_top1", "val_top5", "ema_val_top1", "ema_val_top5"}
    assert results["final"]["val_top5"] == 1.0  # top-5 of 3 classes
    assert (tmp_path / "train" / "model" / "model.onnx").is_file()

    from mlflow import MlflowClient

    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    search_run = next(r for r in runs if r.data.tags.get("mnas_nni.role") == "search")
    retrain_run = next(r for r in runs if r.data.tags.get("mnas_nni.role") == "retrain")
    assert retrain_run.data.tags["mlflow.parentRunId"] == search_run.info.run_id
    assert "ema_val_top1" in retrain_run.data.metrics and retrain_run.info.status == "FINISHED"
