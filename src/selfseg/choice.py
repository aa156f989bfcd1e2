"""The mask choice: from the cluster maps of one image to its mask, in one place.

``choose`` is what a fresh fit and resume's re-choice both call: each map's mask under the ``MaskRule``, the map
whose mask the others agree with most (``foreground.most_agreed``) or, given a referee, the one closest to the
referee's mask, and, when that mask is implausible for its prior (``foreground.implausible``), one more cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from selfseg.confidence import mask_confidence
from selfseg.foreground import implausible, most_agreed, resolve_target, rule_mask
from selfseg.metrics import dice
from selfseg.settings import MaskRule

__all__ = ["REFEREED_PRIORS", "MaskChoice", "choose"]

REFEREED_PRIORS = frozenset({"lesion"})
"""The priors under which ``choose``'s referee settles the vote. Colour k-means finds the lesion on dermoscopy at
least as well as the networks do, but the polyp on endoscope frames less well (docs/results.md), so there a
referee would pull the choice towards its errors (docs/experiments/vote-referee.md). A point's or the oracle's
masks ("point", "oracle") are never refereed."""


@dataclass(frozen=True)
class MaskChoice:
    """The chosen cluster map ((H, W) int32), its mask ((H, W) bool), what chose it (the prior, "point" or
    "oracle") and the mask's ground-truth-free confidence (``confidence.mask_confidence``)."""

    labels: np.ndarray
    mask: np.ndarray
    chosen: str
    confidence: float


def choose(
    maps: Sequence[np.ndarray],
    pixels: np.ndarray,
    rule: MaskRule,
    *,
    truth: np.ndarray | None = None,
    recluster: Callable[[int], np.ndarray] | None = None,
    referee: Callable[[], Sequence[np.ndarray]] | None = None,
) -> MaskChoice:
    """The mask of ``pixels`` ((H, W, C) in [0, 1]) from its cluster ``maps`` ((H, W) each) under ``rule``.

    Each map gets its mask (``foreground.rule_mask``); the map whose mask the others' masks agree with most is
    kept. With ``referee`` (() -> cluster maps of the same image that do not depend on the fit, e.g. colour
    k-means'; asked only when needed) and several maps whose masks a prior of ``REFEREED_PRIORS`` chose, the
    referee's own mask is chosen that way from its maps, and the map whose mask agrees with it most (Dice) is kept
    instead, unless none overlaps it. If the kept mask is ``implausible``, ``recluster`` (a cluster count -> a
    map, made as the maps were; None when there is no count to raise) gives one map with one cluster more than the
    most the maps have, and its mask is kept if the same prior finds a plausible one there. ``truth``: the ground
    truth of an oracle ``rule``.

    Notes:
        The maps of one fit read out with 3, 4 and 5 clusters often hold two candidates whose scores under the
        prior are nearly tied (a lesion and a paler halo, or a region joined to the frame); which of them the
        most agreed mask holds then changes with the fit's seed and the CPU's rounding. A referee that does not
        depend on the fit settles such a tie the same way every time, while the mask keeps the network's
        outline (docs/experiments/vote-referee.md).
    """
    auto = rule.foreground == "auto" and rule.point is None and rule.target == "auto"
    resolved = resolve_target(pixels) if auto else None  # the image's prior, once for all its maps
    masks = [_mask(labels, pixels, rule, truth, resolved) for labels in maps]
    refereed = referee is not None and len(maps) > 1 and all(named in REFEREED_PRIORS for _, named in masks)
    best = _kept([mask for mask, _ in masks], pixels, rule, truth, resolved, referee if refereed else None)
    labels, (mask, chosen) = maps[best], masks[best]
    if recluster is not None and implausible(mask, chosen, labels, pixels):
        more = recluster(max(int(m.max()) for m in maps) + 1)
        other, named = _mask(more, pixels, rule, truth, resolved)
        if named == chosen and other.any() and not implausible(other, named, more, pixels):
            labels, mask, chosen = more, other, named
    return MaskChoice(labels, mask, chosen, mask_confidence(mask, pixels))


def _kept(
    masks: list[np.ndarray], pixels: np.ndarray, rule: MaskRule, truth: np.ndarray | None, resolved: str | None,
    referee: Callable[[], Sequence[np.ndarray]] | None,
) -> int:
    """Index of the mask kept: the most agreed, or the one closest to the ``referee`` maps' most agreed mask."""
    if referee is None:
        return most_agreed(masks)
    theirs = [_mask(labels, pixels, rule, truth, resolved)[0] for labels in referee()]
    target = theirs[most_agreed(theirs)]
    if not target.any():
        return most_agreed(masks)
    agreement = [dice(mask, target) for mask in masks]
    return int(np.argmax(agreement)) if max(agreement) > 0 else most_agreed(masks)


def _mask(
    labels: np.ndarray, pixels: np.ndarray, rule: MaskRule, truth: np.ndarray | None, resolved: str | None
) -> tuple[np.ndarray, str]:
    """One map's mask under ``rule`` (checked once, when the rule and the image were)."""
    return rule_mask(labels, pixels, foreground=rule.foreground, target=rule.target, point=rule.point, truth=truth,
                     oracle_crop=rule.oracle_crop, resolved=resolved)
