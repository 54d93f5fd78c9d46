"""Export a searched architecture as a standalone model: `python -m mnas_nni.export SOURCE --out DIR`.

SOURCE is an architecture JSON file, a preset name, a `trials.jsonl` (or the run directory holding it; add
`--trial N`, or `--answer` for the most accurate trial meeting the search's latency target, else the best trial
by reward), or an MLflow run (`runs:/<id>`, a trial's run id, or a search's
parent run id: its best trial by reward). DIR receives:

    model.py        the network in plain PyTorch (needs only torch), same state_dict keys as search_spaces
    arch.json       the architecture (block strings)
    state_dict.pt   the weights: --weights if given, else the seeded initialisation
    model.onnx      batch 1, opset 17
    retrain.yaml    the full-training recipe (conf/experiment/retrain.yaml) filled in for this model
    source.json     the search it came from (run directory or MLflow run), when SOURCE is one; the trainer
                    (`python -m mnas_nni.train retrain.arch=DIR`) nests its MLflow run under that search's
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from evaluators.latency.export import export_onnx
from mnas_core.errors import ArchitectureError, ConfigError, MnasNniError
from mnas_nni.records import load_records, target_answer, top_k
from mnas_nni.resume import CONFIG_FILE
from search_spaces.arch import ArchSpec
from search_spaces.builder import MnasNet
from search_spaces.layers import PoolShortcut, SqueezeExcite
from search_spaces.presets import PRESETS, load_preset

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


# ---------------------------------------------------------------- finding the architecture

def resolve_source(source: str, trial: int | None = None, tracking_uri: str | None = None,
                   answer: bool = False) -> tuple[ArchSpec, dict[str, Any]]:
    """The architecture SOURCE names, and hints (num_classes, resolution) found next to it. `answer`: a search's
    most accurate trial meeting its latency target instead of its best by reward."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = next((p for p in (path / "trials.jsonl", path / "arch.json") if p.is_file()), path)
    if (trial is not None or answer) and not (path.is_file() and path.suffix == ".jsonl"):
        raise ConfigError("--trial and --answer need a trials.jsonl (or the run directory holding it) as SOURCE")
    if path.is_file():
        if path.suffix == ".jsonl":
            if answer:
                trial = answer_trial(path)
            return from_trial_log(path, trial), hints_from_run_dir(path.parent)
        return ArchSpec.load(path), {}
    if source in PRESETS:
        return load_preset(source), {}
    if source.startswith("runs:/") or RUN_ID.match(source):
        return from_mlflow(source, tracking_uri)
    if path.is_dir():
        raise ArchitectureError(f"folder {path} holds neither trials.jsonl (a search's run directory has one once a "
                                "trial finished) nor arch.json (an exported model); give a run directory, a "
                                f"trials.jsonl, an arch.json or a preset ({', '.join(PRESETS)})")
    raise ArchitectureError(f"{source} is neither a file nor a preset ({', '.join(PRESETS)}) nor an MLflow run id")


def from_trial_log(path: Path, trial: int | None) -> ArchSpec:
    records = load_records(path)
    if trial is None:
        best = top_k(records, 1)
        if not best:
            raise ArchitectureError(f"{path} holds no successful trial with a reward")
        record = best[0]
    else:
        record = next((r for r in records if r.trial == trial), None)
        if record is None:
            raise ArchitectureError(f"trial {trial} is not in {path} ({len(records)} trials)")
    if not record.ok or not record.arch:
        raise ArchitectureError(f"trial {record.trial} in {path} failed ({record.error}); it has no architecture")
    if "arch_str" in record.arch:  # search_space=nb201: a NAS-Bench-201 cell, not a block-string network
        raise ArchitectureError(f"trial {record.trial} is a NAS-Bench-201 cell ({record.arch['arch_str']}); export "
                                "builds search_space=mnas architectures only (build the cell with "
                                "search_spaces.nb201.Nb201Arch)")
    arch = ArchSpec.from_dict(record.arch)
    return arch if arch.name else arch.with_name(f"trial{record.trial}")


