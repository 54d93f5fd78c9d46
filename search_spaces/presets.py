"""The paper's networks as data (block strings from the official TensorFlow MnasNet code)."""

from __future__ import annotations

from mnas_core.errors import ArchitectureError
from search_spaces.arch import ArchSpec
from search_spaces.block_string import decode_block

PRESET_BLOCKS: dict[str, dict] = {
    "mnasnet_a1": {"blocks": [
        "r1_k3_s11_e1_i32_o16_noskip", "r2_k3_s22_e6_i16_o24", "r3_k5_s22_e3_i24_o40_se0.25",
        "r4_k3_s22_e6_i40_o80", "r2_k3_s11_e6_i80_o112_se0.25", "r3_k5_s22_e6_i112_o160_se0.25",
        "r1_k3_s11_e6_i160_o320",
    ]},
    "mnasnet_b1": {"blocks": [
        "r1_k3_s11_e1_i32_o16_noskip", "r3_k3_s22_e3_i16_o24", "r3_k5_s22_e3_i24_o40",
        "r3_k5_s22_e6_i40_o80", "r2_k3_s11_e6_i80_o96", "r4_k5_s22_e6_i96_o192",
        "r1_k3_s11_e6_i192_o320_noskip",
    ]},
    # The official small model declares i16 on its first block while the stem has 8 filters; TF only uses
    # the declared value to decide the residual (16 != 8: none), so `_noskip` states that explicitly here.
    "mnasnet_small": {"stem_filters": 8, "dropout": 0.0, "blocks": [
        "r1_k3_s11_e1_i16_o8_noskip", "r1_k3_s22_e3_i8_o16", "r2_k3_s22_e6_i16_o16",
        "r4_k5_s22_e6_i16_o32_se0.25", "r3_k3_s11_e6_i32_o32_se0.25", "r3_k5_s22_e6_i32_o88_se0.25",
        "r1_k3_s11_e6_i88_o144",
    ]},
    # MobileNetV2 1.0 (t, c, n, s) rows written as blocks; ReLU stands in for ReLU6 as everywhere in the space.
    "mobilenet_v2": {"blocks": [
        "r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r3_k3_s22_e6_i24_o32",
        "r4_k3_s22_e6_i32_o64", "r3_k3_s11_e6_i64_o96", "r3_k3_s22_e6_i96_o160",
        "r1_k3_s11_e6_i160_o320",
    ]},
}

PRESETS = tuple(PRESET_BLOCKS)


def load_preset(name: str) -> ArchSpec:
    if name not in PRESET_BLOCKS:
        raise ArchitectureError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or give a JSON file")
    spec = dict(PRESET_BLOCKS[name])
    blocks = tuple(decode_block(b) for b in spec.pop("blocks"))
    return ArchSpec(blocks=blocks, name=name, **spec)


def load_arch(name_or_path: str) -> ArchSpec:
    """A preset name or the path of an architecture JSON file."""
    if name_or_path in PRESET_BLOCKS:
        return load_preset(name_or_path)
    return ArchSpec.load(name_or_path)
