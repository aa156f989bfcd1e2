"""Per-image mode vs study mode on study-sized folders, over seeds: the figures of docs/results.md's study table.

For each folder, first-stage method and seed it runs ``selfseg segment FOLDER/images --method M --seed S`` (the
per-image stage, timed), then the same with the study stage (the per-image masks resumed, so its time is the study
stage's), and scores both against ``FOLDER/masks`` (the masks only score). Runs are resumable: a finished run is
read back, not redone. Then, for each folder and method with every seed done, it prints and (``--write``) stores
in docs/data/study.csv, per mode: mean Dice (mean over seeds, and their standard deviation), 5th percentile, share
of images under Dice 0.5, and the spread of each image's Dice over the seeds (its max - min: median and 95th
percentile). Each run's stage times are kept in its JSON files, but the cost figures come from
``benchmarks/study_cost.py`` on a quiet machine.

    .venv/bin/python benchmarks/study.py --work /tmp/study-bench --methods kmeans --seeds 0,1,2 [--write]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from selfseg.runner import evaluate_outputs, run_batch
from selfseg.study import StudySettings

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("isic2018-study", "kvasir-seg-study", "lung-cxr-shenzhen-study")
COLUMNS = ("dataset", "method", "mode", "seeds", "images", "dice", "dice_sd", "p5", "under_half", "spread_median",
           "spread_p95")


def _dice(out_dir: Path, truth: Path) -> dict[str, float]:
    return {row["image"]: float(row["dice"]) for row in evaluate_outputs(out_dir, truth).results}


def run_one(data: Path, work: Path, folder: str, method: str, seed: int, *, study: bool = True) -> dict:
    """Run (or read back) one folder, method and seed: its per-image Dice per mode and its stage times (the
    per-image stage only when not ``study``)."""
    out = work / folder / method / f"seed-{seed}"
    images, truth = data / folder / "images", data / folder / "masks"
    result = {}
    for mode, settings in (("per-image", None), ("study", StudySettings(seed=seed))):
        record = out / f"{mode}.json"
        if not record.exists():
            if mode == "study" and not study:
                break
            start = time.perf_counter()
            run_batch([images], out, method=method, seed=seed, resume=True, progress=False, study=settings)
            seconds = time.perf_counter() - start
            record.write_text(json.dumps({"seconds": seconds,
                                          "dice": _dice(out if settings is None else out / "study", truth)}))
        result[mode] = json.loads(record.read_text())
    return result


def summarise(folder: str, method: str, runs: list[dict]) -> list[dict]:
    """One row per mode over the seeds' runs."""
    rows = []
    images = sorted(set.intersection(*(set(run["per-image"]["dice"]) for run in runs)))
    for mode in ("per-image", "study"):
        scores = np.array([[run[mode]["dice"][image] for image in images] for run in runs])  # (seeds, images)
        spread = scores.max(axis=0) - scores.min(axis=0)
        rows.append({
            "dataset": folder, "method": method, "mode": mode, "seeds": len(runs), "images": len(images),
            "dice": f"{scores.mean():.4f}", "dice_sd": f"{scores.mean(axis=1).std():.4f}",
            "p5": f"{np.mean([np.percentile(s, 5) for s in scores]):.4f}",
            "under_half": f"{(scores < 0.5).mean():.4f}",
            "spread_median": f"{np.median(spread):.4f}" if len(runs) > 1 else "",
            "spread_p95": f"{np.percentile(spread, 95):.4f}" if len(runs) > 1 else "",
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, required=True, help="where the runs are kept (resumable)")
    parser.add_argument("--folders", default=",".join(FOLDERS))
    parser.add_argument("--methods", default="kmeans,s3net,msformer,dfc")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--image-stage-only", action="store_true", help="run the per-image stage only")
    parser.add_argument("--write", action="store_true", help="store the rows in docs/data/study.csv")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for folder in args.folders.split(","):
        for method in args.methods.split(","):
            runs = [run_one(args.data, args.work, folder, method, seed, study=not args.image_stage_only)
                    for seed in seeds]
            if args.image_stage_only:
                continue
            rows += summarise(folder, method, runs)
            for row in rows[-2:]:
                print(" ".join(f"{key}={row[key]}" for key in COLUMNS), flush=True)
    if args.write:
        path = ROOT / "docs" / "data" / "study.csv"
        kept = []
        if path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                new = {(r["dataset"], r["method"], r["mode"]) for r in rows}
                kept = [r for r in csv.DictReader(handle) if (r["dataset"], r["method"], r["mode"]) not in new]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(sorted(kept + rows, key=lambda r: (r["dataset"], r["method"], r["mode"])))


if __name__ == "__main__":
    main()
