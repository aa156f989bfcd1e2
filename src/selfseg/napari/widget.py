"""The selfseg dock widget of napari: segment an image layer, mend its mask, review an output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from selfseg.batch_inputs import input_stem
from selfseg.engine import ALL_METHODS, METHODS, segment
from selfseg.foreground import TARGETS, points_mask, toggle_region
from selfseg.runner import run_batch
from selfseg.runner.manifest import EDITED
from selfseg.runner.review import ORDERS, load_item, review_items, save_edited_mask, write_mark
from selfseg.runner.task import image_seed
from selfseg.settings import FitSettings

__all__ = ["SelfsegWidget"]

_MARK_BUTTONS = (("Accept", "accepted"), ("Reject", "rejected"), ("Needs edit", "needs edit"))
_BEFORE = {"adding", "removing", "changing"}
"""The actions of a Points layer's data event that come before the change (the data is still the old one)."""


class _Progress(QObject):
    """Carries the fit's iterations from the worker thread to the progress bar (a queued Qt signal)."""

    step = Signal(int)


def _is(layer, other) -> bool:
    """Whether two layer handles are one layer (napari hands plugins proxies, a new one per access)."""
    return other is not None and layer.unique_id == other.unique_id


def _ids(layers: dict) -> set:
    """Unique ids of the widget's layers."""
    return {layer.unique_id for layer in layers.values()}


