"""Optional dependencies in one place (as MONAI's ``utils/module.py``): ``optional_import`` imports one or
says, in one line, which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependencyError", "optional_import"]

EXTRAS: dict[str, tuple[str, str]] = {
    "nibabel": ("medical", "medical volumes need it"),
    "pydicom": ("medical", "medical volumes need it"),
    "ray": ("ray", "the Ray backend needs it"),
}
"""Optional module -> (the extra that installs it, what needs it)."""


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message says what to install."""


def optional_import(name: str) -> ModuleType:
    """Import the optional module ``name`` (a package of ``EXTRAS`` or one of its modules) or raise
    :class:`MissingDependencyError` naming the package and the extra that installs it, e.g.
    ``pip install "selfseg[medical]"``."""
    package = name.partition(".")[0]
    extra, purpose = EXTRAS[package]
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependencyError(
            f'{package} is not installed; {purpose}: pip install "selfseg[{extra}]"'
        ) from err
