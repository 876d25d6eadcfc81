"""Segmentation engine: factory, model folders, tiled inference, metrics, sampler, training."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.segmentation import (ARCHITECTURES, ClassBalancedSampler, ConfusionMatrix, SegmentationModel,
                               create_model, load_model, predict, save_model)
from core.segmentation.infer import predict_scaled, upsample_argmax

torch.set_num_threads(2)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("in_channels", [3, 9])
def test_every_architecture_builds_and_runs(arch, in_channels):
    net = create_model(arch, "resnet18", classes=5, in_channels=in_channels).eval()
    with torch.inference_mode():
        out = net(torch.randn(1, in_channels, 64, 64))
    assert out.shape == (1, 5, 64, 64)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ValueError, match="pspnet"):
        create_model("pspnett")


def _config(classes, **kw):
    return {"architecture": "pspnet", "encoder": "resnet18", "in_channels": 3, "classes": classes, "scale": 1.0,
            "tile": 64, "overlap": 16, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, **kw}


def test_save_load_round_trip(tmp_path):
    net = create_model("pspnet", classes=4).eval()
    cfg = _config([0, 1, 6, 8], reference_colors={"6": [200.0, 190.0, 150.0]})
    save_model(tmp_path / "m", net, cfg)
    m = load_model(tmp_path / "m", device="cpu")
    assert m.classes == [0, 1, 6, 8] and m.name == "m"
    assert np.allclose(m.reference_colors()[6], [200, 190, 150])
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        a = net.half().float()(x)
        b = m.net(x)
    assert torch.allclose(a, b, atol=1e-3)
    assert (tmp_path / "m" / "weights.pt").stat().st_size < 50e6
    (tmp_path / "bad").mkdir()
    with pytest.raises(ValueError, match="not a model folder"):
        load_model(tmp_path / "bad")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"architecture": "pspnet"}))
    with pytest.raises(ValueError, match="missing fields"):
        load_model(tmp_path / "m")


class _Pointwise(torch.nn.Module):
    """Per-pixel network: tiled and whole-image outputs must agree exactly."""

    def __init__(self, k):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, k, 1)

    def forward(self, x):
        return self.conv(x) * 4


class _Starved(torch.nn.Module):
    """A network whose allocations fail, as torch reports them on the CPU, or with another runtime fault."""

    def __init__(self, message):
        super().__init__()
        self.message = message

    def forward(self, x):
        raise RuntimeError(self.message)


def test_a_failed_allocation_is_reported_as_memory_and_other_faults_pass_through():
    from core.segmentation import predict

    img = np.zeros((40, 50, 3), np.uint8)
    oom = "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 9e12 bytes"
    model = SegmentationModel(net=_Starved(oom).eval(), config=_config([0, 6]), device=torch.device("cpu"))
    with pytest.raises(MemoryError, match="not enough memory to segment a 50x40 px image on CPU"):
        predict(model, img)
    model = SegmentationModel(net=_Starved("shape mismatch").eval(), config=_config([0, 6]), device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict(model, img)


def test_tiled_inference_matches_whole_image():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    model = SegmentationModel(net=_Pointwise(3).eval(), config=_config([0, 2, 6]), device=torch.device("cpu"))
    whole = predict_scaled(model, img, tile=256, overlap=0)
    tiled = predict_scaled(model, img, tile=64, overlap=24, batch_size=3)
    assert whole.shape == tiled.shape == (3, 150, 230)
    assert np.allclose(whole, tiled, atol=1e-5)
    # a per-pixel network is mirror-equivariant, so test-time flipping must not change it
    assert np.allclose(predict_scaled(model, img, tile=64, overlap=24, tta=True), tiled, atol=1e-5)
    # a prior correction rescales each class and renormalises
    model.config["class_prior_correction"] = [2.0, 1.0, 1.0]
    corrected = predict_scaled(model, img, tile=64, overlap=24)
    expect = whole * np.array([2.0, 1.0, 1.0])[:, None, None]
    assert np.allclose(corrected, expect / expect.sum(0), atol=1e-5)
    del model.config["class_prior_correction"]
    pred = predict(model, img, tile=64, overlap=24)
    assert pred.labels.shape == (150, 230) and set(np.unique(pred.labels)) <= {0, 2, 6}
    assert np.array_equal(pred.labels, np.asarray([0, 2, 6], np.uint8)[whole.argmax(0)])


class _WindowMean(torch.nn.Module):
    """Each pixel's logits plus the mean over the whole input window: like PSPNet's pooling, it sees the tile."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        return y + 4 * y.mean(dim=(2, 3), keepdim=True)


