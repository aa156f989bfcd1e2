"""The napari widget (selfseg.napari), with napari's own viewer fixture, Qt offscreen and OpenGL on a virtual X
server (pytest-xvfb). ``make test`` installs napari and CI installs Xvfb: there these tests must run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from selfseg import io
from selfseg.foreground import points_mask
from selfseg.runner import run_batch
from selfseg.runner.review import read_marks, write_mark

from helpers import write_nifti

if os.environ.get("SELFSEG_REQUIRE_NAPARI") != "1":
    pytest.importorskip("napari", reason="the napari extra is not installed")
    if not shutil.which("Xvfb") and not os.environ.get("DISPLAY"):
        pytest.skip("napari's canvas needs OpenGL: install Xvfb (Debian: xvfb)", allow_module_level=True)

from selfseg.napari.widget import SelfsegWidget  # noqa: E402

WAIT_MS = 120_000


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, found = viewer.window.add_plugin_dock_widget("selfseg", "Segment and review")  # through the npe2 manifest
    assert isinstance(found, SelfsegWidget)
    return found


def _disc(height: int = 48, width: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    grey = np.where((yy - 24) ** 2 + (xx - 30) ** 2 < 14**2, 0.2, 0.85)
    grey[:, :6] = 0.5  # a third region at the left
    return np.stack([grey, grey * 0.9, grey * 0.8], axis=2)


def _segment(widget, qtbot) -> None:
    widget.start_segment()
    assert widget.busy and not widget.save_button.isEnabled()  # the fit runs in a worker thread
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)


class _Mouse:
    """What napari hands a layer's mouse callbacks: a press, then moves, then a release."""

    def __init__(self, position) -> None:
        self.type, self.position = "mouse_press", position


def _click(layer, position, *, drag: bool = False) -> None:
    """Drive the layer's mouse callbacks as napari does, for a click (or a drag) at data ``position``."""
    for callback in list(layer.mouse_drag_callbacks):
        event = _Mouse(position)
        steps = callback(layer, event)
        if steps is None:
            continue
        next(steps, None)
        for kind in (["mouse_move"] if drag else []) + ["mouse_release"]:
            event.type = kind
            next(steps, None)


def test_a_fit_in_a_worker_thread_adds_clusters_and_mask(widget, qtbot) -> None:
    viewer = widget.viewer
    viewer.add_image(_disc(), name="disc", rgb=True)
    widget.method.setCurrentText("s3net")
    steps = []
    widget.progress.valueChanged.connect(steps.append)
    _segment(widget, qtbot)
    assert "error" not in widget.status.text(), widget.status.text()
    assert steps[:3] == [0, 1, 2] and max(steps) >= 3  # the bar followed the iterations
    labels, mask = viewer.layers["disc clusters"].data, viewer.layers["disc mask"].data > 0
    assert labels.shape == mask.shape == (48, 64) and labels.max() >= 2
    disc = _disc()[..., 0] < 0.5
    assert 2 * (mask & disc).sum() / (mask.sum() + disc.sum()) > 0.9
    assert viewer.layers["disc prompt"].ndim == 2


