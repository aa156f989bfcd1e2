"""Optional dependencies in one place (as MONAI's ``utils/module.py``): ``optional_import`` imports one or
says, in one line, which extra installs it (or the version it needs, where an older one is installed)."""

from __future__ import annotations

import importlib
import re
from types import ModuleType

__all__ = ["EXTRAS", "MINIMUM", "MissingDependencyError", "optional_import"]

EXTRAS: dict[str, tuple[str, str]] = {
    "nibabel": ("medical", "medical volumes need"),
    "pydicom": ("medical", "medical volumes need"),
    "ray": ("ray", "the Ray backend needs"),
}
"""Optional module -> (the extra that installs it, what needs it: the start of a sentence)."""
MINIMUM: dict[str, tuple[int, ...]] = {"pydicom": (3, 0)}
"""Optional module -> the oldest version selfseg works with, where an older one fails in ways that do not say so
(pydicom 2 has no ``pydicom.pixels``); pyproject.toml's extras require the same."""


class MissingDependencyError(ImportError):
    """An optional package is not installed, or too old; the message says what to install."""


def _version(module: ModuleType) -> tuple[int, ...]:
    """The leading numbers of a module's ``__version__`` ("3.0.2" -> (3, 0, 2); none: ())."""
    numbers = re.match(r"\d+(?:\.\d+)*", str(getattr(module, "__version__", "")))
    return tuple(int(part) for part in numbers.group(0).split(".")) if numbers else ()


def optional_import(name: str) -> ModuleType:
    """Import the optional module ``name`` (a package of ``EXTRAS`` or one of its modules) or raise
    :class:`MissingDependencyError` naming the package (and the version needed, ``MINIMUM``) and the extra that
    installs it, e.g. ``pip install "selfseg[medical]"``."""
    package = name.partition(".")[0]
    extra, purpose = EXTRAS[package]
    install = f'pip install "selfseg[{extra}]"'
    try:
        found = importlib.import_module(package)
    except ImportError as err:
        raise MissingDependencyError(f"{package} is not installed; {purpose} it: {install}") from err
    floor = MINIMUM.get(package, ())
    if _version(found) < floor:
        needed = f"{package} >= {'.'.join(map(str, floor))}"
        have = getattr(found, "__version__", "of an unknown version")
        raise MissingDependencyError(f"{package} {have} is installed; {purpose} {needed}: {install}")
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependencyError(f"{package} has no {name} ({err}); {purpose} it: {install}") from err
