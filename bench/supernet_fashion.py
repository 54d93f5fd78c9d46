"""`bench.supernet --data fashion_mnist`: the supernet and its cheap peers judged against the ground-truth table.

The truth is `bench/results/ground_truth/fashion_mnist.csv` (bench/ground_truth.py), read, never retrained: each
architecture's accuracy averaged over its seeds. Judged are the table's sampled architectures (families `random`
and `latency_spread`: the ones a search of the space can produce). Every score is computed in the same run, on
the table's recipe (`+experiment=fashion`): the supernet (inherited weights, BN recalibrated, then validation
accuracy and likelihood, exp(-loss): `evaluator=supernet`'s two `supernet.score`s); the short stand-alone
training (`--peer-steps` batches from scratch, by its training loss); the product of the two likelihoods (does the
supernet add to the short training?); and the training-free scores: parameters, multiply-adds (both from the
table) and NASWOT (bench/_objective.py) on 16 Fashion-MNIST training images. Printed per score: Kendall tau over all, and how many of its top 10 are in
the table's top 10. Cached under --out like the digits bench.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from bench.ground_truth import recipe, recipe_hash, space_config
from bench.supernet import agreement, append, cached, setting_dir, short_training_peer, supernet_defaults

SAMPLED = ("random", "latency_spread")


def read_truth(path: Path) -> dict[str, dict[str, Any]]:
    """Per architecture key: family, mean accuracy over seeds, params, macs, latency."""
    if not path.is_file():
        raise SystemExit(f"{path} is missing: build it with `python -m bench.ground_truth`")
    truth: dict[str, dict[str, Any]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            slot = truth.setdefault(row["arch"], {"family": row["family"], "accuracies": [], "sample": row["sample"],
                                                  "params": int(row["params"]), "macs": int(row["macs"])})
            slot["accuracies"].append(float(row["accuracy"]))
    for slot in truth.values():
        slot["accuracy"] = statistics.fmean(slot["accuracies"])
    return truth


def sampled_archs(truth: dict[str, dict[str, Any]], config: Any) -> list[Any]:
    """The table's sampled architectures, decoded from its `sample` column (not drawn again: the table's
    `latency_spread` draw depends on the latency table of the machine that built it)."""
    archs = []
    for key, slot in truth.items():
        if slot["family"] in SAMPLED:
            arch = config.arch_from_sample(json.loads(slot["sample"]))
            if arch.key != key:
                raise SystemExit(f"the table's sample of {key} decodes to another architecture in this space: "
                                 "judge it with the space config that built the table")
            archs.append(arch)
    return archs


def fidelity(score: list[float], truth: list[float], top: int, head: int = 20) -> dict[str, float]:
    """Kendall tau over all, tau among the truth's best `head`, and how many of the score's best `top` are among the
    truth's best `top`."""
    from scipy.stats import kendalltau

    def best(values: list[float], count: int) -> list[int]:
        return sorted(range(len(values)), key=lambda i: values[i], reverse=True)[:count]

    leaders = best(truth, head)
    return {"tau": float(kendalltau(score, truth).statistic),
            "tau_head": float(kendalltau([score[i] for i in leaders], [truth[i] for i in leaders]).statistic),
            "top_overlap": len(set(best(score, top)) & set(best(truth, top)))}


def settings_table(root: Path, archs: list[Any], truth_acc: list[float], top: int) -> list[dict[str, Any]]:
    """Every supernet setting cached under `root` whose scores cover `archs`: its figures and costs."""
    rows = []
    for setting in sorted(root.glob("*/setting.json")):
        scores = cached(setting.parent / "supernet_scores.jsonl")
        if not all(a.key in scores and "loss" in scores[a.key] for a in archs):
            continue
        info = json.loads(setting.read_text())
        for name, key, sign in (("accuracy", "accuracy", 1), ("likelihood", "loss", -1)):
            figures = fidelity([sign * scores[a.key][key] for a in archs], truth_acc, top)
            rows.append({"setting": setting.parent.name, "score": name, **figures, **info,
                         "seconds_per_score": statistics.fmean(scores[a.key]["seconds"] for a in archs)})
    return rows


