"""Mineral assemblages: exclusive pairs from training masks, choosing the minerals of a photograph."""
import numpy as np
import pytest
import torch

from core.segmentation import SegmentationModel, predict
from core.segmentation.assemblage import (assemblage_from_masks, assemblage_settings, choose_minerals,
                                          compatible_sets, parse_minerals, probability_mass, restrict,
                                          user_minerals, widen_assemblage)
from test_segmentation import _config

torch.set_num_threads(2)


def _mask(shares: dict, n=10_000):
    """A flat mask holding each code for its share of n pixels (the rest unlabelled)."""
    out, i = np.full(n, 255, np.uint8), 0
    for code, share in shares.items():
        k = int(round(share * n))
        out[i:i + k] = code
        i += k
    return out.reshape(100, -1)


def test_exclusive_pairs_come_from_which_minerals_share_a_photograph():
    masks = [_mask({0: 0.5, 5: 0.3, 7: 0.2}),          # Cu-Ni ore
             _mask({0: 0.5, 1: 0.2, 5: 0.3}),
             _mask({0: 0.3, 6: 0.4, 8: 0.3}),          # base-metal ore
             _mask({0: 0.5, 1: 0.1, 6: 0.39995, 5: 0.00005})]  # 0.5 pixel of po: below min_share, ignored
    e = assemblage_from_masks(masks, [0, 1, 5, 6, 7, 8])
    assert e["n_images"] == 4
    assert sorted(map(tuple, e["exclusive"])) == [(1, 7), (1, 8), (5, 6), (5, 8), (6, 7), (7, 8)]
    sets = compatible_sets([0, 1, 5, 6, 7, 8], [tuple(p) for p in e["exclusive"]])
    assert sets == [[0, 1, 5], [0, 1, 6], [0, 5, 7], [0, 6, 8]]
    # a user's annotation showing pyrite next to pyrrhotite lifts that one exclusion
    ann = np.full((20, 20), 255, np.uint8)
    ann[0, 0], ann[5, 5] = 5, 6
    wider = widen_assemblage(e, [ann], [0, 1, 5, 6, 7, 8])
    assert [5, 6] not in wider["exclusive"] and len(wider["exclusive"]) == 5
    assert assemblage_settings({"classes": [0, 5, 6], "assemblage": e}) == [(5, 6)]
    assert assemblage_settings({"classes": [0, 5, 6]}) is None


def test_the_set_with_most_probability_wins_and_the_rest_is_renormalised():
    rng = np.random.default_rng(0)
    classes = [0, 5, 6, 7]
    probs = rng.random((4, 30, 40)).astype(np.float32)
    probs[1, :, :25] += 3      # pyrrhotite on the left
    probs[2, :, 25:] += 2      # pyrite on the right, less of it
    probs /= probs.sum(0)
    a = choose_minerals(probs, classes, [(5, 6), (6, 7)])
    assert a.kept == [0, 5, 7] and a.removed == [6] and a.mode == "auto"
    mass = probability_mass(probs, classes)
    assert abs(sum(mass.values()) - 1) < 1e-9 and abs(a.removed_share - mass[6]) < 1e-9
    out = restrict(probs, classes, a.kept)
    assert out is not probs and np.all(out[2] == 0) and np.allclose(out.sum(0), 1, atol=1e-6)
    # the right half, pyrite before, now takes its second most likely mineral among those kept
    assert np.array_equal(out.argmax(0), np.array([0, 1, 3])[probs[[0, 1, 3]].argmax(0)])
    assert "pyrite" in a.describe() and "pyrite" not in choose_minerals(probs, classes, []).describe()
    # a half-precision map is restricted in place to the same values, tiny ones included
    tiny = probs * np.float32(1e-6)
    tiny[0] += 1 - tiny.sum(0)
    half = tiny.astype(np.float16)
    expected = restrict(half.astype(np.float32), classes, a.kept).astype(np.float16)
    assert restrict(half, classes, a.kept, inplace=True) is half and half.dtype == np.float16
    assert np.array_equal(half, expected) and (half[1:] > 0).sum() > 0 and half[1:].max() < 1e-3
    # where the kept classes had nothing, they share the pixel
    p = np.zeros((3, 2, 2), np.float16)
    p[2] = 1
    p[0, 0, 0], p[2, 0, 0] = 0.5, 0.5
    r = restrict(p, [0, 5, 6], [0, 5], inplace=True)
    assert r is p and r.dtype == np.float16
    assert np.allclose(r[:, 0, 0], [1, 0, 0]) and np.allclose(r[:, 1, 1], [0.5, 0.5, 0])
    with pytest.raises(ValueError, match="every class"):
        restrict(p, [0, 5, 6], [9])


