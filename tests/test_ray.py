"""The Ray backend: the same outputs as the local one, bad inputs, a killed worker, a missing ray."""

from __future__ import annotations

import csv
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from selfseg import cli, io
from selfseg.optional import MissingDependencyError
from selfseg.runner import OUTPUT_SUFFIXES, RayJoinError, run_batch, workers

FAST = dict(size=32, max_iter=2, device="cpu", n_channels=8)


def _inputs(folder: Path, n: int = 3) -> Path:
    folder.mkdir()
    for k in range(n):
        yy, xx = np.mgrid[:40, :48]
        grey = np.where((yy - 20) ** 2 + (xx - 12 - 6 * k) ** 2 < 90 + 30 * k, 50, 200).astype(np.uint8)
        Image.fromarray(grey).save(folder / f"img{k}.png")
    return folder


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _start_two_workers(ray: ModuleType) -> None:
    """Two Ray workers that have imported the package, each holding a CPU at the same moment, so that a test's
    first two tasks start together (a worker started for a task imports torch first, for seconds)."""

    def warm() -> None:  # defined here, so that Ray sends it by value (the tests' modules are not on its path)
        import selfseg.runner.workers  # noqa: F401

        time.sleep(0.5)

    ray.get([ray.remote(num_cpus=1)(warm).remote() for _ in range(2)])


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module's tests."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    _start_two_workers(ray)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_outputs_equal_the_local_backend(local_ray, tmp_path) -> None:
    src = _inputs(tmp_path / "in")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    local = run_batch([src], tmp_path / "local", workers=1, progress=False, **FAST)
    remote = run_batch([src], tmp_path / "ray", backend="ray", progress=False, **FAST)
    assert _files(tmp_path / "ray") == _files(tmp_path / "local") and len(_files(tmp_path / "ray")) == 9
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    assert remote.failures == local.failures and [path for path, _ in local.failures] == [str(src / "broken.png")]
    assert (tmp_path / "ray" / "failures.csv").read_bytes() == (tmp_path / "local" / "failures.csv").read_bytes()
    again = run_batch([src], tmp_path / "ray", backend="ray", resume=True, progress=False, **FAST)
    assert sorted(again.skipped) == ["img0", "img1", "img2"] and again.results == []


