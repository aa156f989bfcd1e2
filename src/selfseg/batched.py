"""Many images per pass: the independent networks of N images fitted together with ``torch.func``.

``segment_many`` gives each image what ``engine.segment`` gives it with the same seed, up to
floating-point rounding (docs/methods.md measures it). The images are grouped by channels and working
shape (``engine._working_size``); in a group, up to ``batch_images`` networks are fitted at once. Their
parameters are stacked (``torch.func.stack_module_state``) and one forward and backward pass runs them
all (``torch.func.vmap`` over ``torch.func.functional_call``): each network normalises with its own
BatchNorm batch statistics (fits never use running statistics, so they are dropped:
``torch.func.replace_all_batch_norm_modules_``), draws its random transforms from its own generator
outside vmap (``objective.draw``), has its own SGD momentum and its own stop rule (``_Training.stop``).
A network that stops leaves its slot: its weights go back into its own module, which the single-image
path's ``engine._finish`` reads out, and the group's next image takes the slot.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

from selfseg import engine
from selfseg.engine import (
    BASELINES,
    MOMENTUM,
    SegmentationResult,
    _autocast,
    _build_model,
    _check_arguments,
    _check_image,
    _finish,
    _iteration_stats,
    _network_setup,
    _prepare_input,
    _records,
    _Setup,
    _working_size,
    resolve_device,
    segment,
)
from selfseg.foreground import most_agreed

__all__ = ["CPU_BATCH_IMAGES", "CUDA_MEMORY_PER_IMAGE_MIB", "check_fits", "default_batch_images", "segment_many"]

CPU_BATCH_IMAGES = 1
"""Default ``batch_images`` on the CPU: batching does not pay there at the default working size
(docs/speed.md, "Many images per pass"), and 1 runs ``engine.segment`` itself."""

CUDA_MEMORY_PER_IMAGE_MIB: dict[str, float] = {"s3net": 220.0, "msformer": 230.0, "dfc": 40.0}
"""Memory one more image of a batch takes at a 96 x 96 working size and the default widths, per method, in
MiB: the largest growth of the peak resident memory per image between N = 2, 4 and 8 measured on the CPU
(benchmarks/batch.py, docs/speed.md: 212, 225 and 37), rounded up. ``default_batch_images`` scales it by the
working pixels; no GPU figure has been measured yet (``torch.cuda.max_memory_allocated`` in the benchmark)."""

_MESSAGE_INDEX = re.compile(r"^image (\d+):")

MAX_BATCH_IMAGES = 256
"""Upper bound of the default ``batch_images`` on a GPU."""


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


_Item = tuple[int, np.ndarray, dict, int]
"""An image of a ``segment_many`` call: (its index, its pixels, its foreground rule, its seed)."""


@dataclass
class _Slot:
    """One image in a batch: its place in the call, its input and network, and its fit so far."""

    index: int
    pixels: np.ndarray
    rule: dict
    seed: int
    x: Tensor  # (1, C, h, w) working input
    model: nn.Module  # built as segment builds it; gets the fitted weights back
    generator: torch.Generator
    start: float
    history: list[dict[str, float]] = field(default_factory=list)


class _Objectived(nn.Module):
    """A network and its objective as one module, so that ``functional_call`` runs the objective's terms."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, image: Tensor, drawn: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        return self.objective.terms(self.model, image, drawn)


def _template(model: nn.Module, objective: nn.Module) -> _Objectived:
    """The module ``functional_call`` runs with each slot's parameters: a copy of ``model`` without running
    statistics (the fits use batch statistics only), on the meta device (its own weights are never used)."""
    template = copy.deepcopy(model).to("meta")
    replace_all_batch_norm_modules_(template)
    return _Objectived(template, objective)


def _start(item: _Item, setup: _Setup) -> _Slot:
    """A slot for (index, pixels, rule, seed): its working input and network as ``segment`` makes them."""
    index, pixels, rule, seed = item
    start = time.perf_counter()
    x = _prepare_input(pixels, setup.size, setup.device)
    model = _build_model(setup.spec, x, seed, setup.model_options)
    return _Slot(index, pixels, rule, seed, x, model, torch.Generator().manual_seed(seed), start)


