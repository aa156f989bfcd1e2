"""Images per second and peak memory of batched fits (``batched.segment_many``) against ``batch_images``.

Prints one markdown table per network; it asserts nothing. Run from the repository root:

    .venv/bin/python benchmarks/batch.py                                   # CPU: N = 1, 2, 4, 8
    .venv/bin/python benchmarks/batch.py --device cuda --batch 1,8,32,128  # a GPU

Every row is a fresh process that reads the first ``--images`` images of ``--dataset`` (isic2018: 512 x 512
dermoscopy) and fits them all at the default settings (96 px, 32 channels) with ``--threads`` torch
threads: the first row with ``engine.segment`` one image after the other (the single-image path), the
others with ``segment_many(batch_images=N)``. Reported: images/s (fit, readout and mask choice; reading
excluded), the speed-up over the first row, the process's peak resident memory and its growth during the
fits (on CUDA: the peak of ``torch.cuda.max_memory_allocated``), and how many images got the same cluster
map as in the first row (else the mask pixels that differ, summed).
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
from speed import DATA

_CHILD = """
import json, resource, sys, time
import numpy as np, torch
from selfseg import io
from selfseg.batched import segment_many
from selfseg.engine import segment
method, device, threads, batch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
images = [io.read_image(path) for path in sys.argv[6:]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if batch == 0:
    results = [segment(image, method, seed=i, device=device) for i, image in enumerate(images)]
else:
    results = segment_many(images, method, seed=0, batch_images=batch, device=device)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
np.savez(out, labels=np.stack([r.labels for r in results]), masks=np.stack([r.mask for r in results]))
print(json.dumps({"seconds": seconds, "peak_kib": peak, "growth_kib": peak - before, "cuda_mib": cuda,
                  "iterations": float(np.mean([r.iterations for r in results]))}))
"""


def _run(method: str, batch: int, paths: list[Path], args: argparse.Namespace, out: Path) -> dict:
    """One row as a fresh process (``batch`` 0: the single-image path); its figures and its label maps."""
    command = [sys.executable, "-c", _CHILD, method, args.device, str(args.threads), str(batch), str(out)]
    done = subprocess.run([*command, *map(str, paths)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise RuntimeError(f"{method} batch {batch} failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as arrays:
        row["labels"], row["masks"] = arrays["labels"], arrays["masks"]
    return row


def _agreement(row: dict, first: dict) -> str:
    """Images with the first row's cluster map, of all; the differing mask pixels if any."""
    same = sum(np.array_equal(a, b) for a, b in zip(row["labels"], first["labels"]))
    pixels = int((row["masks"] != first["masks"]).sum())
    return f"{same}/{len(row['labels'])}" + (f" ({pixels} mask px differ)" if pixels else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="s3net,msformer,dfc", help="comma-separated (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=DATA / "isic2018", help="images/ (default: isic2018)")
    parser.add_argument("--images", type=int, default=16, help="images per row (default: %(default)s)")
    parser.add_argument("--batch", default="1,2,4,8", help="batch_images of the batched rows (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    args = parser.parse_args(argv)
    paths = sorted((args.dataset / "images").iterdir())[: args.images]
    print(f"selfseg batch: {len(paths)} {args.dataset.name} images, {args.device}, {args.threads} torch threads, "
          f"torch {version('torch')}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            print(f"\n### {method}\n")
            print("| path | images/s | speed-up | iterations | peak RSS (GiB) | RSS growth (MiB) | "
                  "peak CUDA (MiB) | same labels as single |")
            print("|---|---|---|---|---|---|---|---|")
            first = None
            for batch in [0, *map(int, args.batch.split(","))]:
                row = _run(method, batch, paths, args, Path(tmp) / f"{method}-{batch}.npz")
                first = first or row
                rate = len(paths) / row["seconds"]
                cuda = "" if row["cuda_mib"] is None else f"{row['cuda_mib']:.0f}"
                name = "`segment`, one by one" if batch == 0 else f"`segment_many`, N = {batch}"
                print(f"| {name} | {rate:.2f} | {rate * first['seconds'] / len(paths):.2f}x | {row['iterations']:.1f} | "
                      f"{row['peak_kib'] / 2**20:.2f} | {row['growth_kib'] / 2**10:.0f} | {cuda} | "
                      f"{_agreement(row, first)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
