"""The pixel expert: features in strips equal the whole image's, storage in the config, fusion by hand, training
on a separable scene, its place in ``predict``, and the ``train-pixel`` command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.segmentation import SegmentationModel, predict, save_model
from core.segmentation.pixel import N_FEATURES, PixelExpert, _mlp, expert_of, features, fit, fuse
from test_segmentation import _config, _Pointwise


def _expert(classes=(0, 6), seed=0):
    torch.manual_seed(seed)
    return PixelExpert(_mlp(8, len(classes)), np.zeros(N_FEATURES, np.float32), np.ones(N_FEATURES, np.float32),
                       list(classes))


def _scene(h=60, w=80, seed=0):
    """A dark left half (class 0) and a bright right half (class 6), with noise."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = 50
    img[:, w // 2:] = 190
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 2:] = 6
    return img, mask


def test_features_and_probabilities_in_strips_equal_the_whole_image():
    img = np.random.default_rng(1).integers(0, 256, (230, 170, 3), dtype=np.uint8)
    f = features(img)
    assert f.shape == (230, 170, N_FEATURES) and f.dtype == np.float32 and np.isfinite(f).all()
    e = _expert()
    whole = e.predict(img, strip=1000)
    assert np.allclose(e.predict(img, strip=37), whole, atol=1e-6)
    assert np.allclose(whole.sum(0), 1, atol=1e-5)
    # fused strip by strip into the network's probabilities, as the whole maps fused at once
    p = np.random.default_rng(2).random((2, 230, 170)).astype(np.float32)
    p /= p.sum(0)
    assert np.allclose(e.fuse_into(p.copy(), img, strip=50), fuse(p.copy(), whole), atol=1e-6)
    with pytest.raises(ValueError, match="8-bit RGB"):
        features(img.astype(np.float32))


def test_an_expert_at_half_the_working_scale_fuses_strip_by_strip_as_a_whole():
    from core.segmentation.pixel import reduce, reduce_mask

    img = np.random.default_rng(4).integers(0, 256, (231, 171, 3), dtype=np.uint8)   # odd sides
    e = _expert()
    e.subsample = 2
    whole = e.predict(img)
    assert whole.shape == (2, 231, 171) and np.allclose(whole.sum(0), 1, atol=1e-5)
    p = np.random.default_rng(5).random((2, 231, 171)).astype(np.float32)
    p /= p.sum(0)
    assert np.allclose(e.fuse_into(p.copy(), img, strip=40), fuse(p.copy(), whole), atol=1e-6)
    # the reduction: block means (the last row and column repeated), and a mask's blocks of one class only
    small = reduce(np.array([[[0], [4], [9]], [[2], [6], [9]]], np.uint8), 2)
    assert small[:, :, 0].tolist() == [[3, 9]]
    m = reduce_mask(np.array([[1, 1, 5], [1, 1, 6]], np.uint8), 2)
    assert m.tolist() == [[1, 255]]
    back = PixelExpert.from_config(json.loads(json.dumps(e.to_config())), [0, 6])
    assert back.subsample == 2 and np.array_equal(back.predict(img), whole)


def test_fusion_by_hand():
    p = np.array([0.5, 0.5, 0.0], np.float32).reshape(3, 1, 1)
    q = np.array([0.8, 0.1, 0.1], np.float32).reshape(3, 1, 1)
    out = fuse(p.copy(), q, 1.0).ravel()
    assert np.allclose(out, [0.4 / 0.45, 0.05 / 0.45, 0.0])     # a ruled-out mineral stays ruled out
    half = fuse(p.copy(), q, 0.5).ravel()
    a, b = 0.5 * 0.8 ** 0.5, 0.5 * 0.1 ** 0.5
    assert np.allclose(half, [a / (a + b), b / (a + b), 0.0])
    assert np.array_equal(fuse(p.copy(), q, 0.0), p)
    # the floor: an expert's zero cannot rule a mineral out on its own
    z = fuse(p.copy(), np.array([1.0, 0.0, 0.0], np.float32).reshape(3, 1, 1), 1.0, floor=1e-2).ravel()
    assert np.allclose(z, [0.5 / 0.505, 0.005 / 0.505, 0.0])
    with pytest.raises(ValueError, match="differ in shape"):
        fuse(p, q[:2])


def test_config_round_trip_and_damaged_entries():
    e = _expert()
    entry = json.loads(json.dumps(e.to_config()))
    back = PixelExpert.from_config(entry, [0, 6])
    img, _ = _scene()
    assert np.array_equal(back.predict(img), e.predict(img))
    assert back.weight == 1.0
    with pytest.raises(ValueError, match="classes"):
        PixelExpert.from_config(entry, [0, 1])
    with pytest.raises(ValueError, match="feature set"):
        PixelExpert.from_config({**entry, "features": 99}, [0, 6])
    import base64

    short = base64.b64encode(base64.b64decode(entry["params"])[:-8]).decode()
    with pytest.raises(ValueError, match="damaged"):
        PixelExpert.from_config({**entry, "params": short}, [0, 6])
    with pytest.raises(ValueError, match="cannot be read"):
        PixelExpert.from_config({**entry, "params": "not base64!"}, [0, 6])
    assert expert_of({"classes": [0, 6]}) is None


