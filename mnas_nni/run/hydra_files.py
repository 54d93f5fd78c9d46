"""Hydra's own copies of a run's config (`<run>/.hydra/config.yaml`, `overrides.yaml`, `hydra.yaml`) hold every
override as typed, passwords and key paths included. They are rewritten masked at the start of the job, as
`config.resolved.yaml` and MLflow are: a resume reads none of them (it takes secrets from its own command)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mnas_nni.run.disk_space import write_file_atomically
from mnas_nni.tracking import MASK, SECRET_WORDS, is_secret, mask_secrets, redact_uri

HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml", "multirun.yaml")  # the last: a sweep's folder
_OVERRIDE = re.compile(r"^([+~]{0,2}[\w.@/-]+)=(.*)$", re.DOTALL)
# `password: x` / `ssh_key_file=x` inside an override's value (a list or dict typed on the command line)
_INLINE_SECRET = re.compile(rf"(\b\w*(?:{'|'.join(SECRET_WORDS)})\w*\s*[:=]\s*)([^,}}\]\s]+)", re.IGNORECASE)


def mask_text(text: str) -> str:
    """One string of Hydra's files: an override of a secret key, inline secret fields, URI passwords."""
    match = _OVERRIDE.match(text)
    if match and is_secret(match.group(1)) and match.group(2) not in ("", "null"):
        return f"{match.group(1)}={MASK}"
    return redact_uri(_INLINE_SECRET.sub(rf"\g<1>{MASK}", text))


def _mask_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask_tree(v) for k, v in mask_secrets(value).items()}
    if isinstance(value, list):
        return [_mask_tree(v) for v in value]
    return mask_text(value) if isinstance(value, str) else value


def mask_hydra_copies(hydra_dir: Path) -> None:
    """Rewrite each of Hydra's files in `hydra_dir` with its secrets masked (atomically; absent ones skipped)."""
    for name in HYDRA_FILES:
        path = Path(hydra_dir) / name
        if not path.is_file():
            continue
        masked = _mask_tree(yaml.safe_load(path.read_text()))
        write_file_atomically(path, yaml.safe_dump(masked, sort_keys=False).encode())


def mask_job_copies() -> None:
    """Mask the running Hydra job's copies: its `.hydra/` folder and, in a sweep, the sweep's multirun.yaml."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.output_subdir:
        mask_hydra_copies(Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        mask_hydra_copies(Path(hydra_cfg.sweep.dir))
