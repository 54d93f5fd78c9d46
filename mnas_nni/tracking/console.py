"""What a person watching the terminal sees: a progress bar of trials, then the top-k table.

On a non-TTY stdout (CI logs, `| tee`) the bar stays off and only the final table is printed.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mnas_nni.run.observers import SearchInfo, SearchObserver
from mnas_nni.run.records import TrialRecord, target_answer, top_k
from search_spaces.block_string import decode_block

OP_CODES = {"conv": "C", "dsconv": "DS", "mbconv": "MB"}
LEGEND = ("MB6k5x3:40 = MBConv expand 6, 5x5 kernel, 3 layers, 40 filters; DS depthwise-separable, C conv; "
          "+SE squeeze-excite; -ns no skip, +pool pooling skip")


LOG_FILE_ONLY = {"log_file_only": True}  # `extra=` for a record the run's log file keeps and the terminal skips


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "log_file_only", False)


def keep_file_only_records_off_console() -> None:
    """A failed trial's traceback goes to the run's log file (Hydra's file handler); the terminal shows the
    one line the console observer prints for it."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                and _not_file_only not in handler.filters:
            handler.addFilter(_not_file_only)


def abbreviate_block(text: str) -> str:
    """'r3_k5_s22_e6_i40_o80_se0.25' -> 'MB6k5x3:80+SE' (the block string stays the full record)."""
    try:
        block = decode_block(text)
    except ValueError:
        return text
    op = OP_CODES[block.op] + (str(block.expand) if block.op == "mbconv" else "")
    short = f"{op}k{block.kernel}x{block.repeats}:{block.out_filters}"
    if block.se_ratio > 0:
        short += "+SE"
    return short + {"identity": "", "none": "-ns", "pool": "+pool"}[block.skip]


def topk_rich_table(records: list[TrialRecord], k: int) -> Table:
    mnas = any("blocks" in (r.arch or {}) for r in records)  # the legend explains block strings only
    table = Table(title=f"Top {k} architectures by reward", caption=LEGEND if mnas else None, caption_justify="left")
    for name in ("trial", "reward", "accuracy", "latency ms", "params M", "MACs M"):
        table.add_column(name, justify="right")
    table.add_column("blocks")

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in top_k(records, k):
        arch = r.arch or {}  # an MNAS architecture has blocks; a NAS-Bench-201 cell its arch string
        blocks = " ".join(abbreviate_block(b) for b in arch["blocks"]) if "blocks" in arch else arch.get("arch_str", "")
        table.add_row(str(r.trial), fmt(r.reward, ".4f"), fmt(r.accuracy, ".4f"), fmt(r.latency_ms, ".2f"),
                      fmt(None if r.params is None else r.params / 1e6, ".2f"),
                      fmt(None if r.macs is None else r.macs / 1e6, ".1f"), blocks)
    return table


def _default_console() -> Console:
    console = Console()
    # Piped output has no width; 80 columns would fold every row of the table.
    return console if console.is_terminal else Console(width=200)


def answer_line(records: list[TrialRecord], target_ms: float) -> str:
    """The search's answer for T in one line: the most accurate trial meeting it, or that none does."""
    answer = target_answer(records, target_ms)
    if answer is None:
        return f"answer for T = {target_ms:g} ms: no trial meets T (raise reward.target_ms, or search longer)"
    return (f"answer for T = {target_ms:g} ms: trial {answer.trial}, the most accurate meeting T "
            f"({'confirmed ' if answer.confirmed else ''}accuracy {answer.final_accuracy:.4f} at "
            f"{answer.final_latency_ms:.2f} ms); "
            f"export it with: python -m mnas_nni.export <run dir> --trial {answer.trial} --out <dir>")


def controller_line(batch_rewards: list[float]) -> str:
    """`controller: 6 updates; mean reward of its batches 0.7012 -> 0.7440 -> ... -> 0.8123 (+0.1111)`."""
    shown = [f"{r:.4f}" for r in batch_rewards]
    if len(shown) > 8:
        shown = [*shown[:4], "...", *shown[-3:]]
    change = batch_rewards[-1] - batch_rewards[0]
    return (f"controller: {len(batch_rewards)} update{'s' if len(batch_rewards) != 1 else ''}; mean reward of "
            f"its batches {' -> '.join(shown)} ({change:+.4f} first to last)")


class ConsoleObserver(SearchObserver):
    """Progress of the search on the terminal; the runner builds it as ConsoleObserver(total=max_trials, top_k=k)."""


    def __init__(self, total: int, top_k: int = 5, console: Console | None = None):
        self.total = total
        self.top_k = top_k
        self.console = console or _default_console()
        self.done = self.failed = 0
        self.best: float | None = None
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.target_ms: float | None = None
        self.started = time.monotonic()
        self.batch_rewards: list[float] = []  # the controller's mean reward of each batch it learnt from

    @property
    def description(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4f}"
        return f"trials: {self.done} ok, {self.failed} failed, best reward {best}"

    def on_search_start(self, info: SearchInfo) -> None:
        self.target_ms = info.target_ms
        self.started = time.monotonic()
        if not self.console.is_terminal:
            return
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        streams = (sys.stdout, sys.stderr)
        self.progress.start()
        self._route_log_lines_above_the_bar(streams)
        # If a later observer refuses to start (the tracker's server is down), nobody calls close():
        # still give the terminal back (cursor, line) when the process exits.
        atexit.register(self._stop)
        self.task = self.progress.add_task(self.description, total=self.total)

    def on_trial_end(self, record: TrialRecord) -> None:
        if record.ok:
            self.done += 1
            if record.reward is not None and (self.best is None or record.reward > self.best):
                self.best = record.reward
        else:
            self.failed += 1
            self.console.print(f"trial {record.trial} failed: {record.error}", highlight=False, soft_wrap=True)
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, description=self.description)
        elif not self.console.is_terminal and record.ok:  # piped or under CI: one plain line per finished trial
            self.console.print(self.plain_line(record), highlight=False, soft_wrap=True)

    def on_controller_update(self, step: int, stats: dict[str, float]) -> None:
        mean = stats.get("reward_mean")
        if not isinstance(mean, (int, float)):
            return
        self.batch_rewards.append(float(mean))
        best = stats.get("reward_max")
        best_text = f" (best {best:.4f})" if isinstance(best, (int, float)) else ""
        # printed through the bar's console: on a terminal it lands above the bar, not over it
        self.console.print(f"controller update {len(self.batch_rewards)}: its batch's mean reward {mean:.4f}"
                           f"{best_text}", highlight=False, soft_wrap=True)

    def plain_line(self, record: TrialRecord) -> str:
        """`trial 3/20 reward 0.71 accuracy 0.93 latency 0.12 ms, 00:41 elapsed, ETA 04:05`."""
        finished = self.done + self.failed
        elapsed = time.monotonic() - self.started
        eta = elapsed / finished * (self.total - finished) if finished else 0.0

        def clock(seconds: float) -> str:
            minutes, secs = divmod(int(seconds), 60)
            return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes:02d}:{secs:02d}"

        def number(value: float | None, spec: str) -> str:
            return "-" if value is None else format(value, spec)

        return (f"trial {record.trial}/{self.total} reward {number(record.reward, '.4f')} accuracy "
                f"{number(record.accuracy, '.4f')} latency {number(record.latency_ms, '.3f')} ms, "
                f"{clock(elapsed)} elapsed, ETA {clock(eta)}")

    def on_search_end(self, records: list[TrialRecord]) -> None:
        self._stop()
        failed = sum(not r.ok for r in records)
        self.console.print(f"{len(records)} trials, {failed} failed")
        if any(r.ok for r in records):
            self.console.print(topk_rich_table(records, self.top_k))
        if self.target_ms is not None and any(r.ok for r in records):
            self.console.print(answer_line(records, self.target_ms), highlight=False, soft_wrap=True)
        if self.batch_rewards:
            self.console.print(controller_line(self.batch_rewards), highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._stop()

    def _route_log_lines_above_the_bar(self, streams: tuple) -> None:
        """Rich prints what is written to sys.stdout/stderr above the live bar, but logging handlers (Hydra's
        console handler) keep the stream they were made with and would write over the bar: point them at rich's
        proxies while the bar is shown."""
        proxies = {streams[0]: sys.stdout, streams[1]: sys.stderr}
        self._rerouted = []
        for logger in (logging.getLogger(), logging.getLogger("nni")):
            for handler in logger.handlers:
                stream = getattr(handler, "stream", None)
                if not isinstance(handler, logging.FileHandler) and stream in proxies and proxies[stream] is not stream:
                    self._rerouted.append((handler, handler.setStream(proxies[stream])))

    def _stop(self) -> None:
        if self.progress is not None:
            for handler, stream in getattr(self, "_rerouted", []):
                handler.setStream(stream)
            self._rerouted = []
            self.progress.stop()
            self.progress = None
