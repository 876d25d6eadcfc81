"""Annotation: propagation, synthetic strokes, uncertainty, fine-tuning, CLI, page."""
from __future__ import annotations

import numpy as np
import pytest

from core.annotation import (METHODS, compute_superpixels, propagate, select_regions, strokes_to_mask,
                             synthetic_scribbles, to_uint8, uncertainty_map)


def _small(demo_image, demo_mask, f=0.5):
    import cv2

    h, w = demo_mask.shape
    size = (int(w * f), int(h * f))
    return (cv2.resize(demo_image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(demo_mask, size, interpolation=cv2.INTER_NEAREST))


def _synthetic():
    """Three flat-coloured regions with noise: the truth is known exactly."""
    rng = np.random.default_rng(0)
    truth = np.zeros((240, 320), np.uint8)
    truth[:, 110:220] = 6
    truth[60:180, 220:] = 2
    colors = {0: (40, 40, 45), 6: (230, 220, 150), 2: (200, 200, 205)}
    img = np.zeros((240, 320, 3), np.float32)
    for c, col in colors.items():
        img[truth == c] = col
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


@pytest.mark.parametrize("method", ["multiscale", "slic", "felzenszwalb", "geodesic"])
def test_flat_regions_recovered(method):
    img, truth = _synthetic()
    scr = synthetic_scribbles(truth, min_area=100, width=3)
    assert 0 < (scr != 255).mean() < 0.05
    assert np.all(scr[scr != 255] == truth[scr != 255])
    res = propagate(img, scr, method=method)
    assert (res.mask == truth).mean() > 0.97
    assert res.classes == [0, 2, 6]


def test_real_demo_accuracy(demo_image, demo_mask):
    img, gt = _small(demo_image, demo_mask)
    scr = synthetic_scribbles(gt, min_area=150, width=3)
    res = propagate(img, scr)
    lab = gt != 255
    assert (res.mask[lab] == gt[lab]).mean() > 0.80
    nearest = propagate(img, scr, method="nearest")
    assert (res.mask[lab] == gt[lab]).mean() > (nearest.mask[lab] == gt[lab]).mean()


def test_prior_kept_away_from_strokes():
    img, truth = _synthetic()
    prior = np.full(truth.shape, 6, np.uint8)
    scr = np.full(truth.shape, 255, np.uint8)
    scr[100:140, 20:60] = 0
    res = propagate(img, scr, prior=prior)
    assert (res.mask[:, :100] == 0).mean() > 0.9  # the stroked region is corrected
    assert (res.mask[:, 120:210] == 6).all()  # far, different colour: prior kept
    assert res.changed[:, :100].mean() > 0.9 and not res.changed[:, 120:210].any()


def test_superpixels_cached_and_incremental():
    img, truth = _synthetic()
    a = compute_superpixels(img)
    b = compute_superpixels(img.copy())
    assert a is b
    assert compute_superpixels(np.ascontiguousarray(img[:, ::-1])) is not a  # other pixels, another hierarchy
    assert a.atoms.max() + 1 == a.n_atoms and a.features.shape == (a.n_atoms, 5)
    assert a.work_shape == a.shape == truth.shape and a.sizes.sum() == truth.size
    assert np.array_equal(a.sizes, np.bincount(a.atoms.ravel()))
    # every atom lies inside one of the three flat regions: none crosses a boundary
    codes = np.array([0, 2, 6])
    inside = np.stack([np.bincount(a.atoms.ravel(), weights=(truth == c).ravel(), minlength=a.n_atoms)
                       for c in codes], 1)
    assert (inside.max(1) == a.sizes).all()
    # so the atoms' mean L* (feature 0), weighted by their sizes, is each region's mean L*
    import cv2

    light = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]
    region = codes[inside.argmax(1)]
    for c in codes:
        sel = region == c
        assert np.average(a.features[sel, 0], weights=a.sizes[sel]) == pytest.approx(light[truth == c].mean(),
                                                                                     abs=1e-3)
    # adjacent pairs once each, smaller atom first; across the boundaries they join each pair of regions that
    # touch: 0 | 6 and 6 | 2 side by side (left and right), 2 over 0 (above and below)
    assert (a.edges[:, 0] < a.edges[:, 1]).all() and len(np.unique(a.edges, axis=0)) == len(a.edges)
    across = {tuple(sorted(r)) for r in zip(region[a.edges[:, 0]].tolist(), region[a.edges[:, 1]].tolist())}
    assert across == {(0, 0), (2, 2), (6, 6), (0, 6), (2, 6), (0, 2)}
    assert set(a.levels) == {"felzenszwalb-coarse", "slic-coarse", "felzenszwalb-fine", "slic-fine"}


