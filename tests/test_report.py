"""The HTML report: its content from a small run, and the page itself in headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfseg import cli
from selfseg.report import REPORT_NAME, write_report
from selfseg.runner import evaluate_outputs, run_batch
from selfseg.runner import task as runner_task

from helpers import CUBE, fake_fit_images, write_nifti

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_VOID = {"meta", "img", "input", "br", "hr", "link", "source"}
needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("SELFSEG_REQUIRE_BROWSER"),
    reason="no chromium here (CI installs it and sets SELFSEG_REQUIRE_BROWSER)",
)


class _Checker(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element; records what is left open."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag not in _VOID:
            self.open.append(tag)

    def handle_endtag(self, tag) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def _page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for k in range(n):
        yy, xx = np.mgrid[:40, :48]
        grey = np.where((yy - 20) ** 2 + (xx - 10 - 5 * k) ** 2 < 80 + 20 * k, 60, 210).astype(np.uint8)
        paths.append(folder / f"img{k}.png")
        Image.fromarray(np.stack([grey] * 3, axis=2)).save(paths[-1])
    return paths


@pytest.fixture
def run_folder(tmp_path, monkeypatch) -> Path:
    """A scored run of 4 images (stand-in fits), one bad input, and one earlier review mark."""
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    images = _images(tmp_path / "in", 4)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    truth = tmp_path / "gt"
    truth.mkdir()
    for path in images:
        Image.fromarray((np.asarray(Image.open(path))[..., 0] < 128).astype(np.uint8) * 255).save(truth / path.name)
    out = tmp_path / "out"
    run_batch([tmp_path / "in"], out, workers=1, progress=False, size=32, max_iter=1)
    evaluate_outputs(out, truth)
    (out / "qc.csv").write_text("run,image,mark\n,img2,rejected\n,img9,accepted\n")
    return out


def test_report_lists_every_input_with_thumbnails_scores_and_marks(run_folder) -> None:
    path = write_report(run_folder, thumbnail_side=32)
    assert path == run_folder / REPORT_NAME
    page = path.read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.open == [] and page.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page) and "<link" not in page  # nothing remote
    data = _page_data(page)
    assert sorted(row["image"] for row in data["rows"]) == ["img0", "img1", "img2", "img3"]
    assert data["scored"] and all("dice" in row["scores"] for row in data["rows"])
    assert [f["image"] for f in data["failures"]] == [str(run_folder.parent / "in" / "broken.png")]
    assert data["marks"] == {"/img2": "rejected", "/img9": "accepted"}
    for row in data["rows"]:
        assert set(row["thumbs"]) == {"image", "clusters", "overlay"}
        for thumb in row["thumbs"].values():
            with Image.open(run_folder / thumb) as image:
                assert max(image.size) <= 32
    assert page.count("<svg") == 2  # Dice and seconds per image


def test_report_of_a_volume_shows_a_slice_strip(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    write_nifti(tmp_path / "ct.nii.gz", CUBE)
    run_batch([tmp_path / "ct.nii.gz"], tmp_path / "out", workers=1, progress=False, size=32, max_iter=1)
    data = _page_data(write_report(tmp_path / "out", thumbnail_side=40).read_text(encoding="utf-8"))
    (row,) = data["rows"]
    assert set(row["thumbs"]) == {"clusters", "overlay"}
    with Image.open(tmp_path / "out" / row["thumbs"]["overlay"]) as strip:
        assert strip.width > strip.height  # the 4 axial slices side by side


def test_report_command_and_missing_results(run_folder, tmp_path, capsys) -> None:
    assert cli.main(["report", str(run_folder)]) == 0
    assert capsys.readouterr().out.strip() == f"report -> {run_folder / REPORT_NAME}"
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no results.csv" in capsys.readouterr().err


def test_segment_report_option_writes_the_page(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    _images(tmp_path / "in", 2)
    argv = ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet", "--report"]
    assert cli.main(argv) == 0
    assert len(_page_data((tmp_path / "out" / REPORT_NAME).read_text(encoding="utf-8"))["rows"]) == 2


def test_a_short_row_without_an_image_is_a_failure_of_the_report(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.csv").write_text("input,image\nx.png\n", encoding="utf-8")  # an edited table
    data = _page_data(write_report(tmp_path, thumbnail_side=16).read_text(encoding="utf-8"))
    assert data["rows"] == [] and data["failures"] == [
        {"run": "run", "image": "", "reason": "not a file name: left out of the report"}]


@needs_browser
def test_report_in_headless_chromium(run_folder, tmp_path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM is not None, "SELFSEG_REQUIRE_BROWSER is set but chromium is not installed"
    path = write_report(run_folder)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(path.resolve().as_uri())
        first = lambda: page.locator("#inputs tbody tr").first.get_attribute("data-key")
        worst = first()  # worst Dice first
        page.locator('th[data-key="image"]').click()
        assert first() == "/img0"
        page.locator('th[data-key="image"]').click()
        assert first() == "/img3"
        assert page.locator('input[name="mark-/img2"][value="rejected"]').is_checked()  # from qc.csv
        page.locator('input[name="mark-/img0"][value="needs edit"]').check()
        assert page.locator("#reviewed").text_content() == "2 of 4 reviewed"
        with page.expect_download() as download:
            page.locator("#download").click()
        saved = Path(download.value.path()).read_text()
        assert saved == "run,image,mark\n,img0,needs edit\n,img2,rejected\n"
        page.locator("#filter").fill("img1")
        assert page.locator("#inputs tbody tr").count() == 1
        page.screenshot(path=tmp_path / "report.png")
        browser.close()
    assert errors == [] and worst is not None
    with Image.open(tmp_path / "report.png") as shot:
        pixels = np.asarray(shot.convert("L"), dtype=float)
    assert pixels.std() > 10  # text, thumbnails and plots, not a blank page


@needs_browser
def test_a_study_stage_is_shown_beside_its_run_in_headless_chromium(run_folder) -> None:
    """A folder with ``study/`` (here the per-image masks written again as study masks): one row per image with
    its per-image and study masks side by side, sortable by the study mask's Dice."""
    playwright = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM is not None, "SELFSEG_REQUIRE_BROWSER is set but chromium is not installed"
    from selfseg.runner.study import STUDY_COLUMNS

    study = run_folder / "study"
    study.mkdir()
    rows = []
    for stem in ("img0", "img1", "img2", "img3"):
        for suffix in ("_mask.png", "_overlay.png"):
            shutil.copy(run_folder / f"{stem}{suffix}", study / f"{stem}{suffix}")
        rows.append({**dict.fromkeys(STUDY_COLUMNS, ""), "image": stem, "stage": "study", "agreement_with_image_stage": "1.0"})
    (study / "results.csv").write_text(
        ",".join(STUDY_COLUMNS) + "\n" + "".join(",".join(row[c] for c in STUDY_COLUMNS) + "\n" for row in rows)
    )
    evaluate_outputs(study, run_folder.parent / "gt")
    path = write_report(run_folder, thumbnail_side=32)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(path.resolve().as_uri())
        headers = page.locator("#inputs thead th").all_text_contents()
        rows_shown = page.locator("#inputs tbody tr")
        assert headers[:4] == ["picture", "clusters", "mask", "study mask"] and "study_dice" in headers
        assert rows_shown.count() == 4 and all(rows_shown.nth(k).locator("img").count() == 4 for k in range(4))
        page.locator('th[data-key="study_dice"]').click()  # ascending: the worst study mask first
        with open(study / "metrics.csv", newline="") as handle:
            worst = min(csv.DictReader(handle), key=lambda row: float(row["dice"]))["image"]
        assert rows_shown.first.get_attribute("data-key") == f"/{worst}"
        browser.close()
    assert errors == []


