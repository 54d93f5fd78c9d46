"""Export a searched architecture as a standalone model: `python -m mnas_nni.export SOURCE --out DIR`.

SOURCE is an architecture JSON file, a preset name, a `trials.jsonl` (or the run directory holding it; add
`--trial N`, or `--answer` for the most accurate trial meeting the search's latency target, else the best trial
by reward), or an MLflow run (`runs:/<id>`, a trial's run id, or a search's
parent run id: its best trial by reward). DIR receives:

    model.py        the network in plain PyTorch (needs only torch), same state_dict keys as search_spaces
    arch.json       the architecture (block strings)
    state_dict.pt   the weights: --weights if given, else the seeded initialisation
    model.onnx      batch 1, opset 17
    model.pte       the ExecuTorch program lowered to XNNPACK, when the search measured under device.runtime=executorch
                    (or --runtime executorch)
    retrain.yaml    the full-training recipe (conf/experiment/retrain.yaml) filled in for this model
    source.json     the search it came from (run directory or MLflow run), when SOURCE is one; the trainer
                    (`python -m mnas_nni.train retrain.arch=DIR`) nests its MLflow run under that search's
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluators.latency.export import export_onnx, export_pte
from mnas_core.errors import ConfigError, MnasNniError
from mnas_nni.exporting.arch_source import resolve_source, search_provenance
from mnas_nni.exporting.model_code import import_model_file, render_model_code
from mnas_nni.exporting.readme import render_export_readme, training_command
from mnas_nni.exporting.retrain_recipe import render_retrain_yaml, scaled_recipe
from search_spaces.arch import ArchSpec

# The export is split by job, in mnas_nni/exporting/: finding the architecture (arch_source), the generated model.py
# (model_code), the retrain.yaml recipe (retrain_recipe) and the folder's README (readme); this module writes the
# folder and is the CLI. The names callers import from mnas_nni.export stay importable here.
__all__ = ["export", "export_source", "import_model_file", "load_weights", "main", "render_export_readme",
           "render_model_code", "render_retrain_yaml", "resolve_source", "scaled_recipe", "search_provenance",
           "training_command"]


# ---------------------------------------------------------------- weights, the export folder

def load_weights(path: str | Path, expected: set[str]) -> dict[str, Any]:
    """A state_dict file (or a Lightning checkpoint holding one, keys prefixed e.g. 'model.')."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ConfigError(f"weights file {path} cannot be read as a PyTorch state_dict ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {path} does not hold a state_dict")
    if set(state) != expected:
        for prefix in sorted({k.split(".", 1)[0] + "." for k in state if "." in k}):
            stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if set(stripped) == expected:
                return stripped
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ConfigError(f"weights file {path} does not fit this architecture: {len(missing)} missing keys "
                          f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    return state


def export(arch: ArchSpec, out_dir: str | Path, num_classes: int = 1000, resolution: int = 224,
           weights: str | Path | None = None, seed: int = 0,
           provenance: Mapping[str, Any] | None = None, runtime: str = "onnxruntime") -> dict[str, Path]:
    """Write model.py, arch.json, state_dict.pt, model.onnx and retrain.yaml (and source.json) into `out_dir`;
    model.pte too for `runtime="executorch"`, the file that runtime ships."""
    import torch

    if num_classes < 1 or resolution < 8:
        raise ConfigError(f"need num_classes >= 1 and resolution >= 8, got {num_classes} and {resolution}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {out}: {err.strerror}") from None
    paths = {name: out / name for name in ("model.py", "arch.json", "state_dict.pt", "model.onnx", "retrain.yaml")}
    paths["model.py"].write_text(render_model_code(arch, num_classes, resolution, trained=weights is not None),
                                 encoding="utf-8")
    arch.save(paths["arch.json"])
    torch.manual_seed(seed)
    model = import_model_file(paths["model.py"]).build_model(num_classes)
    if weights is not None:
        model.load_state_dict(load_weights(weights, set(model.state_dict())))
    torch.save(model.state_dict(), paths["state_dict.pt"])
    export_onnx(model, (1, 3, resolution, resolution), paths["model.onnx"])
    if runtime == "executorch":
        paths["model.pte"] = export_pte(model, (1, 3, resolution, resolution), out / "model.pte")
    paths["retrain.yaml"].write_text(
        render_retrain_yaml(paths["arch.json"], arch.name or "the exported model", num_classes, resolution),
        encoding="utf-8")
    if provenance:
        paths["source.json"] = out / "source.json"
        paths["source.json"].write_text(json.dumps(dict(provenance), indent=2), encoding="utf-8")
    paths["README.md"] = out / "README.md"
    paths["README.md"].write_text(render_export_readme(arch, out, num_classes, resolution, weights, seed, provenance),
                                  encoding="utf-8")
    return paths


# ---------------------------------------------------------------- CLI

def export_source(source: str, out: str | Path, *, trial: int | None = None, answer: bool = False,
                  num_classes: int | None = None, resolution: int | None = None, tracking_uri: str | None = None,
                  weights: str | Path | None = None, seed: int = 0, runtime: str | None = None
                  ) -> tuple[ArchSpec, int, int, dict[str, Path]]:
    """`python -m mnas_nni.export SOURCE --out OUT ...` as a call: the architecture, its classes, input size and
    runtime (the search's unless given), and the files written."""
    arch, hints = resolve_source(source, trial, tracking_uri, answer=answer)
    num_classes = num_classes or hints.get("num_classes", 1000)
    resolution = resolution or hints.get("resolution", 224)
    paths = export(arch, out, num_classes, resolution, weights, seed, provenance=search_provenance(source),
                   runtime=runtime or hints.get("runtime", "onnxruntime"))
    return arch, num_classes, resolution, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnas_nni.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="arch JSON, preset, trials.jsonl / run dir, or MLflow run id / runs:/<id>")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--trial", type=int, default=None, help="trial number in a trials.jsonl (default: best)")
    parser.add_argument("--answer", action="store_true",
                        help="the most accurate trial meeting the search's latency target T, not the best by reward")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the search's, else 1000")
    parser.add_argument("--resolution", type=int, default=None, help="input px; default: the search's, else 224")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: as the tracker's)")
    parser.add_argument("--weights", default=None, help="a state_dict (.pt) or Lightning checkpoint to load")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights when --weights is absent")
    parser.add_argument("--runtime", choices=("onnxruntime", "executorch"), default=None,
                        help="executorch adds model.pte; default: the runtime the search measured under")
    args = parser.parse_args(argv)
    try:
        arch, num_classes, resolution, paths = export_source(
            args.source, args.out, trial=args.trial, answer=args.answer, num_classes=args.num_classes,
            resolution=args.resolution, tracking_uri=args.tracking_uri, weights=args.weights, seed=args.seed,
            runtime=args.runtime)
    except MnasNniError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"arch": arch.name, "num_classes": num_classes, "resolution": resolution,
                      "files": {name: str(path) for name, path in paths.items()}}, indent=2))
    if args.weights is None:
        print(f"note: the weights are an initialisation, not trained; train the model with: "
              f"{training_command(Path(args.out), resolution, search_provenance(args.source))} "
              f"(see {Path(args.out) / 'README.md'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
