"""Resuming a killed search: where it was, which trials its strategy already knows, what to replay.

After every finished trial the search checkpoints NNI's experiment (strategy + engine state) and writes
`resume.json` in the run directory: the NNI experiment id and how many recorded trials the checkpoint
covers. A trial recorded after the last checkpoint (killed in between) is not run again: when the
resumed strategy proposes that architecture, its recorded result is replayed instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnas_core.errors import ResumeError
from mnas_nni.moved_modules import moved_targets
from mnas_nni.run.disk_space import write_file_atomically
from mnas_nni.run.records import TrialRecord, load_records
from mnas_nni.tracking.support import MASK

STATE_FILE = "resume.json"
CONFIG_FILE = "config.resolved.yaml"  # the run's resolved config, the space's class count and resolution filled in


def find_run_dir(value: Any, outputs: Path) -> Path:
    """`true` picks the newest run under `outputs` that can be resumed; anything else is a run directory."""
    if value is True or str(value).lower() == "true":
        candidates = sorted(outputs.glob(f"**/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ResumeError(f"search.resume=true: no resumable search under {outputs}; "
                              "give the run directory of an earlier search")
        return candidates[-1].parent
    run_dir = Path(str(value)).expanduser().resolve()
    if not (run_dir / STATE_FILE).is_file():
        raise ResumeError(f"search.resume={value}: no checkpoint ({STATE_FILE}) in that folder; "
                          "give the run directory (outputs/<date>/<time>) of an earlier search")
    return run_dir


INJECTED_CHOICES: list[str] = []  # the run's config-group choices put on a resume's command line: not "given"


def with_run_choices(argv: list[str], config_dir: Path, cwd: Path) -> list[str]:
    """A resume is composed with its run's own config groups (`device=ssh`, `+experiment=fashion`, from the run's
    .hydra/overrides.yaml), so an override of a key only that group has (`device.key_file=...`) is accepted;
    a group given on this command line wins. Anything unreadable leaves `argv` as it is (the resume reports it)."""
    import yaml

    INJECTED_CHOICES.clear()  # a second search in this process (the Python API) starts with none
    run_dir = resumed_run_dir(argv, cwd)
    if run_dir is None:
        return argv
    try:
        typed = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    except (ResumeError, OSError, yaml.YAMLError):
        return argv
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    INJECTED_CHOICES[:] = [o for o in typed if isinstance(o, str) and "=" in o
                           and (config_dir / o.split("=", 1)[0].lstrip("+")).is_dir()
                           and o.split("=", 1)[0].lstrip("+") not in given]
    return [*INJECTED_CHOICES, *argv]


def resumed_run_dir(argv: list[str], cwd: Path) -> Path | None:
    """The run directory `search.resume=...` on this command line names, if it names one that exists."""
    value = next((a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == "search.resume"), None)
    try:
        return find_run_dir(value, cwd / "outputs") if value is not None else None
    except ResumeError:
        return None


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResumeError(f"cannot read {run_dir / STATE_FILE} ({err}); the search cannot be resumed") from None


def write_state(run_dir: Path, experiment_id: str, checkpointed_trials: int, rerun_failed: bool = False) -> None:
    """`rerun_failed`: the search stopped itself on failures in a row (a lost device): on resume the failed
    trials after the checkpoint are set aside and run again."""
    state = {"experiment_id": experiment_id, "checkpointed_trials": checkpointed_trials, "rerun_failed": rerun_failed}
    write_file_atomically(run_dir / STATE_FILE, json.dumps(state).encode())


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    import yaml

    write_file_atomically(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False).encode())


# What a resume may change without changing what a trial means: the budget, where it is tracked, NNI's manager
# port (the old one may be taken), and resume itself.
RESUME_MAY_CHANGE = ("search.max_trials", "search.port", "search.resume", "search.resume_override", "tracking.")


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def resumed_config(run_dir: Path, current: dict[str, Any], given: list[str] | None = None) -> dict[str, Any]:
    """The original run's config, with what a resume may change taken from `current`. A setting given on this
    command line (`given`: the override keys, e.g. `train.epochs`, `strategy`; None: every setting) that
    differs from the run's is refused in one line, unless `search.resume_override=true` (then `current`)."""
    import yaml

    path = run_dir / CONFIG_FILE
    try:
        original = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return current  # a run from before the file existed: today's config, as before
    if current["search"].get("resume_override"):
        return current
    original = moved_targets(original)  # a run saved before the package was grouped names old module paths

    def was_given(key: str) -> bool:
        return given is None or any(key == g or key.startswith(f"{g}.") for g in given)

    original = _unmasked(original, current, was_given)
    before, now = flatten(original), flatten(current)
    allowed = [k for k in set(before) | set(now) if k.startswith(RESUME_MAY_CHANGE)]
    derived = ("search_space.num_classes", "search_space.resolution")  # filled in from the data

    changed = sorted(k for k in set(before) | set(now) if k not in allowed and k not in derived
                     and was_given(k) and before.get(k) != now.get(k))
    if changed:
        key = changed[0]
        raise ResumeError(f"search.resume: {key} was {before.get(key)!r} in {run_dir}, now {now.get(key)!r}; a "
                          "resume keeps its run's config (only search.max_trials, search.port and tracking.* may change): "
                          "drop the override, or add search.resume_override=true")
    merged = dict(original)
    # What may change is taken from this command only where it was given: the budget, tracking and port the
    # run had otherwise (a default on this command is not a wish to change them); resume itself always.
    merged["search"] = {**original["search"], **{
        k: current["search"][k] for k in current["search"]
        if f"search.{k}".startswith(RESUME_MAY_CHANGE) and (k.startswith("resume") or was_given(f"search.{k}"))}}
    if given is None or "tracking" not in original or any(g.split(".")[0] == "tracking" for g in given):
        merged["tracking"] = current["tracking"]
    masked = masked_keys(merged)
    if masked:  # secrets are never stored: a resume is given each one again
        raise ResumeError(f"search.resume: {masked[0]} is masked in {run_dir / CONFIG_FILE} (secrets and key paths "
                          f"are never stored); give it again on the resume command: {masked[0]}=...")
    if merged["search"]["max_trials"] < original["search"]["max_trials"]:
        raise ResumeError(f"search.resume: search.max_trials may only grow (was {original['search']['max_trials']}, "
                          f"now {merged['search']['max_trials']})")
    return merged


