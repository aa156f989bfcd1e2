"""Figure of segmentation outputs, one row per image: image | clusters | mask over the image [| truth].

Run from the repository root. Defaults make docs/images/demo.png from the output of `make demo`:

    .venv/bin/python docs/demo_figure.py
    .venv/bin/python docs/demo_figure.py --images ../shared/data/ssct-samples/images/Test_4.png \\
        --results /tmp/msformer --out docs/images/msformer_lungct.png

The worst cases of a scored run (its metrics.csv, from `selfseg evaluate` or `selfseg benchmark`), with
the expert masks beside them (docs/results.md):

    .venv/bin/python docs/demo_figure.py --images ../shared/data/isic2018/images \\
        --results bench/isic2018/s3net/auto --worst 4 --gt ../shared/data/isic2018 --out worst.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from selfseg.datasets import load_masks
from selfseg.io import find_images, read_image, read_labels, read_mask, write_image
from selfseg.visualize import colorize_labels

ROOT = Path(__file__).resolve().parents[1]


def _tile(array: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((side, side), Image.Resampling.NEAREST))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", default=[str(ROOT / "examples" / "images")])
    parser.add_argument("--results", default=str(ROOT / "results"), help="folder written by selfseg segment")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "demo.png"))
    parser.add_argument("--tile", type=int, default=200, help="side of each tile in pixels")
    parser.add_argument("--worst", type=int, metavar="N", help="only the N images of lowest Dice in RESULTS/metrics.csv")
    parser.add_argument("--gt", metavar="DIR", help="masks folder or dataset: add the expert mask as a last tile")
    args = parser.parse_args(argv)
    results = Path(args.results)
    paths = find_images(args.images)
    if args.worst:
        with open(results / "metrics.csv", newline="", encoding="utf-8") as handle:
            dice = {row["image"]: float(row["dice"]) for row in csv.DictReader(handle)}
        paths = sorted((p for p in paths if p.stem in dice), key=lambda p: dice[p.stem])[: args.worst]
    truths = load_masks(args.gt) if args.gt else {}
    rows = []
    for path in paths:
        image = read_image(path)
        rgb = ((np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) * 255).astype(np.uint8)
        labels = read_labels(results / f"{path.stem}_labels.png")
        overlay = np.asarray(Image.open(results / f"{path.stem}_overlay.png").convert("RGB"))
        tiles = [_tile(rgb, args.tile), _tile(colorize_labels(labels), args.tile), _tile(overlay, args.tile)]
        if path.stem in truths:
            tiles.append(_tile(np.repeat(read_mask(truths[path.stem])[:, :, None] * np.uint8(255), 3, axis=2), args.tile))
        rows.append(np.concatenate(tiles, axis=1))
    write_image(args.out, np.concatenate(rows, axis=0))


if __name__ == "__main__":
    main()
