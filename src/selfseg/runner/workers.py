"""Worker planning and execution: how many processes fit a batch, and ``run_tasks``, which runs the tasks
in this process, in a pool of local worker processes or as tasks of a Ray cluster (``run_ray_tasks``), and
hands each outcome back to the driver as it finishes (only the driver writes the tables)."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from types import ModuleType

import torch

from selfseg.checks import look_up_option
from selfseg.fitting import default_batch_images, resolve_device, torch_threads
from selfseg.methods import BASELINES
from selfseg.optional import optional_import
from selfseg.runner.task import Outcome, Task, run_tasks_together
from selfseg.settings import FitSettings

__all__ = [
    "BACKENDS",
    "Execution",
    "RayJoinError",
    "WORKER_MEMORY_GIB",
    "available_cores",
    "available_memory_gib",
    "check_workers",
    "plan_batch_images",
    "plan_workers",
    "run_ray_tasks",
    "run_tasks",
]

BACKENDS = ("local", "ray")
"""Where the fits run: this machine's processes, or a Ray cluster."""
RAY_RETRIES = 2
"""Times Ray runs a task again whose worker process died (killed, out of memory, its node lost) before it is a
failure."""

WORKER_MEMORY_GIB: dict[str, float] = {"s3net": 1.0, "msformer": 1.0, "dfc": 0.5, "otsu": 0.5, "kmeans": 0.5}
"""Peak resident memory of a process fitting one input at the default working size and widths, per method, in
GiB: the measured peak rounded up (docs/speed.md), so that ``plan_workers`` never starts more workers than the
free memory holds."""


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one, e.g. a cluster job's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory_gib() -> float | None:
    """Memory available to new processes (``MemAvailable`` of /proc/meminfo), in GiB; None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def check_workers(workers: int | str, threads: int) -> None:
    """ValueError unless ``workers`` is ``"auto"`` or >= 1, ``threads`` >= 1 and ``workers`` x ``threads``
    fits ``available_cores()``."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if workers == "auto":
        return
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be 'auto' or at least 1, got {workers!r}")
    if workers * threads > available_cores():
        raise ValueError(
            f"{workers} workers x {threads} threads = {workers * threads} exceeds the {available_cores()} CPU cores"
        )


