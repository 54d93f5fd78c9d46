"""The configuration reference, generated from conf/ so it cannot drift from it.

    python -m mnas_nni.config_reference > docs/reference/config.md

Each config group is a section, each option (a file of the group) a table of its keys with their defaults and
the comments written beside them; a file's leading comment is its description. tests/test_docs.py checks that
the committed page is what this prints.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")
HEADER = """# Configuration reference

Every setting of `python -m mnas_nni` (and of `mnas_nni.search([...])`), generated from `conf/` by
`python -m mnas_nni.config_reference`. A group is picked by one word (`strategy=evolution`); any key is set
with a dotted override (`train.epochs=2`, `search.max_trials=50`). Print the composed config with
`python -m mnas_nni --cfg job`.
"""


def leading_comment(lines: list[str]) -> str:
    text: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        text.append(line.lstrip("#").strip())
    return " ".join(t for t in text if t)


def key_rows(lines: list[str]) -> list[tuple[str, str, str]]:
    """(dotted key, default, comment) for every mapping key; block lists show as `[...]`."""
    rows: list[tuple[str, str, str]] = []
    path: list[tuple[int, str]] = []
    for line in lines:
        match = KEY_LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        key = ".".join([p[1] for p in path] + [match["key"]])
        value = match["value"].strip()
        if value == "":
            path.append((indent, match["key"]))
            nested = (match["comment"] or "").strip()
            if nested:
                rows.append((key, "", nested))
            continue
        rows.append((key, value, (match["comment"] or "").strip()))
    return rows


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def option_section(title: str, path: Path) -> str:
    lines = path.read_text().splitlines()
    out = [f"### `{title}`", ""]
    about = leading_comment(lines)
    if about:
        out += [about, ""]
    rows = [r for r in key_rows(lines) if r[0] not in ("defaults",) and not r[0].startswith("hydra")]
    if rows:
        out += ["| key | default | |", "|---|---|---|"]
        out += [f"| `{key}` | `{cell(value)}` | {cell(comment)} |" if value else f"| `{key}` | | {cell(comment)} |"
                for key, value, comment in rows]
        out.append("")
    return "\n".join(out)


def render(conf_dir: Path) -> str:
    parts = [HEADER, "## Top level (`conf/config.yaml`)", "", option_section("config.yaml", conf_dir / "config.yaml")]
    for group in sorted(p for p in conf_dir.iterdir() if p.is_dir() and not p.name.startswith("_")):
        options = sorted(group.glob("*.yaml"))
        word = f"+{group.name}" if group.name == "experiment" else group.name
        parts += [f"## `{word}=`: {', '.join(o.stem for o in options)}", ""]
        parts += [option_section(f"{word}={option.stem}", option) for option in options]
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    from mnas_nni.__main__ import config_dir

    sys.stdout.write(render(Path(config_dir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
