"""Colour calibration: known matrices recovered, CIEDE2000 falls, every method runs, clear errors."""
import json

import numpy as np
import pytest

from core.calibration import (METHODS, apply_correction, class_means, delta_e2000, fit_correction, from_linear,
                              linear_to_lab, mean_delta_e, to_linear)
from core.calibration.flatfield import apply_flat_field, flat_field_from_reference, flat_field_from_series
from core.calibration.marks import hex_color, strokes_to_mask
from core.calibration.series import calibrate_images
from core.calibration.simulate import OPTICS, partial_annotation, simulate_optics, vignette


@pytest.fixture(scope="module")
def small(demo_items):
    """The three demo crops at quarter size, with their full masks."""
    from core.io import read_image, read_mask

    out = []
    for it in demo_items:
        out.append((np.ascontiguousarray(read_image(it.image)[::4, ::4]),
                    np.ascontiguousarray(read_mask(it.mask)[::4, ::4])))
    return out


def _reference(pairs):
    """Mean sRGB (0-255) per code over full masks, as a model's config stores it."""
    s, n = {}, {}
    for im, m in pairs:
        cm = class_means(im, m, min_pixels=1, max_saturated=1.0)
        for c, mean, k in zip(cm.codes.tolist(), cm.means, cm.counts.tolist()):
            s[c] = s.get(c, 0) + mean * 255 * k
            n[c] = n.get(c, 0) + k
    return {c: s[c] / n[c] for c in s}


def _patches(colors, side=40):
    """An image of flat colour patches and its full mask (codes 0..K-1)."""
    k = len(colors)
    img = np.zeros((side, side * k, 3), np.uint8)
    mask = np.zeros((side, side * k), np.uint8)
    for i, c in enumerate(colors):
        img[:, i * side:(i + 1) * side] = c
        mask[:, i * side:(i + 1) * side] = i
    return img, mask


VIVID = [(200, 60, 50), (60, 180, 70), (50, 70, 200), (220, 210, 90), (90, 200, 210), (200, 90, 200),
         (128, 128, 128)]
COLORS = [(46, 44, 42), (177, 159, 126), (140, 136, 129), (110, 105, 101), (134, 111, 97), (175, 158, 140),
          (105, 103, 98)]


def test_ciede2000_matches_colour_science():
    import colour

    rng = np.random.default_rng(0)
    a = rng.uniform([0, -60, -60], [100, 60, 60], (200, 3))
    b = a + rng.normal(0, 8, a.shape)
    np.testing.assert_allclose(delta_e2000(a, b), colour.delta_E(a, b, method="CIE 2000"), atol=1e-6)
    # Sharma et al. 2005 test pair 1
    assert delta_e2000([50, 2.6772, -79.7751], [50, 0, -82.7485]) == pytest.approx(2.0425, abs=1e-4)


def test_linearisation_round_trip_and_lab_white():
    v = np.linspace(0, 1, 101)
    for lin in ("srgb", "gamma2.2"):
        np.testing.assert_allclose(from_linear(to_linear(v, linearisation=lin), linearisation=lin), v, atol=1e-9)
    np.testing.assert_allclose(linear_to_lab(np.ones(3)), [100, 0, 0], atol=1e-4)


def test_known_diagonal_matrix_recovered_by_white_balance():
    img, mask = _patches(COLORS[:3])
    ref = {c: np.array(COLORS[c], float) for c in range(3)}
    gains = np.array([0.7, 0.9, 1.2])
    changed = apply_correction(img, np.vstack([np.diag(gains), np.zeros((1, 3))]), out_dtype="float32")
    corr = fit_correction(class_means(changed, mask), ref, method="white-balance")
    np.testing.assert_allclose(np.diag(corr.matrix[:3]), 1 / gains, rtol=2e-3)
    assert corr.de_after.max() < 0.2


