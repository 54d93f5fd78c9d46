"""The layer-wise latency table: built on the real local device for a tiny space, resumed after the device is
lost half way, refused when foreign or damaged, and used by the three latency modes (API and CLI)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from evaluators.latency import (
    LatencyEvaluator,
    LatencyPredictor,
    LatencyTable,
    LocalDevice,
    PredictedLatency,
    build_table,
    latency_for_mode,
    space_signatures,
)
from evaluators.latency.layers import arch_signatures, random_arch
from evaluators.latency.lock import shared_folder, table_build_lock
from evaluators.latency.predictor import exports_dir
from mnas_core.errors import ConfigError, DeviceError
from search_spaces import SpaceConfig
from search_spaces.builder import build_model
from tests.cli import read_trials, run_cli

TINY = {"base_blocks": ["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24"], "conv_ops": ["dsconv", "mbconv3"],
        "kernels": [3], "se_ratios": [0.0], "skip_ops": ["identity", "none"], "filter_multipliers": [1.0],
        "layer_deltas": [0, 1], "head_filters": 64, "width_mult": 0.5}
RESOLUTION, CLASSES = 16, 10
TINY_OVERRIDES = [f"search_space.{k}=[{','.join(map(str, v))}]" if isinstance(v, list) else f"search_space.{k}={v}"
                  for k, v in TINY.items()] + [f"data.resolution={RESOLUTION}"]


def tiny_space() -> SpaceConfig:
    return SpaceConfig(**TINY, resolution=RESOLUTION, num_classes=CLASSES)


def local_device(**kw) -> LocalDevice:
    return LocalDevice(runs=3, warmup=1, **kw)


class LostDevice(LocalDevice):
    """The real local device, gone after `after` round trips (a board unplugged mid-build)."""

    def __init__(self, after: int, **kw):
        super().__init__(**kw)
        self.left = after

    def measure_many(self, items):
        if self.left <= 0:
            raise DeviceError(f"{self.name}: connection lost")
        self.left -= 1
        return super().measure_many(items)


def evaluator(device, tmp_path: Path) -> LatencyEvaluator:
    return LatencyEvaluator(device, cache_path=tmp_path / "cache.sqlite", lock_dir=tmp_path / "locks")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A complete table of the tiny space on the local device (shared by the tests that only read it)."""
    tmp = tmp_path_factory.mktemp("table")
    device = local_device()
    report = build_table(device, tiny_space(), tmp / "table.json", evaluator(device, tmp), calibration_models=5,
                         repeats=2, progress=False, log=lambda _: None)
    assert report.layers == len(space_signatures(tiny_space(), RESOLUTION, CLASSES)) == report.layers_measured
    assert report.models_measured == 5
    # two passes, one export each: later passes measure the kept file, removed when the build is done
    assert report.exports == report.layers + 5 and not exports_dir(tmp / "table.json").exists()
    return tmp / "table.json"


def test_build_measures_every_distinct_layer_once_and_calibrates(built):
    table = LatencyTable.load(built)
    signatures = space_signatures(tiny_space(), RESOLUTION, CLASSES)
    assert set(table.layers) == set(signatures) and all(ms > 0 for ms in table.layers.values())
    kinds = {s.split("|")[0] for s in signatures}
    assert kinds == {"stem", "body", "add", "head"}  # no pool skip in this space
    # the first, striding layer of block 2 and its repeat are distinct entries
    assert "body|mbconv|3|3|0.0|8|16|2|8" in signatures and "body|mbconv|3|3|0.0|16|16|1|4" in signatures
    assert table.fit["n"] == 5 and len(table.fit["residuals"]) == 5
    predictor = LatencyPredictor(table, CLASSES)
    arch = random_arch(tiny_space(), random.Random(3))
    terms = predictor.terms(arch)
    assert terms.count == len(arch_signatures(arch, RESOLUTION, CLASSES))
    # every piece's parameter count is recorded: an architecture's add up to the stand-alone model's
    assert set(table.weights) == set(table.layers) and all(table.weights[s] == 0 for s in signatures if s.startswith("add"))
    assert terms.weights == sum(p.numel() for p in build_model(arch, CLASSES).parameters())
    assert predictor.predict(arch) == pytest.approx(predictor.calibrated(terms)) and predictor.predict(arch) > 0


def test_a_table_from_before_weight_counts_gets_them_from_a_rebuild_without_the_device(built, tmp_path):
    old = json.loads(built.read_text())
    del old["weights"]
    for model in old["calibration"]["models"]:
        del model["weights"]
    path = tmp_path / "table.json"
    path.write_text(json.dumps(old))
    assert LatencyPredictor(LatencyTable.load(path), CLASSES).predict(random_arch(tiny_space(), random.Random(0))) > 0
    device = local_device()
    report = build_table(device, tiny_space(), path, evaluator(device, tmp_path), calibration_models=5, repeats=2,
                         progress=False, log=lambda _: None)
    table = LatencyTable.load(path)
    assert report.layers_measured == report.models_measured == report.device_calls == 0
    assert set(table.weights) == set(table.layers) and all(m["weights"] > 0 for m in table.models)


