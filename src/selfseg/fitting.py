"""The fitting core: SGD on fresh networks, one per image, until the stop rule; one image or many per pass.

``fit_networks`` is the one path of every fit. The images are grouped by channels and working shape
(``working_size``); in a group, up to ``batch_images`` networks are fitted at once. Each network draws its random
transforms from its own generator, has its own SGD momentum (``sgd_step``) and its own ``StopRule``; a network that
stops leaves its slot, its fitted weights in its own module, and the group's next image takes the slot.

With ``batch_images`` 1 each network runs as the module it is. With more, their parameters are stacked
(``torch.func.stack_module_state``) and one forward and backward pass runs them all (``torch.func.vmap`` over
``torch.func.functional_call``); each normalises with its own BatchNorm batch statistics (fits never use running
statistics: ``torch.func.replace_all_batch_norm_modules_``). Both give the same fits up to floating-point rounding
(vmap sums in another order; docs/methods.md).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

from selfseg.settings import FitSettings

__all__ = [
    "CPU_BATCH_IMAGES",
    "CUDA_MEMORY_PER_IMAGE_MIB",
    "MIN_WORKING_SIDE",
    "MOMENTUM",
    "Network",
    "StopRule",
    "autocast",
    "default_batch_images",
    "fit_networks",
    "prepare_input",
    "resolve_device",
    "sgd_step",
    "torch_threads",
    "working_size",
]

MOMENTUM = 0.9
"""Momentum of every fit's SGD (no dampening, no weight decay)."""

MIN_WORKING_SIDE = 8
"""Shortest working side in pixels: thinner images are stretched to it (the networks need context)."""

CPU_BATCH_IMAGES = 1
"""Default ``batch_images`` on the CPU: batching does not pay there at the default working size (docs/speed.md)."""

CUDA_MEMORY_PER_IMAGE_MIB: dict[str, float] = {"s3net": 220.0, "msformer": 230.0, "dfc": 40.0}
"""Memory one more image of a batch takes at a 96 x 96 working size and the default widths, per method, in MiB
(benchmarks/batch.py, rounded up); ``default_batch_images`` scales it by the working pixels."""

MAX_BATCH_IMAGES = 256
"""Upper bound of the default ``batch_images`` on a GPU."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads, restoring the former count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def keep_freed_memory() -> None:
    """Let glibc reuse freed large blocks instead of unmapping them (a no-op elsewhere): every iteration allocates
    and frees the same large blocks, which glibc's defaults would map and page-fault afresh each time."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def default_batch_images(method: str, device: str | torch.device, height: int, width: int) -> int:
    """``batch_images`` when none is given, for a network ``method`` at an (height, width) working size.

    CPU: ``CPU_BATCH_IMAGES``. CUDA: as many images as half the device's free memory holds at
    ``CUDA_MEMORY_PER_IMAGE_MIB`` (scaled by ``height * width / 96**2``), between 1 and ``MAX_BATCH_IMAGES``.

    >>> default_batch_images("s3net", "cpu", 96, 96)
    1
    """
    dev = resolve_device(device)
    if dev.type != "cuda":
        return CPU_BATCH_IMAGES
    free, _ = torch.cuda.mem_get_info(dev)
    per_image = CUDA_MEMORY_PER_IMAGE_MIB[method] * 2**20 * height * width / 96**2
    return max(1, min(MAX_BATCH_IMAGES, int(free / 2 / per_image)))


def working_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """Scale (height, width) so that the longer side is ``size`` (None: native), each side >= MIN_WORKING_SIDE."""
    scale = 1.0 if size is None else size / max(height, width)
    return max(MIN_WORKING_SIDE, round(height * scale)), max(MIN_WORKING_SIDE, round(width * scale))


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bfloat16 autocast for ``precision="bfloat16"``, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def prepare_input(pixels: np.ndarray, size: int | None, device: torch.device) -> Tensor:
    """(H, W, C) image in [0, 1] -> (1, C, h, w) channels-last tensor at the working size (``working_size``)."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device)
    work = working_size(*pixels.shape[:2], size)
    if work != pixels.shape[:2]:
        x = F.interpolate(x, size=work, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return x.contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class StopRule:
    """When a fit stops: after ``max_iter`` steps, or after at least ``min_iter`` steps once at most ``min_labels``
    clusters remain or fewer than ``tol`` of the pixels changed cluster in each of the last ``patience`` steps."""

    max_iter: int
    min_labels: int
    min_iter: int
    tol: float
    patience: int

    @classmethod
    def of(cls, settings: FitSettings) -> StopRule:
        """The stop rule of a network's ``settings``, the method's defaults filled in."""
        spec = settings.spec
        return cls(
            max_iter=settings.iterations,
            min_labels=spec.min_labels if settings.min_labels is None else settings.min_labels,
            min_iter=spec.min_iter if settings.min_iter is None else settings.min_iter,
            tol=settings.tol,
            patience=settings.patience,
        )

    def done(self, history: list[dict[str, float]]) -> bool:
        """Whether a fit with these per-iteration records (``n_labels``, ``changed``) stops now."""
        recent = [h["changed"] for h in history[-self.patience :]]
        stable = len(recent) == self.patience and max(recent) < self.tol
        converged = len(history) - 1 >= self.min_iter and (history[-1]["n_labels"] <= self.min_labels or stable)
        return converged or len(history) >= self.max_iter


def sgd_step(params: Sequence[Tensor], momentum: Sequence[Tensor], grads: Sequence[Tensor | None], lr: float) -> None:
    """``torch.optim.SGD``'s update with ``MOMENTUM``, in place: buf = momentum * buf + grad; param -= lr * buf.
    The buffers start at zero; a parameter without a gradient is left as it is."""
    with torch.no_grad():
        for param, buffer, grad in zip(params, momentum, grads):
            if grad is not None:
                buffer.mul_(MOMENTUM).add_(grad)
                param.add_(buffer, alpha=-lr)


@dataclass
class Network:
    """One image's network and its fit so far: what ``fit_networks`` yields once it stops."""

    index: int
    x: Tensor  # (1, C, h, w) working input
    model: nn.Module  # holds the fitted weights once the fit stopped
    seed: int
    start: float  # perf_counter at its start
    generator: torch.Generator
    previous: Tensor  # (h, w) argmax of the last step; -1 before the first
    history: list[dict[str, float]] = field(default_factory=list)
    momentum: list[Tensor] = field(default_factory=list)  # SGD buffers when fitted one by one


