"""Settings as data: ``FitSettings`` (how clusters are made) and ``MaskRule`` (how the mask is chosen).

Both are frozen dataclasses, checked once when they are made: every later layer (the fitting core, the mask
choice, the runner and its ``results.csv``) takes them as they are. ``settings_from_arguments`` builds both from
the keyword arguments of ``engine.segment``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from selfseg.checks import look_up_option
from selfseg.foreground import check_rule
from selfseg.methods import DEFAULT_SIZE, METHODS, PRECISIONS, MethodSpec, check_method, min_labels_of, split_options
from selfseg.readout import READOUTS, default_readout_clusters, readout_counts

__all__ = ["FitSettings", "MaskRule", "check_fits", "settings_from_arguments"]


def check_fits(fits: int) -> None:
    """ValueError unless ``fits`` (networks per image) is an integer of at least 1."""
    if not isinstance(fits, (int, np.integer)) or fits < 1:
        raise ValueError(f"fits must be an integer of at least 1, got {fits!r}")


@dataclass(frozen=True)
class FitSettings:
    """What every image of a call is clustered with. None means the method's default (``MethodSpec``).

    Attributes:
        method: a key of ``methods.METHODS`` (a network) or ``methods.BASELINES``.
        size: longer side of the working resolution (None: native).
        max_iter, min_labels, min_iter, tol, patience, lr: the optimiser and its stop rule.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        precision: one of ``methods.PRECISIONS``.
        readout: one of ``readout.READOUTS``.
        readout_clusters: the kmeans readout's cluster counts, a count or several (None:
            ``readout.default_readout_clusters``); stored as a tuple.
        options: the model's and the objective's keyword arguments (``n_channels``, ``ce_weight``, ...).
        fits: networks fitted to each image; the mask they agree on most is kept.
    """

    method: str = "s3net"
    size: int | None = DEFAULT_SIZE
    max_iter: int | None = None
    min_labels: int | None = None
    min_iter: int | None = None
    tol: float = 0.1
    patience: int = 2
    lr: float | None = None
    device: str = "auto"
    precision: str = "float32"
    readout: str = "kmeans"
    readout_clusters: int | tuple[int, ...] | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    fits: int = 1

    def __post_init__(self) -> None:
        check_method(self.method)
        look_up_option(self.readout, READOUTS, name="readout")
        look_up_option(self.precision, PRECISIONS, name="precision")
        if self.readout_clusters is not None:
            object.__setattr__(self, "readout_clusters", readout_counts(self.readout_clusters))
        if self.min_labels is not None and self.min_labels < 1:
            raise ValueError(f"min_labels must be at least 1, got {self.min_labels}")
        object.__setattr__(self, "options", dict(self.options))
        split_options(self.method, self.options)
        if self.network and self.iterations < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.iterations}")
        check_fits(self.fits)

    @property
    def network(self) -> bool:
        """Whether the method fits a network (else it is a baseline)."""
        return self.method in METHODS

    @property
    def spec(self) -> MethodSpec:
        """The network's entry of ``methods.METHODS``."""
        return METHODS[self.method]

    @property
    def iterations(self) -> int:
        """Most optimiser steps: ``max_iter`` or the method's default."""
        return self.spec.max_iter if self.max_iter is None else self.max_iter

    @property
    def learning_rate(self) -> float:
        """SGD's learning rate: ``lr`` or the method's default."""
        return self.spec.lr if self.lr is None else self.lr

    @property
    def clusters_to(self) -> int | None:
        """The ``min_labels`` the method clusters to, its default filled in (None: Otsu, which counts none)."""
        return min_labels_of(self.method, self.min_labels)

    @property
    def model_options(self) -> dict:
        """The options the model factory takes."""
        return split_options(self.method, self.options)[0]

    @property
    def objective_options(self) -> dict:
        """The options the objective factory takes."""
        return split_options(self.method, self.options)[1]

    @property
    def reclusters(self) -> bool:
        """Whether one more cluster can be asked of a map (``choice.choose``'s retry): the kmeans readout of a
        network, and k-means; not the argmax readout, nor Otsu."""
        return self.readout == "kmeans" if self.network else self.clusters_to is not None

    def counts(self, pixels: np.ndarray) -> tuple[int, ...]:
        """The cluster counts read out (or clustered, for k-means) on the (H, W, C) image ``pixels``; (2,) for Otsu."""
        fewest = self.clusters_to
        if fewest is None:
            return (2,)
        return self.readout_clusters or default_readout_clusters(pixels, fewest)


@dataclass(frozen=True)
class MaskRule:
    """How the mask is chosen from a cluster map (``foreground.choose_mask``).

    ``foreground="auto"`` needs no ground truth: ``target`` picks the prior, ``point=(x, y)`` takes the region
    under that pixel instead. ``"oracle"`` is the papers' protocol and needs each image's ground truth;
    ``oracle_crop`` adds the released code's dilated-truth crop.
    """

    foreground: str = "auto"
    target: str = "auto"
    point: tuple[int, int] | None = None
    oracle_crop: bool = False

    def __post_init__(self) -> None:
        if self.point is not None:
            object.__setattr__(self, "point", (int(self.point[0]), int(self.point[1])))
        self.check(truth=self.foreground == "oracle")  # an oracle rule will be given each image's ground truth

    @property
    def name(self) -> str:
        """The ``foreground`` cell of a results row: the rule's foreground, "oracle+crop" with the crop."""
        return "oracle+crop" if self.oracle_crop else self.foreground

    def check(self, *, truth: np.ndarray | bool | None, shape: tuple[int, ...] | None = None) -> None:
        """ValueError unless the rule applies with ground truth ``truth`` (True: one will be given; False or None:
        none) to an image of ``shape`` ((H, W, ...); None: any): ``foreground.check_rule``."""
        check_rule(foreground=self.foreground, target=self.target, point=self.point, truth=truth,
                   oracle_crop=self.oracle_crop, shape=shape)

    def check_image(self, shape: tuple[int, ...], truth: np.ndarray | None) -> None:
        """ValueError unless the rule applies to an image of ``shape`` ((H, W, ...)) with ground truth ``truth``."""
        self.check(truth=truth, shape=shape)


_FIT_NAMES = frozenset(f.name for f in fields(FitSettings)) - {"method", "options"}
_RULE_NAMES = frozenset(f.name for f in fields(MaskRule))


def settings_from_arguments(method: str, arguments: Mapping[str, object]) -> tuple[FitSettings, MaskRule]:
    """``FitSettings`` and ``MaskRule`` from ``engine.segment``-style keyword ``arguments``: the names of their
    fields go to them, the rest are the model's and objective's options."""
    fit = {name: value for name, value in arguments.items() if name in _FIT_NAMES}
    rule = {name: value for name, value in arguments.items() if name in _RULE_NAMES}
    options = {name: value for name, value in arguments.items() if name not in _FIT_NAMES | _RULE_NAMES}
    return FitSettings(method, options=options, **fit), MaskRule(**rule)  # type: ignore[arg-type]

