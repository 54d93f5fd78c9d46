"""Search reports from trial records: the accuracy/latency Pareto plot, reward progress, top-k tables, and the
controller's batch rewards (whether it learned).

Plots are drawn on a bare `matplotlib.figure.Figure` (Agg canvas), so nothing here touches pyplot's global
state or needs a display.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mnas_nni.run.records import TrialRecord, pareto_front, top_k

TOPK_COLUMNS = ("rank", "trial", "reward", "accuracy", "latency_ms", "params_m", "macs_m", "blocks")
REPORT_FILES = ("pareto.png", "reward.png", "topk.md", "topk.csv", "pareto.json")
CONTROLLER_FILE = "controller.png"  # also written once a learning strategy (ppo_rnn*) has updated


def _new_figure() -> Figure:
    figure = Figure(figsize=(7, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _measured(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.ok and r.accuracy is not None and r.latency_ms is not None]


def pareto_plot(records: Iterable[TrialRecord], target_ms: float | None, path: str | Path) -> Path:
    """Accuracy vs latency: successful trials coloured by reward, the Pareto front as a step line, T dashed."""
    return _save(pareto_figure(records, target_ms), path)


def reward_plot(records: Iterable[TrialRecord], path: str | Path) -> Path:
    """Reward of each trial in trial order, failed trials marked, and the best reward so far."""
    return _save(reward_figure(records), path)


def controller_plot(batch_rewards: Sequence[float], path: str | Path) -> Path:
    """The mean reward of each controller update's batch, in update order: the controller learning, or not."""
    return _save(controller_figure(batch_rewards), path)


