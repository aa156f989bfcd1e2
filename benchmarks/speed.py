"""Speed and memory of per-image segmentation: seconds per iteration, per image, peak memory.

Prints figures; it asserts nothing. Run from the repository root:

    .venv/bin/python benchmarks/speed.py                     # every method, 256 px, CPU, the SSCT samples
    .venv/bin/python benchmarks/speed.py --methods msformer --device cuda IMAGES...

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


def _bench_method(
    method: str, paths: list[Path], size: int, device: torch.device, fixed_iter: int, precision: str
) -> None:
    """Print one table for ``method``: per image, then the mean over the images after the first."""
    print(f"\n{method}")
    print(f"{'image':<20} {'iters':>5} {'s/image':>8} {'s/iter':>7} {'steady s/iter':>13} {'peak MiB':>9}")
    per_image, per_iter, steady = [], [], []
    for index, path in enumerate(paths):
        image = read_image(path)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        options = {"method": method, "size": size, "device": device, "precision": precision}
        result = segment(image, **options)
        start = time.perf_counter()
        segment(image, **options, max_iter=fixed_iter, min_labels=0, tol=0.0)
        fixed = (time.perf_counter() - start) / fixed_iter
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib()
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
          f"{'GPU allocated' if device.type == 'cuda' else 'process RSS (so far)'} {peak:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", help="images or folders (default: ssct-samples Test_1..3)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="working size (longer side)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fixed-iter", type=int, default=5, help="iterations of the steady-state run")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)

    paths = find_images(args.images) if args.images else [p for p in DEFAULT_IMAGES if p.exists()]
    if not paths:
        parser.error("no images found; pass some")
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    device = torch.device(args.device)
    print(f"selfseg speed: size={args.size} device={device} precision={args.precision} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    for method in methods:
        _bench_method(method, paths, args.size, device, args.fixed_iter, args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
