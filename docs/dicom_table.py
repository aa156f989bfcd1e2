"""Write the table of pydicom's own DICOM test files in docs/formats.md: each file of the installed pydicom's
``data/test_files`` that holds pixel data, segmented by ``run_batch(..., method="otsu")`` (``selfseg segment
--method otsu``) or refused with the reason, so the figures live in one place, written by the code that measured
them.

Run from the repository root, with the medical extra installed (``make test`` installs it):

    .venv/bin/python docs/dicom_table.py

The table stands between ``<!-- table: dicom -->`` and ``<!-- /table -->``; its first line names the pydicom
version. ``tests/test_volumes.py`` reads every file again and checks the outcome against the table.
"""

from __future__ import annotations

import re
import sys
import tempfile
import warnings
from pathlib import Path

import pydicom

from selfseg.volumes.dicom import PIXEL_KEYWORDS

FORMATS = Path(__file__).resolve().parent / "formats.md"
TEST_FILES = Path(pydicom.__file__).resolve().parent / "data" / "test_files"
MARKER = re.compile(r"(<!-- table: dicom -->\n).*?(<!-- /table -->)", re.S)
ROW = re.compile(r"^\| `([^`]+)` \| [^|]* \| (?:segmented|refused: `(.*)`) \|$", re.M)
VERSION = re.compile(r"pydicom (\S+) ships")


def _dataset(path: Path):
    """The dataset of ``path`` as pydicom reads it when forced, large values left on disk; None if none parses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, force=True, defer_size=1024)
    except Exception:
        return None


def pixel_files() -> list[Path]:
    """The files under pydicom's ``data/test_files`` whose dataset holds pixel data, in path order."""
    found = []
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        ds = _dataset(path)
        if ds is not None and any(keyword in ds for keyword in PIXEL_KEYWORDS):
            found.append(path)
    return found


def stored_as(path: Path) -> str:
    """The transfer syntax of ``path`` (its name), or what stands in for it."""
    ds = _dataset(path)
    uid = ds.file_meta.get("TransferSyntaxUID") if ds is not None else None
    return "no transfer syntax" if uid is None else uid.name


def outcomes(files: list[Path]) -> dict[str, str | None]:
    """Each file (relative to ``TEST_FILES``) -> None when segmented, else the one-line reason it was refused."""
    from selfseg import run_batch

    result: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory() as out:
        for k, path in enumerate(files):
            report = run_batch([path], Path(out) / str(k), method="otsu", workers=1, progress=False)
            result[path.relative_to(TEST_FILES).as_posix()] = report.failures[0][1] if report.failures else None
    return result


def published() -> tuple[str, dict[str, str | None]]:
    """The pydicom version the table of docs/formats.md was written with, and its rows as ``outcomes`` gives them."""
    block = MARKER.search(FORMATS.read_text(encoding="utf-8"))
    if block is None:
        return "", {}
    version = VERSION.search(block.group(0))
    return (version.group(1) if version else ""), {m[1]: m[2] for m in ROW.finditer(block.group(0))}


def table(results: dict[str, str | None]) -> str:
    """The markdown between the markers: a summary line and one row per file."""
    refused = sum(reason is not None for reason in results.values())
    lines = [
        f"pydicom {pydicom.__version__} ships {len(results)} files with pixel data in `pydicom/data/test_files`: "
        f"{len(results) - refused} segmented, {refused} refused.",
        "",
        "| file | stored as | result |",
        "|---|---|---|",
    ]
    for name, reason in results.items():
        result = "segmented" if reason is None else f"refused: `{reason}`"
        lines.append(f"| `{name}` | {stored_as(TEST_FILES / name)} | {result} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = FORMATS.read_text(encoding="utf-8")
    if MARKER.search(text) is None:
        print(f"{FORMATS}: no <!-- table: dicom --> marker", file=sys.stderr)
        return 1
    results = outcomes(pixel_files())
    FORMATS.write_text(MARKER.sub(lambda m: m.group(1) + table(results) + m.group(2), text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