def test_strokes_to_mask():
    m = strokes_to_mask((50, 60), [(6, 3, [(5, 10), (50, 10)]), (2, 5, [(30, 40)])])
    assert m[10, 5:51].tolist() == [6] * 46
    assert m[40, 30] == 2 and m[0, 0] == 255


def test_bad_scribbles_rejected():
    img, truth = _synthetic()
    with pytest.raises(ValueError, match="empty"):
        propagate(img, np.full(truth.shape, 255, np.uint8))
    with pytest.raises(ValueError, match="must match"):
        propagate(img, np.zeros((10, 10), np.uint8))
    bad = np.full(truth.shape, 255, np.uint8)
    bad[0, 0] = 77
    with pytest.raises(ValueError, match="unknown codes"):
        propagate(img, bad)
    with pytest.raises(ValueError, match="valid names"):
        propagate(img, truth, method="nope")
    assert "multiscale" in METHODS


def test_uncertainty_scores_known_values():
    p = np.zeros((3, 2, 2), np.float32)
    p[:, 0, 0] = (1.0, 0.0, 0.0)  # certain
    p[:, 0, 1] = (1 / 3, 1 / 3, 1 / 3)  # uniform
    p[:, 1, 0] = (0.5, 0.5, 0.0)  # tie of two
    p[:, 1, 1] = (0.8, 0.1, 0.1)
    e = uncertainty_map(p, score="entropy")
    assert e[0, 0] == pytest.approx(0, abs=1e-4) and e[0, 1] == pytest.approx(1, abs=1e-4)
    m = uncertainty_map(p, score="margin")
    assert m[0, 0] == pytest.approx(0) and m[1, 0] == pytest.approx(1) and m[1, 1] == pytest.approx(0.3)
    # entropy / log 3: the tie of two is log 2 / log 3, (0.8, 0.1, 0.1) is -(0.8 log 0.8 + 0.2 log 0.1) / log 3
    assert e[1, 0] == pytest.approx(np.log(2) / np.log(3), abs=1e-4)
    assert e[1, 1] == pytest.approx(-(0.8 * np.log(0.8) + 0.2 * np.log(0.1)) / np.log(3), abs=1e-4)
    assert m[0, 1] == pytest.approx(1)
    lc = uncertainty_map(p, score="least-confidence")
    # (1 - p1) scaled by K / (K - 1) = 1.5, so that the uniform pixel scores 1
    assert lc[0, 0] == pytest.approx(0) and lc[0, 1] == pytest.approx(1, abs=1e-4)
    assert lc[1, 0] == pytest.approx(0.75) and lc[1, 1] == pytest.approx(0.3)
    up = uncertainty_map(p.astype(np.float16), shape=(20, 30))
    assert up.shape == (20, 30) and up.dtype == np.float32
    assert to_uint8(m)[0].tolist() == [0, 255] and to_uint8(m)[1, 1] in (76, 77)


def test_unsure_share_counts_the_pixels_with_a_small_margin():
    from core.annotation.uncertainty import unsure_share

    p = np.zeros((3, 2, 2), np.float32)
    p[:, 0, 0] = (1.0, 0.0, 0.0)  # margin 1: sure
    p[:, 0, 1] = (1 / 3, 1 / 3, 1 / 3)  # margin 0: unsure
    p[:, 1, 0] = (0.7, 0.3, 0.0)  # margin 0.4: unsure
    p[:, 1, 1] = (0.8, 0.1, 0.1)  # margin 0.7: sure
    assert unsure_share(p, step=1) == 0.5
    assert unsure_share(p, step=1, threshold=0.65) == 0.25  # margin below 0.35: the uniform pixel only
    assert unsure_share(p.astype(np.float16)) == 0.0  # every 2nd row and column: the sure pixel (0, 0) alone
    assert unsure_share(np.zeros((3, 0, 0), np.float32)) == 0.0


def test_region_scores_rank_a_doubtful_grain_above_sharp_edges():
    # class 0 everywhere except a grain of class 1 (rows 10-29, cols 10-29) that the model doubts throughout,
    # and a confident grain of class 2 (cols 60-99) whose one-pixel edge is a tie
    p = np.zeros((3, 40, 100), np.float32)
    p[0] = 0.95
    p[1] = 0.05
    p[:, 10:30, 10:30] = np.array([0.35, 0.6, 0.05])[:, None, None]
    p[:, :, 60:] = np.array([0.02, 0.03, 0.95])[:, None, None]
    p[:, :, 60] = np.array([0.5, 0.0, 0.5])[:, None]
    m = uncertainty_map(p, score="margin")
    assert m[20, 60] > m[20, 20]  # per pixel, the tied edge is the most uncertain
    r = uncertainty_map(p, score="region-margin")
    assert r[20, 20] == pytest.approx(0.75, abs=1e-5)  # the whole doubtful grain keeps its mean score
    assert r[20, 20] > r[20, 60] and r[20, 20] > r[5, 5]
    sel = select_regions(r, fraction=0.1).mask
    assert sel[10:30, 10:30].all() and sel.sum() == 400
    assert uncertainty_map(p, score="region-entropy")[20, 20] > uncertainty_map(p, score="region-entropy")[20, 80]


