"""Benchmark: every method on every dataset, scored with and without ground-truth help.

For each dataset ``D`` (any ``selfseg.datasets`` layout) and method ``M`` the images are segmented once
into ``OUT/<D>/<M>/auto`` (``runner.run_batch``, resumable); the oracle masks of the papers' protocol
are derived from the same cluster maps into ``OUT/<D>/<M>/oracle``, so all rules score the same
clusters. Each folder is scored (``runner.evaluate_outputs``) and one row per (dataset, method, rule)
goes to ``OUT/benchmark.csv`` and ``OUT/benchmark.md``.

With several seeds each one is a benchmark of its own in ``OUT/seed-<N>``, and ``OUT/benchmark.csv`` and
``OUT/benchmark.md`` give, per (dataset, method, rule), the mean over the seeds of their mean scores and the
standard deviation of their mean Dice (``seed_summary``): single fits vary with the seed more than
methods differ on a set of a hundred images (docs/results.md, "Seeds").
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selfseg import datasets, io
from selfseg.checks import look_up_option
from selfseg.foreground import oracle_mask
from selfseg.runner import LABELS_SUFFIX, MASK_SUFFIX, evaluate_outputs, run_batch, summarize

__all__ = ["BENCHMARK_COLUMNS", "FOREGROUND_RULES", "SEED_COLUMNS", "benchmark", "markdown_table", "seed_summary"]

FOREGROUND_RULES = ("auto", "oracle", "oracle+crop")
BENCHMARK_COLUMNS = (
    "dataset", "method", "foreground", "images", "failed", "dice", "dice_std", "hm", "xor", "hd95",
    "seconds_per_image",
)
SEED_COLUMNS = (
    "dataset", "method", "foreground", "seeds", "images", "failed", "dice", "dice_std", "dice_per_seed", "hm",
    "xor", "hd95", "seconds_per_image",
)
"""Columns of the several-seed table: ``images`` and ``failed`` summed over seeds, ``dice_std`` over the
seeds' mean Dice, ``dice_per_seed`` those means joined by spaces, the rest means over seeds."""


def _oracle_masks(auto_dir: Path, oracle_dir: Path, truths: dict[str, Path], *, crop: bool) -> None:
    """Write ``oracle_dir/<stem>_mask.png`` from the cluster maps in ``auto_dir`` (skips masks newer than their
    cluster map, so a refitted map gets its oracle masks again)."""
    for labels_path in sorted(auto_dir.glob(f"*{LABELS_SUFFIX}")):
        stem = labels_path.name[: -len(LABELS_SUFFIX)]
        target = oracle_dir / f"{stem}{MASK_SUFFIX}"
        if stem in truths and not (target.exists() and target.stat().st_mtime >= labels_path.stat().st_mtime):
            truth = io.read_mask(truths[stem])
            io.write_image(target, oracle_mask(io.read_labels(labels_path), truth, crop=crop))


def _seconds_per_image(auto_dir: Path) -> float:
    with open(auto_dir / "results.csv", newline="", encoding="utf-8") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle) if row["seconds"]]  # empty: not known
    return float(np.mean(seconds)) if seconds else float("nan")


