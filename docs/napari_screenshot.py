"""Take docs/images/napari.png: the selfseg widget in napari, reviewing three shared dermoscopy images segmented
with S3-Net (seed 0), the least confident shown with its cluster map and mask.

Run from the repository root with the napari extra (``make test`` installs it); without a display, on a virtual X
server with Qt's X11 platform (Qt's offscreen platform leaves the canvas out of a window's picture; Debian:
``apt install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1``):

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/napari_screenshot.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import napari
from PIL import Image

from selfseg.runner import run_batch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "isic2018" / "images"
OUT = ROOT / "docs" / "images" / "napari.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "out"
        run_batch(sorted(IMAGES.iterdir())[:3], out, method="s3net", seed=0, progress=False, workers=1)
        viewer = napari.Viewer(show=False)
        viewer.window.resize(1400, 860)
        _, widget = viewer.window.add_plugin_dock_widget("selfseg", "Segment and review")
        widget.open_folder(out)
        picture = viewer.screenshot(canvas_only=False, flash=False)
        viewer.close()
    Image.fromarray(picture[..., :3]).save(OUT, optimize=True)
    print(f"wrote {OUT.relative_to(ROOT)} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
