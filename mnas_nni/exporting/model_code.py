"""The generated model.py of an export: the network in plain PyTorch (needs only torch), same state_dict keys as
search_spaces' MnasNet, holding only the layers the architecture uses and its blocks as a literal table.

`render_model_code` writes it; `import_model_file` loads a written one as a module of its own.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

from search_spaces.arch import ArchSpec
from search_spaces.builder import MnasNet
from search_spaces.layers import PoolShortcut, SqueezeExcite

_HEADER = '''\
"""{title}: a standalone MnasNet-style network exported by mnas-nni. Needs only PyTorch.

    import torch
    from model import build_model
    model = build_model()  # {num_classes} classes, {resolution}x{resolution} RGB input
    model.load_state_dict(torch.load("state_dict.pt"))

{weights_note}

Blocks (official MnasNet block strings):
{block_list}
"""

from __future__ import annotations

import torch
{functional}from torch import nn

NUM_CLASSES = {num_classes}
RESOLUTION = {resolution}
STEM_FILTERS = {stem}
HEAD_FILTERS = {head}
DROPOUT = {dropout!r}
# One block per row: (op, layers, kernel, first stride, expand, out filters, SE ratio, skip)
BLOCKS = [
{block_rows}
]
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's BN momentum 0.99 in PyTorch's convention


class ConvBnAct(nn.Sequential):
    """Conv ('same' padding) -> BN -> optional ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
'''

# The search space's own SqueezeExcite, PoolShortcut and weight init need only torch, nn and F: model.py gets
# their source verbatim, so the exported network cannot drift from the searched one.
_SQUEEZE_EXCITE = "\n\n" + inspect.getsource(SqueezeExcite)
_POOL_SHORTCUT = "\n\n" + inspect.getsource(PoolShortcut)

_SE_LINE = '''\
    if se_ratio > 0:  # SE width: a fraction of the layer's input filters
        layers.append(SqueezeExcite({channels}, max(1, int(in_ch * se_ratio))))
'''

_MBCONV_BODY = '''

def mbconv_body(in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, se_ratio: float) -> nn.Sequential:
    """Inverted bottleneck (expand 1 = depthwise-separable): [1x1 expand] -> depthwise kxk -> [SE] -> 1x1 linear."""
    mid = in_ch * expand
    layers: list[nn.Module] = []
    if expand != 1:
        layers.append(ConvBnAct(in_ch, mid, 1))
    layers.append(ConvBnAct(mid, mid, kernel, stride, groups=mid))
{se}    layers.append(ConvBnAct(mid, out_ch, 1, act=False))
    return nn.Sequential(*layers)
'''

_CONV_BODY = '''

def conv_body(in_ch: int, out_ch: int, kernel: int, stride: int, se_ratio: float) -> nn.Sequential:
    """Regular convolution: kxk conv -> BN -> ReLU -> [SE]."""
    layers: list[nn.Module] = [ConvBnAct(in_ch, out_ch, kernel, stride)]
{se}    return nn.Sequential(*layers)
'''

_LAYER = '''

class Layer(nn.Module):
    """One layer of a block: a body plus the block's skip (identity residual when the shapes allow{pool_doc})."""

    def __init__(self, op: str, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, se_ratio: float,
                 skip: str):
        super().__init__()
{body}        self.residual = skip == "identity" and stride == 1 and in_ch == out_ch
{shortcut}
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
{shortcut_forward}        return out + x if self.residual else out
'''

_NETWORK = '''