def is_masked(value: Any) -> bool:
    return isinstance(value, str) and (value == MASK or f":{MASK}@" in value)  # a key's value, a URI's password


def _unmasked(original: Any, current: Any, given: Callable[[str], bool], prefix: str = "") -> Any:
    """The run's config with each secret the file holds masked (`***`) taken from today's config where this
    command gave it (elsewhere today's value is a default, not the run's secret: it stays masked)."""
    if isinstance(original, dict):
        current = current if isinstance(current, dict) else {}
        return {k: _unmasked(v, current.get(k), given, f"{prefix}{k}.") for k, v in original.items()}
    if isinstance(original, list):  # e.g. search.machines: a list of machines, each with its key file
        current = current if isinstance(current, list) and len(current) == len(original) else [None] * len(original)
        return [_unmasked(v, c, given, f"{prefix}{i}.") for i, (v, c) in enumerate(zip(original, current))]
    return current if is_masked(original) and given(prefix.rstrip(".")) else original


def masked_keys(config: Any, prefix: str = "") -> list[str]:
    """Every key (`device.key_file`, `search.machines.0.ssh_key_file`) whose value is still masked."""
    if isinstance(config, dict):
        return [k for key, v in config.items() for k in masked_keys(v, f"{prefix}{key}.")]
    if isinstance(config, list):
        return [k for i, v in enumerate(config) for k in masked_keys(v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if is_masked(config) else []


def arch_key(arch: dict[str, Any] | None) -> str:
    return json.dumps(arch, sort_keys=True)


def replay_table(trial_log: Path, checkpointed_trials: int) -> dict[str, dict[str, Any]]:
    """Results recorded after the last checkpoint, keyed by architecture, as the trial's final metric."""
    return {arch_key(r.arch): metric_of(r) for r in load_records(trial_log)
            if r.trial > checkpointed_trials and r.arch}


def metric_of(record: TrialRecord) -> dict[str, Any]:
    metric = {k: v for k, v in record.to_dict().items() if k not in ("trial", "sample", "reward", "finished_at")}
    metric["default"] = record.reward if record.ok else None
    metric["replayed_trial"] = record.trial
    return metric
