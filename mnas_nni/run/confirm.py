"""Confirmation after a search: the top-k architectures trained stand-alone and measured, as the proxy evaluator
does, so a cheap score (evaluator=supernet) is checked by the paper's own one before anything is ranked on it.

Each confirmed record in trials.jsonl gets `confirmed_accuracy`, `confirmed_latency_ms` and `confirmed_reward`
(written as soon as it is known, so a killed confirmation resumes with the rest); `records.top_k` then ranks by
the confirmed reward.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mnas_core.errors import ConfigError, MnasNniError, one_line
from mnas_nni.run.records import TrialLog, TrialRecord, load_records, top_k

log = logging.getLogger(__name__)
DEFAULT_SUPERNET_K = 5


def confirm_count(search: dict[str, Any], evaluator_kind: str) -> int:
    """`search.confirm_top_k`; null means 5 after a supernet search and 0 after any other."""
    value = search.get("confirm_top_k")
    if value is None:
        return DEFAULT_SUPERNET_K if evaluator_kind == "supernet" else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"search.confirm_top_k must be an integer >= 0 or null, got {value!r}")
    return value


def confirm_top_k(context: Any, trial_log: str | Path, k: int) -> list[TrialRecord]:
    """Train the `k` best records of `trial_log` (by search reward) stand-alone with `train.*`, measure them on
    the device and write their confirmed scores back into the log. Returns every record of the log."""
    from evaluators.proxy import ProxyEvaluator
    from search_spaces.arch import ArchSpec
    from search_spaces.builder import build_model

    log_file = TrialLog(trial_log)
    records = load_records(trial_log)
    if k <= 0:
        return records
    proxy = ProxyEvaluator(context)
    num_classes = int(context.datamodule.num_classes)
    for rank, record in enumerate(top_k(records, k, key="reward"), start=1):
        if record.confirmed_reward is not None or record.arch is None:
            continue  # confirmed before a kill
        arch = ArchSpec.from_dict(record.arch)
        torch.manual_seed(context.seed)  # the initial weights a stand-alone trial of this seed starts from
        try:
            metric = proxy.evaluate(build_model(arch, num_classes=num_classes), arch.key)
        except MnasNniError as err:
            log.warning("confirm: trial %d failed stand-alone: %s", record.trial, one_line(err))
            continue
        record.confirmed_accuracy = float(metric["accuracy"])
        record.confirmed_latency_ms = float(metric["latency_ms"])
        record.confirmed_reward = float(context.reward(metric["accuracy"], metric["latency_ms"]))
        log.info("confirm %d/%d: trial %d search reward %.4f, confirmed %.4f", rank, k, record.trial,
                 record.reward, record.confirmed_reward)
        log_file.rewrite(records)
    return records
