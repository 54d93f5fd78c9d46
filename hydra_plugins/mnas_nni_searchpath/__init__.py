"""Hydra finds this module in its `hydra_plugins` namespace package: pip-installed mnas-nni plugins' config
folders join the search path, so their config words (`strategy=my_strategy`) work without `hydra.searchpath`."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class MnasNniPluginSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from mnas_nni.plugins import entry_point_config_modules

        for module in entry_point_config_modules():
            search_path.append(provider=f"mnas-nni-plugin:{module}", path=f"pkg://{module}")