@pytest.mark.parametrize("method", ["vandermonde", "ccm-de2000", "cheung2004"])
def test_known_colour_matrix_recovered(method):
    img, mask = _patches(VIVID)  # a matrix is identifiable only from colours that span the gamut
    ref = {c: np.array(VIVID[c], float) for c in range(len(VIVID))}
    true = np.array([[0.85, 0.10, 0.02], [0.08, 0.80, 0.10], [0.03, 0.12, 0.95], [0, 0, 0]])
    changed = apply_correction(img, true, out_dtype="float32")
    corr = fit_correction(class_means(changed, mask), ref, method=method)
    composed = np.vstack([true[:3] @ corr.matrix[:3], true[3] @ corr.matrix[:3] + corr.matrix[3]])
    tol = 0.03 if method != "ccm-de2000" else 0.06  # ccm-de2000 is pulled towards its white-balance start
    np.testing.assert_allclose(composed, np.vstack([np.eye(3), np.zeros((1, 3))]), atol=tol)
    assert corr.de_after.mean() < 1.0 < corr.de_before.mean()
    back = apply_correction(changed, corr, out_dtype="uint8")
    assert np.abs(back.astype(int) - img).max() <= (2 if method != "ccm-de2000" else 6)


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("optics", OPTICS.names())
def test_every_method_lowers_ciede2000_on_real_image(small, method, optics):
    ref = _reference(small)
    im, m = small[0]
    changed = simulate_optics(im, optics)
    ann = partial_annotation(m, fraction=0.3, seed=1)
    corr = fit_correction(class_means(changed, ann), ref, method=method)
    out = apply_correction(changed, corr)
    assert out.shape == im.shape and out.dtype == np.uint8
    before, _ = mean_delta_e(changed, ann, ref)
    after, _ = mean_delta_e(out, ann, ref)
    assert after < before
    assert corr.de_after.mean() < corr.de_before.mean()
    json.dumps(corr.as_dict())


def test_16bit_input_gives_the_8bit_answer(small):
    ref = _reference(small)
    im, m = small[1]
    im16 = im.astype(np.uint16) * 257
    ann = partial_annotation(m, fraction=0.3, seed=2)
    c8 = fit_correction(class_means(im, ann), ref)
    c16 = fit_correction(class_means(im16, ann), ref)
    np.testing.assert_allclose(c16.matrix, c8.matrix, atol=1e-4)
    out16 = apply_correction(im16, c16)
    assert out16.dtype == np.uint16
    out8 = apply_correction(im, c8)
    assert np.abs((out16 / 257.0) - out8).max() <= 1.01


def test_bad_annotations_fail_clearly(small):
    ref = _reference(small)
    im, m = small[0]
    with pytest.raises(ValueError, match="marks no pixels"):
        class_means(im, np.full(m.shape, 255, np.uint8))
    with pytest.raises(ValueError, match="must match its image"):
        class_means(im, m[:-1])
    one = np.where(m == m.flat[np.argmax(m != 255)], m, np.uint8(255)).astype(np.uint8)
    with pytest.raises(ValueError, match="needs at least 2 marked mineral"):
        fit_correction(class_means(im, one), ref, method="ccm-de2000")
    fit_correction(class_means(im, one), ref, method="white-balance")  # one mineral is enough for it
    tiny = np.full(m.shape, 255, np.uint8)
    tiny[:3, :3] = 1
    tiny[-3:, -3:] = 0
    cm = class_means(im, tiny)
    assert len(cm.codes) == 0 and any("usable marked pixels" in n for n in cm.notes)
    with pytest.raises(ValueError, match="usable marked pixels"):
        fit_correction(cm, ref)
    with pytest.raises(ValueError, match="no reference colour|needs at least"):
        fit_correction(class_means(im, m), {99: np.array([1.0, 1.0, 1.0])})
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_correction(class_means(im, m), ref, method="magic")


def test_saturated_minerals_are_left_out(small):
    ref = _reference(small)
    im, m = small[0]
    codes = [c for c in np.unique(m) if c != 255]
    burnt = im.copy()
    burnt[m == codes[-1]] = 255
    cm = class_means(burnt, m)
    assert codes[-1] not in cm.codes.tolist()
    assert any("saturated" in n for n in cm.notes)
    corr = fit_correction(cm, ref)
    assert any("saturated" in n for n in corr.notes)


