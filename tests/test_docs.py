"""The documentation: results.md's tables as docs/results_tables.py writes them, page lengths, links."""

from __future__ import annotations

import re
import statistics
from types import ModuleType

from helpers import DOCS, docs_script

ROOT = DOCS.parent


def _tables() -> ModuleType:
    return docs_script("results_tables")


def test_results_tables_are_up_to_date():
    assert _tables().check(), "docs/results.md is out of date: run .venv/bin/python docs/results_tables.py"


def test_published_seed_means_agree_with_their_rounded_seeds():
    """A summary row with seed "all" (the benchmark's own mean and std) lies within rounding of its per-seed rows."""
    tables = _tables()
    published = [row for row in tables.read("summary") if row["seed"] == "all"]
    assert published
    for row in published:
        seeds = tables.per_seed(row["dataset"], row["method"])
        assert len(seeds) > 1, row
        assert abs(statistics.mean(seeds) - float(row["dice"])) <= 0.001, row
        assert abs(statistics.stdev(seeds) - float(row["dice_std"])) <= 0.0015, row


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
