"""The figures of bench/hw_nas_bench.py: regret curves per strategy, and the paper's Fig. 3 on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_regret(curves: dict[str, list[np.ndarray]], highlight: str, title: str, path: Path) -> None:
    """Regret against samples per strategy (median line, quartiles shaded); `highlight` drawn thicker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for word, runs in curves.items():
        length = max(len(c) for c in runs)
        padded = np.array([np.pad(c, (0, length - len(c)), mode="edge") for c in runs])  # converged: keep final
        x = np.arange(1, length + 1)
        q1, q2, q3 = np.percentile(padded, [25, 50, 75], axis=0)
        (line,) = ax.plot(x, q2, label=word, lw=2 if word == highlight else 1.2)
        ax.fill_between(x, q1, q3, color=line.get_color(), alpha=0.12)
    ax.set(xscale="log", yscale="symlog", xlabel="samples", ylabel="regret (accuracy points, median, IQR shaded)",
           title=title)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fig3(latencies: dict[str, list[float]], target_ms: float, title: str, path: Path) -> None:
    """The paper's Fig. 3: distribution of the latencies the controller sampled under the soft and hard reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = np.concatenate([np.asarray(v) for v in latencies.values()])
    bins = np.linspace(everything.min(), np.percentile(everything, 99.5), 60)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for word, values in latencies.items():
        ax.hist(values, bins=bins, alpha=0.5, label=f"{word} reward ({len(values)} samples)")
    ax.axvline(target_ms, color="k", ls="--", label=f"T = {target_ms:g} ms")
    ax.set(xlabel="latency of the sampled model (ms)", ylabel="samples", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
