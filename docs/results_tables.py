"""Write the tables of docs/results.md from the measured figures in docs/data/*.csv, so a figure lives in one place.

Run from the repository root:

    .venv/bin/python docs/results_tables.py                         # rewrite the tables of docs/results.md
    .venv/bin/python docs/results_tables.py --check                 # exit 1 if docs/results.md is out of date
    .venv/bin/python docs/results_tables.py --add BENCH_DIR [--seed N]   # take a benchmark's figures, then rewrite

Each table of results.md stands between ``<!-- table: NAME -->`` and ``<!-- /table -->`` (NAME a key of
``TABLES``); everything else on the page is written by hand and refers to the tables rather than repeating them.

``--add`` reads a ``selfseg benchmark`` output folder: ``BENCH_DIR/seed-N/benchmark.csv`` for each seed of a
several-seed run, else ``BENCH_DIR/benchmark.csv`` of a one-seed run (its seed given by ``--seed``, 0 by
default), and puts each row into docs/data/summary.csv, replacing the row of the same dataset, method,
foreground rule and seed.

docs/data/summary.csv holds one row per dataset, method, foreground rule and seed (the mean Dice over the images).
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent
DATA = DOCS / "data"
RESULTS = DOCS / "results.md"
SUMMARY_COLUMNS = ("dataset", "method", "foreground", "seed", "images", "dice")
METHODS = ("s3net", "msformer", "dfc", "kmeans")
"""The order of the methods in the tables."""
MARKER = re.compile(r"(<!-- table: (\w+) -->\n).*?(<!-- /table -->)", re.S)

Row = dict[str, str]


def read(name: str) -> list[Row]:
    """The rows of docs/data/NAME.csv."""
    with open(DATA / f"{name}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def summary_rows(dataset: str, method: str) -> list[Row]:
    return [r for r in read("summary") if (r["dataset"], r["method"], r["foreground"]) == (dataset, method, "auto")]


def per_seed(dataset: str, method: str) -> list[float]:
    """Mean Dice of each seed (ground-truth-free masks), in seed order."""
    return [float(r["dice"]) for r in sorted(summary_rows(dataset, method), key=lambda r: int(r["seed"]))]


def mean_std(dataset: str, method: str) -> tuple[float, float | None]:
    """Mean over the seeds (rounded as shown) and its standard deviation (None for one seed)."""
    seeds = per_seed(dataset, method)
    return round(statistics.mean(seeds), 3), statistics.stdev(seeds) if len(seeds) > 1 else None


def mean_cell(dataset: str, method: str) -> str:
    if not summary_rows(dataset, method):
        return ""
    mean, std = mean_std(dataset, method)
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def ssct(method: str) -> list[float]:
    return [float(r["dice"]) for r in read("ssct") if r["method"] == method]


def summary() -> str:
    rows = read("summary")
    datasets, methods = unique([r["dataset"] for r in rows]), unique([r["method"] for r in rows])
    images = {r["dataset"]: r["images"] for r in rows if r["images"]}
    header = ["method", *(f"{d} ({images[d]})" for d in datasets), "ssct-samples (Test_1..3)"]
    body = [[m, *(mean_cell(d, m) for d in datasets), " / ".join(f"{v:.3f}" for v in ssct(m))] for m in methods]
    return markdown(header, body)


def spearman_values() -> list[float]:
    return [float(r["spearman"]) for r in read("confidence")]


def target(row: Row) -> list[str]:
    """One row of the targets table: what, today's figures, met (computed from the data files)."""
    kind, threshold, methods = row["kind"], row["threshold"], row["methods"].split()
    limit, dataset = float(threshold), row["dataset"]
    if kind == "mean":
        what = f"{dataset}: mean >= {threshold}"
        today = {m: f"{mean_std(dataset, m)[0]:.3f}" for m in methods}
        met = {m: mean_std(dataset, m)[0] >= limit for m in methods}
    elif kind == "every_seed":
        what = f"{dataset}: >= {threshold} in every seed"
        today = {m: " ".join(f"{v:.3f}" for v in per_seed(dataset, m)) for m in methods}
        met = {m: min(per_seed(dataset, m)) >= limit for m in methods}
    elif kind == "above_kmeans":
        what = f"{dataset}: networks >= k-means + {threshold}"
        lead = {m: mean_std(dataset, m)[0] - mean_std(dataset, "kmeans")[0] for m in methods}
        today = {m: f"{value:+.3f}" for m, value in lead.items()}
        met = {m: value >= limit - 1e-9 for m, value in lead.items()}
    elif kind == "each_image":
        what = f"{dataset}: each dermoscopy image >= {threshold}"
        today = {m: " / ".join(f"{v:.3f}" for v in ssct(m)) for m in methods}
        met = {m: min(ssct(m)) >= limit for m in methods}
    elif kind == "spearman":
        values = spearman_values()
        what = "a ground-truth-free confidence correlated with Dice"
        today = {"Spearman": f"{min(values):.2f}-{max(values):.2f}"}
        met = {"every set and method": min(values) > limit}
    else:
        raise ValueError(f"unknown kind of target {kind!r}")
    missed = [m for m, ok in met.items() if not ok]
    verdict = "yes" if not missed else "**no**" if len(missed) == len(met) else "**no**: " + ", ".join(missed)
    section = f' (section "{row["section"]}")' if row["section"] else ""
    return [row["issue"], what, ", ".join(f"{m} {v}" for m, v in today.items()), verdict + section]