def test_the_point_prompt_and_a_click_mend_the_mask(widget, qtbot) -> None:
    viewer = widget.viewer
    viewer.add_image(_disc(), name="disc", rgb=True)
    widget.method.setCurrentText("kmeans")
    _segment(widget, qtbot)
    automatic = viewer.layers["disc mask"].data > 0
    labels = viewer.layers["disc clusters"].data
    prompt = viewer.layers["disc prompt"]
    prompt.add([[24, 2]])  # (y, x): the band at the left
    band = viewer.layers["disc mask"].data > 0
    np.testing.assert_array_equal(band, labels == labels[24, 2])
    prompt.add([[24, 30]])  # and the disc: the union of both regions
    np.testing.assert_array_equal(viewer.layers["disc mask"].data > 0, band | (labels == labels[24, 30]))
    prompt.data = np.empty((0, 2))  # no points: the mask from before the prompt again
    np.testing.assert_array_equal(viewer.layers["disc mask"].data > 0, automatic)

    clusters = viewer.layers["disc clusters"]
    clusters.mode = "pan_zoom"
    _click(clusters, (24.0, 2.0), drag=True)  # a drag pans: no edit
    np.testing.assert_array_equal(viewer.layers["disc mask"].data > 0, automatic)
    _click(clusters, (24.0, 2.0))
    clicked = viewer.layers["disc mask"].data > 0
    np.testing.assert_array_equal(clicked, automatic | (labels == labels[24, 2]))  # the band added
    prompt.add([[40, 60]])  # a point on the background, then none: the click's edit comes back with the points gone
    prompt.data = np.empty((0, 2))
    np.testing.assert_array_equal(viewer.layers["disc mask"].data > 0, clicked)
    _click(clusters, (24.0, 2.0))
    np.testing.assert_array_equal(viewer.layers["disc mask"].data > 0, automatic)  # and taken out
    assert widget.edited


def test_a_second_fit_replaces_the_first_and_old_layers_edit_nothing(widget, qtbot) -> None:
    viewer = widget.viewer
    viewer.add_image((_disc()[..., 0] * 1000).astype(np.int16), name="ct")  # Hounsfield-like integers
    widget.method.setCurrentText("kmeans")
    _segment(widget, qtbot)
    first = viewer.layers["ct mask"]
    _segment(widget, qtbot)
    assert first.unique_id not in {layer.unique_id for layer in viewer.layers}
    assert [layer.name for layer in viewer.layers].count("ct mask") == 1 and "ct" in viewer.layers
    viewer.add_image(_disc(), name="disc", rgb=True)
    _segment(widget, qtbot)
    before = viewer.layers["disc mask"].data.copy()
    viewer.layers["ct prompt"].add([[24, 2]])
    _click(viewer.layers["ct clusters"], (24.0, 2.0))
    np.testing.assert_array_equal(viewer.layers["disc mask"].data, before)


