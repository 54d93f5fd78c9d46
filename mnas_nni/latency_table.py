"""`python -m mnas_nni.latency_table build | evaluate N [--json] | show  [hydra overrides ...]`

The layer-wise latency table of a device, composed from the same Hydra configs as a search, so the search's
own overrides pick the device, the space and the resolution:

    python -m mnas_nni.latency_table build device=ssh device.host=192.168.1.20 data.resolution=224
    python -m mnas_nni.latency_table evaluate 30 --json device=ssh device.host=192.168.1.20 data.resolution=224
    python -m mnas_nni.latency_table show device=ssh device.host=192.168.1.20 data.resolution=224
    python -m mnas_nni latency.mode=predict_verify device=ssh device.host=192.168.1.20 data.resolution=224

build: every distinct layer measured once on the device (resumable: run it again after a kill), then a few
dozen whole models for the calibration. evaluate N: N random architectures that were not calibrated on,
measured on the device as the table was (the lowest median of its `repeats` passes) and compared with the
prediction. show: what the table holds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mnas_core.errors import ConfigError, MnasNniError
from mnas_nni import plugins


def compose(overrides: list[str]) -> DictConfig:
    """The search's config with these overrides (conf/config.yaml and its groups)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mnas_nni.__main__ import config_dir

    plugins.register_search_path()  # pip-installed plugins' config words (a user's own device)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


@dataclass
class Setup:
    """What the table commands need, built from the composed config."""

    device: Any
    space: Any       # SpaceConfig at the data's resolution and class count
    evaluator: Any   # LatencyEvaluator: the search's own whole-model measurement path (lock, cache)
    table_path: Path
    seed: int


def setup(cfg: DictConfig) -> Setup:
    from evaluators.latency import LatencyEvaluator, default_table_path
    from search_spaces.space import SpaceConfig

    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    space_cfg = {k: v for k, v in resolved["search_space"].items() if not k.startswith("_")}
    resolution = int(resolved["data"]["resolution"])
    if space_cfg.get("num_classes") is None:  # the head's width: from the data, unless the space names it
        try:
            space_cfg["num_classes"] = int(plugins.build("data", cfg.data).num_classes)
        except MissingMandatoryValue as err:
            key = getattr(err, "full_key", "") or "a data setting"
            raise ConfigError(f"{key} is not set and the table needs the class count: pass {key}=... or "
                              "search_space.num_classes=N (e.g. 1000 for ImageNet)") from None
    space_cfg["resolution"] = resolution
    space = SpaceConfig(**space_cfg)
    device = plugins.build("device", cfg.device)
    latency = resolved["latency"]
    evaluator = LatencyEvaluator(device, cache_path=latency.get("cache_path"), lock_dir=latency["lock_dir"],
                                 outlier_rel_tol=latency["outlier_rel_tol"], interval_log=latency.get("interval_log"))
    path = Path(latency["table"]).expanduser() if latency.get("table") else default_table_path(device.name, resolution)
    return Setup(device, space, evaluator, path, int(resolved.get("seed", 0)))


def build(s: Setup, models: int, progress: bool = True, repeats: int = 5,
          export_workers: int | None = None) -> dict[str, Any]:
    from evaluators.latency import build_table

    report = build_table(s.device, s.space, s.table_path, s.evaluator, calibration_models=models, seed=s.seed,
                         progress=progress, repeats=repeats, export_workers=export_workers)
    print(report.line())
    return {"layers": report.layers, "layers_measured": report.layers_measured,
            "models_measured": report.models_measured, "seconds": report.seconds, "device_calls": report.device_calls}


def evaluate(s: Setup, n: int, seed: int = 1, export_workers: int | None = None) -> dict[str, Any]:
    """N random architectures not calibrated on, measured on the device: errors of the calibrated prediction
    and of the plain sum of layers. Their model files are exported first (on `export_workers` processes) and
    kept beside the table until the evaluation ends, so a killed one does not lower them again."""
    from evaluators.latency import LatencyPredictor, LatencyTable, error_summary
    from evaluators.latency.layers import random_arch
    from evaluators.latency.lock import shared_folder
    from evaluators.latency.predictor import Meter, exports_dir

    table = LatencyTable.load(s.table_path)
    table.check_matches(s.device.name, s.device.runtime_id(), s.space.resolution)
    predictor = LatencyPredictor(table, s.space.num_classes)
    rng, skip, archs = random.Random(f"evaluate-{seed}"), table.calibration_keys(), {}
    misses = 0  # draws in a row that found nothing new: a small space may hold fewer than n unseen ones
    while len(archs) < n and misses < 2000:
        arch = random_arch(s.space, rng)
        fresh = arch.key not in skip and arch.key not in archs
        misses = 0 if fresh else misses + 1
        if fresh:
            archs[arch.key] = arch
    if len(archs) < n:
        raise ConfigError(f"found only {len(archs)} architectures of the space that the table did not calibrate on "
                          f"(asked for {n}); evaluate fewer, or widen the search space")
    todo, passes, measured = list(archs.values()), table.repeats or 1, {}
    from rich.progress import Progress

    # another evaluation of this table may share the folder: the last to end removes it
    with shared_folder(exports_dir(table.path, job="evaluate"), s.evaluator.lock_dir) as exports:
        meter = Meter(s.device, s.evaluator.lock_dir, s.evaluator.interval_log, repeats=1, export_dir=exports,
                      export_workers=export_workers)
        meter.prepare_models(todo, s.space.num_classes, s.space.resolution, progress=sys.stderr.isatty())
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:  # passes, as the table was built
            task = bar.add_task("measuring", total=len(todo) * passes)
            for _ in range(passes):
                for start in range(0, len(todo), 4):
                    batch = todo[start:start + 4]
                    for arch, ms in zip(batch, meter.models(batch, s.space.num_classes, s.space.resolution)):
                        measured[arch.key] = min(ms, measured.get(arch.key, ms))
                    bar.advance(task, len(batch))
    rows = []
    for arch in todo:
        terms = predictor.terms(arch)
        rows.append({"arch_key": arch.key, "measured_ms": measured[arch.key], "sum_ms": terms.sum_ms,
                     "layers": terms.count, "predicted_ms": predictor.calibrated(terms)})
    calibrated = error_summary([r["predicted_ms"] / r["measured_ms"] - 1 for r in rows])
    plain = error_summary([r["sum_ms"] / r["measured_ms"] - 1 for r in rows])
    return {"n": len(rows), **calibrated, "uncalibrated": plain, "device": table.device, "runtime": table.runtime,
            "resolution": table.resolution, "table": str(table.path), "rows": rows}


