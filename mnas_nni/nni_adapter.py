"""Every workaround for NNI 3.0 lives here, each with a comment naming the NNI behaviour it works around.

NNI 3.0 is the last release (upstream archived in 2024); we run it on torch 2.13, numpy 2 and
pytorch-lightning 2.x, which it predates.
"""

from __future__ import annotations

import warnings


def silence_import_warnings() -> None:
    """NNI's `nas/nn/pytorch/layers.py` wraps every public name of `torch.nn` at import and warns for each one
    that is not an `nn.Module` subclass (`Buffer`, `LinearCrossEntropyOptions` in torch 2.13). The wrapping
    is harmless; the warnings are noise on every start."""
    warnings.filterwarnings("ignore", message=r".* is found to be not a nn\.Module", category=RuntimeWarning)