def answer_trial(trial_log: Path) -> int:
    """The trial number of a search's answer for its latency target (reward.target_ms of its config)."""
    import yaml

    try:
        target_ms = float(yaml.safe_load((trial_log.parent / CONFIG_FILE).read_text())["reward"]["target_ms"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise ConfigError(f"--answer: no reward.target_ms in {trial_log.parent / CONFIG_FILE}; give --trial N") from None
    answer = target_answer(load_records(trial_log), target_ms)
    if answer is None:
        raise ArchitectureError(f"no trial in {trial_log} meets its latency target T = {target_ms:g} ms")
    return answer.trial


def hints_from_run_dir(run_dir: Path) -> dict[str, Any]:
    """num_classes / resolution as the search built its space (`config.resolved.yaml`, written by the search;
    Hydra's own `.hydra/config.yaml` holds the unresolved `null` class count, so it is only a fallback)."""
    import yaml

    for config_file in (run_dir / CONFIG_FILE, run_dir / ".hydra" / "config.yaml"):
        try:
            config = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        flat = {"search_space.num_classes": (config.get("search_space") or {}).get("num_classes"),
                "search_space.resolution": (config.get("search_space") or {}).get("resolution"),
                "data.resolution": (config.get("data") or {}).get("resolution")}
        return _hints(flat)
    return {}


def _hints(flat: Mapping[str, Any]) -> dict[str, Any]:
    hints = {}
    for key, name in (("search_space.num_classes", "num_classes"), ("data.resolution", "resolution"),
                      ("search_space.resolution", "resolution")):
        value = flat.get(key)
        if value is not None and str(value).isdigit() and name not in hints:
            hints[name] = int(value)
    return hints


def from_mlflow(ref: str, tracking_uri: str | None) -> tuple[ArchSpec, dict[str, Any]]:
    """A trial run's `arch.json`; for a search's parent run, that of its best child by reward."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mnas_nni.tracking import check_reachable, redact_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri}; pass --tracking-uri (or set MLFLOW_TRACKING_URI)")
    check_reachable(uri, fix="start it or pass --tracking-uri")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    run_id, _, artifact = ref.removeprefix("runs:/").partition("/")
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
        hints = _hints(run.data.params)
        if not artifact:
            children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'",
                                          order_by=["metrics.reward DESC"], max_results=50000)
            if children:
                scored = [c for c in children if c.info.status == "FINISHED" and "reward" in c.data.metrics]
                if not scored:
                    raise ConfigError(f"MLflow run {run_id} has no finished trial with a reward")
                run = max(scored, key=lambda c: c.data.metrics["reward"])
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run.info.run_id, artifact or "arch.json", tmp)
            arch = ArchSpec.load(local)
    except MlflowException as err:
        first = str(err.message if hasattr(err, "message") else err).splitlines()[0]
        raise ConfigError(f"MLflow run {run_id} at {redact_uri(uri)}: {first}") from None
    except OSError as err:
        raise ConfigError(f"MLflow run {run_id} has no {artifact or 'arch.json'} artifact ({err})") from None
    trial = run.data.tags.get("trial")
    return (arch if arch.name or not trial else arch.with_name(f"trial{trial}")), hints


# ---------------------------------------------------------------- the generated model.py

_HEADER = '''\
"""{title}: a standalone MnasNet-style network exported by mnas-nni. Needs only PyTorch.

    import torch
    from model import build_model
    model = build_model()  # {num_classes} classes, {resolution}x{resolution} RGB input
    model.load_state_dict(torch.load("state_dict.pt"))

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


def render_model_code(arch: ArchSpec, num_classes: int, resolution: int) -> str:
    """model.py for `arch`: only the layers it uses, the blocks as a literal table."""
    ops = {b.op for b in arch.blocks}
    uses_se = any(b.se_ratio > 0 for b in arch.blocks)
    uses_pool = any(b.skip == "pool" for b in arch.blocks)
    rows = [f"    ({b.op!r}, {b.repeats}, {b.kernel}, {b.stride}, {b.expand}, {b.out_filters}, {b.se_ratio!r}, {b.skip!r}),"
            for b in arch.blocks]
    code = _HEADER.format(
        title=arch.name or "model", num_classes=num_classes, resolution=resolution,
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


# ---------------------------------------------------------------- weights, ONNX, retrain config

def load_weights(path: str | Path, expected: set[str]) -> dict[str, Any]:
    """A state_dict file (or a Lightning checkpoint holding one, keys prefixed e.g. 'model.')."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ConfigError(f"weights file {path} cannot be read as a PyTorch state_dict ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {path} does not hold a state_dict")
    if set(state) != expected:
        for prefix in sorted({k.split(".", 1)[0] + "." for k in state if "." in k}):
            stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if set(stripped) == expected:
                return stripped
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ConfigError(f"weights file {path} does not fit this architecture: {len(missing)} missing keys "
                          f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")
    return state


def conf_dir() -> Path:
    """The project's Hydra config folder: ./conf in a checkout, mnas_nni/conf when installed."""
    here = Path(__file__).resolve().parent
    return next((d for d in (here.parent / "conf", here / "conf") if d.is_dir()), here.parent / "conf")


def retrain_recipe() -> dict[str, Any]:
    from omegaconf import OmegaConf

    experiment = OmegaConf.load(conf_dir() / "experiment" / "retrain.yaml")
    return OmegaConf.to_container(experiment.retrain, resolve=False)  # type: ignore[return-value]


def scaled_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe with `scale` applied: batch size and peak learning rate multiplied together."""
    scale = float(recipe.get("scale", 1.0))
    if scale <= 0:
        raise ConfigError(f"retrain.scale must be > 0, got {scale}")
    out = dict(recipe)
    out["batch_size"] = max(1, round(int(recipe["batch_size"]) * scale))
    out["lr"] = float(recipe["lr"]) * scale
    return out


def render_retrain_yaml(arch_path: Path, name: str, num_classes: int, resolution: int) -> str:
    from omegaconf import OmegaConf

    recipe = retrain_recipe()
    recipe.update(arch=str(arch_path.resolve()), num_classes=num_classes, resolution=resolution)
    header = (
        f"# Full training of {name} with the MnasNet recipe, copied from conf/experiment/retrain.yaml at export\n"
        "# (paper section 5; epochs 350, rmsprop_epsilon, label_smoothing and ema_decay are the official code's\n"
        "# defaults, not the paper's). batch_size and lr hold at scale 1; a trainer multiplies both by `scale`\n"
        "# (mnas_nni.export.scaled_recipe). Load it with OmegaConf, or as a Hydra config:\n"
        "#   --config-dir <this folder> --config-name retrain retrain.scale=0.0625\n"
    )
    return header + OmegaConf.to_yaml({"retrain": recipe})


def export(arch: ArchSpec, out_dir: str | Path, num_classes: int = 1000, resolution: int = 224,
           weights: str | Path | None = None, seed: int = 0,
           provenance: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write model.py, arch.json, state_dict.pt, model.onnx and retrain.yaml (and source.json) into `out_dir`."""
    import torch

    if num_classes < 1 or resolution < 8:
        raise ConfigError(f"need num_classes >= 1 and resolution >= 8, got {num_classes} and {resolution}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {out}: {err.strerror}") from None
    paths = {name: out / name for name in ("model.py", "arch.json", "state_dict.pt", "model.onnx", "retrain.yaml")}
    paths["model.py"].write_text(render_model_code(arch, num_classes, resolution), encoding="utf-8")
    arch.save(paths["arch.json"])
    torch.manual_seed(seed)
    model = import_model_file(paths["model.py"]).build_model(num_classes)
    if weights is not None:
        model.load_state_dict(load_weights(weights, set(model.state_dict())))
    torch.save(model.state_dict(), paths["state_dict.pt"])
    export_onnx(model, (1, 3, resolution, resolution), paths["model.onnx"])
    paths["retrain.yaml"].write_text(
        render_retrain_yaml(paths["arch.json"], arch.name or "the exported model", num_classes, resolution),
        encoding="utf-8")
    if provenance:
        paths["source.json"] = out / "source.json"
        paths["source.json"].write_text(json.dumps(dict(provenance), indent=2), encoding="utf-8")
    paths["README.md"] = out / "README.md"
    paths["README.md"].write_text(render_export_readme(arch, out, num_classes, resolution, weights, seed, provenance),
                                  encoding="utf-8")
    return paths


def training_command(out: Path, resolution: int, provenance: Mapping[str, Any] | None) -> str:
    """The `python -m mnas_nni.train` command that trains the exported folder, on the search's own data when the
    export came from a run directory (its Hydra `data` choice and `data.root`)."""
    import shlex

    import yaml

    data = "data=<your data> data.root=<its folder>"
    run_dir = Path((provenance or {}).get("search_run_dir", "")) if provenance else None
    if run_dir and run_dir.is_dir():
        try:
            choices = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
            data = f"data={choices['data']}"
            root = (yaml.safe_load((run_dir / CONFIG_FILE).read_text()).get("data") or {}).get("root")
            if root:
                data += " " + shlex.quote(f"data.root={root}")
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            pass
    return (f"python -m mnas_nni.train +experiment=retrain {shlex.quote(f'retrain.arch={out.resolve()}')} {data} "
            f"retrain.resolution={resolution}")


def render_export_readme(arch: ArchSpec, out: Path, num_classes: int, resolution: int, weights: Any, seed: int,
                         provenance: Mapping[str, Any] | None) -> str:
    """What the export folder holds, whether its weights are trained, and how to train it."""
    import shlex

    trained = weights is not None
    state = (f"the weights loaded from `{weights}`" if trained else
             f"**the seeded initialisation (seed {seed}), not trained weights**: train the model first (below)")
    command = training_command(out, resolution, provenance)
    source = next(iter((provenance or {}).values()), None)
    return "\n".join([
        f"# {arch.name or 'exported model'}, exported by mnas-nni",
        "",
        f"{len(arch.blocks)} blocks, {num_classes} classes, {resolution} px input"
        + (f"; from the search `{source}`" if source else "") + ".",
        "",
        "| file | what it is |",
        "|---|---|",
        "| `model.py` | the network in plain PyTorch (needs only torch): `build_model(num_classes)` |",
        "| `arch.json` | the architecture as block strings |",
        f"| `state_dict.pt` | {state} |",
        f"| `model.onnx` | the same network and weights as ONNX (batch 1, opset 17, {resolution} px) |",
        "| `retrain.yaml` | the full-training recipe (the paper's), filled in for this model |",
        *(["| `source.json` | the search it came from (the trainer nests its MLflow run under it) |"] if provenance
          else []),
        "",
        "## Train it",
        "",
        f"    {command}",
        "",
        "(on a CPU, add `retrain.scale=0.015625 retrain.epochs=40` as the README's demo does). Then export the",
        "trained weights:",
        "",
        (f"    python -m mnas_nni.export {shlex.quote(str(out.resolve()))} --weights <the training's run dir>/"
         "state_dict.pt --out <folder>"),
        "",
    ])


def search_provenance(source: str) -> dict[str, str]:
    """The search SOURCE belongs to: its run directory, or the MLflow run it names."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "trials.jsonl").is_file():
        return {"search_run_dir": str(path.resolve())}
    if path.is_file() and path.suffix == ".jsonl":
        return {"search_run_dir": str(path.parent.resolve())}
    if not path.exists() and (source.startswith("runs:/") or RUN_ID.match(source)):
        return {"mlflow_run": source}
    return {}


# ---------------------------------------------------------------- CLI

def export_source(source: str, out: str | Path, *, trial: int | None = None, answer: bool = False,
                  num_classes: int | None = None, resolution: int | None = None, tracking_uri: str | None = None,
                  weights: str | Path | None = None, seed: int = 0) -> tuple[ArchSpec, int, int, dict[str, Path]]:
    """`python -m mnas_nni.export SOURCE --out OUT ...` as a call: the architecture, its classes and input size
    (the search's unless given), and the files written."""
    arch, hints = resolve_source(source, trial, tracking_uri, answer=answer)
    num_classes = num_classes or hints.get("num_classes", 1000)
    resolution = resolution or hints.get("resolution", 224)
    paths = export(arch, out, num_classes, resolution, weights, seed, provenance=search_provenance(source))
    return arch, num_classes, resolution, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnas_nni.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="arch JSON, preset, trials.jsonl / run dir, or MLflow run id / runs:/<id>")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--trial", type=int, default=None, help="trial number in a trials.jsonl (default: best)")
    parser.add_argument("--answer", action="store_true",
                        help="the most accurate trial meeting the search's latency target T, not the best by reward")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the search's, else 1000")
    parser.add_argument("--resolution", type=int, default=None, help="input px; default: the search's, else 224")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: as the tracker's)")
    parser.add_argument("--weights", default=None, help="a state_dict (.pt) or Lightning checkpoint to load")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights when --weights is absent")
    args = parser.parse_args(argv)
    try:
        arch, num_classes, resolution, paths = export_source(
            args.source, args.out, trial=args.trial, answer=args.answer, num_classes=args.num_classes,
            resolution=args.resolution, tracking_uri=args.tracking_uri, weights=args.weights, seed=args.seed)
    except MnasNniError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"arch": arch.name, "num_classes": num_classes, "resolution": resolution,
                      "files": {name: str(path) for name, path in paths.items()}}, indent=2))
    if args.weights is None:
        print(f"note: the weights are an initialisation, not trained; train the model with: "
              f"{training_command(Path(args.out), resolution, search_provenance(args.source))} "
              f"(see {Path(args.out) / 'README.md'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
