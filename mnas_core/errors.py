"""Errors a user can fix. Each carries a one-line message that names the fix; the CLI prints it without a traceback."""


class MnasNniError(Exception):
    """Base class for every error caused by user input or the environment rather than a bug."""


class ConfigError(MnasNniError, ValueError):
    """A configuration value is invalid (e.g. T <= 0, positive reward exponent, zero blocks)."""


class ArchitectureError(MnasNniError, ValueError):
    """A block string or architecture JSON is malformed."""


class DatasetNotFoundError(MnasNniError, FileNotFoundError):
    """The configured data folder is missing or holds no usable data."""


class DeviceError(MnasNniError, RuntimeError):
    """A latency device could not be reached, refused us, or failed to measure."""


class DeviceTimeoutError(DeviceError, TimeoutError):
    """A latency measurement ran past its time limit."""


class TrialError(MnasNniError, RuntimeError):
    """A trial failed in a way that should be reported and skipped (NaN loss, bad architecture)."""


class ResumeError(MnasNniError, FileNotFoundError):
    """A search cannot be resumed: the checkpoint or run does not exist."""


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its message with whitespace folded, else its type's name."""
    return " ".join(str(err).split())[:limit] or type(err).__name__
