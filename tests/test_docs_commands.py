"""Every `python -m mnas_nni ...` command the README and the manual show composes: its config words and keys
exist (Hydra's own composition, in this process). Commands that need a user's own package are covered by
tests/test_plugins.py; the GPU, phone, board and ImageNet ones compose here but need hardware to run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
HYDRA_APPS = ("mnas_nni", "mnas_nni.train", "mnas_nni.latency_table")
NOT_HERE = {"my_pkg": "a user's plugin package: tests/test_plugins.py builds and runs one",
            "my_random": "a user's plugin package: tests/test_plugins.py builds and runs one"}


def shown_commands() -> list[tuple[str, list[str]]]:
    """(page, argv after `python -m`) of every command in a code block: continuation lines joined, comments cut."""
    found: list[tuple[str, list[str]]] = []
    for page in PAGES:
        text = re.sub(r"\\\n\s*", " ", page.read_text())
        for line in text.splitlines():
            stripped = line.strip()
            match = re.search(r"(?:^|\s|/)python -m (\S+.*)$", stripped)
            if not match or not (line.startswith("    ") or stripped.startswith(("python", "bash", "taskset"))):
                continue
            argv = shlex.split(re.split(r"\s#\s", match.group(1))[0])
            if argv[1:2] == ["..."] and found and found[-1][1][0] == argv[0]:  # `...`: the command shown above
                argv = [*found[-1][1], *argv[2:]]
            found.append((page.relative_to(ROOT).as_posix(), argv))
    return found


def overrides_of(argv: list[str]) -> list[str]:
    """The Hydra overrides of a shown command; a sweep (`-m a=x,y`) composes with each key's first value."""
    sweep = "-m" in argv
    out = []
    for arg in argv[1:]:
        if "=" not in arg or arg.startswith("-"):
            continue  # flags, subcommands, `...`
        key, value = arg.split("=", 1)
        value = re.sub(r"<[^>]+>", "x", value)  # outputs/<date>/<time>: any folder composes
        if sweep and "," in value and not value.startswith("["):
            value = value.split(",")[0]
        out.append(f"{key}={value}")
    return out


COMMANDS = [(page, argv) for page, argv in shown_commands() if argv[0] in HYDRA_APPS]


def test_the_pages_show_commands_of_each_app():
    assert {argv[0] for _, argv in COMMANDS} == set(HYDRA_APPS) and len(COMMANDS) > 30


@pytest.mark.parametrize(("page", "argv"), COMMANDS, ids=[f"{p}:{' '.join(a)[:60]}" for p, a in COMMANDS])
def test_a_shown_command_composes(page, argv):
    from mnas_nni.latency_table import compose

    reason = next((why for marker, why in NOT_HERE.items() if marker in " ".join(argv)), None)
    if reason:
        pytest.skip(reason)
    overrides = [o for o in overrides_of(argv) if not o.startswith("hydra.")]
    config = compose(overrides)  # an unknown word or key raises Hydra's error naming it
    assert "search" in config and "strategy" in config, (page, argv)
