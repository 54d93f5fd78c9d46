"""The real MLflow tracker, which also sends this process a signal once a given trial has been recorded:
the tests stop a search at a known point between two trials."""

from __future__ import annotations

import os
from typing import Any

from mnas_nni.run.records import TrialRecord
from mnas_nni.tracking import MlflowTracker


class SignallingTracker(MlflowTracker):
    def __init__(self, signal_after_trial: int, signal_number: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.signal_after_trial, self.signal_number = signal_after_trial, signal_number

    def on_trial_end(self, record: TrialRecord) -> None:
        super().on_trial_end(record)
        if record.trial == self.signal_after_trial:
            os.kill(os.getpid(), self.signal_number)
