"""Speed and memory of per-image segmentation: seconds per iteration, per image, peak memory.

Prints figures; it asserts nothing. Run from the repository root:

    .venv/bin/python benchmarks/speed.py                     # S3-Net, 256 px, CPU, the SSCT samples
    .venv/bin/python benchmarks/speed.py --device cuda IMAGES...

Per image it runs the default stopping rules (what a user gets) and then a fixed number of
iterations with the stopping rules disabled (steady seconds per iteration). The first image also
pays one-off start-up costs (kernel selection, allocator warm-up); it is reported separately.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from selfseg.engine import METHODS, segment
from selfseg.io import find_images, read_image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = [ROOT.parent / "shared" / "data" / "ssct-samples" / "images" / f"Test_{i}.bmp" for i in (1, 2, 3)]


def _peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", help="images or folders (default: ssct-samples Test_1..3)")
    parser.add_argument("--method", default="s3net", choices=sorted(METHODS))
    parser.add_argument("--size", type=int, default=256, help="working size (longer side)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fixed-iter", type=int, default=5, help="iterations of the steady-state run")
    args = parser.parse_args(argv)

    paths = find_images(args.images) if args.images else [p for p in DEFAULT_IMAGES if p.exists()]
    if not paths:
        parser.error("no images found; pass some")
    device = torch.device(args.device)
    print(f"selfseg speed: method={args.method} size={args.size} device={device} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(f"{'image':<20} {'iters':>5} {'s/image':>8} {'s/iter':>7} {'steady s/iter':>13} {'peak MiB':>9}")
    per_image, per_iter, steady = [], [], []
    for index, path in enumerate(paths):
        image = read_image(path)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = segment(image, method=args.method, size=args.size, device=device)
        start = time.perf_counter()
        segment(image, method=args.method, size=args.size, device=device, max_iter=args.fixed_iter,
                min_labels=0, tol=0.0)
        fixed = (time.perf_counter() - start) / args.fixed_iter
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = _peak_rss_mib()
        seconds_per_iter = result.seconds / result.iterations
        print(f"{path.stem:<20} {result.iterations:>5} {result.seconds:>8.2f} {seconds_per_iter:>7.3f} "
              f"{fixed:>13.3f} {peak:>9.0f}")
        if index > 0 or len(paths) == 1:
            per_image.append(result.seconds)
            per_iter.append(seconds_per_iter)
            steady.append(fixed)
    print(f"mean over {'images after the first' if len(paths) > 1 else 'the image'}: "
          f"{statistics.mean(per_image):.2f} s/image, {statistics.mean(per_iter):.3f} s/iter, "
          f"{statistics.mean(steady):.3f} steady s/iter; peak memory "
          f"{'GPU allocated' if device.type == 'cuda' else 'process RSS'} {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
