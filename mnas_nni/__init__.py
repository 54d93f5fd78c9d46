"""mnas-nni: platform-aware neural architecture search (MnasNet) on NNI 3.0."""

from mnas_nni.nni_adapter import silence_import_warnings

silence_import_warnings()

__version__ = "0.1.0"

from mnas_nni.api import SearchResult, search

__all__ = ["SearchResult", "__version__", "search"]
