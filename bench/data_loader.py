"""Does ImageNet loading keep up with training? Images/s one data-loader worker decodes (Pillow) and augments
(kornia) at 224 px, against the images/s one MnasNet-A1 training step consumes on this CPU, and the number of
workers a GPU needs at a published MnasNet-A1 training throughput.

    python -m bench.data_loader [--images 192] [--batch 32] [--threads 1]

The JPEGs are written here at ImageNet's typical size (500x375, quality 90). The pipeline is the project's own
(evaluators.data.ImageNetDataModule): a worker decodes, resizes the shorter side to 256 and centre-crops
(ImageFileDataset + NormalizeBatch); the random-resized crop and flip run on the whole batch with kornia, on
the training device (timed here on this CPU, where it competes with the step).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from evaluators.data import ImageNetDataModule
from search_spaces import build_model, load_preset

# Published, not measured here: timm's training benchmark of mnasnet_a1 (AMP, NCHW, batch 512, 224 px) on an
# RTX 3090, PyTorch 1.12 (huggingface/pytorch-image-models results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv).
PUBLISHED_GPU = ("RTX 3090, AMP (timm's published benchmark)", 1859.21)
IMAGENET_SIZE = (500, 375)


def write_jpegs(root: Path, count: int, seed: int = 0) -> Path:
    """Smooth random scenes with texture: JPEGs of about ImageNet's size and file size."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        folder = root / "train" / f"n{k % 4:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize(
            IMAGENET_SIZE, Image.Resampling.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (IMAGENET_SIZE[1], IMAGENET_SIZE[0], 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img{k}.JPEG", quality=90)
    return root


def loader_rate(root: Path, batch: int, augment: bool) -> float:
    """Images/s of one worker (num_workers=0: this process does a worker's work), decode + collate
    (+ the batch augmentation when ``augment``)."""
    datamodule = ImageNetDataModule(root, resolution=224, batch_size=batch, holdout=1, num_workers=0, augment=True)
    loader = datamodule.train_dataloader()
    seen, started = 0, time.perf_counter()
    for images, _ in loader:
        if augment:
            images = datamodule.train_augmentation(images)
        seen += images.shape[0]
    return seen / (time.perf_counter() - started)


def train_step_rate(batch: int, steps: int = 3) -> float:
    """Images/s of MnasNet-A1 (1000 classes) training steps at 224 px: forward, backward, RMSProp."""
    model = build_model(load_preset("mnasnet_a1"), num_classes=1000).train()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.016, alpha=0.9, eps=0.03, momentum=0.9)
    images, labels = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=0.1).backward()
        optimizer.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=192, help="JPEGs to decode per measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one core, as one worker has)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_jpegs(Path(tmp), args.images)
        mean_kb = np.mean([p.stat().st_size for p in root.rglob("*.JPEG")]) / 1024
        loader_rate(root, args.batch, augment=False)  # warm the page cache and the imports
        decode = loader_rate(root, args.batch, augment=False)
        decode_augment = loader_rate(root, args.batch, augment=True)
    step = train_step_rate(args.batch)

    table = Table(title=f"ImageNet loading vs MnasNet-A1 training at 224 px ({args.threads} torch thread(s), "
                        f"batch {args.batch}, {args.images} JPEGs of {IMAGENET_SIZE[0]}x{IMAGENET_SIZE[1]}, "
                        f"{mean_kb:.0f} KB mean)")
    for column in ("what", "images/s", "workers to keep up"):
        table.add_column(column, justify="right" if column != "what" else "left")
    table.add_row("1 worker: decode + resize + crop + collate (Pillow)", f"{decode:.1f}", "")
    table.add_row("1 worker: the same + kornia random-resized crop + flip", f"{decode_augment:.1f}", "")
    table.add_row("MnasNet-A1 training step on this CPU", f"{step:.1f}", f"{math.ceil(step / decode)}")
    gpu_name, gpu_rate = PUBLISHED_GPU
    table.add_row(f"MnasNet-A1 training on a GPU: {gpu_name}, published, not measured here", f"{gpu_rate:.0f}",
                  f"{math.ceil(gpu_rate / decode)}")
    console.print(table)
    console.print(f"ratio step / worker on this CPU: {step / decode:.2f}; GPU (published) / worker: "
                  f"{gpu_rate / decode:.1f}")


if __name__ == "__main__":
    main()
