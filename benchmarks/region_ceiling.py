"""What the clusters themselves allow: the best mask made of their whole regions, on runs of `selfseg benchmark`.

Prints figures (markdown); it asserts nothing. For every `<dataset>/<method>/auto` folder below each BENCH
folder (one seed's output of `selfseg benchmark`), each image's stored cluster map is cut into the connected
regions (8-connectivity) of its clusters, and the **oracle** ceiling is the union of those regions with the
highest Dice against the expert mask (picked with the ground truth: a ceiling for any rule that keeps or drops
whole regions, not a method). It is exact: a region belongs to the best union when its share of pixels inside
the expert mask exceeds half that union's Dice, so the best union is one of the prefixes of the regions sorted
by that share. The edge and hull steps of the target priors move boundaries, so a prior can pass it by a few
hundredths. Columns: the Dice of the run's own mask (no ground truth), the ceiling, and their gap.

    .venv/bin/python benchmarks/region_ceiling.py lungs/seed-0 lungs/seed-1 lungs/seed-2
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from stored_runs import bench_parser, scored_stems, stored_runs

from selfseg.foreground.regions import EIGHT
from selfseg.io import read_labels, read_mask
from selfseg.metrics import dice


def best_union_dice(labels: np.ndarray, truth: np.ndarray) -> float:
    """Highest Dice against ``truth`` ((H, W) bool) of a union of connected regions of ``labels`` ((H, W) int)."""
    sizes, inside = [], []
    for cluster in np.unique(labels):
        components, count = ndimage.label(labels == cluster, structure=EIGHT)
        sizes.append(np.bincount(components.ravel(), minlength=count + 1)[1:])
        inside.append(np.bincount(components[truth], minlength=count + 1)[1:])
    sizes, inside = np.concatenate(sizes), np.concatenate(inside)
    order = np.argsort(-inside / sizes, kind="stable")
    dices = 2 * np.cumsum(inside[order]) / (np.cumsum(sizes[order]) + truth.sum())
    return float(dices.max(initial=0.0))


def _run_figures(run: Path, pairs: dict) -> tuple[int, float, float]:
    """(images, mean Dice of the run's masks, mean oracle ceiling) of one run folder."""
    own, ceiling = [], []
    for stem, pair in scored_stems(run, pairs):
        truth = read_mask(pair.mask)
        own.append(dice(read_mask(run / f"{stem}_mask.png"), truth))
        ceiling.append(best_union_dice(read_labels(run / f"{stem}_labels.png"), truth))
    return len(own), float(np.mean(own)), float(np.mean(ceiling))


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    print("| folder | dataset | method | images | own mask | oracle: best union of regions | gap |")
    print("|---|---|---|---|---|---|---|")
    for bench, dataset, method, run, pairs in stored_runs(args.bench, args.data):
        images, own, ceiling = _run_figures(run, pairs)
        print(f"| {bench} | {dataset} | {method} | {images} | {own:.3f} | {ceiling:.3f} | {ceiling - own:+.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
