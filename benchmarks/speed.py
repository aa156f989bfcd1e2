"""Speed, memory and Dice of whole runs: one table per method, configurations compared in one run.

Prints figures (markdown); it asserts nothing. Run from the repository root:

    .venv/bin/python benchmarks/speed.py                          # every method, 20 isic2018 images
    .venv/bin/python benchmarks/speed.py --methods s3net --images 8 --reference-images 2

Each configuration runs as its own process over a folder of the first ``--images`` images of
``--dataset`` (isic2018: 512 x 512 dermoscopy), 2 fits at once with 1 torch thread each (the batch
defaults), so that its wall time is what a user waits for: start-up, imports, reading, every fit, the
readout, the foreground choice and the files written. The new defaults run as the ``selfseg segment``
command itself; the other configurations call ``runner.run_batch`` with their options. Reported per
configuration: s/image (wall time / images), s/iteration (fit seconds / iterations, per fit), mean
iterations, the peak resident memory of the largest process (one fit worker), the mean Dice of the masks
(chosen without ground truth) against the dataset's masks, and the speed-up over the table's first row.
The configurations at the 0.8 defaults (256 px, the papers' widths) cost tens of seconds per image, so
they run on the first ``--reference-images`` images only (their row says how many).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from selfseg.runner import evaluate_outputs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# name, segment options (those of the new defaults left out), runs on the reference images only
CONFIGS: dict[str, list[tuple[str, dict, bool]]] = {
    "s3net": [
        ("0.8 defaults: 256 px, 64 channels", {"size": 256, "n_channels": 64}, True),
        ("0.8 defaults, the papers' argmax readout", {"size": 256, "n_channels": 64, "readout": "argmax"}, True),
        ("128 px, 64 channels", {"size": 128, "n_channels": 64}, False),
        ("0.9.0 defaults: 128 px, 32 channels", {"size": 128}, False),
        ("new defaults: 96 px, 32 channels (`selfseg segment`)", {}, False),
        ("160 px, 32 channels", {"size": 160}, False),
        ("96 px, 32 channels, bfloat16", {"precision": "bfloat16"}, False),
    ],
    "msformer": [
        ("0.8 defaults: 256 px, 100 channels", {"size": 256, "n_channels": 100, "embed_dim": 100}, True),
        ("128 px, 100 channels", {"size": 128, "n_channels": 100, "embed_dim": 100}, False),
        ("0.9.0 defaults: 128 px, 32 channels", {"size": 128}, False),
        ("new defaults: 96 px, 32 channels (`selfseg segment`)", {}, False),
        ("96 px, 32 channels, bfloat16", {"precision": "bfloat16"}, False),
    ],
    "dfc": [
        ("0.8 defaults: 256 px, 100 channels", {"size": 256, "n_channels": 100}, True),
        ("128 px, 100 channels", {"size": 128, "n_channels": 100}, False),
        ("0.9.0 defaults: 128 px, 32 channels", {"size": 128}, False),
        ("new defaults: 96 px, 32 channels (`selfseg segment`)", {}, False),
    ],
    # no network: what the networks' cost is weighed against (README, "Which method to use")
    "kmeans": [("colour k-means (`selfseg segment --method kmeans`)", {}, False)],
}

_CHILD = """
import json, resource, sys
method, folder, out, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if options:
    from selfseg.runner import run_batch
    report = run_batch([folder], out, method=method, workers="auto", progress=False, **options)
    code = 1 if report.failures else 0
else:
    from selfseg.cli import main
    code = main(["segment", folder, "--out", out, "--method", method, "--quiet"])
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"peak_kib": peak}))
sys.exit(code)
"""


def first_images(dataset: Path, count: int, into: Path) -> Path:
    """A folder of links to the first ``count`` images (sorted by name) of ``dataset/images``."""
    into.mkdir(parents=True)
    for image in sorted((dataset / "images").iterdir())[:count]:
        (into / image.name).symlink_to(image)
    return into


def _run(method: str, options: dict, folder: Path, out: Path, masks: Path) -> dict:
    """Run one configuration as a fresh process; its figures."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, method, str(folder), str(out), json.dumps(options)],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{method} {options} failed:\n{done.stderr[-2000:]}")
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] / 2**20
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    iterations = [int(row["iterations"]) for row in rows]
    seconds = [float(row["seconds"]) for row in rows]
    return {
        "images": len(rows), "s_image": wall / len(rows), "s_iter": sum(seconds) / max(1, sum(iterations)),
        "iterations": float(np.mean(iterations)), "peak_gib": peak,
        "dice": float(np.mean([row["dice"] for row in evaluate_outputs(out, masks).results])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(CONFIGS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=DATA / "isic2018", help="images/ and masks/ (default: isic2018)")
    parser.add_argument("--images", type=int, default=20, help="images per configuration (default: %(default)s)")
    parser.add_argument("--reference-images", type=int, default=4,
                        help="images of the 0.8-default configurations (default: %(default)s)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    print(f"selfseg speed: {args.dataset.name}, torch {version('torch')}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            False: first_images(args.dataset, args.images, Path(tmp) / "images"),
            True: first_images(args.dataset, args.reference_images, Path(tmp) / "reference"),
        }
        for method in methods:
            print(f"\n### {method}\n")
            print("| configuration | images | s/image | speed-up | s/iteration | iterations | peak RSS (GiB) | mean Dice |")
            print("|---|---|---|---|---|---|---|---|")
            first = None
            for index, (name, options, reference) in enumerate(CONFIGS[method]):
                out = Path(tmp) / f"{method}-{index}"
                row = _run(method, options, folders[reference], out, args.dataset / "masks")
                first = first or row["s_image"]
                print(f"| {name} | {row['images']} | {row['s_image']:.2f} | {first / row['s_image']:.1f}x | "
                      f"{row['s_iter']:.3f} | {row['iterations']:.1f} | {row['peak_gib']:.2f} | {row['dice']:.3f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
