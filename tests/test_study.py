"""The study stage: training on a folder's per-image masks corrects the wrong ones; stored models round-trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from selfseg.metrics import dice
from selfseg.study import (
    StudyModelError,
    StudySettings,
    load_study_model,
    predict_mask,
    save_study_model,
    train_study,
)

from helpers import TickingPacedSave

FAST = {
    "unet": StudySettings(network="unet", size=32, width=8, depth=2, epochs=12, batch=8, keep=0.7, device="cpu"),
    "pretrained": StudySettings(size=96, width=16, epochs=24, batch=8, keep=0.7, device="cpu"),
}
"""Settings that learn the synthetic folder in seconds, per network (the pretrained one needs 96 px: its coarsest
features have a 16th of the side)."""


def _folder(count: int = 40, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Dark discs of random place and size on a noisy bright background (colour images), and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    images, truths = [], []
    for _ in range(count):
        cy, cx, r = rng.uniform(16, 32), rng.uniform(16, 32), rng.uniform(7, 12)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image = np.where(disc[..., None], [0.3, 0.2, 0.15], [0.8, 0.7, 0.6]) + rng.normal(0, 0.05, (48, 48, 3))
        images.append(np.clip(image, 0, 1).astype(np.float32))
        truths.append(disc)
    return images, truths


@pytest.fixture(scope="module", params=sorted(FAST))
def trained(request, single_thread):
    """A study model trained where the least confident 30 % of the per-image masks are wrong (a corner square)."""
    images, truths = _folder()
    wrong = np.zeros((48, 48), dtype=bool)
    wrong[:12, :12] = True
    masks = [truth if k % 10 < 7 else wrong for k, truth in enumerate(truths)]
    confidence = [0.8 if k % 10 < 7 else 0.2 for k in range(len(truths))]
    return train_study(images, masks, confidence, prior="lesion", settings=FAST[request.param]), images, truths, masks


def test_the_study_stage_corrects_wrong_per_image_masks(trained) -> None:
    model, images, truths, masks = trained
    bad = [k for k in range(len(images)) if k % 10 >= 7]
    before = np.mean([dice(masks[k], truths[k]) for k in bad])
    after = np.mean([dice(predict_mask(model, images[k])[0], truths[k]) for k in bad])
    assert before == 0.0 and after > 0.8
    unseen, unseen_truths = _folder(10, seed=1)  # images it never saw
    assert np.mean([dice(predict_mask(model, image)[0], truth) for image, truth in zip(unseen, unseen_truths)]) > 0.8


def test_a_study_mask_is_one_region_within_the_prior(trained) -> None:
    model, images, _, _ = trained
    mask, probability = predict_mask(model, images[0])
    assert mask.shape == probability.shape == (48, 48) and mask.dtype == bool and probability.dtype == np.float32
    from scipy import ndimage

    assert ndimage.label(mask)[1] == 1


def test_training_is_deterministic(single_thread) -> None:
    images, truths = _folder(12)
    for settings in (StudySettings(network="unet", size=16, width=4, depth=1, epochs=2, batch=4, consistency=1.0,
                                   device="cpu"), StudySettings(size=32, width=4, epochs=2, batch=4, device="cpu")):
        first, second = (train_study(images, truths, [0.5] * 12, prior="lesion", settings=settings) for _ in range(2))
        for a, b in zip(first.network.state_dict().values(), second.network.state_dict().values()):
            assert torch.equal(a, b)


def test_save_and_load_round_trip_and_refuse_foreign_or_altered_files(trained, tmp_path) -> None:
    model, images, _, _ = trained
    path = save_study_model(model, tmp_path / "study.pt")
    loaded = load_study_model(path, device="cpu")
    assert loaded.prior == "lesion" and loaded.settings == model.settings
    np.testing.assert_array_equal(predict_mask(loaded, images[3])[1], predict_mask(model, images[3])[1])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(StudyModelError, match=r"foreign\.pt: not a usable selfseg study model: no 'selfseg-study"):
        load_study_model(foreign)
    payload = torch.load(path, weights_only=True)
    payload["state"][next(iter(payload["state"]))] += 1  # an altered weight
    torch.save(payload, tmp_path / "altered.pt")
    with pytest.raises(StudyModelError, match="do not match their checksum"):
        load_study_model(tmp_path / "altered.pt")
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(StudyModelError, match=r"cannot be read safely"):
        load_study_model(tmp_path / "text.pt")


def test_settings_resolve_each_networks_size_width_and_members() -> None:
    default, unet = StudySettings(), StudySettings(network="unet")
    assert (default.network, default.size, default.width, default.members) == ("pretrained", 224, 16, 3)
    assert (unet.size, unet.width, unet.members) == (96, 8, 1)
    assert StudySettings(members=1, width=32).members == 1  # given values are kept
    assert StudySettings(size=64).size == 64


def test_bad_settings_and_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="size must be a multiple of 8 for the unet network, got 20"):
        StudySettings(network="unet", size=20)
    with pytest.raises(ValueError, match="size must be a multiple of 16 for the pretrained network, got 40"):
        StudySettings(size=40)
    with pytest.raises(ValueError, match="network must be one of pretrained, unet"):
        StudySettings(network="resnet")
    with pytest.raises(ValueError, match="the consistency term needs network='unet', got 'pretrained'"):
        StudySettings(consistency=1.0)
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
        StudySettings(keep=0)
    with pytest.raises(ValueError, match="members must be at least 1, got 0"):
        StudySettings(members=0)
    with pytest.raises(ValueError, match="prior must be one of lesion, lungs, polyp"):
        train_study([np.zeros((8, 8, 3))], [np.zeros((8, 8), bool)], [0.5], prior="heart")


def _disc_files(folder, count: int, seed: int) -> list:
    from PIL import Image

    folder.mkdir(parents=True)
    images, _ = _folder(count, seed)
    paths = []
    for k, image in enumerate(images):
        paths.append(folder / f"disc{seed}_{k}.png")
        Image.fromarray((image * 255).astype(np.uint8)).save(paths[-1])
    return paths


def test_run_batch_with_a_study_stage_resumes_and_its_model_serves_new_images(tmp_path, capsys) -> None:
    from selfseg import io
    from selfseg.cli import main
    from selfseg.runner import evaluate_outputs, run_batch, run_study_model

    _disc_files(tmp_path / "in", 16, seed=2)
    out, tiny = tmp_path / "out", StudySettings(size=32, width=4, epochs=2, batch=8, device="cpu")
    report = run_batch([tmp_path / "in"], out, method="kmeans", workers=1, progress=False, study=tiny)
    model = out / "study" / "study_model.pt"
    assert len(report.results) == len(report.study) == 16 and model.exists()
    assert {row["stage"] for row in report.study} == {"study"}
    assert all((out / "study" / f"{row['image']}_mask.png").exists() for row in report.study)
    from selfseg.report import write_report

    truth = tmp_path / "gt"
    truth.mkdir()
    for stem, disc in zip([f"disc2_{k}" for k in range(16)], _folder(16, seed=2)[1]):
        io.write_image(truth / f"{stem}.png", disc)
    evaluate_outputs(out, truth)
    evaluate_outputs(out / "study", truth)
    page = write_report(out, thumbnail_side=24).read_text()  # each image's two masks side by side, one row each
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    assert data["pictures"] == ["image", "clusters", "overlay", "study"] and len(data["rows"]) == 16
    for row in data["rows"]:
        assert row["run"] == "" and set(row["thumbs"]) == {"image", "clusters", "overlay", "study"}
        assert {"dice", "study_dice"} <= set(row["scores"]) and float(row["cells"]["agreement"]) >= 0
    stamp = model.stat().st_mtime_ns
    again = run_batch([tmp_path / "in"], out, method="kmeans", workers=1, progress=False, resume=True, study=tiny)
    assert again.skipped and model.stat().st_mtime_ns == stamp and again.study == report.study  # nothing redone
    _disc_files(tmp_path / "in" / "more", 2, seed=4)  # images added to the folder: the model learns them too
    grown = run_batch([tmp_path / "in"], out, method="kmeans", workers=1, progress=False, resume=True, study=tiny)
    assert len(grown.results) == 2 and len(grown.study) == 18 and model.stat().st_mtime_ns != stamp
    new = _disc_files(tmp_path / "new", 3, seed=3)
    rows = run_study_model([tmp_path / "new"], tmp_path / "applied", model, device="cpu", progress=False).results
    assert [row["stage"] for row in rows] == ["study-model"] * 3 and (tmp_path / "applied" / f"{new[0].stem}_mask.png").exists()
    (tmp_path / "bad.pt").write_bytes(b"\0" * 10)
    assert main(["segment", str(tmp_path / "new"), "--out", str(tmp_path / "x"), "--study-model", str(tmp_path / "bad.pt"),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("bad.pt: not a usable selfseg study model: cannot be read safely "
                                                      "(UnpicklingError)")


def test_the_kept_weights_are_the_mean_of_the_last_epochs(single_thread) -> None:
    images, truths = _folder(16)
    confidence = [0.9] * 16
    tiny = dict(network="unet", size=32, width=4, depth=2, epochs=3, batch=8, device="cpu")  # two steps per epoch
    ends = []
    originals = {}

    def snapshot(step, steps, loss):  # the weights after each epoch, as the averaging sees them
        if (step + 1) % 2 == 0:
            ends.append({k: v.clone() for k, v in originals["network"].state_dict().items()})

    import selfseg.study.model as study_model

    class Spy(study_model.UNet):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            originals["network"] = self

    study_model_unet, study_model.UNet = study_model.UNet, Spy
    try:
        model = train_study(images, truths, confidence, prior="lesion",
                            settings=StudySettings(**tiny, average=2), callback=snapshot)
    finally:
        study_model.UNet = study_model_unet
    weight = "down.0.0.weight"
    assert len(ends) == 3
    torch.testing.assert_close(model.network.state_dict()[weight], (ends[1][weight] + ends[2][weight]) / 2)
    last = train_study(images, truths, confidence, prior="lesion", settings=StudySettings(**tiny, average=1))
    torch.testing.assert_close(last.network.state_dict()[weight], ends[2][weight])  # average=1: the last weights
    with pytest.raises(ValueError, match="average must be at least 1, got 0"):
        StudySettings(average=0)


@pytest.mark.parametrize("network", ["pretrained", "unet"])
def test_the_cli_trains_the_chosen_study_network(tmp_path, network, single_thread) -> None:
    from selfseg.cli import main

    _disc_files(tmp_path / "in", 8, seed=5)
    out = tmp_path / "out"
    extra = ["--study-members", "2"] if network == "pretrained" else ["--study-network", "unet"]  # default: pretrained
    assert main(["segment", str(tmp_path / "in"), "--out", str(out), "--method", "kmeans", "--study", "--quiet",
                 "--device", "cpu", *extra]) == 0
    model = load_study_model(out / "study" / "study_model.pt", device="cpu")
    assert model.settings == StudySettings(network=network, members=2 if network == "pretrained" else 1, device="cpu")
    assert len(list((out / "study").glob("*_mask.png"))) == 8


def test_a_model_of_selfseg_0_11_loads_as_the_unet_it_is(tmp_path, single_thread) -> None:
    images, truths = _folder(8)
    settings = StudySettings(network="unet", size=16, width=4, depth=1, epochs=1, batch=4, device="cpu")
    model = train_study(images, truths, [0.5] * 8, prior="lesion", settings=settings)
    path = save_study_model(model, tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    del payload["settings"]["network"]  # as 0.11 wrote them
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_study_model(tmp_path / "old.pt", device="cpu")
    assert loaded.settings == settings
    np.testing.assert_array_equal(predict_mask(loaded, images[0])[1], predict_mask(model, images[0])[1])


def test_stored_model_masks_are_predict_masks_in_input_order_and_a_failed_write_keeps_the_finished_rows(
    trained, tmp_path, monkeypatch
) -> None:
    import errno

    import selfseg.runner.study as stage
    from selfseg import io
    from selfseg.pixels import as_float_image

    model = trained[0]
    paths = _disc_files(tmp_path / "new", 5, seed=5)
    save_study_model(model, tmp_path / "m.pt")
    items = [(path.stem, path, f"sha{k}") for k, path in enumerate(paths)]
    tables, write_csv = [], io.write_csv
    with monkeypatch.context() as patch:
        patch.setattr(stage, "PacedSave", TickingPacedSave)
        patch.setattr(stage.io, "write_csv", lambda path, *args: (tables.append(path.name), write_csv(path, *args)))
        rows = stage.apply_study_model(tmp_path / "m.pt", items, tmp_path / "out", device="cpu", progress=False)
    assert tables == ["results.csv", "results.csv"]  # at the first row and at the end, not at every row
    assert [row["image"] for row in rows] == [path.stem for path in paths]
    assert [row["image"] for row in io.read_csv(tmp_path / "out" / "results.csv")] == [path.stem for path in paths]
    for path in paths:  # the writer thread gives the masks of predict_mask, image by image
        expected = predict_mask(model, as_float_image(io.read_image(path)))[0]
        np.testing.assert_array_equal(io.read_mask(tmp_path / "out" / f"{path.stem}_mask.png"), expected)

    write = io.write_image

    def full_disk_on_the_fourth(path, array, **options) -> None:
        if paths[3].stem in str(path):
            raise io.WriteError(errno.ENOSPC, path)
        write(path, array, **options)

    monkeypatch.setattr(stage.io, "write_image", full_disk_on_the_fourth)
    with pytest.raises(io.WriteError, match="no space left"):
        stage.apply_study_model(tmp_path / "m.pt", items, tmp_path / "again", device="cpu", progress=False)
    written = [row["image"] for row in io.read_csv(tmp_path / "again" / "results.csv")]
    assert written[:3] == [p.stem for p in paths[:3]] and paths[3].stem not in written  # every finished image's row
    assert written == [p.stem for p in paths if (tmp_path / "again" / f"{p.stem}_mask.png").exists()]


def test_a_stored_model_goes_on_past_unreadable_inputs_and_reports_them(trained, tmp_path, capsys) -> None:
    from selfseg import io
    from selfseg.cli import main

    save_study_model(trained[0], tmp_path / "m.pt")
    paths = _disc_files(tmp_path / "new", 2, seed=6)
    (tmp_path / "new" / "broken.png").write_bytes(paths[0].read_bytes()[:60])  # truncated
    (tmp_path / "new" / "empty.png").write_bytes(b"")
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / ".a_mask.png.0123abcd.tmp.png"  # a killed run's temporary file
    stale.write_bytes(b"x")
    assert io.is_temporary(stale.name)
    code = main(["segment", str(tmp_path / "new"), "--out", str(tmp_path / "out"), "--study-model",
                 str(tmp_path / "m.pt"), "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "2 images segmented with" in captured.out and "2 failed" in captured.out
    assert re.search(r"error: \S*broken\.png: ", captured.err) and re.search(r"error: \S*empty\.png: empty file", captured.err)
    failures = io.read_csv(tmp_path / "out" / "failures.csv")
    assert sorted(Path(row["image"]).name for row in failures) == ["broken.png", "empty.png"]
    assert [row["image"] for row in io.read_csv(tmp_path / "out" / "results.csv")] == [p.stem for p in paths]
    assert not stale.exists()


@pytest.mark.parametrize("network", sorted(FAST))
def test_an_ensemble_averages_its_members_and_round_trips(network, tmp_path, single_thread) -> None:
    from dataclasses import replace

    from selfseg.study import predict_probability

    images, truths = _folder(24, seed=7)
    confidence = [0.8] * len(images)
    two = replace(FAST[network], members=2, epochs=4)
    ensemble = train_study(images, truths, confidence, prior="lesion", settings=two)
    assert isinstance(ensemble.network, torch.nn.ModuleList) and len(ensemble.network) == 2
    first = train_study(images, truths, confidence, prior="lesion", settings=replace(two, members=1))
    second = train_study(images, truths, confidence, prior="lesion", settings=replace(two, members=1, seed=1000))
    for mine, alone in zip(ensemble.network, (first.network, second.network)):  # member k: seed + 1000 k
        for a, b in zip(mine.state_dict().values(), alone.state_dict().values()):
            torch.testing.assert_close(a, b)
    expected = (predict_probability(first, images[0]) + predict_probability(second, images[0])) / 2
    np.testing.assert_allclose(predict_probability(ensemble, images[0]), expected, atol=1e-6)
    loaded = load_study_model(save_study_model(ensemble, tmp_path / "two.pt"), device="cpu")
    assert loaded.settings.members == 2
    np.testing.assert_array_equal(predict_probability(loaded, images[0]), predict_probability(ensemble, images[0]))
