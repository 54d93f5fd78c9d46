"""bench/matched_latency.py: T is MobileNetV2-w's measured latency, answers meet it, a quick run goes end to end."""

from __future__ import annotations

import json
from pathlib import Path

from bench import matched_latency as bench
from evaluators.latency import LatencyEvaluator
from tests.test_fashion_mnist import write_fashion


def test_the_target_of_each_width_is_that_widths_measured_mobilenet_v2(tmp_path: Path) -> None:
    targets = {width: bench.target_ms(width, tmp_path, 28) for width in (0.35, 1.0)}
    for width, target in targets.items():  # what the search's evaluator reads for MobileNetV2-w is T itself
        evaluator = LatencyEvaluator(bench.search_device(), cache_path=tmp_path / "latency.sqlite",
                                     lock_dir=tmp_path / "locks")
        assert bench.latency_of(bench.mobilenet_v2(width), evaluator, 28) == target
        assert evaluator.cache_hits == 1 and evaluator.device_runs == 0
    assert targets[0.35] < targets[1.0]  # the narrow model is the faster one: each width got its own model
    assert bench.mobilenet_v2(0.35).key != bench.mobilenet_v2(1.0).key


def test_t_is_the_fastest_of_several_measurements_so_one_slow_spell_does_not_raise_it(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    from evaluators.latency import LatencyEvaluator as Evaluator

    medians = iter([0.150, 0.105, 0.106, 0.104, 0.107])  # the first one spoiled by a busy spell
    measure = Evaluator.measure

    def spoiled_once(self, model, arch_key, shape):
        result = measure(self, model, arch_key, shape)
        return type(result)(**{**result.to_dict(), "median_ms": next(medians)})

    monkeypatch.setattr(Evaluator, "measure", spoiled_once)
    assert bench.target_ms(1.0, tmp_path, 28) == 0.104


def test_a_quick_run_goes_end_to_end_its_answers_meet_t_and_a_rerun_trains_nothing(tmp_path: Path) -> None:
    data = write_fashion(tmp_path / "fashion", train=400, test=50)
    argv = ["--quick", "--out", str(tmp_path / "run"), "--override", f"data.root={data}", "--target-scale", "3"]
    results = bench.main(argv)
    width = results["widths"]["0.35"]
    state = json.loads((tmp_path / "run" / "state.json").read_text())["widths"]["0.35"]
    assert width["target_ms"] == state["target_ms"]
    answers = [found for found in state["searches"].values() if found["arch"]]
    assert answers, "at 3x MobileNetV2's latency some trial meets T"
    assert all(found["search_latency_ms"] <= width["target_ms"] for found in answers)
    for name in ("mobilenet_v2", "mnasnet_a1", *(f"searched_{r}" for r, f in state["searches"].items() if f["arch"])):
        assert len(width[name]["accuracy"]) == 2 and width[name]["latency_ms"] > 0
    written = json.loads((tmp_path / "run" / "results" / "results.json").read_text())
    assert written["widths"]["0.35"]["mobilenet_v2"] == width["mobilenet_v2"]
    assert (tmp_path / "run" / "results" / "matched_latency.png").stat().st_size > 0
    rows = next((tmp_path / "run").glob("*/rows.jsonl")).read_text()
    assert bench.main(argv)["widths"] == results["widths"]  # everything cached: same figures, nothing retrained
    # a search grown to a new answer (here MobileNetV2's own architecture) gets that answer measured afresh
    state_path = tmp_path / "run" / "state.json"
    state = json.loads(state_path.read_text())
    hard = state["widths"]["0.35"]["searches"]["hard"]
    hard["arch"] = bench.mobilenet_v2(0.35).to_dict()
    state_path.write_text(json.dumps(state))
    regrown = bench.main(argv)["widths"]["0.35"]
    assert json.loads(state_path.read_text())["widths"]["0.35"]["latency_keys"]["searched_hard"] == \
        bench.mobilenet_v2(0.35).key
    assert regrown["searched_hard"]["latency_rounds_ms"] != width["searched_hard"]["latency_rounds_ms"]
    assert next((tmp_path / "run").glob("*/rows.jsonl")).read_text() == rows


def test_a_search_that_meets_no_target_goes_on_to_extend_to_and_the_width_says_so(tmp_path, capsys):
    data = write_fashion(tmp_path / "fashion", train=400, test=50)
    argv = ["--quick", "--rewards", "hard", "--out", str(tmp_path / "run"), "--override", f"data.root={data}",
            "--target-scale", "0.01"]  # T far below anything the space holds
    width = bench.main(argv)["widths"]["0.35"]
    found = json.loads((tmp_path / "run" / "state.json").read_text())["widths"]["0.35"]["searches"]["hard"]
    assert found["arch"] is None and found["trials"] == 3  # 2 trials, then resumed on to --quick's 3
    assert "searched_hard" not in width and "searched" not in width and "mobilenet_v2" in width
    assert "searched_hard: no answer met T" in capsys.readouterr().out


def test_a_fresh_clone_reuses_the_shipped_tables_rows_of_the_same_recipe_instead_of_training(tmp_path, monkeypatch):
    import csv

    from bench.ground_truth import RESULTS, recipe

    monkeypatch.setattr(bench, "TABLE_ROWS", tmp_path / "no-build-cache")
    with (RESULTS / "fashion_mnist.csv").open(newline="") as f:
        shipped = [r for r in csv.DictReader(f) if r["family"] == "mobilenet_v2_x0.35"]
    arch = bench.mobilenet_v2(0.35)
    assert {r["arch"] for r in shipped} == {arch.key}

    def no_training():
        raise AssertionError("trained a row the shipped table holds")

    accuracies = bench.trained_accuracies(arch, recipe(), 2, tmp_path / "rows.jsonl", no_training)
    assert accuracies == [float(r["accuracy"]) for r in sorted(shipped, key=lambda r: int(r["seed"]))]
    other = recipe(["train.epochs=4"])  # another recipe's rows are not this one's
    monkeypatch.setattr(bench, "train_one", lambda *a: {"accuracy": 0.5})
    assert bench.trained_accuracies(arch, other, 1, tmp_path / "rows4.jsonl", lambda: None) == [0.5]
