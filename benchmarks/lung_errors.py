"""Where the lung masks of `selfseg benchmark` runs go wrong: leaks above the apices, and missed rims.

Prints figures (markdown); it asserts nothing. For every `<dataset>/<method>/auto` folder below each BENCH
folder (chest X-ray or lung CT runs), each stored mask is scored as it is and after two **oracle** edits that
need the expert mask (ceilings of what a better lung rule could mend, not methods): every row above the expert
mask's top row cleared (the leaks into the neck and above the shoulders), and every expert pixel within
`--reach` pixels of the mask added (the brighter rims and bases the darkest clusters leave out). Then both, and
the worst images of the run.

    .venv/bin/python benchmarks/lung_errors.py lungs/seed-0 lungs/seed-1 lungs/seed-2
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from stored_runs import bench_parser, scored_stems, stored_runs

from selfseg.io import read_mask
from selfseg.metrics import dice


def below_top(mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``mask`` without the rows above ``truth``'s first row (both (H, W) bool)."""
    rows = np.flatnonzero(truth.any(axis=1))
    cut = mask.copy()
    cut[: rows[0] if rows.size else mask.shape[0]] = False
    return cut


def with_near_truth(mask: np.ndarray, truth: np.ndarray, reach: float) -> np.ndarray:
    """``mask`` and every ``truth`` pixel within ``reach`` pixels of it."""
    return mask | (truth & (ndimage.distance_transform_edt(~mask) <= reach))


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--reach", type=float, default=15, help="the rim edit's distance in pixels (default 15)")
    parser.add_argument("--worst", type=int, default=4, help="how many of each run's worst images to name")
    args = parser.parse_args(argv)
    print("| folder | dataset | method | images | own mask | oracle: cut at the top | oracle: rims added | oracle: both | worst |"
          "\n|---|---|---|---|---|---|---|---|---|")
    for bench, dataset, method, run, pairs in stored_runs(args.bench, args.data):
        figures = {}
        for stem, pair in scored_stems(run, pairs):
            mask, truth = read_mask(run / f"{stem}_mask.png"), read_mask(pair.mask)
            cut = below_top(mask, truth)
            edits = (mask, cut, with_near_truth(mask, truth, args.reach), with_near_truth(cut, truth, args.reach))
            figures[stem] = [dice(edited, truth) for edited in edits]
        own, cut, rims, both = np.mean(list(figures.values()), axis=0)
        ranked = sorted(figures.items(), key=lambda item: item[1][0])
        worst = ", ".join(f"{stem} {scores[0]:.2f}" for stem, scores in ranked[: args.worst])
        print(f"| {bench} | {dataset} | {method} | {len(figures)} | {own:.3f} | {cut:.3f} | {rims:.3f} | {both:.3f} | {worst} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
