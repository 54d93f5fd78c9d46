"""LightningDataModules for the proxy image-classification task.

Every module exposes ``num_classes``, ``in_channels`` (always 3), ``resolution``, ``train_dataloader()`` and
``val_dataloader()``. Loaders yield ``(images, labels)`` with ``images`` float32, normalised, shaped
``(B, 3, R, R)`` -- except ImageNet training batches with ``augment=True``, which arrive at the pre-crop size
``round(R / 0.875)`` and are cropped to ``R`` by the augmentation. Augmentation (kornia) runs on whole batches
after they reach the device, in ``on_after_batch_transfer``, during training only; it is also available as
``train_augmentation`` for code that drives the loaders without a Trainer.

A missing or unusable data folder raises :class:`~mnas_core.errors.DatasetNotFoundError` when the module is
constructed, before any training starts.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from mnas_core.errors import ConfigError, DatasetNotFoundError

__all__ = [
    "Cifar10DataModule",
    "DigitsDataModule",
    "ImageFileDataset",
    "ImageNetDataModule",
    "NormalizeBatch",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CENTER_CROP_RATIO = 0.875  # validation: resize the shorter side to R / 0.875, then centre-crop R
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
FALLBACK_HOLDOUT_FRACTION = 0.1

Batch = tuple[Tensor, Tensor]


def _require_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")


def _channel_tensor(values: Sequence[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


class NormalizeBatch:
    """Collate function: stacks ``(uint8 CHW image, label)`` samples into a float batch, resized and normalised.

    Converting whole batches (not single images) keeps the per-sample work in the workers to a memory copy.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], resolution: int | None = None) -> None:
        self.mean = _channel_tensor(mean)
        self.std = _channel_tensor(std)
        self.resolution = resolution

    def __call__(self, samples: Sequence[tuple[Tensor, Tensor | int]]) -> Batch:
        images = torch.stack([image for image, _ in samples]).float().div_(255.0)
        labels = torch.as_tensor([int(label) for _, label in samples], dtype=torch.long)
        if self.resolution is not None and images.shape[-1] != self.resolution:
            images = F.interpolate(
                images,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return (images - self.mean) / self.std, labels


class _ClassificationDataModule(pl.LightningDataModule):
    """Shared loader plumbing and batch-level training augmentation."""

    in_channels: int = 3
    num_classes: int

    def __init__(self, *, resolution: int, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        _require_positive_int("resolution", resolution)
        _require_positive_int("batch_size", batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        self.resolution = resolution
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_augmentation: nn.Module | None = None
        # Training batches short of batch_size (an epoch's remainder) are dropped when set; a supernet sets it.
        self.drop_last_train = False

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Augments training batches on their device; validation batches pass through untouched."""
        trainer = self.trainer
        if self.train_augmentation is None or trainer is None or not trainer.training:
            return batch
        images, labels = batch
        return self.train_augmentation(images), labels

    def _loader(
        self, dataset: Dataset, *, shuffle: bool, collate_fn: NormalizeBatch | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and self.drop_last_train,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


# --------------------------------------------------------------------------------------------- digits


def _digits_images(resolution: int) -> tuple[Tensor, np.ndarray]:
    """scikit-learn's 8x8 digits as ``(N, 3, R, R)`` floats in [0, 1] (before normalisation) and labels."""
    digits = load_digits()
    gray = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
    resized = F.interpolate(gray, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return resized.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous(), digits.target


class DigitsDataModule(_ClassificationDataModule):
    """scikit-learn's handwritten digits (1,797 images, 10 classes), upscaled to ``resolution``, held in memory.

    The train/val split is stratified and fixed by ``seed``; normalisation uses training-split statistics.
    No augmentation: flips and crops change what a digit means.
    """

    num_classes = 10

    def __init__(
        self,
        resolution: int = 32,
        batch_size: int = 64,
        val_fraction: float = 0.25,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(resolution=resolution, batch_size=batch_size, seed=seed, num_workers=num_workers)
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction!r}")
        self.val_fraction = val_fraction
        images, labels = _digits_images(resolution)
        train_idx, val_idx = train_test_split(
            np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
        )
        self.train_indices: np.ndarray = np.sort(train_idx)
        self.val_indices: np.ndarray = np.sort(val_idx)
        train_images = images[self.train_indices]
        mean, std = train_images.mean(), train_images.std()
        targets = torch.from_numpy(labels).long()
        self.train_dataset = TensorDataset((train_images - mean) / std, targets[self.train_indices])
        self.val_dataset = TensorDataset((images[self.val_indices] - mean) / std, targets[self.val_indices])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)


# -------------------------------------------------------------------------------------------- CIFAR-10

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)


def _find_cifar10_folder(root: Path) -> Path:
    """``root`` or ``root/cifar-10-batches-py``, whichever holds every python batch."""
    for folder in (root, root / "cifar-10-batches-py"):
        if all((folder / name).is_file() for name in CIFAR10_FILES):
            return folder
    raise DatasetNotFoundError(
        f"CIFAR-10 python batches not found in {root} (expected data_batch_1..5 and test_batch there or in "
        f"{root / 'cifar-10-batches-py'}); set data.root to the folder holding cifar-10-batches-py"
    )


def _read_cifar10_batch(path: Path) -> tuple[Tensor, Tensor]:
    """One official CIFAR-10 python batch (a pickled dict) as uint8 ``(N, 3, 32, 32)`` images and labels."""
    try:
        with path.open("rb") as f:
            # The official CIFAR-10 format is a pickle; only the named batch files are ever unpickled.
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetNotFoundError(
            f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
            "re-download cifar-10-python.tar.gz and extract it"
        ) from exc
    if len(data) != len(labels):
        raise DatasetNotFoundError(
            f"{path} holds {len(data)} images but {len(labels)} labels; re-download cifar-10-python.tar.gz"
        )
    return torch.from_numpy(data), torch.from_numpy(labels)


def _read_cifar10_split(folder: Path, names: Sequence[str]) -> TensorDataset:
    parts = [_read_cifar10_batch(folder / name) for name in names]
    return TensorDataset(
        torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])
    )