def build_network(index: int, pixels: np.ndarray, seed: int, settings: FitSettings, device: torch.device) -> Network:
    """The working input and a fresh network of the image ``pixels``, its weights drawn from ``seed`` (the global
    RNG left as it was)."""
    start = time.perf_counter()
    x = prepare_input(pixels, settings.size, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = settings.spec.model(in_channels=x.shape[1], **settings.model_options)
    model = model.to(device, memory_format=torch.channels_last).train()
    previous = torch.full(x.shape[-2:], -1, dtype=torch.long, device=device)
    return Network(index, x, model, seed, start, torch.Generator().manual_seed(seed), previous)


Step = tuple[Tensor, dict[str, Tensor], Tensor]
"""One step of N networks, all computed before the update: scores (N, 1, K, h, w), terms {name: (N,)}, total (N,)."""


class _OneByOne:
    """Each network as the module it is (``batch_images`` 1)."""

    def __init__(self, objective: nn.Module, settings: FitSettings, device: torch.device) -> None:
        self.objective, self.settings, self.device = objective, settings, device

    def admit(self, kept: list[int], new: list[Network]) -> None:
        """Nothing to stack."""

    def release(self, network: Network, row: int) -> None:
        """Nothing to copy back: the weights are in ``network.model``."""

    def step(self, networks: list[Network], draws: list[Tensor | None]) -> Step:
        """One SGD step of the single network."""
        (network,), (drawn,) = networks, draws
        params = list(network.model.parameters())
        if not network.momentum:
            network.momentum = [torch.zeros_like(param) for param in params]
        with autocast(self.device, self.settings.precision):
            scores, terms = self.objective.terms(network.model, network.x, drawn)
            total = sum(terms.values())
        grads = torch.autograd.grad(total, params, allow_unused=True)
        sgd_step(params, network.momentum, grads, self.settings.learning_rate)
        return scores.detach()[None], {name: value.detach()[None] for name, value in terms.items()}, total.detach()[None]


class _Objectived(nn.Module):
    """A network and its objective as one module, so that ``functional_call`` runs the objective's terms."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, image: Tensor, drawn: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        return self.objective.terms(self.model, image, drawn)


class _Stacked:
    """N networks in one pass: their parameters, momentum and inputs stacked, run by vmap."""

    def __init__(self, objective: nn.Module, settings: FitSettings, device: torch.device) -> None:
        self.objective, self.settings, self.device = objective, settings, device
        self.stacked: dict[str, Tensor] = {}
        self.module: _Objectived | None = None

    def admit(self, kept: list[int], new: list[Network]) -> None:
        """Keep rows ``kept`` of the stacked state and append the new networks' rows (zero momentum)."""
        if self.module is None:  # a template without weights or running statistics, on the meta device
            template = copy.deepcopy(new[0].model).to("meta")
            replace_all_batch_norm_modules_(template)
            self.module = _Objectived(template, self.objective)
        added: dict[str, Tensor] = {}
        if new:
            params, _ = stack_module_state([network.model for network in new])
            # contiguous copies: vmap's convolution gets wrong gradients from stacks of channels-last weights
            params = {name: value.detach().clone(memory_format=torch.contiguous_format) for name, value in params.items()}
            added = {f"param:model.{name}": value for name, value in params.items()}
            added |= {f"momentum:model.{name}": torch.zeros_like(value) for name, value in params.items()}
            added["x"] = torch.stack([network.x for network in new]).clone(memory_format=torch.contiguous_format)
        if not self.stacked:
            self.stacked = added
            return
        rows = torch.tensor(kept, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.stacked = {
                name: torch.cat([value.index_select(0, rows), *([added[name]] if added else [])])
                for name, value in self.stacked.items()
            }

    def _of(self, kind: str) -> dict[str, Tensor]:
        return {name.split(":", 1)[1]: value for name, value in self.stacked.items() if name.startswith(f"{kind}:")}

    def release(self, network: Network, row: int) -> None:
        """Copy the fitted weights of ``row`` back into ``network.model``."""
        params = self._of("param")
        with torch.no_grad():
            for name, value in network.model.named_parameters():
                value.copy_(params[f"model.{name}"][row])

    def step(self, networks: list[Network], draws: list[Tensor | None]) -> Step:
        """One SGD step of every stacked network on its image."""
        params, momentum = self._of("param"), self._of("momentum")
        for value in params.values():
            value.requires_grad_(True)
        drawn = None if draws[0] is None else torch.stack(draws).to(self.device)  # type: ignore[arg-type]
        one = functools.partial(functional_call, self.module)
        with autocast(self.device, self.settings.precision):
            run = vmap(lambda p, x, d: one(p, (x, d)), in_dims=(0, 0, None if drawn is None else 0))
            scores, terms = run(params, self.stacked["x"], drawn)
            total = sum(terms.values())
        grads = torch.autograd.grad(total.sum(), list(params.values()), allow_unused=True)
        sgd_step(list(params.values()), list(momentum.values()), grads, self.settings.learning_rate)
        return scores.detach(), {name: value.detach() for name, value in terms.items()}, total.detach()


def _records(networks: list[Network], step: Step) -> list[dict[str, float]]:
    """One ``history`` record per network (its terms, ``total``, clusters in use ``n_labels``, share of pixels that
    changed cluster ``changed``, 1 on the first step), with one host sync; updates each network's ``previous``."""
    scores, terms, total = step
    current = scores.argmax(dim=2)[:, 0]
    previous = torch.stack([network.previous for network in networks])
    used = torch.zeros(current.shape[0], scores.shape[2], dtype=torch.bool, device=current.device)
    used.scatter_(1, current.flatten(1), True)
    changed = (current != previous).flatten(1).float().mean(dim=1)
    columns = [value.detach().float() for value in (*terms.values(), total, used.sum(dim=1), changed)]
    names = [*terms, "total", "n_labels", "changed"]
    records = [dict(zip(names, row)) for row in torch.stack(columns, dim=1).tolist()]
    for network, record, now in zip(networks, records, current):
        record["n_labels"] = int(record["n_labels"])
        network.previous = now
    return records


FitItem = tuple[int, np.ndarray, int]
"""An image to fit: (its index, its (H, W, C) float pixels, its seed)."""
Callback = Callable[[int, int, dict[str, float]], None]
"""Called after every step with (image index, iteration, record of its history)."""


def _fit_group(
    items: list[FitItem], settings: FitSettings, device: torch.device, batch_images: int, callback: Callback | None
) -> Iterator[Network]:
    """Fit the images of one working shape, ``batch_images`` at a time; yield each network as it stops."""
    pending, objective, stop = deque(items), settings.spec.objective(**settings.objective_options), StopRule.of(settings)
    runner = (_Stacked if batch_images > 1 else _OneByOne)(objective, settings, device)
    networks: list[Network] = []
    kept: list[int] = []
    while pending or kept:
        count = min(batch_images - len(kept), len(pending))
        new = [build_network(*pending.popleft(), settings, device) for _ in range(count)]
        if new or len(kept) < len(networks):
            runner.admit(kept, new)
            networks = [networks[row] for row in kept] + new
        height, width = networks[0].x.shape[-2:]
        draws = [objective.draw(height, width, network.generator) for network in networks]
        records = _records(networks, runner.step(networks, draws))
        kept = []
        for row, (network, record) in enumerate(zip(networks, records)):
            network.history.append(record)
            if callback is not None:
                callback(network.index, len(network.history) - 1, record)
            if stop.done(network.history):
                runner.release(network, row)
                yield network
            else:
                kept.append(row)


def fit_networks(
    items: Sequence[FitItem], settings: FitSettings, *, batch_images: int | None = 1, callback: Callback | None = None
) -> Iterator[Network]:
    """Fit a fresh network of ``settings.method`` to each image of ``items``; yield each ``Network`` as it stops.

    Images are fitted in groups of one channel count and working shape, in the order of their first image;
    ``batch_images`` networks at once (None: ``default_batch_images`` of each group). On the CPU, equal seeds and
    thread counts give equal fits.
    """
    device = resolve_device(settings.device)
    if device.type == "cpu":
        keep_freed_memory()
    groups: dict[tuple[int, int, int], list[FitItem]] = {}
    for item in items:
        pixels = item[1]
        groups.setdefault((pixels.shape[2], *working_size(*pixels.shape[:2], settings.size)), []).append(item)
    for (_, height, width), group in groups.items():
        n = batch_images or default_batch_images(settings.method, device, height, width)
        yield from _fit_group(group, settings, device, n, callback)
