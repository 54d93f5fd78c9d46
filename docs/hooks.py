"""mkdocs hook: the figures the benchmarks page shows are the shipped ones in bench/results/, added to the
site at build time so the docs hold no second copy that could go stale."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"assets/ground_truth_fashion_mnist.png": "bench/results/ground_truth/fashion_mnist.png"}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for uri, source in FIGURES.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / source)))
    return files