def test_a_build_stopped_by_a_lost_device_resumes_where_it_stopped(tmp_path):
    space, path = tiny_space(), tmp_path / "table.json"
    total = len(space_signatures(space, RESOLUTION, CLASSES))
    with pytest.raises(DeviceError, match="connection lost; 6 of .* run the same build again to continue"):
        lost = LostDevice(after=2, runs=3, warmup=1)
        build_table(lost, space, path, evaluator(lost, tmp_path), calibration_models=3, progress=False,
                    log=lambda _: None, layers_per_call=3, repeats=1)
    half = LatencyTable.load(path)  # saved, valid, and not taken for a finished table
    assert len(half.layers) == 6 and half.fit is None
    assert len(list(exports_dir(path).iterdir())) == 9  # the third call's 3 layers were exported, not measured
    with pytest.raises(ConfigError, match="incomplete"):
        LatencyPredictor(half, CLASSES)
    device = local_device()
    report = build_table(device, space, path, evaluator(device, tmp_path), calibration_models=3, progress=False,
                         log=lambda _: None)
    assert report.layers_measured == total - 6 and len(LatencyTable.load(path).layers) == total
    assert report.exports == total - 9 + 3  # the killed build's files are measured, not exported again


class CountingFiles(LocalDevice):
    """The real local device, noting how many model files the build has kept at each measurement."""

    def __init__(self, folder: Path, **kw):
        super().__init__(**kw)
        self.folder, self.seen = folder, []

    def measure_many(self, items):
        self.seen.append(len(list(self.folder.glob("*.onnx"))))
        return super().measure_many(items)


def test_export_workers_write_every_file_before_the_first_measurement_of_its_phase(tmp_path):
    space, path = tiny_space(), tmp_path / "table.json"
    layers = len(space_signatures(space, RESOLUTION, CLASSES))
    device = CountingFiles(exports_dir(path), runs=3, warmup=1)
    report = build_table(device, space, path, evaluator(device, tmp_path), calibration_models=3, progress=False,
                         log=lambda _: None, layers_per_call=3, repeats=2, export_workers=2)
    # every layer's file before the first layer is measured, every model's before the first model: no export
    # runs beside a measurement (with one worker the first call would see 3 files, the next 6, ...)
    assert sorted(set(device.seen)) == [layers, layers + 3] and device.seen[0] == layers
    assert report.exports == layers + 3 and LatencyPredictor(LatencyTable.load(path), CLASSES)
    with pytest.raises(ConfigError, match="export workers must be a positive integer, got 0"):
        build_table(device, space, path, evaluator(device, tmp_path), export_workers=0, progress=False,
                    log=lambda _: None)


def test_a_second_build_of_a_table_waits_for_the_first_and_goes_on_from_what_it_saved(built, tmp_path):
    path, logged, reports = tmp_path / "table.json", [], []
    device = local_device()

    def second_build():
        reports.append(build_table(device, tiny_space(), path, evaluator(device, tmp_path), calibration_models=5,
                                   repeats=2, progress=False, log=logged.append))

    with table_build_lock(path, tmp_path / "locks"):  # the first build, holding the table
        second = threading.Thread(target=second_build)
        second.start()
        second.join(timeout=5)
        assert second.is_alive() and any("waiting for it" in line for line in logged)
        shutil.copy(built, path)  # what the first build saves as it ends
    second.join(timeout=120)
    # nothing measured twice: the waiting build found the table complete
    assert reports and reports[0].layers_measured == 0 and reports[0].models_measured == 0


def test_a_shared_exports_folder_is_removed_by_its_last_user_and_kept_after_a_failure(tmp_path):
    folder, locks = tmp_path / "table.json.evaluate-exports", tmp_path / "locks"
    other = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from evaluators.latency.lock import shared_folder\n"
        f"with shared_folder({str(folder)!r}, {str(locks)!r}) as f:\n"
        "    f.mkdir(parents=True, exist_ok=True); (f / 'a.onnx').write_text('x'); print('in', flush=True)\n"
        "    sys.stdin.readline()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert other.stdout.readline().strip() == "in"
        with shared_folder(folder, locks):
            (folder / "b.onnx").write_text("y")
        assert (folder / "a.onnx").is_file()  # the other evaluation still measures from it
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.wait(timeout=60) == 0
    finally:
        other.kill()
    assert not folder.exists()  # the last user removed it
    with pytest.raises(RuntimeError), shared_folder(folder, locks):
        folder.mkdir()
        raise RuntimeError("device lost")
    assert folder.is_dir()  # a failed job keeps its files for the next run