def pareto_figure(records: Iterable[TrialRecord], target_ms: float | None) -> Figure:
    records = list(records)
    points = _measured(records)
    failed = sum(not r.ok for r in records)
    figure = _new_figure()
    ax = figure.add_subplot()
    title = f"Accuracy vs latency: {len(points)} trials"
    if failed:
        title += f" ({failed} failed, not shown)"
    ax.set_title(title)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    if points:
        rewarded = [r for r in points if r.reward is not None]
        unrewarded = [r for r in points if r.reward is None]
        if rewarded:
            dots = ax.scatter([r.latency_ms for r in rewarded], [r.accuracy for r in rewarded],
                              c=[r.reward for r in rewarded], cmap="viridis", s=28, zorder=3)
            figure.colorbar(dots, ax=ax, label="reward")
        if unrewarded:
            ax.scatter([r.latency_ms for r in unrewarded], [r.accuracy for r in unrewarded],
                       color="grey", s=28, zorder=3, label="no reward")
        front = pareto_front(points)
        # Best accuracy reachable within a latency budget: flat until the next front point.
        xs = [r.latency_ms for r in front] + [max(r.latency_ms for r in points)]
        ys = [r.accuracy for r in front] + [front[-1].accuracy]
        ax.step(xs, ys, where="post", color="tab:red", linewidth=1.4, zorder=2, label="Pareto front",
                gid="pareto-front")
        ax.scatter(xs[:-1], ys[:-1], facecolors="none", edgecolors="tab:red", s=70, zorder=4)
        for record in front:
            ax.annotate(f"#{record.trial}", (record.latency_ms, record.accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="tab:red")
    else:
        ax.text(0.5, 0.5, "no successful trials yet", transform=ax.transAxes, ha="center", va="center")
    if target_ms is not None and target_ms > 0:
        ax.axvline(target_ms, color="black", linestyle="--", linewidth=1, label=f"target T = {target_ms:g} ms",
                   gid="target")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def reward_figure(records: Iterable[TrialRecord]) -> Figure:
    ordered = sorted(records, key=lambda r: r.trial)
    scored = [r for r in ordered if r.ok and r.reward is not None]
    failed = [r for r in ordered if not r.ok]
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.set_title(f"Reward per trial: {len(scored)} scored" + (f", {len(failed)} failed" if failed else ""))
    ax.set_xlabel("trial")
    ax.set_ylabel("reward")
    if scored:
        ax.scatter([r.trial for r in scored], [r.reward for r in scored], s=16, color="tab:blue", label="trial")
        best, best_so_far = -math.inf, []
        for record in scored:
            best = max(best, record.reward)
            best_so_far.append(best)
        ax.step([r.trial for r in scored], best_so_far, where="post", color="tab:orange", label="best so far")
    if failed:
        # Along the bottom edge, whatever the reward scale: a failed trial has no reward to plot.
        ax.scatter([r.trial for r in failed], [0.02] * len(failed), transform=ax.get_xaxis_transform(),
                   marker="x", color="tab:red", s=20, label="failed", clip_on=False)
    if not ordered:
        ax.text(0.5, 0.5, "no trials yet", transform=ax.transAxes, ha="center", va="center")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def controller_figure(batch_rewards: Sequence[float]) -> Figure:
    figure = _new_figure()
    ax = figure.add_subplot()
    rewards = list(batch_rewards)
    ax.plot(range(1, len(rewards) + 1), rewards, "-o", color="tab:blue")
    change = f": {rewards[0]:.4f} -> {rewards[-1]:.4f}" if rewards else ""
    ax.set_title(f"Controller: mean reward of each update's batch, {len(rewards)} updates{change}")
    ax.set_xlabel("controller update")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean reward of the batch")
    ax.grid(alpha=0.3)
    return figure


def _blocks(record: TrialRecord) -> str:
    return " ".join((record.arch or {}).get("blocks", []))


def _fmt(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _topk_rows(records: Iterable[TrialRecord], k: int) -> list[dict[str, Any]]:
    return [{
        "rank": rank,
        "trial": r.trial,
        "reward": r.reward,
        "accuracy": r.accuracy,
        "latency_ms": r.latency_ms,
        "params_m": None if r.params is None else r.params / 1e6,
        "macs_m": None if r.macs is None else r.macs / 1e6,
        "blocks": _blocks(r),
    } for rank, r in enumerate(top_k(records, k), start=1)]


def topk_table(records: Iterable[TrialRecord], k: int) -> str:
    """The k best trials by reward as a markdown table."""
    lines = ["| rank | trial | reward | accuracy | latency ms | params M | MACs M | blocks |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in _topk_rows(records, k):
        lines.append(
            f"| {row['rank']} | {row['trial']} | {_fmt(row['reward'], 4)} | {_fmt(row['accuracy'], 4)} "
            f"| {_fmt(row['latency_ms'], 2)} | {_fmt(row['params_m'], 2)} | {_fmt(row['macs_m'], 1)} "
            f"| `{row['blocks']}` |"
        )
    return "\n".join(lines) + "\n"


def topk_csv(records: Iterable[TrialRecord], k: int, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TOPK_COLUMNS)
        writer.writeheader()
        writer.writerows(_topk_rows(records, k))
    return path


def pareto_summary(records: Iterable[TrialRecord]) -> list[dict[str, Any]]:
    """The Pareto set as plain data (trial, metrics, architecture), sorted by latency."""
    return [{
        "trial": r.trial,
        "accuracy": r.accuracy,
        "latency_ms": r.latency_ms,
        "reward": r.reward,
        "params": r.params,
        "macs": r.macs,
        "arch": r.arch,
    } for r in pareto_front(records)]


def write_reports(records: Iterable[TrialRecord], target_ms: float | None, out_dir: str | Path,
                  k: int = 10, batch_rewards: Sequence[float] = ()) -> dict[str, Path]:
    """Every report into `out_dir`, always under the same file names (REPORT_FILES), and CONTROLLER_FILE when
    `batch_rewards` (the mean reward of each controller update's batch) has any."""
    records, out_dir = list(records), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "topk.md").write_text(topk_table(records, k), encoding="utf-8")
    (out_dir / "pareto.json").write_text(json.dumps(pareto_summary(records), indent=2) + "\n", encoding="utf-8")
    controller = {CONTROLLER_FILE: controller_plot(batch_rewards, out_dir / CONTROLLER_FILE)} if batch_rewards else {}
    return {
        **controller,
        "pareto.png": pareto_plot(records, target_ms, out_dir / "pareto.png"),
        "reward.png": reward_plot(records, out_dir / "reward.png"),
        "topk.md": out_dir / "topk.md",
        "topk.csv": topk_csv(records, k, out_dir / "topk.csv"),
        "pareto.json": out_dir / "pareto.json",
    }