def _restack(stacked: dict[str, Tensor], keep: list[int], added: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rows ``keep`` of each stacked tensor followed by the rows of ``added`` (same names), as new tensors."""
    if not stacked:
        return {name: value.detach().clone() for name, value in added.items()}
    rows = torch.tensor(keep, dtype=torch.long, device=next(iter(stacked.values())).device)
    with torch.no_grad():
        return {
            name: torch.cat([value.index_select(0, rows), *([added[name]] if added else [])])
            for name, value in stacked.items()
        }


def _added_rows(new: list[_Slot]) -> dict[str, Tensor]:
    """The stacked state of new slots: parameters (named as in ``_Objectived``), zero momentum, inputs and
    no previous clusters (-1)."""
    params, _ = stack_module_state([slot.model for slot in new])
    # Copied into contiguous memory: vmap's convolution takes stacks of channels_last weights for contiguous
    # ones (.contiguous() keeps them as they are) and gets wrong gradients (torch 2.13).
    params = {name: value.detach().clone(memory_format=torch.contiguous_format) for name, value in params.items()}
    x = torch.stack([slot.x for slot in new]).clone(memory_format=torch.contiguous_format)
    previous = torch.full((len(new), *x.shape[-2:]), -1, dtype=torch.long, device=x.device)
    return (
        {f"param:model.{name}": value for name, value in params.items()}
        | {f"momentum:model.{name}": torch.zeros_like(value) for name, value in params.items()}
        | {"x": x, "previous": previous}
    )


def _of(stacked: dict[str, Tensor], kind: str) -> dict[str, Tensor]:
    """The tensors of one kind ("param", "momentum") of the stacked state, by parameter name."""
    return {name.split(":", 1)[1]: value for name, value in stacked.items() if name.startswith(f"{kind}:")}


def _step(
    module: _Objectived, stacked: dict[str, Tensor], drawn: Tensor | None, setup: _Setup
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """One SGD step of every slot's network on its image: (scores (N, 1, K, h, w), terms {name: (N,)},
    total (N,)), all computed before the step, as ``engine._fit`` records them."""
    params, momentum = _of(stacked, "param"), _of(stacked, "momentum")
    for value in params.values():
        value.requires_grad_(True)
    one = functools.partial(functional_call, module)
    with _autocast(setup.device, setup.training.precision):
        run = vmap(lambda p, x, d: one(p, (x, d)), in_dims=(0, 0, None if drawn is None else 0))
        scores, terms = run(params, stacked["x"], drawn)
        total = sum(terms.values())
    grads = torch.autograd.grad(total.sum(), list(params.values()), allow_unused=True)
    with torch.no_grad():  # torch.optim.SGD's update, row by row: buf = momentum * buf + grad; p -= lr * buf
        for param, buffer, grad in zip(params.values(), momentum.values(), grads):
            if grad is not None:
                buffer.mul_(MOMENTUM).add_(grad)
                param.add_(buffer, alpha=-setup.training.lr)
    return scores.detach(), {name: value.detach() for name, value in terms.items()}, total.detach()


def _take(slot: _Slot, stacked: dict[str, Tensor], row: int, setup: _Setup) -> SegmentationResult:
    """The result of the slot in ``row``: its fitted weights into its own network, read out by ``_finish``."""
    params = _of(stacked, "param")
    with torch.no_grad():
        for name, value in slot.model.named_parameters():
            value.copy_(params[f"model.{name}"][row])
    return _finish(
        slot.model, slot.x, slot.pixels, setup, seed=slot.seed, rule=slot.rule, history=slot.history, start=slot.start
    )


def _fit_group(
    items: list[_Item],
    setup: _Setup,
    batch_images: int,
    callback: Callable[[int, int, dict[str, float]], None] | None,
) -> Iterator[tuple[int, SegmentationResult]]:
    """Fit the images of one working shape, ``batch_images`` at a time; yield (index, result) as each stops."""
    pending, objective = deque(items), setup.objective()
    slots: list[_Slot] = []
    stacked: dict[str, Tensor] = {}
    keep: list[int] = []
    module = None
    while pending or keep:
        new = [_start(pending.popleft(), setup) for _ in range(min(batch_images - len(keep), len(pending)))]
        if new or len(keep) < len(slots):
            stacked = _restack(stacked, keep, _added_rows(new) if new else {})
            slots = [slots[row] for row in keep] + new
        module = module or _template(slots[0].model, objective)
        height, width = slots[0].x.shape[-2:]
        draws = [objective.draw(height, width, slot.generator) for slot in slots]
        drawn = None if draws[0] is None else torch.stack(draws).to(setup.device)
        scores, terms, total = _step(module, stacked, drawn, setup)
        current = scores.argmax(dim=2)[:, 0]
        records = _records(terms, total, *_iteration_stats(current, stacked["previous"], scores.shape[2]))
        stacked["previous"] = current
        keep = []
        for row, (slot, record) in enumerate(zip(slots, records)):
            iteration = len(slot.history)
            slot.history.append(record)
            if callback is not None:
                callback(slot.index, iteration, record)
            if setup.training.stop(iteration, slot.history) or len(slot.history) == setup.training.max_iter:
                yield slot.index, _take(slot, stacked, row, setup)
            else:
                keep.append(row)


_SETUP_ARGUMENTS = ("size", "device", "readout", "max_iter", "min_labels", "min_iter", "tol", "patience", "lr", "precision")
"""The arguments of ``segment`` that ``engine._network_setup`` takes by name."""

_SEGMENT_SIGNATURE = inspect.signature(segment)

def _groups(items: list[_Item], size: int | None) -> dict[tuple[int, int, int], list[_Item]]:
    """The items by (channels, working height, working width), in the order of their first image."""
    groups: dict[tuple[int, int, int], list[_Item]] = {}
    for item in items:
        pixels = item[1]
        groups.setdefault((pixels.shape[2], *_working_size(*pixels.shape[:2], size)), []).append(item)
    return groups


def _one_by_one(
    items: list[_Item], method: str, arguments: dict, callback: Callable[[int, int, dict[str, float]], None] | None
) -> Iterator[tuple[int, SegmentationResult]]:
    """(index, ``segment`` of the image) of each item, in order."""
    for index, pixels, rule, seed in items:
        each = None if callback is None else functools.partial(callback, index)
        yield index, engine.segment(pixels, method, seed=seed, callback=each, **(arguments | rule))


def _seeds(seed: int | Sequence[int], count: int) -> list[int]:
    """One seed per image: ``seed + i`` for an int, else the sequence itself, which must hold ``count``."""
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"seed must be an int or one per image ({count}), got {len(seeds)}")
    return seeds


def _segment_arguments(method: str, arguments: dict) -> dict:
    """``engine.segment``'s arguments of a ``segment_many`` call, its defaults filled in (``options``: the rest)."""
    bound = _SEGMENT_SIGNATURE.bind(None, method, **arguments)
    bound.apply_defaults()
    return {name: value for name, value in bound.arguments.items() if name not in ("image", "method")}


