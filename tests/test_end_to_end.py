"""End to end on real images: `selfseg segment` on the S3-Net authors' dermoscopy demo images, a chest X-ray and a CT slice.

The mask is chosen without ground truth; the expert masks are read only to score it.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from selfseg import segment
from selfseg.cli import main
from selfseg.foreground import implausible
from selfseg.foreground.lungs import lies_low
from selfseg.io import read_image, read_mask
from selfseg.metrics import dice

STEMS = ("Test_1", "Test_2", "Test_3")


def _segment_samples(shared_data, tmp_path, argv: list[str]) -> dict[str, float]:
    """`selfseg segment` of the dermoscopy samples with ``argv``; each sample's Dice against its expert mask."""
    samples = shared_data / "ssct-samples"
    inputs = [str(samples / "images" / f"{stem}.bmp") for stem in STEMS]
    assert main(["segment", *inputs, "--out", str(tmp_path), "--quiet", *argv]) == 0
    with open(tmp_path / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == list(STEMS)
    assert {row["chosen"] for row in rows} == {"lesion"}
    return {stem: dice(read_mask(tmp_path / f"{stem}_mask.png"), read_mask(samples / "masks" / f"{stem}.png"))
            for stem in STEMS}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_fit_of_each_dermoscopy_sample_is_good_whatever_the_seed(seed, shared_data, tmp_path, capsys) -> None:
    """The default S3-Net fit: each sample >= 0.85 for every seed. Measured for seeds 0-4 under 1 and 2 torch
    threads (docs/experiments/single-image-spread.md): with one k-means++ start per readout the worst run scored
    0.82 (Test_1); with the best of several, 0.86."""
    scores = _segment_samples(shared_data, tmp_path, ["--seed", str(seed)])
    assert min(scores.values()) >= 0.85, f"seed {seed}: Dice {scores}"
    assert len(capsys.readouterr().out.strip().splitlines()) == len(STEMS) + 1


def test_msformer_fit_of_each_dermoscopy_sample_is_good(shared_data, tmp_path) -> None:
    """MS-Former at the defaults: each sample >= 0.85, as S3-Net. Its fits through ``segment`` for seeds 0-4 under 1
    and 2 torch threads (benchmarks/spread.py) and this command with seed 0 are all above it (docs/results.md)."""
    scores = _segment_samples(shared_data, tmp_path, ["--method", "msformer"])
    assert min(scores.values()) >= 0.85, f"msformer: Dice {scores}"


def test_cli_segments_dermoscopy_samples_with_the_papers_argmax_readout(shared_data, tmp_path) -> None:
    """The papers' argmax readout: bounds that catch a broken pipeline (a wrong region or an empty mask scores below
    0.5); its spread over seeds is not measured against issue 37's targets."""
    scores = _segment_samples(shared_data, tmp_path, ["--readout", "argmax"])
    assert min(scores.values()) >= 0.6 and np.mean(list(scores.values())) >= 0.8, f"argmax: Dice {scores}"


def test_chest_xray_lungs_stop_at_the_shoulders(shared_data) -> None:
    """A Shenzhen chest X-ray whose darkest clusters run from the lungs up into the neck: the lung rule cuts
    above the shoulders and snaps the rims to the image's edges (Dice 0.79 without both steps, 0.87 with)."""
    folder = shared_data / "lung-cxr-shenzhen"
    result = segment(read_image(folder / "images" / "CHNCXR_0137_0.jpg"), method="kmeans")
    truth = read_mask(folder / "masks" / "CHNCXR_0137_0.png")
    assert result.foreground == "lungs"
    assert dice(result.mask, truth) >= 0.85


def test_chest_xray_whose_lungs_one_unlucky_start_joined_to_the_body(shared_data) -> None:
    """CHNCXR_0299_0: with the one k-means++ start its benchmark seed drew, three clusters joined the lungs to
    the body and the rule picked the gaps between the arms and the chest (Dice 0; one more cluster then gave
    0.63, 2026-12-05). The best of several starts finds the lungs in three clusters (Dice 0.91); the retry with
    one more cluster is tested in tests/test_choice.py."""
    folder = shared_data / "lung-cxr-shenzhen"
    result = segment(read_image(folder / "images" / "CHNCXR_0299_0.jpg"), method="kmeans", seed=506501920)
    assert result.foreground == "lungs" and result.n_labels == 3
    assert dice(result.mask, read_mask(folder / "masks" / "CHNCXR_0299_0.png")) >= 0.85


def test_basal_ct_slice_keeps_its_low_lungs(shared_data) -> None:
    """Slice 81 of lung-ct-lungsegdb: its lungs lie at 0.72 of the height, as low as the arm gaps of a chest
    X-ray, but on CT the lung rule's radiograph test fails, so no second readout is tried (Dice 0.72)."""
    folder = shared_data / "lung-ct-lungsegdb"
    image = read_image(folder / "images" / "81.png")
    result = segment(image, method="kmeans", seed=0)
    assert result.foreground == "lungs" and result.n_labels == 3
    assert lies_low(result.mask) and not implausible(result.mask, "lungs", result.labels, image)
    assert dice(result.mask, read_mask(folder / "masks" / "81.png")) >= 0.7


def test_kmeans_with_the_readout_vote_on_dermoscopy_samples(shared_data) -> None:
    """Colour k-means with the networks' readout counts and vote (3, 4 and 5 clusters): Dice 0.85 / 0.91 / 0.96
    on the S3-Net authors' samples (2026-12-05), against 0.81 / 0.88 / 0.96 with one k-means of 3 clusters."""
    samples = shared_data / "ssct-samples"
    scores = {}
    for counts in (None, 3):
        for stem in STEMS:
            result = segment(read_image(samples / "images" / f"{stem}.bmp"), method="kmeans", readout_clusters=counts)
            scores[counts, stem] = dice(result.mask, read_mask(samples / "masks" / f"{stem}.png"))
    voted, single = ([scores[counts, stem] for stem in STEMS] for counts in (None, 3))
    assert min(voted) >= 0.8 and np.mean(voted) >= 0.88, scores
    assert np.mean(voted) > np.mean(single) + 0.01, scores
