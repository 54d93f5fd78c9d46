"""Rank fidelity of the weight-sharing supernet on the default demo space (digits, 32 px, width 0.5).

    flock /tmp/mnas-heavy.lock python -m bench.supernet                      # 40 archs x 2 seeds, 4 proxy epochs
    flock /tmp/mnas-heavy.lock python -m bench.supernet --proxy-epochs 1     # a cheaper ground truth
    taskset -c 0 python -m bench.supernet --standalone-only                  # the ground truth alone, on one core
    taskset -c 1 python -m bench.supernet --data fashion_mnist --supernet-epochs 8   # against the shipped table

One supernet is trained (`evaluators.supernet_train.train_supernet`, `--supernet-epochs`), then `--archs` random
architectures of the space are scored twice: by the supernet (inherited weights, BN recalibrated, validation
accuracy, as `evaluator=supernet` does) and stand-alone (the proxy training of conf/train/default.yaml, as
`evaluator=proxy` does, once per seed). Printed: Kendall tau (scipy.stats.kendalltau) between the supernet
accuracy and the stand-alone accuracy averaged over the seeds, over all architectures and among the supernet's
top 10 (the ones a search would confirm), and the stand-alone seed-to-seed tau, which bounds what any cheap
score can reach. Beside it, the peer any cheap score must beat, measured in the same run: a short stand-alone
proxy training (`--peer-steps` batches, one epoch, the same `train_proxy`) of every architecture, scored by its
validation accuracy and by its training loss. With `--finetune-batches K` each architecture is scored by the
peer's short training (K batches, the peer's seed) started from its *inherited* weights (the hybrid of the two:
does the supernet's start beat the peer's random one?), and the tau against every other supernet scored under --out says whether the
supernet's disagreement with the ground truth is noise (supernets disagree) or bias (they agree). Then the
cost, in training-image passes, of a supernet search against a multi-trial one, by the same formula for the
demo and the ImageNet preset. Every result is cached under --out, so a killed run
continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def proxy_settings(epochs: int | None) -> dict[str, Any]:
    from omegaconf import OmegaConf

    train = dict(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "train" / "default.yaml")))
    if epochs is not None:
        train["epochs"] = epochs
    return train


def supernet_defaults() -> dict[str, Any]:
    """`supernet.*` of conf/evaluator/supernet.yaml: the bench trains what `evaluator=supernet` trains."""
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "evaluator" / "supernet.yaml"))["supernet"])


def setting_dir(root: Path, args: Any, defaults: dict[str, Any], split: bool = True) -> Path:
    """The cache folder of one supernet setting under `root` (without its few-shot split: `split=False`); the
    default optimizer, no distillation and no split keep the names earlier runs wrote."""
    name = f"e{args.supernet_epochs}-{args.sampling}-w{args.warmup:g}-s{args.supernet_seed}"
    if (args.optimizer, args.lr) != (defaults["optimizer"], defaults["lr"]):
        name += f"-{args.optimizer}{args.lr:g}"
    if args.distill:
        name += "-distill"
    if split and getattr(args, "split", None):
        name += f"-split-{args.split.replace('/', '.')}-e{args.split_epochs}"
    return root / name


def paths_per_step(sampling: str, distill: bool) -> int:
    """Paths a supernet training step runs (`SupernetModule.step_paths`)."""
    return 3 if sampling == "sandwich" else 2 if distill else 1


def cached(path: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


def append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def taus(supernet_acc: list[float], standalone: list[list[float]], top: int) -> dict[str, float]:
    from scipy.stats import kendalltau

    mean = [statistics.fmean(seeds) for seeds in standalone]
    order = sorted(range(len(mean)), key=lambda i: supernet_acc[i], reverse=True)[:top]
    result = {
        "tau_all": kendalltau(supernet_acc, mean).statistic,
        f"tau_top{top}": kendalltau([supernet_acc[i] for i in order], [mean[i] for i in order]).statistic,
    }
    if all(len(seeds) >= 2 for seeds in standalone):
        result["tau_seed_to_seed"] = kendalltau([s[0] for s in standalone], [s[1] for s in standalone]).statistic
        result["seed_spread_mean_abs"] = statistics.fmean(abs(s[0] - s[1]) for s in standalone)
    return result


def image_passes(train_images: int, *, proxy_epochs: int, trials: int, supernet_epochs: int, paths_per_step: int,
                 samples: int, scoring_images: int, confirm: int) -> dict[str, float]:
    """Training-image passes (forward+backward of one image counts 1, a scoring forward counts 1/3)."""
    multi_trial = trials * proxy_epochs * train_images
    supernet = (supernet_epochs * paths_per_step * train_images + samples * scoring_images / 3
                + confirm * proxy_epochs * train_images)
    return {"multi_trial": multi_trial, "supernet_search": supernet, "ratio": multi_trial / supernet}


IMAGENET_TRAIN_IMAGES = 1_231_167  # ImageNet-train less the 50,000 the preset holds out
PAPER_TRIALS, PAPER_PROXY_EPOCHS = 8000, 5  # the paper's multi-trial search


def imagenet_preset_passes(paths_per_step: int, extra_epochs: int = 0) -> dict[str, float]:
    """`image_passes` of `+experiment=mnas_imagenet_supernet` as configured (supernet epochs, samples, calibration
    and validation batches, confirmed), `extra_epochs` more for a few-shot split, against the paper's 8,000 x 5."""
    from omegaconf import OmegaConf

    preset = OmegaConf.load(ROOT / "conf" / "experiment" / "mnas_imagenet_supernet.yaml")
    batch = OmegaConf.load(ROOT / "conf" / "data" / "imagenet.yaml").batch_size
    scoring = (preset.supernet.calibration_batches + preset.supernet.val_batches) * batch
    return image_passes(IMAGENET_TRAIN_IMAGES, proxy_epochs=PAPER_PROXY_EPOCHS, trials=PAPER_TRIALS,
                        supernet_epochs=preset.supernet.epochs + extra_epochs, paths_per_step=paths_per_step,
                        samples=preset.search.max_trials, scoring_images=scoring, confirm=preset.search.confirm_top_k)


