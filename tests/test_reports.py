"""Search reports: the Pareto front, the plots (real PNGs with the right content), the top-k tables."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from matplotlib.image import imread

from mnas_nni.run.records import FAILED, SUCCEEDED, TrialRecord, pareto_front
from mnas_nni.tracking.reports import (
    CONTROLLER_FILE,
    REPORT_FILES,
    pareto_figure,
    pareto_plot,
    pareto_summary,
    reward_figure,
    reward_plot,
    topk_csv,
    topk_table,
    write_reports,
)

ARCH = {"blocks": ["r1_k3_s11_e1_i32_o16_noskip", "r2_k3_s22_e6_i16_o24"]}


def ok(trial: int, accuracy: float, latency_ms: float, reward: float | None = None) -> TrialRecord:
    return TrialRecord(trial=trial, status=SUCCEEDED, arch=ARCH, accuracy=accuracy, latency_ms=latency_ms,
                       reward=accuracy if reward is None else reward, params=2_500_000 + trial, macs=300_000_000)


def failed(trial: int) -> TrialRecord:
    return TrialRecord(trial=trial, status=FAILED, error="NaN loss")


@pytest.fixture
def records() -> list[TrialRecord]:
    return [
        ok(1, 0.70, 10.0),   # front: fastest
        ok(2, 0.80, 20.0),   # front
        ok(3, 0.75, 25.0),   # beaten by 2 (faster and more accurate)
        ok(4, 0.80, 30.0),   # as accurate as 2 but slower
        ok(5, 0.90, 40.0),   # front: most accurate
        ok(6, 0.60, 10.0),   # same latency as 1, less accurate
        failed(7),
        ok(8, 0.85, 45.0),   # beaten by 5
    ]


def test_pareto_front_keeps_exactly_the_undominated_trials(records):
    assert [r.trial for r in pareto_front(records)] == [1, 2, 5]
    assert [row["trial"] for row in pareto_summary(records)] == [1, 2, 5]
    assert pareto_summary(records)[0]["arch"] == ARCH


def test_pareto_front_edge_cases():
    assert pareto_front([]) == []
    assert pareto_front([failed(1)]) == []
    assert [r.trial for r in pareto_front([ok(1, 0.5, 5.0)])] == [1]
    # Strictly better on both axes each time: every point is on the front.
    assert [r.trial for r in pareto_front([ok(3, 0.9, 30), ok(1, 0.5, 10), ok(2, 0.7, 20)])] == [1, 2, 3]


def test_pareto_figure_shows_front_target_and_failures(records):
    ax = pareto_figure(records, 35.0).axes[0]
    assert "7 trials" in ax.get_title() and "1 failed" in ax.get_title()
    front = next(line for line in ax.get_lines() if line.get_gid() == "pareto-front")
    # The step line visits the front points in latency order and runs flat to the slowest trial.
    assert list(front.get_xdata()) == [10.0, 20.0, 40.0, 45.0]
    assert list(front.get_ydata()) == [0.70, 0.80, 0.90, 0.90]
    target = next(line for line in ax.get_lines() if line.get_gid() == "target")
    assert list(target.get_xdata()) == [35.0, 35.0] and target.get_linestyle() == "--"
    dots = ax.collections[0]
    assert len(dots.get_offsets()) == 7  # every successful trial, no failed one
    assert list(dots.get_array()) == pytest.approx([r.reward for r in records if r.ok])
    assert len(pareto_figure(records, 35.0).axes) == 2  # the reward colourbar


def test_reward_figure_tracks_best_so_far(records):
    ax = reward_figure(records).axes[0]
    best = next(line for line in ax.get_lines() if line.get_label() == "best so far")
    assert list(best.get_ydata()) == pytest.approx([0.70, 0.80, 0.80, 0.80, 0.90, 0.90, 0.90])
    assert "1 failed" in ax.get_title()


def _assert_real_png(path, min_bytes: int = 10_000) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert (image[..., :3] < 0.5).mean() > 0.005  # something was drawn, not a blank canvas
    return image


def test_plots_are_written_as_real_pngs(records, tmp_path):
    _assert_real_png(pareto_plot(records, 35.0, tmp_path / "sub" / "pareto.png"))
    _assert_real_png(reward_plot(records, tmp_path / "reward.png"))


def test_plots_of_no_trials_still_render(tmp_path):
    _assert_real_png(pareto_plot([failed(1)], 75.0, tmp_path / "p.png"), min_bytes=5_000)
    _assert_real_png(reward_plot([], tmp_path / "r.png"), min_bytes=5_000)


def test_topk_markdown_is_sorted_by_reward_and_skips_failures(records):
    lines = topk_table(records, 3).strip().splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| rank | trial | reward |")
    trials = [int(line.split("|")[2]) for line in lines[2:]]
    assert trials == [5, 8, 2]
    assert "`r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24`" in lines[2]
    assert len(topk_table(records, 100).strip().splitlines()) == 2 + 7


def test_topk_csv_round_trips(records, tmp_path):
    with topk_csv(records, 2, tmp_path / "topk.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [5, 8]
    assert float(rows[0]["reward"]) == pytest.approx(0.90)
    assert float(rows[0]["latency_ms"]) == pytest.approx(40.0)
    assert float(rows[0]["params_m"]) == pytest.approx(2.500005)
    assert rows[0]["blocks"] == " ".join(ARCH["blocks"])


def test_write_reports_writes_every_file_under_fixed_names(records, tmp_path):
    paths = write_reports(records, 35.0, tmp_path, k=2)
    assert set(paths) == set(REPORT_FILES)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert [row["trial"] for row in json.loads((tmp_path / "pareto.json").read_text())] == [1, 2, 5]
    assert not (tmp_path / CONTROLLER_FILE).exists()  # no controller updated: no controller plot
    learned = write_reports(records, 35.0, tmp_path / "ppo", k=2, batch_rewards=[0.61, 0.66, 0.89])
    assert set(learned) == {*REPORT_FILES, CONTROLLER_FILE} and learned[CONTROLLER_FILE].read_bytes()[:4] == b"\x89PNG"


def test_off_a_tty_the_console_prints_one_plain_line_per_trial_and_the_final_table(records):
    from types import SimpleNamespace

    from rich.console import Console

    from mnas_nni.tracking.console import ConsoleObserver, abbreviate_block

    out = io.StringIO()
    console = ConsoleObserver(total=8, top_k=2, console=Console(file=out, width=200))  # a file: not a terminal
    console.on_search_start(SimpleNamespace(target_ms=None))
    for record in records:
        console.on_trial_end(record)
    lines = out.getvalue().splitlines()  # no progress bar in logs: one plain line per trial
    assert "trial 7 failed: NaN loss" in lines
    assert [line.split()[1] for line in lines if " reward " in line] == [f"{r.trial}/8" for r in records if r.ok]
    assert all("elapsed, ETA" in line for line in lines if " reward " in line)
    assert (console.done, console.failed, console.best) == (7, 1, 0.90)
    console.on_search_end(records)
    console.close()
    text = out.getvalue()
    assert "8 trials, 1 failed" in text and "Top 2 architectures" in text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["5", "8"]
    assert "DSk3x1:16-ns MB6k3x2:24" in rows[0] and "MB6k5x3:40 = MBConv" in text  # the legend of block strings
    assert abbreviate_block("conv_r3_k5_s22_e1_i24_o40_se0.25_poolskip") == "Ck5x3:40+SE+pool"


def test_the_top_k_table_shows_a_nas_bench_201_cell_by_its_arch_string():
    from rich.console import Console

    from mnas_nni.tracking.console import topk_rich_table

    cell = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    record = TrialRecord(trial=1, status=SUCCEEDED, arch={"format": "nb201", "arch_str": cell}, reward=0.9)
    out = io.StringIO()
    Console(file=out, width=300).print(topk_rich_table([record], 1))
    assert cell in out.getvalue() and "MBConv" not in out.getvalue()  # no block-string legend for a cell


def test_the_console_says_each_controller_update_and_how_its_batches_rewards_moved():
    from types import SimpleNamespace

    from rich.console import Console

    from mnas_nni.tracking.console import ConsoleObserver, controller_line

    out = io.StringIO()
    console = ConsoleObserver(total=30, console=Console(file=out, width=200))
    console.on_search_start(SimpleNamespace(target_ms=None))
    for step, mean in enumerate((0.61, 0.70, 0.74)):
        console.on_controller_update(step, {"update": step, "reward_mean": mean, "reward_max": mean + 0.1})
    console.on_controller_update(3, {"update": 3, "loss": 0.1})  # no batch reward: nothing to say
    console.on_search_end([])
    lines = out.getvalue().splitlines()
    assert lines[:3] == [f"controller update {n}: its batch's mean reward {m:.4f} (best {m + 0.1:.4f})"
                         for n, m in ((1, 0.61), (2, 0.70), (3, 0.74))]
    assert lines[-1] == "controller: 3 updates; mean reward of its batches 0.6100 -> 0.7000 -> 0.7400 (+0.1300 first to last)"
    many = controller_line([0.1 * n for n in range(10)])
    assert many.startswith("controller: 10 updates;") and " -> ... -> " in many and many.endswith("(+0.9000 first to last)")


def test_on_a_terminal_log_lines_print_above_the_progress_bar_not_over_it():
    import logging
    import sys
    from types import SimpleNamespace

    from rich.console import Console
    from rich.progress import TimeRemainingColumn

    from mnas_nni.tracking.console import ConsoleObserver

    screen = io.StringIO()
    handler = logging.StreamHandler(sys.stdout)  # made before the bar, as Hydra's console handler is
    logging.getLogger().addHandler(handler)
    try:
        console = ConsoleObserver(total=2, console=Console(file=screen, force_terminal=True, width=100))
        console.on_search_start(SimpleNamespace(target_ms=None))
        assert any(isinstance(column, TimeRemainingColumn) for column in console.progress.columns)  # the bar's ETA
        # through the handler itself: other tests may have raised logging levels in this process
        handler.emit(logging.makeLogRecord({"msg": "[PPO update 0] a log line", "levelno": logging.WARNING}))
        console.close()
        assert handler.stream is sys.stdout  # given back
    finally:
        logging.getLogger().removeHandler(handler)
    assert "[PPO update 0] a log line" in screen.getvalue()  # rendered by rich, above the bar
