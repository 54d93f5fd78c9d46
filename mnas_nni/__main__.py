"""`python -m mnas_nni [overrides]`: run an MNAS search from the composed Hydra config in conf/."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnas_core.errors import MnasNniError


def config_dir() -> str:
    """conf/ ships inside the wheel as mnas_nni/conf; an editable install reads the repository's conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    if (packaged / "config.yaml").is_file():
        return str(packaged)
    return str(Path(__file__).resolve().parent.parent / "conf")


FAILED_JOBS: list[int] = []  # a sweep's jobs that ended in an error (Hydra's basic launcher runs them in this process)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mnas_nni.run.hydra_files import mask_job_copies
    from mnas_nni.run.search import run_search
    from mnas_nni.run.stopping import SearchStopped

    mask_job_copies()  # Hydra wrote its copies of the config, secrets as typed: mask them at once
    hydra_cfg = HydraConfig.get()

    try:
        run_search(cfg)
    except MnasNniError as err:
        run_dir = getattr(err, "run_dir", None)  # a search that stopped itself can be resumed once fixed
        hint = f"; then resume it with: python -m mnas_nni {shlex.quote(f'search.resume={run_dir}')}" if run_dir else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one bad job of a sweep must not stop the others
            FAILED_JOBS.append(hydra_cfg.job.num)
            return
        sys.exit(2)
    except SearchStopped as stopped:
        run_dir = getattr(stopped, "run_dir", None)
        resume = shlex.quote(f"search.resume={run_dir}")  # a folder with a space pastes back as one argument
        print(f"search stopped ({stopped}); resume it with: python -m mnas_nni {resume}",
              file=sys.stderr)
        sys.exit(stopped.exit_code)


def own_resumed_run_dir(argv: list[str]) -> None:
    """A resume owns its run directory before Hydra starts: Hydra writes its copies of the config into the run's
    `.hydra/` at once, so a second resume of a running search would rewrite them under the first; it stops here
    instead, in one line naming the process that holds the run (the search takes the same lock again)."""
    from mnas_core.errors import ResumeError
    from mnas_nni.run.lock import own_run_dir
    from mnas_nni.run.resume import resumed_run_dir

    run_dir = resumed_run_dir(argv, Path.cwd())
    if run_dir is not None and run_dir.is_dir():
        try:
            own_run_dir(run_dir)
        except ResumeError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)


def main() -> None:
    from mnas_nni.plugins import register_search_path
    from mnas_nni.run.preflight import exit_if_output_dir_unwritable
    from mnas_nni.run.resume import with_run_choices

    register_search_path()  # pip-installed plugins' config words
    exit_if_output_dir_unwritable()  # before Hydra makes the folder (its failure there is a traceback)
    sys.argv[1:] = with_run_choices(sys.argv[1:], Path(config_dir()), Path.cwd())  # device.key_file=... on a resume
    own_resumed_run_dir(sys.argv[1:])
    _main()
    if FAILED_JOBS:
        print(f"{len(FAILED_JOBS)} job(s) of the sweep failed ({'; '.join(f'job {n}' for n in FAILED_JOBS)})",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
