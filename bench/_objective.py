"""The bench's offline objective: the MnasNet reward on the real MNAS search space, cheap and deterministic.

    reward = ACC * (LAT / T) ** w            (paper Eq. 2, soft constraint w = -0.07)

* LAT: a per-layer latency lookup table measured on this machine (onnxruntime, one thread, batch 1, 224 px,
  fastest of 15 runs),
  summed over stem, every layer body and shortcut, and head, as ProxylessNAS/FBNet do. Each distinct
  (op, kernel, expand, SE, in/out channels, stride, input resolution) is exported and timed once; the table is
  cached to a JSON file.
* T: the table's latency of MobileNetV2 1.0 (the space's skeleton): the paper's T = 75 ms is MobileNetV2's
  latency on its phone.
* ACC: NASWOT (Mellor et al. 2021, "Neural Architecture Search without Training"): the log-determinant of the
  kernel of ReLU activation codes over a minibatch, computed on 16 real images (scikit-learn's 8x8 digits,
  upsampled to 32 px) with the architecture built by the space's own layer decoder at half width, from randomly
  initialised layers shared by all architectures (see `Naswot`); then mapped monotonically into
  (0, 1) with a logistic whose centre and scale are the mean and standard deviation of the score over a fixed set
  of random architectures (a calibration, not a formula for accuracy).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import statistics
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench._engine import FrozenSample
from search_spaces import ArchSpec, BlockSpec, MnasSpace, SpaceConfig, load_preset
from search_spaces.builder import build_layer
from search_spaces.layers import ConvBnAct, PoolShortcut, SearchLayer

DEFAULT_CACHE = Path("~/.cache/mnas-nni/bench").expanduser()
Key = str


def _out_res(res: int, stride: int) -> int:
    return (res - 1) // stride + 1  # 'same' padding with odd kernels


class _Add(nn.Module):
    """An identity residual: the elementwise add a layer pays when its skip is identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class _Head(nn.Module):
    def __init__(self, in_ch: int, head: int, classes: int):
        super().__init__()
        self.conv, self.fc = ConvBnAct(in_ch, head, 1), nn.Linear(head, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def time_onnx(module: nn.Module, shape: tuple[int, ...], runs: int = 15, warmup: int = 3) -> float:
    """Fastest of ``runs`` single-threaded onnxruntime inferences of ``module`` at batch 1, in ms.

    The minimum, not the median: this machine is shared, and other processes only ever add time."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(shape),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], do_constant_folding=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    x = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(warmup):
        session.run(None, x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, x)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


class LatencyTable:
    """Per-layer latency lookup table of one search space at one resolution, measured once and cached."""

    def __init__(self, config: SpaceConfig, path: Path, resolution: int = 224, num_classes: int = 1000):
        self.config, self.path, self.resolution, self.num_classes = config, path, resolution, num_classes
        self.entries: dict[Key, float] = json.loads(path.read_text()) if path.is_file() else {}

    # The pieces of a network, as (key, builder, input shape).
    def pieces(self, arch: ArchSpec) -> Iterator[tuple[Key, Callable[[], nn.Module], tuple[int, ...]]]:
        res = self.resolution
        yield f"stem|{arch.stem_filters}|{res}", lambda: ConvBnAct(3, arch.stem_filters, 3, 2), (1, 3, res, res)
        res, ch = _out_res(res, 2), arch.stem_filters
        for block in arch.blocks:
            for i in range(block.repeats):
                stride = block.stride if i == 0 else 1
                yield from self._layer(block, ch, stride, res)
                ch, res = block.out_filters, _out_res(res, stride)
        yield (f"head|{ch}|{arch.head_filters}|{res}|{self.num_classes}",
               lambda: _Head(ch, arch.head_filters, self.num_classes), (1, ch, res, res))

    def _layer(self, block: BlockSpec, ch: int, stride: int, res: int):
        b = dataclasses.replace(block, skip="none")
        key = f"body|{b.op}|{b.kernel}|{b.expand}|{b.se_ratio}|{ch}|{b.out_filters}|{stride}|{res}"
        yield key, lambda: build_layer(b, ch, stride), (1, ch, res, res)
        if block.skip == "pool":
            yield (f"pool|{ch}|{b.out_filters}|{stride}|{res}", lambda: PoolShortcut(ch, b.out_filters, stride),
                   (1, ch, res, res))
        elif block.skip == "identity" and stride == 1 and ch == block.out_filters:
            out = _out_res(res, stride)
            yield f"add|{ch}|{out}", _Add, (1, ch, out, out)

    def arch_ms(self, arch: ArchSpec) -> float:
        total = 0.0
        for key, make, shape in self.pieces(arch):
            if key not in self.entries:
                self.entries[key] = time_onnx(make(), shape)
            total += self.entries[key]
        return total

    def every_piece(self) -> dict[Key, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
        """Every piece any architecture of the space can contain."""
        cfg, pieces = self.config, {}
        choices = [cfg.choices(i) for i in range(len(cfg.skeleton))]
        stem = cfg.scaled(cfg.stem_filters)
        head = max(cfg.head_filters, cfg.scaled(cfg.head_filters))
        res = _out_res(self.resolution, 2)
        ins = [stem]
        for base, ch in zip(cfg.skeleton, choices):
            for c_in in ins:
                for c_out in ch["filters"]:
                    for word in ch["conv_op"]:
                        op, expand = _op(word)
                        for k in ch["kernel"]:
                            for se in ch["se_ratio"]:
                                for skip in ch["skip"]:
                                    block = BlockSpec(op, 2, k, base.stride, expand, c_in, c_out, se, skip)
                                    arch = ArchSpec((block,), stem, head)
                                    for key, make, shape in self._block_pieces(arch, res):
                                        pieces[key] = (make, shape)
            res, ins = _out_res(res, base.stride), ch["filters"]
        for c in ins:
            pieces[f"head|{c}|{head}|{res}|{self.num_classes}"] = (
                (lambda c=c: _Head(c, head, self.num_classes)), (1, c, res, res))
        stem_key = f"stem|{stem}|{self.resolution}"
        pieces[stem_key] = ((lambda: ConvBnAct(3, stem, 3, 2)), (1, 3, self.resolution, self.resolution))
        return pieces

    def _block_pieces(self, arch: ArchSpec, res: int):
        block, ch = arch.blocks[0], arch.blocks[0].in_filters
        for i in range(2):  # the first layer and a repeat cover every layer of the block
            stride = block.stride if i == 0 else 1
            yield from self._layer(block, ch, stride, res)
            ch, res = block.out_filters, _out_res(res, stride)

    def build(self, log: Callable[[str], None] = print) -> None:
        missing = {k: v for k, v in self.every_piece().items() if k not in self.entries}
        if not missing:
            return
        log(f"measuring {len(missing)} layers with onnxruntime (1 thread, batch 1, {self.resolution} px); "
            f"cached in {self.path}")
        start = time.perf_counter()
        for i, (key, (make, shape)) in enumerate(sorted(missing.items())):
            self.entries[key] = time_onnx(make(), shape)
            if (i + 1) % 200 == 0:
                log(f"  {i + 1}/{len(missing)} ({time.perf_counter() - start:.0f} s)")
                self.save()
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=0, sort_keys=True))
        tmp.replace(self.path)


def _op(word: str) -> tuple[str, int]:
    from search_spaces.space import CONV_OP_WORDS

    return CONV_OP_WORDS[word]


def digits_batch(n: int = 16, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` real images (scikit-learn digits, classes balanced), upsampled to ``resolution``, 3 channels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(data.target == c)) for c in range(10)]
    idx = [per_class[i % 10][i // 10] for i in range(n)]
    x = torch.tensor(data.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0
    x = nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    return x.expand(-1, 3, -1, -1).contiguous()


def shrink(arch: ArchSpec, width: float) -> ArchSpec:
    """Every channel count times ``width`` (exact for 0.5: the space's filters are multiples of 8)."""
    def s(c: int) -> int:
        return max(1, round(c * width))

    blocks = tuple(dataclasses.replace(b, in_filters=s(b.in_filters), out_filters=s(b.out_filters))
                   for b in arch.blocks)
    return dataclasses.replace(arch, blocks=blocks, stem_filters=s(arch.stem_filters),
                               head_filters=s(arch.head_filters))


class Naswot:
    """NASWOT score: log|det K|, K[i, j] = number of ReLU units on which inputs i and j agree (both on/off).

    The proxy network is the architecture at ``width`` times its channels, put together from layers that are
    built (and randomly initialised, seeded by their own description) once and reused by every architecture
    containing them: a fixed random-weight supernet, so scoring costs one forward pass and does not depend on
    the order of evaluation.
    """

    def __init__(self, width: float = 0.5, batch: int = 16, resolution: int = 32):
        self.width, self.x = width, digits_batch(batch, resolution)
        self._modules: dict[str, nn.Module] = {}
        self._codes: list[torch.Tensor] = []

    def _cached(self, key: str, make: Callable[[], nn.Module]) -> nn.Module:
        module = self._modules.get(key)
        if module is None:
            torch.manual_seed(zlib.crc32(key.encode()))
            module = self._modules[key] = make().train()  # BN on batch statistics
            for m in module.modules():
                if isinstance(m, nn.ReLU):
                    m.register_forward_hook(lambda _m, _i, out: self._codes.append(out.flatten(1) > 0))
        return module

    def network(self, arch: ArchSpec) -> list[nn.Module]:
        small = shrink(arch, self.width)
        ch = small.stem_filters
        mods = [self._cached(f"stem|{ch}", lambda: ConvBnAct(3, ch, 3, 2))]
        for index, block in enumerate(small.blocks):
            body = dataclasses.replace(block, skip="none")
            for i in range(block.repeats):
                stride = block.stride if i == 0 else 1
                key = f"{index}|{i}|{body.op}|{body.kernel}|{body.expand}|{body.se_ratio}|{ch}|{body.out_filters}"
                layer = self._cached(key, lambda b=body, c=ch, s=stride: build_layer(b, c, s))
                mods.append(SearchLayer(layer.body, ch, block.out_filters, stride, block.skip))
                ch = block.out_filters
        mods.append(self._cached(f"head|{ch}|{small.head_filters}", lambda: ConvBnAct(ch, small.head_filters, 1)))
        return mods

    @torch.no_grad()
    def __call__(self, arch: ArchSpec) -> float:
        x = self.x
        self._codes.clear()
        for module in self.network(arch):
            x = module(x)
        codes = torch.cat(self._codes, 1).float()
        self._codes.clear()
        on = codes.sum(1)
        # agreements = on.on + off.off = units - on_i - on_j + 2 codes_i . codes_j
        kernel = (2 * codes @ codes.t() - on[:, None] - on[None, :] + codes.shape[1]).double()
        return float(torch.linalg.slogdet(kernel).logabsdet)


@dataclasses.dataclass
class Calibration:
    mean: float
    std: float

    def accuracy(self, score: float) -> float:
        return 1.0 / (1.0 + math.exp(-(score - self.mean) / self.std))


class MnasObjective:
    """sample -> the project's trial metric dict, memoised by architecture."""

    def __init__(self, cache_dir: Path = DEFAULT_CACHE, exponent: float = -0.07, proxy_width: float = 0.5,
                 proxy_batch: int = 16, proxy_resolution: int = 32, calibration_size: int = 64,
                 with_accuracy: bool = True, log: Callable[[str], None] = print):
        self.space = SpaceConfig()
        self.exponent = exponent
        self.table = LatencyTable(self.space, cache_dir / "latency_lut_ort_224_min.json")
        self.table.build(log)
        self.target_ms = self.table.arch_ms(load_preset("mobilenet_v2"))
        self.evaluations = 0
        if not with_accuracy:  # latency only (the overhead runs)
            return
        self.naswot = Naswot(proxy_width, proxy_batch, proxy_resolution)
        self.scores_path = cache_dir / f"naswot_supernet_w{proxy_width}_b{proxy_batch}_r{proxy_resolution}.json"
        self.scores: dict[str, float] = json.loads(self.scores_path.read_text()) if self.scores_path.is_file() else {}
        self.new_scores: dict[str, float] = {}
        self.calibration = self._calibrate(calibration_size)

    def _calibrate(self, n: int) -> Calibration:
        decisions = decision_values()
        rng = np.random.default_rng(12345)
        scores = [self.score(self.space.arch_from_sample(
            {label: values[rng.integers(len(values))] for label, values in decisions})) for _ in range(n)]
        return Calibration(statistics.fmean(scores), statistics.stdev(scores))

    def score(self, arch: ArchSpec) -> float:
        key = arch.key
        if key not in self.scores:
            self.scores[key] = self.new_scores[key] = self.naswot(arch)
        return self.scores[key]

    def __call__(self, sample: dict) -> dict:
        self.evaluations += 1
        arch = self.space.arch_from_sample(sample)
        latency = self.table.arch_ms(arch)
        accuracy = self.calibration.accuracy(self.score(arch))
        reward = accuracy * (latency / self.target_ms) ** self.exponent
        return {"default": reward, "reward": reward, "accuracy": accuracy, "latency_ms": latency}

    def save_scores(self, scores: dict[str, float] | None = None) -> None:
        if scores:
            self.scores.update(scores)
        self.scores_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.scores_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.scores))
        tmp.replace(self.scores_path)


def decision_values() -> list[tuple[str, list]]:
    """(label, values) of the real MNAS space, in declaration order."""
    return [(str(label), list(m.values)) for label, m in MnasSpace().simplify().items()]


class SampleSpace(MnasSpace):
    """The real MNAS space (same labels, values and order) whose frozen model is only its sample, so a
    strategy-heavy benchmark does not build a full-size network per trial."""

    @classmethod
    def create_fixed_module(cls, sample: dict, **config) -> nn.Module:
        return FrozenSample(sample)
