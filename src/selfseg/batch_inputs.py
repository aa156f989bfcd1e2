"""What a batch segments: command-line inputs expanded into images, volume files and DICOM series folders.

``find_inputs`` turns files, folders (searched recursively) and list files (``@list.txt``) into one
list of paths; ``input_stem`` names each one's outputs and ``input_digest`` fingerprints its bytes.
2-D image folders of datasets are listed by ``selfseg.io.find_images`` (not recursive).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from selfseg import io, volumes

__all__ = ["INPUT_SUFFIXES", "find_inputs", "input_digest", "input_digests", "input_stem"]

INPUT_SUFFIXES: tuple[str, ...] = (*io.IMAGE_SUFFIXES, *volumes.VOLUME_SUFFIXES)
"""Name endings a folder search keeps by default (case-insensitive); DICOM files are also found by their header."""


def input_stem(path: str | os.PathLike) -> str:
    """Name of an input's outputs: the file name without its suffix (``scan.nii.gz`` -> ``scan``), a folder's name
    (``series/..`` or ``.``: the name of the folder meant). Never a path: the outputs stay in the output folder."""
    path = Path(path)
    if path.is_dir():
        return Path(os.path.abspath(path)).name
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem


def input_digest(path: str | os.PathLike, *, salt: bytes = b"") -> str:
    """SHA-256 (hex) of ``salt`` and an input's bytes; for a folder, of each non-hidden file's name and
    bytes in name order (``input_digests`` with one salt)."""
    return input_digests(path, (salt,))[0]


def input_digests(path: str | os.PathLike, salts: Sequence[bytes]) -> list[str]:
    """``input_digest`` with each of ``salts``, from one pass over the input's bytes (1 MiB at a time)."""
    digests = [hashlib.sha256(salt) for salt in salts]
    path = Path(path)
    files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as f:
            name = [file.name.encode() + b"\0"] if path.is_dir() else []
            for block in itertools.chain(name, iter(lambda: f.read(1 << 20), b"")):
                for digest in digests:
                    digest.update(block)
    return [digest.hexdigest() for digest in digests]


def _list_entries(list_file: Path) -> Iterator[Path]:
    """Paths of a list file, one per line, relative to its folder; blank lines and ``#`` comments skipped."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"list file not found: {list_file}") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield list_file.parent / line


def _search(folder: Path, pattern: str | None, exclude: Path | None) -> list[Path]:
    """Inputs under ``folder``, recursively, in path order: matching files, and each folder holding DICOM
    files once (a series) in place of those files. Hidden files and folders, and ``exclude``
    (resolved), are skipped."""
    if pattern is None:
        candidates = (p for p in folder.rglob("*") if p.is_file())
    else:
        candidates = (p for p in folder.rglob(pattern) if p.is_file())
    found: dict[Path, None] = {}
    for path in sorted(candidates):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        name = path.name.lower()
        if path.suffix.lower() not in io.IMAGE_SUFFIXES and (
            name.endswith(".dcm") or io.sniff_format(path) == "DICOM"
        ):
            found[path.parent] = None
        elif pattern is not None or name.endswith(INPUT_SUFFIXES):
            found[path] = None
    return list(found)


def find_inputs(
    inputs: Iterable[str | os.PathLike], *, pattern: str | None = None, exclude: str | os.PathLike | None = None
) -> list[Path]:
    """Expand command-line inputs into the images, volume files and DICOM series folders to segment.

    - A file is kept as given (the reader reports it if it cannot be read); a folder holding DICOM
      files is one series.
    - ``@FILE`` is a list file: one path per line, relative to the list file's folder, each expanded
      like an argument; blank lines and lines starting with ``#`` are skipped. An entry that does not
      exist is kept (it fails as ``file not found`` and the batch goes on).
    - Any other folder is searched recursively (hidden names skipped) for files whose name matches
      ``pattern`` (``Path.rglob`` syntax, e.g. ``*.png`` or ``CT/*.dcm``; default: a suffix in
      :data:`INPUT_SUFFIXES`, case-insensitive). Files with a DICOM header (whatever their name) make
      their folder a series input, listed once in place of its files. Nothing under ``exclude``
      (the output folder, when it lies inside an input folder) is found.

    Order follows ``inputs``, folders in path order; duplicates are dropped.

    Raises:
        FileNotFoundError: an input (or a list file) does not exist.
    """
    exclude = None if exclude is None else Path(exclude).resolve()

    def expand(path: Path) -> list[Path]:
        return _search(path, pattern, exclude) if path.is_dir() and not volumes.is_volume(path) else [path]

    found: dict[str, Path] = {}
    for item in inputs:
        text = os.fspath(item)
        if isinstance(text, str) and text.startswith("@"):
            candidates = [entry for listed in _list_entries(Path(text[1:])) for entry in expand(listed)]
        elif Path(item).exists():
            candidates = expand(Path(item))
        else:
            raise io.missing_input(item)
        for candidate in candidates:
            found.setdefault(os.path.abspath(candidate), candidate)
    return list(found.values())
