"""Find the architecture an export SOURCE names (`python -m mnas_nni.export SOURCE`, `retrain.arch=SOURCE`).

SOURCE is an architecture JSON file, a preset name, a `trials.jsonl` (or the run directory holding it: its best
trial by reward, trial N, or the answer for the search's latency target), or an MLflow run (`runs:/<id>`, a
trial's run id, or a search's parent run id: its best trial by reward). `resolve_source` also returns what the
search built its space with (num_classes, resolution); `search_provenance` names the search SOURCE belongs to.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnas_core.errors import ArchitectureError, ConfigError
from mnas_nni.run.records import load_records, target_answer, top_k
from mnas_nni.run.resume import CONFIG_FILE
from search_spaces.arch import ArchSpec
from search_spaces.presets import PRESETS, load_preset

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_source(source: str, trial: int | None = None, tracking_uri: str | None = None,
                   answer: bool = False) -> tuple[ArchSpec, dict[str, Any]]:
    """The architecture SOURCE names, and hints (num_classes, resolution) found next to it. `answer`: a search's
    most accurate trial meeting its latency target instead of its best by reward."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = next((p for p in (path / "trials.jsonl", path / "arch.json") if p.is_file()), path)
    if (trial is not None or answer) and not (path.is_file() and path.suffix == ".jsonl"):
        raise ConfigError("--trial and --answer need a trials.jsonl (or the run directory holding it) as SOURCE")
    if path.is_file():
        if path.suffix == ".jsonl":
            if answer:
                trial = answer_trial(path)
            return from_trial_log(path, trial), hints_from_run_dir(path.parent)
        return ArchSpec.load(path), {}
    if source in PRESETS:
        return load_preset(source), {}
    if source.startswith("runs:/") or RUN_ID.match(source):
        return from_mlflow(source, tracking_uri)
    if path.is_dir():
        raise ArchitectureError(f"folder {path} holds neither trials.jsonl (a search's run directory has one once a "
                                "trial finished) nor arch.json (an exported model); give a run directory, a "
                                f"trials.jsonl, an arch.json or a preset ({', '.join(PRESETS)})")
    raise ArchitectureError(f"{source} is neither a file nor a preset ({', '.join(PRESETS)}) nor an MLflow run id")


def from_trial_log(path: Path, trial: int | None) -> ArchSpec:
    records = load_records(path)
    if trial is None:
        best = top_k(records, 1)
        if not best:
            raise ArchitectureError(f"{path} holds no successful trial with a reward")
        record = best[0]
    else:
        record = next((r for r in records if r.trial == trial), None)
        if record is None:
            raise ArchitectureError(f"trial {trial} is not in {path} ({len(records)} trials)")
    if not record.ok or not record.arch:
        raise ArchitectureError(f"trial {record.trial} in {path} failed ({record.error}); it has no architecture")
    if "arch_str" in record.arch:  # search_space=nb201: a NAS-Bench-201 cell, not a block-string network
        raise ArchitectureError(f"trial {record.trial} is a NAS-Bench-201 cell ({record.arch['arch_str']}); export "
                                "builds search_space=mnas architectures only (build the cell with "
                                "search_spaces.nb201.Nb201Arch)")
    arch = ArchSpec.from_dict(record.arch)
    return arch if arch.name else arch.with_name(f"trial{record.trial}")


def answer_trial(trial_log: Path) -> int:
    """The trial number of a search's answer for its latency target (reward.target_ms of its config)."""
    import yaml

    try:
        target_ms = float(yaml.safe_load((trial_log.parent / CONFIG_FILE).read_text())["reward"]["target_ms"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise ConfigError(f"--answer: no reward.target_ms in {trial_log.parent / CONFIG_FILE}; give --trial N") from None
    answer = target_answer(load_records(trial_log), target_ms)
    if answer is None:
        raise ArchitectureError(f"no trial in {trial_log} meets its latency target T = {target_ms:g} ms")
    return answer.trial


def hints_from_run_dir(run_dir: Path) -> dict[str, Any]:
    """num_classes / resolution as the search built its space (`config.resolved.yaml`, written by the search;
    Hydra's own `.hydra/config.yaml` holds the unresolved `null` class count, so it is only a fallback)."""
    import yaml

    for config_file in (run_dir / CONFIG_FILE, run_dir / ".hydra" / "config.yaml"):
        try:
            config = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        flat = {"search_space.num_classes": (config.get("search_space") or {}).get("num_classes"),
                "search_space.resolution": (config.get("search_space") or {}).get("resolution"),
                "data.resolution": (config.get("data") or {}).get("resolution")}
        runtime = (config.get("device") or {}).get("runtime")  # the runtime the search measured under
        return {**_hints(flat), **({"runtime": runtime} if runtime else {})}
    return {}


def _hints(flat: Mapping[str, Any]) -> dict[str, Any]:
    hints = {}
    for key, name in (("search_space.num_classes", "num_classes"), ("data.resolution", "resolution"),
                      ("search_space.resolution", "resolution")):
        value = flat.get(key)
        if value is not None and str(value).isdigit() and name not in hints:
            hints[name] = int(value)
    return hints


def from_mlflow(ref: str, tracking_uri: str | None) -> tuple[ArchSpec, dict[str, Any]]:
    """A trial run's `arch.json`; for a search's parent run, that of its best child by reward."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mnas_nni.tracking import check_reachable, redact_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri}; pass --tracking-uri (or set MLFLOW_TRACKING_URI)")
    check_reachable(uri, fix="start it or pass --tracking-uri")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    run_id, _, artifact = ref.removeprefix("runs:/").partition("/")
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
        hints = _hints(run.data.params)
        if not artifact:
            children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'",
                                          order_by=["metrics.reward DESC"], max_results=50000)
            if children:
                scored = [c for c in children if c.info.status == "FINISHED" and "reward" in c.data.metrics]
                if not scored:
                    raise ConfigError(f"MLflow run {run_id} has no finished trial with a reward")
                run = max(scored, key=lambda c: c.data.metrics["reward"])
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run.info.run_id, artifact or "arch.json", tmp)
            arch = ArchSpec.load(local)
    except MlflowException as err:
        first = str(err.message if hasattr(err, "message") else err).splitlines()[0]
        raise ConfigError(f"MLflow run {run_id} at {redact_uri(uri)}: {first}") from None
    except OSError as err:
        raise ConfigError(f"MLflow run {run_id} has no {artifact or 'arch.json'} artifact ({err})") from None
    trial = run.data.tags.get("trial")
    return (arch if arch.name or not trial else arch.with_name(f"trial{trial}")), hints


def search_provenance(source: str) -> dict[str, str]:
    """The search SOURCE belongs to: its run directory, or the MLflow run it names."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "trials.jsonl").is_file():
        return {"search_run_dir": str(path.resolve())}
    if path.is_file() and path.suffix == ".jsonl":
        return {"search_run_dir": str(path.parent.resolve())}
    if not path.exists() and (source.startswith("runs:/") or RUN_ID.match(source)):
        return {"mlflow_run": source}
    return {}
