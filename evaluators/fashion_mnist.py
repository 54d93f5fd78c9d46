"""Fashion-MNIST (Zalando Research, MIT licence) from its four standard idx files.

60,000 training and 10,000 test images, 28x28 grayscale, 10 classes. Debian ships the files in
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``); the dataset's own repository
serves the same four files. Images are held in memory as uint8 and normalised (and, when ``resolution`` is not
28, resized) batch by batch; the gray channel is repeated to the three channels every model of the space takes.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from evaluators.data import NormalizeBatch, _ClassificationDataModule, _require_positive_int
from mnas_core.errors import ConfigError, DatasetNotFoundError

__all__ = ["DEBIAN_FOLDER", "FashionMnistDataModule", "balanced_subset", "read_idx"]

DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
NATIVE_RESOLUTION = 28
NUM_CLASSES = 10
MEAN, STD = (0.2860,), (0.3530,)  # of the 60,000 training images, in [0, 1]
VAL_SPLITS = ("test", "holdout")
IDX_UBYTE = 0x08  # the idx type code of unsigned bytes: the only one Fashion-MNIST uses


def _open_idx(path: Path):
    """Gzipped (``.gz``) or plain: a user who unpacked the files keeps them under the name without ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    where = Path(path)
    fix = f"{where} is not a complete idx file; reinstall it (apt-get install --reinstall dataset-fashion-mnist)"
    try:
        with _open_idx(where) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises these on truncated, corrupt or non-gzip input
        raise DatasetNotFoundError(f"{fix} ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE or not 1 <= data[3] <= 3:
        raise DatasetNotFoundError(f"{fix} (bad header: not unsigned-byte idx data)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetNotFoundError(f"{fix} (header cut short)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DatasetNotFoundError(f"{fix} (header says {shape}: {expected} bytes, file holds {len(data) - header})")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    array.flags.writeable = False
    return array


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """One idx file of unsigned bytes (gzipped or not) as a read-only array; cached while the file is unchanged."""
    where = Path(path)
    stat = where.stat()
    return _read_idx_cached(str(where), stat.st_mtime_ns, stat.st_size)


def _find_files(root: Path) -> dict[str, Path]:
    """The four idx files under ``root``, each gzipped or unpacked; one line naming all four when any is missing."""
    found: dict[str, Path] = {}
    for key, name in IDX_FILES.items():
        candidates = (root / name, root / name.removesuffix(".gz"))
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found in {root}: need {', '.join(IDX_FILES.values())} "
                f"(missing {name}); run `apt-get install dataset-fashion-mnist` (files in {DEBIAN_FOLDER}) "
                "or set data.root to the folder that holds them"
            )
        found[key] = path
    return found


def _read_split(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetNotFoundError(
            f"{images_path.name} must hold images (N, H, W) and {labels_path.name} labels (N,), found "
            f"{images.shape} and {labels.shape}; reinstall dataset-fashion-mnist"
        )
    if len(images) != len(labels):
        raise DatasetNotFoundError(
            f"{images_path} holds {len(images)} images but {labels_path.name} {len(labels)} labels; the files "
            "come from different copies: reinstall dataset-fashion-mnist"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DatasetNotFoundError(f"{labels_path} has label {int(labels.max())} (Fashion-MNIST has 0..9)")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def balanced_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` sorted indices, as near an equal share per class as the classes allow, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    taken = [0] * len(by_class)
    left = size
    while left > 0:  # deal one image per class per round, skipping exhausted classes
        open_classes = [i for i, pool in enumerate(by_class) if taken[i] < len(pool)]
        share, extra = divmod(left, len(open_classes))
        for rank, i in enumerate(open_classes):
            grant = min(share + (rank < extra), len(by_class[i]) - taken[i])
            taken[i] += grant
            left -= grant
    return np.sort(np.concatenate([pool[:n] for pool, n in zip(by_class, taken)]))


class GrayBatch(NormalizeBatch):
    """Stacks ``(uint8 1xHxW, label)`` samples, normalises them and repeats the gray channel to three."""

    def __call__(self, samples):
        images, labels = super().__call__(samples)
        return images.expand(-1, 3, -1, -1).contiguous(), labels


def fashion_augmentation(resolution: int) -> nn.Module:
    """The standard one: random crop with 4-pixel padding (at 28 px; scaled with R) and a horizontal flip."""
    black = [-MEAN[0] / STD[0]] * 3
    padding = max(1, round(4 * resolution / NATIVE_RESOLUTION))
    return nn.Sequential(
        K.RandomCrop((resolution, resolution), padding=padding, fill=black),
        K.RandomHorizontalFlip(),
    )


class FashionMnistDataModule(_ClassificationDataModule):
    """Fashion-MNIST from ``root``: training images train, the official 10,000 test images validate.

    ``val_split="holdout"`` validates on ``holdout`` seeded, class-balanced training images instead (and trains on
    the rest). ``train_subset`` trains on that many of the training images, class-balanced and fixed by ``seed``.
    Every file and setting is checked at construction, before any training.
    """

    num_classes = NUM_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str] = DEBIAN_FOLDER,
        resolution: int = NATIVE_RESOLUTION,
        batch_size: int = 128,
        val_split: str = "test",
        holdout: int = 10000,
        train_subset: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        augment: bool = False,
    ) -> None:
        super().__init__(resolution=resolution, batch_size=batch_size, seed=seed, num_workers=num_workers)
        if val_split not in VAL_SPLITS:
            raise ConfigError(f"data.val_split must be one of {', '.join(VAL_SPLITS)}, got {val_split!r}")
        _require_positive_int("holdout", holdout)
        if train_subset is not None:
            _require_positive_int("train_subset", train_subset)
        self.root = Path(root).expanduser()
        self.val_split = val_split
        files = _find_files(self.root)
        images, labels = _read_split(files["train_images"], files["train_labels"])
        if val_split == "holdout":
            if holdout >= len(labels):
                raise ConfigError(f"data.holdout={holdout} must be below the {len(labels)} training images")
            val_idx = balanced_subset(labels.numpy(), holdout, seed)
            train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
            val_images, val_labels = images[val_idx], labels[val_idx]
            images, labels = images[train_idx], labels[train_idx]
        else:
            val_images, val_labels = _read_split(files["test_images"], files["test_labels"])
        if train_subset is not None:
            if train_subset > len(labels):
                raise ConfigError(
                    f"data.train_subset={train_subset} is more than the {len(labels)} training images; "
                    "lower it or set it to null for all"
                )
            chosen = balanced_subset(labels.numpy(), train_subset, seed)
            images, labels = images[chosen], labels[chosen]
        self.train_dataset = TensorDataset(images, labels)
        self.val_dataset = TensorDataset(val_images, val_labels)
        self.augment = augment
        self.train_augmentation = fashion_augmentation(resolution) if augment else None
        self.collate = GrayBatch(MEAN, STD, resolution)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, collate_fn=self.collate)
