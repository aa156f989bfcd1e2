"""How far the polyp prior is from what its candidates allow, on the runs of `selfseg benchmark`.

Prints figures (markdown); it asserts nothing. For every `<dataset>/<method>/auto` folder below each BENCH
folder (one seed's output of `selfseg benchmark` on colonoscopy frames), the cluster map of each image is
read back and the polyp prior's candidates are formed again (`selfseg.foreground.polyp.polyp_candidates`,
each replaced by its convex hull as the prior does). Columns: the Dice of the prior's own choice (no ground
truth), the **oracle** ceiling (the best candidate per image, picked with the ground truth: not a method), the
share of images where the prior picked that best candidate, and the share whose best candidate stays below
0.5 Dice (the clusters do not separate the polyp from the mucosa).

    .venv/bin/python benchmarks/polyp_ceiling.py kvasir/seed-0 kvasir/seed-1 kvasir/seed-2
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stored_runs import bench_parser, scored_stems, stored_runs

from selfseg.foreground import working_copies
from selfseg.foreground.polyp import polyp_candidates
from selfseg.foreground.regions import convex_hull, nearest_resize
from selfseg.io import read_image, read_labels, read_mask
from selfseg.metrics import dice


def _candidate_dice(labels: np.ndarray, image: np.ndarray, truth: np.ndarray) -> tuple[list[float], int]:
    """Dice of every candidate (hull, native size) against ``truth``, and the index of the prior's choice."""
    small_labels, small_image = working_copies(labels, image)
    candidates = polyp_candidates(small_labels, small_image)
    scores = [dice(nearest_resize(convex_hull(region), labels.shape), truth) for region, _ in candidates]
    chosen = int(np.argmax([score for _, score in candidates])) if candidates else -1
    return scores, chosen


def _run_figures(run: Path, pairs: dict) -> tuple[int, float, float, float, float]:
    """(images, rule Dice, oracle ceiling, share picked best, share with ceiling < 0.5) of one run folder."""
    rule, ceiling, best_picked = [], [], []
    for stem, pair in scored_stems(run, pairs):
        truth = read_mask(pair.mask)
        scores, chosen = _candidate_dice(read_labels(run / f"{stem}_labels.png"), read_image(pair.image), truth)
        rule.append(scores[chosen] if scores else 0.0)
        ceiling.append(max(scores, default=0.0))
        best_picked.append(bool(scores) and scores[chosen] == ceiling[-1])
    low = float((np.array(ceiling) < 0.5).mean())
    return len(rule), float(np.mean(rule)), float(np.mean(ceiling)), float(np.mean(best_picked)), low


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    print("| folder | dataset | method | images | prior's choice | oracle: best candidate | picked the best | best < 0.5 |")
    print("|---|---|---|---|---|---|---|---|")
    for bench, dataset, method, run, pairs in stored_runs(args.bench, args.data):
        images, rule, ceiling, picked, low = _run_figures(run, pairs)
        print(f"| {bench} | {dataset} | {method} | {images} | {rule:.3f} | {ceiling:.3f} | {picked:.0%} | {low:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
