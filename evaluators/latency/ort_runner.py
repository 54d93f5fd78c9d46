"""Standalone latency runner: one process measures one model and prints ONE JSON line. It runs ONNX Runtime
(`.onnx`, the default) or ExecuTorch (`--runtime executorch`: a `.pte` program, XNNPACK kernels).

Run locally (LocalDevice) and shipped as-is to remote boards (SshDevice), so it depends only on the
standard library, numpy and the runtime it measures, and keeps to syntax old board Pythons understand.

    python ort_runner.py --model m.onnx --shape 1,3,224,224 --threads 1 --warmup 10 --runs 50 --cores 0
    python ort_runner.py --describe --threads 1
    python ort_runner.py --batch models.json --threads 1 --warmup 10 --runs 50   # [[path, [1,3,32,32]], ...]

Output: {"samples_ms": [...], "describe": {...}} (with --batch: "batch_samples_ms": [[...], ...], one list per
model, measured one after another). Errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 'model name', ARM 'Hardware'/'Model')."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields = {
                key.strip(): value.strip()
                for key, _, value in (line.partition(":") for line in f)
                if value.strip()
            }
    except OSError:
        fields = {}
    for key in ("model name", "Hardware", "Model", "cpu model"):
        if key in fields:
            return fields[key]
    return platform.processor() or platform.machine()


def runtime_version(runtime: str) -> tuple:
    """(version, provider) of the runtime measured."""
    if runtime == "executorch":
        from importlib import metadata

        return metadata.version("executorch"), "XnnpackBackend"
    import onnxruntime as ort

    return ort.__version__, "CPUExecutionProvider"


def describe_host(threads: int, runtime: str = "onnxruntime") -> dict:
    """What this process measures on: CPU, runtime and version, threads and the cores it may run on."""
    version, provider = runtime_version(runtime)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "runtime": runtime,
        "runtime_version": version,
        "provider": provider,
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "threads": threads,
        "cores": cores,
    }


def time_calls(infer, warmup: int, runs: int) -> list:
    """Wall time in ms of each of `runs` calls of `infer()`, after `warmup` untimed ones."""
    for _ in range(warmup):
        infer()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        start = clock()
        infer()
        samples.append((clock() - start) / 1e6)
    return samples


def time_model(model: str, shape: list, threads: int, warmup: int, runs: int) -> list:
    """Per-run wall time in ms of `runs` single-input inferences after `warmup` untimed ones."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    if model_input.type not in dtypes:
        raise ValueError(f"unsupported input type {model_input.type}; export the model with a float input")
    feed = {model_input.name: np.random.default_rng(0).standard_normal(shape).astype(dtypes[model_input.type])}
    return time_calls(lambda: session.run(None, feed), warmup, runs)


def time_program(model: str, shape: list, threads: int, warmup: int, runs: int) -> list:
    """As time_model, for an ExecuTorch program (.pte) in executorch.runtime, XNNPACK on `threads` threads."""
    import numpy as np
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool defaults to every core the machine has
    method = Runtime.get().load_program(model).load_method("forward")
    feed = [torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))]
    return time_calls(lambda: method.execute(feed), warmup, runs)


def timer(runtime: str):
    return time_program if runtime == "executorch" else time_model


def parse_ints(text: str) -> list:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--shape", type=parse_ints)
    parser.add_argument("--runtime", choices=("onnxruntime", "executorch"), default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cores", type=parse_ints, default=None, help="pin to these CPU ids, e.g. 0,1")
    parser.add_argument("--deadline-s", type=float, default=0, help="die by SIGALRM after this many seconds")
    parser.add_argument("--describe", action="store_true", help="print the device description only")
    parser.add_argument("--batch", help="a JSON file listing [model, shape] pairs to measure in turn")
    args = parser.parse_args(argv)
    try:
        if args.deadline_s > 0:
            signal.alarm(max(1, int(args.deadline_s + 0.999)))  # default action: terminate
        if args.cores:
            os.sched_setaffinity(0, args.cores)  # before onnxruntime creates any thread
        out = {"describe": describe_host(args.threads, args.runtime)}
        time_one = timer(args.runtime)
        if args.batch:
            with open(args.batch, encoding="utf-8") as f:
                items = json.load(f)
            out["batch_samples_ms"] = [time_one(m, list(shape), args.threads, args.warmup, args.runs)
                                       for m, shape in items]
        elif not args.describe:
            if not args.model or not args.shape:
                raise ValueError("--model and --shape are required unless --describe is given")
            out["samples_ms"] = time_one(args.model, args.shape, args.threads, args.warmup, args.runs)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the host as one line
        message = " ".join(str(exc).split()) or "no message"
        sys.stderr.write(f"ort_runner: {type(exc).__name__}: {message}\n")
        return 2
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
