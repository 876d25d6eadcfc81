"""Stitching: known answers from real images cut into tiles with recorded offsets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.stitching import (MATCHERS, MODELS, PairMatch, TileStack, adjust, apply_flat_field, candidate_pairs,
                            estimate_photometric, flat_field_gain, parse_grid, phase_correlate, read_lens, register,
                            render, stitch, undistort)
from core.stitching.synthetic import make_tile_set, position_rmse


@pytest.fixture(scope="module")
def tile_set(demo_image):
    return make_tile_set(demo_image, grid=(3, 3), seed=11)


@pytest.fixture(scope="module")
def stitched(tile_set):
    return stitch(tile_set.tiles, grid=tile_set.grid)


@pytest.fixture(scope="module")
def aligned(stitched):
    return stitched.alignment


@pytest.fixture(scope="module")
def small_set(demo_image):
    return make_tile_set(demo_image, grid=(2, 2), seed=12)


def _shapes(ts):
    return [t.shape[:2] for t in ts.tiles]


@pytest.mark.parametrize("shift", [(3.3, -1.7), (0.25, 0.6), (-7.9, 4.45)])
def test_phase_correlate_subpixel(demo_image, shift):
    import cv2

    grey = cv2.cvtColor(demo_image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    moved = cv2.warpAffine(grey, m, grey.shape[::-1], flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP)
    dx, dy, q = phase_correlate(grey[300:556, 400:656], moved[300:556, 400:656])
    assert abs(dx - shift[0]) < 0.05 and abs(dy - shift[1]) < 0.05
    assert q > 0.5


def test_register_grid_subpixel(tile_set, aligned):
    rmse = position_rmse(aligned.transforms, tile_set.truth, _shapes(tile_set))
    corners = position_rmse(aligned.transforms, tile_set.truth, _shapes(tile_set), points="corners")
    assert rmse < 0.2, rmse
    assert corners < 0.3, corners
    assert aligned.rmse_px < 0.3
    assert len(aligned.pairs) >= 10


def test_register_without_grid_finds_overlaps(demo_image):
    ts = make_tile_set(demo_image, grid=(2, 3), seed=13)
    al = register(ts.tiles)
    assert position_rmse(al.transforms, ts.truth, _shapes(ts)) < 0.3
    found = {(p.i, p.j) for p in al.pairs}
    grid_pairs = {(i, j) for i, j, _ in candidate_pairs(6, (2, 3))}
    assert len(found & grid_pairs) >= 6
    # tiles two steps apart do not overlap and must not be paired
    assert (0, 2) not in found and (3, 5) not in found


def test_panorama_keeps_pixel_size_and_matches_source(demo_image, tile_set, stitched):
    import cv2

    res = stitched
    pano = res.panorama
    w, h = res.alignment.size
    assert pano.shape == (h, w, 3)
    # the extent of the true tile footprints, in source pixels
    pts = []
    for hk, (th, tw) in zip(tile_set.truth, _shapes(tile_set)):
        q = np.array([[0, 0, 1], [tw - 1, 0, 1], [0, th - 1, 1], [tw - 1, th - 1, 1]], float)
        pts.append((q @ hk.T)[:, :2])
    pts = np.vstack(pts)
    true_w, true_h = np.ptp(pts, axis=0) + 1
    assert abs(w - true_w) < 4 and abs(h - true_h) < 4
    # warp the source into the panorama frame with the recovered map and compare pixels
    src_to_pano = res.alignment.transforms[4] @ np.linalg.inv(tile_set.truth[4])
    ref = cv2.warpAffine(demo_image, src_to_pano[:2], (w, h), flags=cv2.INTER_LINEAR)
    inner = (slice(h // 8, h - h // 8), slice(w // 8, w - w // 8))
    a = pano[inner].astype(np.float32).mean(axis=2)
    b = ref[inner].astype(np.float32).mean(axis=2)
    r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert r > 0.97, r
    assert np.mean(np.abs(a / a.mean() - b / b.mean())) < 0.06


def test_photometric_recovers_gains_and_vignetting(demo_image):
    ts = make_tile_set(demo_image, grid=(2, 3), vignetting=(0.15, 0.15), exposure=0.1, noise=0, jpeg=None, seed=5)
    stack = TileStack(ts.tiles)
    al = register(ts.tiles, grid=ts.grid, stack=stack)
    ph = estimate_photometric(stack, al)
    est = np.exp(ph.log_gain.mean(axis=1))
    est /= est.mean()
    true = ts.gains / ts.gains.mean()
    assert np.max(np.abs(est - true)) < 0.03
    # log V(1) = a + b should be close to log(1 - 0.15)
    assert abs(ph.vignetting.sum() - np.log(0.85)) < 0.05


def test_banded_rendering_matches_single_band(tile_set, aligned):
    stack = TileStack(tile_set.tiles)
    one = render(stack, aligned, band_rows=100_000)
    many = render(stack, aligned, band_rows=300)
    diff = np.abs(one.astype(np.int16) - many.astype(np.int16))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 6


@pytest.mark.parametrize("model", ["translation", "affine"])
def test_models(tile_set, model):
    al = register(tile_set.tiles, grid=tile_set.grid, model=model)
    tol = 1.5 if model == "translation" else 0.3  # the tiles are rotated by up to 0.15°
    assert position_rmse(al.transforms, tile_set.truth, _shapes(tile_set)) < tol


@pytest.mark.parametrize("matcher", ["sift", "orb"])
def test_feature_matchers(small_set, matcher):
    al = register(small_set.tiles, grid=small_set.grid, matcher=matcher)
    assert position_rmse(al.transforms, small_set.truth, _shapes(small_set)) < 0.3
    if matcher == "sift":
        raw = register(small_set.tiles, grid=small_set.grid, matcher=matcher, refine=False)
        assert position_rmse(raw.transforms, small_set.truth, _shapes(small_set)) < 2.0


def test_learned_matchers_need_local_weights(tile_set, tmp_path):
    with pytest.raises(ValueError, match="weight file"):
        register(tile_set.tiles[:2], matcher="loftr")
    with pytest.raises(ValueError, match="not found"):
        register(tile_set.tiles[:2], matcher="disk_lightglue", weights=f"{tmp_path}/a.pth,{tmp_path}/b.pth")


def test_registries_and_errors(tile_set):
    assert {"phase", "sift", "orb", "loftr", "disk_lightglue"} <= set(MATCHERS.names())
    assert set(MODELS.names()) == {"translation", "similarity", "affine"}
    with pytest.raises(ValueError, match="valid names"):
        register(tile_set.tiles, matcher="surf")
    with pytest.raises(ValueError, match="grid"):
        parse_grid("3by3")
    assert parse_grid("2x4") == (2, 4) and parse_grid("") is None
    with pytest.raises(ValueError, match="holds 4 tiles"):
        register(tile_set.tiles, grid=(2, 2))
    with pytest.raises(ValueError, match="at least two"):
        register(tile_set.tiles[:1])


def test_disconnected_tiles_are_reported():
    pm = PairMatch(0, 1, np.array([[10.0, 10.0]]), np.array([[0.0, 0.0]]), 1.0, "phase")
    with pytest.raises(ValueError, match=r"^tile 3 could not be matched to the rest"):
        adjust([pm], [(100, 100)] * 3)


def test_unrelated_tiles_fail_cleanly(demo_items):
    from core.io import read_image

    a = read_image(demo_items[0].image)[:400, :400]
    b = np.ascontiguousarray(read_image(demo_items[1].image)[-400:, -400:][::-1])
    with pytest.raises(ValueError, match="could not be matched"):
        register([a, b])


def test_flat_field_divide_recovers_flat_image(demo_image):
    h, w = demo_image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    vig = (1 - 0.25 * r2).astype(np.float32)
    blank = np.full((h, w, 3), 200.0, np.float32) * vig[..., None]
    shaded = np.clip(demo_image.astype(np.float32) * vig[..., None], 0, 255).astype(np.uint8)
    fixed = apply_flat_field(shaded, flat_field_gain(blank))
    centre = demo_image[h // 2 - 50:h // 2 + 50, w // 2 - 50:w // 2 + 50].astype(float).mean()
    fixed_centre = fixed[h // 2 - 50:h // 2 + 50, w // 2 - 50:w // 2 + 50].astype(float).mean()
    # after the divide the corners keep the source's ratio to the centre
    ratio_src = demo_image[:100, :100].astype(float).mean() / centre
    ratio_fixed = fixed[:100, :100].astype(float).mean() / fixed_centre
    assert abs(ratio_src - ratio_fixed) < 0.03
    with pytest.raises(ValueError, match="black"):
        flat_field_gain(np.zeros((20, 20, 3)))


def test_lens_file(tmp_path, demo_image):
    p = tmp_path / "lens.json"
    p.write_text(json.dumps({"fx": 1000, "fy": 1000, "cx": 800, "cy": 600, "dist_coeffs": [0, 0, 0, 0, 0]}))
    lens = read_lens(p)
    out = undistort(demo_image, lens)
    assert np.abs(out.astype(int) - demo_image.astype(int)).mean() < 1.0
    # barrel distortion k1 = 0.1: the point 0.5 focal lengths right of the centre (x = 1300) is photographed at
    # 0.5 (1 + 0.1 * 0.5²) = 0.5125, x = 1312.5; undistorted, a spot there comes back to (1300, 600)
    spot = np.zeros((1200, 1600, 3), np.uint8)
    spot[598:603, 1310:1316] = 200
    for fields in ({"fx": 1000, "fy": 1000, "cx": 800, "cy": 600},
                   {"camera_matrix": [[1000, 0, 800], [0, 1000, 600], [0, 0, 1]]}):
        p.write_text(json.dumps({**fields, "dist_coeffs": [0.1, 0, 0, 0, 0]}))
        back = undistort(spot, read_lens(p)).astype(float).mean(axis=2)
        ys, xs = np.nonzero(back)
        w = back[ys, xs]
        assert np.average(xs, weights=w) == pytest.approx(1300, abs=0.1)
        assert np.average(ys, weights=w) == pytest.approx(600, abs=0.1)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fx": 1}))
    with pytest.raises(ValueError, match="dist_coeffs"):
        read_lens(bad)
    with pytest.raises(ValueError, match="not found"):
        read_lens(tmp_path / "missing.json")
