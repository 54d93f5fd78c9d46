"""Few-shot supernets (Zhao et al. 2021): one sub-supernet per value of one decision of the space.

`supernet.split=block1/conv_op` trains the one-shot supernet as usual, then one copy of it per value of that
decision, each fine-tuned `supernet.split_epochs` epochs on the paths that take its value (no warm-up: it starts
from a trained supernet). A trial is scored by the sub-supernet that owns its value, so architectures that differ
in that decision no longer share weights downstream of it. Each sub-supernet lives in
`<supernet.dir>/split/e<split_epochs>/<decision>=<value>/`, resumes like the one-shot training, and records its pinned decision,
so a folder of another split is refused in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from evaluators.supernet_train import check_epochs
from mnas_core.errors import ConfigError
from search_spaces.arch import ArchSpec
from search_spaces.space import DECISIONS, SpaceConfig
from search_spaces.supernet import Supernet


def check_split(split: Any, epochs: Any, config: SpaceConfig | None = None) -> None:
    """`supernet.split` (null or `blockN/<decision>`) and `supernet.split_epochs`, refused in one line each."""
    if split is None:
        return
    match = re.fullmatch(r"block(\d+)/(\w+)", str(split))
    if not match or match.group(2) not in DECISIONS:
        raise ConfigError(f"supernet.split must be null or blockN/<decision> with a decision among "
                          f"{', '.join(DECISIONS)} (e.g. block1/conv_op); got {split!r}")
    if config is not None and not 1 <= int(match.group(1)) <= len(config.skeleton):
        raise ConfigError(f"supernet.split={split}: the space has blocks 1 to {len(config.skeleton)}")
    check_epochs(epochs, "supernet.split_epochs")


def split_values(config: SpaceConfig, split: str) -> list[Any]:
    """The values of the decision `split` (`blockN/name`) in `config`'s space."""
    check_split(split, 1, config)
    block, decision = split.split("/")
    return list(config.choices(int(block.removeprefix("block")) - 1)[decision])


class SplitSupernet:
    """Sub-supernets by value of one decision; `extract(arch)` is the owning sub-supernet's, so scoring code that
    takes a `Supernet` takes this too."""

    def __init__(self, split: str, parts: dict[Any, Supernet], base: Supernet) -> None:
        self.split, self.parts, self.base = split, parts, base

    @property
    def training_info(self) -> dict[str, Any]:
        return self.base.training_info

    def owner(self, arch: ArchSpec) -> Supernet:
        value = self.base.decisions_of(arch)[self.split]
        if value not in self.parts:
            raise ConfigError(f"{self.split} = {value!r} has no sub-supernet (they cover {sorted(self.parts)})")
        return self.parts[value]

    def extract(self, arch: ArchSpec) -> Any:
        return self.owner(arch).extract(arch)

    def eval(self) -> SplitSupernet:
        for part in (self.base, *self.parts.values()):
            part.eval()
        return self


def train_split(config: SpaceConfig, datamodule: Any, directory: str | Path, base: Supernet, split: str, *,
                split_epochs: int, **train_args: Any) -> SplitSupernet:
    """One sub-supernet per value of `split`, each `base` fine-tuned on its own paths (`train_supernet`'s
    arguments otherwise, warm-up off), kept under `<directory>/split/`."""
    from evaluators.supernet_train import train_supernet

    check_split(split, split_epochs, config)
    parts = {}
    for value in split_values(config, split):
        folder = Path(directory) / "split" / f"e{split_epochs}" / f"{split.replace('/', '.')}={value}"
        parts[value] = train_supernet(config, datamodule, folder, **{**train_args, "epochs": split_epochs,
                                                                     "warmup": 0.0, "fixed": {split: value},
                                                                     "init": base})
    return SplitSupernet(split, parts, base)
