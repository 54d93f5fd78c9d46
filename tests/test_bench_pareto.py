"""bench/pareto.py's reference models and its reading of the front (the bench itself trains for minutes)."""

from __future__ import annotations

from bench.pareto import compare, interpolated, reference_models, scale_width


def test_mobilenet_v2_at_the_demo_scale_is_the_demo_space_own_base_architecture():
    from search_spaces.presets import load_preset
    from search_spaces.space import SpaceConfig

    config = SpaceConfig(width_mult=0.5, num_classes=10, resolution=32)  # conf/search_space/mnas.yaml's demo
    sample = {}
    for index, base in enumerate(config.skeleton):
        sample.update({f"block{index + 1}/conv_op": "dsconv" if base.expand == 1 else f"mbconv{base.expand}",
                       f"block{index + 1}/kernel": base.kernel, f"block{index + 1}/se_ratio": 0.0,
                       f"block{index + 1}/skip": "identity", f"block{index + 1}/filters": config.scaled(base.out_filters),
                       f"block{index + 1}/layers": base.repeats})
    assert scale_width(load_preset("mobilenet_v2"), 0.5).key == config.arch_from_sample(sample).key
    widths = [arch.blocks[-1].out_filters for group, _, arch in reference_models() if group == "mobilenet_v2"]
    assert widths == sorted(widths) and len(set(widths)) == 5  # 0.35 < 0.5 < 0.75 < 1.0 < 1.4


def test_the_front_is_read_at_equal_latency():
    assert interpolated([(1.0, 0.5), (3.0, 0.9)], 2.0) == 0.7 and interpolated([(1.0, 0.5)], 2.0) is None
    rows = [{"group": "mobilenet_v2", "latency_ms": 1.0, "accuracy": 0.5},
            {"group": "mobilenet_v2", "latency_ms": 3.0, "accuracy": 0.9},
            {"group": "mnasnet_a1", "latency_ms": 2.0, "accuracy": 0.75},
            {"group": "searched", "latency_ms": 0.9, "accuracy": 0.6},
            {"group": "searched", "latency_ms": 2.5, "accuracy": 0.8}]
    lines = compare(rows)
    assert "+5.0 points" in lines[0]  # A1 0.75 against MobileNetV2's 0.70 at 2 ms
    assert "1.000 ms: +10.0; 3.000 ms: -10.0" in lines[1]  # best searched at no more latency: 0.6, then 0.8


def test_measured_rows_averages_each_models_seeds_and_measures_it_once_on_the_device(tmp_path, capsys):
    from bench.pareto import measured_rows
    from evaluators.latency import LatencyEvaluator
    from evaluators.latency.local import LocalDevice

    models = [(group, name, arch) for group, name, arch in reference_models() if name.endswith(("x0.35", "x0.5"))]
    asked = []

    def accuracies(arch):
        asked.append(arch.key)
        return [0.5, 0.7] if len(asked) == 1 else [0.9, 0.9]

    latency = LatencyEvaluator(LocalDevice(runs=3, warmup=1), cache_path=tmp_path / "cache.sqlite",
                               lock_dir=tmp_path / "locks")
    rows = measured_rows(models, accuracies, latency, resolution=16)
    assert asked == [arch.key for _, _, arch in models] and len(rows) == 2
    assert rows[0]["accuracy"] == 0.6 and abs(rows[0]["spread"] - 0.2) < 1e-12 and rows[1]["spread"] == 0.0
    assert all(r["latency_ms"] > 0 for r in rows) and [r["name"] for r in rows] == [name for _, name, _ in models]
    assert "(seeds 0.500, 0.700)" in capsys.readouterr().out