def _truths(truth: Sequence[np.ndarray | None] | None, count: int) -> list[np.ndarray | None]:
    """One ground-truth mask (or None) per image; ValueError unless ``truth`` is None or holds ``count``."""
    truths = [None] * count if truth is None else list(truth)
    if len(truths) != count:
        raise ValueError(f"truth must be None or one mask (or None) per image ({count}), got {len(truths)}")
    return truths


def _checked_images(images: Sequence[np.ndarray], truth: Sequence[np.ndarray | None] | None, args: dict) -> list:
    """(pixels, rule) of each image, checked as ``segment`` checks one; ValueError or TypeError naming the index."""
    truths = _truths(truth, len(images))
    checked = []
    for index, (image, mask) in enumerate(zip(images, truths)):
        rule = {name: args[name] for name in ("foreground", "target", "point", "oracle_crop")} | {"truth": mask}
        try:
            checked.append((_check_image(image, rule), rule))
        except (ValueError, TypeError) as err:
            raise type(err)(f"image {index}: {err}") from None
    return checked


def segment_many(
    images: Sequence[np.ndarray],
    method: str = "s3net",
    *,
    seed: int | Sequence[int] = 0,
    batch_images: int | None = None,
    truth: Sequence[np.ndarray | None] | None = None,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
    fits: int = 1,
    **arguments,
) -> list[SegmentationResult]:
    """``engine.segment`` of each image, up to ``batch_images`` networks fitted in one pass (this module's docstring).

    Args:
        images: (H, W) or (H, W, C) arrays (``engine.as_float_image``), of any sizes: images of one channel
            count and working shape are fitted together.
        method: as ``segment``; the baselines run one image at a time.
        seed: an int (image i gets ``seed + i``) or one seed per image.
        batch_images: networks fitted at once; None: ``default_batch_images`` (1 on the CPU). 1 runs
            ``segment`` on each image.
        truth: None, or one ground-truth mask (or None) per image, for ``foreground="oracle"``.
        callback: called after every iteration with (image index, iteration, record of its ``history``).
        fits: networks fitted to each image, with seeds ``s, s + 1, ...`` from the image's seed ``s``; the
            result whose mask agrees most with the others' is kept (``foreground.most_agreed``), its
            ``seconds`` the sum over the fits: a consensus that costs ``fits`` times one fit.
        **arguments: any other argument of ``segment`` (``size``, ``max_iter``, ``device``, ``readout``,
            ``foreground``, ``n_channels``, ...), the same for every image.

    Returns:
        One ``SegmentationResult`` per image, in order. ``seconds`` of a batched image is the wall time from
        its slot's start to its readout, shared with the images fitted beside it.

    Raises:
        ValueError, TypeError: as ``segment``; a bad image's message starts with ``image <index>:``.

    Two discs fitted together give what ``segment`` gives each (here, exactly):

    >>> import numpy as np
    >>> from selfseg.engine import segment
    >>> yy, xx = np.mgrid[:32, :32]
    >>> discs = [np.where((yy - 16) ** 2 + (xx - c) ** 2 < 8**2, 0.2, 0.9) for c in (12, 20)]
    >>> fast = dict(size=24, max_iter=3, n_channels=8, device="cpu")
    >>> together = segment_many(discs, seed=5, batch_images=2, **fast)
    >>> alone = [segment(disc, seed=5 + i, **fast) for i, disc in enumerate(discs)]
    >>> [bool((a.labels == b.labels).all()) for a, b in zip(together, alone)]
    [True, True]
    """
    if fits != 1:
        return _consensus(images, method, fits=fits, seed=seed, batch_images=batch_images, truth=truth,
                          callback=callback, **arguments)
    args = _segment_arguments(method, arguments)
    counts = _check_arguments(method, readout=args["readout"], precision=args["precision"],
                              readout_clusters=args["readout_clusters"], min_labels=args["min_labels"])
    if batch_images is not None and batch_images < 1:
        raise ValueError(f"batch_images must be at least 1, got {batch_images}")
    seeds = _seeds(seed, len(images))
    items = [(index, *checked, seed) for index, (checked, seed) in enumerate(zip(_checked_images(images, truth, args), seeds))]
    if method in BASELINES:
        return [result for _, result in _one_by_one(items, method, arguments, callback)]
    setup = _network_setup(method, args["options"], counts=counts, **{name: args[name] for name in _SETUP_ARGUMENTS})
    results: dict[int, SegmentationResult] = {}
    for (_, height, width), group in _groups(items, setup.size).items():
        n = batch_images or default_batch_images(method, setup.device, height, width)
        results.update(_fit_group(group, setup, n, callback) if n > 1 else _one_by_one(group, method, arguments, callback))
    return [results[index] for index in range(len(images))]


