"""Post-network inference steps: guided-filter edge refinement and automatic white balance."""
import numpy as np
import pytest
import torch

from core.calibration.methods import from_linear, to_linear
from core.segmentation import SegmentationModel, predict
from core.segmentation.balance import (auto_balance, balance_settings, bright_chromaticity, cast_gains,
                                      chromaticity_statistics)
from core.segmentation.infer import predict_scaled
from core.segmentation.refine import REFINE_METHODS, crf_refine, guided_refine, refine, refine_settings
from test_segmentation import _config, _Pointwise

torch.set_num_threads(2)


def _edge_case(h=96, w=128, edge=50, blur_centre=54):
    """A dark/bright photograph split at column ``edge`` and probabilities whose soft step sits at ``blur_centre``."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[:, edge:] = (200, 180, 150)
    x = np.arange(w, dtype=np.float32)
    p1 = 1 / (1 + np.exp(-(x - blur_centre) / 6))
    probs = np.stack([np.broadcast_to(1 - p1, (h, w)), np.broadcast_to(p1, (h, w))]).astype(np.float32).copy()
    return img, probs


def test_refinement_moves_a_blurred_boundary_onto_the_colour_edge():
    img, probs = _edge_case()
    first = lambda labels: labels.argmax(1)  # first column of class 1 in each row
    assert (first(probs.argmax(0)) == 55).all()           # the network's boundary is 5 px off the edge at 50
    out = guided_refine(probs.copy(), img, radius=8, eps=1e-3, subsample=2)
    assert np.isin(first(out.argmax(0)), [50, 51]).all()
    assert np.allclose(out.sum(0), 1, atol=1e-5) and out.min() >= 0 and out.max() <= 1


def test_refinement_keeps_flat_regions_and_is_the_same_in_strips():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    probs = rng.random((4, 120, 90)).astype(np.float32)
    probs /= probs.sum(0)
    whole = guided_refine(probs.copy(), img, radius=4, eps=1e-2, subsample=2, strip=10_000)
    strips = guided_refine(probs.copy(), img, radius=4, eps=1e-2, subsample=2, strip=16)
    assert np.allclose(whole, strips, atol=1e-4)
    # a uniform probability map stays what it is, whatever the image
    flat = np.full((3, 120, 90), 1 / 3, np.float32)
    assert np.allclose(guided_refine(flat, img), 1 / 3, atol=1e-4)


def test_crf_moves_a_blurred_boundary_onto_the_colour_edge_and_keeps_a_thin_rim():
    img, probs = _edge_case()
    first = lambda labels: labels.argmax(1)
    out = crf_refine(probs.copy(), img)
    assert np.isin(first(out.argmax(0)), [50]).all()
    assert np.allclose(out.sum(0), 1, atol=1e-5) and out.min() >= 0
    # a rim 3 px wide that the network smeared over 9 to 11 px
    h, w = 80, 120
    img = np.full((h, w, 3), 40, np.uint8)
    img[:, 60:63] = (110, 105, 100)
    x = np.arange(w, dtype=np.float32)
    for peak, sigma in [(0.7, 6), (0.9, 5)]:
        rim = peak * np.exp(-0.5 * ((x - 61) / sigma) ** 2)
        probs = np.stack([np.broadcast_to(1 - rim, (h, w)), np.broadcast_to(rim, (h, w))]).astype(np.float32).copy()
        assert (probs.argmax(0) == 1).sum(1).min() >= 9
        lab = crf_refine(probs, img).argmax(0)
        assert (lab[:, 60:63] == 1).all() and (lab[:, :60] == 0).all() and (lab[:, 63:] == 0).all()


def test_crf_is_the_same_in_strips_and_leaves_ruled_out_minerals_at_zero():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    probs = rng.random((4, 120, 90)).astype(np.float32)
    probs[2] = 0
    probs /= probs.sum(0)
    whole = crf_refine(probs.copy(), img, strip=10_000)
    done = []
    strips = crf_refine(probs.copy(), img, strip=7, progress=done.append)
    assert np.allclose(whole, strips, atol=1e-5)
    # blocks of 24 rows (the margin of 3 iterations of radius 8 is the least a block may have): progress per block
    assert done == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    done.clear()
    guided_refine(probs.copy(), img, strip=40, radius=2, subsample=2, progress=done.append)
    assert done == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert (whole[2] == 0).all() and np.allclose(whole.sum(0), 1, atol=1e-5)
    # one class only: nothing to decide
    one = np.zeros((3, 20, 20), np.float32)
    one[1] = 1
    assert (crf_refine(one.copy(), img[:20, :20]) == one).all()
    # a uniform photograph and uniform probabilities stay uniform
    flat = np.full((3, 30, 40), 1 / 3, np.float32)
    assert np.allclose(crf_refine(flat, np.full((30, 40, 3), 90, np.uint8)), 1 / 3, atol=1e-5)


def test_refinement_settings_and_bad_input():
    assert refine_settings({}) is None
    assert refine_settings({"refine": {"radius": 4}}) == {"method": "guided", "radius": 4, "eps": 1e-3, "subsample": 4}
    assert refine_settings({}, force=True) == {"method": "crf", **REFINE_METHODS["crf"]}
    assert refine_settings({"refine": {"method": "crf", "iterations": 2}})["iterations"] == 2
    with pytest.raises(ValueError, match="valid methods: guided, crf"):
        refine_settings({"refine": {"method": "bilateral"}})
    with pytest.raises(ValueError, match="no settings"):
        refine_settings({"refine": {"method": "crf", "eps": 1e-3}})
    with pytest.raises(ValueError, match="crf settings"):
        refine_settings({"refine": {"method": "crf", "colour_sigma": 0}})
    with pytest.raises(ValueError, match="guide"):
        crf_refine(np.zeros((2, 10, 10), np.float32), np.zeros((9, 10, 3), np.uint8))
    img, probs = _edge_case()
    assert np.allclose(refine(probs.copy(), img, refine_settings({"refine": {"radius": 8, "eps": 1e-3, "subsample": 2}})),
                       guided_refine(probs.copy(), img, radius=8, eps=1e-3, subsample=2))
    with pytest.raises(ValueError, match="radius"):
        refine_settings({"refine": {"radius": 0}})
    with pytest.raises(ValueError, match="guide"):
        guided_refine(np.zeros((2, 10, 10), np.float32), np.zeros((9, 10, 3), np.uint8))


# ---------------------------------------------------------------------------------------------- balance

REF = {0: np.array([45.0, 45, 42]), 1: np.array([178.0, 160, 127]), 6: np.array([179.0, 165, 145]),
       8: np.array([106.0, 103, 98])}


def _cast(rgb, gains):
    lin = to_linear(np.asarray(rgb, np.float64) / 255) * np.asarray(gains)
    return np.round(from_linear(np.clip(lin, 0, 1)) * 255)


def _scene(gains):
    """Four mineral blocks in their reference colours seen through linear-light ``gains``, and sure probabilities."""
    codes = [0, 1, 6, 8]
    img = np.zeros((40, 160, 3), np.uint8)
    probs = np.full((4, 40, 160), 0.02, np.float32)
    for i, c in enumerate(codes):
        img[:, 40 * i: 40 * (i + 1)] = _cast(REF[c], gains)
        probs[i, :, 40 * i: 40 * (i + 1)] = 0.94
    return img, probs, codes


def test_auto_balance_undoes_a_colour_cast_and_segments_again():
    cast = np.array([1.0, 0.85, 0.55])                     # a yellow filter
    img, probs, codes = _scene(cast)
    seen = []

    def run(balanced):
        seen.append(balanced)
        return probs

    out, arr, rep = auto_balance(img, codes, REF, run, first=probs, threshold=6.0, min_confidence=0.8)
    assert rep.drift > 6 and rep.applied and len(seen) == 1
    assert np.allclose(rep.gains * cast, 1.0, atol=0.03)   # the fitted gains invert the cast
    assert rep.drift_after < 1.0 and arr is seen[0]
    assert np.abs(arr[0, 50].astype(float) - REF[1]).max() <= 3


def test_auto_balance_leaves_well_exposed_images_alone():
    img, probs, codes = _scene([1.0, 1.0, 1.0])
    out, arr, rep = auto_balance(img, codes, REF, lambda a: pytest.fail("must not run again"), first=probs)
    assert not rep.applied and rep.drift < 1 and out is probs and arr is img and rep.cast is None


def test_auto_balance_says_why_it_cannot_balance():
    img, probs, codes = _scene([1.0, 0.85, 0.55])
    probs[:] = 0.25                                         # nothing is predicted surely
    out, arr, rep = auto_balance(img, codes, REF, lambda a: pytest.fail("must not run again"), first=probs)
    assert not rep.applied and "not balanced" in rep.note and out is probs


def test_auto_balance_keeps_the_image_as_it_came_when_the_balance_makes_the_colours_worse():
    img, probs, codes = _scene([1.0, 1.0, 1.0])
    wrong = probs[[1, 2, 3, 0]]                               # the balanced pass calls every block another mineral
    seen = []

    def run(a):
        seen.append(a)
        return wrong if len(seen) == 1 else probs

    # a threshold below any drift forces the balance; its pass then sits further from the reference colours
    out, arr, rep = auto_balance(img, codes, REF, run, first=probs, threshold=-1.0)
    assert len(seen) == 2 and seen[1] is img                 # the image as it came, segmented again
    assert not rep.applied and out is probs and arr is img
    assert rep.drift_after > 1.25 * rep.drift and "clearly further from the training colours" in rep.note


def test_auto_balance_checks_a_first_look_and_completes_only_the_pass_it_keeps():
    img, probs, codes = _scene([1.0, 1.0, 1.0])
    look = probs.copy()
    look[:, :, 150:] = 0                                     # pixels the first look did not see
    calls = []

    def run(a):
        calls.append("run")
        return look

    def complete(a):
        calls.append("complete")
        return probs

    out, arr, rep = auto_balance(img, codes, REF, run, complete=complete)
    assert calls == ["run", "complete"] and out is probs and not rep.applied and rep.drift < 1
    calls.clear()
    cast = np.array([1.0, 0.85, 0.55])
    img, probs, codes = _scene(cast)
    out, arr, rep = auto_balance(img, codes, REF, run, complete=complete, threshold=6.0)
    assert calls == ["run", "run", "complete"] and rep.applied and out is probs
    assert np.allclose(rep.gains * cast, 1.0, atol=0.03)
    with pytest.raises(ValueError, match="together"):
        auto_balance(img, codes, REF, run, first=probs, complete=complete)


class _Counting(_Pointwise):
    """A per-pixel network that counts the tiles it is given."""

    def __init__(self, k):
        super().__init__(k)
        self.tiles = 0

    def forward(self, x):
        self.tiles += x.shape[0]
        return super().forward(x)


def test_the_colour_check_runs_no_tile_twice_when_the_colours_pass():
    from core.segmentation.infer import _Blend, predict_balanced

    rng = np.random.default_rng(6)
    noise = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    # a dark and a bright mineral under a yellow filter: a network that tells them apart by brightness finds both
    # again after the balance, so the balanced pass is kept
    cast = np.zeros((150, 230, 3), np.uint8)
    cast[:, :115] = _cast(REF[0], [1.0, 0.85, 0.55])
    cast[:, 115:] = _cast(REF[6], [1.0, 0.85, 0.55])
    ref = {"0": REF[0].tolist(), "6": REF[6].tolist()}
    # (image, threshold): colours pass; balanced and kept (a balance that is not kept runs the first look a third
    # time: test_auto_balance_keeps_the_image_as_it_came_when_the_balance_makes_the_colours_worse)
    for img, threshold, outcome in ((noise, 1e9, "pass"), (cast, 0.0, "balanced")):
        net = _Counting(2).eval()
        if img is cast:
            with torch.no_grad():
                net.conv.weight[:] = torch.tensor([[-1.0] * 3, [1.0] * 3]).reshape(2, 3, 1, 1)
                net.conv.bias.zero_()
        m = SegmentationModel(net=net, config=_config([0, 6], tile=[64, 96], reference_colors=ref,
                                                          auto_white_balance={"threshold": threshold}),
                              device=torch.device("cpu"))
        blend = _Blend(m, img)
        total, first = len(blend.jobs), len(blend.check_jobs())
        probs, used, rep, _ = predict_balanced(m, img, refine=False)
        assert rep.applied is (outcome == "balanced"), rep
        assert net.tiles == {"pass": total, "balanced": total + first}[outcome]
        assert (used is img) is (outcome != "balanced")
        assert np.allclose(probs, predict_scaled(m, used, refine=False), atol=1e-6)


def test_cast_check_needs_no_labels():
    """A cast that the labels would explain away is caught from the bright pixels' chromaticity alone."""
    rng = np.random.default_rng(5)
    shots = [np.clip(_cast(np.array([178.0, 160, 127]) * rng.uniform(0.97, 1.03, 3), [1, 1, 1]) + rng.normal(0, 2, (30, 30, 3)),
                     0, 255).astype(np.uint8) for _ in range(12)]
    stats = chromaticity_statistics(shots)
    normal = shots[0]
    assert cast_gains(normal, stats, 3.0)[0] is None
    yellow = _cast(normal.astype(float), [1.0, 0.9, 0.5]).astype(np.uint8)
    gains, chroma = cast_gains(yellow, stats, 3.0)
    assert gains is not None and gains[2] > 1.6 and gains[1] == 1.0
    # the cast is corrected before the first pass: run sees the corrected photograph, and the report says so
    img, probs, codes = _scene([1.0, 0.9, 0.5])
    stats_scene = {"mean": bright_chromaticity(_scene([1, 1, 1])[0]).tolist(), "std": [0.02, 0.02]}
    seen = []
    out, arr, rep = auto_balance(img, codes, REF, lambda a: seen.append(a) or probs, chromaticity=stats_scene,
                                 threshold=50.0)
    assert rep.cast is not None and len(seen) == 1 and arr is seen[0] and not rep.applied
    assert np.allclose(bright_chromaticity(arr), stats_scene["mean"], atol=0.02)
    assert rep.as_dict()["cast"] == [round(float(g), 4) for g in rep.cast]


