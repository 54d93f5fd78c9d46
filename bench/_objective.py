"""The bench's offline objective: the MnasNet reward on the real MNAS search space, cheap and deterministic.

    reward = ACC * (LAT / T) ** w            (paper Eq. 2, soft constraint w = -0.07)

* LAT: the project's layer-wise latency predictor (evaluators/latency/predictor.py) for this machine
  (LocalDevice: onnxruntime, one thread, batch 1, 224 px, median of 15 runs): stem, every layer body and
  shortcut, and head, each distinct one measured once, summed as ProxylessNAS/FBNet do, then calibrated on
  whole models; the table is cached to a JSON file.
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
import json
import math
import statistics
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench._engine import FrozenSample
from evaluators.latency import LatencyEvaluator, LatencyPredictor, LatencyTable, LocalDevice, build_table
from evaluators.latency.layers import space_hash
from search_spaces import ArchSpec, MnasSpace, SpaceConfig, load_preset
from search_spaces.builder import build_layer
from search_spaces.layers import ConvBnAct, SearchLayer

DEFAULT_CACHE = Path("~/.cache/mnas-nni/bench").expanduser()
Key = str


def bench_device() -> LocalDevice:
    """The bench's latency device: this CPU through onnxruntime, one thread, batch 1 (the paper's setting)."""
    return LocalDevice(threads=1, warmup=3, runs=15)


def bench_predictor(cache_dir: Path, config: SpaceConfig, log: Callable[[str], None] = print,
                    calibration_models: int = 20) -> LatencyPredictor:
    """The layer-wise latency table of ``config`` on this CPU (built once, then read), as a predictor: the one
    code path a search's `latency.mode=predict` uses too (evaluators/latency/predictor.py)."""
    device = bench_device()
    path = cache_dir / f"latency_table_{device.name}_{config.resolution}px.json"
    table = LatencyTable.load(path) if path.is_file() else None
    complete = table is not None and table.fit is not None and space_hash(config) in table.spaces \
        and table.spaces[space_hash(config)].get("complete")
    if not complete:
        evaluator = LatencyEvaluator(device, cache_path=None)
        log(build_table(device, config, path, evaluator, calibration_models=calibration_models,
                        progress=False, log=log).line())
        table = LatencyTable.load(path)
    return LatencyPredictor(table, config.num_classes)


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

    def __init__(self, width: float = 0.5, batch: int = 16, resolution: int = 32,
                 images: torch.Tensor | None = None):
        self.width = width
        self.x = digits_batch(batch, resolution) if images is None else images  # other data: its own images
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
        self.predictor = bench_predictor(cache_dir, self.space, log)
        self.target_ms = self.predictor.predict(load_preset("mobilenet_v2"))
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
        latency = self.predictor.predict(arch)
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