def pooled_likelihood(root: Path, archs: list[Any]) -> tuple[list[str], list[float]]:
    """Every cached supernet under `root` that scored all of `archs`, and their scores pooled: minus the mean of
    their validation losses (the geometric mean of their likelihoods). If the supernets' error against the table
    were noise, pooling would rank better than any one of them; if it is bias, little better."""
    complete = []
    for path in sorted(root.glob("*/supernet_scores.jsonl")):
        scores = cached(path)
        if all("loss" in scores.get(a.key, {}) for a in archs):
            complete.append((path.parent.name, scores))
    if not complete:
        return [], []
    return ([name for name, _ in complete],
            [-statistics.fmean(scores[a.key]["loss"] for _, scores in complete) for a in archs])


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
    from evaluators.supernet_split import train_split
    from evaluators.supernet_train import inherited_path, train_supernet, validation_metrics

    settings = recipe()
    config = space_config(settings["data"]["resolution"])
    datamodule = FashionMnistDataModule(**settings["data"])
    train = dict(settings["train"])
    limit = {"limit_train_batches": 3, "limit_val_batches": 2} if args.quick else {}
    train.update(limit)
    truth = read_truth(args.table)
    archs = sampled_archs(truth, config)
    if args.quick:
        archs = archs[:12]
    # Caches are per recipe (the table's data and proxy training) and per supernet setting, --quick apart.
    root = args.out / "fashion_mnist" / recipe_hash(settings) / ("quick" if args.quick else "full")
    defaults = supernet_defaults()
    out = setting_dir(root, args, defaults)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base_dir = setting_dir(root, args, defaults, split=False) / "supernet"  # a split refines the one-shot supernet
    train_args = {"sampling": args.sampling, "distill": args.distill, "seed": args.supernet_seed,
                  "optimizer": args.optimizer, "lr": args.lr, "label_smoothing": defaults["label_smoothing"],
                  "limit_val_batches": 2, **limit}
    supernet = train_supernet(config, datamodule, base_dir, epochs=args.supernet_epochs, warmup=args.warmup,
                              **train_args).eval()
    trainings = [supernet.training_info]
    if args.split:
        supernet = train_split(config, datamodule, base_dir, supernet, args.split, split_epochs=args.split_epochs,
                               **train_args).eval()
        trainings += [part.training_info for part in supernet.parts.values()]
    train_seconds = sum(info["train_seconds"] for info in trainings)
    images_seen = sum(info["images_seen"] for info in trainings)
    split = f", split by {args.split} ({args.split_epochs} epochs each)" if args.split else ""
    print(f"supernet on Fashion-MNIST: {args.supernet_epochs} epochs ({args.sampling}, warm-up {args.warmup:g}"
          f"{', distilled' if args.distill else ''}{split}) in {train_seconds:.0f} s, {images_seen} training-image "
          f"passes (this run: {time.perf_counter() - started:.0f} s)", flush=True)

    (out / "setting.json").write_text(json.dumps({
        "train_seconds": round(train_seconds, 1), "images_seen": images_seen,
        "calibration_batches": args.calibration_batches}))
    scores_path = out / "supernet_scores.jsonl"
    scores = cached(scores_path)
    for arch in archs:
        if "loss" not in scores.get(arch.key, {}):
            t0 = time.perf_counter()
            model = inherited_path(supernet, arch, datamodule, calibration_batches=args.calibration_batches)
            metrics = validation_metrics(model, datamodule.val_dataloader())  # accuracy and loss in one pass
            scores[arch.key] = {"id": arch.key, **metrics, "seconds": time.perf_counter() - t0}
            append(scores_path, scores[arch.key])
    truth_acc = [truth[a.key]["accuracy"] for a in archs]
    score_seconds = statistics.fmean(scores[a.key]["seconds"] for a in archs)
    rows: dict[str, tuple[list[float], float]] = {
        "supernet (BN recalibrated): accuracy": ([scores[a.key]["accuracy"] for a in archs], score_seconds),
        "supernet (BN recalibrated): likelihood": ([-scores[a.key]["loss"] for a in archs], score_seconds),
    }
    if args.scores_csv:
        write_scores(args.scores_csv, archs, scores)
    if args.peer_steps:
        peer_path = root / f"peer-{args.peer_steps}steps-seed{args.seeds}.jsonl"
        peer = short_training_peer(archs, peer_path, args.peer_steps, datamodule, train, seed=args.seeds)
        seconds = statistics.fmean(peer[a.key]["seconds"] for a in archs)
        rows[f"short training, {args.peer_steps} batches: val accuracy"] = (
            [peer[a.key]["accuracy"] for a in archs], seconds)
        rows[f"short training, {args.peer_steps} batches: -train loss"] = (
            [-peer[a.key]["train_loss"] for a in archs], seconds)
        # Both at once: the supernet's likelihood times the short training's (exp of minus the sum of the losses)
        rows["supernet likelihood x short training's"] = (
            [-(scores[a.key]["loss"] + peer[a.key]["train_loss"]) for a in archs], score_seconds + seconds)
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
    print(f"  {'score':42s} {'tau':>6s} {'tau20':>6s} {f'top{args.top}':>6s} {'s/arch':>7s}")
    for name, (score, seconds) in rows.items():
        figures = fidelity(score, truth_acc, args.top)
        print(f"  {name:42s} {figures['tau']:6.3f} {figures['tau_head']:6.3f} {figures['top_overlap']:4d}/{args.top} "
              f"{seconds:7.2f}")
    print(f"\nevery supernet setting cached under {root} (tau20: among the table's best 20):")
    print(f"  {'setting':48s} {'score':10s} {'tau':>6s} {'tau20':>6s} {f'top{args.top}':>6s} {'train s':>8s} "
          f"{'passes':>9s} {'s/score':>8s}")
    for row in settings_table(root, archs, truth_acc, args.top):
        print(f"  {row['setting']:48s} {row['score']:10s} {row['tau']:6.3f} {row['tau_head']:6.3f} "
              f"{row['top_overlap']:4d}/{args.top} {row['train_seconds']:8.0f} {row['images_seen']:9d} "
              f"{row['seconds_per_score']:8.2f}")
    names, pooled = pooled_likelihood(root, archs)
    if len(names) > 1:
        figures = fidelity(pooled, truth_acc, args.top)
        print(f"  {f'the {len(names)} supernets above, pooled (mean loss)':48s} {'likelihood':10s} "
              f"{figures['tau']:6.3f} {figures['tau_head']:6.3f} {figures['top_overlap']:4d}/{args.top}")
    others = agreement(archs, scores, root, scores_path)
    if others:  # low agreement: the supernets' error is noise, and averaging them helps; high: it is bias
        print("  this supernet's accuracy scores against every other cached one (tau): "
              + ", ".join(f"{name} {tau:.3f}" for name, tau in others.items()))
    print_cost(args, config, datamodule, train)


