"""The shared base of the proxy-task LightningDataModules (evaluators/data.py, evaluators/imagenet.py, plugins'
own such as evaluators/fashion_mnist.py): the collate that normalises whole batches, and the module base class
with its loader plumbing and batch-level training augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mnas_core.errors import ConfigError

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
