"""Rank correlation of the ground-truth-free mask confidence with Dice, on the runs of `selfseg benchmark`.

Prints figures (markdown); it asserts nothing. For every `<dataset>/<method>/auto` folder below each BENCH
folder (one seed's output of `selfseg benchmark`), the confidence of each mask is measured again from the
mask and its image (`selfseg.confidence.mask_confidence`, what results.csv records) and compared with its
Dice in metrics.csv (Spearman's rho). With `--figure`, a scatter of the first folder's first method per
dataset.

    .venv/bin/python benchmarks/confidence.py q96/seed-0 q96/seed-1 q96/seed-2 q96b --figure docs/images/confidence.png
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from matplotlib.figure import Figure
from scipy import stats
from stored_runs import bench_parser, stored_runs

from selfseg.confidence import mask_confidence
from selfseg.io import read_image, read_mask


def _scores(run: Path, images: dict[str, Path]) -> tuple[list[float], list[float]]:
    """(confidence, Dice) of every scored mask of one run folder."""
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    confidence = [mask_confidence(read_mask(run / f"{r['image']}_mask.png"), read_image(images[r["image"]])) for r in rows]
    return confidence, [float(r["dice"]) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--figure", type=Path, help="write a scatter plot here")
    args = parser.parse_args(argv)
    print("| folder | dataset | method | images | Spearman rho |\n|---|---|---|---|---|")
    scatter = {}
    for bench, dataset, method, run, pairs in stored_runs(args.bench, args.data):
        confidence, dice = _scores(run, {stem: pair.image for stem, pair in pairs.items()})
        rho = stats.spearmanr(confidence, dice).statistic
        print(f"| {bench} | {dataset} | {method} | {len(dice)} | {rho:.2f} |", flush=True)
        if bench == args.bench[0] and dataset not in scatter:
            scatter[dataset] = (method, confidence, dice, rho)
    if args.figure:
        figure = Figure(figsize=(2.6 * len(scatter), 2.6))
        for axes, (dataset, (method, confidence, dice, rho)) in zip(figure.subplots(1, len(scatter)), scatter.items()):
            axes.scatter(confidence, dice, s=6, alpha=0.6)
            title = f"{dataset}, {method} (rho {rho:.2f})"
            axes.set(title=title, xlabel="confidence", ylabel="Dice", xlim=(0, 1), ylim=(0, 1.02))
            axes.title.set_fontsize(8)
        figure.tight_layout()
        figure.savefig(args.figure, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