def benchmark(
    dataset_roots: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    methods: Sequence[str],
    foreground: Sequence[str] = FOREGROUND_RULES,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
    **options,
) -> list[dict]:
    """Run ``methods`` on every dataset, score each ``foreground`` rule; write the tables; return the rows.

    ``seeds``: one seed, or several: one benchmark per seed in ``out_dir/seed-<N>``, summarised by
    ``seed_summary`` (its rows are returned). ``options`` go to ``runner.run_batch`` (``size``,
    ``device``, ...). Finished images are not segmented again when the command is repeated.
    """
    for rule in foreground:
        look_up_option(rule, FOREGROUND_RULES, name="foreground rule")
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be one or more distinct integers, got {seeds}")
    out_dir = Path(out_dir)
    if len(seeds) > 1:
        runs = [
            benchmark(dataset_roots, out_dir / f"seed-{seed}", methods=methods, foreground=foreground, seeds=[seed],
                      progress=progress, **options)
            for seed in seeds
        ]
        rows = seed_summary(runs)
        _write_tables(out_dir, rows, SEED_COLUMNS)
        return rows
    rows = []
    for root in map(Path, dataset_roots):
        pairs = datasets.load_pairs(root)
        truths = {pair.stem: pair.mask for pair in pairs}
        for method in methods:
            auto_dir = out_dir / root.name / method / "auto"
            run_batch(
                [pair.image for pair in pairs], auto_dir, method=method, seed=seeds[0], resume=True, progress=progress,
                **options,
            )
            for rule in foreground:
                rule_dir = out_dir / root.name / method / rule
                if rule != "auto":
                    _oracle_masks(auto_dir, rule_dir, truths, crop=rule == "oracle+crop")
                report = evaluate_outputs(rule_dir, root)
                summary = summarize(report.results)
                rows.append({
                    "dataset": root.name, "method": method, "foreground": rule,
                    "images": len(report.results), "failed": len(pairs) - len(report.results),
                    "dice": summary["dice"][0], "dice_std": summary["dice"][1], "hm": summary["hm"][0],
                    "xor": summary["xor"][0], "hd95": summary["hd95"][0],
                    "seconds_per_image": _seconds_per_image(auto_dir),
                })
    _write_tables(out_dir, rows, BENCHMARK_COLUMNS)
    return rows


def _write_tables(out_dir: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    io.write_csv(out_dir / "benchmark.csv", columns, ([row[c] for c in columns] for row in rows))
    with io.atomic_path(out_dir / "benchmark.md") as tmp:
        tmp.write_text(markdown_table(rows) + "\n", encoding="utf-8")


def seed_summary(runs: Sequence[list[dict]]) -> list[dict]:
    """Rows of ``SEED_COLUMNS`` from the rows of one ``benchmark`` per seed (same datasets, methods, rules).

    Dice, HM, XOR, HD95 and seconds per image are means over the seeds of each seed's means (images a seed
    could not score are left out of its means); ``dice_std`` is the sample standard deviation of the seeds'
    mean Dice (0 with one seed).
    """
    rows = []
    for same in zip(*runs):
        dice = np.array([row["dice"] for row in same])
        rows.append({
            **{key: same[0][key] for key in ("dataset", "method", "foreground")},
            "seeds": len(same),
            "images": sum(row["images"] for row in same),
            "failed": sum(row["failed"] for row in same),
            "dice": float(dice.mean()),
            "dice_std": float(dice.std(ddof=1)) if len(dice) > 1 else 0.0,
            "dice_per_seed": " ".join(f"{value:.3f}" for value in dice),
            **{key: float(np.mean([row[key] for row in same])) for key in ("hm", "xor", "hd95", "seconds_per_image")},
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Markdown table of ``benchmark`` rows: Dice (mean +- std over images), HM, XOR, HD95, seconds per
    image; of ``seed_summary`` rows: also the seeds, Dice as mean +- std over seeds, and each seed's mean Dice."""
    seeds = bool(rows) and "seeds" in rows[0]
    header = ["dataset", "method", "foreground", "images", "Dice", "HM", "XOR", "HD95 (px)", "s/image"]
    if seeds:
        header[3:5] = ["seeds", "images", "Dice (mean ± std over seeds)", "Dice per seed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["dataset"], r["method"], r["foreground"], str(r["images"]), f"{r['dice']:.3f} ± {r['dice_std']:.3f}"]
        if seeds:
            cells[3:5] = [str(r["seeds"]), str(r["images"]), cells[4], r["dice_per_seed"]]
        cells += [f"{r['hm']:.3f}", f"{r['xor']:.3f}", f"{r['hd95']:.1f}", f"{r['seconds_per_image']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
