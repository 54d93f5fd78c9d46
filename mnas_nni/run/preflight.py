"""What can be checked before the first trial is: a setting that would fail every trial fails the search at
startup, in one line that names the fix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from mnas_core.errors import ConfigError, DatasetNotFoundError, one_line
from mnas_nni.run.disk_space import free_space, is_disk_full, nearest_existing

SAMPLES_DECODED = 4  # training samples read at startup (spread over the split): corrupt files fail here


def check_writable(folder: Path, what: str, fix: str) -> None:
    """`folder` (created if missing) accepts a new file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mnas-write-check-"):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {folder} is not writable ({err.strerror or one_line(err)}); {fix}") from None


def check_hydra_output_dir(argv: list[str], cwd: Path) -> None:
    """Hydra makes its run folder before any of our code runs and fails there with a traceback; check the folder
    this command line names (`hydra.run.dir=`, or `hydra.sweep.dir=` with -m/--multirun; by default a folder under
    the working directory) first. The part before a `${...}` interpolation is what can be checked."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+") == key and "=" in a]
    default = "multirun" if multirun else "outputs"
    folder = Path(given[-1].split("${", 1)[0] or ".") if given else Path(default)
    folder = folder if folder.is_absolute() else cwd / folder
    existing = nearest_existing(folder)
    fix = f"set {key} to a writable folder" if given else f"run from a writable folder or set {key}"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".mnas-write-check-") as probe:
            probe.write(b"\0" * 65536)  # a full disk still takes an empty file: write what Hydra's copies need
            probe.flush()
    except OSError as err:
        if is_disk_full(err):
            raise ConfigError(f"the disk of the run folder {folder} is full ({free_space(existing)}); free space, "
                              f"or set {key} to a folder on another disk") from None
        raise ConfigError(f"the run folder {folder} cannot be created ({existing} takes no new file: "
                          f"{err.strerror or one_line(err)}); {fix}") from None


def exit_if_output_dir_unwritable() -> None:
    """For a Hydra entry point's `main()`: one line and exit 2 instead of Hydra's traceback."""
    import sys

    try:
        check_hydra_output_dir(sys.argv[1:], Path.cwd())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def check_folders(run_dir: Path, latency: dict[str, Any]) -> None:
    check_writable(run_dir, "the run directory", "set hydra.run.dir to a writable folder")
    # NNI writes its experiment manifest under $HOME whatever the working directory (nni/experiment/config).
    home = Path(os.path.expanduser("~"))
    check_writable(home / "nni-experiments", "NNI's manifest folder",
                   "NNI always writes ~/nni-experiments: run with HOME set to a writable folder")
    if latency.get("cache_path"):
        check_writable(Path(str(latency["cache_path"])).expanduser().parent, "the latency cache folder",
                       "set latency.cache_path to a file in a writable folder, or latency.cache_path=null")
    check_writable(Path(str(latency["lock_dir"])).expanduser(), "the latency lock folder",
                   "set latency.lock_dir to a writable folder")


def check_data_decodes(datamodule: Any) -> None:
    """Read a few training samples: an unreadable or corrupt dataset fails here, not in every trial."""
    dataset = getattr(datamodule, "train_dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__"):
        return
    size = len(dataset)
    if size == 0:
        raise DatasetNotFoundError("the training split is empty; check data.root (and data.holdout)")
    for index in sorted({round(i * (size - 1) / max(1, SAMPLES_DECODED - 1)) for i in range(SAMPLES_DECODED)}):
        try:
            dataset[index]
        except Exception as err:  # noqa: BLE001 - any decoder error means the same to the user
            raise DatasetNotFoundError(f"training sample {index} cannot be read ({type(err).__name__}: "
                                       f"{one_line(err)}); check the files under data.root") from None