def test_fit_learns_a_separable_scene():
    img, mask = _scene(seed=0)
    mask[:5] = 255                                              # unlabelled pixels are not drawn
    expert = fit([img], [mask], [0, 6], per_class=500, epochs=8, hidden=16, batch=64)
    test_img, test_mask = _scene(seed=1)
    labels = np.asarray([0, 6])[expert.predict(test_img).argmax(0)]
    assert (labels == test_mask).mean() > 0.97
    assert expert.info["trained_on"] == 1 and expert.info["pixels"] == 1000
    with pytest.raises(ValueError, match="its mask"):
        fit([img], [mask[:10]], [0, 6])


def test_predict_fuses_the_expert_of_the_model():
    img, _ = _scene(64, 96)
    cfg = _config([0, 6])
    net = _Pointwise(2).eval()
    plain = SegmentationModel(net=net, config=cfg, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="no pixel expert"):
        predict(plain, img, pixel_expert=True)
    e = _expert(seed=3)
    with_expert = SegmentationModel(net=net, config={**cfg, "pixel_expert": e.to_config()}, device=torch.device("cpu"))
    kw = dict(refine=False, balance=False, assemblage=False)
    off = predict(with_expert, img, pixel_expert=False, **kw)
    on = predict(with_expert, img, **kw)
    assert np.array_equal(off.probs, predict(plain, img, **kw).probs)
    want = fuse(off.probs.astype(np.float32), with_expert.pixel_expert.predict(img), 1.0)
    assert np.allclose(on.probs.astype(np.float32), want, atol=2e-3)    # the result's probabilities are fp16
    assert not np.allclose(on.probs.astype(np.float32), off.probs.astype(np.float32), atol=1e-2)
    # the expert judges by colour: where the minerals' colours are far from the training colours, it stays silent
    bright = _Pointwise(2).eval()                                   # dark -> 0, bright -> 6: the scene's truth
    with torch.no_grad():
        bright.conv.weight[:] = torch.tensor([[-0.05] * 3, [0.05] * 3]).reshape(2, 3, 1, 1)
        bright.conv.bias.zero_()
    base = {**cfg, "pixel_expert": e.to_config()}
    off2 = predict(SegmentationModel(net=bright, config=base, device=torch.device("cpu")), img, pixel_expert=False, **kw)
    on2 = predict(SegmentationModel(net=bright, config=base, device=torch.device("cpu")), img, **kw)
    far = {**base, "reference_colors": {"0": [200.0, 40.0, 40.0], "6": [40.0, 40.0, 200.0]}}
    near = {**base, "reference_colors": {"0": [50.0, 50.0, 50.0], "6": [190.0, 190.0, 190.0]}}
    assert np.array_equal(predict(SegmentationModel(net=bright, config=far, device=torch.device("cpu")), img,
                                  **kw).probs, off2.probs)
    assert np.array_equal(predict(SegmentationModel(net=bright, config=near, device=torch.device("cpu")), img,
                                  **kw).probs, on2.probs)
    assert not np.array_equal(on2.probs, off2.probs)


def test_train_pixel_command_writes_the_expert_into_the_model(tmp_path):
    from core.cli import main
    from core.io import encode_png
    from core.segmentation import load_model

    for split in ("train",):
        (tmp_path / "data" / "imgs" / split).mkdir(parents=True)
        (tmp_path / "data" / "masks" / split).mkdir(parents=True)
    import cv2

    for i in range(3):
        img, mask = _scene(80, 120, seed=i)
        cv2.imwrite(str(tmp_path / "data" / "imgs" / "train" / f"s{i}.png"), img[..., ::-1])
        (tmp_path / "data" / "masks" / "train" / f"s{i}.png").write_bytes(encode_png(mask))
    torch.manual_seed(0)
    from core.segmentation import create_model

    net = create_model("unet", "resnet18", classes=2)
    save_model(tmp_path / "m", net, {**_config([0, 6]), "architecture": "unet", "scale": 0.5,
                                      "training": {"val_images": ["s2"]}})
    weights = (tmp_path / "m" / "weights.pt").read_bytes()
    assert main(["train-pixel", "--data", str(tmp_path / "data"), "--model", str(tmp_path / "m"),
                 "--per-class", "200", "--epochs", "3", "--hidden", "8"]) == 0
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    entry = cfg["pixel_expert"]
    assert entry["trained_on"] == 2 and entry["held_out"] == ["s2"] and entry["classes"] == [0, 6]
    assert entry["subsample"] == 2 and entry["hidden"] == 8
    assert (tmp_path / "m" / "weights.pt").read_bytes() == weights      # the network is not touched
    m = load_model(tmp_path / "m", device="cpu")
    assert m.pixel_expert is not None and m.pixel_expert.weight == 1.0
    cfg["pixel_expert"]["params"] = cfg["pixel_expert"]["params"][:20]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pixel expert"):
        load_model(tmp_path / "m", device="cpu")
