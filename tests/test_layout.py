"""The package's layout: grouped by role, and every path of before the grouping still reaches its module."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnas_nni.moved_modules import MOVED_MODULES, moved_target

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mnas_nni"
MAX_MODULE_LINES = 400  # issue 35: no module over about 400 lines


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_imports_the_module_at_its_new_place(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])
    assert module.__name__ == module.__spec__.name == MOVED_MODULES[old]  # it keeps its own name and spec


def test_old_import_lines_work_in_a_fresh_process():
    # what code written against the flat package (bench/ among it) imports
    code = ("from mnas_nni.records import load_records, TrialRecord; from mnas_nni.search_run import run_search; "
            "from mnas_nni.observers import SearchObserver; import mnas_nni.run.records as new; "
            "assert TrialRecord is new.TrialRecord and load_records is new.load_records; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_a_pickle_naming_an_old_module_loads():
    from mnas_nni.run.records import TrialRecord

    record = TrialRecord(trial=3, status="SUCCEEDED", reward=0.5)
    old = pickle.dumps(record, protocol=0).replace(b"mnas_nni.run.records", b"mnas_nni.records")
    assert b"mnas_nni.records\n" in old
    assert pickle.loads(old) == record


def test_moved_targets_name_the_new_place_and_others_stay():
    assert moved_target("mnas_nni.observers.SearchObserver") == "mnas_nni.run.observers.SearchObserver"
    assert moved_target("mnas_nni.records") == "mnas_nni.run.records"
    assert moved_target("mnas_nni.recordsx.Y") == "mnas_nni.recordsx.Y"  # a prefix of a name is no match
    for kept in ("mnas_nni.tracking.MlflowTracker", "mnas_nni.plugins.SearchObserver", "strategies.ppo_rnn.PpoRnn"):
        assert moved_target(kept) == kept


def test_the_documented_public_names_import_from_their_stable_places():
    import mnas_nni
    from mnas_nni import api, plugins
    from mnas_nni.run.observers import SearchInfo, SearchObserver
    from mnas_nni.run.records import TrialRecord
    from mnas_nni.run.stopping import SearchAborted, SearchStopped

    assert (plugins.SearchObserver, plugins.SearchInfo, plugins.TrialRecord) == (SearchObserver, SearchInfo,
                                                                                 TrialRecord)
    assert mnas_nni.SearchStopped is api.SearchStopped is SearchStopped
    assert mnas_nni.SearchAborted is api.SearchAborted is SearchAborted


def test_the_tracking_package_keeps_the_names_of_the_module_it_replaced():
    from mnas_nni import tracking
    from mnas_nni.tracking.tracker import MlflowTracker

    assert tracking.MlflowTracker is MlflowTracker
    for name in ("MASK", "SECRET_WORDS", "EXPERIMENT_KIND", "is_secret", "mask_secrets", "redact_uri", "ui_link",
                 "check_reachable", "flatten_params", "resolve_tracking_uri", "search_parent_run"):
        assert getattr(tracking, name) is not None, name
    assert set(tracking.__all__) <= set(dir(tracking))

def test_every_target_in_conf_names_what_imports():
    from hydra.utils import get_object

    targets = {yaml.safe_load(path.read_text()).get("_target_") for path in (ROOT / "conf").glob("*/*.yaml")}
    ours = sorted(t for t in targets if t and t.startswith("mnas_nni."))
    assert "mnas_nni.tracking.MlflowTracker" in ours and "mnas_nni.plugins.SearchObserver" in ours
    for target in ours:
        assert moved_target(target) == target, f"conf/ names {target}, a path of before the grouping"
        get_object(target)


def test_a_module_moved_into_a_subpackage_still_finds_the_configs():
    from mnas_nni.exporting.retrain_recipe import conf_dir, retrain_recipe

    assert conf_dir() == ROOT / "conf" and retrain_recipe()["scale"] is not None


def test_every_subpackage_is_listed_for_the_wheel():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"


def test_no_module_is_over_about_400_lines():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert not {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