def targets() -> str:
    return markdown(["issue", "target", "today", "met?"], [target(row) for row in read("targets")])


def ceilings() -> str:
    rows, methods = read("ceilings"), METHODS
    cells = {(r["dataset"], r["ceiling"], r["method"]): float(r["dice"]) for r in rows}
    for method in methods:  # the polyp candidates and the lung edits live in their own tables
        best = [float(r["best"]) for r in read("polyps") if r["method"] == method]
        cells["kvasir-seg", "best of the polyp prior's candidates", method] = statistics.mean(best)
        edits = next(r for r in read("lung_errors") if r["method"] == method)
        cells["lung-cxr-shenzhen", "the lung rule's masks with both oracle edits", method] = float(edits["both"])
    keys = unique([(d, c) for d, c, _ in cells])
    order = unique([r["dataset"] for r in read("summary")])
    keys.sort(key=lambda key: order.index(key[0]))
    body = [[d, c, *(f"{cells[d, c, m]:.3f}" for m in methods)] for d, c in keys]
    return markdown(["set", "oracle ceiling (mean of three seeds)", *methods], body)


def polyps() -> str:
    """One row per method, its seeds' figures side by side (seeds 0 / 1 / 2)."""
    rows = read("polyps")

    def cells(method: str, column: str, unit: str = "") -> str:
        return " / ".join(r[column] + unit for r in rows if r["method"] == method)

    body = [[m, cells(m, "prior"), cells(m, "best"), cells(m, "picked_best", "%"), cells(m, "best_below_half", "%")]
            for m in unique([r["method"] for r in rows])]
    return markdown(["method (seeds " + " / ".join(unique([r["seed"] for r in rows])) + ")", "prior's choice",
                     "oracle: best candidate", "picked the best", "best < 0.5"], body)


def lung_errors() -> str:
    body = [[r["method"], f"{mean_std('lung-cxr-shenzhen', r['method'])[0]:.3f}", r["leaks_cut"], r["rims_added"],
             r["both"]] for r in read("lung_errors")]
    return markdown(["method", "own mask (summary)", "leaks cut", "rims added", "both"], body)


def confidence() -> str:
    rows, methods = read("confidence"), METHODS

    def cell(dataset: str, method: str) -> str:
        found = {r["seed"]: r["spearman"] for r in rows if (r["dataset"], r["method"]) == (dataset, method)}
        return f"{found['all']} (no draw)" if "all" in found else " / ".join(found.values())

    body = [[d, *(cell(d, m) for m in methods)] for d in unique([r["dataset"] for r in rows])]
    return markdown(["dataset", *methods], body)


def study() -> str:
    """Per-image mode beside study mode on the study folders (docs/data/study.csv, written by benchmarks/study.py):
    one row per folder and first stage."""
    rows = {(r["dataset"], r["method"], r["mode"]): r for r in read("study")}

    def cells(r: Row) -> list[str]:
        spread = f"{float(r['spread_median']):.3f} / {float(r['spread_p95']):.3f}" if r["spread_median"] else "-"
        mean = f"{float(r['dice']):.3f}" + (f" ± {float(r['dice_sd']):.3f}" if int(r["seeds"]) > 1 else "")
        return [mean, f"{float(r['p5']):.3f}",
                f"{100 * float(r['under_half']):.1f} %", spread]

    body = [[f"{dataset} ({rows[dataset, method, 'study']['images']})", method,
             rows[dataset, method, "study"]["seeds"], *cells(rows[dataset, method, "per-image"]),
             *cells(rows[dataset, method, "study"])]
            for dataset, method in unique([(r["dataset"], r["method"]) for r in read("study")])]
    stats = ["mean ± sd", "p5", "< 0.5", "spread med / p95"]
    return markdown(["folder", "first stage", "seeds", *(f"per-image {x}" for x in stats),
                     *(f"study {x}" for x in stats)], body)


STUDY_TARGETS = {"isic2018-study": 0.90, "kvasir-seg-study": 0.55, "lung-cxr-shenzhen-study": 0.93}
"""Issue 36's mean Dice targets of study mode, per study folder."""


def met_or_not(ok: bool) -> str:
    """A target's cell: met or not."""
    return "yes" if ok else "**no**"


