"""mnas-nni: platform-aware neural architecture search (MnasNet) on NNI 3.0."""

from mnas_nni import moved_modules
from mnas_nni.nni_adapter import silence_import_warnings

moved_modules.install()  # `mnas_nni.records` and the other paths of before the grouping still import
silence_import_warnings()

__version__ = "0.1.0"

from mnas_nni.api import SearchAborted, SearchResult, SearchStopped, search

__all__ = ["SearchAborted", "SearchResult", "SearchStopped", "__version__", "search"]