def _kill_first_task(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker process seen running a selfseg task."""
    while not stop.is_set() and not killed:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if b"ray::_ray_task" in cmdline.read_bytes():
                    pid = int(cmdline.parent.name)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            except (OSError, ValueError):
                continue
        time.sleep(0.01)


@pytest.mark.ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_a_killed_worker_is_retried_and_recorded_once(local_ray, tmp_path) -> None:
    src = _inputs(tmp_path / "in")
    slow = {**FAST, "max_iter": 40, "min_iter": 40, "size": 64}  # about a second per task: time to kill one
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_task, args=(stop, killed))
    killer.start()
    try:
        report = run_batch([src], tmp_path / "ray", backend="ray", progress=False, **slow)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray task process was seen"
    assert report.failures == [] and sorted(row["image"] for row in report.results) == ["img0", "img1", "img2"]
    assert [row["image"] for row in _rows(tmp_path / "ray")] == ["img0", "img1", "img2"]
    run_batch([src], tmp_path / "local", workers=1, progress=False, **slow)
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


@pytest.mark.ray
def test_a_stop_lets_the_running_tasks_finish_and_starts_no_other(local_ray, tmp_path) -> None:
    """A disk that refuses results.csv after the first input (simulated in the driver): the inputs already running
    finish their files, the others are never fitted, no input is half-written and no temporary file remains.

    Ray does not start its queued tasks in the order they were submitted, and it starts one on the CPU the first
    result frees before the driver can cancel it; so which inputs finish is Ray's to choose. What the stop
    guarantees is checked: two inputs were running together (2 CPUs, two workers started beforehand), both
    finish; each input takes far longer than the driver needs to stop, so at most two more start (on the CPUs
    the first two free) and the others are never fitted."""
    src = tmp_path / "in"
    src.mkdir()
    yy, xx = np.mgrid[:160, :160]
    for k in range(6):
        disk = (yy - 80) ** 2 + (xx - 60 - 4 * k) ** 2 < 1500 + 200 * k
        Image.fromarray(np.where(disk, 50, 200).astype(np.uint8)).save(src / f"img{k}.png")
    out, slow = tmp_path / "out", {**FAST, "size": None, "max_iter": 30, "min_iter": 30}
    _start_two_workers(local_ray)  # the test before killed one

    def refuse(row: dict) -> None:
        raise io.WriteError(errno.ENOSPC, out / "results.csv")

    with pytest.raises(io.WriteError):
        run_batch([src], out, backend="ray", progress=False, on_result=refuse, **slow)
    stems = [f"img{k}" for k in range(6)]
    complete = {stem for stem in stems if all((out / f"{stem}{suffix}").exists() for suffix in OUTPUT_SUFFIXES)}
    assert 2 <= len(complete) <= 4, sorted(complete)
    written = {f"{stem}{suffix}" for stem in complete for suffix in OUTPUT_SUFFIXES}
    assert {p.name for p in out.iterdir()} == written | {"results.csv"}  # no temporary file, no partial input


def test_missing_ray_is_one_clear_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    src = _inputs(tmp_path / "in", 1)
    hint = r'ray is not installed; the Ray backend needs it: pip install "selfseg\[ray\]"'
    with pytest.raises(MissingDependencyError, match=hint):
        run_batch([src], tmp_path / "out", backend="ray", progress=False, **FAST)
    assert cli.main(["segment", str(src), "--out", str(tmp_path / "o"), "--backend", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "selfseg[ray]"' in err


class _FakeRay:
    """A ``ray`` whose ``init`` raises ``error``: how a cluster refuses a driver, without a cluster."""

    class exceptions:  # noqa: N801 - ray.exceptions
        class AuthenticationError(Exception):
            pass

    def __init__(self, error: Exception) -> None:
        self.error = error

    def is_initialized(self) -> bool:
        return False

    def init(self, **options) -> None:
        logging.getLogger("ray").setLevel(options["logging_level"])  # as Ray's own setup_logger does
        raise self.error


@pytest.fixture
def listening() -> str:
    """HOST:PORT of a socket that accepts connections (``_check_answers`` passes), closed after."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


def _join(monkeypatch, address: str, error: Exception, **env: str) -> str:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(workers, "optional_import", lambda name: _FakeRay(error))
    with pytest.raises(RayJoinError) as caught:
        next(workers.run_ray_tasks([], threads=1, address=address, cpus=1, gpus=0))
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("reason", [
    "Version mismatch: The cluster was started with:\n    Ray: 2.59.0\n    Python: 3.12.3\n...",
    "This node has an IP address of 10.0.0.5, and Ray expects this IP address to be either the GCS address or ...",
])
def test_a_runtime_error_of_ray_init_is_one_line(monkeypatch, listening, reason) -> None:
    before = logging.getLogger("ray").level
    message = _join(monkeypatch, listening, RuntimeError(reason))
    assert logging.getLogger("ray").level == before  # silenced while joining only
    assert message == f"cannot join the Ray cluster at {listening}: {reason.splitlines()[0]}"


def test_a_refused_token_says_where_it_was_read_from(monkeypatch, listening, tmp_path) -> None:
    token = tmp_path / "token"
    refused = _FakeRay.exceptions.AuthenticationError("Authentication failed: invalid token")
    assert _join(monkeypatch, listening, refused) == (
        f"the Ray cluster at {listening} asks for its authentication token: set RAY_AUTH_MODE=token, with the "
        "cluster's token (`ray get-auth-token` on its head node) in RAY_AUTH_TOKEN or ~/.ray/auth_token")
    assert _join(monkeypatch, listening, refused, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)) == (
        f"the Ray cluster at {listening} asks for its authentication token, and there is none in {token}: put the "
        "cluster's token there (`ray get-auth-token` on its head node)")
    token.write_text("0" * 64)
    assert _join(monkeypatch, listening, refused, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)) == (
        f"the Ray cluster at {listening} refused the authentication token read from {token}: it must be the "
        "cluster's (`ray get-auth-token` on its head node)")
    assert _join(monkeypatch, listening, refused, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64) == (
        f"the Ray cluster at {listening} refused the authentication token read from RAY_AUTH_TOKEN: it must be the "
        "cluster's (`ray get-auth-token` on its head node)")


def test_an_exception_chain_with_a_cycle_is_walked_once(monkeypatch, listening) -> None:
    first, second = ConnectionError("refused"), RuntimeError("AuthenticationError: invalid token")
    first.__context__, second.__context__ = second, first
    assert _join(monkeypatch, listening, first).startswith(f"the Ray cluster at {listening} asks for its authentication")
