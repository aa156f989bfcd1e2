"""A Ray cluster of `ray start` processes on this machine, as on real nodes: joining it at HOST:PORT with Ray's
token authentication as it ships, and a node lost mid-run. Each process of the cluster runs in its own session
and is killed at the end, whatever happened."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import selfseg
from selfseg import cli
from selfseg.io import is_temporary

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the cluster's processes through /proc")

RAY = Path(sys.executable).with_name("ray")
"""The `ray` command of the Ray beside this Python."""
SRC = Path(selfseg.__file__).resolve().parents[1]
DEADLINE = 120
"""Seconds any one command of these tests may take before it is killed and the test fails."""
FIT = ["--size", "64", "--max-iter", "15", "--threads", "1", "--seed", "0"]  # about 1.5 s per input on one core


def _inputs(folder: Path, n: int) -> Path:
    """``n`` noisy discs, 64 x 64: each fit runs its iterations rather than collapsing at once."""
    folder.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for k in range(n):
        disc = (yy - 32) ** 2 + (xx - 24 - 4 * k) ** 2 < 200 + 40 * k
        grey = np.where(disc, 70, 180) + np.random.default_rng(k).normal(0, 25, disc.shape)
        Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(folder / f"img{k}.png")
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _session(sid: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of every process of session ``sid`` (Ray's workers have process groups of their own)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            pid = int(cmdline.parent.name)
            if os.getsid(pid) == sid:
                found.append((pid, cmdline.read_bytes()))
        except (OSError, ValueError):
            continue
    return found


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``: a node lost at once, as by a power cut."""
    for pid, _ in _session(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_gone(sessions: list[int], seconds: float = 30) -> None:
    """Wait until no live process of ``sessions`` remains (zombies aside: their parent, not the test, reaps them)."""
    deadline = time.monotonic() + seconds

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False
    while any(alive(pid) for sid in sessions for pid, _ in _session(sid)):
        assert time.monotonic() < deadline, f"processes of sessions {sessions} still running {seconds} s after SIGKILL"
        time.sleep(0.1)


def _env(token: Path, **settings: str) -> dict[str, str]:
    """This environment without its RAY_ settings, with the cluster's token in the file ``token`` (not
    ~/.ray/auth_token), selfseg's source on PYTHONPATH and ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    path = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env | {"RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": path} | settings


def _ray_start(args: list[str], env: dict[str, str], log: Path, sessions: list[int]) -> str | None:
    """Run ``ray start ARGS`` in a session of its own (added to ``sessions``, its processes stay in it); None where
    it started, else the end of its output."""
    with open(log, "w") as out:
        process = subprocess.Popen([str(RAY), "start", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    sessions.append(process.pid)
    if process.wait(DEADLINE) == 0:
        return None
    return "\n".join(log.read_text().strip().splitlines()[-20:]) or "no output"


def _start_node(common: list[str], env: dict[str, str], log: Path, sessions: list[int], *, join: str | None) -> str:
    """Start the head on a free port (``join`` None) or a node joining the cluster at ``join``; one that fails is
    tried once more (the head on another free port: the one probed may have been taken meanwhile), then the test
    fails. Returns the cluster's HOST:PORT."""
    for _ in range(2):
        address = join or f"127.0.0.1:{_free_port()}"
        where = ["--address", address] if join else ["--head", "--port", address.rpartition(":")[2],
                                                     "--include-dashboard", "false"]
        failure = _ray_start([*where, *common], env, log, sessions)
        if failure is None:
            return address
        _kill_session(sessions.pop())
    pytest.fail(f"`ray start {' '.join(where[:3])}` failed twice; it said:\n{failure}")


@contextmanager
def ray_cluster(nodes: int) -> Iterator[tuple[str, Path, list[int]]]:
    """A cluster of ``nodes`` `ray start` nodes of 1 CPU each on this machine; yields the head's HOST:PORT, the
    token file and the sessions (head first). The head has token authentication on as Ray ships it (a token found,
    RAY_AUTH_MODE unset); the others join with RAY_AUTH_MODE=token, as `ray start --address` needs."""
    if not RAY.exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live below it
    token = root / "token"
    token.write_text(os.urandom(32).hex())
    sessions: list[int] = []
    common = ["--num-cpus", "1", "--disable-usage-stats", "--temp-dir", str(root / "ray")]
    try:
        address = _start_node(common, _env(token), root / "head.log", sessions, join=None)
        assert "Token authentication is enabled" in (root / "head.log").read_text()
        for k in range(1, nodes):
            _start_node(common, _env(token, RAY_AUTH_MODE="token"), root / f"node{k}.log", sessions, join=address)
        yield address, token, sessions
    finally:
        for sid in sessions:
            _kill_session(sid)
        _wait_gone(sessions)  # before their folder goes: a process still writing there would fill it again
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def selfseg_segment(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """``selfseg segment ARGS --quiet`` as its own process (and session, killed at the end)."""
    process = subprocess.Popen([sys.executable, "-m", "selfseg", "segment", *args, "--quiet"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        yield process
    finally:
        _kill_session(process.pid)
        process.communicate()


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def _images(out: Path) -> list[str]:
    with open(out / "results.csv", newline="") as handle:
        return sorted(row["image"] for row in csv.DictReader(handle))


def _local(src: Path, out: Path) -> dict[str, bytes]:
    """The local backend's files for ``src``, one process, the same fit."""
    assert cli.main(["segment", str(src), "--out", str(out), *FIT, "--workers", "1", "--quiet"]) == 0
    return _files(out)


def test_a_ray_start_that_fails_twice_fails_the_test(monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "RAY", Path("/bin/false"))
    with pytest.raises(pytest.fail.Exception, match=r"`ray start --head --port \d+` failed twice; it said:\nno output"):
        with ray_cluster(nodes=1):
            pass


@pytest.mark.ray
def test_nothing_at_the_address_is_one_line_at_once(tmp_path) -> None:
    pytest.importorskip("ray")
    src = _inputs(tmp_path / "in", 1)
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with selfseg_segment([str(src), "--out", str(tmp_path / "out"), "--backend", "ray", "--ray-address", address],
                         _env(tmp_path / "token")) as driver:
        _, err = driver.communicate(timeout=DEADLINE)
    assert driver.returncode == 2 and time.monotonic() - start < 30
    assert err == f"error: cannot join the Ray cluster at {address}: nothing answers there (Connection refused)\n"


@pytest.mark.ray
@pytest.mark.ray_cluster
def test_a_cluster_of_ray_start_is_joined_at_host_port_with_its_token(tmp_path) -> None:
    src = _inputs(tmp_path / "in", 2)
    with ray_cluster(nodes=1) as (address, token, _):
        args = [str(src), "--out", str(tmp_path / "ray"), *FIT, "--backend", "ray", "--ray-address", address]
        # without RAY_AUTH_MODE=token Ray sends no token to HOST:PORT; 2 connection attempts instead of Ray's 20
        with selfseg_segment(args, _env(token, RAY_gcs_server_port_wait_time_s="2")) as refused:
            _, err = refused.communicate(timeout=DEADLINE)
        assert refused.returncode == 2
        *ray_lines, last = err.splitlines()  # Ray's C++ client logs each attempt to stderr itself: nothing stops it
        assert all(re.match(r"\[[\d-]+ [\d:,]+ [A-Z] \d+ \d+\] \w+\.cc:\d+: ", line) for line in ray_lines), err
        assert [last] == [(
            f"error: the Ray cluster at {address} asks for its authentication token: set RAY_AUTH_MODE=token, with "
            "the cluster's token (`ray get-auth-token` on its head node) in RAY_AUTH_TOKEN or ~/.ray/auth_token")]
        with selfseg_segment(args, _env(token, RAY_AUTH_MODE="token")) as joined:
            out, err = joined.communicate(timeout=DEADLINE)
        assert joined.returncode == 0, err
    assert _images(tmp_path / "ray") == ["img0", "img1"]
    assert _files(tmp_path / "ray") == _local(src, tmp_path / "local")


@pytest.mark.ray
@pytest.mark.ray_cluster
def test_a_node_lost_mid_run_has_its_tasks_run_again_and_each_input_recorded_once(tmp_path) -> None:
    """The second node's processes are killed while it fits an input: Ray runs its task again on the head; the
    command ends with status 0 and the outputs of an uninterrupted local run."""
    src = _inputs(tmp_path / "in", 5)
    with ray_cluster(nodes=2) as (address, token, (_, node)):
        args = [str(src), "--out", str(tmp_path / "ray"), *FIT, "--backend", "ray", "--ray-address", address]
        with selfseg_segment(args, _env(token, RAY_AUTH_MODE="token")) as driver:
            deadline, killed, fitting_since = time.monotonic() + DEADLINE, False, None
            while driver.poll() is None and not killed and time.monotonic() < deadline:
                fitting = any(b"ray::_ray_task" in cmdline for _, cmdline in _session(node))
                fitting_since = (fitting_since or time.monotonic()) if fitting else None
                if fitting_since is not None and time.monotonic() - fitting_since > 0.3:  # inside a fit of 1.5 s
                    _kill_session(node)
                    killed = True
                time.sleep(0.05)
            out, err = driver.communicate(timeout=max(1.0, deadline - time.monotonic()))
    assert killed, "no task ran on the second node"
    assert driver.returncode == 0, err
    assert out.splitlines()[-1] == f"5 images segmented, 0 failed -> {tmp_path / 'ray'}"
    assert _images(tmp_path / "ray") == [f"img{k}" for k in range(5)]
    assert not [p.name for p in (tmp_path / "ray").iterdir() if is_temporary(p.name)]  # a write the kill cut short
    assert _files(tmp_path / "ray") == _local(src, tmp_path / "local")
