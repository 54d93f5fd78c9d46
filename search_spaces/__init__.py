"""Search spaces: the MnasNet factorized hierarchical space (architectures as data, one builder, an NNI model
space) and the NAS-Bench-201 cell space (`nb201`)."""

import warnings

with warnings.catch_warnings():
    # NNI wraps every torch.nn name at import and warns for the non-modules of torch 2.13; harmless (the app
    # silences it for good in mnas_nni/nni_adapter.py). Imported here first so a plugin user sees no noise.
    warnings.filterwarnings("ignore", message=r".* is found to be not a nn\.Module", category=RuntimeWarning)
    import nni.nas.nn.pytorch  # noqa: F401

from search_spaces.arch import ArchSpec, BlockSpec
from search_spaces.block_string import decode_block, encode_block
from search_spaces.builder import MnasNet, build_model
from search_spaces.nb201 import Nb201Arch, Nb201Space
from search_spaces.presets import PRESETS, load_arch, load_preset
from search_spaces.profile import Profile, profile_model
from search_spaces.space import MnasSpace, SpaceConfig

__all__ = [
    "PRESETS",
    "ArchSpec",
    "BlockSpec",
    "MnasNet",
    "MnasSpace",
    "Nb201Arch",
    "Nb201Space",
    "Profile",
    "SpaceConfig",
    "build_model",
    "decode_block",
    "encode_block",
    "load_arch",
    "load_preset",
    "profile_model",
]