def test_a_close_choice_between_two_ores_is_flagged():
    classes, exclusive = [0, 5, 6, 7], [(5, 6), (6, 7)]  # {0, 5, 7} (copper-nickel) or {0, 6} (pyrite)

    def photo(share):  # every pixel the same probabilities, so the masses are the shares
        return np.broadcast_to(np.asarray(share, np.float32)[:, None, None], (4, 10, 10)).copy()

    close = choose_minerals(photo([0.25, 0.40, 0.30, 0.05]), classes, exclusive)
    assert close.kept == [0, 5, 7] and close.alternative == [0, 6]
    # pyrrhotite + pentlandite 45 % against pyrite 30 %: 30 >= 0.5 * 45
    assert close.close and close.as_dict()["close"] is True
    d = close.as_dict()
    assert abs(d["kept_own_share"] - 0.45) < 1e-4 and abs(d["alternative_own_share"] - 0.30) < 1e-4
    text = close.describe()
    assert "close call" in text and "45.0 %" in text and "30.0 %" in text and "pyrite" in text
    clear = choose_minerals(photo([0.25, 0.60, 0.10, 0.05]), classes, exclusive)
    assert clear.kept == [0, 5, 7] and not clear.close and "close call" not in clear.describe()
    # nothing to choose between, or minerals named by the user: never a close call
    assert not choose_minerals(photo([0.25, 0.40, 0.30, 0.05]), classes, []).close
    assert not user_minerals(photo([0.25, 0.40, 0.30, 0.05]), classes, [0, 5, 7]).close


def test_minerals_named_by_the_user():
    assert parse_minerals("po, 7", [0, 5, 6, 7]) == [0, 5, 7]
    assert parse_minerals(["pyrite"], [0, 5, 6, 7]) == [0, 6]
    with pytest.raises(ValueError, match="unknown mineral"):
        parse_minerals("po,xyz", [0, 5, 6, 7])
    with pytest.raises(ValueError, match="does not know galena"):
        parse_minerals("gl", [0, 5, 6, 7])
    with pytest.raises(ValueError, match="at least one"):
        parse_minerals(" , ", [0, 5, 6, 7])


class _ColourNet(torch.nn.Module):
    """Dark pixels are non-metallic; reddish bright ones pyrrhotite; yellowish bright ones narrowly pyrite."""

    def forward(self, x):
        r, g = x[:, 0:1], x[:, 1:2]
        return torch.cat([-3 * r, 2 * r - g, r + 0.3 * g], 1)


def _photo():
    img = np.full((48, 80, 3), (230, 153, 128), np.uint8)    # pyrrhotite-like, 60 %
    img[:, 48:72] = (230, 230, 128)                            # pyrite-like, 30 %
    img[:, 72:] = (25, 25, 25)                                 # non-metallic
    return img


def test_prediction_keeps_the_photographs_assemblage_or_the_users_choice():
    model = SegmentationModel(net=_ColourNet().eval(), device=torch.device("cpu"),
                              config=_config([0, 5, 6], assemblage={"exclusive": [[5, 6]], "n_images": 2}))
    img = _photo()
    free = predict(model, img, assemblage=False)
    assert free.assemblage is None
    assert set(np.unique(free.labels[:, :48])) == {5} and set(np.unique(free.labels[:, 48:72])) == {6}
    auto = predict(model, img)
    assert auto.assemblage.kept == [0, 5] and auto.assemblage.removed == [6]
    assert set(np.unique(auto.labels[:, :72])) == {5} and set(np.unique(auto.labels[:, 72:])) == {0}
    assert float(auto.probs[2].max()) == 0 and np.allclose(auto.probs.astype(np.float32).sum(0), 1, atol=2e-3)
    mine = predict(model, img, minerals=[0, 6])
    assert mine.assemblage.mode == "user" and mine.assemblage.removed == [5]
    assert set(np.unique(mine.labels[:, :72])) == {6}
    assert np.array_equal(predict(model, img, minerals=(c for c in (0, 6))).labels, mine.labels)
    with pytest.raises(ValueError, match="none of the chosen minerals"):
        predict(model, img, minerals=[9])
    # without an assemblage record the model predicts freely
    del model.config["assemblage"]
    assert predict(model, img).assemblage is None
