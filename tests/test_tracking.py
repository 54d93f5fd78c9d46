"""MlflowTracker against a real MLflow tracking server on 127.0.0.1, read back with MlflowClient."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mnas_core.errors import ConfigError
from mnas_nni.export import resolve_source
from mnas_nni.run.observers import ObserverGroup, SearchInfo
from mnas_nni.run.records import FAILED, SUCCEEDED, TrialRecord
from mnas_nni.tracking import MlflowTracker, flatten_params, mask_secrets, resolve_tracking_uri, ui_link
from search_spaces import ArchSpec, load_preset
from tests.mlflow_server import mlflow_server

A1 = load_preset("mnasnet_a1").to_dict()
SMALL = load_preset("mnasnet_small").to_dict()
CONFIG = {
    "seed": 0,
    "train": {"epochs": 2, "lr": 0.1, "optimizer": "sgd"},
    "reward": {"target_ms": 30.0, "alpha": -0.07, "beta": -0.07},
    "search_space": {"num_classes": 10, "base_blocks": ["r1_k3_s11_e1_i32_o16"] * 3},
    "device": {"host": "board", "password": "hunter2", "key_file": "/home/me/.ssh/id_ed25519",
               "api_token": "tok-123"},
    "search": {"machines": [{"host": "h", "ssh_key_file": "/k", "passphrase": "open sesame"}],
               "notes": "x" * 10_000},
    "data": {"url": "https://alice:s3cr3t@data.example/imagenet", "resolution": 32},
}
SECRETS = ("hunter2", "id_ed25519", "tok-123", "open sesame", "s3cr3t")


def history(epochs: int, base: float) -> list[dict]:
    return [{"epoch": e, "train_loss": 2.0 - 0.5 * e, "val_loss": 2.1 - 0.5 * e, "val_acc": base + 0.1 * e}
            for e in range(epochs)]


RECORDS = [
    TrialRecord(trial=1, status=SUCCEEDED, arch=A1, sample={"block1/kernel": 3, "block1/conv_op": "dsconv"},
                accuracy=0.62, latency_ms=25.0, reward=0.63, params=3_900_000, macs=312_000_000, train_seconds=4.0,
                measure_seconds=1.5, duration_seconds=6.0, latency={"median_ms": 25.0, "p90_ms": 27.5},
                history=history(3, 0.4), nni_trial_id="abc", finished_at="2026-01-02T03:04:05+00:00"),
    TrialRecord(trial=2, status=FAILED, sample={"block1/kernel": 5, "block1/conv_op": "mbconv6"},
                error="TrialError: loss became NaN at epoch 2", duration_seconds=2.0),
    TrialRecord(trial=3, status=SUCCEEDED, arch=SMALL, sample={"block1/kernel": 5, "block1/conv_op": "conv"},
                accuracy=0.55, latency_ms=12.0, reward=0.58, params=2_000_000, macs=68_000_000, train_seconds=3.0,
                measure_seconds=1.0, duration_seconds=4.5, history=history(2, 0.3)),
]


def search_info(run_dir: Path) -> SearchInfo:
    return SearchInfo(run_dir=run_dir, config=CONFIG, config_yaml="(ignored: the tracker dumps the masked config)",
                      device={"device": "local", "cpu": "x86_64", "runtime": "onnxruntime", "runtime_version": "1.2",
                              "threads": 1, "token": "dev-token-999"},
                      strategy="strategies.ppo_rnn.PpoRnnStrategy", target_ms=30.0,
                      decisions={"block1/kernel": [3, 5], "block1/conv_op": ["conv", "dsconv", "mbconv6"]})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        # What the tracker would set itself; set here so they are undone after this module.
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        patch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
            yield url


@pytest.fixture(scope="module")
def search(server, tmp_path_factory):
    """One whole tracked search: start, three trials (one failed), controller updates, end."""
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "trials.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in RECORDS))
    tracker = MlflowTracker(tracking_uri=server, experiment_name="unit", report_every=2, top_k=2)
    group = ObserverGroup(tracker)
    group.on_search_start(search_info(run_dir))
    for record in RECORDS:
        group.on_trial_end(record)
        group.on_controller_update(record.trial, {"loss": 1.0 / record.trial, "entropy": 0.5, "note": "text",
                                                  "reward_mean": 0.5 + 0.1 * record.trial})
    group.on_search_end(RECORDS)
    group.close()
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("unit")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {int(r.data.tags["trial"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return client, parent, children, run_dir


def test_one_parent_with_the_config_and_search_facts(search):
    client, parent, _, run_dir = search
    assert parent.info.status == "FINISHED"
    params, tags = parent.data.params, parent.data.tags
    assert params["train.lr"] == "0.1" and params["reward.target_ms"] == "30.0"
    assert json.loads(params["search_space.base_blocks"]) == ["r1_k3_s11_e1_i32_o16"] * 3
    assert len(params["search.notes"]) <= 6000  # MLflow's param value limit
    assert params["device/cpu"] == "x86_64"
    assert tags["strategy"] == "strategies.ppo_rnn.PpoRnnStrategy" and tags["target_ms"] == "30"
    assert "cpu=x86_64" in tags["device"] and tags["run_dir"] == str(run_dir)
    assert len(tags["mlflow.source.git.commit"]) == 40  # the tests run inside the project's git checkout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "device.json", "decisions.json", "trials.jsonl", "reports"} <= artifacts
    assert "lr: 0.1" in Path(client.download_artifacts(parent.info.run_id, "config.yaml")).read_text()


def test_three_nested_children_with_metrics_params_and_arch(search):
    client, parent, children, _ = search
    assert sorted(children) == [1, 2, 3]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children.values())
    first = children[1]
    assert first.info.status == "FINISHED" and first.info.run_name == "trial-001"
    metrics = first.data.metrics
    for key, value in {"accuracy": 0.62, "latency_ms": 25.0, "reward": 0.63, "params": 3.9e6, "macs": 3.12e8,
                       "duration_seconds": 6.0, "train_seconds": 4.0, "measure_seconds": 1.5,
                       "latency/p90_ms": 27.5}.items():
        assert metrics[key] == pytest.approx(value), key
    assert first.data.params["block1/kernel"] == "3" and first.data.params["block1/conv_op"] == "dsconv"
    assert first.data.params["arch/block3"] == "r3_k5_s22_e3_i24_o40_se0.25"
    assert first.data.tags["nni_trial_id"] == "abc"
    assert first.info.end_time == 1767323045000  # finished_at of the record
    assert first.info.end_time - first.info.start_time == 6000
    arch = json.loads(Path(client.download_artifacts(first.info.run_id, "arch.json")).read_text())
    assert ArchSpec.from_dict(arch) == ArchSpec.from_dict(A1)


def test_training_curves_are_step_metrics(search):
    client, _, children, _ = search
    curve = client.get_metric_history(children[1].info.run_id, "val_acc")
    assert [(m.step, round(m.value, 6)) for m in sorted(curve, key=lambda m: m.step)] == [(0, 0.4), (1, 0.5), (2, 0.6)]
    assert len(client.get_metric_history(children[3].info.run_id, "train_loss")) == 2


def test_failed_trial_is_a_failed_child_with_the_reason(search):
    _, _, children, _ = search
    failed = children[2]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["status"] == "failed"
    assert failed.data.tags["error"] == "TrialError: loss became NaN at epoch 2"
    assert failed.data.params["block1/conv_op"] == "mbconv6"
    assert "reward" not in failed.data.metrics and "accuracy" not in failed.data.metrics


def test_controller_stats_are_step_metrics_on_the_parent(search):
    client, parent, _, _ = search
    loss = sorted(client.get_metric_history(parent.info.run_id, "controller/loss"), key=lambda m: m.step)
    assert [m.step for m in loss] == [1, 2, 3]
    assert [m.value for m in loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert "controller/note" not in parent.data.metrics  # not a number: skipped
    rewards = sorted(client.get_metric_history(parent.info.run_id, "controller/reward_mean"), key=lambda m: m.step)
    assert [m.value for m in rewards] == pytest.approx([0.6, 0.7, 0.8])
    png = Path(client.download_artifacts(parent.info.run_id, "reports/controller.png")).read_bytes()
    assert png.startswith(b"\x89PNG")  # the batches' rewards drawn, beside the step metric
    best = sorted(client.get_metric_history(parent.info.run_id, "best_reward"), key=lambda m: m.step)
    assert [m.step for m in best] == [1, 2, 3] and [m.value for m in best] == pytest.approx([0.63] * 3)


def test_reports_and_pareto_set_on_the_parent(search):
    client, parent, _, _ = search
    reports = {a.path: a for a in client.list_artifacts(parent.info.run_id, "reports")}
    assert {"reports/pareto.png", "reports/reward.png", "reports/topk.md", "reports/topk.csv",
            "reports/pareto.json"} <= set(reports)
    png = Path(client.download_artifacts(parent.info.run_id, "reports/pareto.png")).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert parent.data.tags["pareto_trials"] == "3,1"  # sorted by latency: 12 ms, then 25 ms
    front = json.loads(Path(client.download_artifacts(parent.info.run_id, "reports/pareto.json")).read_text())
    assert [p["trial"] for p in front] == [3, 1]
    assert parent.data.tags["best_trial"] == "1" and parent.data.tags["trials_failed"] == "1"
    topk = Path(client.download_artifacts(parent.info.run_id, "reports/topk.md")).read_text()
    assert len(topk.strip().splitlines()) == 2 + 2


def test_secrets_are_masked_everywhere(search):
    client, parent, _, _ = search
    params = parent.data.params
    assert params["device.password"] == "***" and params["device.key_file"] == "***"
    assert params["device.api_token"] == "***" and params["device/token"] == "***"
    assert params["device.host"] == "board"
    assert params["data.url"] == "https://alice:***@data.example/imagenet"
    texts = [json.dumps(params), json.dumps(parent.data.tags)]
    for artifact in ("config.yaml", "device.json"):
        texts.append(Path(client.download_artifacts(parent.info.run_id, artifact)).read_text())
    for secret in SECRETS + ("dev-token-999",):
        assert not any(secret in text for text in texts), secret


def test_mask_helpers_on_nested_values():
    masked = mask_secrets({"a": {"db_password": "p", "list": [{"token": "t", "ok": 1}]}, "empty_secret": None})
    assert masked == {"a": {"db_password": "***", "list": [{"token": "***", "ok": 1}]}, "empty_secret": None}
    flat = flatten_params({"a": {"b": {"c": 1}, "d": [1, 2]}, "weird key:x": True})
    assert flat == {"a.b.c": "1", "a.d": "[1, 2]", "weird key_x": "True"}


def test_export_resolves_mlflow_runs(search, server, tmp_path):
    _, parent, children, _ = search
    # A parent run: its best child by reward (trial 1, mnasnet_a1).
    arch, hints = resolve_source(parent.info.run_id, tracking_uri=server)
    assert arch.key == ArchSpec.from_dict(A1).key
    assert hints == {"num_classes": 10, "resolution": 32}
    # A child run, bare or as runs:/ URI.
    assert resolve_source(children[3].info.run_id, tracking_uri=server)[0].key == ArchSpec.from_dict(SMALL).key
    assert resolve_source(f"runs:/{children[3].info.run_id}", tracking_uri=server)[0].name == "mnasnet_small"
    with pytest.raises(ConfigError, match="MLflow run 0123456789abcdef0123456789abcdef"):
        resolve_source("0123456789abcdef0123456789abcdef", tracking_uri=server)


def test_resumed_search_continues_its_parent_run(server, tmp_path):
    run_dir = tmp_path / "run"
    first = MlflowTracker(tracking_uri=server, experiment_name="resume", report_every=0)
    first.on_search_start(search_info(run_dir))
    first.on_trial_end(RECORDS[0])
    first.close()  # the search died: the parent is KILLED, not left RUNNING
    client = MlflowClient(server)
    assert client.get_run(first.parent_run_id).info.status == "KILLED"

    (run_dir / "trials.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "trials.jsonl").write_text(json.dumps(RECORDS[0].to_dict()) + "\n")
    info = search_info(run_dir)
    info.resumed = True
    second = MlflowTracker(tracking_uri=server, experiment_name="resume", report_every=0)
    second.on_search_start(info)
    assert second.parent_run_id == first.parent_run_id
    for record in RECORDS:  # trial 1 again (replayed) and the two new ones
        second.on_trial_end(record)
    second.on_search_end(RECORDS)
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert len(runs) == 4  # one parent, three trials, trial 1 once
    assert sorted(r.data.tags["trial"] for r in runs if "trial" in r.data.tags) == ["1", "2", "3"]
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"


def test_unreachable_server_is_one_fast_clear_error(tmp_path):
    tracker = MlflowTracker(tracking_uri="http://127.0.0.1:9", retries=3)
    start = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        ObserverGroup(tracker).on_search_start(search_info(tmp_path))
    assert time.monotonic() - start < 10
    assert str(caught.value) == ("MLflow tracking server http://127.0.0.1:9 is unreachable; "
                                 "start it or set tracking=none")


def test_sqlite_default_is_absolute_and_fixed_at_construction(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = MlflowTracker()
    monkeypatch.chdir("/")
    assert tracker.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///rel/x.db").startswith("sqlite:////")


class FlakyProxy:
    """A TCP proxy to the server that can drop every connection for a while: a real network hiccup."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.drop_next = 0
        self.dropped = 0
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.drop_next > 0:
                self.drop_next -= 1
                self.dropped += 1
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def hiccup(self, connections: int) -> None:
        """Cut live connections and refuse the next `connections` ones."""
        self.drop_next = connections
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open.clear()

    def close(self) -> None:
        self.hiccup(0)
        self.listener.close()


