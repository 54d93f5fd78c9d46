"""Hydra's `instantiate`, with the user's error kept whole.

Hydra wraps whatever a constructor raises in an `InstantiationException` whose text carries the whole
config path and a hint about HYDRA_FULL_ERROR. Our constructors raise one-line `MnasNniError`s that name
the fix; those are re-raised as they are, and any other construction failure becomes one `ConfigError`.
"""

from __future__ import annotations

from typing import Any

import hydra.utils
from hydra.errors import InstantiationException

from mnas_core.errors import ConfigError, MnasNniError


def instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, MnasNniError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        root = err
        while root.__cause__ is not None:
            root = root.__cause__  # type: ignore[assignment]
        first_line = (str(root).strip().splitlines() or [type(root).__name__])[0]
        target = node.get("_target_", "?") if hasattr(node, "get") else "?"
        raise ConfigError(f"cannot build {what} ({target}): {first_line}") from None