class SelfsegWidget(QWidget):
    """Segment the selected image layer (method, target, seed; in a worker thread, with progress), mend the mask
    with a point prompt (the ``prompt`` Points layer: the regions under its points) or clicks (a click on a cluster
    adds it to the mask or takes it out), and review an output folder (its inputs in review order, marks written
    to ``qc.csv``, a mended mask saved with ``runner.review.save_edited_mask``).

    Layers of an image named N: ``N clusters`` and ``N mask`` (Labels), ``N study mask`` where the folder has a
    study stage, ``N prompt`` (Points). Only the layers of the image shown last are edited. A 3-D grey layer is a
    volume: segmenting fits the slice shown; a point prompt or a click mends the slice it is on. An unsaved edit
    must be saved or reverted before another input is shown or marked.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.folder: Path | None = None  # the output folder under review
        self.items: list = []  # its ReviewItems, in review order
        self.item: str | None = None  # the input of ``folder`` shown, when it is one
        self.layers: dict[str, object] = {}  # the edited image's layers: image, clusters, mask, prompt, study
        self.before_prompt: dict[int, np.ndarray] = {}  # slice -> its mask before its first prompt point
        self.edited = False
        self.busy = False
        self._progress = _Progress()
        self._progress.step.connect(lambda value: self.progress.setValue(value))
        self._reviewed: set = set()  # unique ids of the layers showing the input under review, removed for the next
        self._build()

    # ----- layout
    def _build(self) -> None:
        self.method, self.target, self.seed = QComboBox(), QComboBox(), QSpinBox()
        self.method.addItems(ALL_METHODS)
        self.method.setCurrentText("s3net")
        self.target.addItems(TARGETS)
        self.seed.setRange(0, 2**31 - 1)
        self.seed.lineEdit().setText(self.seed.textFromValue(0))  # Qt 6 leaves a spin box never changed blank
        self.out = QLineEdit()
        self.out.setPlaceholderText("output folder (to save; optional)")
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(self.start_segment)
        self.progress = QProgressBar()
        fit = QFormLayout()
        for label, field in (("method", self.method), ("target", self.target), ("seed", self.seed),
                             ("output", self.out)):
            fit.addRow(label, field)
        fit.addRow(self.segment_button)
        fit.addRow(self.progress)
        fit_box = QGroupBox("Segment the selected image")
        fit_box.setLayout(fit)

        self.open_button = QPushButton("Open output folder...")
        self.open_button.clicked.connect(self._choose_folder)
        self.order = QComboBox()
        self.order.addItems(ORDERS)
        self.order.currentTextChanged.connect(lambda _: self.refresh())
        self.inputs = QListWidget()
        self.inputs.currentRowChanged.connect(self._on_row)
        marks = QHBoxLayout()
        self.mark_buttons = {}
        for text, mark in _MARK_BUTTONS:
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, mark=mark: self.mark(mark))
            marks.addWidget(button)
            self.mark_buttons[mark] = button
        edits = QHBoxLayout()
        self.save_button, self.revert_button = QPushButton("Save mask"), QPushButton("Revert")
        self.save_button.clicked.connect(self.save)
        self.revert_button.clicked.connect(self.revert)
        edits.addWidget(self.save_button)
        edits.addWidget(self.revert_button)
        review = QVBoxLayout()
        for widget in (self.open_button, self.order, self.inputs):
            review.addWidget(widget)
        review.addLayout(marks)
        review.addLayout(edits)
        review_box = QGroupBox("Review an output folder")
        review_box.setLayout(review)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout()
        for widget in (fit_box, review_box, self.status):
            layout.addWidget(widget)
        layout.addStretch()
        self.setLayout(layout)

    def say(self, text: str) -> None:
        """Show one line in the widget's status line."""
        self.status.setText(text)

    def _set_busy(self, busy: bool) -> None:
        """While a fit runs, nothing else writes to a folder: the buttons that do are disabled."""
        self.busy = busy
        for button in (self.segment_button, self.save_button, self.revert_button, self.open_button,
                       *self.mark_buttons.values()):
            button.setEnabled(not busy)
        self.inputs.setEnabled(not busy)

    # ----- segment
    def _image_layer(self) -> Image | None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        return images[-1] if images else None

    def start_segment(self) -> None:
        """Segment the selected image layer in a worker thread. A layer read from a file, with an output folder
        given, is segmented by the batch runner into that folder (the same files and row as ``selfseg segment``)
        and opened for review; any other layer is segmented in memory (``engine.segment``)."""
        layer = self._image_layer()
        if layer is None or self.busy or self._unsaved():
            if layer is None:
                self.say("select an image layer first")
            return
        method, target, seed = self.method.currentText(), self.target.currentText(), self.seed.value()
        path, out = layer.source.path, self.out.text().strip()
        if path and out and Path(path).is_file():
            self.progress.setRange(0, 0)  # busy: the runner reports inputs, not iterations
            worker = create_worker(run_batch, [path], out, method=method, seed=seed, target=target, resume=True,
                                   progress=False, workers=1)
            worker.returned.connect(lambda report: self._on_saved_run(report, Path(out), input_stem(path)))
        else:
            data = np.asarray(layer.data)
            if np.issubdtype(data.dtype, np.integer) and data.dtype not in (np.uint8, np.uint16):
                data = data.astype(np.float32)  # e.g. CT in Hounsfield units: scaled by its range
            volume = data.ndim == 3 and not layer.rgb
            index = int(np.clip(round(layer.world_to_data(self.viewer.dims.point)[0]), 0, len(data) - 1)) if volume \
                else None
            if path:
                seed = image_seed(seed, path)
            self.progress.setRange(0, FitSettings(method).iterations if method in METHODS else 0)  # a baseline: busy
            self.progress.setValue(0)
            worker = create_worker(segment, data[index] if volume else data, method, seed=seed, target=target,
                                   callback=lambda iteration, record: self._progress.step.emit(iteration))
            worker.returned.connect(lambda result: self._on_result(layer, data, index, result))
        worker.errored.connect(lambda err: self.say(f"error: {err}"))
        worker.finished.connect(self._done)
        self.say(f"segmenting {layer.name} with {method}...")
        self._set_busy(True)
        worker.start()

    def _done(self) -> None:
        self._set_busy(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def _on_result(self, layer: Image, data: np.ndarray, index: int | None, result) -> None:
        """Show an in-memory segmentation (slice ``index`` of a volume, else the image)."""
        shape = data.shape[:3] if index is not None else (1, *result.labels.shape)
        labels, mask = np.zeros(shape, np.int32), np.zeros(shape, bool)
        labels[index or 0], mask[index or 0] = result.labels, result.mask
        if self.item is None and _is(layer, self.layers.get("image")):  # a fit of the same layer again
            self._remove(_ids(self.layers) - {layer.unique_id})  # its layers, not the image
        self.item = None
        self._show(layer.name, labels, mask, None)
        self.layers["image"] = layer
        self.say(f"{layer.name}: {result.n_labels} clusters, foreground {result.mask.mean():.1%} "
                 f"({result.foreground}); not saved: segment a layer read from a file, with an output folder")

    def _on_saved_run(self, report, out: Path, stem: str) -> None:
        """Open the folder a layer's file was segmented into, at that input."""
        if report.failures:
            self.say(f"error: {report.failures[0][0]}: {report.failures[0][1]}")
            return
        self.open_folder(out, show=stem)

    # ----- layers and edits
    def _show(self, name: str, labels: np.ndarray, mask: np.ndarray, study: np.ndarray | None) -> None:
        """Add the Labels and Points layers of image ``name`` ((D, H, W) arrays, D = 1 for an image); they become
        the layers the widget edits."""
        squeeze = (lambda a: a[0]) if labels.shape[0] == 1 else (lambda a: a)
        ndim = 2 if labels.shape[0] == 1 else 3
        self.layers = {
            "clusters": self.viewer.add_labels(squeeze(labels), name=f"{name} clusters", opacity=0.35),
            "mask": self.viewer.add_labels(squeeze(mask.astype(np.uint8)), name=f"{name} mask", opacity=0.5),
        }
        if study is not None:
            self.layers["study"] = self.viewer.add_labels(squeeze(study.astype(np.uint8)), name=f"{name} study mask",
                                                          opacity=0.5)
        self.layers["prompt"] = self.viewer.add_points(np.empty((0, ndim)), ndim=ndim, name=f"{name} prompt")
        self.before_prompt, self.edited = {}, False
        for layer in (self.layers["clusters"], self.layers["mask"]):
            layer.mouse_drag_callbacks.append(self._on_click)
        self.layers["prompt"].events.data.connect(self._on_points)

    def _remove(self, ids: set) -> None:
        """Remove the viewer's layers whose unique ids are ``ids``."""
        for layer in [layer for layer in self.viewer.layers if layer.unique_id in ids]:
            self.viewer.layers.remove(layer)

    def _stack(self, key: str) -> np.ndarray:
        data = np.asarray(self.layers[key].data)
        return data[None] if data.ndim == 2 else data

    def mask(self) -> np.ndarray:
        """The mask being edited, (D, H, W) bool (D = 1 for an image)."""
        return self._stack("mask") > 0

    def _set_mask(self, mask: np.ndarray) -> None:
        layer = self.layers["mask"]
        layer.data = (mask[0] if np.asarray(layer.data).ndim == 2 else mask).astype(np.uint8)
        self.edited = True

    def _on_points(self, event) -> None:
        """The point prompt: on each slice with points, the mask is the union of the regions under them
        (``foreground.points_mask``); a slice whose last point is removed gets back its mask from before its
        first point. Other slices keep their mask, edits included."""
        if str(event.action) in _BEFORE or not _is(event.source, self.layers.get("prompt")):
            return  # napari's notice before the change, or an earlier image's prompt
        labels, mask = self._stack("clusters"), self.mask()
        points = np.round(np.asarray(event.source.data)).astype(int)
        points = np.column_stack([np.zeros(len(points), int), points]) if points.shape[1] == 2 else points
        inside = [(z, y, x) for z, y, x in points if 0 <= z < labels.shape[0] and 0 <= y < labels.shape[1]
                  and 0 <= x < labels.shape[2]]
        prompted = {z for z, _, _ in inside}
        for z in prompted - set(self.before_prompt):
            self.before_prompt[z] = mask[z].copy()
        for z in set(self.before_prompt) - prompted:
            mask[z] = self.before_prompt.pop(z)
        for z in prompted:
            mask[z] = points_mask(labels[z], [(x, y) for zz, y, x in inside if zz == z])
        self._set_mask(mask)

    def _on_click(self, layer, event):
        """A click (pan-zoom mode, press and release without moving) on the clusters or mask layer adds the cluster
        region under it to the mask, or takes it out (``foreground.toggle_region``); a drag pans."""
        if layer.mode != "pan_zoom" or not any(_is(layer, self.layers.get(key)) for key in ("clusters", "mask")):
            return
        position, moved = layer.world_to_data(event.position), False
        yield
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved:
            self.toggle_at(position)

    def toggle_at(self, position) -> None:
        """Add or remove the cluster region under data ``position`` ((y, x), or (z, y, x) for a volume)."""
        labels = self._stack("clusters")
        z, y, x = (0, *np.round(position).astype(int)) if len(position) == 2 else np.round(position).astype(int)
        if not (0 <= z < labels.shape[0] and 0 <= y < labels.shape[1] and 0 <= x < labels.shape[2]):
            return
        mask = self.mask()
        mask[z] = toggle_region(mask[z], labels[z], (x, y))
        self._set_mask(mask)

    def _unsaved(self) -> bool:
        """Whether the input shown has an unsaved edit (then said in the status line)."""
        if self.edited and self.item is not None:
            self.say(f"{self.item} has an unsaved edit: Save mask, or Revert")
            return True
        return False

    # ----- review
    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder of selfseg segment")
        if folder:
            self.open_folder(Path(folder))

    def open_folder(self, folder: str | Path, *, show: str | None = None) -> None:
        """List the inputs of output folder ``folder`` in review order and show input ``show`` (else the first)."""
        if self._unsaved():
            return
        try:
            review_items(folder)
        except ValueError as err:
            self.say(f"error: {err}")
            return
        self.folder, self.item = Path(folder), None
        self.refresh()
        names = [item.image for item in self.items]
        if names:
            self.inputs.setCurrentRow(names.index(show) if show in names else 0)

    def refresh(self) -> None:
        """Re-read the folder's rows and marks; keep the input shown selected."""
        if self.folder is None:
            return
        self.items = review_items(self.folder, order=self.order.currentText())
        self.inputs.blockSignals(True)
        self.inputs.clear()
        for item in self.items:
            self.inputs.addItem(f"{item.image}   {item.confidence:.2f}" + (f"   [{item.mark}]" if item.mark else ""))
        names = [item.image for item in self.items]
        if self.item in names:
            self.inputs.setCurrentRow(names.index(self.item))
        self.inputs.blockSignals(False)

    def _on_row(self, row: int) -> None:
        if not 0 <= row < len(self.items) or self.items[row].image == self.item:
            return
        if self._unsaved():
            self.inputs.blockSignals(True)
            self.inputs.setCurrentRow([item.image for item in self.items].index(self.item))
            self.inputs.blockSignals(False)
            return
        self.show_item(self.items[row].image)

    def show_item(self, image: str) -> None:
        """Show input ``image`` of the folder: image, clusters, mask and study mask. It becomes the input that marks
        and saves are for, even when it cannot be read (it can still be marked)."""
        self._remove(self._reviewed)  # the previous input's layers, never the user's own
        self.item, self.layers, self.edited = image, {}, False
        try:
            loaded = load_item(self.folder, image)
        except (KeyError, OSError, ValueError) as err:
            self.say(f"error: {image}: {err}")
            return
        pixels = loaded.slices if loaded.volume is not None else loaded.slices[0]  # (D, H, W[, 3]) or (H, W, C)
        rgb = pixels.ndim == (4 if loaded.volume is not None else 3) and pixels.shape[-1] == 3
        grey = pixels[..., 0] if loaded.volume is None and not rgb else pixels
        picture = self.viewer.add_image(grey, name=image, rgb=rgb)
        self._show(image, loaded.labels, loaded.mask, loaded.study_mask)
        self.layers["image"] = picture
        self._reviewed = _ids(self.layers)
        item = self.items[[i.image for i in self.items].index(image)]
        self.say(f"{image}: confidence {item.confidence:.2f}" + (f", marked {item.mark}" if item.mark else ""))

    def mark(self, mark: str) -> None:
        """Record ``mark`` for the input shown in the folder's ``qc.csv``, then show the next input."""
        if self.folder is None or self.item is None:
            self.say("open an output folder first")
            return
        if self._unsaved():
            return
        write_mark(self.folder, self.item, mark)
        order = [item.image for item in self.items]
        position = order.index(self.item)
        following = order[position + 1] if position + 1 < len(order) else self.item
        self.refresh()
        self.inputs.setCurrentRow([item.image for item in self.items].index(following))

    def revert(self) -> None:
        """Drop the unsaved edit of the input shown: its saved mask again."""
        if self.folder is not None and self.item is not None:
            self.show_item(self.item)

    def save(self) -> None:
        """Save the mask of the input shown (``runner.review.save_edited_mask``) and mark it edited."""
        if self.folder is None or self.item is None or "mask" not in self.layers:
            self.say("nothing to save: open an output folder, or segment a layer read from a file with an output "
                     "folder")
            return
        try:
            save_edited_mask(self.folder, self.item, self.mask())
        except (KeyError, OSError, ValueError) as err:
            self.say(f"error: {self.item}: {err}")
            return
        write_mark(self.folder, self.item, EDITED)
        self.edited = False
        self.refresh()
        self.say(f"{self.item}: mask saved in {self.folder}, marked {EDITED}")