def test_hiccups_are_retried_an_outage_is_said_once_and_its_trials_are_sent_when_it_ends(server, tmp_path, caplog):
    proxy = FlakyProxy(int(server.rsplit(":", 1)[1]))
    tracker = MlflowTracker(tracking_uri=proxy.url, experiment_name="flaky", retries=2, report_every=0)
    tracker.on_search_start(search_info(tmp_path))
    caplog.set_level(logging.WARNING, logger="mnas_nni.tracking")
    # A short hiccup: the call is retried quietly and the trial lands whole.
    proxy.hiccup(2)
    tracker.on_trial_end(RECORDS[0])
    assert proxy.dropped >= 1 and not caplog.records
    # A long outage: said once; the trial waits, the update is skipped; the search goes on, soon.
    proxy.hiccup(10_000)
    start = time.monotonic()
    tracker.on_trial_end(RECORDS[1])
    tracker.on_controller_update(1, {"loss": 1.0})
    assert time.monotonic() - start < 30
    assert [r.getMessage() for r in caplog.records if "stopped answering" in r.getMessage()] and \
        len(caplog.records) == 1 and [r.trial for r in tracker.pending] == [2]
    # It answers again: the next trial sends the one that waited first.
    proxy.drop_next = 0
    tracker.on_trial_end(RECORDS[2])
    assert "answers again" in caplog.records[-1].getMessage() and not tracker.pending
    proxy.close()
    tracker.close()
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name("flaky").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["trial"] for r in children) == ["1", "2", "3"]  # each once
    first = next(r for r in children if r.data.tags.get("trial") == "1")
    assert first.data.metrics["reward"] == pytest.approx(0.63) and first.info.status == "FINISHED"


def test_a_sqlite_store_gets_the_command_that_serves_it():
    serve, link = ui_link("sqlite:////tmp/x/mlflow.db", "7")
    assert serve == f"{sys.executable} -m mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db --host 127.0.0.1 " \
                    "--port 5000"  # this interpreter's mlflow: it works without an activated venv
    assert link == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
