"""Argument checks with exact messages, in one place (as kornia's ``core/check.py`` and MONAI's
``look_up_option``): every public function checks its arrays and options with these, so that a bad call
gets the same kind of one-line message wherever it is made.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

__all__ = ["check_shape", "look_up_option", "one_line"]

Dim = int | str | None
"""One expected dimension: an int must match; a name ("H") or None ("*") matches any size."""

T = TypeVar("T")


class _Shaped(Protocol):
    @property
    def shape(self) -> Sequence[int]: ...


def _format(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("*" if dim is None else str(dim) for dim in shape) + ")"


def _matches(shape: tuple[int, ...], expected: Sequence[Dim]) -> bool:
    return len(shape) == len(expected) and all(
        not isinstance(dim, int) or dim == size for dim, size in zip(expected, shape)
    )


def check_shape(name: str, array: _Shaped, *shapes: Sequence[Dim]) -> None:
    """Raise ValueError unless the shape of ``array`` (a NumPy array or a tensor) matches one of ``shapes``.

    >>> import numpy as np
    >>> check_shape("scores", np.zeros((1, 3, 4, 4)), ("B", "C", "H", "W"))
    >>> check_shape("theta", np.zeros((2, 3)), (1, 2, 3))
    Traceback (most recent call last):
    ...
    ValueError: theta must have shape (1, 2, 3), got (2, 3)
    >>> check_shape("image", np.zeros((4,)), ("H", "W"), ("H", "W", 3))
    Traceback (most recent call last):
    ...
    ValueError: image must have shape (H, W) or (H, W, 3), got (4,)
    """
    shape = tuple(int(size) for size in array.shape)
    if not any(_matches(shape, expected) for expected in shapes):
        choices = [_format(expected) for expected in shapes]
        wanted = choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise ValueError(f"{name} must have shape {wanted}, got {shape}")


def look_up_option(value: T, choices: Collection[T], *, name: str) -> T:
    """``value`` if it is one of ``choices``; otherwise ValueError naming the valid choices.

    >>> look_up_option("kmeans", ("kmeans", "argmax"), name="readout")
    'kmeans'
    >>> look_up_option("mean", ("kmeans", "argmax"), name="readout")
    Traceback (most recent call last):
    ...
    ValueError: readout must be one of kmeans, argmax, got 'mean'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def one_line(text: str) -> str:
    """``text`` as one console line: control characters (a newline, a terminal escape in a file name) shown as
    Python writes them in a string (``\\n``, ``\\x1b``).

    >>> one_line("error: a\\nb.png: empty file")
    'error: a\\\\nb.png: empty file'
    """
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