def study_targets() -> str:
    """Issue 36's targets against the study table, per folder and first stage (computed, never typed)."""
    rows = {(r["dataset"], r["method"], r["mode"]): r for r in read("study")}
    body = []
    for dataset, method in unique([(r["dataset"], r["method"]) for r in read("study")]):
        study, single = rows.get((dataset, method, "study")), rows.get((dataset, method, "per-image"))
        kmeans = rows.get((dataset, "kmeans", "per-image"))
        if study is None or single is None:
            continue
        mean = float(study["dice"])
        over_single = mean - float(single["dice"])
        over_kmeans = mean - float(kmeans["dice"]) if kmeans else None
        spread = (float(study["spread_median"]), float(study["spread_p95"])) if study["spread_median"] else None
        body.append([
            dataset, method,
            f"{mean:.3f} (>= {STUDY_TARGETS[dataset]:.2f}: {met_or_not(mean >= STUDY_TARGETS[dataset])})",
            f"{over_single:+.3f} ({met_or_not(over_single >= 0.02)})",
            "not run" if over_kmeans is None else f"{over_kmeans:+.3f} ({met_or_not(over_kmeans >= 0.03)})",
            "one seed" if spread is None
            else f"{spread[0]:.3f} / {spread[1]:.3f} ({met_or_not(spread[0] <= 0.02 and spread[1] <= 0.10)})",
        ])
    return markdown(["folder", "first stage", "study mean (target)", "study - per-image (>= +0.02)",
                     "study - k-means per-image (>= +0.03)", "spread median / p95 (<= 0.02 / 0.10)"], body)


def spread() -> str:
    """Each image's Dice range over seeds and thread counts, per set and version (docs/data/spread.csv, written by
    benchmarks/spread.py), with issue 37's targets (median <= 0.02, 95th percentile <= 0.10) computed."""
    rows = read("spread")
    versions = unique([r["version"] for r in rows])  # in the order the file first names them: oldest first
    body = [[f"{r['dataset']} ({r['images']})", r["version"], r["method"], r["runs"], r["dice"],
             f"{r['range_median']} / {r['range_p95']} "
             f"({met_or_not(float(r['range_median']) <= 0.02 and float(r['range_p95']) <= 0.10)})",
             f"{100 * float(r['over_tenth']):.0f} %"]
            for r in sorted(rows, key=lambda r: (r["dataset"], versions.index(r["version"]), METHODS.index(r["method"])))]
    return markdown(["set (images)", "selfseg", "method", "runs per image", "mean Dice",
                     "range median / p95 (<= 0.02 / 0.10)", "range > 0.1"], body)


TABLES: dict[str, Callable[[], str]] = {
    "summary": summary, "targets": targets, "ceilings": ceilings, "polyps": polyps,
    "lung_errors": lung_errors, "confidence": confidence, "study": study,
    "study_targets": study_targets, "spread": spread,
}


def render(text: str) -> str:
    """``text`` with every marked table written again from the data files."""
    def table(match: re.Match[str]) -> str:
        if match[2] not in TABLES:
            raise KeyError(f"results.md names an unknown table {match[2]!r}; known: {', '.join(TABLES)}")
        return f"{match[1]}{TABLES[match[2]]()}\n{match[3]}"

    return MARKER.sub(table, text)


def check(path: Path | None = None) -> bool:
    """Whether ``path`` (docs/results.md) holds the tables the data files give."""
    text = (path or RESULTS).read_text(encoding="utf-8")
    return render(text) == text


def add(bench_dir: Path, seed: int) -> int:
    """Put the rows of a ``selfseg benchmark`` folder into summary.csv; the number of rows taken."""
    runs = sorted(bench_dir.glob("seed-*/benchmark.csv"))
    sources = [(int(p.parent.name.split("-", 1)[1]), p) for p in runs] or [(seed, bench_dir / "benchmark.csv")]
    rows = before = read("summary")
    taken = 0
    for run_seed, path in sources:
        with open(path, newline="", encoding="utf-8") as handle:
            for new in csv.DictReader(handle):
                key = (new["dataset"], new["method"], new["foreground"])
                rows = [r for r in rows if (r["dataset"], r["method"], r["foreground"], r["seed"]) != (*key, str(run_seed))]
                rows.append({**dict(zip(SUMMARY_COLUMNS, key)), "seed": str(run_seed), "images": new["images"],
                             "dice": new["dice"]})
                taken += 1
    with open(DATA / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=order_key(before + rows)))  # replaced rows keep their place
    return taken


def order_key(rows: list[Row]) -> Callable[[Row], tuple[int, int, str, int]]:
    """Keep datasets and methods in their first order, seeds ascending."""
    datasets, methods = unique([r["dataset"] for r in rows]), unique([r["method"] for r in rows])
    return lambda r: (datasets.index(r["dataset"]), methods.index(r["method"]), r["foreground"], int(r["seed"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if results.md differs from what would be written")
    parser.add_argument("--add", type=Path, metavar="BENCH_DIR", help="a selfseg benchmark output folder")
    parser.add_argument("--seed", type=int, default=0, help="the seed of a one-seed BENCH_DIR (default: 0)")
    args = parser.parse_args(argv)
    if args.check:
        if check():
            return 0
        print(f"{RESULTS} is out of date: run .venv/bin/python docs/results_tables.py", file=sys.stderr)
        return 1
    if args.add:
        print(f"{add(args.add, args.seed)} rows from {args.add} -> {DATA / 'summary.csv'}")
    RESULTS.write_text(render(RESULTS.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
