"""A real LocalDevice that appends one line to a file each time it queries its description: the tests count
how often a search reaches the device just to describe it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluators.latency import LocalDevice


class CountingLocalDevice(LocalDevice):
    def __init__(self, count_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count_file = Path(count_file)

    def _describe(self) -> dict[str, Any]:
        with self.count_file.open("a") as f:
            f.write("describe\n")
        return super()._describe()
