"""XPL registration: known stage rotations and shifts recovered on real-image content."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from core.registration import (ENCODINGS, FEATURES, MODELS, anisotropy_maps, colour_angle, encode_xpl, prepare,
                               register, register_series, simulate_xpl_series, stage_transform, structure_image,
                               transform_error, warp_to_reference)
from core.registration.simulate import SIMULATED_LABEL


@pytest.fixture(scope="module")
def series(demo_image, demo_mask):
    # demo crop 05 (1600x1200) holds pyrrhotite, which is anisotropic
    return simulate_xpl_series(demo_image, demo_mask, n_shots=3, step_deg=30.0, start_deg=15.0, seed=3)


@pytest.fixture(scope="module")
def reference(series):
    return prepare(series.ppl)


def test_stage_transform_maps_centre_and_rotates():
    c, t = (700.0, 400.0), (12.0, -5.0)
    A = stage_transform(90.0, c, t)
    # the rotation centre, moved by the shift, is seen at c + t in the shot and maps back to c
    np.testing.assert_allclose(A @ [c[0] + t[0], c[1] + t[1], 1.0], c, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(A[:, :2]), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.degrees(np.arctan2(A[1, 0], A[0, 0])), 90.0, atol=1e-9)


def test_simulated_series_is_labelled_and_follows_the_optics(demo_image, demo_mask):
    s = simulate_xpl_series(demo_image, demo_mask, n_shots=2, step_deg=90.0, start_deg=0.0, angle_jitter=0.0,
                            max_shift=0.0, noise=0.0, seed=1)
    assert "SIMULATED" in s.label and s.label == SIMULATED_LABEL
    assert len(s.xpl) == 2 and s.xpl[0].shape == demo_image.shape
    # no jitter, shift or noise: the stage angles asked for, pure rotations, the PPL as given
    assert s.angles == [0.0, 90.0] and np.array_equal(s.ppl, demo_image)
    for A, angle in zip(s.transforms, s.angles):
        np.testing.assert_allclose(np.degrees(np.arctan2(A[1, 0], A[0, 0])), angle, atol=1e-9)
    # shots 90 degrees apart: the stage turned a quarter, so map both back and compare in the PPL frame
    a = warp_to_reference(s.xpl[0], s.transforms[0], demo_image.shape[:2]).astype(float).mean(2)
    b, valid = warp_to_reference(s.xpl[1], s.transforms[1], demo_image.shape[:2], return_valid=True)
    b = b.astype(float).mean(2)
    po = (demo_mask == 5) & valid & (cv2.erode(valid.astype(np.uint8), np.ones((9, 9))) > 0)
    assert po.sum() > 1000
    # same brightness pattern after a 90-degree turn, up to the per-shot exposure
    ratio = np.median(a[po] + 1) / np.median(b[po] + 1)
    assert np.corrcoef(a[po], b[po])[0, 1] > 0.9, ratio
    # anisotropic grains (chalcopyrite 1, pyrrhotite 5) have an orientation in [0, 90), isotropic pixels
    # (background 0, magnetite 3, pentlandite 7) do not
    aniso, iso = np.isin(demo_mask, [1, 5]), np.isin(demo_mask, [0, 3, 7])
    assert aniso.sum() > 1000 and iso.sum() > 1000 and (aniso | iso).all()
    o = s.orientation[aniso]
    assert np.isfinite(o).all() and o.min() >= 0 and o.max() < 90
    assert np.isnan(s.orientation[iso]).all()
    np.testing.assert_array_equal(s.strength[demo_mask == 5], np.float32(0.8))  # pyrrhotite's anisotropy strength
    assert (s.strength[iso] == 0).all()
    # one orientation per grain, drawn anew for each grain
    n, comp = cv2.connectedComponents((demo_mask == 5).astype(np.uint8), connectivity=8)
    per_grain = [np.unique(s.orientation[comp == k]) for k in range(1, n)]
    assert n > 3 and all(len(u) == 1 for u in per_grain) and len({float(u[0]) for u in per_grain}) == n - 1


def test_recovers_known_rotations_and_shifts(series, reference):
    for shot, A_true, angle in zip(series.xpl, series.transforms, series.angles):
        r = register(reference, shot)
        assert r.ok, r.message
        err = transform_error(r.A, A_true, shot.shape[:2])
        assert err["mean_px"] < 0.3, (angle, err)
        assert err["max_px"] < 0.8, (angle, err)
        assert abs(r.angle_deg - angle) < 0.05
        assert r.inliers >= 50 and r.rmse_px < 1.0 and r.control_points >= 20


def test_affine_model_and_orb_also_align(series, reference):
    r = register(reference, series.xpl[1], model="affine")
    assert r.ok and transform_error(r.A, series.transforms[1], series.xpl[1].shape[:2])["mean_px"] < 0.4
    r = register(series.ppl, series.xpl[0], features="orb")
    assert r.ok, r.message
    assert transform_error(r.A, series.transforms[0], series.xpl[0].shape[:2])["mean_px"] < 0.5


def test_unrelated_images_are_reported_not_warped(demo_items, series):
    from core.io import read_image

    other = read_image(demo_items[1].image)
    r = register(series.ppl, other)
    assert not r.ok and r.message
    noise = np.random.default_rng(0).integers(0, 256, series.ppl.shape, dtype=np.uint8)
    results, aligned = register_series(series.ppl, [series.xpl[0], noise])
    assert results[0].ok and aligned[0] is not None
    assert not results[1].ok and aligned[1] is None and "same field" in results[1].message


def test_flat_image_fails_cleanly(series):
    flat = np.full((300, 400, 3), 90, np.uint8)
    r = register(series.ppl, flat)
    assert not r.ok and "structure" in r.message


def test_warp_round_trip(series):
    A = series.transforms[0]
    warped, valid = warp_to_reference(series.xpl[0], A, series.ppl.shape[:2], return_valid=True)
    assert warped.shape == series.ppl.shape and 0.3 < valid.mean() < 1.0
    near = cv2.dilate(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (warped[~near] == 0).all()
    assert (warped[valid].reshape(-1, 3).max(1) > 0).mean() > 0.99


def test_structure_image_is_invariant_to_relighting(demo_image):
    s1 = structure_image(demo_image).astype(float)
    dim = np.clip(demo_image.astype(float) * 0.3, 0, 255).astype(np.uint8)
    s2 = structure_image(dim).astype(float)
    assert np.corrcoef(s1.ravel(), s2.ravel())[0, 1] > 0.85


def test_anisotropy_maps_recover_orientation():
    rng = np.random.default_rng(0)
    phi = np.zeros((40, 60), np.float32)
    phi[:, :30] = 10.0
    phi[:, 30:] = 55.0
    aniso = np.zeros_like(phi, bool)
    aniso[:20] = True  # top half anisotropic, bottom half isotropic
    angles = [15, 30, 45, 60, 75, 90]
    shots = []
    for th in angles:
        val = 30 + np.where(aniso, 150 * np.sin(np.deg2rad(2 * (phi + th))) ** 2, 0) + rng.normal(0, 1, phi.shape)
        shots.append(np.repeat(np.clip(val, 0, 255).astype(np.uint8)[..., None], 3, 2))
    m = anisotropy_maps(shots, angles=angles)
    # brightest when 2 (phi + theta) = 90 deg, i.e. theta = 45 - phi (mod 90)
    np.testing.assert_allclose(np.nanmedian(m.angle_max[:20, :30]), 35.0, atol=1.0)
    np.testing.assert_allclose(np.nanmedian(m.angle_max[:20, 30:]), 80.0, atol=1.0)
    assert np.isnan(m.angle_max[20:]).mean() > 0.95
    assert m.range[:20].mean() > 100 and m.range[20:].mean() < 10
    assert m.std[:20].mean() > 5 * m.std[20:].mean()
    rgb = colour_angle(m.angle_max, m.amplitude)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    # without angles only range/std/mean
    m2 = anisotropy_maps(shots)
    assert m2.angle_max is None and m2.range.shape == (40, 60)


def test_encodings_shapes_and_errors():
    shots = [np.full((10, 12, 3), v, np.uint8) for v in (10, 50, 90)]
    compact = encode_xpl(shots)
    # grey shots of 10, 50 and 90: mean 50, range 80, twice the standard deviation 2 sqrt(3200 / 3) = 65.3
    assert compact.shape == (10, 12, 3) and (compact == [50, 80, 65]).all()
    raw = encode_xpl(shots, encoding="raw", n_shots=3)
    assert raw.shape == (10, 12, 9) and raw.dtype == np.uint8
    assert (raw == [10] * 3 + [50] * 3 + [90] * 3).all()  # the shots' RGB in order
    with pytest.raises(ValueError, match="trained with 6"):
        encode_xpl(shots, encoding="raw", n_shots=6)
    with pytest.raises(ValueError, match="valid names"):
        encode_xpl(shots, encoding="nope")
    with pytest.raises(ValueError, match="at least 2"):
        encode_xpl(shots[:1])
    with pytest.raises(ValueError, match="differ in size"):
        anisotropy_maps([shots[0], np.zeros((5, 5, 3), np.uint8)])
    assert set(ENCODINGS.names()) == {"compact", "raw"}


def test_bad_inputs_raise_value_errors(series):
    with pytest.raises(ValueError, match="valid names"):
        register(series.ppl, series.xpl[0], model="projective")
    with pytest.raises(ValueError, match="valid names"):
        prepare(series.ppl, features="surf")
    with pytest.raises(ValueError, match="RGB"):
        prepare(np.zeros((4, 5, 6, 7), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        prepare(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="mask"):
        simulate_xpl_series(series.ppl, np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        register_series(series.ppl, [])
    assert "sift" in FEATURES and "similarity" in MODELS


def test_cli_writes_aligned_images_and_json(tmp_path, series):
    from core.cli import main
    from core.io import read_image, write_image

    write_image(tmp_path / "ppl.png", series.ppl)
    paths = []
    for i, x in enumerate(series.xpl):
        write_image(tmp_path / f"x{i}.png", x)
        paths.append(str(tmp_path / f"x{i}.png"))
    out, js, maps = tmp_path / "out", tmp_path / "r.json", tmp_path / "maps"
    rc = main(["register", str(tmp_path / "ppl.png"), *paths, "--out", str(out), "--json", str(js),
               "--maps", str(maps), "--quiet"])
    assert rc == 0
    data = json.loads(js.read_text())
    for i in range(3):
        e = data["images"][f"x{i}.png"]
        A = np.asarray(e["A"])
        assert A.shape == (2, 3) and e["inliers"] > 20 and e["rmse_px"] < 1.0
        assert transform_error(A, series.transforms[i], series.xpl[i].shape[:2])["mean_px"] < 0.3
        assert read_image(out / f"x{i}.png").shape == series.ppl.shape
    assert (maps / "anisotropy_range.png").exists() and (maps / "anisotropy_angle.png").exists()

    # an unrelated image: reported, exit status 1, not written
    rng = np.random.default_rng(1)
    write_image(tmp_path / "junk.png", rng.integers(0, 256, series.ppl.shape, dtype=np.uint8))
    rc = main(["register", str(tmp_path / "ppl.png"), str(tmp_path / "junk.png"), "--out", str(out), "--quiet"])
    assert rc == 1 and not (out / "junk.png").exists()
    # an unreadable shot after a good one: refused before anything is aligned or written
    (tmp_path / "notes.png").write_text("not a picture")
    fresh, fresh_js = tmp_path / "fresh", tmp_path / "fresh.json"
    rc = main(["register", str(tmp_path / "ppl.png"), paths[0], str(tmp_path / "notes.png"), "--out", str(fresh),
               "--json", str(fresh_js), "--quiet"])
    assert rc == 2 and not fresh.exists() and not fresh_js.exists()
    # refusing to overwrite the inputs
    assert main(["register", str(tmp_path / "ppl.png"), paths[0], "--out", str(tmp_path), "--quiet"]) == 2
    assert main(["register", str(tmp_path / "ppl.png"), str(tmp_path / "missing.png"), "--out", str(out)]) == 2


def test_xpl_channels_for_a_multichannel_model(tmp_path, series):
    import torch

    from core.registration import extra_from_aligned, xpl_extra, xpl_spec
    from core.segmentation import create_model, load_model, predict, save_model

    torch.set_num_threads(1)
    net = create_model("pspnet", "resnet18", classes=3, in_channels=6)
    cfg = {"architecture": "pspnet", "encoder": "resnet18", "in_channels": 6, "classes": [0, 5, 7], "scale": 0.125,
           "normalization": {"mean": [0.5] * 6, "std": [0.25] * 6}, "xpl": {"encoding": "compact", "n_shots": 3}}
    save_model(tmp_path / "m", net, cfg)
    model = load_model(tmp_path / "m", device="cpu")
    extra, results = xpl_extra(model.config, series.ppl, series.xpl)
    assert extra.shape == series.ppl.shape[:2] + (3,) and all(r.ok for r in results)
    pred = predict(model, series.ppl, extra=extra)
    assert pred.labels.shape == series.ppl.shape[:2]
    assert set(np.unique(pred.labels)) <= {0, 5, 7}
    # the same channels from an already aligned stack (the Register XPL page's)
    aligned = [warp_to_reference(x, r.A, series.ppl.shape[:2]) for x, r in zip(series.xpl, results)]
    np.testing.assert_array_equal(extra_from_aligned(model.config, aligned), extra)
    # RGB-only models refuse XPL input; raw models check the number of shots; unrelated shots are refused
    with pytest.raises(ValueError, match="RGB images only"):
        xpl_extra({"in_channels": 3}, series.ppl, series.xpl)
    assert xpl_spec({"in_channels": 21}) == {"encoding": "raw", "n_shots": 6}
    with pytest.raises(ValueError, match="trained with 6"):
        xpl_extra({"in_channels": 21}, series.ppl, series.xpl)
    junk = np.random.default_rng(2).integers(0, 256, series.ppl.shape, dtype=np.uint8)
    with pytest.raises(ValueError, match="could not align shot 2"):
        xpl_extra(model.config, series.ppl, [series.xpl[0], junk])


def test_cli_simulate_train_and_segment_with_xpl_channels(tmp_path, demo_items):
    """SIMULATED XPL data: build it, train a 6-channel model on it and segment with --xpl, all from the CLI."""
    import shutil

    import torch

    from core.cli import main
    from core.io import read_image, read_mask
    from core.segmentation import load_model

    torch.set_num_threads(2)
    data = tmp_path / "d"
    for it in demo_items:
        (data / "imgs/train").mkdir(parents=True, exist_ok=True)
        (data / "masks/train").mkdir(parents=True, exist_ok=True)
        shutil.copy(it.image, data / "imgs/train" / it.image.name)
        shutil.copy(it.mask, data / "masks/train" / it.mask.name)
    sim = tmp_path / "sim"
    assert main(["simulate-xpl", "--data", str(data), "--out", str(sim), "--shots", "3", "--scale", "0.5",
                 "--max-shift", "10", "--quiet"]) == 0
    assert "SIMULATED" in (sim / "SIMULATED.txt").read_text()
    stem = demo_items[0].stem
    shots = sorted((sim / "xpl/train" / stem).glob("*.jpg"))
    assert len(shots) == 3
    ppl = read_image(sim / "imgs/train" / f"{stem}.jpg")
    assert read_image(shots[0]).shape == ppl.shape
    assert read_mask(sim / "masks/train" / f"{stem}.png").shape == ppl.shape[:2]
    # refuses to write into its own input
    assert main(["simulate-xpl", "--data", str(data), "--out", str(data / "x")]) == 2

    model_dir = tmp_path / "m"
    assert main(["train", "--data", str(sim), "--out", str(model_dir), "--xpl", "compact", "--iterations", "2",
                 "--val-every", "2", "--batch-size", "2", "--patch", "64", "--scale", "0.25", "--workers", "0",
                 "--val-fraction", "0.34"]) == 0
    model = load_model(model_dir, device="cpu")
    assert model.in_channels == 6 and model.config["xpl"]["encoding"] == "compact"
    assert len(model.config["normalization"]["mean"]) == 6

    out = tmp_path / "seg"
    img = sim / "imgs/train" / f"{stem}.jpg"
    assert main(["segment", str(img), "--out", str(out), "--model", str(model_dir), "--xpl",
                 *map(str, shots)]) == 0
    assert read_mask(out / f"{stem}.png").shape == ppl.shape[:2]
    # without the shots, a clear refusal
    assert main(["segment", str(img), "--out", str(out), "--model", str(model_dir)]) == 2
    # an RGB dataset cannot train with --xpl
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "m2"), "--xpl", "compact",
                 "--iterations", "1", "--workers", "0", "--val-fraction", "0.34"]) == 2
