"""The MnasNet search space: paper figures, sampling through NNI, architectures as data."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from mnas_core.errors import ArchitectureError, ConfigError
from search_spaces import ArchSpec, MnasSpace, build_model, decode_block, load_preset, profile_model
from search_spaces.presets import PRESET_BLOCKS


@pytest.mark.parametrize(
    "name, params_m, params_tol, macs_m, macs_tol",
    [
        ("mnasnet_a1", 3.9, 0.01, 312, 0.03),
        ("mnasnet_small", 2.0, 0.05, 68, 0.05),
        ("mobilenet_v2", 3.5, 0.01, 300, 0.03),
        ("mnasnet_b1", 4.4, 0.01, None, None),
    ],
)
def test_presets_match_the_paper(name, params_m, params_tol, macs_m, macs_tol):
    profile = profile_model(build_model(load_preset(name), num_classes=1000), resolution=224)
    assert profile.params / 1e6 == pytest.approx(params_m, rel=params_tol)
    if macs_m is not None:
        assert profile.macs / 1e6 == pytest.approx(macs_m, rel=macs_tol)


@pytest.mark.parametrize("name", list(PRESET_BLOCKS))
def test_block_strings_round_trip(name):
    for text in PRESET_BLOCKS[name]["blocks"]:
        assert decode_block(text).to_string() == text


def test_block_string_semantics():
    block = decode_block("r3_k5_s22_e3_i24_o40_se0.25")
    assert (block.op, block.repeats, block.kernel, block.stride, block.expand) == ("mbconv", 3, 5, 2, 3)
    assert (block.in_filters, block.out_filters, block.se_ratio, block.skip) == (24, 40, 0.25, "identity")
    assert decode_block("r1_k3_s11_e1_i32_o16_noskip").op == "dsconv"
    assert decode_block("conv_r1_k3_s11_e1_i8_o8_poolskip").skip == "pool"


@pytest.mark.parametrize(
    "text, token",
    [("r3_k5_x22_e3_i24_o40", "x22"), ("r3_k5_s12_e3_i24_o40", "s12"), ("r3_k5_s22_e3_i24", "o"), ("", "")],
)
def test_malformed_block_string_names_the_token(text, token):
    with pytest.raises(ArchitectureError) as err:
        decode_block(text)
    assert token in str(err.value) and "\n" not in str(err.value)


def test_malformed_arch_json_is_a_clear_error(tmp_path):
    bad = tmp_path / "arch.json"
    bad.write_text('{"blocks": ["r1_k3_s11_e1_i32_o16",]}')
    with pytest.raises(ArchitectureError, match="malformed"):
        ArchSpec.load(bad)
    with pytest.raises(ArchitectureError, match="unknown architecture key"):
        ArchSpec.from_dict({"blocks": ["r1_k3_s11_e1_i32_o16"], "eval": "__import__('os')"})
    with pytest.raises(ArchitectureError, match="at least one block"):
        ArchSpec.from_dict({"blocks": []})


def test_residual_follows_official_rules():
    model = build_model(load_preset("mnasnet_a1"))
    first, second = model.blocks[1][0], model.blocks[1][1]
    assert not first.residual  # stride 2 and 16 -> 24
    assert second.residual  # stride 1 and 24 -> 24
    assert not model.blocks[0][0].residual  # _noskip


@pytest.fixture(scope="module")
def space() -> MnasSpace:
    return MnasSpace(num_classes=10, resolution=32)


def test_simplify_exposes_readable_categorical_decisions(space):
    decisions = space.simplify()
    assert len(decisions) == 7 * 6
    assert "block3/kernel" in decisions and list(decisions["block3/kernel"].values) == [3, 5]
    assert list(decisions["block1/conv_op"].values) == ["conv", "dsconv", "mbconv3", "mbconv6"]
    # 0.75/1.0/1.25 x 24 = 18/24/30, rounded to multiples of 8 never down by more than 10%: 24/24/32
    assert list(decisions["block2/filters"].values) == [24, 32]


def _sample(space: MnasSpace, rng: random.Random) -> dict:
    return {label: rng.choice(list(m.values)) for label, m in space.simplify().items()}


def _fingerprint(model: torch.nn.Module) -> str:
    return repr(model) + repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()])


def test_random_samples_build_train_and_round_trip(space, tmp_path):
    rng = random.Random(0)
    for index in range(100):
        sample = _sample(space, rng)
        arch = space.arch_from_sample(sample)
        torch.manual_seed(index)
        model = space.freeze(sample)
        out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)
        out.sum().backward()
        path = arch.save(tmp_path / "arch.json")
        reloaded = ArchSpec.load(path)
        assert reloaded == arch
        torch.manual_seed(index)
        rebuilt = build_model(reloaded, num_classes=10)
        assert _fingerprint(rebuilt) == _fingerprint(model)
        rebuilt.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 32, 32)
        model.eval(), rebuilt.eval()
        assert torch.equal(model(x), rebuilt(x))


def test_nni_sampling_paths(space):
    frozen = space.random()
    assert isinstance(frozen, torch.nn.Module) and frozen(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    from nni.nas.space import SimplifiedModelSpace

    executable = SimplifiedModelSpace.from_model(space).random()
    model = executable.executable_model()
    assert _fingerprint(model) == _fingerprint(space.freeze(executable.sample))


def test_each_decision_changes_the_module_alone(space):
    rng = random.Random(1)
    decisions = space.simplify()
    contexts = [_sample(space, rng) for _ in range(10)]
    for label, mutable in decisions.items():
        changed = False
        for context in contexts:
            base = _fingerprint(space.freeze(context))
            for value in mutable.values:
                if value != context[label] and _fingerprint(space.freeze({**context, label: value})) != base:
                    changed = True
                    break
            if changed:
                break
        assert changed, f"{label} never changes the module"


def test_zero_blocks_is_a_config_error():
    with pytest.raises(ConfigError, match="at least one block"):
        MnasSpace(base_blocks=[])


def test_describe_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "mnas_nni.describe", "mnasnet_a1", "--json"], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    assert isinstance(info["params"], int) and isinstance(info["macs"], int)
    assert info["params"] == pytest.approx(3.9e6, rel=0.01)


def test_describe_cli_bad_arch_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mnas_nni.describe", str(tmp_path / "nope.json")],
                         capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