def test_tilings_of_several_sizes_are_blended_together():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    img[:, 115:] //= 3  # a dark half, so that windows differ in their means
    pointwise = SegmentationModel(net=_Pointwise(3).eval(), config=_config([0, 2, 6], tile=[64, 96]),
                                  device=torch.device("cpu"))
    whole = predict_scaled(pointwise, img, tile=256, overlap=0)
    # the config's list is the default, and a per-pixel network gives the whole-image result with any tiling
    assert np.allclose(predict_scaled(pointwise, img, overlap=24), whole, atol=1e-5)
    assert np.allclose(predict_scaled(pointwise, img, tile=[64, 96, 320], overlap=24), whole, atol=1e-5)
    # a network that sees its window: each pixel gets a weighted mean of what the two tilings give it
    model = SegmentationModel(net=_WindowMean().eval(), config=_config([0, 2, 6]), device=torch.device("cpu"))
    a = predict_scaled(model, img, tile=64, overlap=16)
    b = predict_scaled(model, img, tile=96, overlap=16)
    both = predict_scaled(model, img, tile=[64, 96], overlap=16)
    assert np.abs(a - b).max() > 0.05
    assert np.all(both >= np.minimum(a, b) - 1e-5) and np.all(both <= np.maximum(a, b) + 1e-5)
    assert np.abs(both - a).max() > 0.01 and np.abs(both - b).max() > 0.01
    assert np.allclose(both.sum(0), 1, atol=1e-5)
    with pytest.raises(ValueError, match="at least 32"):
        predict_scaled(model, img, tile=[64, 16])


def test_a_blend_in_stages_gives_each_stage_its_own_tiling_and_then_the_one_pass_result():
    from core.segmentation.infer import _Blend

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    img[:, 115:] //= 3
    model = SegmentationModel(net=_WindowMean().eval(), config=_config([0, 2, 6]), device=torch.device("cpu"))
    blend = _Blend(model, img, tile=[64, 96], overlap=16, batch_size=3)
    first = blend.check_jobs()
    assert 0 < len(first) < len(blend.jobs) and all(blend.jobs[k][:2] == (64, 64) for k in first)
    seen = []
    blend.add(first, progress=lambda f, msg: seen.append(f))
    look = blend.probs()
    assert blend.covered().all()
    assert np.allclose(look, predict_scaled(model, img, tile=64, overlap=16), atol=1e-6)
    with pytest.raises(RuntimeError, match="every tile"):
        blend.probs(copy=False)
    blend.add(progress=lambda f, msg: seen.append(f))
    assert not blend.pending and seen[-1] == 1.0 and seen == sorted(seen)
    assert np.allclose(blend.probs(copy=False), predict_scaled(model, img, tile=[64, 96], overlap=16), atol=1e-6)
    # pixels no tile has covered yet have no probability at all
    part = _Blend(model, img, tile=64, overlap=16)
    part.add([0])
    p = part.probs()
    assert not part.covered()[100, 200] and p[:, 100, 200].max() == 0 and np.allclose(p[:, 10, 10].sum(), 1)