def test_a_foreign_or_damaged_table_is_refused_saying_what_differs(built, tmp_path):
    data = json.loads(built.read_text())
    device = local_device()
    for key, value, word in (("device", "ssh:pi@board:22", "device"), ("resolution", 224, "resolution")):
        foreign = tmp_path / f"{key}.json"
        foreign.write_text(json.dumps({**data, key: value}))
        with pytest.raises(ConfigError, match=f"another setup: {word}") as err:
            latency_for_mode("predict", evaluator(device, tmp_path), RESOLUTION, CLASSES, table=foreign)
        assert "\n" not in str(err.value)
    table = LatencyTable.load(built)
    with pytest.raises(ConfigError, match="runtime"):
        table.check_matches(runtime="onnxruntime 0.0.1")
    damaged = tmp_path / "damaged.json"
    damaged.write_text(built.read_text()[:200])
    with pytest.raises(ConfigError, match="damaged"):
        latency_for_mode("predict", evaluator(device, tmp_path), RESOLUTION, CLASSES, table=damaged)
    with pytest.raises(ConfigError, match="latency_table build"):
        latency_for_mode("predict", evaluator(device, tmp_path), RESOLUTION, CLASSES, table=tmp_path / "none.json")


def test_predict_refuses_a_missing_layer_and_predict_verify_measures_it(built, tmp_path):
    path = tmp_path / "table.json"
    arch = random_arch(tiny_space(), random.Random(0))
    model = build_model(arch, CLASSES)
    gone = arch_signatures(arch, RESOLUTION, CLASSES)[1]
    data = json.loads(built.read_text())
    del data["layers"][gone]  # a table that lacks one layer of the architecture (a save would take it back in)
    path.write_text(json.dumps(data))
    device = local_device()
    predict = latency_for_mode("predict", evaluator(device, tmp_path), RESOLUTION, CLASSES, table=path)
    with pytest.raises(ConfigError, match="lacks 1 layer"):
        predict.measure(model, arch.key, (1, 3, RESOLUTION, RESOLUTION))
    verify = latency_for_mode("predict_verify", evaluator(device, tmp_path), RESOLUTION, CLASSES, table=path)
    result = verify.measure(model, arch.key, (1, 3, RESOLUTION, RESOLUTION))
    assert result.source == "predicted" and result.median_ms > 0
    assert gone in LatencyTable.load(path).layers and gone in LatencyTable.load(path).weights  # measured, kept


def test_predict_verify_measures_exactly_the_architectures_entering_the_top_k(built, tmp_path):
    path = tmp_path / "table.json"
    path.write_text(built.read_text())
    device = local_device()
    latency = latency_for_mode("predict_verify", evaluator(device, tmp_path), RESOLUTION, CLASSES, table=path,
                               top_k=2)
    assert isinstance(latency, PredictedLatency)
    rng, archs = random.Random(7), {}
    while len(archs) < 8:
        arch = random_arch(tiny_space(), rng)
        archs.setdefault(arch.key, arch)

    def reward(accuracy: float, latency_ms: float) -> float:
        return accuracy * (latency_ms / 0.05) ** -0.07

    shape, finals, expected = (1, 3, RESOLUTION, RESOLUTION), [], []
    accuracies = [0.5, 0.6, 0.4, 0.7, 0.3, 0.65, 0.2, 0.1]
    calibrated = LatencyTable.load(path).calibration_keys()
    for accuracy, arch in zip(accuracies, archs.values()):
        model = build_model(arch, CLASSES)
        predicted = latency.measure(model, arch.key, shape).median_ms
        r = reward(accuracy, predicted)
        best = sorted((reward(a, lat) for a, lat in finals), reverse=True)
        top = len(best) < 2 or r > best[1]
        pareto = not any(a >= accuracy and lat <= predicted and (a > accuracy or lat < predicted) for a, lat in finals)
        if top or pareto:
            expected.append(arch.key)
        metric = latency.finish(model, arch.key, shape, {"accuracy": accuracy, "latency_ms": predicted,
                                                         "latency_source": "predicted"}, reward)
        assert metric["latency_predicted_ms"] == predicted
        if arch.key in expected:
            assert metric["latency_source"] == "measured" and metric["latency_ms"] == metric["latency_measured_ms"]
        else:
            assert metric["latency_source"] == "predicted" and "latency_measured_ms" not in metric
        finals.append((accuracy, metric["latency_ms"]))
    assert latency.verified == expected and 2 <= len(expected) < len(archs)
    saved = LatencyTable.load(path)  # each verified model refits the calibration, kept in the file
    new = [key for key in expected if key not in calibrated]
    assert len(saved.models) == len(calibrated) + len(new) and saved.fit["n"] == len(saved.models)


