"""Benchmark: every method on every dataset, scored with and without ground-truth help.

For each dataset ``D`` (any ``selfseg.datasets`` layout) and method ``M`` the images are segmented once
into ``OUT/<D>/<M>/auto`` (``runner.run_batch``, resumable); the oracle masks of the papers' protocol
are derived from the same cluster maps into ``OUT/<D>/<M>/oracle``, so all rules score the same
clusters. Each folder is scored (``runner.evaluate_outputs``) and one row per (dataset, method, rule)
goes to ``OUT/benchmark.csv`` and ``OUT/benchmark.md``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selfseg import datasets, io
from selfseg.foreground import oracle_mask
from selfseg.runner import LABELS_SUFFIX, MASK_SUFFIX, evaluate_outputs, run_batch, summarize

__all__ = ["BENCHMARK_COLUMNS", "FOREGROUND_RULES", "benchmark", "markdown_table"]

FOREGROUND_RULES = ("auto", "oracle", "oracle+crop")
BENCHMARK_COLUMNS = (
    "dataset", "method", "foreground", "images", "failed", "dice", "dice_std", "hm", "xor", "hd95",
    "seconds_per_image",
)


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
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return float(np.mean(seconds)) if seconds else float("nan")


def benchmark(
    dataset_roots: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    methods: Sequence[str],
    foreground: Sequence[str] = FOREGROUND_RULES,
    progress: bool = True,
    **options,
) -> list[dict]:
    """Run ``methods`` on every dataset, score each ``foreground`` rule; write the tables; return the rows.

    ``options`` go to ``runner.run_batch`` (``seed``, ``size``, ``device``, ...). Finished images are
    not segmented again when the command is repeated.
    """
    unknown = sorted(set(foreground) - set(FOREGROUND_RULES))
    if unknown:
        raise ValueError(f"unknown foreground rule(s) {', '.join(unknown)}; choose from {', '.join(FOREGROUND_RULES)}")
    out_dir = Path(out_dir)
    rows = []
    for root in map(Path, dataset_roots):
        pairs = datasets.load_pairs(root)
        truths = {pair.stem: pair.mask for pair in pairs}
        for method in methods:
            auto_dir = out_dir / root.name / method / "auto"
            run_batch([pair.image for pair in pairs], auto_dir, method=method, resume=True, progress=progress, **options)
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
    io.write_csv(out_dir / "benchmark.csv", BENCHMARK_COLUMNS, ([row[c] for c in BENCHMARK_COLUMNS] for row in rows))
    with io.atomic_path(out_dir / "benchmark.md") as tmp:
        tmp.write_text(markdown_table(rows) + "\n", encoding="utf-8")
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Markdown table of ``benchmark`` rows: Dice (mean +- std), HM, XOR, HD95, seconds per image."""
    lines = [
        "| dataset | method | foreground | images | Dice | HM | XOR | HD95 (px) | s/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['foreground']} | {r['images']} | "
            f"{r['dice']:.3f} ± {r['dice_std']:.3f} | {r['hm']:.3f} | {r['xor']:.3f} | {r['hd95']:.1f} | "
            f"{r['seconds_per_image']:.1f} |"
        )
    return "\n".join(lines)
