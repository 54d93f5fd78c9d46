"""Stopping a search on purpose: the first Ctrl-C (SIGINT) or SIGTERM stops it cleanly, a second exits at once.

The first signal cuts the running trial short. Inside a trial it raises `TrialInterrupted`, which is not a
KeyboardInterrupt, so Lightning lets it through instead of turning it into SystemExit(1) (which NNI's
continue-on-failure would record as one more failed trial); the trial entry point turns it back into a
KeyboardInterrupt, NNI marks the model interrupted and stops. Between trials it raises KeyboardInterrupt.
Either way the search ends with `SearchStopped`: the summary is written, the tracker marks the run KILLED,
the checkpoint of the last finished trial stands, and the CLI prints the resume command and exits 128 + signal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mnas_core.errors import MnasNniError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrialInterrupted(BaseException):
    """Raised inside a running trial by the first stop signal."""


class SearchStopped(KeyboardInterrupt):
    """The search stopped on a signal; `exit_code` is 128 + the signal number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


@dataclass
class StopState:
    signum: int | None = None
    in_trial: bool = False
    abort_reason: str | None = None  # set when the search stops itself (trials in a row failed for one reason)
    deferring: bool = False  # a finished trial is being recorded: a signal waits until that is done
    pending: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


STATE = StopState()


@contextmanager
def trial_running() -> Iterator[None]:
    """Marks the span of one trial in this process (the first signal then cuts the trial short)."""
    STATE.in_trial = True
    try:
        yield
    finally:
        STATE.in_trial = False


def _handler(signum: int, frame: object) -> None:
    if STATE.requested:  # the second signal: no more cleaning up
        os._exit(128 + signum)
    if STATE.deferring:
        STATE.pending = signum
        return
    STATE.signum = signum
    if STATE.abort_reason is None:
        print(f"\n{signal.Signals(signum).name}: stopping the search (the running trial is cut short and re-run "
              "on resume); press Ctrl-C again to exit at once", file=sys.stderr, flush=True)
    raise TrialInterrupted() if STATE.in_trial else KeyboardInterrupt()


@contextmanager
def stop_on_signals() -> Iterator[StopState]:
    """Install the handlers for the span of a search (main thread only; elsewhere nothing changes)."""
    STATE.signum, STATE.in_trial, STATE.abort_reason, STATE.deferring, STATE.pending = None, False, None, False, None
    if threading.current_thread() is not threading.main_thread():
        yield STATE
        return
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    try:
        yield STATE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold a stop signal back while a finished trial is being recorded (trial log, tracker, console), so a stop
    never leaves a trial in one record and not in another; it takes effect right after. (Blocking the signal
    with pthread_sigmask would not do: the kernel hands a process signal to any thread that does not block it,
    and Python then runs the handler in the main thread at once.)"""
    if threading.current_thread() is not threading.main_thread() or STATE.deferring:
        yield
        return
    STATE.deferring = True
    try:
        yield
    finally:
        STATE.deferring = False
        if STATE.pending is not None:
            signum, STATE.pending = STATE.pending, None
            _handler(signum, None)


def abort(reason: str) -> None:
    """Stop the search from inside (any thread) the way a Ctrl-C would, ending it with `reason`."""
    STATE.abort_reason = reason
    signal.raise_signal(signal.SIGINT)


class SearchAborted(MnasNniError):
    """The search stopped itself: its last trials all failed for the same reason."""


def raise_if_stopped() -> None:
    if STATE.abort_reason is not None:
        raise SearchAborted(STATE.abort_reason)
    if STATE.requested:
        raise SearchStopped(STATE.signum)  # type: ignore[arg-type]
