"""The manual: it builds with `mkdocs build --strict` (a broken link or a missing page fails), its configuration
reference is what conf/ says, the README stays a front page, and the notebook in docs/ runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mnas_nni.config_reference import render

ROOT = Path(__file__).resolve().parents[1]


def test_the_manual_builds_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()
    assert (tmp_path / "site" / "assets" / "ground_truth_fashion_mnist.png").is_file()  # from bench/results/


def test_the_configuration_reference_is_generated_from_conf():
    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    assert page == render(ROOT / "conf"), "regenerate: python -m mnas_nni.config_reference > docs/reference/config.md"
    for group in ("strategy", "reward", "device", "data", "evaluator", "search_space", "tracking", "train"):
        for option in (ROOT / "conf" / group).glob("*.yaml"):
            assert f"### `{group}={option.stem}`" in page


def test_the_readme_is_a_front_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 120
    assert "bash .ci/setup && .venv/bin/python -m mnas_nni" in readme and "bash .ci/run" in readme
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links and all((ROOT / link).exists() for link in links if not link.startswith("http")), links


def test_the_benchmark_figures_moved_to_the_benchmarks_page():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    for figure in ("0.31 and 0.21", "96.0 % within\n+-5 %", "0.9689", "1498 s / 738 s", "333 images/s", "0.668"):
        assert figure.replace("\n", " ") in page.replace("\n", " "), figure


@pytest.mark.slow
def test_the_notebook_in_the_docs_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.chdir(tmp_path)
    notebook = nbformat.read(ROOT / "docs" / "notebooks" / "search.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert outputs[-1]["data"]["text/plain"] == "3"  # the second search in the same kernel
