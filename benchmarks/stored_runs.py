"""What the figure scripts of this folder share: the stored runs of `selfseg benchmark` and their expert masks.

A BENCH folder is one seed's output of `selfseg benchmark`; each `<dataset>/<method>/auto` folder below it holds
the run's `<stem>_labels.png` (cluster map) and `<stem>_mask.png` (the mask chosen without ground truth).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from selfseg.datasets import Pair, load_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the BENCH folders and ``--data``, as every script here takes them."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", nargs="+", type=Path, help="benchmark output folders (one seed each)")
    parser.add_argument("--data", type=Path, default=DATA, help="the datasets (default: ../shared/data)")
    return parser


def stored_runs(benches: list[Path], data: Path) -> Iterator[tuple[Path, str, str, Path, dict[str, Pair]]]:
    """(bench, dataset, method, run folder, {stem: image/mask pair}) of every ``auto`` run below ``benches``."""
    for bench in benches:
        for run in sorted(bench.glob("*/*/auto")):
            dataset, method = run.parts[-3], run.parts[-2]
            yield bench, dataset, method, run, {pair.stem: pair for pair in load_pairs(data / dataset)}


def scored_stems(run: Path, pairs: dict[str, Pair]) -> Iterator[tuple[str, Pair]]:
    """(stem, pair) of every image of ``pairs`` whose cluster map and mask ``run`` holds."""
    for stem, pair in pairs.items():
        if (run / f"{stem}_labels.png").is_file() and (run / f"{stem}_mask.png").is_file():
            yield stem, pair