def test_black_photographs_and_black_channels_have_no_cast_to_correct():
    """No chromaticity can be measured where the bright pixels are black in a channel: the cast check stands
    aside instead of dividing by zero, and the colour check says why it did not balance."""
    stats = {"mean": [1.0, 0.8], "std": [0.02, 0.02]}
    black = np.zeros((40, 60, 3), np.uint8)
    no_red = np.dstack([np.zeros((40, 60), np.uint8), np.full((40, 60), 150, np.uint8), np.full((40, 60), 90, np.uint8)])
    for img in (black, no_red):
        assert not np.isfinite(bright_chromaticity(img)).any()
        assert cast_gains(img, stats, 3.0)[0] is None
    probs = np.zeros((4, 40, 60), np.float32)
    probs[0] = 0.9
    out, arr, rep = auto_balance(no_red, [0, 1, 6, 8], REF, lambda a: pytest.fail("must not run again"),
                                 first=probs, chromaticity=stats, threshold=0.0)
    assert not rep.applied and rep.cast is None and out is probs and arr is no_red
    assert rep.note.startswith("not balanced") and "marked" not in rep.note
    # too few sure minerals with a reference colour: said of the first pass, without the advice to mark more
    # minerals that the fit gives a user marking by hand
    grey = np.full((40, 60, 3), 120, np.uint8)
    five = np.zeros((5, 40, 60), np.float32)
    five[1, :, :30] = 0.5                                   # chalcopyrite, not sure: measured for the colour check
    five[4, :, 30:] = 0.9                                   # magnetite, sure, but without a reference colour
    rep = auto_balance(grey, [0, 1, 6, 8, 3], REF, lambda a: pytest.fail("must not run again"), first=five,
                       threshold=0.0)[2]
    assert not rep.applied and "the first pass recognises 0" in rep.note, rep.note
    assert "mark more" not in rep.note and "annotation" not in rep.note
    probs[0] = 0.5                                          # nothing sure
    rep = auto_balance(no_red, [0, 1, 6, 8], REF, lambda a: pytest.fail("must not run again"), first=probs,
                       threshold=0.0)[2]
    assert rep.note == "not balanced: no pixel is recognised with a probability above 0.8"
    # a training set with a black photograph among ordinary ones keeps the others' statistics
    shot = np.full((30, 30, 3), (178, 160, 127), np.uint8)
    assert chromaticity_statistics([shot, black])["n_images"] == 1
    assert chromaticity_statistics([black]) is None