def check_fits(fits: int) -> None:
    """ValueError unless ``fits`` (networks per image) is an integer of at least 1 (``segment_many``'s and
    ``run_batch``'s check)."""
    if not isinstance(fits, (int, np.integer)) or fits < 1:
        raise ValueError(f"fits must be an integer of at least 1, got {fits!r}")


def _consensus(
    images: Sequence[np.ndarray],
    method: str,
    *,
    fits: int,
    seed: int | Sequence[int],
    truth: Sequence[np.ndarray | None] | None,
    callback: Callable[[int, int, dict[str, float]], None] | None,
    **arguments,
) -> list[SegmentationResult]:
    """``segment_many`` with ``fits`` networks per image (see its ``fits``): every fit in one call, then per
    image the result that the others agree with most."""
    check_fits(fits)
    seeds = [s + k for s in _seeds(seed, len(images)) for k in range(fits)]
    truths = [mask for mask in _truths(truth, len(images)) for _ in range(fits)]
    each = None if callback is None else (lambda index, iteration, record: callback(index // fits, iteration, record))
    repeated = [image for image in images for _ in range(fits)]
    try:
        results = segment_many(repeated, method, seed=seeds, truth=truths, callback=each, **arguments)
    except (ValueError, TypeError) as err:  # name the caller's image, not its copy
        raise type(err)(_MESSAGE_INDEX.sub(lambda m: f"image {int(m.group(1)) // fits}:", str(err), count=1)) from None
    kept = []
    for start in range(0, len(results), fits):
        group = results[start : start + fits]
        best = group[most_agreed([result.mask for result in group])]
        kept.append(dataclasses.replace(best, seconds=sum(result.seconds for result in group)))
    return kept