def test_working_scale_returns_full_resolution_labels():
    img = np.zeros((97, 131, 3), np.uint8)
    img[:, 60:] = 255
    model = SegmentationModel(net=_Pointwise(2).eval(), config=_config([0, 6], scale=0.5), device=torch.device("cpu"))
    pred = predict(model, img)
    assert pred.labels.shape == (97, 131)
    assert pred.probs.shape[1:] == (48, 66) or pred.probs.shape[1:] == (49, 66)
    # a per-pixel network at full scale calls the dark and the bright half two different classes; at half scale
    # the same two classes come back, with the edge (between columns 59 and 60) found within one pixel
    full = predict(SegmentationModel(net=_Pointwise(2).eval(), config=_config([0, 6], scale=1.0),
                                     device=torch.device("cpu")), img).labels
    dark, bright = int(full[0, 0]), int(full[0, -1])
    assert dark != bright and (full[:, :60] == dark).all() and (full[:, 60:] == bright).all()
    assert (pred.labels[:, :60] == dark).all() and (pred.labels[:, 61:] == bright).all()


def test_upsample_argmax_strips_agree():
    rng = np.random.default_rng(2)
    probs = rng.random((3, 20, 30)).astype(np.float32)
    a = upsample_argmax(probs, (80, 120), [0, 5, 7], strip=7)
    b = upsample_argmax(probs, (80, 120), [0, 5, 7], strip=1000)
    assert np.array_equal(a, b)
    # by hand: 2 columns blown up 4x sit at x = -0.375 ... 1.375 on the source grid; the probabilities are
    # interpolated first (1 - x, x and a flat 0.7), so the flat class wins between 0.3 and 0.7, which it
    # never does at a source pixel; a class with no probability anywhere never wins
    ramp = np.zeros((4, 3, 2), np.float32)
    ramp[0, :, 0], ramp[1, :, 1], ramp[2] = 1.0, 1.0, 0.7
    got = upsample_argmax(ramp, (6, 8), [0, 5, 7, 9], strip=4)
    assert got.tolist() == [[0, 0, 0, 7, 7, 5, 5, 5]] * 6
    assert np.array_equal(upsample_argmax(ramp, (3, 2), [0, 5, 7, 9]), [[0, 5]] * 3)


def test_metrics_against_hand_computed_values():
    gt = np.array([[0, 0, 1, 1], [0, 6, 6, 255]], np.uint8)
    pr = np.array([[0, 1, 1, 1], [0, 6, 0, 6]], np.uint8)
    cm = ConfusionMatrix()
    cm.update(gt, pr)
    s = cm.scores()
    # class 0: TP 2, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 2/3; class 6: TP 1, FN 1 -> 1/2
    assert s.iou == pytest.approx({0: 0.5, 1: 2 / 3, 6: 0.5})
    assert s.miou == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert s.pixel_accuracy == pytest.approx(5 / 7)  # the ignored pixel counts neither way
    # dataset-wide: sum of intersections over sum of unions, not a mean over images
    cm.update(np.array([[8, 8]], np.uint8), np.array([[8, 0]], np.uint8))
    s2 = cm.scores()
    assert s2.iou[0] == pytest.approx(2 / 5) and s2.iou[8] == pytest.approx(0.5)
    assert s2.n_images == 2


def test_sampler_balances_rare_class():
    rng = np.random.default_rng(0)
    masks = []
    for i in range(4):
        m = np.zeros((300, 300), np.uint8)
        m[:, 150:] = 1
        if i == 2:
            m[40:52, 40:52] = 2  # 144 px of 360000: 0.04 %
        m[0, :] = 255
        masks.append(m)
    s = ClassBalancedSampler(masks, 3, 64, rng=rng)
    hits = 0
    for _ in range(300):
        r = s.next()
        y0, x0 = max(0, r.cy - 32), max(0, r.cx - 32)
        patch = masks[r.image][y0:y0 + 64, x0:x0 + 64]
        s.update(patch)
        hits += r.target_class == 2 and r.image == 2
    sampled, dataset = s.shares()
    assert dataset[2] < 0.001
    assert sampled[2] > 0.03  # the rare class is sampled ~75x more than its share
    assert hits > 50


