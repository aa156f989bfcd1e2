"""Figure of segmentation outputs, one row per image: image | clusters | mask over the image.

Run from the repository root. Defaults make docs/images/demo.png from the output of `make demo`:

    .venv/bin/python docs/demo_figure.py
    .venv/bin/python docs/demo_figure.py --images ../shared/data/ssct-samples/images/Test_4.png \\
        --results /tmp/msformer --out docs/images/msformer_lungct.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from selfseg.io import find_images, read_image, read_labels, write_image
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
    args = parser.parse_args(argv)
    results = Path(args.results)
    rows = []
    for path in find_images(args.images):
        image = read_image(path)
        rgb = ((np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) * 255).astype(np.uint8)
        labels = read_labels(results / f"{path.stem}_labels.png")
        overlay = np.asarray(Image.open(results / f"{path.stem}_overlay.png").convert("RGB"))
        tiles = (_tile(rgb, args.tile), _tile(colorize_labels(labels), args.tile), _tile(overlay, args.tile))
        rows.append(np.concatenate(tiles, axis=1))
    write_image(args.out, np.concatenate(rows, axis=0))


if __name__ == "__main__":
    main()
