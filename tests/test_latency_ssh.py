"""SshDevice against a real OpenSSH server on 127.0.0.1 (started by tests/sshd.py), key auth only."""

from __future__ import annotations

import logging
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
from sshd import SshdServer, sshd_server  # noqa: F401 - pytest fixture
from torch import nn

from evaluators.latency import LatencyEvaluator, LocalDevice, SshDevice, export_onnx
from mnas_core.errors import DeviceError
from mnas_core.ssh import SshSession

SHAPE = (1, 3, 64, 64)


def conv_net() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU()]
    for _ in range(4):
        layers += [nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def ssh_device(server: SshdServer, tmp_path: Path, **overrides: object) -> SshDevice:
    settings: dict[str, object] = {
        "host": server.host, "port": server.port, "user": server.user, "key_file": str(server.user_key),
        "known_hosts": str(server.known_hosts), "python": sys.executable, "remote_dir": str(tmp_path / "remote"),
        "connect_timeout_s": 5, "timeout_s": 60, "warmup": 5, "runs": 30, "retries": 1, "retry_delay_s": 0.2,
    }
    return SshDevice(**{**settings, **overrides})


def one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text, f"error message must be one line: {text!r}"
    return text


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(conv_net(), SHAPE, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_ssh_measures_like_local(sshd_server: SshdServer, tmp_path: Path, model_file: Path) -> None:  # noqa: F811
    remote = ssh_device(sshd_server, tmp_path)
    local = LocalDevice(warmup=5, runs=30)
    info = remote.describe()
    assert info["runtime"] == "onnxruntime" and info["host"] == f"{sshd_server.user}@127.0.0.1:{sshd_server.port}"
    ssh_ms = min(remote.measure(model_file, SHAPE).median_ms for _ in range(2))
    local_ms = min(local.measure(model_file, SHAPE).median_ms for _ in range(2))
    print(f"\nssh {ssh_ms:.4f} ms, local {local_ms:.4f} ms, ratio {ssh_ms / local_ms:.3f}")
    assert 0.5 < ssh_ms / local_ms < 2.0
    assert not [p for p in (tmp_path / "remote").iterdir() if p.suffix == ".onnx"], "remote model removed"


def test_a_batch_is_measured_in_one_session_in_order_and_cleaned_up(
    sshd_server: SshdServer, tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import evaluators.latency.ssh as ssh_module

    sessions = []

    def counted_session(target: object) -> SshSession:  # the real session, counted
        sessions.append(target)
        return SshSession(target)  # type: ignore[arg-type]

    monkeypatch.setattr(ssh_module, "SshSession", counted_session)
    small = export_onnx(nn.Sequential(nn.Conv2d(3, 4, 1)), SHAPE, tmp_path / "small.onnx")
    device = ssh_device(sshd_server, tmp_path, runs=10, warmup=2)
    results = device.measure_many([(model_file, SHAPE), (small, SHAPE), (model_file, SHAPE)])
    assert len(sessions) == 1 and len(results) == 3
    assert results[1].median_ms < results[0].median_ms and results[1].median_ms < results[2].median_ms
    assert not [p for p in (tmp_path / "remote").iterdir() if p.suffix in (".onnx", ".json")], "batch removed"


def test_evaluator_over_ssh_caches_by_ssh_name(sshd_server: SshdServer, tmp_path: Path) -> None:  # noqa: F811
    device = ssh_device(sshd_server, tmp_path, runs=10, warmup=2)
    evaluator = LatencyEvaluator(device, cache_path=tmp_path / "c.sqlite", lock_dir=tmp_path / "locks")
    first = evaluator.measure(conv_net(), "arch-ssh", SHAPE)
    assert evaluator.measure(conv_net(), "arch-ssh", SHAPE) == first and evaluator.cache_hits == 1
    assert device.name.startswith("ssh:") and device.lock_name == f"ssh:127.0.0.1:{sshd_server.port}"


def test_hostile_file_name_is_copied_and_measured_and_nothing_runs(
    sshd_server: SshdServer, tmp_path: Path, model_file: Path  # noqa: F811
) -> None:
    token = uuid.uuid4().hex[:8]
    name = f"m o d;touch pwn1-{token};$(touch pwn2-{token})`touch pwn3-{token}`&& 'x'\"y\".onnx"
    hostile = tmp_path / name
    hostile.write_bytes(model_file.read_bytes())
    remote_dir = tmp_path / f"remote $(touch pwn4-{token}) dir"
    device = ssh_device(sshd_server, tmp_path, remote_dir=str(remote_dir), runs=5, warmup=1)
    try:
        assert device.measure(hostile, SHAPE).runs == 5
    finally:
        places = [Path.home(), tmp_path, remote_dir, Path.cwd(), Path("/tmp")]
        created = [p for place in places if place.is_dir() for p in place.glob(f"pwn*-{token}")]
        for path in created:
            path.unlink()
    assert not created, f"shell metacharacters in the path were executed: {created}"


def test_unknown_host_key_is_refused_by_default(sshd_server: SshdServer, tmp_path: Path) -> None:  # noqa: F811
    device = ssh_device(sshd_server, tmp_path, known_hosts=str(sshd_server.empty_known_hosts))
    with pytest.raises(DeviceError) as caught:
        device.describe()
    message = one_line(caught.value)
    assert "is not in" in message and "ssh-keyscan" in message and "SHA256:" in message


def test_mismatched_host_key_is_refused(sshd_server: SshdServer, tmp_path: Path) -> None:  # noqa: F811
    impostor = tmp_path / "known_hosts"
    key_type, blob = sshd_server.other_key.with_suffix(".pub").read_text().split()[:2]
    impostor.write_text(f"[127.0.0.1]:{sshd_server.port} {key_type} {blob}\n")
    with pytest.raises(DeviceError) as caught:
        ssh_device(sshd_server, tmp_path, known_hosts=str(impostor)).describe()
    assert "does not match" in one_line(caught.value)


def test_unknown_host_key_is_accepted_with_a_warning_when_not_strict(
    sshd_server: SshdServer, tmp_path: Path, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    with caplog.at_level(logging.WARNING, logger="evaluators.latency.ssh"):
        device = ssh_device(sshd_server, tmp_path, known_hosts=str(sshd_server.empty_known_hosts),
                            strict_host_key=False)
        assert device.describe()["runtime"] == "onnxruntime"
    assert any("strict_host_key=False" in r.getMessage() for r in caplog.records)
    assert sshd_server.empty_known_hosts.read_text() == "", "an unverified key is never saved"


def test_wrong_user_key_is_a_one_line_device_error(sshd_server: SshdServer, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(DeviceError) as caught:
        ssh_device(sshd_server, tmp_path, key_file=str(sshd_server.other_key)).describe()
    message = one_line(caught.value)
    assert "refused" in message and "BEGIN" not in message


def test_unreachable_port_fails_fast(sshd_server: SshdServer, tmp_path: Path) -> None:  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    device = ssh_device(sshd_server, tmp_path, port=closed_port, retries=2, retry_delay_s=0.2)
    started = time.monotonic()
    with pytest.raises(DeviceError) as caught:
        device.describe()
    assert time.monotonic() - started < 5
    assert "connection refused" in one_line(caught.value)


def test_missing_remote_python_names_the_fix(sshd_server: SshdServer, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(DeviceError) as caught:
        ssh_device(sshd_server, tmp_path, python="/nonexistent/python3").describe()
    assert "device.python" in one_line(caught.value)
