"""The documentation: results.md's tables as docs/results_tables.py writes them, page lengths, links."""

from __future__ import annotations

import re
from types import ModuleType

from helpers import DOCS, docs_script

ROOT = DOCS.parent


def _tables() -> ModuleType:
    return docs_script("results_tables")


def test_results_tables_are_up_to_date():
    assert _tables().check(), "docs/results.md is out of date: run .venv/bin/python docs/results_tables.py"


def test_adding_a_benchmark_replaces_its_rows_in_place(tmp_path, monkeypatch):
    """``--add`` replaces the rows of the benchmark's datasets, methods and seeds where they stood: the tables keep
    their order of methods."""
    tables = _tables()
    monkeypatch.setattr(tables, "DATA", tmp_path)
    header = ",".join(tables.SUMMARY_COLUMNS)
    (tmp_path / "summary.csv").write_text(f"{header}\nset,s3net,auto,0,2,0.5\nset,s3net,auto,1,2,0.6\n"
                                          "set,otsu,auto,0,2,0.4\n")
    (tmp_path / "bench" / "seed-0").mkdir(parents=True)
    (tmp_path / "bench" / "seed-0" / "benchmark.csv").write_text("dataset,method,foreground,images,dice\n"
                                                               "set,s3net,auto,2,0.75\n")
    assert tables.add(tmp_path / "bench", 0) == 1
    assert [(r["method"], r["seed"], r["dice"]) for r in tables.read("summary")] == [
        ("s3net", "0", "0.75"), ("s3net", "1", "0.6"), ("otsu", "0", "0.4")
    ]


def test_page_lengths():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150
    assert len((DOCS / "results.md").read_text(encoding="utf-8").splitlines()) <= 300


def test_relative_links_exist():
    pages = [ROOT / "README.md", *DOCS.glob("*.md"), *DOCS.glob("experiments/*.md")]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            path = target.split("#", 1)[0]
            if path and "://" not in path and not (page.parent / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert not missing, missing
