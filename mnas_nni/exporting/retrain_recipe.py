"""The full-training recipe an export ships as retrain.yaml: conf/experiment/retrain.yaml's `retrain`, filled in.

`scaled_recipe` applies the recipe's `scale` (batch size and peak learning rate multiplied together), for the
trainer (`python -m mnas_nni.train +experiment=retrain`) as for anyone loading the exported file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnas_core.errors import ConfigError


def conf_dir() -> Path:
    """The project's Hydra config folder: ./conf in a checkout, mnas_nni/conf when installed."""
    package = Path(__file__).resolve().parents[1]  # mnas_nni/
    return next((d for d in (package.parent / "conf", package / "conf") if d.is_dir()), package.parent / "conf")


def retrain_recipe() -> dict[str, Any]:
    from omegaconf import OmegaConf

    experiment = OmegaConf.load(conf_dir() / "experiment" / "retrain.yaml")
    return OmegaConf.to_container(experiment.retrain, resolve=False)  # type: ignore[return-value]


def scaled_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe with `scale` applied: batch size and peak learning rate multiplied together."""
    scale = float(recipe.get("scale", 1.0))
    if scale <= 0:
        raise ConfigError(f"retrain.scale must be > 0, got {scale}")
    out = dict(recipe)
    out["batch_size"] = max(1, round(int(recipe["batch_size"]) * scale))
    out["lr"] = float(recipe["lr"]) * scale
    return out


def render_retrain_yaml(arch_path: Path, name: str, num_classes: int, resolution: int) -> str:
    from omegaconf import OmegaConf

    recipe = retrain_recipe()
    recipe.update(arch=str(arch_path.resolve()), num_classes=num_classes, resolution=resolution)
    header = (
        f"# Full training of {name} with the MnasNet recipe, copied from conf/experiment/retrain.yaml at export\n"
        "# (paper section 5; epochs 350, rmsprop_epsilon, label_smoothing and ema_decay are the official code's\n"
        "# defaults, not the paper's). batch_size and lr hold at scale 1; a trainer multiplies both by `scale`\n"
        "# (mnas_nni.export.scaled_recipe). Load it with OmegaConf, or as a Hydra config:\n"
        "#   --config-dir <this folder> --config-name retrain retrain.scale=0.0625\n"
    )
    return header + OmegaConf.to_yaml({"retrain": recipe})
