"""Make docs/images/demo.png from the output of `make demo`: image | clusters | mask over image.

Run from the repository root after `make demo`: .venv/bin/python docs/demo_figure.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from selfseg.io import read_image, write_image
from selfseg.visualize import colorize_labels

ROOT = Path(__file__).resolve().parents[1]
TILE = 200


def _tile(array: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((TILE, TILE), Image.Resampling.BILINEAR))


def main() -> None:
    rows = []
    for path in sorted((ROOT / "examples" / "images").iterdir()):
        image = read_image(path)
        rgb = (np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image) * 255
        labels = np.asarray(Image.open(ROOT / "results" / f"{path.stem}_labels.png"))
        overlay = np.asarray(Image.open(ROOT / "results" / f"{path.stem}_overlay.png").convert("RGB"))
        rows.append(np.concatenate([_tile(rgb.astype(np.uint8)), _tile(colorize_labels(labels)), _tile(overlay)], axis=1))
    write_image(ROOT / "docs" / "images" / "demo.png", np.concatenate(rows, axis=0))


if __name__ == "__main__":
    main()
