"""Batch throughput with worker processes and torch threads, and whether the outputs match.

Prints figures; it asserts nothing. Run from the repository root:

    .venv/bin/python benchmarks/workers.py                   # S3-Net, the SSCT samples
    .venv/bin/python benchmarks/workers.py --method msformer --configs 1x2,2x1,1x1 IMAGES...

For each configuration WORKERSxTHREADS it runs ``runner.run_batch`` on the images into a fresh folder
and prints the wall time, the images per minute and, for each configuration after the first, how many
mask pixels differ from the first one's (0 expected at equal threads, whatever the workers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from selfseg.io import read_mask
from selfseg.methods import ALL_METHODS
from selfseg.runner import MASK_SUFFIX, available_cores, run_batch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = sorted((ROOT.parent / "shared" / "data" / "ssct-samples" / "images").iterdir())


def _config(text: str) -> tuple[int, int]:
    workers, threads = text.split("x")
    return int(workers), int(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--method", choices=ALL_METHODS, default="s3net")
    parser.add_argument("--configs", default="1x1,2x1,1x2", help="comma-separated WORKERSxTHREADS")
    args = parser.parse_args()
    configs = [_config(text) for text in args.configs.split(",")]
    print(f"{args.method}, {len(args.images)} images, {available_cores()} cores")
    print("| workers x threads | wall s | images/min | iterations | wall s per iteration | fit s per iteration |"
          " mask pixels differing from the first configuration |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for workers, threads in configs:
            out = Path(tmp) / f"{workers}x{threads}"
            start = time.perf_counter()
            report = run_batch(args.images, out, method=args.method, workers=workers, threads=threads, progress=False)
            wall = time.perf_counter() - start
            masks = {row["image"]: read_mask(out / f"{row['image']}{MASK_SUFFIX}") for row in report.results}
            if first is None:
                first, differing = masks, "-"
            else:
                differing = str(sum(int(np.count_nonzero(masks[stem] != first[stem])) for stem in first))
            iterations = sum(row["iterations"] for row in report.results)
            fit_seconds = sum(row["seconds"] for row in report.results)
            per_iteration = (f"{wall / iterations:.2f} | {fit_seconds / iterations:.2f}" if iterations else "- | -")
            print(f"| {workers} x {threads} | {wall:.1f} | {60 * len(masks) / wall:.2f} | {iterations} | "
                  f"{per_iteration} | {differing} |", flush=True)


if __name__ == "__main__":
    main()
