"""mnas-nni: platform-aware neural architecture search (MnasNet) on NNI 3.0.

Grouped by role: this top level holds the entry points and public surfaces (the commands, `api`, `plugins`,
NNI's trial entry `trial`, and `nni_adapter` with every NNI workaround); `run/` is a search's run and life cycle,
`tracking/` records and shows it (MLflow, reports, console), `exporting/` holds the parts of an export.
Paths of before the grouping still import (`moved_modules`).
"""

from mnas_nni import moved_modules
from mnas_nni.nni_adapter import silence_import_warnings

moved_modules.install()  # `mnas_nni.records` and the other paths of before the grouping still import
silence_import_warnings()

__version__ = "0.1.0"

from mnas_nni.api import SearchAborted, SearchResult, SearchStopped, search

__all__ = ["SearchAborted", "SearchResult", "SearchStopped", "__version__", "search"]
