"""Fashion-MNIST from idx files: tiny hand-made ones written here, and Debian's real ones where installed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evaluators.fashion_mnist import (
    DEBIAN_FOLDER,
    IDX_FILES,
    FashionMnistDataModule,
    balanced_subset,
    read_idx,
)
from mnas_core.errors import ConfigError, DatasetNotFoundError
from tests.cli import read_trials, run_cli

CONF = Path(__file__).resolve().parents[1] / "conf"


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: two zero bytes, type 0x08 (unsigned byte), the rank, big-endian sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(folder: Path, train: int = 200, test: int = 50, seed: int = 0) -> Path:
    """Four gzipped idx files of random 28x28 images; labels cycle through the 10 classes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (train, 28, 28)), "train_labels": np.arange(train) % 10,
        "test_images": rng.integers(0, 256, (test, 28, 28)), "test_labels": np.arange(test) % 10,
    }
    for key, array in arrays.items():
        (folder / IDX_FILES[key]).write_bytes(gzip.compress(idx_bytes(np.asarray(array))))
    return folder


def test_reads_a_hand_made_idx_pair_exactly(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    (tmp_path / "images.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "labels").write_bytes(idx_bytes(np.array([7, 0, 9])))  # unpacked files read too
    np.testing.assert_array_equal(read_idx(tmp_path / "images.gz"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [7, 0, 9])


def test_batches_are_normalised_three_channel_floats_at_the_resolution(tmp_path: Path) -> None:
    root = write_fashion(tmp_path)
    native = FashionMnistDataModule(root=root, batch_size=16)
    images, labels = next(iter(native.train_dataloader()))
    assert images.shape == (16, 3, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.long
    assert torch.equal(images[:, 0], images[:, 2])  # the gray channel, repeated
    assert native.train_dataset.tensors[0].dtype == torch.uint8  # held as bytes, normalised per batch
    assert len(native.val_dataset) == 50
    larger = FashionMnistDataModule(root=root, batch_size=4, resolution=32, augment=True)
    assert next(iter(larger.val_dataloader()))[0].shape == (4, 3, 32, 32)
    assert larger.train_augmentation is not None and native.train_augmentation is None


def test_subset_is_class_balanced_and_fixed_by_seed(tmp_path: Path) -> None:
    root = write_fashion(tmp_path, train=300)
    first, again = (FashionMnistDataModule(root=root, train_subset=50, seed=3) for _ in range(2))
    other = FashionMnistDataModule(root=root, train_subset=50, seed=4)
    labels = first.train_dataset.tensors[1]
    assert torch.bincount(labels, minlength=10).tolist() == [5] * 10
    assert torch.equal(first.train_dataset.tensors[0], again.train_dataset.tensors[0])
    assert not torch.equal(first.train_dataset.tensors[0], other.train_dataset.tensors[0])
    uneven = balanced_subset(np.array([0] * 3 + [1] * 20 + [2] * 20), 21, seed=0)
    assert np.bincount(np.array([0] * 3 + [1] * 20 + [2] * 20)[uneven]).tolist() == [3, 9, 9]


def test_holdout_validates_on_training_images_the_subset_never_sees(tmp_path: Path) -> None:
    root = write_fashion(tmp_path, train=300)
    data = FashionMnistDataModule(root=root, val_split="holdout", holdout=100, train_subset=150)
    assert len(data.val_dataset) == 100 and len(data.train_dataset) == 150
    seen = {bytes(x.numpy()) for x in data.train_dataset.tensors[0]}
    assert not seen & {bytes(x.numpy()) for x in data.val_dataset.tensors[0]}


def _one_line(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_bad_files_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as missing:
        FashionMnistDataModule(root=tmp_path / "nowhere")
    _one_line(missing, "nowhere", *IDX_FILES.values(), "apt-get install dataset-fashion-mnist")

    truncated = write_fashion(tmp_path / "truncated")
    blob = (truncated / IDX_FILES["train_images"]).read_bytes()
    (truncated / IDX_FILES["train_images"]).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetNotFoundError) as cut:
        FashionMnistDataModule(root=truncated)
    _one_line(cut, "train-images-idx3-ubyte.gz", "reinstall")

    short = write_fashion(tmp_path / "short")
    data = gzip.decompress((short / IDX_FILES["test_images"]).read_bytes())
    (short / IDX_FILES["test_images"]).write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DatasetNotFoundError) as corrupt:
        FashionMnistDataModule(root=short)
    _one_line(corrupt, "t10k-images-idx3-ubyte.gz", "header says")

    junk = write_fashion(tmp_path / "junk")
    (junk / IDX_FILES["train_labels"]).write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(DatasetNotFoundError) as header:
        FashionMnistDataModule(root=junk)
    _one_line(header, "train-labels-idx1-ubyte.gz", "bad header")

    mismatched = write_fashion(tmp_path / "mismatched")
    (mismatched / IDX_FILES["train_labels"]).write_bytes(gzip.compress(idx_bytes(np.zeros(150))))
    with pytest.raises(DatasetNotFoundError) as counts:
        FashionMnistDataModule(root=mismatched)
    _one_line(counts, "200 images", "150 labels")


@pytest.mark.parametrize("subset", [0, -5, 2.5, "many", True, 201])
def test_a_bad_train_subset_is_one_line(tmp_path: Path, subset: object) -> None:
    with pytest.raises(ConfigError) as error:
        FashionMnistDataModule(root=write_fashion(tmp_path), train_subset=subset)
    _one_line(error, "data.train_subset")


def test_config_and_preset_compose_to_this_module() -> None:
    data = OmegaConf.load(CONF / "data" / "fashion_mnist.yaml")
    assert data._target_ == "evaluators.fashion_mnist.FashionMnistDataModule" and data.root == DEBIAN_FOLDER
    preset = OmegaConf.load(CONF / "experiment" / "fashion.yaml")
    assert {"override /data": "fashion_mnist"} in preset.defaults and preset.data.resolution == 28


@pytest.mark.skipif(not Path(DEBIAN_FOLDER, IDX_FILES["train_images"]).is_file(),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FOLDER}); .ci/setup-tests installs it")
def test_debian_files_are_the_standard_dataset() -> None:
    data = instantiate(OmegaConf.load(CONF / "data" / "fashion_mnist.yaml"), train_subset=1000)
    assert len(data.val_dataset) == 10000 and data.num_classes == 10
    assert torch.bincount(data.val_dataset.tensors[1]).tolist() == [1000] * 10
    assert torch.bincount(data.train_dataset.tensors[1]).tolist() == [100] * 10
    assert len(read_idx(Path(DEBIAN_FOLDER) / IDX_FILES["train_labels"])) == 60000


def test_two_trial_search_on_fashion_mnist(tmp_path: Path) -> None:
    root = write_fashion(tmp_path / "fashion", train=300, test=60)
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=2", "data=fashion_mnist",
                     f"data.root={root}", "data.train_subset=100", "data.batch_size=16", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 2 and all(0.0 <= t["accuracy"] <= 1.0 for t in trials), trials
    resolved = (tmp_path / "run" / "config.resolved.yaml").read_text()
    assert "FashionMnistDataModule" in resolved and "train_subset: 100" in resolved


def test_cli_names_the_missing_files_before_any_trial(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "data=fashion_mnist", f"data.root={tmp_path / 'absent'}", timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "apt-get install dataset-fashion-mnist" in lines[0]
    assert not (tmp_path / "run" / "trials.jsonl").exists()