def describe_errors(label: str, e: dict[str, Any]) -> str:
    return (f"{label}: median |error| {100 * e['median_abs_error']:.2f} %, within +-5 % {100 * e['within_5pct']:.1f} %, "
            f"within +-10 % {100 * e['within_10pct']:.1f} %, worst {100 * e['worst_abs_error']:.1f} %")


def show(s: Setup) -> None:
    from evaluators.latency import LatencyTable
    from evaluators.latency.layers import space_hash

    table = LatencyTable.load(s.table_path)
    print(f"table {table.path}\n  device {table.device} ({table.runtime}), {table.resolution} px, "
          f"{len(table.layers)} layers measured")
    key = space_hash(s.space)
    for h, space in table.spaces.items():
        mark = " <- this config" if h == key else ""
        print(f"  space {h}: {space['layers']} layers, {'complete' if space.get('complete') else 'INCOMPLETE'}, "
              f"built in {space.get('seconds', 0):.0f} s{mark}")
    if key not in table.spaces:
        print("  this config's space is not in the table: build it (python -m mnas_nni.latency_table build ...)")
    if table.fit:
        a, b, c = table.fit["coef"]
        kinds = "".join(f" + {1e3 * (b + v):.2f} us * {k}" for k, v in (table.fit.get("kind_coef") or {}).items())
        per_piece = f"{1e3 * b:.2f} us * layers" if not kinds else f"({1e3 * b:.2f} us per other piece){kinds}"
        w = table.fit.get("weight_coef") or 0.0
        weights = f" + {w:.4f} * million parameters" if w else ""
        print(f"  calibration on {table.fit['n']} models: ms = {a:.4f} * sum + {per_piece}{weights} + {c:.4f}")
        print("  " + describe_errors("residuals", table.fit))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    parser = argparse.ArgumentParser(prog="python -m mnas_nni.latency_table", description=__doc__.split("\n\n")[0],
                                     epilog="Any KEY=VALUE argument is a Hydra override of the search's config.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="measure every distinct layer once, then calibrate on whole models")
    p_build.add_argument("--models", type=int, default=160, help="whole models measured for the calibration")
    p_build.add_argument("--repeats", type=int, default=5,
                         help="measurements per layer and model; the lowest median is kept")
    workers_help = ("processes that export the model files before any is measured (default: every core this "
                    "process may use for ExecuTorch, 1 for ONNX Runtime; pin the measurement with device.cores)")
    p_build.add_argument("--export-workers", type=int, default=None, help=workers_help)
    p_eval = sub.add_parser("evaluate", help="measure N random architectures not used in calibration")
    p_eval.add_argument("n", type=int)
    p_eval.add_argument("--json", action="store_true", help="print one JSON object")
    p_eval.add_argument("--seed", type=int, default=1)
    p_eval.add_argument("--export-workers", type=int, default=None, help=workers_help)
    sub.add_parser("show", help="what the table holds and how well its calibration fits")
    args = parser.parse_args([a for a in argv if a not in overrides])
    try:
        s = setup(compose(overrides))
        if args.command == "build":
            build(s, args.models, progress=sys.stderr.isatty(), repeats=args.repeats,
                  export_workers=args.export_workers)
        elif args.command == "evaluate":
            started = time.perf_counter()
            result = evaluate(s, args.n, args.seed, export_workers=args.export_workers)
            if args.json:
                print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
            else:
                print(f"{result['n']} architectures not used in calibration, measured on {result['device']} "
                      f"({time.perf_counter() - started:.0f} s)")
                print("  " + describe_errors("calibrated", result))
                print("  " + describe_errors("sum of layers", result["uncalibrated"]))
        else:
            show(s)
    except MnasNniError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
