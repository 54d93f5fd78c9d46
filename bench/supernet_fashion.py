"""`bench.supernet --data fashion_mnist`: the supernet and its cheap peers judged against the ground-truth table.

The truth is `bench/results/ground_truth/fashion_mnist.csv` (bench/ground_truth.py), read, never retrained: each
architecture's accuracy averaged over its seeds. Judged are the table's sampled architectures (families `random`
and `latency_spread`: the ones a search of the space can produce). Every score is computed in the same run, on
the table's recipe (`+experiment=fashion`): the supernet (inherited weights, BN recalibrated, validation accuracy,
as `evaluator=supernet` scores a trial); the short stand-alone training (`--peer-steps` batches from scratch);
and the training-free scores: parameters, multiply-adds (both from the table) and NASWOT (bench/_objective.py)
on 16 Fashion-MNIST training images. Printed per score: Kendall tau over all, and how many of its top 10 are in
the table's top 10. Cached under --out like the digits bench.
"""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path
from typing import Any

from bench.ground_truth import architectures, recipe, recipe_hash, space_config
from bench.supernet import append, cached, short_training_peer, supernet_defaults

SAMPLED = ("random", "latency_spread")


def read_truth(path: Path) -> dict[str, dict[str, Any]]:
    """Per architecture key: family, mean accuracy over seeds, params, macs, latency."""
    if not path.is_file():
        raise SystemExit(f"{path} is missing: build it with `python -m bench.ground_truth`")
    truth: dict[str, dict[str, Any]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            slot = truth.setdefault(row["arch"], {"family": row["family"], "accuracies": [],
                                                  "params": int(row["params"]), "macs": int(row["macs"])})
            slot["accuracies"].append(float(row["accuracy"]))
    for slot in truth.values():
        slot["accuracy"] = statistics.fmean(slot["accuracies"])
    return truth


def fidelity(score: list[float], truth: list[float], top: int) -> dict[str, float]:
    from scipy.stats import kendalltau

    best_by_score = set(sorted(range(len(score)), key=lambda i: score[i], reverse=True)[:top])
    best_in_truth = set(sorted(range(len(truth)), key=lambda i: truth[i], reverse=True)[:top])
    return {"tau": float(kendalltau(score, truth).statistic), "top_overlap": len(best_by_score & best_in_truth)}


def fashion_images(datamodule: Any, n: int = 16) -> Any:
    """`n` training images, classes balanced (the first of each class in the subset's order), as a model sees them."""
    import torch

    images, labels = datamodule.train_dataset.tensors
    chosen = [int(torch.nonzero(labels == c)[i // 10]) for i, c in zip(range(n), [i % 10 for i in range(n)])]
    return datamodule.collate([(images[i], labels[i]) for i in chosen])[0]


def naswot_scores(archs: list[Any], datamodule: Any, resolution: int) -> list[float]:
    from bench._objective import Naswot

    naswot = Naswot(resolution=resolution, images=fashion_images(datamodule))
    return [naswot(arch) for arch in archs]


def run(args: Any) -> None:
    from evaluators.fashion_mnist import FashionMnistDataModule
    from evaluators.supernet_train import score_path, train_supernet

    settings = recipe()
    config = space_config(settings["data"]["resolution"])
    datamodule = FashionMnistDataModule(**settings["data"])
    train = dict(settings["train"])
    limit = {"limit_train_batches": 3, "limit_val_batches": 2} if args.quick else {}
    train.update(limit)
    truth = read_truth(args.table)
    archs = [e["arch"] for e in architectures(config, args.random, args.spread)
             if e["family"] in SAMPLED and e["arch"].key in truth]
    if args.quick:
        archs = archs[:12]
    # Caches are per recipe (the table's data and proxy training) and per supernet setting, --quick apart.
    root = args.out / "fashion_mnist" / recipe_hash(settings) / ("quick" if args.quick else "full")
    defaults = supernet_defaults()
    out = root / f"e{args.supernet_epochs}-{args.sampling}-w{args.warmup:g}-s{args.supernet_seed}"
    if (args.optimizer, args.lr) != (defaults["optimizer"], defaults["lr"]):
        out = out.with_name(f"{out.name}-{args.optimizer}{args.lr:g}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    supernet = train_supernet(config, datamodule, out / "supernet", epochs=args.supernet_epochs,
                              sampling=args.sampling, warmup=args.warmup, seed=args.supernet_seed,
                              optimizer=args.optimizer, lr=args.lr, label_smoothing=defaults["label_smoothing"],
                              **{"limit_val_batches": 2, **limit}).eval()
    info = supernet.training_info
    print(f"supernet on Fashion-MNIST: {args.supernet_epochs} epochs ({args.sampling}, warm-up {args.warmup:g}) in "
          f"{info['train_seconds']:.0f} s, {info['images_seen']} training-image passes "
          f"(this run: {time.perf_counter() - started:.0f} s)", flush=True)

    scores_path = out / "supernet_scores.jsonl"
    scores = cached(scores_path)
    for arch in archs:
        if arch.key not in scores:
            t0 = time.perf_counter()
            accuracy = score_path(supernet, arch, datamodule, calibration_batches=args.calibration_batches)[1]
            scores[arch.key] = {"id": arch.key, "accuracy": accuracy, "seconds": time.perf_counter() - t0}
            append(scores_path, scores[arch.key])
    truth_acc = [truth[a.key]["accuracy"] for a in archs]
    rows: dict[str, tuple[list[float], float]] = {
        "supernet (BN recalibrated)": ([scores[a.key]["accuracy"] for a in archs],
                                       statistics.fmean(scores[a.key]["seconds"] for a in archs)),
    }
    if args.peer_steps:
        peer_path = root / f"peer-{args.peer_steps}steps-seed{args.seeds}.jsonl"
        peer = short_training_peer(archs, peer_path, args.peer_steps, datamodule, train, seed=args.seeds)
        seconds = statistics.fmean(peer[a.key]["seconds"] for a in archs)
        rows[f"short training, {args.peer_steps} batches: val accuracy"] = (
            [peer[a.key]["accuracy"] for a in archs], seconds)
        rows[f"short training, {args.peer_steps} batches: -train loss"] = (
            [-peer[a.key]["train_loss"] for a in archs], seconds)
    t0 = time.perf_counter()
    naswot = naswot_scores(archs, datamodule, config.resolution)
    rows["NASWOT (16 images)"] = (naswot, (time.perf_counter() - t0) / len(archs))
    rows["parameters"] = ([truth[a.key]["params"] for a in archs], 0.0)
    rows["multiply-adds"] = ([truth[a.key]["macs"] for a in archs], 0.0)

    seed_pairs = [truth[a.key]["accuracies"][:2] for a in archs if len(truth[a.key]["accuracies"]) >= 2]
    from scipy.stats import kendalltau

    ceiling = kendalltau(*zip(*seed_pairs)).statistic if len(seed_pairs) > 2 else float("nan")
    print(f"\nrank fidelity on Fashion-MNIST against {args.table.name} ({len(archs)} sampled architectures; "
          f"truth: mean of seeds, accuracy {min(truth_acc):.4f}..{max(truth_acc):.4f}; the table's own "
          f"seed-to-seed tau over them {ceiling:.3f}):")
    print(f"  {'score':42s} {'tau':>6s} {f'top{args.top}':>6s} {'s/arch':>7s}")
    for name, (score, seconds) in rows.items():
        figures = fidelity(score, truth_acc, args.top)
        print(f"  {name:42s} {figures['tau']:6.3f} {figures['top_overlap']:4d}/{args.top} {seconds:7.2f}")
