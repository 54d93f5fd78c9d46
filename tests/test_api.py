"""The Python API: `mnas_nni.search(...)` runs what the CLI runs and returns the run's records, twice in a process."""

from __future__ import annotations

import json

import pytest

import mnas_nni
from mnas_core.errors import ArchitectureError, ConfigError
from mnas_nni.api import SearchResult
from tests.cli import FAST

TABLE_SEARCH = ["search_space=nb201", "evaluator=table", "reward=abs", "reward.target_ms=5.338"]


def overrides(tmp_path, name: str, *extra: str) -> list[str]:
    return [*TABLE_SEARCH, f"hydra.run.dir={tmp_path / name}", f"latency.cache_path={tmp_path / 'latency.sqlite'}",
            f"latency.lock_dir={tmp_path / 'locks'}", *extra]


@pytest.mark.slow
def test_two_searches_in_one_process_return_what_their_trial_logs_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = mnas_nni.search(overrides(tmp_path, "a", "strategy=random", "search.max_trials=3", "tracking=none"))
    second = mnas_nni.search(overrides(tmp_path, "b", "strategy=evolution", "search.max_trials=4",
                                       f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"))
    for result, trials in ((first, 3), (second, 4)):
        assert isinstance(result, SearchResult) and (result.run_dir / ".hydra" / "config.yaml").is_file()
        logged = [json.loads(line) for line in (result.run_dir / "trials.jsonl").read_text().splitlines()]
        frame = result.records
        assert len(frame) == len(logged) == len(result.trials) == trials
        assert list(frame["trial"]) == [t["trial"] for t in logged]
        assert list(frame["reward"]) == pytest.approx([t["reward"] for t in logged])
        assert result.best.reward == max(t["reward"] for t in logged)
        meets = [t for t in logged if t["latency_ms"] <= 5.338]
        assert (result.answer is None) == (not meets)
        if meets:
            assert result.answer.accuracy == max(t["accuracy"] for t in meets)
    assert first.run_dir.name == "a" and second.run_dir.name == "b"
    assert first.config["strategy"]["_target_"].endswith("Random")
    assert first.mlflow_run_id is None and second.mlflow_run_id  # tracking=none; the sqlite store's parent run

    with pytest.raises(ArchitectureError, match="NAS-Bench-201 cell"):  # export builds the mnas space's networks
        second.export(tmp_path / "exported")


@pytest.mark.slow
def test_a_searched_mnas_model_exports_from_the_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = mnas_nni.search([*FAST, "search.max_trials=1", "strategy=random", f"hydra.run.dir={tmp_path / 'm'}",
                              f"latency.cache_path={tmp_path / 'latency.sqlite'}", f"latency.lock_dir={tmp_path / 'l'}"])
    files = result.export(tmp_path / "exported")
    assert files["model.onnx"].is_file()
    assert json.loads(files["arch.json"].read_text())["blocks"] == result.best.arch["blocks"]


@pytest.mark.slow
def test_a_resume_through_the_api_returns_the_resumed_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = mnas_nni.search(overrides(tmp_path, "r", "strategy=random", "search.max_trials=2", "tracking=none"))
    again = mnas_nni.search([f"search.resume={first.run_dir}", "search.max_trials=3",
                             f"hydra.run.dir={tmp_path / 'resume-job'}"])
    assert again.run_dir == first.run_dir.resolve() and len(again.trials) == 3
    assert [t.trial for t in again.trials] == [1, 2, 3]


def test_bad_input_is_raised_as_one_line_not_printed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="search.max_trials must be a positive integer"):
        mnas_nni.search(overrides(tmp_path, "bad", "search.max_trials=0", "tracking=none"))


@pytest.mark.slow
def test_train_and_the_latency_table_are_calls_too(tmp_path, monkeypatch):
    from mnas_nni.api import latency_table, train
    from tests.retrain_run import TINY

    monkeypatch.chdir(tmp_path)
    results = train([*TINY, f"hydra.run.dir={tmp_path / 'train'}"])
    assert results["epochs"] == 1 and 0.0 <= results["final"]["val_top1"] <= 1.0
    assert json.loads((tmp_path / "train" / "results.json").read_text())["final"] == results["final"]

    tiny_space = ["search_space.base_blocks=[r1_k3_s11_e1_i32_o16,r2_k3_s22_e6_i16_o24]", "search_space.kernels=[3,5]",
                  "search_space.conv_ops=[dsconv]", "search_space.se_ratios=[0.0]", "search_space.skip_ops=[identity]",
                  "search_space.filter_multipliers=[1.0]", "search_space.layer_deltas=[0,1]", "data.resolution=16",
                  "device.runs=3", "device.warmup=1", f"latency.table={tmp_path / 'table.json'}",
                  f"latency.cache_path={tmp_path / 'latency.sqlite'}", f"latency.lock_dir={tmp_path / 'locks'}"]
    built = latency_table("build", tiny_space, models=2, repeats=1)
    assert built["layers"] > 0 and (tmp_path / "table.json").is_file()
    assert latency_table("evaluate", tiny_space, n=1)["n"] == 1
    with pytest.raises(ConfigError, match="found only"):  # the space is too small for 500 unseen ones
        latency_table("evaluate", tiny_space, n=500)
