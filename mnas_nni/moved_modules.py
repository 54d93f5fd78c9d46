"""Old module paths of the flat `mnas_nni/` and where each module lives now, so what names an old path keeps working.

A run directory's saved config (`config.resolved.yaml`) names its tracker by an old `_target_`: a resume reads it
through `moved_targets`. Code and pickles that import an old path (`from mnas_nni.records import load_records`)
get the module from its new place: `install` (run by `import mnas_nni`) adds an import hook that answers the old
name with the one module object, so classes stay identical under both names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

MOVED_MODULES: dict[str, str] = {
    # the search's run and life cycle
    "mnas_nni.search_run": "mnas_nni.run.search",
    "mnas_nni.context": "mnas_nni.run.context",
    "mnas_nni.confirm": "mnas_nni.run.confirm",
    "mnas_nni.preflight": "mnas_nni.run.preflight",
    "mnas_nni.resume": "mnas_nni.run.resume",
    "mnas_nni.stopping": "mnas_nni.run.stopping",
    "mnas_nni.run_lock": "mnas_nni.run.lock",
    "mnas_nni.disk_space": "mnas_nni.run.disk_space",
    "mnas_nni.recorder": "mnas_nni.run.recorder",
    "mnas_nni.records": "mnas_nni.run.records",
    "mnas_nni.observers": "mnas_nni.run.observers",
    "mnas_nni.hydra_files": "mnas_nni.run.hydra_files",
    # tracking and reports (mnas_nni.tracking itself became the package: its names stay importable there)
    "mnas_nni.tracking_support": "mnas_nni.tracking.support",
    "mnas_nni.reports": "mnas_nni.tracking.reports",
    "mnas_nni.console": "mnas_nni.tracking.console",
    # the export's parts (mnas_nni.export, the command, stays)
    "mnas_nni.arch_source": "mnas_nni.exporting.arch_source",
    "mnas_nni.model_code": "mnas_nni.exporting.model_code",
    "mnas_nni.export_readme": "mnas_nni.exporting.readme",
    "mnas_nni.retrain_recipe": "mnas_nni.exporting.retrain_recipe",
}


def moved_target(path: str) -> str:
    """A dotted path (`mnas_nni.observers.SearchObserver`) with a moved module's part named by its new place."""
    for old, new in MOVED_MODULES.items():
        if path == old or path.startswith(f"{old}."):
            return new + path[len(old):]
    return path


def moved_targets(config: Any) -> Any:
    """`config` (nested dicts and lists) with every `_target_` naming a moved module rewritten by `moved_target`."""
    if isinstance(config, dict):
        return {key: moved_target(value) if key == "_target_" and isinstance(value, str) else moved_targets(value)
                for key, value in config.items()}
    if isinstance(config, list):
        return [moved_targets(value) for value in config]
    return config


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module at its new path (the same object, executed once)."""

    def __init__(self) -> None:
        self._own_specs: dict[str, ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        return ModuleSpec(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED_MODULES[spec.name])
        self._own_specs[module.__name__] = module.__spec__  # the import system sets the old name's spec on it next
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_specs.pop(module.__name__)  # it keeps its own spec; it is already executed


def install() -> None:
    """Add the hook for old module paths (once per process)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
