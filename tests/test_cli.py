from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfseg import cli, runner
from selfseg.runner import BatchReport
from selfseg.runner import task as runner_task

from helpers import DOCS, fake_fit_images

FAST = ["--size", "32", "--max-iter", "2", "--device", "cpu", "--quiet"]


def _disc(path):
    yy, xx = np.mgrid[:40, :48]
    Image.fromarray(np.where((yy - 20) ** 2 + (xx - 24) ** 2 < 120, 50, 200).astype(np.uint8)).save(path)
    return path


def test_segment_ok(tmp_path, capsys):
    image = _disc(tmp_path / "Test_1.png")
    out = tmp_path / "out"
    assert cli.main(["segment", str(image), "--out", str(out), *FAST]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert len(stdout) == 2
    assert stdout[0].startswith("Test_1: ") and "labels" in stdout[0] and "foreground" in stdout[0]
    assert stdout[1] == f"1 images segmented, 0 failed -> {out}"
    assert {p.name for p in out.iterdir()} == {
        "Test_1_labels.png",
        "Test_1_mask.png",
        "Test_1_overlay.png",
        "results.csv",
    }


def test_segment_failure_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    assert cli.main(["segment", str(bad), "--out", str(tmp_path / "out"), *FAST]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"0 images segmented, 1 failed -> {tmp_path / 'out'}\n"
    assert captured.err == f"error: {bad}: cannot decode image: unknown image format\n"


def test_missing_input_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert cli.main(["segment", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err
    assert not (tmp_path / "out").exists()


def test_duplicate_stems_are_a_usage_error(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    a, b = _disc(tmp_path / "a.png"), _disc(tmp_path / "x" / "a.png")
    assert cli.main(["segment", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    assert "same name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "x.png"],  # no --out
        ["segment", "--out", "o"],  # no input
        ["segment", "x.png", "--out", "o", "--method", "nope"],
        ["segment", "x.png", "--out", "o", "--max-iter", "0"],
        ["segment", "x.png", "--out", "o", "--size", "-1"],
        ["segment", "x.png", "--out", "o", "--target", "liver"],
        ["segment", "x.png", "--out", "o", "--point", "3"],
        ["segment", "x.png", "--out", "o", "--readout-clusters", "3,0"],
        ["segment", "x.png", "--out", "o", "--readout-clusters", "3,"],
        ["segment", "x.png", "--out", "o", "--point", "-1,4"],
        ["segment", "x.png", "--out", "o", "--point", "1,2", "--foreground", "oracle", "--gt", "g"],
        [],
    ],
)
def test_argument_errors_exit_2(argv, capsys):
    try:  # the parser exits; a combination run_batch rejects returns
        status = cli.main(argv)
    except SystemExit as info:
        status = info.code
    assert status == 2
    assert "error:" in capsys.readouterr().err


def test_arguments_reach_run_batch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "run_batch", lambda *args, **kwargs: calls.append((args, kwargs)) or BatchReport())
    argv = ["segment", "a.png", "b", "--out", "o", "--seed", "5", "--min-labels", "4", "--size", "0", "--quiet"]
    assert cli.main(argv) == 0
    (args, kwargs), = calls
    assert args == (["a.png", "b"], "o")
    assert kwargs["seed"] == 5 and kwargs["min_labels"] == 4 and kwargs["max_iter"] is None
    assert kwargs["size"] is None and kwargs["progress"] is False
    assert kwargs["method"] == "s3net" and kwargs["device"] == "auto" and kwargs["precision"] == "float32"
    assert cli.main(["segment", "a.png", "--out", "o", "--method", "msformer", "--precision", "bfloat16"]) == 0
    assert calls[1][1]["method"] == "msformer" and calls[1][1]["precision"] == "bfloat16"
    assert calls[1][1]["target"] == "auto" and calls[1][1]["point"] is None
    assert cli.main(["segment", "a.png", "--out", "o", "--target", "lungs", "--point", "12,7"]) == 0
    assert calls[2][1]["target"] == "lungs" and calls[2][1]["point"] == (12, 7)
    assert calls[2][1]["readout"] == "kmeans"
    assert cli.main(["segment", "a.png", "--out", "o", "--readout", "argmax"]) == 0
    assert calls[3][1]["readout"] == "argmax" and calls[3][1]["readout_clusters"] is None
    assert cli.main(["segment", "a.png", "--out", "o", "--readout-clusters", "4"]) == 0
    assert calls[4][1]["readout_clusters"] == 4
    assert cli.main(["segment", "a.png", "--out", "o", "--readout-clusters", "3,4,5"]) == 0
    assert calls[5][1]["readout_clusters"] == (3, 4, 5)


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["segment", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in ("_labels.png", "_mask.png", "_overlay.png", "results.csv", "failures.csv", "example"):
        assert name in text


def _statuses(text: str) -> set[int]:
    """The exit statuses a sentence "exit status: 0 ..., 1 ..., 130 ..." lists."""
    return {int(status) for status in re.findall(r"(?:^\s*|[:,]\s+)(\d+) ", text)}


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_help_lists_the_exit_statuses_of_the_docs(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    listed = capsys.readouterr().out.split("exit status:")[1].split("\n\n")[0]
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    if command == "segment":
        documented = {int(n) for n in re.findall(r"^\| (\d+) \|", page.split("### Exit status")[1], re.M)}
    else:
        documented = _statuses(page.split("## `selfseg evaluate`")[1].split("Exit status:")[1].split(".")[0])
    assert _statuses(listed) == documented and 3 in documented


def test_version_via_python_m():
    done = subprocess.run(
        [sys.executable, "-m", "selfseg", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"selfseg {version('selfseg')}"


def test_console_script():
    script = Path(sys.executable).with_name("selfseg")
    if not script.exists():
        pytest.skip("selfseg console script not installed in this environment")
    done = subprocess.run([str(script), "segment", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "results.csv" in done.stdout


def test_evaluate_command(tmp_path, capsys):
    out, truth = tmp_path / "out", tmp_path / "gt"
    out.mkdir()
    truth.mkdir()
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[1:5, 2:6] = 255
    Image.fromarray(mask).save(out / "a_mask.png")
    Image.fromarray(mask).save(truth / "a.png")
    assert cli.main(["evaluate", str(out), "--gt", str(truth), "--spacing", "0.5,0.5"]) == 0
    text = capsys.readouterr().out
    assert "dice" in text and "1 masks scored, 0 not" in text
    assert (out / "metrics.csv").exists()
    Image.fromarray(mask).save(out / "b_mask.png")  # no ground truth for b
    assert cli.main(["evaluate", str(out), "--gt", str(truth)]) == 1
    assert "error: b: no ground-truth mask" in capsys.readouterr().err
    assert cli.main(["evaluate", str(out), "--gt", str(tmp_path / "missing")]) == 2
    assert cli.main(["evaluate", str(tmp_path / "nowhere"), "--gt", str(truth)]) == 2


def test_segment_with_ground_truth_scores_the_run(tmp_path, capsys):
    image = _disc(tmp_path / "disc.png")
    truth = tmp_path / "gt"
    truth.mkdir()
    Image.fromarray(np.zeros((40, 48), dtype=np.uint8)).save(truth / "disc.png")
    out = tmp_path / "out"
    assert cli.main(["segment", str(image), "--out", str(out), "--gt", str(truth), *FAST]) == 0
    assert "1 masks scored" in capsys.readouterr().out
    assert cli.main(["segment", str(image), "--out", str(out), "--gt", str(tmp_path / "none"), *FAST]) == 2


def test_oracle_runs_are_marked_and_need_ground_truth(tmp_path, capsys):
    image = _disc(tmp_path / "disc.png")
    _disc(tmp_path / "nogt.png")
    truth = tmp_path / "gt"
    truth.mkdir()
    mask = np.zeros((40, 48), dtype=np.uint8)
    mask[10:30, 14:34] = 255
    Image.fromarray(mask).save(truth / "disc.png")
    out = tmp_path / "out"
    argv = ["segment", str(image), str(tmp_path / "nogt.png"), "--out", str(out), "--gt", str(truth), *FAST]
    assert cli.main([*argv, "--foreground", "oracle"]) == 1  # nogt has no ground truth: a failure
    captured = capsys.readouterr()
    assert "disc:" in captured.out and "(oracle)" in captured.out
    assert "nogt.png: no ground-truth mask" in captured.err
    with open(out / "results.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["image"] == "disc" and row["foreground"] == "oracle"
    assert cli.main(["segment", str(image), "--out", str(out), "--foreground", "oracle"]) == 2
    assert "foreground='oracle' needs truth" in capsys.readouterr().err
    assert cli.main(["segment", str(image), "--out", str(out), "--oracle-crop"]) == 2
    assert "oracle_crop needs foreground='oracle'" in capsys.readouterr().err


def test_new_batch_options_reach_run_batch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "run_batch", lambda *args, **kwargs: calls.append(kwargs) or BatchReport())
    assert cli.main(["segment", "@list.txt", "--out", "o", "--quiet"]) == 0
    assert calls[0]["resume"] is True and calls[0]["workers"] == "auto" and calls[0]["threads"] == 1
    assert calls[0]["batch_images"] is None  # auto
    assert calls[0]["pattern"] is None and calls[0]["axis"] is None
    argv = ["segment", "d", "--out", "o", "--glob", "*.dcm", "--axis", "0", "--workers", "3", "--threads", "2", "--overwrite"]
    assert cli.main([*argv, "--batch-images", "8"]) == 0
    assert calls[1]["resume"] is False and calls[1]["workers"] == 3 and calls[1]["threads"] == 2
    assert calls[1]["batch_images"] == 8
    assert calls[1]["pattern"] == "*.dcm" and calls[1]["axis"] == 0
    for bad in (["--workers", "0"], ["--workers", "many"], ["--threads", "0"], ["--axis", "3"], ["--batch-images", "0"]):
        with pytest.raises(SystemExit):
            cli.main(["segment", "d", "--out", "o", *bad])


def test_folders_glob_and_list_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    src = tmp_path / "in"
    (src / "deep").mkdir(parents=True)
    _disc(src / "deep" / "a.png")
    _disc(src / "b.bmp")
    listing = tmp_path / "list.txt"
    listing.write_text("# one more\nextra/c.png\n")
    (tmp_path / "extra").mkdir()
    _disc(tmp_path / "extra" / "c.png")
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "--glob", "*.png", "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["a_mask.png"]
    assert cli.main(["segment", str(src), f"@{listing}", "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["a_mask.png", "b_mask.png", "c_mask.png"]
    # the same command again: everything is complete, nothing is fitted
    assert cli.main(["segment", str(src), f"@{listing}", "--out", str(out), *FAST]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"0 images segmented, 0 failed -> {out}"


def test_bad_inputs_give_one_line_each_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    src = tmp_path / "in"
    src.mkdir()
    _disc(src / "good.png")
    (src / "zero.png").write_bytes(b"")
    (src / "scan.nii.gz").write_bytes(b"not gzip at all")
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "--out", str(out), *FAST]) == 1
    captured = capsys.readouterr()
    assert sorted(captured.err.splitlines()) == [  # in the order the workers finish
        f"error: {src / 'scan.nii.gz'}: cannot decode image: not a NIfTI file",
        f"error: {src / 'zero.png'}: empty file",
    ]
    assert captured.out.splitlines()[-1] == f"1 images segmented, 2 failed -> {out}"
    with open(out / "failures.csv", newline="") as handle:
        assert [row["image"] for row in csv.DictReader(handle)] == [str(src / "scan.nii.gz"), str(src / "zero.png")]
    assert not list(out.glob("scan*")) and not list(out.glob("zero*"))


def _outputs(out: Path) -> dict[str, object]:
    """Every output image's pixels and the results table without its seconds column."""
    with open(out / "results.csv", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    arrays = {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))}
    return {"rows": rows, **arrays}


def _running(fragment: str) -> list[int]:
    """Process ids whose command line contains ``fragment`` (Linux /proc; [] elsewhere)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if fragment in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:  # ended meanwhile
            continue
    return found


def test_killed_run_resumes_to_the_same_outputs(tmp_path):
    """Kill 'python -m selfseg segment' once the first image is recorded, run it again: the outputs
    equal those of an uninterrupted run and each image is in results.csv once."""
    src = tmp_path / "in"
    src.mkdir()
    for k in range(4):
        yy, xx = np.mgrid[:40, :48]
        grey = np.where((yy - 20) ** 2 + (xx - 14 - 6 * k) ** 2 < 60 + 30 * k, 50, 200).astype(np.uint8)
        Image.fromarray(grey).save(src / f"img{k}.png")
    # one torch thread: fast on a busy machine, and the same for the three runs
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[2]), "OMP_NUM_THREADS": "1"}

    def command(out: Path) -> list[str]:  # about 0.7 s per image: time to kill it after the first one
        options = [*FAST, "--size", "96", "--max-iter", "3"]
        return [sys.executable, "-m", "selfseg", "segment", str(src), "--out", str(out), *options]

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and not (
            (killed / "results.csv").exists() and (killed / "results.csv").read_text().count("\n") >= 2
        ):
            time.sleep(0.01)
        assert process.poll() is None, "the run finished before it could be killed"
        process.kill()
    finally:
        process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while _running(str(killed)) and time.monotonic() < deadline:  # the workers end with the main process
        time.sleep(0.05)
    assert not _running(str(killed))
    with open(killed / "results.csv", newline="") as handle:
        assert 1 <= len(list(csv.DictReader(handle))) < 4
    assert subprocess.run(command(killed), env=env, capture_output=True, timeout=300).returncode == 0
    whole = tmp_path / "whole"
    assert subprocess.run(command(whole), env=env, capture_output=True, timeout=300).returncode == 0
    resumed, expected = _outputs(killed), _outputs(whole)
    assert [row["image"] for row in resumed["rows"]] == [f"img{k}" for k in range(4)]
    assert resumed.keys() == expected.keys()
    for name in expected:
        np.testing.assert_equal(resumed[name], expected[name])
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]


def test_workers_beyond_the_cores_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner.workers, "available_cores", lambda: 2)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert cli.main(["segment", str(image), "--out", str(tmp_path / "o"), "--workers", "2", "--threads", "2"]) == 2
    assert capsys.readouterr().err == "error: 2 workers x 2 threads = 4 exceeds the 2 CPU cores\n"
    assert not (tmp_path / "o").exists()


def test_benchmark_passes_the_readout(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "benchmark", lambda *args, **kwargs: calls.append(kwargs) or [])
    assert cli.main(["benchmark", "d", "--out", "o", "--methods", "s3net", "--readout", "argmax", "--quiet"]) == 0
    assert cli.main(["benchmark", "d", "--out", "o", "--methods", "s3net", "--quiet"]) == 0
    assert calls[0]["readout"] == "argmax" and calls[1]["readout"] == "kmeans"
    assert cli.main(["benchmark", "d", "--out", "o", "--methods", "s3net", "--readout-clusters", "4", "--quiet"]) == 0
    assert calls[0]["readout_clusters"] is None and calls[2]["readout_clusters"] == 4
    assert calls[0]["seeds"] == (0,)
    assert cli.main(["benchmark", "d", "--out", "o", "--methods", "s3net", "--seed", "0,1,2", "--quiet"]) == 0
    assert calls[3]["seeds"] == (0, 1, 2)


def test_benchmark_seed_list_must_be_integers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["benchmark", "d", "--out", "o", "--seed", "0,x"])
    assert exit_info.value.code == 2
    assert "--seed: expected comma-separated integers, got '0,x'" in capsys.readouterr().err
