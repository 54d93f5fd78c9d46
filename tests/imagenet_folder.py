"""A tiny ImageNet-layout folder of real JPEGs: root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ("n01440764", "n01443537", "n01484850")  # 3 classes, as an ImageNet subset would have


def write_imagenet_folder(root: Path, train_per_class: int = 8, val_per_class: int = 2, seed: int = 0) -> Path:
    """Each class is a noisy image of its own colour, of assorted sizes, saved as JPEG by Pillow."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                height, width = int(rng.integers(40, 90)), int(rng.integers(40, 90))
                colour = np.array([60 + 70 * label, 200 - 60 * label, 40 + 90 * (label % 2)], dtype=np.float32)
                pixels = colour + rng.normal(0, 25, size=(height, width, 3))
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
                image.save(folder / f"{wnid}_{split}_{k}.JPEG", quality=90)
    return root