def print_cost(args: Any, config: Any, datamodule: Any, train: dict[str, Any]) -> None:
    """Training-image passes of a supernet search with this setting against a multi-trial one (bench/supernet.py's
    formula), on this data and for the ImageNet preset as configured."""
    from bench.supernet import image_passes, imagenet_preset_passes, paths_per_step
    from evaluators.supernet_split import split_values

    paths = paths_per_step(args.sampling, args.distill)
    extra = len(split_values(config, args.split)) * args.split_epochs if args.split else 0  # sub-supernet epochs
    images = len(datamodule.train_dataset)
    scoring = args.calibration_batches * datamodule.batch_size + len(datamodule.val_dataset)
    here = image_passes(images, proxy_epochs=train["epochs"], trials=100, supernet_epochs=args.supernet_epochs + extra,
                        paths_per_step=paths, samples=1000, scoring_images=scoring, confirm=5)
    imagenet = imagenet_preset_passes(paths, extra)
    print(f"\ncost in training-image passes ({paths} path(s) a step, {args.supernet_epochs} + {extra} epochs): this "
          f"data, 100 trials x {train['epochs']} epochs {here['multi_trial']:.3g} against a supernet search of 1,000 "
          f"samples {here['supernet_search']:.3g} ({here['ratio']:.1f}x fewer); ImageNet preset, 8,000 x 5 epochs "
          f"{imagenet['multi_trial']:.3g} against {imagenet['supernet_search']:.3g} ({imagenet['ratio']:.0f}x fewer)")


def write_scores(path: Path, archs: list[Any], scores: dict[str, Any]) -> None:
    """`arch,supernet_score` per architecture: the table's key and the score `evaluator=supernet` gives a trial by
    default (`supernet.score=likelihood`: exp(-validation loss))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "supernet_score"])
        writer.writerows((a.key, f"{math.exp(-scores[a.key]['loss']):.4f}") for a in archs)
    print(f"scores written to {path}")
