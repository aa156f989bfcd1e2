"""Benchmark: methods x datasets x foreground rules, resumable, CSV and Markdown tables."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image

from selfseg import cli
from selfseg.benchmark import BENCHMARK_COLUMNS, SEED_COLUMNS, benchmark, seed_summary
from selfseg.runner import task as runner_task


def _dataset(root, n: int = 2):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:40, :48]
    for i in range(n):
        disc = (yy - 20) ** 2 + (xx - 20 - 3 * i) ** 2 < 100
        Image.fromarray(np.where(disc, 60, 200).astype(np.uint8)).save(root / "images" / f"case{i}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(root / "masks" / f"case{i}.png")
    return root


def test_benchmark_scores_every_method_and_rule_and_resumes(tmp_path, monkeypatch) -> None:
    data = _dataset(tmp_path / "discs")
    out = tmp_path / "bench"
    rules = ["auto", "oracle"]
    rows = benchmark([data], out, methods=["otsu", "s3net"], foreground=rules, size=24, max_iter=2, progress=False)
    assert [(r["method"], r["foreground"]) for r in rows] == [
        ("otsu", "auto"), ("otsu", "oracle"), ("s3net", "auto"), ("s3net", "oracle")
    ]
    otsu_auto, otsu_oracle = rows[0], rows[1]
    assert otsu_auto["images"] == 2 and otsu_auto["failed"] == 0
    # auto: the lesion rule returns the convex hull of the digital disc, a few pixels more than the disc
    assert otsu_auto["dice"] == pytest.approx(1.0, abs=0.02) and otsu_oracle["dice"] == pytest.approx(1.0)
    assert (out / "discs" / "s3net" / "oracle" / "case1_mask.png").exists()
    with open(out / "benchmark.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert tuple(table[0]) == BENCHMARK_COLUMNS and len(table) == 5
    assert (out / "benchmark.md").read_text().count("| discs |") == 4

    calls = []
    original = runner_task.fit_images
    monkeypatch.setattr(runner_task, "fit_images", lambda *a, **k: calls.append(a) or original(*a, **k))
    again = benchmark([data], out, methods=["otsu", "s3net"], foreground=rules, size=24, max_iter=2, progress=False)
    assert calls == [] and again == rows
    cropped = benchmark([data], out, methods=["otsu"], foreground=["oracle+crop"], size=24, max_iter=2, progress=False)
    assert calls == [] and cropped[0]["dice"] == pytest.approx(1.0)
    assert (out / "discs" / "otsu" / "oracle+crop" / "case0_mask.png").exists()
    # an oracle mask older than its cluster map (the map was fitted again) is chosen again
    stale = out / "discs" / "otsu" / "oracle" / "case0_mask.png"
    Image.fromarray(np.zeros((40, 48), dtype=np.uint8)).save(stale)
    os.utime(stale, (0, 0))
    benchmark([data], out, methods=["otsu"], size=32, max_iter=2, workers=1, progress=False)  # new settings: rerun
    assert len(calls) == 2 and np.asarray(Image.open(stale)).any()


def test_benchmark_with_several_seeds_runs_each_in_its_folder_and_summarises(tmp_path, monkeypatch) -> None:
    data = _dataset(tmp_path / "discs")
    out = tmp_path / "bench"
    options = dict(methods=["kmeans", "s3net"], foreground=["auto"], size=24, max_iter=2, progress=False)
    rows = benchmark([data], out, seeds=[0, 3], **options)
    per_seed = [benchmark([data], out / f"seed-{seed}", seeds=[seed], **options) for seed in (0, 3)]
    assert rows == seed_summary(per_seed)
    assert [(r["method"], r["seeds"], r["images"], r["failed"]) for r in rows] == [("kmeans", 2, 4, 0), ("s3net", 2, 4, 0)]
    for row, first, second in zip(rows, *per_seed):
        dice = [first["dice"], second["dice"]]
        assert row["dice"] == pytest.approx(np.mean(dice))
        assert row["dice_std"] == pytest.approx(abs(dice[0] - dice[1]) / np.sqrt(2))
        assert row["dice_per_seed"] == f"{dice[0]:.3f} {dice[1]:.3f}"
        assert row["hd95"] == pytest.approx((first["hd95"] + second["hd95"]) / 2)
    with open(out / "benchmark.csv", newline="") as handle:
        assert tuple(next(csv.reader(handle))) == SEED_COLUMNS
    table = (out / "benchmark.md").read_text().splitlines()
    assert table[0] == (
        "| dataset | method | foreground | seeds | images | Dice (mean ± std over seeds) | Dice per seed | HM | XOR | "
        "HD95 (px) | s/image |"
    )
    assert table[2].startswith(f"| discs | kmeans | auto | 2 | 4 | {rows[0]['dice']:.3f} ± {rows[0]['dice_std']:.3f} |")
    assert (out / "seed-3" / "discs" / "s3net" / "auto" / "case1_mask.png").exists()
    assert not (out / "discs").exists()

    calls = []
    monkeypatch.setattr(runner_task, "fit_images", lambda *a, **k: calls.append(a))
    assert benchmark([data], out, seeds=[0, 3], **options) == rows and calls == []  # resumed
    with pytest.raises(ValueError, match=r"^seeds must be one or more distinct integers, got \[1, 1\]$"):
        benchmark([data], out, seeds=[1, 1], **options)
    with pytest.raises(ValueError, match="got \\[\\]"):
        benchmark([data], out, seeds=[], **options)
    assert seed_summary([per_seed[0]])[0]["dice_std"] == 0.0


def test_benchmark_rejects_unknown_rules_and_the_cli_prints_the_table(tmp_path, capsys) -> None:
    data = _dataset(tmp_path / "discs", n=1)
    with pytest.raises(ValueError, match=r"foreground rule must be one of auto, oracle, oracle\+crop, got .magic."):
        benchmark([data], tmp_path / "out", methods=["otsu"], foreground=["magic"])
    argv = ["benchmark", str(data), "--methods", "otsu", "--out", str(tmp_path / "o"), "--quiet", "--report"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| discs | otsu | oracle | 1 |" in printed and "| discs | otsu | oracle+crop | 1 |" in printed
    page = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 3 and "discs/otsu/auto/case0" in page  # Dice, seconds, benchmark; the fitted run
    assert cli.main(["benchmark", str(tmp_path / "none"), "--methods", "otsu", "--out", str(tmp_path / "o")]) == 2