def _images(tmp_path: Path, shared: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(os.listdir(shared))[:3]:
        shutil.copy(shared / name, images / name)
    return images


def test_review_marks_edits_and_saves_a_folder(widget, qtbot, tmp_path, shared_data) -> None:
    images = _images(tmp_path, shared_data / "isic2018" / "images")
    out = tmp_path / "out"
    run_batch([images], out, method="kmeans", progress=False, workers=1)
    stems = sorted(p.stem for p in images.iterdir())
    write_mark(out, stems[2], "needs edit")
    (out / "study").mkdir()
    io.write_image(out / "study" / f"{stems[2]}_mask.png", io.read_mask(out / f"{stems[2]}_mask.png"))
    widget.order.setCurrentText("marks")
    widget.open_folder(out)
    assert [item.image for item in widget.items][0] == stems[2]  # "needs edit" first
    assert widget.item == stems[2] and f"{stems[2]} study mask" in widget.viewer.layers
    assert widget.viewer.layers[stems[2]].rgb
    widget.mark("accepted")
    assert read_marks(out) == {f"/{stems[2]}": "accepted"}
    shown = widget.item
    assert shown != stems[2]
    mask = widget.mask()
    x = mask.shape[2] // 2
    widget.toggle_at((mask.shape[1] // 2, x))
    edited = widget.mask()[0]
    assert (edited != mask[0]).any()
    widget.mark("rejected")  # an unsaved edit: refused, said
    assert widget.item == shown and widget.status.text() == f"{shown} has an unsaved edit: Save mask, or Revert"
    assert f"/{shown}" not in read_marks(out)
    widget.save()
    np.testing.assert_array_equal(io.read_mask(out / f"{shown}_mask.png"), edited)
    rows = {row["image"]: row for row in io.read_csv(out / "results.csv")}
    assert rows[shown]["chosen"] == "edited" and rows[shown]["foreground_pixels"] == str(int(edited.sum()))
    assert read_marks(out)[f"/{shown}"] == "edited"
    gone = [item.image for item in widget.items if item.image not in (shown, stems[2])][0]
    (images / f"{gone}.jpg").unlink()  # an input that cannot be read is said, and can still be marked
    widget.inputs.setCurrentRow([item.image for item in widget.items].index(gone))
    assert widget.status.text().startswith(f"error: {gone}: input not found")
    assert shown not in widget.viewer.layers and f"{shown} mask" not in widget.viewer.layers  # the previous input's
    widget.mark("rejected")
    assert read_marks(out)[f"/{gone}"] == "rejected"


def test_a_layer_from_a_file_is_segmented_into_the_output_folder(widget, qtbot, tmp_path, shared_data) -> None:
    images = _images(tmp_path, shared_data / "isic2018" / "images")
    path = sorted(images.iterdir())[0]
    widget.viewer.open(str(path))
    widget.method.setCurrentText("kmeans")
    widget.out.setText(str(tmp_path / "out"))
    _segment(widget, qtbot)
    qtbot.waitUntil(lambda: widget.item == path.stem, timeout=WAIT_MS)
    assert (tmp_path / "out" / f"{path.stem}_mask.png").exists()
    expected = tmp_path / "cli"
    run_batch([path], expected, method="kmeans", progress=False, workers=1)
    assert (expected / f"{path.stem}_mask.png").read_bytes() == (tmp_path / "out" / f"{path.stem}_mask.png").read_bytes()
    shown = {layer.unique_id for layer in widget.viewer.layers if layer.name.startswith(f"{path.stem} ")}
    widget.open_folder(tmp_path / "cli")  # elsewhere, then the same layer again: resumed, shown at its input
    assert path.stem in widget.viewer.layers  # the layer read from the file stays, the reviewed ones go
    assert len(shown) == 4 and not shown & {layer.unique_id for layer in widget.viewer.layers}  # "stem [1]" too
    widget.viewer.layers.selection.active = widget.viewer.layers[path.stem]
    widget.out.setText(str(tmp_path / "out"))
    _segment(widget, qtbot)
    qtbot.waitUntil(lambda: widget.folder == tmp_path / "out" and widget.item == path.stem, timeout=WAIT_MS)


def test_a_volume_opens_in_3d_and_the_prompt_mends_one_slice(widget, qtbot, tmp_path) -> None:
    data = np.full((24, 20, 3), 200, dtype=np.int16)
    data[6:16, 5:15, :] = 40
    write_nifti(tmp_path / "vol.nii.gz", data)
    out = tmp_path / "out"
    run_batch([tmp_path / "vol.nii.gz"], out, method="kmeans", progress=False, workers=1)
    widget.open_folder(out)
    viewer = widget.viewer
    assert viewer.layers["vol"].data.ndim == 3 and viewer.layers["vol mask"].data.shape[0] == 3
    before = widget.mask()
    prompt = viewer.layers["vol prompt"]
    assert prompt.ndim == 3
    labels = viewer.layers["vol clusters"].data
    prompt.add([[1, 0, 0]])  # slice 1, the corner: the background region (the square inside it, a hole, filled)
    after = widget.mask()
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    np.testing.assert_array_equal(after[1], points_mask(labels[1], [(0, 0)]))
    assert after[1].all() and not before[1].all()
    widget.save()
    assert read_marks(out) == {"/vol": "edited"}


def test_messages_without_a_layer_or_a_folder(widget) -> None:
    widget.start_segment()
    assert widget.status.text() == "select an image layer first"
    widget.save()
    assert widget.status.text().startswith("nothing to save")
    widget.open_folder(Path("/nonexistent"))
    assert widget.status.text().startswith("error: /nonexistent has no results.csv")
