"""mnas-nni: platform-aware neural architecture search (MnasNet) on NNI 3.0."""

__version__ = "0.1.0"
