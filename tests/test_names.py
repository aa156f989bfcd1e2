"""Hostile names and paths (issue 38): outputs never land outside ``--out`` (stems with ``..``, leading dashes,
newlines, very long names, symlinked inputs, symlink loops), every printed line stays one line, and no file a user
passes in is ever unpickled. The report's side (markup in names, checked in Chromium) is in test_report.py."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfseg import cli
from selfseg.batch_inputs import find_inputs, input_stem
from selfseg.runner import run_batch
from selfseg.runner import task as runner_task
from selfseg.study.store import FORMAT

from helpers import fake_fit_images

SRC = Path(__file__).resolve().parents[1] / "src" / "selfseg"
LONG = "y" * 245  # its outputs' names (+ "_labels.png") exceed the 255 bytes of a file name: it fails
FITTING = "x" * 230  # fits, though its temporary names would not without being shortened


def _png(path: Path) -> Path:
    yy, xx = np.mgrid[:24, :32]
    Image.fromarray(np.where((yy - 12) ** 2 + (xx - 16) ** 2 < 40, 40, 200).astype(np.uint8)).save(path, format="PNG")
    return path


def _files(root: Path) -> set[str]:
    """Every file and link under ``root``, links not followed."""
    found = set()
    for folder, folders, files in os.walk(root):
        found |= {os.path.join(folder, name) for name in files + folders}
    return found


@pytest.fixture
def hostile(tmp_path) -> Path:
    """in/ with names a shell or a path join would trip over, a symlinked image, and symlink loops."""
    folder, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    for name in ("-rf.png", "--out.png", "a\nb.png", "...png", f"{FITTING}.png", f"{LONG}.png"):
        _png(folder / name)
    (folder / "link.png").symlink_to(_png(elsewhere / "real.png"))
    (folder / "loop.png").symlink_to("loop.png")
    (folder / "ping.png").symlink_to("pong.png")
    (folder / "pong.png").symlink_to("ping.png")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")  # a folder loop
    _png(folder / "sub" / "c.png")
    return folder


def test_hostile_names_are_segmented_into_out_and_nowhere_else(tmp_path, hostile, monkeypatch, capsys):
    calls = []
    fake = fake_fit_images()
    monkeypatch.setattr(runner_task, "fit_images", lambda images, *a, **k: calls.append(len(images)) or fake(images, *a, **k))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    before = _files(tmp_path)
    # a name starting with a dash is an input after "--"; "...png" (stem "..") is hidden, so named on its own
    argv = ["segment", "--out", "out", "--workers", "1", "--quiet", "--", "in", "in/...png"]
    assert cli.main(argv) == 1  # the name too long for its outputs failed, alone
    printed = capsys.readouterr()
    stems = {"-rf", "--out", "a\nb", "..", FITTING, "link", "c"}
    assert {p for p in _files(tmp_path) - before if not p.startswith(f"{out}{os.sep}")} == {str(out)}
    written = {name for name in os.listdir(out) if name.endswith("_overlay.png")}
    assert written == {f"{stem}_overlay.png" for stem in stems} and (out / ".._overlay.png").exists()
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        assert {row["image"] for row in csv.DictReader(handle)} == stems  # a newline survives the table
    (error,) = printed.err.splitlines()  # one line each, the newline shown as \n
    assert error == f"error: in/{LONG}.png: cannot write out/{LONG}_labels.png: file name too long"
    assert "a\\nb: 2 labels" in printed.out and len(printed.out.splitlines()) == len(stems) + 1
    assert cli.main(argv) == 1 and len(calls) == len(stems)  # resumed: nothing fitted again
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []


def test_the_folders_printed_are_one_line_each(tmp_path, monkeypatch, capsys):
    """An --out with a newline in its name: the summary, report and score lines show it as \\n."""
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    (tmp_path / "in").mkdir()
    _png(tmp_path / "in" / "a.png")
    (tmp_path / "gt").mkdir()
    _png(tmp_path / "gt" / "a.png")
    out = tmp_path / "o\nut"
    argv = ["segment", str(tmp_path / "in"), "--out", str(out), "--gt", str(tmp_path / "gt"), "--report",
            "--workers", "1", "--quiet"]
    assert cli.main(argv) == 0
    named = [line for line in capsys.readouterr().out.splitlines() if "->" in line]  # images, scores, report
    assert len(named) == 3 and all(f"{tmp_path}/o\\nut" in line for line in named)


def test_an_input_named_like_a_temporary_file_keeps_its_outputs(tmp_path, monkeypatch):
    """The outputs of ``.x.0123abcd.tmp.png`` start like a killed run's temporary file; a run leaves them be."""
    calls = []
    fake = fake_fit_images()
    monkeypatch.setattr(runner_task, "fit_images", lambda images, *a, **k: calls.append(len(images)) or fake(images, *a, **k))
    image, out = _png(tmp_path / ".x.0123abcd.tmp.png"), tmp_path / "out"
    run_batch([image], out, workers=1, progress=False)
    report = run_batch([image], out, resume=True, workers=1, progress=False)
    assert report.skipped == [".x.0123abcd.tmp"] and calls == [1]
    assert (out / ".x.0123abcd.tmp_labels.png").exists()


def test_symlink_loops_are_not_inputs_and_a_folder_named_dot_dot_is_named_for_itself(hostile) -> None:
    found = {p.relative_to(hostile).as_posix() for p in find_inputs([hostile])}
    assert found == {"-rf.png", "--out.png", "a\nb.png", f"{FITTING}.png", f"{LONG}.png", "link.png", "sub/c.png"}
    assert input_stem(hostile / "sub" / "..") == "in" and input_stem(hostile / "...png") == ".."
    assert input_stem(hostile / "sub" / "up") == "up"  # a linked folder keeps the link's name


@pytest.mark.parametrize(("name", "reason"), [("loop.png", "is a symlink loop"), ("ping.png", "is a symlink loop"),
                                             ("gone.png", "not found")])
def test_an_input_that_is_not_there_says_which_way(hostile, name, reason, capsys) -> None:
    (hostile / "dangling.png").symlink_to("nowhere.png")
    with pytest.raises(FileNotFoundError, match=f"^input {reason}: "):
        find_inputs([hostile / name])
    with pytest.raises(FileNotFoundError, match="^input is a broken symlink: "):
        find_inputs([hostile / "dangling.png"])
    assert cli.main(["segment", str(hostile / name), "--out", str(hostile.parent / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"input {reason}: {hostile / name}")


def test_no_file_a_user_passes_in_is_unpickled(tmp_path, capsys) -> None:
    """A study model that runs code when unpickled is refused and runs none; no reader in selfseg unpickles."""

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "ran"),)

    bomb = tmp_path / "bomb.pt"
    torch.save({"format": FORMAT, "state": Payload()}, bomb)
    (tmp_path / "in").mkdir()
    _png(tmp_path / "in" / "a.png")
    argv = ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--study-model", str(bomb), "--quiet"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {bomb}: not a usable selfseg study model: cannot be read safely")
    assert not (tmp_path / "ran").exists()
    source = "\n".join(path.read_text(encoding="utf-8") for path in SRC.rglob("*.py"))
    assert not re.search(r"\b(pickle|dill|joblib|shelve|marshal)\b\.load|allow_pickle\s*=\s*True", source)
    loads = re.findall(r"torch\.load\(([^)]*)\)", source)
    assert loads and all("weights_only=True" in arguments for arguments in loads)