def plan_workers(workers: int | str, threads: int, *, method: str, device: str, inputs: int) -> int:
    """The worker processes to fit ``inputs`` inputs with: ``workers`` itself (``check_workers``), or for
    ``"auto"`` the most that ``available_cores() // threads``, the available memory
    (``WORKER_MEMORY_GIB[method]`` each) and ``inputs`` allow, at least 1; 1 on a CUDA device."""
    check_workers(workers, threads)
    if workers != "auto":
        return workers
    if resolve_device(device).type == "cuda":
        return 1
    memory = available_memory_gib()
    by_memory = inputs if memory is None else int(memory // WORKER_MEMORY_GIB[method])
    return max(1, min(available_cores() // threads, by_memory, inputs))


NATIVE_SIDE = 512
"""The working side ``plan_batch_images`` budgets GPU memory for when fits run at the native size (``size=None``)."""


def check_batch_images(batch_images: int | None) -> None:
    """ValueError unless ``batch_images`` is None (auto) or an integer of at least 1."""
    if batch_images is not None and (not isinstance(batch_images, int) or batch_images < 1):
        raise ValueError(f"batch_images must be None (auto) or at least 1, got {batch_images!r}")


def plan_batch_images(batch_images: int | None, *, method: str, device: str, size: int | None) -> int:
    """The networks fitted at once (``fitting.fit_networks``): ``batch_images`` itself (at least 1), or for
    None ``fitting.default_batch_images`` at a square working size of ``size`` (None: ``NATIVE_SIDE``); 1 for the
    baselines."""
    if batch_images is not None:
        check_batch_images(batch_images)
        return batch_images
    if method in BASELINES:
        return 1
    side = size or NATIVE_SIDE
    return default_batch_images(method, device, side, side)


def _groups(tasks: Sequence[Task], size: int) -> list[list[Task]]:
    """``tasks`` in consecutive groups of ``size``, fitted together by ``run_tasks_together``."""
    return [list(tasks[start : start + size]) for start in range(0, len(tasks), size)]


def _init_worker(threads: int, parent: int) -> None:
    """Worker process start: ``threads`` torch threads, so that workers x threads fits the cores. Ctrl-C
    ends a worker at once: its files are written atomically, so only complete ones exist, and the main
    process records nothing more. So does the end of the main process ``parent``, even by SIGKILL."""
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))
    _end_with(parent)


def _end_with(parent: int) -> None:
    """Have the OS kill this process when process ``parent`` ends (Linux ``PR_SET_PDEATHSIG``; a no-op
    elsewhere). A forked worker holds copies of the pipes it waits on, so it would never see them close."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the call
        os._exit(1)


def _start_method(device: str) -> str:
    """How worker processes start: forked on the CPU, so that they inherit the imported libraries
    (importing torch costs each spawned worker about 3 s); spawned for CUDA, which cannot be forked."""
    cpu = resolve_device(device).type == "cpu"
    return "fork" if cpu and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def run_tasks(
    tasks: Sequence[Task],
    *,
    workers: int,
    threads: int,
    device: str,
    on_start: Callable[[Task], None],
    batch_images: int = 1,
) -> Iterator[tuple[Task, Outcome]]:
    """Run each task; yield ``(task, outcome)`` as each finishes. Consecutive groups of ``batch_images`` tasks run
    together (``run_tasks_together``: their networks fitted ``batch_images`` at once).

    One worker: in this process, in order, with ``threads`` torch threads (restored after), calling
    ``on_start`` before each group. More: a pool of ``workers`` processes (``_start_method``, ``_init_worker``),
    in the order they finish; an exception (Ctrl-C) or closing the iterator (a full disk) cancels what has not
    started and waits for what has.
    """
    groups = _groups(tasks, batch_images)
    if workers == 1:
        with torch_threads(threads):
            for group in groups:
                on_start(group[0])
                yield from zip(group, run_tasks_together(group, batch_images))
        return
    mp_context = multiprocessing.get_context(_start_method(device))
    with ProcessPoolExecutor(workers, mp_context=mp_context, initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(run_tasks_together, group, batch_images): group for group in groups}
        try:
            for future in as_completed(futures):
                yield from zip(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _ray_task(tasks: list[Task], threads: int, batch_images: int) -> list[Outcome]:
    """``run_tasks_together`` in a Ray worker process, with ``threads`` torch threads (results depend on them).
    SIGINT is ignored meanwhile: Ray's cancel without ``force`` interrupts a running task with it (in the main
    thread, where Ray runs tasks), and a task that has started finishes instead (``run_ray_tasks``)."""
    torch.set_num_threads(threads)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return run_tasks_together(tasks, batch_images)
    finally:
        signal.signal(signal.SIGINT, before)


def _first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name where it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _died(error: Exception) -> str:
    """The failure reason of a task whose Ray worker died ``RAY_RETRIES + 1`` times, on one line."""
    return f"worker failed {RAY_RETRIES + 1} times (Ray: {type(error).__name__}: {_first_line(error)})"


class RayJoinError(ConnectionError):
    """The Ray cluster at ``--ray-address`` cannot be joined; the message says why in one line."""


def _token_source() -> tuple[str, bool]:
    """Where Ray reads its authentication token from (``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``
    names, else ``~/.ray/auth_token``), and whether a token is there."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN", True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join("~", ".ray", "auth_token")
    return path, os.path.isfile(os.path.expanduser(path))


def _join_error(address: str, error: BaseException) -> RayJoinError:
    """The one-line error for a ``ray.init(address=address)`` that raised ``error``. For an authentication error
    (Ray raises ``AuthenticationError``, or names it in the text of its ``ConnectionError``'s cause): without
    ``RAY_AUTH_MODE=token``, what to set (Ray sends a token to an address given as ``HOST:PORT`` only then, as for
    ``ray start --address``); with it, that the token was refused, or is missing, and where it is read from
    (``_token_source``)."""
    chain = [error]
    while (link := chain[-1].__cause__ or chain[-1].__context__) is not None and link not in chain:  # a cycle ends
        chain.append(link)
    if not any("AuthenticationError" in f"{type(link).__name__} {link}" for link in chain):
        return RayJoinError(f"cannot join the Ray cluster at {address}: {_first_line(error)}")
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return RayJoinError(
            f"the Ray cluster at {address} asks for its authentication token: set RAY_AUTH_MODE=token, with the "
            "cluster's token (`ray get-auth-token` on its head node) in RAY_AUTH_TOKEN or ~/.ray/auth_token"
        )
    source, found = _token_source()
    if not found:
        return RayJoinError(f"the Ray cluster at {address} asks for its authentication token, and there is none in "
                            f"{source}: put the cluster's token there (`ray get-auth-token` on its head node)")
    return RayJoinError(f"the Ray cluster at {address} refused the authentication token read from {source}: it "
                        "must be the cluster's (`ray get-auth-token` on its head node)")