@pytest.mark.slow
def test_predict_with_no_table_is_one_line_naming_the_build_command(tmp_path):
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=1", "latency.mode=predict",
                     f"latency.table={tmp_path / 'none.json'}", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and "python -m mnas_nni.latency_table build" in lines[-1]
    assert not (tmp_path / "run" / "trials.jsonl").exists() or not read_trials(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["measure", "predict", "predict_verify"])
def test_a_four_trial_search_in_each_latency_mode(built, tmp_path, mode):
    table = tmp_path / "table.json"
    table.write_text(built.read_text())  # predict_verify refits into it
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=4", "search.top_k=1", f"latency.mode={mode}",
                     f"latency.table={table}", *TINY_OVERRIDES, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4 and all(t["status"] == "succeeded" for t in trials)
    sources = [t["latency_source"] for t in trials]
    if mode == "measure":
        assert sources == ["measured"] * 4 and all(t["latency_predicted_ms"] is None for t in trials)
    elif mode == "predict":
        assert sources == ["predicted"] * 4
        assert all(t["latency_ms"] == t["latency_predicted_ms"] and t["latency_measured_ms"] is None for t in trials)
    else:
        assert sources[0] == "measured"  # the first trial always enters the top-1
        for t in trials:
            assert t["latency_predicted_ms"] is not None
            assert (t["latency_measured_ms"] == t["latency_ms"]) == (t["latency_source"] == "measured")


@pytest.mark.slow
def test_latency_table_cli_show_and_bad_input(built, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mnas_nni.latency_table", *args, *TINY_OVERRIDES,
                               f"latency.lock_dir={tmp_path / 'locks'}"], capture_output=True, text=True,
                              timeout=120, check=False, cwd=Path(__file__).resolve().parent.parent)

    shown = cli("show", f"latency.table={built}")
    assert shown.returncode == 0, shown.stderr
    assert "complete" in shown.stdout and "<- this config" in shown.stdout and "calibration on 5 models" in shown.stdout
    missing = cli("show", f"latency.table={tmp_path / 'none.json'}")
    assert missing.returncode == 2 and "latency_table build" in missing.stderr and "Traceback" not in missing.stderr


def test_the_strategy_bench_objective_uses_the_same_predictor(tmp_path):
    from bench._objective import bench_predictor

    first = bench_predictor(tmp_path, tiny_space(), log=lambda _: None, calibration_models=4)
    arch = random_arch(tiny_space(), random.Random(1))
    again = bench_predictor(tmp_path, tiny_space(), log=lambda _: pytest.fail("a complete table is not rebuilt"))
    assert isinstance(first, LatencyPredictor) and again.predict(arch) == pytest.approx(first.predict(arch))


def test_a_table_for_imagenet_without_its_folder_names_both_ways_to_give_the_class_count(tmp_path):
    from mnas_nni.latency_table import compose, setup

    with pytest.raises(ConfigError, match=r"data.root is not set .* search_space.num_classes=N"):
        setup(compose(["+experiment=mnas_imagenet", f"latency.table={tmp_path / 't.json'}"]))
    s = setup(compose(["+experiment=mnas_imagenet", "search_space.num_classes=1000", f"latency.table={tmp_path / 't.json'}"]))
    assert (s.space.num_classes, s.space.resolution) == (1000, 224)


def test_two_processes_adding_to_one_table_keep_both_sides_measurements(tmp_path):
    path = tmp_path / "table.json"
    model = {"sum_ms": 1.0, "count": 3, "kinds": {}, "measured_ms": 1.2, "origin": "build", "passes": 1}
    LatencyTable(path, "dev", "rt", 32, data={"layers": {"a": 0.1}, "calibration": {
        "models": [{"arch_key": "m0", **model}]}}).save()
    first, second = LatencyTable.load(path), LatencyTable.load(path)  # e.g. two searches in predict_verify
    first.layers["b"], first.weights["b"] = 0.2, 10
    first.models.append({"arch_key": "m1", **model})
    first.save()
    second.layers["c"], second.layers["a"] = 0.3, 0.05
    second.models.append({"arch_key": "m2", **model})
    second.save()  # before: this save dropped what the first had added since the second read the file
    saved = LatencyTable.load(path)
    assert saved.layers == {"a": 0.05, "b": 0.2, "c": 0.3} and saved.weights == {"b": 10}
    assert sorted(m["arch_key"] for m in saved.models) == ["m0", "m1", "m2"]
    path.write_text("{damaged")
    LatencyTable(path, "dev", "rt", 32, data={"layers": {"z": 1.0}}).save()  # a damaged file is replaced
    assert LatencyTable.load(path).layers == {"z": 1.0}
