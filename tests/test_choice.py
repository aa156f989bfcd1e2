"""The one mask choice: the vote among readouts and the retry with one more cluster."""

from __future__ import annotations

import numpy as np

from selfseg import choice
from selfseg.choice import choose
from selfseg.foreground.lungs import lies_low
from selfseg.settings import MaskRule


def test_implausible_lungs_are_chosen_again_with_one_more_cluster(monkeypatch) -> None:
    """Lungs in the image's lowest 30 % send the image to one more cluster; that map is kept only if the same
    prior finds a plausible mask in it."""
    low, high = np.zeros((10, 10), dtype=bool), np.zeros((10, 10), dtype=bool)
    low[8:], high[2:5] = True, True
    masks = {3: low, 4: high}  # the mask the rule chooses from a map of n clusters
    monkeypatch.setattr(choice, "rule_mask", lambda labels, pixels, **rule: (masks[int(labels.max())], "lungs"))
    monkeypatch.setattr(choice, "implausible", lambda mask, chosen, labels, pixels: lies_low(mask))  # a radiograph
    asked: list[int] = []

    def recluster(k: int) -> np.ndarray:
        asked.append(k)
        return np.arange(k).repeat(25)[:100].reshape(10, 10) + 1

    three = np.arange(3).repeat(34)[:100].reshape(10, 10) + 1
    pixels, rule = np.zeros((10, 10, 1)), MaskRule()
    picked = choose([three], pixels, rule, recluster=recluster)
    assert asked == [4] and picked.labels.max() == 4 and picked.mask is high and picked.chosen == "lungs"
    masks[4] = low  # one more cluster does not mend it: the first choice stays
    picked = choose([three], pixels, rule, recluster=recluster)
    assert asked == [4, 4] and picked.labels is three and picked.mask is low
    assert choose([three], pixels, rule).mask is low  # the argmax readout: no count to raise
    masks[3] = high  # plausible at once: no second readout
    assert choose([three], pixels, rule, recluster=recluster).mask is high and asked == [4, 4]


def test_the_vote_keeps_the_map_the_others_agree_with() -> None:
    """Three maps of a disc, one of which merges it with the background: the disc's mask wins, with its map."""
    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 < 10**2
    pixels = np.where(disc, 0.2, 0.8)[..., None].astype(np.float32)
    good = np.where(disc, 2, 1).astype(np.int32)
    merged = np.ones((40, 40), dtype=np.int32)
    merged[:2] = 2  # a thin strip: its lesion is not the disc
    picked = choose([merged, good, good.copy()], pixels, MaskRule(target="lesion"))
    assert picked.labels is good and picked.chosen == "lesion" and picked.mask[20, 20] and not picked.mask[0, 0]
    assert 0 < picked.confidence < 1


def test_a_referee_settles_the_vote_for_the_mask_closest_to_its_own() -> None:
    """Two of three maps join a dark disc to the dark band at the frame's top; the majority keeps that joined
    region, a referee whose maps hold the disc alone keeps the map with the disc alone, and a referee with no mask
    leaves the vote as it was. A single map, or a prior outside ``REFEREED_PRIORS`` (the polyp's), never asks it."""
    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 35) ** 2 + (xx - 30) ** 2 < 12**2
    band = yy < 6
    pixels = np.where(disc | band, 0.2, 0.8)[..., None].repeat(3, axis=2).astype(np.float32)
    alone = np.where(disc, 2, 1).astype(np.int32)
    alone[band] = 3
    joined = np.where(disc | (yy < 24) & (abs(xx - 30) < 3) | band, 2, 1).astype(np.int32)  # disc, stalk and band
    rule = MaskRule(target="lesion")
    majority = choose([joined, alone, joined.copy()], pixels, rule)
    assert majority.labels is joined and majority.mask[2, 30]
    refereed = choose([joined, alone, joined.copy()], pixels, rule, referee=lambda: [alone.copy(), alone.copy()])
    assert refereed.labels is alone and refereed.mask[35, 30] and not refereed.mask[2, 30]
    blank = np.ones((60, 60), dtype=np.int32)  # one cluster: no lesion in the referee's maps
    assert choose([joined, alone, joined.copy()], pixels, rule, referee=lambda: [blank]).labels is joined
    asked: list[int] = []

    def referee() -> list[np.ndarray]:
        asked.append(1)
        return [alone]

    assert choose([joined], pixels, rule, referee=referee).labels is joined and not asked
    polyp = choose([joined, alone, joined.copy()], pixels, MaskRule(target="polyp"), referee=referee)
    assert polyp.chosen == "polyp" and not asked
    assert "polyp" not in choice.REFEREED_PRIORS
