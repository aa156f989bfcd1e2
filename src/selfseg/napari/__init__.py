"""napari plugin (``pip install "selfseg[napari]"``): a dock widget, Plugins > selfseg > Segment and review.

It segments the selected image layer with the chosen method, target and seed in a worker thread and adds the
cluster map and mask as Labels layers; a Points layer is the point prompt and a click on a cluster adds it to the
mask or takes it out; it opens an output folder of ``selfseg segment``, steps through its inputs in review order
and records accepted / rejected / needs edit / edited in the folder's ``qc.csv``, the file the report reads; a
mended mask is saved atomically with its ``results.csv`` row saying ``chosen = "edited"``
(``runner.review``). docs/napari.md shows it. The widget is ``selfseg.napari.widget.SelfsegWidget``; this package
imports napari and Qt only when the widget is asked for.
"""