def cifar10_augmentation(resolution: int) -> nn.Module:
    """Random crop with ``R/8`` padding (black, in normalised units) and a horizontal flip."""
    black = [-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)]
    return nn.Sequential(
        K.RandomCrop((resolution, resolution), padding=max(1, resolution // 8), fill=black),
        K.RandomHorizontalFlip(),
    )


class Cifar10DataModule(_ClassificationDataModule):
    """CIFAR-10 from its python batches: ``data_batch_1..5`` train, ``test_batch`` validates.

    The folder is checked at construction; the ~180 MB of batches are read on first use and kept in memory as
    uint8. Images are resized to ``resolution`` when it is not 32.
    """

    num_classes = 10

    def __init__(
        self,
        root: str | os.PathLike[str],
        resolution: int = 32,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 2,
        augment: bool = True,
    ) -> None:
        super().__init__(resolution=resolution, batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.root = _find_cifar10_folder(Path(root).expanduser())
        self.augment = augment
        self.train_augmentation = cifar10_augmentation(resolution) if augment else None
        self.collate = NormalizeBatch(CIFAR10_MEAN, CIFAR10_STD, resolution)
        self._splits: tuple[TensorDataset, TensorDataset] | None = None

    def _load_splits(self) -> tuple[TensorDataset, TensorDataset]:
        if self._splits is None:
            self._splits = (
                _read_cifar10_split(self.root, CIFAR10_TRAIN_FILES),
                _read_cifar10_split(self.root, (CIFAR10_TEST_FILE,)),
            )
        return self._splits

    @property
    def train_dataset(self) -> TensorDataset:
        return self._load_splits()[0]

    @property
    def val_dataset(self) -> TensorDataset:
        return self._load_splits()[1]

    def setup(self, stage: str | None = None) -> None:
        self._load_splits()

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, collate_fn=self.collate)


# -------------------------------------------------------------------------------------------- ImageNet


VAL_LABEL_FILES = ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt", "val.txt")
VAL_SPLITS = ("holdout", "val")


def _image_files(folder: Path) -> list[str]:
    return sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)


def _scan_image_folder(train_dir: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, label)`` for every image under ``train_dir/<class>/``, classes being the sorted sub-folders."""
    hint = "set data.root to the folder that holds train/<wnid>/*.JPEG"
    if not train_dir.is_dir():
        raise DatasetNotFoundError(f"ImageNet training folder {train_dir} does not exist; {hint}")
    classes = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir())
    if not classes:
        raise DatasetNotFoundError(
            f"no images found in {train_dir} (expected <wnid>/*.JPEG class folders, found 0 folders); {hint}"
        )
    files = {name: _image_files(train_dir / name) for name in classes}
    empty = [name for name in classes if not files[name]]
    if empty:
        raise DatasetNotFoundError(
            f"class folder {train_dir / empty[0]} holds no images (.JPEG/.jpg/.png)"
            + (f", nor do {len(empty) - 1} more" if len(empty) > 1 else "")
            + f"; found {len(classes)} folders: add its images or remove the folder"
        )
    samples = [(os.path.join(train_dir, name, file), label) for label, name in enumerate(classes) for file in files[name]]
    return samples, classes


def _scan_val_folder(val_dir: Path, classes: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` for ``val_dir/<wnid>/*.JPEG``, labelled by the training classes' order."""
    if not val_dir.is_dir():
        raise DatasetNotFoundError(
            f"validation folder {val_dir} does not exist; add val/<wnid>/*.JPEG next to train/ or set "
            "data.val_split=holdout to validate on held-out training images"
        )
    flat = _image_files(val_dir)
    if flat:
        labels = next((val_dir.parent / n for n in VAL_LABEL_FILES if (val_dir.parent / n).is_file()), None)
        labels = labels or next((val_dir / n for n in VAL_LABEL_FILES if (val_dir / n).is_file()), None)
        raise DatasetNotFoundError(
            f"{val_dir} holds {len(flat)} images directly (the flat ILSVRC2012 layout"
            + (f", labels in {labels.name}" if labels else "")
            + "); re-organise it as val/<wnid>/<image>.JPEG, one folder per class named like train/, "
            "moving each image into the folder of its label, or set data.val_split=holdout"
        )
    known = {name: label for label, name in enumerate(classes)}
    folders = sorted(entry.name for entry in os.scandir(val_dir) if entry.is_dir())
    unknown = [name for name in folders if name not in known]
    if unknown:
        raise DatasetNotFoundError(
            f"validation class folder {val_dir / unknown[0]} has no training folder train/{unknown[0]} "
            f"({len(unknown)} such); validate on the training classes only"
        )
    samples = [(os.path.join(val_dir, name, file), known[name]) for name in folders for file in _image_files(val_dir / name)]
    if not samples:
        raise DatasetNotFoundError(f"no images found in {val_dir} (expected val/<wnid>/*.JPEG class folders)")
    return samples


def holdout_split(num_items: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint ``(train, holdout)`` index arrays (each sorted); ``holdout`` is clamped when too large."""
    if num_items < 2:
        raise DatasetNotFoundError(
            f"need at least 2 training images to hold some out for validation, found {num_items}; "
            "point data.root at a fuller ImageNet copy"
        )
    if holdout >= num_items:
        clamped = max(1, round(num_items * FALLBACK_HOLDOUT_FRACTION))
        warnings.warn(
            f"data.holdout={holdout} >= the {num_items} training images; holding out {clamped} "
            f"({FALLBACK_HOLDOUT_FRACTION:.0%}) instead",
            stacklevel=3,
        )
        holdout = clamped
    order = np.random.default_rng(seed).permutation(num_items)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


def _resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image.resize(new_size, Image.Resampling.BILINEAR)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageFileDataset(Dataset):
    """Decodes images with Pillow: shorter side resized to ``resize``, centre-cropped to ``crop``, uint8 CHW."""

    def __init__(self, samples: Sequence[tuple[str, int]], *, resize: int, crop: int) -> None:
        self.samples = list(samples)
        self.resize = resize
        self.crop = crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            image.draft("RGB", (self.resize, self.resize))  # JPEG: decode at a reduced scale when possible
            rgb = _center_crop(_resize_shorter_side(image.convert("RGB"), self.resize), self.crop)
        return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1), label


def imagenet_augmentation(resolution: int) -> nn.Module:
    """Inception-style random resized crop to ``resolution`` and a horizontal flip."""
    return nn.Sequential(
        K.RandomResizedCrop((resolution, resolution), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
    )


class ImageNetDataModule(_ClassificationDataModule):
    """ImageNet's ``root/train/<wnid>/*.JPEG``: any number of class folders (a subset such as ImageNet-100 too).

    ``val_split="holdout"`` (the MnasNet proxy split): ``holdout`` seeded training images validate, the rest
    train. ``val_split="val"`` (final evaluation): every training image trains and ``root/val/<wnid>/*.JPEG``
    validates. Validation images are resized (shorter side ``R / 0.875``) and centre-cropped to ``R``; training
    images are decoded the same way at ``R / 0.875`` and, with ``augment``, random-resized-cropped to ``R`` on
    the batch. ``num_classes`` is the number of training class folders.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        resolution: int = 224,
        batch_size: int = 256,
        holdout: int = 50000,
        seed: int = 0,
        num_workers: int = 4,
        augment: bool = True,
        val_split: str = "holdout",
    ) -> None:
        super().__init__(resolution=resolution, batch_size=batch_size, seed=seed, num_workers=num_workers)
        _require_positive_int("holdout", holdout)
        if val_split not in VAL_SPLITS:
            raise ConfigError(f"data.val_split must be one of {', '.join(VAL_SPLITS)}, got {val_split!r}")
        self.root = Path(root).expanduser()
        self.val_split = val_split
        samples, self.classes = _scan_image_folder(self.root / "train")
        self.num_classes = len(self.classes)
        if self.num_classes < 2:
            raise DatasetNotFoundError(
                f"{self.root / 'train'} holds one class folder ({self.classes[0]}); a classifier needs at least 2: "
                "point data.root at a folder whose train/ holds a folder per class"
            )
        if val_split == "val":
            self.train_samples = samples
            self.val_samples = _scan_val_folder(self.root / "val", self.classes)
        else:
            train_idx, val_idx = holdout_split(len(samples), holdout, seed)
            self.train_samples = [samples[i] for i in train_idx]
            self.val_samples = [samples[i] for i in val_idx]
        self.augment = augment
        self.train_augmentation = imagenet_augmentation(resolution) if augment else None
        resize = round(resolution / CENTER_CROP_RATIO)
        self.train_dataset = ImageFileDataset(
            self.train_samples, resize=resize, crop=resize if augment else resolution
        )
        self.val_dataset = ImageFileDataset(self.val_samples, resize=resize, crop=resolution)
        self.collate = NormalizeBatch(IMAGENET_MEAN, IMAGENET_STD)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, collate_fn=self.collate)
