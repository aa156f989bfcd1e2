"""The selfseg dock widget of napari: segment an image layer, mend its mask, review an output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Labels, Points
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
from selfseg.runner.review import EDITED, ORDERS, load_item, review_items, save_edited_mask, write_mark
from selfseg.runner.task import image_seed
from selfseg.settings import FitSettings

__all__ = ["SelfsegWidget"]

_MARK_BUTTONS = (("Accept", "accepted"), ("Reject", "rejected"), ("Needs edit", "needs edit"))


class _Progress(QObject):
    """Carries the fit's iterations from the worker thread to the progress bar (a queued Qt signal)."""

    step = Signal(int)


class SelfsegWidget(QWidget):
    """Segment the selected image layer (method, target, seed; in a worker thread, with progress), mend the mask
    with a point prompt (the ``prompt`` Points layer: the regions under its points) or clicks (a click on a cluster
    adds it to the mask or takes it out), and review an output folder (its inputs in review order, marks written
    to ``qc.csv``, a mended mask saved with ``runner.review.save_edited_mask``).

    Layers of an image named N: ``N clusters`` and ``N mask`` (Labels), ``N study mask`` where the folder has a
    study stage, ``N prompt`` (Points). A 3-D grey layer is a volume: segmenting fits the slice shown; a point
    prompt or a click mends the slice it is on.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.folder: Path | None = None  # the output folder under review
        self.items: list = []  # its ReviewItems, in review order
        self.image: str | None = None  # the name of the image whose layers the widget edits
        self.item: str | None = None  # its input stem in ``folder``, when it is one
        self.auto_mask: np.ndarray | None = None  # (D, H, W) bool: the mask before any prompt
        self.edited = False
        self.busy = False
        self._progress = _Progress()
        self._progress.step.connect(lambda value: self.progress.setValue(value))
        self._connected: set[int] = set()  # the layers whose events the widget listens to
        self._reviewed: set[int] = set()  # the layers showing the folder's input under review
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
        self.save_button = QPushButton("Save mask")
        self.save_button.clicked.connect(self.save)
        review = QVBoxLayout()
        for widget in (self.open_button, self.order, self.inputs):
            review.addWidget(widget)
        review.addLayout(marks)
        review.addWidget(self.save_button)
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
        if layer is None or self.busy:
            self.say("select an image layer first" if layer is None else "a segmentation is running")
            return
        method, target, seed = self.method.currentText(), self.target.currentText(), self.seed.value()
        path, out = layer.source.path, self.out.text().strip()
        self.busy = True
        self.segment_button.setEnabled(False)
        if path and out:
            self.progress.setRange(0, 0)  # busy: the runner reports inputs, not iterations
            worker = create_worker(run_batch, [path], out, method=method, seed=seed, target=target, resume=True,
                                   progress=False, workers=1)
            worker.returned.connect(lambda report: self._on_saved_run(report, Path(out), input_stem(path)))
        else:
            data = np.asarray(layer.data)
            volume = data.ndim == 3 and not layer.rgb
            index = int(self.viewer.dims.current_step[0]) if volume else 0
            pixels = data[index] if volume else data
            if path:
                seed = image_seed(seed, path)
            self.progress.setRange(0, FitSettings(method).iterations if method in METHODS else 0)  # a baseline: busy
            self.progress.setValue(0)
            worker = create_worker(segment, pixels, method, seed=seed, target=target,
                                   callback=lambda iteration, record: self._progress.step.emit(iteration))
            worker.returned.connect(lambda result: self._on_result(layer, data, index if volume else None, result))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._done)
        self.say(f"segmenting {layer.name} with {method}...")
        worker.start()

    def _done(self) -> None:
        self.busy = False
        self.segment_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def _on_error(self, err: Exception) -> None:
        self.say(f"error: {err}")

    def _on_result(self, layer: Image, data: np.ndarray, index: int | None, result) -> None:
        """Show an in-memory segmentation (slice ``index`` of a volume, else the image)."""
        shape = data.shape[:3] if index is not None else (1, *result.labels.shape)
        labels, mask = np.zeros(shape, np.int32), np.zeros(shape, bool)
        labels[index or 0], mask[index or 0] = result.labels, result.mask
        self.item = None
        self._show(layer.name, labels, mask, None)
        self.say(f"{layer.name}: {result.n_labels} clusters, foreground {result.mask.mean():.1%} "
                 f"({result.foreground}); not saved: segment a layer read from a file, with an output folder")

    def _on_saved_run(self, report, out: Path, stem: str) -> None:
        """Open the folder a layer's file was segmented into, at that input."""
        if report.failures:
            self.say(f"error: {report.failures[0][0]}: {report.failures[0][1]}")
            return
        self.open_folder(out)
        rows = [item.image for item in self.items]
        if stem in rows:
            self.inputs.setCurrentRow(rows.index(stem))

    # ----- layers and edits
    def _show(self, name: str, labels: np.ndarray, mask: np.ndarray, study: np.ndarray | None) -> None:
        """Add or update the Labels and Points layers of image ``name``: (D, H, W) arrays, D = 1 for an image."""
        squeeze = (lambda a: a[0]) if labels.shape[0] == 1 else (lambda a: a)
        self.image, self.auto_mask, self.edited = name, mask.copy(), False
        clusters = self._layer(f"{name} clusters", Labels, squeeze(labels), opacity=0.35)
        self._layer(f"{name} mask", Labels, squeeze(mask.astype(np.uint8)), opacity=0.5)
        if study is not None:
            self._layer(f"{name} study mask", Labels, squeeze(study.astype(np.uint8)), opacity=0.5)
        prompt = self._layer(f"{name} prompt", Points, np.empty((0, labels.ndim - (labels.shape[0] == 1))))
        with prompt.events.data.blocker():
            prompt.data = np.empty((0, prompt.ndim))
        for layer in (clusters, self.viewer.layers[f"{name} mask"], prompt):
            if id(layer) not in self._connected:
                self._connected.add(id(layer))
                if layer is prompt:
                    layer.events.data.connect(self._on_points)
                else:
                    layer.mouse_drag_callbacks.append(self._on_click)

    def _layer(self, name: str, kind: type, data: np.ndarray, **style):
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], kind) and (
                self.viewer.layers[name].ndim == (data.ndim if kind is not Points else data.shape[1])):
            layer = self.viewer.layers[name]
            if kind is not Points:
                layer.data = data
            return layer
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        add = {Labels: self.viewer.add_labels, Points: self.viewer.add_points}[kind]
        return add(data, name=name, **({"ndim": data.shape[1]} if kind is Points else style))

    def _stack(self, layer: Labels) -> np.ndarray:
        data = np.asarray(layer.data)
        return data[None] if data.ndim == 2 else data

    def mask(self) -> np.ndarray:
        """The current mask, (D, H, W) bool (D = 1 for an image)."""
        return self._stack(self.viewer.layers[f"{self.image} mask"]) > 0

    def _set_mask(self, mask: np.ndarray) -> None:
        layer = self.viewer.layers[f"{self.image} mask"]
        layer.data = (mask[0] if np.asarray(layer.data).ndim == 2 else mask).astype(np.uint8)
        self.edited = True

    def _on_points(self, event=None) -> None:
        """The point prompt: on each slice with points, the mask is the union of the regions under them
        (``foreground.points_mask``); without points, the automatic mask."""
        if self.image is None:
            return
        labels = self._stack(self.viewer.layers[f"{self.image} clusters"])
        points = np.round(np.asarray(self.viewer.layers[f"{self.image} prompt"].data)).astype(int)
        points = np.column_stack([np.zeros(len(points), int), points]) if points.shape[1] == 2 else points
        mask = self.auto_mask.copy()
        inside = [(z, y, x) for z, y, x in points if 0 <= z < labels.shape[0] and 0 <= y < labels.shape[1]
                  and 0 <= x < labels.shape[2]]
        for z in {z for z, _, _ in inside}:
            mask[z] = points_mask(labels[z], [(x, y) for zz, y, x in inside if zz == z])
        self._set_mask(mask)

    def _on_click(self, layer, event) -> None:
        """A click (pan-zoom mode) on the clusters or mask layer adds the cluster region under it to the mask, or
        takes it out (``foreground.toggle_region``)."""
        if event.type != "mouse_press" or layer.mode != "pan_zoom" or self.image is None:
            return
        self.toggle_at(layer.world_to_data(event.position))

    def toggle_at(self, position) -> None:
        """Add or remove the cluster region under data ``position`` ((y, x), or (z, y, x) for a volume)."""
        labels = self._stack(self.viewer.layers[f"{self.image} clusters"])
        z, y, x = (0, *np.round(position).astype(int)) if len(position) == 2 else np.round(position).astype(int)
        if not (0 <= z < labels.shape[0] and 0 <= y < labels.shape[1] and 0 <= x < labels.shape[2]):
            return
        mask = self.mask()
        mask[z] = toggle_region(mask[z], labels[z], (x, y))
        self._set_mask(mask)

    # ----- review
    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder of selfseg segment")
        if folder:
            self.open_folder(Path(folder))

    def open_folder(self, folder: str | Path) -> None:
        """List the inputs of output folder ``folder`` in review order and show the first."""
        try:
            review_items(folder)
        except ValueError as err:
            self.say(f"error: {err}")
            return
        self.folder = Path(folder)
        self.out.setText(str(folder))
        self.refresh()
        if self.items:
            self.inputs.setCurrentRow(0)

    def refresh(self) -> None:
        """Re-read the folder's rows and marks; keep the input shown selected."""
        if self.folder is None:
            return
        self.items = review_items(self.folder, order=self.order.currentText())
        self.inputs.blockSignals(True)
        self.inputs.clear()
        for item in self.items:
            self.inputs.addItem(f"{item.image}   {item.confidence:.2f}" + (f"   [{item.mark}]" if item.mark else ""))
        rows = [item.image for item in self.items]
        if self.item in rows:
            self.inputs.setCurrentRow(rows.index(self.item))
        self.inputs.blockSignals(False)

    def _on_row(self, row: int) -> None:
        if 0 <= row < len(self.items):
            self.show_item(self.items[row].image)

    def show_item(self, image: str) -> None:
        """Show input ``image`` of the folder: image, clusters, mask and study mask."""
        try:
            loaded = load_item(self.folder, image)
        except (KeyError, OSError, ValueError) as err:
            self.say(f"error: {image}: {err}")
            return
        for layer in [layer for layer in self.viewer.layers if id(layer) in self._reviewed]:
            self.viewer.layers.remove(layer)  # the previous input's layers, never the user's own
        pixels = loaded.slices if loaded.volume is not None else loaded.slices[0]  # (D, H, W[, 3]) or (H, W, C)
        rgb = pixels.ndim == (4 if loaded.volume is not None else 3) and pixels.shape[-1] == 3
        grey = pixels[..., 0] if loaded.volume is None and not rgb else pixels
        added = [self.viewer.add_image(grey, name=image, rgb=rgb)]
        self.item = image
        self._show(image, loaded.labels, loaded.mask, loaded.study_mask)
        added += [self.viewer.layers[f"{image} {part}"] for part in ("clusters", "mask", "study mask", "prompt")
                  if f"{image} {part}" in self.viewer.layers]
        self._reviewed = {id(layer) for layer in added}
        item = self.items[[i.image for i in self.items].index(image)]
        self.say(f"{image}: confidence {item.confidence:.2f}" + (f", marked {item.mark}" if item.mark else ""))

    def mark(self, mark: str) -> None:
        """Record ``mark`` for the input shown in the folder's ``qc.csv``, then show the next input."""
        if self.folder is None or self.item is None:
            self.say("open an output folder first")
            return
        write_mark(self.folder, self.item, mark)
        order = [item.image for item in self.items]
        position = order.index(self.item)
        following = order[position + 1] if position + 1 < len(order) else self.item
        self.refresh()
        self.inputs.setCurrentRow([item.image for item in self.items].index(following))

    def save(self) -> None:
        """Save the mask of the input shown (``runner.review.save_edited_mask``) and mark it edited."""
        if self.folder is None or self.item is None:
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