class MnasNet(nn.Module):
    """Stem 3x3/2 conv -> blocks -> 1x1 head conv -> global average pool -> dropout -> linear."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        self.stem = ConvBnAct(in_channels, STEM_FILTERS, 3, 2)
        blocks, channels = [], STEM_FILTERS
        for op, layers, kernel, stride, expand, out_ch, se_ratio, skip in BLOCKS:
            blocks.append(nn.Sequential(*[
                Layer(op, channels if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand, se_ratio, skip)
                for i in range(layers)
            ]))
            channels = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBnAct(channels, HEAD_FILTERS, 1)
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = nn.Linear(HEAD_FILTERS, num_classes)
        self.reset_parameters()

''' + inspect.getsource(MnasNet.reset_parameters) + '''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x))).mean((2, 3))
        return self.classifier(self.dropout(x))


def build_model(num_classes: int = NUM_CLASSES) -> MnasNet:
    return MnasNet(num_classes)


if __name__ == "__main__":  # smoke test: python model.py
    from pathlib import Path

    model = build_model().eval()
    weights = Path(__file__).with_name("state_dict.pt")
    if weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, RESOLUTION, RESOLUTION))
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, logits {tuple(logits.shape)}")
'''


UNTRAINED_NOTE = ("state_dict.pt beside this file holds UNTRAINED weights (a seeded initialisation); README.md here\n"
                  "names the `python -m mnas_nni.train` command that trains them.")
TRAINED_NOTE = "state_dict.pt beside this file holds the trained weights the export was given."


def render_model_code(arch: ArchSpec, num_classes: int, resolution: int, trained: bool = False) -> str:
    """model.py for `arch`: only the layers it uses, the blocks as a literal table; its docstring says whether the
    state_dict.pt written beside it is `trained` or an initialisation."""
    ops = {b.op for b in arch.blocks}
    uses_se = any(b.se_ratio > 0 for b in arch.blocks)
    uses_pool = any(b.skip == "pool" for b in arch.blocks)
    rows = [f"    ({b.op!r}, {b.repeats}, {b.kernel}, {b.stride}, {b.expand}, {b.out_filters}, {b.se_ratio!r}, {b.skip!r}),"
            for b in arch.blocks]
    code = _HEADER.format(
        title=arch.name or "model", num_classes=num_classes, resolution=resolution,
        weights_note=TRAINED_NOTE if trained else UNTRAINED_NOTE,
        block_list="\n".join(f"    {s}" for s in arch.block_strings),
        functional="import torch.nn.functional as F\n" if uses_se or uses_pool else "",
        stem=arch.stem_filters, head=arch.head_filters, dropout=arch.dropout, block_rows="\n".join(rows),
    )
    if uses_se:
        code += _SQUEEZE_EXCITE
    if uses_pool:
        code += _POOL_SHORTCUT
    mbconv_call = "mbconv_body(in_ch, out_ch, kernel, stride, expand, se_ratio)"
    conv_call = "conv_body(in_ch, out_ch, kernel, stride, se_ratio)"
    if ops & {"mbconv", "dsconv"}:
        code += _MBCONV_BODY.format(se=_SE_LINE.format(channels="mid") if uses_se else "")
    if "conv" in ops:
        code += _CONV_BODY.format(se=_SE_LINE.format(channels="out_ch") if uses_se else "")
    if ops == {"conv"}:
        body = f"        self.body = {conv_call}\n"
    elif "conv" in ops:
        body = f'        self.body = {conv_call} if op == "conv" else {mbconv_call}\n'
    else:
        body = f"        self.body = {mbconv_call}\n"
    code += _LAYER.format(
        pool_doc=", else a pooled shortcut or none" if uses_pool else ", or none",
        body=body,
        shortcut='        self.shortcut = PoolShortcut(in_ch, out_ch, stride) if skip == "pool" else None\n'
        if uses_pool else "",
        shortcut_forward="        if self.shortcut is not None:\n            return out + self.shortcut(x)\n"
        if uses_pool else "",
    )
    return code + _NETWORK


def import_model_file(path: Path) -> ModuleType:
    """Load a generated model.py as a module of its own (not on sys.path, not cached under 'model')."""
    spec = importlib.util.spec_from_file_location(f"mnas_export_{abs(hash(str(path.resolve())))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