def sample_archs(config: Any, n: int) -> list[Any]:
    """The bench's architectures: uniform ones of the space, the same every run (seed 0)."""
    from evaluators.latency.layers import random_arch

    rng = random.Random(0)
    return [random_arch(config, rng) for _ in range(n)]


def standalone_truth(archs: list[Any], path: Path, seeds: int, datamodule: Any,
                     train: dict[str, Any]) -> dict[str, Any]:
    """Stand-alone proxy accuracy of every architecture for every seed, cached in ``path`` (one JSON line each)."""
    import torch

    from evaluators.accuracy import train_proxy
    from search_spaces.builder import build_model

    standalone = cached(path)
    for index, arch in enumerate(archs):
        for seed in range(seeds):
            key = f"{arch.key}#seed{seed}"
            if key in standalone:
                continue
            torch.manual_seed(seed)
            result = train_proxy(build_model(arch, num_classes=10), datamodule, seed=seed, **train)
            standalone[key] = {"id": key, "accuracy": result.accuracy, "seconds": result.seconds}
            append(path, standalone[key])
            print(f"  stand-alone {index + 1}/{len(archs)} seed {seed}: {result.accuracy:.4f} "
                  f"({result.seconds:.0f} s)", flush=True)
    return standalone


def short_training(model: Any, datamodule: Any, train: dict[str, Any], steps: int, seed: int) -> dict[str, float]:
    """`model` after `steps` batches of the proxy training (`train_proxy`, one epoch, no warm-up): its validation
    accuracy, training loss and seconds."""
    from evaluators.accuracy import train_proxy

    result = train_proxy(model, datamodule, seed=seed,
                         **{**train, "epochs": 1, "limit_train_batches": steps, "warmup_epochs": 0})
    return {"accuracy": result.accuracy, "train_loss": result.history[-1]["train_loss"], "seconds": result.seconds}


def short_training_peer(archs: list[Any], path: Path, steps: int, datamodule: Any, train: dict[str, Any],
                        seed: int) -> dict[str, Any]:
    """Validation accuracy and mean training loss of every architecture after `steps` proxy-training batches from
    scratch: the cheapest stand-alone score, the bar a weight-sharing score has to clear. `seed` must be one the
    ground truth did not use: with the same seed the peer's first steps *are* the ground truth's. Cached."""
    import torch

    from search_spaces.builder import build_model

    peer = cached(path)
    for arch in archs:
        if arch.key not in peer:
            torch.manual_seed(seed)
            peer[arch.key] = {"id": arch.key,
                              **short_training(build_model(arch, num_classes=10), datamodule, train, steps, seed)}
            append(path, peer[arch.key])
    return peer


def finetuned_score(supernet: Any, arch: Any, datamodule: Any, train: dict[str, Any], steps: int,
                    seed: int) -> dict[str, float]:
    """The peer's short training (`short_training`), started from the supernet's weights for `arch` instead of
    a random initialisation; the supernet itself is left as it was."""
    return short_training(supernet.extract(arch), datamodule, train, steps, seed)


