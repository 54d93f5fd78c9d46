"""ImageNet as a folder of class folders (``root/train/<wnid>/*.JPEG``, optionally ``root/val/<wnid>/``), for
the proxy task: the folder scans with their one-line fixes, the seeded holdout split, Pillow decoding and the
`ImageNetDataModule` (configs name it `evaluators.data.ImageNetDataModule`, which re-exports it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from evaluators.datamodule_base import NormalizeBatch, _ClassificationDataModule, _require_positive_int
from mnas_core.errors import ConfigError, DatasetNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CENTER_CROP_RATIO = 0.875  # validation: resize the shorter side to R / 0.875, then centre-crop R
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
FALLBACK_HOLDOUT_FRACTION = 0.1

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