def _model(**kw):
    return SegmentationModel(net=_Pointwise(2).eval(), config=_config([0, 6], **kw), device=torch.device("cpu"))


def test_predict_follows_the_config():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    plain = _model()
    assert predict(plain, img).colour is None
    assert balance_settings(_model(auto_white_balance=True).config) is None   # no reference colours: off
    ref = {"0": [45.0, 45, 42], "6": [179.0, 165, 145]}
    m = _model(reference_colors=ref, auto_white_balance={"threshold": 1e9}, refine={"radius": 4})
    pred = predict(m, img)
    assert pred.colour is not None and not pred.colour.applied and np.isfinite(pred.colour.drift)
    assert predict(m, img, balance=False).colour is None
    # a saturated photograph has no usable colours: the report says so without a NaN (it goes into JSON)
    white = predict(m, np.full((40, 50, 3), 255, np.uint8)).colour
    assert white.as_dict()["drift"] is None and not white.applied
    # refinement changes the probabilities, and switching it off gives the network's own
    raw = predict_scaled(m, img, refine=False)
    assert np.allclose(raw, predict_scaled(plain, img), atol=1e-6)
    assert not np.allclose(predict_scaled(m, img), raw, atol=1e-3)


def test_predict_refines_by_the_chosen_method_after_the_minerals_are_chosen():
    from core.segmentation.infer import prepare_input
    from core.segmentation.refine import resolve_refine

    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    m = _model(refine={"method": "crf", "iterations": 2})
    raw = predict(m, img, refine="none").probs.astype(np.float32)
    arr = prepare_input(m, img)
    assert np.allclose(raw, predict_scaled(m, arr, refine=False), atol=1e-3)
    said = []
    crf = predict(m, img, progress=lambda f, msg: said.append(msg)).probs.astype(np.float32)  # the config's CRF
    assert said[-1] == "refining the outlines (crf), 100 %", said  # the step's own progress, block by block
    assert np.allclose(crf, crf_refine(predict_scaled(m, arr, refine=False), arr, iterations=2), atol=1e-3)
    assert not np.allclose(crf, raw, atol=1e-2)
    guided = predict(m, img, refine="guided").probs.astype(np.float32)
    assert np.allclose(guided, guided_refine(predict_scaled(m, arr, refine=False), arr), atol=1e-3)
    # the config's own settings are used when it asks for the same method; otherwise that method's defaults
    assert resolve_refine(m.config, "crf")["iterations"] == 2
    assert resolve_refine(m.config, None)["iterations"] == 2 and resolve_refine(m.config, False) is None
    assert resolve_refine(_model().config, "crf") == {"method": "crf", **REFINE_METHODS["crf"]}
    with pytest.raises(ValueError, match="valid methods: guided, crf, none"):
        predict(m, img, refine="bilateral")
    # with the user's minerals, the refinement sees only those: a ruled-out mineral stays at zero
    only = predict(m, img, minerals=[6]).probs.astype(np.float32)
    assert float(only[0].max()) == 0 and np.allclose(only[1], 1)
