"""Plugins: the interface each config group's part implements, checked as the search builds it.

Every pluggable part is a Hydra config group (`strategy=`, `reward=`, ...) whose file names a `_target_`.
Ours and a user's are found and built the same way: a user's package ships its own group files
(`my_pkg/conf/strategy/my_strategy.yaml`) and is found through Hydra's search path
(`hydra.searchpath=[pkg://my_pkg.conf]` or `[file:///path/conf]`), or, once pip-installed, through the
`mnas_nni.plugins` entry point group (`my_pkg = "my_pkg.conf"`; see hydra_plugins/mnas_nni_searchpath).

`build(kind, node)` instantiates the part and checks it against `INTERFACES[kind]`: a part that lacks what the
engine calls fails at start-up with one line naming what is missing, not with a traceback mid-search.
docs/plugins.md documents each interface. The tracker's base class, `SearchObserver`, and what its hooks
receive (`SearchInfo`, `TrialRecord`) are imported from here: their modules may move, this name stays.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnas_core.errors import ConfigError
from mnas_core.instantiate import instantiate
from mnas_nni.run.observers import SearchInfo, SearchObserver  # noqa: F401 - the tracker interface, public here
from mnas_nni.run.records import TrialRecord  # noqa: F401 - what a tracker's hooks receive

ENTRY_POINT_GROUP = "mnas_nni.plugins"
DOCS = "docs/plugins.md"


@dataclass(frozen=True)
class Interface:
    """What a part of one kind must offer: methods (callables) and attributes, and how to get them."""

    methods: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    how: str = ""  # the base class to subclass, shown with the missing names
    extra_check: Callable[[Any], str | None] | None = None  # a further problem, as the end of the line


def _strategy_runs(strategy: Any) -> str | None:
    from nni.nas.strategy.base import Strategy

    if not isinstance(strategy, Strategy):
        return "it is not an nni.nas.strategy.base.Strategy"
    if type(strategy)._run is Strategy._run and type(strategy).run is Strategy.run:
        return "it lacks _run() (the loop that submits models to the engine)"
    return None


def _reward_target(reward: Any) -> str | None:
    target = getattr(reward, "target_ms", None)
    if not (isinstance(target, (int, float)) and target > 0):  # the console, the tracker and the answer read T
        return f"its target_ms is {target!r}, not a positive number of milliseconds"
    return None


INTERFACES: dict[str, Interface] = {
    "search_space": Interface(("freeze", "simplify"), how="an nni.nas.nn.pytorch.ModelSpace whose models carry .arch"),
    "strategy": Interface(how="a subclass of nni.nas.strategy.base.Strategy implementing _run()",
                          extra_check=_strategy_runs),
    "evaluator": Interface(("evaluate",), ("kind",), how="a subclass of evaluators.base.TrialEvaluator"),
    "reward": Interface(("__call__",), ("target_ms",), how="a subclass of evaluators.reward.Reward",
                        extra_check=_reward_target),
    "device": Interface(("describe", "measure", "measure_many", "runtime_id"), ("name", "lock_name"),
                        how="a subclass of evaluators.latency.LatencyDevice"),
    "data": Interface(("train_dataloader", "val_dataloader"), ("num_classes", "resolution", "batch_size"),
                      how="a LightningDataModule like evaluators.data.DigitsDataModule"),
    "tracking": Interface(("on_search_start", "on_trial_end", "on_search_end", "close"),
                          how="a subclass of mnas_nni.plugins.SearchObserver"),
}


def missing_members(part: Any, interface: Interface) -> list[str]:
    missing = [f"{name}()" for name in interface.methods if not callable(getattr(part, name, None))]
    missing += [name for name in interface.attributes if not hasattr(part, name)]
    return missing


def check_plugin(kind: str, part: Any, target: str) -> Any:
    """`part` if it implements the `kind` interface, else a one-line ConfigError naming what is missing."""
    interface = INTERFACES[kind]
    if inspect.isfunction(part) or inspect.isclass(part):
        what = "a function" if inspect.isfunction(part) else "a class, not an instance"
        raise ConfigError(f"{kind} {target} is {what}; a {kind} plugin is an object: {interface.how} (see {DOCS})")
    problem = ", ".join(missing_members(part, interface))
    problem = f"it lacks {problem}" if problem else (interface.extra_check(part) if interface.extra_check else None)
    if problem:
        raise ConfigError(f"{kind} {target} does not implement the {kind} interface: {problem}; "
                          f"make it {interface.how} (see {DOCS})")
    return part


def build(kind: str, node: Any, **kwargs: Any) -> Any:
    """Instantiate a config group's part (`_target_`) and check it implements its kind's interface."""
    target = node.get("_target_", "?") if hasattr(node, "get") else "?"
    return check_plugin(kind, instantiate(node, kind, **kwargs), str(target))


def entry_point_config_modules() -> list[str]:
    """The config packages pip-installed plugins declare (`[project.entry-points."mnas_nni.plugins"]`)."""
    found: list[str] = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = entry.value.split(":", 1)[0].strip()
        if module and module not in found:
            found.append(module)
    return found


def register_search_path() -> None:
    """Hydra finds hydra_plugins/mnas_nni_searchpath by scanning its `hydra_plugins` namespace package, which
    misses it under an editable install (setuptools' editable finder cannot be listed by pkgutil): our entry
    points register it themselves. Registering twice is harmless (Hydra keys plugins by class name)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.mnas_nni_searchpath import MnasNniPluginSearchPath

    Plugins.instance().register(MnasNniPluginSearchPath)