def test_patch_streams_differ_between_workers():
    from core.segmentation.train import PatchStream, TrainConfig

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (200, 200, 3), dtype=np.uint8) for _ in range(2)]
    masks = [np.zeros((200, 200), np.uint8), np.ones((200, 200), np.uint8)]
    cfg = TrainConfig(patch=64, batch_size=4, workers=2)
    ds = PatchStream(imgs, masks, 2, cfg, [0.5] * 3, [0.25] * 3, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    it = iter(loader)
    a, b = next(it)[0], next(it)[0]  # consecutive batches come from different workers
    assert not torch.allclose(a, b)


def test_a_few_training_steps_reduce_the_loss(demo_image, demo_mask):
    from core.segmentation.train import PatchStream, TrainConfig

    torch.manual_seed(0)
    codes = sorted(set(np.unique(demo_mask).tolist()) - {255})
    lut = np.full(256, 255, np.uint8)
    lut[codes] = np.arange(len(codes))
    cfg = TrainConfig(patch=96, rotate=False, scale_jitter=0.0, brightness=0.0, color=0.0)
    img = demo_image[::4, ::4].copy()
    msk = lut[demo_mask[::4, ::4]]
    ds = PatchStream([img], [msk], len(codes), cfg, [0.4] * 3, [0.2] * 3, seed=0)
    it = iter(ds)
    batch = [next(it) for _ in range(8)]
    x = torch.stack([b[0] for b in batch]).float()
    y = torch.stack([b[1] for b in batch])
    net = create_model("pspnet", classes=len(codes))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    crit = torch.nn.CrossEntropyLoss(ignore_index=255)
    losses = []
    for _ in range(12):
        loss = crit(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def _demo_dataset(root, demo_items):
    """The demo sample as a LumenStone-layout dataset (split "train")."""
    import shutil

    for it in demo_items:
        (root / "imgs/train").mkdir(parents=True, exist_ok=True)
        (root / "masks/train").mkdir(parents=True, exist_ok=True)
        shutil.copy(it.image, root / "imgs/train" / it.image.name)
        shutil.copy(it.mask, root / "masks/train" / it.mask.name)


def test_train_command_end_to_end(tmp_path, demo_items):
    """Two iterations of the real trainer on the demo sample write a loadable model."""
    from core.segmentation.train import TrainConfig, train

    _demo_dataset(tmp_path / "d", demo_items)
    cfg = TrainConfig(iterations=2, val_every=2, batch_size=2, patch=64, scale=0.25, workers=0, tile=128, val_fraction=0.34)
    config = train(tmp_path / "d", tmp_path / "m", cfg, log=lambda s: None, progress=False)
    assert config["validation"]["n_images"] == 1
    assert set(config["reference_colors"]) <= {str(c) for c in config["classes"]}
    from core.io import read_mask
    from core.segmentation.assemblage import assemblage_from_masks

    train_masks = [read_mask(tmp_path / "d/masks/train" / f"{s}.png") for s in config["training"]["train_images"]]
    assert config["assemblage"] == assemblage_from_masks(train_masks, config["classes"])
    assert config["assemblage"]["n_images"] == 2 and config["assemblage"]["exclusive"]
    m = load_model(tmp_path / "m", device="cpu")
    assert m.scale == 0.25


def test_training_resumes_with_the_weight_average(tmp_path, demo_items):
    """A resumed run continues from the saved iteration and keeps the averaged weights apart from the raw ones."""
    import torch

    from core.segmentation.train import TrainConfig, train

    _demo_dataset(tmp_path / "d", demo_items)
    cfg = TrainConfig(iterations=2, val_every=2, batch_size=2, patch=64, scale=0.25, workers=0, tile=128,
                      val_fraction=0.34, ema_decay=0.9)
    train(tmp_path / "d", tmp_path / "m", cfg, log=lambda s: None, progress=False)
    ck = torch.load(tmp_path / "m/checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 2 and ck["ema_steps"] == 2
    w = "encoder.conv1.weight"
    assert not torch.equal(ck["ema"][w], ck["net"][w])
    cfg.iterations = 3
    config = train(tmp_path / "d", tmp_path / "m", cfg, resume=True, log=lambda s: None, progress=False)
    ck = torch.load(tmp_path / "m/checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 3 and ck["ema_steps"] == 3
    assert [h["iteration"] for h in config["training"]["history"]] == [2, 3]


def test_training_starts_from_another_models_weights(tmp_path, demo_items):
    """--init copies a model's weights (a zero learning rate keeps them), and refuses a model of another shape."""
    import cv2
    import torch

    from core.io import read_mask
    from core.segmentation.train import TrainConfig, train

    _demo_dataset(tmp_path / "d", demo_items)
    cfg = TrainConfig(iterations=1, val_every=1, batch_size=2, patch=64, scale=0.25, workers=0, tile=128,
                      val_fraction=0.34, ema_decay=0.9)
    train(tmp_path / "d", tmp_path / "a", cfg, log=lambda s: None, progress=False)
    cfg.lr = 0.0
    cfg.seed = 7  # a different random start, which the copied weights must replace
    train(tmp_path / "d", tmp_path / "b", cfg, init=tmp_path / "a", log=lambda s: None, progress=False)
    wa = torch.load(tmp_path / "a/weights.pt", weights_only=True)
    wb = torch.load(tmp_path / "b/weights.pt", weights_only=True)
    w = "encoder.conv1.weight"
    assert torch.equal(wa[w], wb[w])
    # a model with an edge head gives its network (the head cannot follow a network that changes)
    from core.segmentation.head import HeadedNet

    src = load_model(tmp_path / "a", device="cpu")
    save_model(tmp_path / "h", HeadedNet(src.net, len(src.classes)), {**src.config, "head": {"width": 32}})
    log = []
    train(tmp_path / "d", tmp_path / "g", cfg, init=tmp_path / "h", log=log.append, progress=False)
    assert torch.equal(wa[w], torch.load(tmp_path / "g/weights.pt", weights_only=True)[w])
    assert any("edge head is left out" in line for line in log)
    assert "head" not in json.loads((tmp_path / "g/config.json").read_text())
    # a dataset showing fewer minerals keeps the starting model's classes
    cfg_a = json.loads((tmp_path / "a/config.json").read_text())
    for mask in (tmp_path / "d/masks/train").iterdir():  # background only; everything else unlabelled
        codes = read_mask(mask)
        cv2.imwrite(str(mask), np.where(codes == 0, 0, 255).astype(np.uint8))
    config = train(tmp_path / "d", tmp_path / "e", cfg, init=tmp_path / "a", log=lambda s: None, progress=False)
    assert config["classes"] == cfg_a["classes"]
    for mask in (tmp_path / "d/masks/train").iterdir():  # a mineral the starting model never learnt
        codes = read_mask(mask).copy()
        codes[:8, :8] = 13
        cv2.imwrite(str(mask), codes)
    with pytest.raises(ValueError, match=r"class codes \[13\] that it does not know"):
        train(tmp_path / "d", tmp_path / "f", cfg, init=tmp_path / "a", log=lambda s: None, progress=False)
    _demo_dataset(tmp_path / "d2", demo_items)
    cfg.arch = "unet"
    with pytest.raises(ValueError, match="architecture pspnet"):
        train(tmp_path / "d2", tmp_path / "c", cfg, init=tmp_path / "a", log=lambda s: None, progress=False)


def test_fine_tuning_can_keep_the_starting_models_batch_norm_statistics(tmp_path, demo_items):
    """--freeze-bn: the running statistics stay those of --init through steps and validations; without it they move."""
    import torch

    from core.segmentation.train import TrainConfig, train

    _demo_dataset(tmp_path / "d", demo_items)
    cfg = TrainConfig(iterations=1, val_every=1, batch_size=2, patch=64, scale=0.25, workers=0, tile=128,
                      val_fraction=0.34, ema_decay=0.0)
    train(tmp_path / "d", tmp_path / "a", cfg, log=lambda s: None, progress=False)
    stat = "encoder.bn1.running_mean"
    start = torch.load(tmp_path / "a/weights.pt", weights_only=True)
    cfg.iterations, cfg.freeze_bn = 3, True
    train(tmp_path / "d", tmp_path / "f", cfg, init=tmp_path / "a", log=lambda s: None, progress=False)
    frozen = torch.load(tmp_path / "f/checkpoint.pt", weights_only=True)["net"]
    assert torch.allclose(frozen[stat].float(), start[stat].float(), atol=1e-3)
    w = "encoder.conv1.weight"
    assert not torch.allclose(frozen[w].float(), start[w].float(), atol=1e-4)  # the weights do train
    cfg.freeze_bn = False
    train(tmp_path / "d", tmp_path / "m", cfg, init=tmp_path / "a", log=lambda s: None, progress=False)
    moved = torch.load(tmp_path / "m/checkpoint.pt", weights_only=True)["net"]
    assert not torch.allclose(moved[stat].float(), start[stat].float(), atol=1e-3)


def test_a_new_edge_head_leaves_the_output_unchanged_and_trains_with_the_pspnet_frozen():
    from core.segmentation.head import HeadedNet

    torch.manual_seed(0)
    base = create_model("pspnet", classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        before = base(x)
    net = HeadedNet(base, 4, 3, width=8, freeze_base=True)
    with torch.inference_mode():
        assert torch.equal(net.eval()(x), before)  # the head's last layer starts at zero
    frozen = {k: v.clone() for k, v in net.base.state_dict().items()}
    net.train()
    assert not net.base.training and net.head.training
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    y = torch.randint(0, 4, (2, 64, 64))
    y[:, :8] = 255
    crit = torch.nn.CrossEntropyLoss(ignore_index=255)
    losses = []
    for _ in range(15):
        loss = crit(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    # the PSPNet's weights and batch-norm statistics are untouched
    assert all(torch.equal(frozen[k], v) for k, v in net.base.state_dict().items())
    with pytest.raises(ValueError, match="PSPNet"):
        HeadedNet(create_model("unet", classes=4), 4)


def test_a_model_folder_with_an_edge_head_round_trips(tmp_path):
    from core.segmentation.head import HeadedNet

    torch.manual_seed(1)
    net = HeadedNet(create_model("pspnet", classes=3), 3, 3, width=8).eval()
    torch.nn.init.normal_(net.head.out.weight, std=0.1)  # a head that changes the output
    save_model(tmp_path / "h", net, _config([0, 6, 8], head={"width": 8}))
    m = load_model(tmp_path / "h", device="cpu")
    assert isinstance(m.net, HeadedNet)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        a, b = net.half().float()(x), m.net(x)
        plain = net.base(x)
    assert torch.allclose(a, b, atol=1e-3) and not torch.allclose(b, plain, atol=1e-2)
    # a config edited to name a head the weights do not hold
    save_model(tmp_path / "p", net.base, _config([0, 6, 8]))
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    (tmp_path / "p" / "config.json").write_text(json.dumps({**cfg, "head": {"width": 8}}))
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path / "p", device="cpu")


@pytest.mark.parametrize("arch", ["pspnet", "unet"])
def test_batchnorm_folding_gives_the_same_output(arch, tmp_path):
    from core.segmentation.model import fuse_batchnorm

    net = create_model(arch, "resnet18", classes=4).eval()
    # non-trivial running statistics, as after training
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    fused = fuse_batchnorm(net, 3)
    assert fused is not None
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in fused.modules())
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        assert torch.allclose(fused(x), net(x), atol=1e-4)
    # no convolution-and-normalisation pair to fold: no copy
    assert fuse_batchnorm(_Pointwise(3).eval(), 3) is None
    save_model(tmp_path / "m", net, _config([0, 1, 6, 8], architecture=arch))
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.fused is not None and loaded.inference_net is loaded.fused


class _SizeDependent(torch.nn.Module):
    """Python control flow on the input size: a traced graph would keep only the branch it saw."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x) if x.shape[-1] == 128 else 2 * self.conv(x)


def test_a_saved_model_runs_from_its_inference_graph(tmp_path):
    from core.segmentation.model import GRAPH_FILE, trace_inference

    torch.manual_seed(0)
    net = create_model("pspnet", classes=4).eval()
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    save_model(tmp_path / "m", net, _config([0, 1, 6, 8]))
    # only the weights PSPNet runs: much smaller than the encoder's full weights
    assert (tmp_path / "m" / GRAPH_FILE).stat().st_size < 0.3 * (tmp_path / "m" / "weights.pt").stat().st_size
    m = load_model(tmp_path / "m", device="cpu")
    assert isinstance(m.fused, torch.jit.ScriptModule) and m._net is None  # nothing built yet
    x = torch.randn(3, 3, 96, 160)  # neither the traced batch nor size
    with torch.inference_mode():
        from_graph = m.inference_net(x)
        built = m.net(x)
    assert m._net is not None and torch.allclose(from_graph, built, atol=1e-4)
    img = (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)
    plain = SegmentationModel(net=m.net, config=m.config, device=m.device)
    assert np.allclose(predict_scaled(m, img), predict_scaled(plain, img), atol=1e-4)

    # weights replaced without a new graph: the graph is not used, the new weights are
    state = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "m" / "weights.pt")
    m2 = load_model(tmp_path / "m", device="cpu")
    assert not isinstance(m2.fused, torch.jit.ScriptModule)
    with torch.inference_mode():
        assert not torch.allclose(m2.inference_net(x), from_graph, atol=1e-3)
    # a graph made by another torch release, or a config edited since: not used either
    save_model(tmp_path / "m", net, _config([0, 1, 6, 8]))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    for edit in ({"inference_graph": {**cfg["inference_graph"], "torch": "1.0.0"}}, {"classes": [0, 1, 6, 7]}):
        (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, **edit}))
        assert not isinstance(load_model(tmp_path / "m", device="cpu").fused, torch.jit.ScriptModule)

    # a network whose trace would not hold at other sizes gets no graph, and a stale one is removed
    odd = _SizeDependent().eval()
    assert trace_inference(odd, 3) is None
    save_model(tmp_path / "m", odd, _config([0, 6]))
    assert not (tmp_path / "m" / GRAPH_FILE).exists()
    assert "inference_graph" not in json.loads((tmp_path / "m" / "config.json").read_text())


def test_the_shipped_model_segments_without_building_its_network():
    """models/default carries a graph that matches its weights: loading it imports no segmentation library."""
    import subprocess
    import sys

    code = ("import sys; from core.segmentation.model import load_model; import torch; m = load_model(device='cpu'); "
            "assert isinstance(m.fused, torch.jit.ScriptModule), type(m.fused); "
            "assert 'segmentation_models_pytorch' not in sys.modules and m._net is None; "
            "y = m.inference_net(torch.zeros(1, 3, 64, 64)); assert y.shape == (1, len(m.classes), 64, 64)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).resolve().parents[1]))


def test_float16_conversion_matches_numpy_bit_for_bit():
    from core.segmentation.infer import to_float16

    rng = np.random.default_rng(3)
    p = rng.random((3, 40, 50)).astype(np.float32)
    p[0, :10] = 10.0 ** rng.uniform(-30, -4, (10, 50))  # subnormal and zero in float16
    p[1, :5] = 0
    p = p[:, :, ::-1]  # not contiguous
    assert np.array_equal(to_float16(p).view(np.uint16), p.astype(np.float16).view(np.uint16))
    h = p.astype(np.float16)
    assert to_float16(h) is h


def _model_zip(folder, arcname: str = "mine", extra: dict | None = None) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, f"{arcname}/{p.name}" if arcname else p.name)
        for n, data in (extra or {}).items():
            z.writestr(n, data)
    return buf.getvalue()


def test_a_model_archive_loads_its_weights_only(tmp_path, monkeypatch):
    """A user's model zip: the same network as its folder; its inference graph is never read; bad archives are
    refused with what is wrong, without the server's temporary paths."""
    import json

    from core.segmentation import create_model, load_model, load_model_archive, save_model

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", classes=3, in_channels=3)
    cfg = {"architecture": "unet", "encoder": "resnet18", "in_channels": 3, "classes": [0, 1, 5], "scale": 1.0,
           "tile": 64, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    folder = save_model(tmp_path / "m", net, cfg)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = load_model(folder, device="cpu").fused(x)
    for arc in ("mine", ""):
        m = load_model_archive(_model_zip(folder, arc), device="cpu", name="fallback")
        assert m.name == (arc or "fallback")
        with torch.no_grad():
            assert torch.allclose(m.fused(x), ref, atol=1e-5)
    # an inference graph in the archive is never even looked at (torch.jit.load is not for untrusted files)
    import core.segmentation.model as model_module

    def refuse(*a, **k):
        raise AssertionError("an uploaded model's graph was read")

    monkeypatch.setattr(model_module, "_load_graph", refuse)
    (folder / "inference.pt").write_bytes(b"not a graph")
    with torch.no_grad():
        assert torch.allclose(load_model_archive(_model_zip(folder), device="cpu").fused(x), ref, atol=1e-5)
    monkeypatch.undo()
    cases = {
        b"not a zip": "not a zip file",
        _model_zip(folder, extra={"other/config.json": "{}", "other/weights.pt": b"x"}): "several models",
        _model_zip(folder, extra={"deep/er/config.json": "{}"}).replace(b"mine/weights.pt", b"mine/weights.px"):
            "one config.json and one weights.pt",
    }
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    (tmp_path / "bad" / "weights.pt").write_bytes((folder / "weights.pt").read_bytes())
    cases[_model_zip(tmp_path / "bad")] = "not valid JSON"
    c2 = dict(cfg, classes=[0, 1, 5, 6])  # the weights hold three classes
    (tmp_path / "bad" / "config.json").write_text(json.dumps(c2))
    cases[_model_zip(tmp_path / "bad")] = "weights do not match the config"
    for data, why in cases.items():
        with pytest.raises(ValueError, match=why) as e:
            load_model_archive(data, device="cpu")
        assert "orelens-model-" not in str(e.value), e.value


def test_a_damaged_model_archive_is_refused_as_damaged(tmp_path):
    """A model zip whose weights are garbage, or whose bytes were damaged on the way (a checksum that fails), is
    refused with a ValueError that says so, not with torch's pickler message or an unhandled zip error."""
    import io
    import zipfile

    from core.segmentation import create_model, load_model_archive, save_model

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", classes=3, in_channels=3)
    cfg = {"architecture": "unet", "encoder": "resnet18", "in_channels": 3, "classes": [0, 1, 5], "scale": 1.0,
           "tile": 64, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    folder = save_model(tmp_path / "m", net, cfg)
    good = _model_zip(folder, "mine")
    assert load_model_archive(good, device="cpu").name == "mine"
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        info = z.getinfo("mine/weights.pt")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    damaged = bytearray(good)
    damaged[start + 1000:start + 1064] = bytes(64)  # inside the stored weights: the CRC no longer holds
    with pytest.raises(ValueError, match=r"the archive's weights.pt is damaged .*download or zip the model again"):
        load_model_archive(bytes(damaged), device="cpu")
    (folder / "weights.pt").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="not readable as model weights") as e:
        load_model_archive(_model_zip(folder, "mine"), device="cpu")
    assert "pickl" not in str(e.value).lower() and "weights_only" not in str(e.value)


def test_finetuned_config_does_not_claim_the_parent_scores():
    from core.annotation.finetune import finetune
    from core.segmentation import SegmentationModel, create_model

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", classes=2, in_channels=3)
    cfg = {"name": "p", "architecture": "unet", "encoder": "resnet18", "in_channels": 3, "classes": [0, 1],
           "scale": 1.0, "tile": 64, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
           "validation": {"miou": 0.9}, "validation_full_resolution": {"miou": 0.8}}
    model = SegmentationModel(net=net, config=cfg, device=torch.device("cpu"))
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    tuned = finetune(model, [img], [mask], iterations=1, patch=64, batch_size=2)
    assert "validation" not in tuned.config and "validation_full_resolution" not in tuned.config
    assert tuned.config["finetune"]["parent_validation"] == {"validation": {"miou": 0.9},
                                                              "validation_full_resolution": {"miou": 0.8}}