def _check_answers(address: str) -> None:
    """:class:`RayJoinError` at once where ``address`` is ``HOST:PORT`` and nothing there accepts a connection
    (``ray.init`` would try for about 13 minutes); ``auto`` and ``ray://`` addresses are Ray's to resolve."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise RayJoinError(f"cannot join the Ray cluster at {address}: nothing answers there ({err.strerror or err})") from err


def _init_ray(ray: ModuleType, address: str | None) -> None:
    """Start a local Ray on this machine's cores (``address`` None), or join the cluster at ``address``
    (:class:`RayJoinError` where it cannot be joined: nothing answers, a refused or missing token, another Ray
    version on the cluster, this machine not a node of it). Ray's own log lines (its ``ray`` loggers: the local
    instance started, each connection attempt) are silenced meanwhile, the level of the ``ray`` logger restored
    after: the outcome is selfseg's to say, in one line."""
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.CRITICAL + 1)
    try:
        if address is None:
            ray.init(num_cpus=available_cores(), **options)
            return
        _check_answers(address)
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as err:
            # RuntimeError: another Ray version on the cluster, or HOST:PORT given on a machine that is not a node
            raise _join_error(address, err) from err
    finally:
        ray_logger.setLevel(level)


def run_ray_tasks(
    tasks: Sequence[Task],
    *,
    threads: int,
    address: str | None,
    cpus: float,
    gpus: float,
    batch_images: int = 1,
) -> Iterator[tuple[Task, Outcome]]:
    """Run each group of ``batch_images`` consecutive tasks as a Ray task (``run_tasks_together``; ``cpus`` CPUs
    and ``gpus`` GPUs each, fractions allowed); yield ``(task, outcome)`` in the order the groups finish.

    Uses the Ray of this process if it is initialised, else connects to ``address`` (None: starts a local
    Ray on this machine's cores, shut down at the end; :class:`RayJoinError` where the cluster cannot be joined).
    A task whose worker dies, or whose node is lost, is run again by Ray (``RAY_RETRIES`` times), then reported
    as a failure; the worker writes the input's files (atomically, to the output folder, which must be shared
    with the driver), the driver its rows. Ctrl-C ends every task at
    once (the next run removes what they leave); another exception or closing the iterator (a full disk) cancels
    the tasks not yet started and waits for those running to finish.
    """
    ray = optional_import("ray")
    started = not ray.is_initialized()
    if started:
        _init_ray(ray, address)
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=RAY_RETRIES)(_ray_task)
    groups = {remote.remote(group, threads, batch_images): group for group in _groups(tasks, batch_images)}
    pending = list(groups)
    try:
        while pending:
            (ref,), pending = ray.wait(pending, num_returns=1)
            try:
                outcomes = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker died every time (a task's own errors are outcomes)
                outcomes = [({}, _died(err))] * len(groups[ref])
            yield from zip(groups[ref], outcomes)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    except BaseException:
        for ref in pending:
            ray.cancel(ref)  # a task that has started ignores it (``_ray_task``)
        if pending:
            ray.wait(pending, num_returns=len(pending))
        raise
    finally:
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class Execution:
    """Where and how a batch's tasks run, checked once: ``workers`` processes of ``threads`` torch threads each
    (or one Ray task per group with ``backend="ray"``), ``batch_images`` networks fitted at once."""

    workers: int | str = "auto"
    threads: int = 1
    batch_images: int | None = None
    backend: str = "local"
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0

    def __post_init__(self) -> None:
        check_workers(self.workers, self.threads)
        check_batch_images(self.batch_images)
        look_up_option(self.backend, BACKENDS, name="backend")
        if not self.ray_cpus > 0 or not self.ray_gpus >= 0:
            raise ValueError(f"ray_cpus must be > 0 and ray_gpus >= 0, got {self.ray_cpus} and {self.ray_gpus}")

    def run(
        self, tasks: Sequence[Task], settings: FitSettings, on_start: Callable[[Task], None]
    ) -> Iterator[tuple[Task, Outcome]]:
        """Run ``tasks`` fitted with ``settings``; yield (task, outcome) as each finishes."""
        batch_images = plan_batch_images(self.batch_images, method=settings.method, device=settings.device,
                                         size=settings.size)
        if self.backend == "ray":
            return run_ray_tasks(tasks, threads=self.threads, address=self.ray_address, cpus=self.ray_cpus,
                                 gpus=self.ray_gpus, batch_images=batch_images)
        workers = plan_workers(self.workers, self.threads, method=settings.method, device=settings.device,
                               inputs=len(tasks))
        return run_tasks(tasks, workers=workers, threads=self.threads, device=settings.device, on_start=on_start,
                         batch_images=batch_images)