MARKUP = ("<img src=x onerror=\"document.title='pwned'\">#1", "<!--<script>", "&lt;b&gt; 'q' \"d\" a\nb")
"""Input names with markup, an HTML comment opener inside a script, entities, a '#' (a URL fragment) and a newline."""


@pytest.fixture
def markup_folder(tmp_path, monkeypatch) -> Path:
    """A report folder whose run (itself a folder with markup in its name) segmented inputs named ``MARKUP``."""
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    folder = tmp_path / "in"
    folder.mkdir()
    for name in MARKUP:
        Image.fromarray(np.full((20, 24), 90, np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "report"
    run_batch([folder], out / "<b onmouseover=alert(2)>run", workers=1, progress=False)
    return out


def test_names_are_data_in_the_page_and_a_path_in_results_is_left_out(markup_folder, tmp_path) -> None:
    run = markup_folder / "<b onmouseover=alert(2)>run"
    with open(run / "results.csv", "a", newline="", encoding="utf-8") as handle:  # an edited table
        csv.writer(handle).writerow(["../../escaped"] + [""] * 29)
    page = write_report(markup_folder, thumbnail_side=16).read_text(encoding="utf-8")
    script = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in script and ">" not in script and "&" not in script  # markup never reaches the parser
    data = _page_data(page)
    assert sorted(row["image"] for row in data["rows"]) == sorted(MARKUP)
    assert data["failures"] == [{"run": run.name, "image": "../../escaped", "reason": "not a file name: left out of the report"}]
    assert not any(path.name.startswith("escaped") for path in tmp_path.rglob("*"))


@needs_browser
def test_markup_in_names_is_shown_as_text_in_headless_chromium(markup_folder) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM is not None, "SELFSEG_REQUIRE_BROWSER is set but chromium is not installed"
    path = write_report(markup_folder, thumbnail_side=16)
    run = "<b onmouseover=alert(2)>run"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}") or dialog.dismiss())
        page.goto(path.resolve().as_uri())
        page.wait_for_function("[...document.images].every(image => image.complete)")
        rows = page.locator("#inputs tbody tr")
        assert sorted(rows.nth(k).get_attribute("data-key") for k in range(3)) == sorted(f"{run}/{n}" for n in MARKUP)
        cells = page.locator("#inputs tbody td").all_text_contents()
        assert all(name in cells for name in MARKUP) and cells.count(run) == 3  # shown as written
        assert page.title() == f"selfseg report: {markup_folder.name}"
        injected = page.evaluate("document.querySelectorAll('[onerror], [onmouseover], b, script:not([id])').length")
        assert injected == 1  # the page's own script only
        images = page.locator("#inputs img")
        assert images.count() == 9 and all(images.nth(k).evaluate("i => i.naturalWidth > 0") for k in range(9))
        page.locator("#filter").fill("#1")
        assert rows.count() == 1
        browser.close()
    assert errors == []
