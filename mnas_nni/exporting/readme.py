"""The README.md of an export folder: what it holds, whether its weights are trained, and how to train it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnas_nni.run.resume import CONFIG_FILE
from search_spaces.arch import ArchSpec


def training_command(out: Path, resolution: int, provenance: Mapping[str, Any] | None) -> str:
    """The `python -m mnas_nni.train` command that trains the exported folder, on the search's own data when the
    export came from a run directory (its Hydra `data` choice and `data.root`)."""
    import shlex

    import yaml

    data = "data=<your data> data.root=<its folder>"
    run_dir = Path((provenance or {}).get("search_run_dir", "")) if provenance else None
    if run_dir and run_dir.is_dir():
        try:
            choices = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
            data = f"data={choices['data']}"
            root = (yaml.safe_load((run_dir / CONFIG_FILE).read_text()).get("data") or {}).get("root")
            if root:
                data += " " + shlex.quote(f"data.root={root}")
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            pass
    return (f"python -m mnas_nni.train +experiment=retrain {shlex.quote(f'retrain.arch={out.resolve()}')} {data} "
            f"retrain.resolution={resolution}")


def render_export_readme(arch: ArchSpec, out: Path, num_classes: int, resolution: int, weights: Any, seed: int,
                         provenance: Mapping[str, Any] | None) -> str:
    """What the export folder holds, whether its weights are trained, and how to train it."""
    import shlex

    trained = weights is not None
    state = (f"the weights loaded from `{weights}`" if trained else
             f"**the seeded initialisation (seed {seed}), not trained weights**: train the model first (below)")
    command = training_command(out, resolution, provenance)
    source = next(iter((provenance or {}).values()), None)
    return "\n".join([
        f"# {arch.name or 'exported model'}, exported by mnas-nni",
        "",
        f"{len(arch.blocks)} blocks, {num_classes} classes, {resolution} px input"
        + (f"; from the search `{source}`" if source else "") + ".",
        "",
        "| file | what it is |",
        "|---|---|",
        "| `model.py` | the network in plain PyTorch (needs only torch): `build_model(num_classes)` |",
        "| `arch.json` | the architecture as block strings |",
        f"| `state_dict.pt` | {state} |",
        f"| `model.onnx` | the same network and weights as ONNX (batch 1, opset 17, {resolution} px) |",
        *([(f"| `model.pte` | the same network and weights as an ExecuTorch program lowered to XNNPACK (batch 1, "
             f"{resolution} px) |")] if (out / "model.pte").is_file() else []),
        "| `retrain.yaml` | the full-training recipe (the paper's), filled in for this model |",
        *(["| `source.json` | the search it came from (the trainer nests its MLflow run under it) |"] if provenance
          else []),
        "",
        "## Train it",
        "",
        f"    {command}",
        "",
        "(on a CPU, add `retrain.scale=0.015625 retrain.epochs=40` as the README's demo does). Then export the",
        "trained weights:",
        "",
        (f"    python -m mnas_nni.export {shlex.quote(str(out.resolve()))} --weights <the training's run dir>/"
         "state_dict.pt --out <folder>"),
        "",
    ])