def test_bad_images_fail_clearly():
    with pytest.raises(ValueError, match="RGB image"):
        class_means(np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8))
    bad = np.full((10, 10, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        apply_correction(bad, np.vstack([np.eye(3), np.zeros((1, 3))]))
    with pytest.raises(ValueError, match="4x3"):
        apply_correction(np.zeros((10, 10, 3), np.uint8), np.eye(3))


def test_flat_field_from_reference_recovers_vignetting(small):
    im, _ = small[0]
    field = vignette(im.shape[:2], strength=0.4, centre=(0.45, 0.55), tint=(1.0, 0.9, 1.1))
    blank = np.clip(from_linear(0.5 * field) * 255 + 0.5, 0, 255).astype(np.uint8)
    flat = flat_field_from_reference(blank, sigma=0.01)
    rel = flat.field / flat.field.mean(axis=(0, 1))
    import cv2

    truth = cv2.resize(field, rel.shape[1::-1], interpolation=cv2.INTER_AREA)
    truth /= truth.mean(axis=(0, 1))
    assert np.abs(rel / truth - 1).max() < 0.03
    lin = to_linear(im / 255.0) * field
    shaded = np.clip(from_linear(lin) * 255 + 0.5, 0, 255).astype(np.uint8)
    fixed = apply_flat_field(shaded, flat)
    # corrected up to a global scale: compare normalised linear images
    a, b = to_linear(fixed / 255.0), to_linear(im / 255.0)
    ratio = a.mean() / b.mean()
    err_before = np.abs(to_linear(shaded / 255.0) / lin.mean() * to_linear(im / 255.0).mean() - b).mean()
    assert np.abs(a / ratio - b).mean() < 0.3 * err_before
    with pytest.raises(ValueError, match="black"):
        flat_field_from_reference(np.zeros((50, 60, 3), np.uint8))


def test_flat_field_from_series_recovers_vignetting(small):
    ims = []
    for im, _ in small:
        h, w = 250, 350
        for flip in (lambda x: x, lambda x: x[::-1], lambda x: x[:, ::-1], lambda x: x[::-1, ::-1]):
            ims.append(np.ascontiguousarray(flip(im)[:h, :w]))
    field = vignette((250, 350), strength=0.35)
    shaded = [np.clip(from_linear(to_linear(i / 255.0) * field) * 255 + 0.5, 0, 255).astype(np.uint8) for i in ims]
    flat = flat_field_from_series(shaded)
    import cv2

    # a dozen views of three crops leave a content bias in the estimate; the known vignetting must
    # show up exactly as the change between the estimates without and with it
    plain = flat_field_from_series(ims)
    truth = cv2.resize(field, flat.field.shape[1::-1], interpolation=cv2.INTER_AREA)
    truth /= truth.mean(axis=(0, 1))
    est = flat.field / plain.field
    est /= est.mean(axis=(0, 1))
    assert np.abs(est / truth - 1).mean() < 0.03
    with pytest.raises(ValueError, match="at least 10 photographs"):
        flat_field_from_series(shaded[:2])


def test_series_mode_applies_one_matrix(small):
    ref = _reference(small)
    changed = [simulate_optics(im, "yellow-filter") for im, _ in small]
    ann = {0: partial_annotation(small[0][1], fraction=0.3, seed=3)}
    res = calibrate_images(changed, ann, ref, mode="series")
    assert len(res) == 3 and all(r.correction is res[0].correction for r in res)
    assert [r.fitted_here for r in res] == [True, False, False]
    for (im, m), r, ch in zip(small, res, changed):
        before, _ = mean_delta_e(ch, m, ref)
        after, _ = mean_delta_e(r.image, m, ref)
        assert after < before
    with pytest.raises(ValueError, match="have no annotation"):
        calibrate_images(changed, ann, ref, mode="per-image")


def test_strokes_to_mask():
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[2:6, 2:8, :3] = [int(hex_color(6)[i:i + 2], 16) for i in (1, 3, 5)]
    rgba[2:6, 2:8, 3] = 255
    rgba[10:12, 10:12] = (10, 200, 30, 255)  # not a LumenStone colour
    m = strokes_to_mask(rgba, (40, 60))
    assert m.shape == (40, 60)
    assert set(np.unique(m).tolist()) == {6, 255}
    assert (m == 6).sum() == 4 * 6 * 4


def test_cli_calibrates_and_writes_json(small, tmp_path):
    from core.cli import main
    from core.io import read_image, write_image, write_mask

    ref = _reference(small)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(
        json.dumps({"reference_colors": {str(k): list(map(float, v)) for k, v in ref.items()}}))
    names = []
    for i, (im, m) in enumerate(small):
        p = tmp_path / "in" / f"img{i}.png"
        write_image(p, simulate_optics(im, "blue-filter"), pixel_um=0.5 + i)
        names.append(str(p))
    write_mask(tmp_path / "marks" / "img0.png", partial_annotation(small[0][1], fraction=0.3))
    rc = main(["calibrate", *names, "--annotation", str(tmp_path / "marks"), "--series", "--out",
               str(tmp_path / "out"), "--reference", str(tmp_path / "model"), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["images"]) == {"img0.png", "img1.png", "img2.png"}
    d = rep["images"]["img0.png"]
    assert d["delta_e_after"] < d["delta_e_before"] and len(d["matrix"]) == 4 and d["seconds"] > 0
    assert read_image(tmp_path / "out" / "img1.png").shape == small[1][0].shape
    from core.io import read_pixel_size  # each corrected photograph keeps its own pixel size

    assert [read_pixel_size(tmp_path / "out" / f"img{i}.png") for i in range(3)] == [0.5, 1.5, 2.5]
    # per-image mode with one mask for several images is refused with a clear message
    rc = main(["calibrate", *names, "--annotation", str(tmp_path / "marks" / "img0.png"), "--out",
               str(tmp_path / "o2"), "--reference", str(tmp_path / "model")])
    assert rc == 2
    rc = main(["calibrate", names[0], "--annotation", str(tmp_path / "marks" / "img0.png"), "--out",
               str(tmp_path / "o3"), "--reference", str(tmp_path / "nomodel")])
    assert rc == 2


def test_cli_reads_12_bit_photographs_with_their_white_level(tmp_path):
    import tifffile

    from core.calibration.cli import _read

    raw = np.random.default_rng(1).integers(0, 4096, (20, 30, 3)).astype(np.uint16)
    raw[0, 0] = 4095
    tifffile.imwrite(tmp_path / "c12.tif", raw)
    full = _read(tmp_path / "c12.tif", 4095)  # to the 16-bit range the corrected image is written in
    assert full.dtype == np.uint16 and full.max() == 65535
    assert np.abs(full.astype(int) - np.rint(raw * (65535 / 4095))).max() <= 1
    assert _read(tmp_path / "c12.tif").max() == 4095  # as the file says: the 16-bit range


def test_cli_missing_default_model_message(small, tmp_path, capsys, monkeypatch):
    from core.calibration import cli

    monkeypatch.setattr(cli, "DEFAULT_REFERENCE", tmp_path / "models" / "default")
    with pytest.raises(ValueError, match="reference model folder not found"):
        cli.read_reference(tmp_path / "models" / "default")


def test_tone_balance_undoes_a_tone_curve_gains_and_cross_talk():
    """A camera with its own gains, tone exponent and channel cross-talk, undone from 5 marked colours."""
    img, mask = _patches(COLORS[:5])
    ref = {c: np.array(COLORS[c], float) for c in range(5)}
    gamma, k, gains = np.array([1.15, 1.1, 1.2]), 0.12, np.array([1.1, 0.95, 0.8])
    S = (1 + k) * np.eye(3) - k / 3.0
    lin = to_linear(img.astype(float) / 255.0)
    # the inverse of what tone-balance fits: out = gains * ((src ** gamma) @ S.T)
    changed_lin = np.clip(((lin / gains) @ np.linalg.inv(S).T), 1e-6, 1) ** (1 / gamma)
    changed = np.rint(from_linear(changed_lin) * 255).astype(np.uint8)
    corr = fit_correction(class_means(changed, mask), ref, method="tone-balance")
    assert corr.de_before.mean() > 3.0
    assert corr.de_after.mean() < 1.0
    back = apply_correction(changed, corr)
    assert np.abs(back.astype(int) - img).max() <= 6
    # white balance alone cannot undo the tone curve as well
    wb = fit_correction(class_means(changed, mask), ref, method="white-balance")
    assert wb.de_after.mean() > 1.5 * corr.de_after.mean()


def test_colour_drift_is_area_weighted_and_flags_a_colour_cast(small):
    """Zero against an image's own colours; a blue filter lifts it past the warning level; weights are areas."""
    from core.calibration import DRIFT_WARNING, colour_drift

    ref = _reference(small)
    im, m = small[0]
    d, per = colour_drift(im, m, _reference([small[0]]))
    assert d == pytest.approx(0.0, abs=1e-6) and set(per) == set(np.unique(m).tolist()) - {255}
    d_cast, _ = colour_drift(simulate_optics(im, "blue-filter"), m, ref)
    assert d_cast > DRIFT_WARNING
    # two flat patches, one three times the other's area: the drift is the area-weighted mean of their ΔE00
    img = np.zeros((10, 40, 3), np.uint8)
    img[:, :30] = (150, 120, 100)
    img[:, 30:] = (60, 60, 60)
    labels = np.zeros((10, 40), np.uint8)
    labels[:, 30:] = 1
    reference = {0: np.array([140.0, 120, 100]), 1: np.array([60.0, 60, 70]), 7: np.array([1.0, 2, 3])}
    d, per = colour_drift(img, labels, reference)
    assert set(per) == {0, 1}
    assert d == pytest.approx(0.75 * per[0] + 0.25 * per[1])
    assert np.isnan(colour_drift(img, np.full((10, 40), 255, np.uint8), reference)[0])


def test_too_few_minerals_suggests_a_method_only_when_it_would_fit(small):
    ref = _reference(small)
    im, m = small[0]
    one = np.where(m == m.flat[np.argmax(m != 255)], m, np.uint8(255)).astype(np.uint8)
    with pytest.raises(ValueError) as e:
        fit_correction(class_means(im, one), ref, method="ccm-de2000")
    assert str(e.value).endswith("; mark more minerals or choose 'white-balance'")
    tiny = np.full(m.shape, 255, np.uint8)
    tiny[:3, :3] = 1
    # nothing usable: white-balance (the method chosen, or any other) would not fit either
    for method in ("white-balance", "ccm-de2000"):
        with pytest.raises(ValueError) as e:
            fit_correction(class_means(im, tiny), ref, method=method)
        assert str(e.value).endswith("; mark more minerals") and "choose" not in str(e.value), str(e.value)
