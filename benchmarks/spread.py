"""One image, several runs: each image's Dice over seeds and torch thread counts (docs/results.md, "One image,
several runs").

For each folder of ``--data`` (``FOLDER`` or ``FOLDER:N`` for its first N images), each image, seed and torch
thread count, it runs ``selfseg.segment(image, method, seed=S)`` in this process under ``torch.set_num_threads(T)``
(the thread count stands in for another CPU's rounding) and scores the mask against ``FOLDER/masks`` (the masks
only score). Each run's Dice is kept in ``WORK/<method>.json``, so an interrupted run continues where it stopped.
Then, per folder: the mean Dice over images and runs, and the range of each image's Dice over the runs (max - min):
its median, its 95th percentile and the share of images whose range exceeds 0.1. ``--write LABEL`` stores them in
docs/data/spread.csv under ``LABEL`` (the selfseg version measured), replacing that label's rows of the method
and folders measured.

    .venv/bin/python benchmarks/spread.py --work /tmp/spread --method s3net --seeds 0,1,2,3,4 --threads 1,2 \\
        --folders ssct-samples:3,isic2018:30,kvasir-seg:15,lung-cxr-shenzhen:15 [--write 0.12]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from selfseg import segment
from selfseg.datasets import load_pairs
from selfseg.io import read_image, read_mask
from selfseg.metrics import dice

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("version", "dataset", "method", "images", "runs", "dice", "range_median", "range_p95", "over_tenth")


def folder_images(data: Path, spec: str) -> tuple[str, list[tuple[Path, Path]]]:
    """``FOLDER[:N]`` -> (FOLDER, its first N (image, mask) pairs, all without N)."""
    name, _, count = spec.partition(":")
    pairs = [(pair.image, pair.mask) for pair in load_pairs(data / name)]
    return name, pairs[: int(count)] if count else pairs


def measure(pairs: list[tuple[Path, Path]], method: str, seeds: list[int], threads: list[int], record: Path) -> dict:
    """Each image's Dice per run ``"t{T}-s{S}"``, read back from ``record`` where done, saved after each image."""
    runs = json.loads(record.read_text()) if record.exists() else {}
    for t in threads:
        torch.set_num_threads(t)
        for image, mask in pairs:
            done = runs.setdefault(image.stem, {})
            for seed in seeds:
                if f"t{t}-s{seed}" not in done:
                    result = segment(read_image(image), method, seed=seed, device="cpu")
                    done[f"t{t}-s{seed}"] = dice(result.mask, read_mask(mask))
            record.write_text(json.dumps(runs))
    return runs


def summarise(version: str, dataset: str, method: str, runs: dict[str, dict[str, float]]) -> dict:
    """The row of docs/data/spread.csv for one folder's runs."""
    scores = [list(each.values()) for each in runs.values()]
    ranges = np.array([max(s) - min(s) for s in scores])
    return {"version": version, "dataset": dataset, "method": method, "images": len(scores),
            "runs": len(scores[0]), "dice": f"{np.mean([np.mean(s) for s in scores]):.3f}",
            "range_median": f"{np.median(ranges):.3f}", "range_p95": f"{np.percentile(ranges, 95):.3f}",
            "over_tenth": f"{np.mean(ranges > 0.1):.3f}"}


def write(rows: list[dict], version: str, path: Path = ROOT / "docs" / "data" / "spread.csv") -> None:
    """Replace the rows of ``path`` for ``version`` and the (method, folder) pairs of ``rows`` with ``rows``; the
    other rows stay."""
    written, kept = {(row["method"], row["dataset"]) for row in rows}, []
    if path.exists():
        with open(path, newline="") as handle:
            kept = [row for row in csv.DictReader(handle)
                    if row["version"] != version or (row["method"], row["dataset"]) not in written]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--method", default="s3net")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--folders", default="ssct-samples:3,isic2018:30,kvasir-seg:15,lung-cxr-shenzhen:15")
    parser.add_argument("--write", metavar="LABEL", help="store the rows in docs/data/spread.csv under LABEL")
    args = parser.parse_args()
    seeds, threads = [int(s) for s in args.seeds.split(",")], [int(t) for t in args.threads.split(",")]
    rows = []
    for spec in args.folders.split(","):
        name, pairs = folder_images(args.data, spec)
        (args.work / name).mkdir(parents=True, exist_ok=True)
        runs = measure(pairs, args.method, seeds, threads, args.work / name / f"{args.method}.json")
        rows.append(summarise(args.write or "", name, args.method, runs))
        print(", ".join(f"{key} {value}" for key, value in rows[-1].items()))
    if args.write:
        write(rows, args.write)


if __name__ == "__main__":
    main()