def agreement(archs: list[Any], scores: dict[str, Any], out: Path, mine: Path) -> dict[str, float]:
    """Kendall tau between these supernet scores and every other complete `supernet_scores.jsonl` under `out`."""
    from scipy.stats import kendalltau

    result = {}
    for other in sorted(out.glob("*/supernet_scores.jsonl")):
        theirs = cached(other)
        if other != mine and all(a.key in theirs for a in archs):
            result[other.parent.name] = kendalltau([scores[a.key]["accuracy"] for a in archs],
                                                   [theirs[a.key]["accuracy"] for a in archs]).statistic
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", choices=["digits", "fashion_mnist"],
                        help="fashion_mnist: judge against the ground-truth table (bench/supernet_fashion.py)")
    parser.add_argument("--table", type=Path, default=ROOT / "bench" / "results" / "ground_truth" / "fashion_mnist.csv",
                        help="--data fashion_mnist: the ground-truth table")
    parser.add_argument("--scores-csv", type=Path, default=None,
                        help="--data fashion_mnist: write each architecture's supernet score here (arch, supernet_score)")
    parser.add_argument("--archs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--proxy-epochs", type=int, default=None, help="default: conf/train/default.yaml")
    defaults = supernet_defaults()
    parser.add_argument("--supernet-epochs", type=int, default=defaults["epochs"])
    parser.add_argument("--sampling", default=defaults["sampling"], choices=["fair", "uniform", "sandwich"])
    parser.add_argument("--warmup", type=float, default=defaults["warmup"])
    parser.add_argument("--distill", action=argparse.BooleanOptionalAction, default=defaults["distill"],
                        help="in-place distillation from the largest path (supernet.distill)")
    parser.add_argument("--split", default=defaults["split"], metavar="DECISION",
                        help="--data fashion_mnist: few-shot sub-supernets by this decision, e.g. block1/conv_op "
                             "(supernet.split)")
    parser.add_argument("--split-epochs", type=int, default=defaults["split_epochs"])
    parser.add_argument("--supernet-seed", type=int, default=0, help="another seed trains another supernet")
    parser.add_argument("--optimizer", default=defaults["optimizer"], choices=["sgd", "rmsprop", "adam"],
                        help="the supernet's optimizer (supernet.optimizer)")
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="the supernet's lr (supernet.lr)")
    parser.add_argument("--standalone-only", action="store_true",
                        help="only train the stand-alone ground truth (cached; another core can train the supernet)")
    parser.add_argument("--peer-steps", type=int, default=20,
                        help="training batches of the short stand-alone peer (0: skip the peer)")
    parser.add_argument("--calibration-batches", type=int, default=5)
    parser.add_argument("--finetune-batches", type=int, default=0,
                        help="score after this many training batches from the inherited weights "
                             "(0: as evaluator=supernet)")
    parser.add_argument("--finetune-lr", type=float, default=None, help="default: the proxy training's lr")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_supernet")
    parser.add_argument("--quick", action="store_true", help="smoke check: 3 batches per epoch everywhere")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    if args.data == "fashion_mnist":
        from bench.supernet_fashion import run

        return run(args)
    from evaluators.data import DigitsDataModule
    from evaluators.supernet_train import score_path, train_supernet
    from search_spaces.space import SpaceConfig

    config = SpaceConfig(width_mult=0.5, num_classes=10, resolution=32)  # conf/config.yaml's demo space
    datamodule = DigitsDataModule(resolution=32)
    train = proxy_settings(args.proxy_epochs)
    limit = {"limit_train_batches": 3, "limit_val_batches": 2} if args.quick else {}
    train.update(limit)
    if args.quick:
        args.out = args.out / "quick"
    out = setting_dir(args.out, args, defaults)
    out.mkdir(parents=True, exist_ok=True)
    if args.standalone_only:
        standalone_truth(sample_archs(config, args.archs), args.out / f"standalone-e{train['epochs']}.jsonl",
                         args.seeds, datamodule, train)
        return
    started = time.perf_counter()
    supernet = train_supernet(config, datamodule, out / "supernet", epochs=args.supernet_epochs,
                              sampling=args.sampling, warmup=args.warmup, distill=args.distill,
                              seed=args.supernet_seed, optimizer=args.optimizer, lr=args.lr,
                              **{"limit_val_batches": 2, **limit}).eval()  # its validation is a progress signal
    supernet_info = supernet.training_info  # what the checkpoint carries besides weights
    print(f"supernet: {args.supernet_epochs} epochs ({args.sampling}, warm-up {args.warmup:g}) in "
          f"{supernet_info['train_seconds']:.0f} s, "
          f"{supernet_info['images_seen']} training-image passes (this run: {time.perf_counter() - started:.0f} s); "
          f"last epoch's training loss {supernet_info['history'][-1]['train_loss']:.3f} (uniform guess 2.303)")

    archs = sample_archs(config, args.archs)
    finetune_lr = train["lr"] if args.finetune_lr is None else args.finetune_lr
    scores_name = (f"finetuned-{args.finetune_batches}-lr{finetune_lr:g}-seed{args.seeds}.jsonl"
                   if args.finetune_batches else "supernet_scores.jsonl")
    scores_path, standalone_path = out / scores_name, args.out / f"standalone-e{train['epochs']}.jsonl"
    scores = cached(scores_path)
    score_seconds = []
    for arch in archs:
        if arch.key not in scores:
            t0 = time.perf_counter()
            if args.finetune_batches:  # the peer's seed, so that only the starting weights differ
                score = finetuned_score(supernet, arch, datamodule, {**train, "lr": finetune_lr},
                                        args.finetune_batches, seed=args.seeds)
            else:
                score = {"accuracy": score_path(supernet, arch, datamodule,
                                                calibration_batches=args.calibration_batches)[1]}
            scores[arch.key] = {"id": arch.key, **score, "seconds": time.perf_counter() - t0}
            append(scores_path, scores[arch.key])
        score_seconds.append(scores[arch.key]["seconds"])
    standalone = standalone_truth(archs, standalone_path, args.seeds, datamodule, train)
    supernet_acc = [scores[a.key]["accuracy"] for a in archs]
    accs = [[standalone[f"{a.key}#seed{s}"]["accuracy"] for s in range(args.seeds)] for a in archs]
    figures = taus(supernet_acc, accs, args.top)
    print(f"\nrank fidelity over {len(archs)} random archs of the demo space (stand-alone: {train['epochs']} proxy "
          f"epochs, mean of {args.seeds} seeds):")
    for name, value in figures.items():
        print(f"  {name:22s} {value:.3f}")
    if args.finetune_batches:
        by_loss = taus([-scores[a.key]["train_loss"] for a in archs], accs, args.top)
        print(f"  (scored after {args.finetune_batches} proxy-training batches from the inherited weights, "
              f"lr {finetune_lr:g}; by their training loss instead: tau_all {by_loss['tau_all']:.3f})")
    print(f"  goal tau_all >= 0.5: {'met' if figures['tau_all'] >= 0.5 else 'NOT met'}")
    others = {} if args.finetune_batches else agreement(archs, scores, args.out, scores_path)
    for name, value in others.items():
        print(f"  tau against the supernet of {name}: {value:.3f}")
    print(f"  supernet accuracy range {min(supernet_acc):.3f}..{max(supernet_acc):.3f}; stand-alone "
          f"{min(map(statistics.fmean, accs)):.3f}..{max(map(statistics.fmean, accs)):.3f}")
    if args.peer_steps:
        peer = short_training_peer(archs, args.out / f"peer-{args.peer_steps}steps-seed{args.seeds}.jsonl",
                                   args.peer_steps, datamodule, train, seed=args.seeds)
        by_accuracy = taus([peer[a.key]["accuracy"] for a in archs], accs, args.top)
        by_loss = taus([-peer[a.key]["train_loss"] for a in archs], accs, args.top)
        print(f"  peer, {args.peer_steps} training batches from scratch per architecture (seed {args.seeds}) "
              f"({statistics.fmean(peer[a.key]['seconds'] for a in archs):.1f} s each): scored by validation accuracy "
              f"tau_all {by_accuracy['tau_all']:.3f} (top{args.top} {by_accuracy[f'tau_top{args.top}']:.3f}), by "
              f"training loss tau_all {by_loss['tau_all']:.3f} (top{args.top} {by_loss[f'tau_top{args.top}']:.3f}); "
              f"supernet minus the better peer {figures['tau_all'] - max(by_accuracy['tau_all'], by_loss['tau_all']):+.3f}")
    seconds = [standalone[k]["seconds"] for k in standalone]
    print(f"  seconds per architecture: supernet score {statistics.fmean(score_seconds):.1f}, stand-alone training "
          f"{statistics.fmean(seconds):.1f}")

    paths = paths_per_step(args.sampling, args.distill)
    train_images = len(datamodule.train_dataset)
    scoring = args.calibration_batches * datamodule.batch_size + len(datamodule.val_dataset)
    demo = image_passes(train_images, proxy_epochs=train["epochs"], trials=100, supernet_epochs=args.supernet_epochs,
                        paths_per_step=paths, samples=1000, scoring_images=scoring, confirm=5)
    imagenet = imagenet_preset_passes(paths)
    print("\ncost in training-image passes (formula: supernet epochs x paths x train images + samples x scoring "
          "images / 3 + confirmed x proxy epochs x train images):")
    print(f"  demo: multi-trial 100 trials {demo['multi_trial']:.3g} vs supernet search (1,000 samples, confirm 5) "
          f"{demo['supernet_search']:.3g}: {demo['ratio']:.1f}x fewer")
    print(f"  imagenet preset (conf/experiment/mnas_imagenet_supernet.yaml): 8,000 x 5 epochs "
          f"{imagenet['multi_trial']:.3g} vs its supernet search {imagenet['supernet_search']:.3g}: "
          f"{imagenet['ratio']:.0f}x fewer (goal 100x)")


if __name__ == "__main__":
    main()
