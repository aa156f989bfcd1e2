"""Cost of study mode, whole process: a folder in per-image mode and in study mode, and a stored model on new images.

Prints figures (markdown); it asserts nothing. Run from the repository root on a quiet machine:

    .venv/bin/python benchmarks/study_cost.py --methods kmeans,s3net            # isic2018-study, 500 images
    .venv/bin/python benchmarks/study_cost.py --methods kmeans --images 50      # a quick look

For each first-stage method, three fresh processes, one after the other, each the ``selfseg segment`` command a
user types: (1) ``FOLDER --method M`` into a new folder (per-image mode), (2) ``FOLDER --method M --study`` into
another new folder (study mode: the per-image stage, then the study network's training and prediction), and, for
the first method only, (3) ``NEW --study-model`` with (2)'s model on ``--new`` (images it never saw). Reported:
wall time per image, the ratio of (2) to (1), the peak resident memory of the largest process (a fit worker or
the main process), and the mean Dice of each run's masks (the expert masks only score).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from speed import DATA, first_images

from selfseg.runner import evaluate_outputs

_CHILD = """
import json, resource, sys
from selfseg.cli import main
code = main(sys.argv[1:])
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"peak_kib": peak}))
sys.exit(code)
"""


def _run(arguments: list[str], images: int, scored: Path, masks: Path) -> dict:
    """Run ``selfseg ARGUMENTS`` as a fresh process; wall s/image, peak GiB, mean Dice of ``scored``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *arguments, "--quiet"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"selfseg {' '.join(arguments)} failed:\n{done.stderr[-2000:]}")
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] / 2**20
    dice = float(np.mean([row["dice"] for row in evaluate_outputs(scored, masks).results]))
    return {"s_image": wall / images, "peak_gib": peak, "dice": dice}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="kmeans,s3net", help="first stages, comma-separated (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=DATA / "isic2018-study", help="images/ and masks/")
    parser.add_argument("--images", type=int, default=500, help="images of the folder (default: %(default)s)")
    parser.add_argument("--new", type=Path, default=DATA / "isic2018", help="new images/ and masks/ for --study-model")
    args = parser.parse_args(argv)
    print(f"selfseg study cost: {args.images} images of {args.dataset.name}, torch {version('torch')}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n")
    print("| first stage | per-image mode s/image | study mode s/image | ratio | peak GiB (per-image / study) "
          "| Dice (per-image / study) |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder, masks = first_images(args.dataset, args.images, Path(tmp) / "images"), args.dataset / "masks"
        model = None
        for method in args.methods.split(","):
            single, study = Path(tmp) / f"{method}-image", Path(tmp) / f"{method}-study"
            one = _run(["segment", str(folder), "--out", str(single), "--method", method], args.images, single, masks)
            both = _run(["segment", str(folder), "--out", str(study), "--method", method, "--study"], args.images,
                        study / "study", masks)
            print(f"| {method} | {one['s_image']:.2f} | {both['s_image']:.2f} | {both['s_image'] / one['s_image']:.2f}x "
                  f"| {one['peak_gib']:.2f} / {both['peak_gib']:.2f} | {one['dice']:.3f} / {both['dice']:.3f} |",
                  flush=True)
            model = model or study / "study" / "study_model.pt"
        new = sorted((args.new / "images").iterdir())
        applied = Path(tmp) / "applied"
        stored = _run(["segment", str(args.new / "images"), "--out", str(applied), "--study-model", str(model)],
                      len(new), applied, args.new / "masks")
        print(f"\n`--study-model` ({model.parent.parent.name}'s model) on the {len(new)} images of {args.new.name}: "
              f"{stored['s_image']:.3f} s/image (start-up included), peak {stored['peak_gib']:.2f} GiB, "
              f"Dice {stored['dice']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
