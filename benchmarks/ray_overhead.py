"""Per-task overhead of the Ray backend against the local one: the same images, one fit at a time on one core.

Prints figures (markdown); it asserts nothing. Run from the repository root:

    .venv/bin/python benchmarks/ray_overhead.py                      # kmeans, the first 20 isic2018 images
    .venv/bin/python benchmarks/ray_overhead.py --method s3net --images 8

The local backend fits in this process (``workers=1``), Ray as tasks of a local Ray of 1 CPU that this script
starts (its start-up timed apart), both with 1 torch thread and the method's defaults. Ray runs once cold (its
first task starts the worker process, which imports torch) and then, alternating with the local runs, warm (the
worker reused). Overhead per task: (Ray wall time - the local wall time beside it) / images. Every run's files
are compared byte for byte with the first local run's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from selfseg.methods import ALL_METHODS
from selfseg.optional import optional_import
from selfseg.runner import available_cores, run_batch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "isic2018" / "images"


def _run(images: list[Path], out: Path, method: str, backend: str) -> tuple[float, dict[str, bytes]]:
    """Wall time of ``run_batch`` on ``images`` into ``out``, and the files it wrote."""
    start = time.perf_counter()
    run_batch(images, out, method=method, workers=1, threads=1, backend=backend, progress=False)
    wall = time.perf_counter() - start
    return wall, {path.name: path.read_bytes() for path in sorted(out.glob("*.png"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=ALL_METHODS, default="kmeans")
    parser.add_argument("--images", type=int, default=20, help="the first N images of --folder (default: 20)")
    parser.add_argument("--folder", type=Path, default=IMAGES)
    parser.add_argument("--repeats", type=int, default=3, help="local and warm Ray runs, alternating (default: 3)")
    args = parser.parse_args()
    images = sorted(args.folder.iterdir())[: args.images]
    ray = optional_import("ray")
    print(f"{args.method}, {len(images)} images of {args.folder.name}, ray {ray.__version__}, "
          f"{available_cores()} cores, one fit at a time")
    print("| run | wall s | s/task | Ray overhead s/task | files equal the first local run's |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        try:
            local_wall, reference = _run(images, Path(tmp) / "local0", args.method, "local")
            ray_wall, files = _run(images, Path(tmp) / "ray0", args.method, "ray")
            rows = [("local", local_wall, None, True), ("Ray, cold", ray_wall, local_wall, files == reference)]
            overheads = []
            for k in range(1, args.repeats + 1):
                local_wall, files = _run(images, Path(tmp) / f"local{k}", args.method, "local")
                rows.append(("local", local_wall, None, files == reference))
                ray_wall, files = _run(images, Path(tmp) / f"ray{k}", args.method, "ray")
                rows.append(("Ray, warm", ray_wall, local_wall, files == reference))
                overheads.append((ray_wall - local_wall) / len(images))
        finally:
            ray.shutdown()
    for name, wall, beside, equal in rows:
        overhead = "-" if beside is None else f"{(wall - beside) / len(images):+.3f}"
        print(f"| {name} | {wall:.1f} | {wall / len(images):.3f} | {overhead} | {'yes' if equal else 'no'} |")
    print(f"\nRay overhead per task, warm: median {statistics.median(overheads):+.3f} s "
          f"(runs: {', '.join(f'{value:+.3f}' for value in overheads)}); starting the local Ray: {startup:.1f} s")


if __name__ == "__main__":
    main()
