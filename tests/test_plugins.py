"""A user's plugins from their own package: picked by a config word through Hydra's search path or, once
pip-installed, through the `mnas_nni.plugins` entry point group; a plugin lacking its interface is one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnas_core.errors import ConfigError
from mnas_nni.plugins import check_plugin
from tests.cli import read_trials, run_cli

PACKAGE = "mnas_plugin_example"
# nb201 looked up in the shipped tables: a trial takes milliseconds, so the test is about the plugins
TABLE_SEARCH = ("search_space=nb201", "evaluator=table", "search.max_trials=2")

STRATEGY = '''
from nni.nas.strategy import Random


class NamedRandom(Random):
    """NNI's Random, under the user's own name: a strategy plugin is an NNI strategy."""
'''
REWARD = '''
from dataclasses import dataclass

from evaluators.reward import Reward


@dataclass(frozen=True)
class LinearReward(Reward):
    target_ms: float
    weight: float = 0.01

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        return accuracy - self.weight * latency_ms / self.target_ms
'''
BROKEN = '''
class NoRun:
    """Lacks what a strategy must have."""
'''


def write_plugin_package(root: Path) -> Path:
    """A package as a user would write it: code, its own config group files, an entry point."""
    package = root / PACKAGE
    (package / "conf" / "strategy").mkdir(parents=True)
    (package / "conf" / "reward").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "conf" / "__init__.py").write_text("")  # pkg:// reads the folder as a package
    (package / "strategies.py").write_text(STRATEGY + BROKEN)
    (package / "rewards.py").write_text(REWARD)
    (package / "conf" / "strategy" / "named_random.yaml").write_text(
        f"_target_: {PACKAGE}.strategies.NamedRandom\nseed: 0\n")
    (package / "conf" / "strategy" / "broken.yaml").write_text(f"_target_: {PACKAGE}.strategies.NoRun\n")
    (package / "conf" / "reward" / "linear.yaml").write_text(
        f"_target_: {PACKAGE}.rewards.LinearReward\ntarget_ms: 5.0\nweight: 0.01\n")
    (root / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{PACKAGE.replace("_", "-")}"
        version = "0.0.1"

        [project.entry-points."mnas_nni.plugins"]
        {PACKAGE} = "{PACKAGE}.conf"

        [tool.setuptools]
        packages = ["{PACKAGE}", "{PACKAGE}.conf"]

        [tool.setuptools.package-data]
        "*" = ["*/*.yaml"]
        '''))
    return root


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, capture_output=True, timeout=300)


def check_two_trials_with_both_plugins(tmp_path: Path, *extra: str, env: dict | None = None) -> None:
    result = run_cli(tmp_path, *TABLE_SEARCH, "strategy=named_random", "reward=linear", *extra, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 2 and all(t["status"] == "succeeded" for t in trials)
    for t in trials:  # the user's reward scored them, with its own settings
        assert t["reward"] == pytest.approx(t["accuracy"] - 0.01 * t["latency_ms"] / 5.0)
    assert f"{PACKAGE}.strategies.NamedRandom" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
def test_a_plugin_package_on_the_search_path_is_picked_by_config_word(tmp_path):
    source = write_plugin_package(tmp_path / "src")
    check_two_trials_with_both_plugins(tmp_path, f"hydra.searchpath=[file://{source / PACKAGE / 'conf'}]",
                                       env={"PYTHONPATH": str(source)})  # importable, not installed


@pytest.mark.slow
def test_a_pip_installed_plugin_is_found_through_its_entry_point_and_a_broken_one_is_one_line(tmp_path):
    source = write_plugin_package(tmp_path / "src")
    pip("install", "--no-deps", "--no-build-isolation", str(source))
    try:
        check_two_trials_with_both_plugins(tmp_path)  # no hydra.searchpath: the entry point names the conf
        (tmp_path / "broken").mkdir()
        broken = run_cli(tmp_path / "broken", *TABLE_SEARCH, "strategy=broken")
        assert broken.returncode == 2
        lines = broken.stderr.strip().splitlines()
        assert len(lines) == 1, broken.stderr
        assert "strategy" in lines[0] and "NoRun" in lines[0] and "docs/plugins.md" in lines[0]
    finally:
        pip("uninstall", "-y", PACKAGE.replace("_", "-"))


def test_a_part_lacking_its_interface_is_one_line_naming_what_is_missing():
    from evaluators.reward import MnasReward

    assert check_plugin("reward", MnasReward(1.0), "x") is not None
    cases = [
        ("reward", lambda accuracy, latency_ms: accuracy, "is a function"),
        ("reward", object(), "lacks __call__(), target_ms"),
        ("device", type("Half", (), {"name": "d", "describe": lambda self: {}})(), "lacks measure()"),
        ("strategy", object(), "not an nni.nas.strategy.base.Strategy"),
        ("reward", type("NoTarget", (), {"target_ms": None, "__call__": lambda self, a, b: a})(),
         "its target_ms is None, not a positive number"),
    ]
    for kind, part, expected in cases:
        with pytest.raises(ConfigError) as caught:
            check_plugin(kind, part, "my_pkg.Thing")
        message = str(caught.value)
        assert expected in message and "my_pkg.Thing" in message and "\n" not in message