def test_select_regions_fraction():
    u = np.zeros((100, 200), np.float32)
    u[10:30, 10:60] = 0.9  # 1000 px
    u[50:80, 100:150] = 0.5  # 1500 px
    r = select_regions(u, fraction=0.05)
    assert r.mask.sum() == 1000 and r.mask[10:30, 10:60].all()
    assert r.boxes[0] == {"x": 10, "y": 10, "width": 50, "height": 20, "area": 1000, "mean": pytest.approx(0.9)}
    r2 = select_regions(u, fraction=0.125)
    assert r2.mask.sum() == 2500 and len(r2.boxes) == 2
    with pytest.raises(ValueError):
        select_regions(u, fraction=0)


def _tiny_model(tmp_path, classes=(0, 2, 6)):
    import torch

    from core.segmentation import create_model, load_model, save_model

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", classes=len(classes))
    cfg = {"architecture": "unet", "encoder": "resnet18", "in_channels": 3, "classes": list(classes), "scale": 1.0,
           "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "tile": 128}
    save_model(tmp_path / "tiny", net, cfg)
    return load_model(tmp_path / "tiny", device="cpu")


def test_finetune_learns_annotation(tmp_path):
    import torch

    from core.annotation.finetune import finetune
    from core.segmentation import predict

    torch.set_num_threads(1)
    img, truth = _synthetic()
    model = _tiny_model(tmp_path)
    before = [p.detach().clone() for p in model.net.parameters()]
    acc0 = (predict(model, img).labels == truth).mean()
    model.config["assemblage"] = {"exclusive": [[2, 6]], "n_images": 1}  # the annotation shows them together
    tuned = finetune(model, [img], [truth], iterations=40, batch_size=4, patch=96, lr=3e-3, seed=1)
    acc1 = (predict(tuned, img).labels == truth).mean()
    assert all(torch.equal(a, b) for a, b in zip(before, model.net.parameters()))  # original untouched
    assert tuned.config["finetune"]["iterations"] == 40 and tuned.name == "tiny-finetuned"
    assert tuned.config["assemblage"]["exclusive"] == [] and model.config["assemblage"]["exclusive"] == [[2, 6]]
    assert acc1 > max(acc0, 0.8)
    with pytest.raises(ValueError):
        finetune(model, [img], [np.full(truth.shape, 255, np.uint8)])


def test_cli_annotate_and_uncertainty(tmp_path):
    from core import io as cio
    from core.cli import main

    img, truth = _synthetic()
    cio.write_image(tmp_path / "img.png", img, pixel_um=0.138)
    cio.write_mask(tmp_path / "scr.png", synthetic_scribbles(truth, min_area=100, width=3))
    assert main(["annotate", str(tmp_path / "img.png"), "--scribbles", str(tmp_path / "scr.png"),
                 "--out", str(tmp_path / "out.png")]) == 0
    out = cio.read_mask(tmp_path / "out.png")
    assert (out == truth).mean() > 0.97
    assert cio.read_pixel_size(tmp_path / "out.png") == 0.138  # the photograph's, for `stats`
    assert main(["annotate", str(tmp_path / "img.png"), "--scribbles", str(tmp_path / "scr.png"),
                 "--out", str(tmp_path / "o.png"), "--method", "bogus"]) == 2
    _tiny_model(tmp_path)
    assert main(["uncertainty", str(tmp_path / "img.png"), "--out", str(tmp_path / "u.png"),
                 "--model", str(tmp_path / "tiny"), "--fraction", "0.2", "--device", "cpu"]) == 0
    u = cio.read_image(tmp_path / "u.png")
    reg = cio.read_mask(tmp_path / "u_regions.png", allow_unknown=True)
    assert u.shape[:2] == truth.shape and abs((reg == 255).mean() - 0.2) < 0.01
    assert main(["uncertainty", str(tmp_path / "img.png"), "--out", str(tmp_path / "u.png"),
                 "--model", str(tmp_path / "none")]) == 2
