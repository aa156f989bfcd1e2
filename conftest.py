"""Collection for the whole suite: the napari widget is left out where napari is not installed, and Qt draws
offscreen (its OpenGL goes through the virtual X server that pytest-xvfb starts)."""

import importlib.util
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

collect_ignore = [] if importlib.util.find_spec("napari") else ["src/selfseg/napari/widget.py"]
