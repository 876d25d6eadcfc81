"""Train an edge head (core.segmentation.head) on a trained PSPNet model folder, the PSPNet frozen.

    python bench/train_edge_head.py --model models/default --data ../shared/data/lumenstone --out runs/headed

The model's own training and validation photographs (its config's lists) are used again, so the held-out
photographs stay held out. Patches come from the class-balanced sampler with stronger augmentation than the
network had (scale ±25 %, brightness ±25 %, colour ±10 %), so that the frozen network is less sure of itself
than on the patches it was trained on. One-cycle schedule; the head of the last step is kept (no choice by
validation). Validation at the working scale, with and without the guided-filter refinement, is logged every
``--val-every`` steps. The output folder holds the PSPNet and the head, with the config's ``"head"`` entry.

``--head-weights FILE`` starts from a head state dict (from a ``--save-head`` file); with ``--steps 0`` this
only writes the model folder.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.io import list_dataset  # noqa: E402
from core.minerals import IGNORE  # noqa: E402
from core.segmentation import SegmentationModel, load_model, save_model  # noqa: E402
from core.segmentation.head import DEFAULT_HEAD_WIDTH, HeadedNet  # noqa: E402
from core.segmentation.infer import norm_stats  # noqa: E402
from core.segmentation.train import PatchStream, TrainConfig, _index_lut, _load, _validate  # noqa: E402


def validate(model: SegmentationModel, val, refine: bool) -> dict:
    s = _validate(model, val, refine=refine)
    return {"miou": round(s["miou"], 4), "pixel_accuracy": round(s["pixel_accuracy"], 4),
            "iou": {k: round(x, 3) for k, x in s["iou"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--data", default="../shared/data/lumenstone")
    ap.add_argument("--scale", type=float, default=None,
                    help="scale of the data to the working scale (default: the model's; 1.0 for a copy already "
                         "written at the working scale)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=DEFAULT_HEAD_WIDTH)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--head-weights", default=None)
    ap.add_argument("--save-head", default=None, help="also write the head's state dict here at every validation")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.time()

    base = load_model(a.model, device="cpu")
    if base.config.get("head"):
        sys.exit(f"{a.model} already has an edge head")
    K, classes = len(base.classes), base.classes
    net = HeadedNet(base.net, K, base.in_channels, width=a.width, freeze_base=True)
    if a.head_weights:
        net.head.load_state_dict(torch.load(a.head_weights, map_location="cpu", weights_only=True))
    config = copy.deepcopy(base.config)
    model = SegmentationModel(net=net.eval(), config=config, device=torch.device("cpu"))

    scale = base.scale if a.scale is None else a.scale
    items = {it.stem: it for it in list_dataset(a.data)}
    tr_names, val_names = config["training"]["train_images"], config["training"]["val_images"]
    missing = [s for s in tr_names + val_names if s not in items]
    if missing:
        sys.exit(f"{a.data} lacks the model's photographs {missing[:5]}")
    train_set = [_load(items[s], scale) for s in tr_names]
    val_set = [_load(items[s], scale) for s in val_names]
    print(f"{len(train_set)} training, {len(val_set)} validation photographs ({time.time() - t0:.0f} s)", flush=True)

    history = []
    if a.steps > 0:
        lut = _index_lut(classes)
        cfg = TrainConfig(patch=a.patch, batch_size=a.batch_size, scale_jitter=0.25, brightness=0.25, color=0.10)
        mean, std = norm_stats(base)
        stream = PatchStream([t.image for t in train_set], [lut[t.mask] for t in train_set], K, cfg, mean, std,
                             seed=a.seed + 1)
        loader = DataLoader(stream, batch_size=a.batch_size, num_workers=1)
        opt = torch.optim.Adam(net.head.parameters(), lr=a.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.1)
        crit = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
        start = validate(model, val_set, False), validate(model, val_set, True)
        history.append({"step": 0, "val": start[0], "val_refined": start[1]})
        print(json.dumps(history[-1]), flush=True)
        losses, step = [], 0
        net.train()
        for x, y in loader:
            loss = crit(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0:
                print(f"step {step}: loss {np.mean(losses[-50:]):.4f}, {(time.time() - t0) / 60:.1f} min", flush=True)
            if step % a.val_every == 0 or step == a.steps:
                net.eval()
                if a.save_head:
                    torch.save(net.head.state_dict(), a.save_head)
                history.append({"step": step, "loss": round(float(np.mean(losses[-50:])), 4),
                                "val": validate(model, val_set, False), "val_refined": validate(model, val_set, True),
                                "minutes": round((time.time() - t0) / 60, 1)})
                print(json.dumps(history[-1]), flush=True)
                net.train()
            if step >= a.steps:
                break
        net.eval()
    final = validate(model, val_set, True)
    config["name"] = Path(a.out).name
    config["head"] = {
        "width": a.width,
        "training": {"from": base.name, "steps": a.steps, "batch_size": a.batch_size, "patch": a.patch,
                     "lr": a.lr, "schedule": "one-cycle", "augmentation": {"scale": 0.25, "brightness": 0.25,
                                                                           "colour": 0.10},
                     "base_frozen": True, "base_validation": base.config.get("validation"), "history": history, "minutes": round((time.time() - t0) / 60, 1)},
    }
    config["validation"] = {**final, "scale": "working scale", "images": val_names,
                            "note": "with the edge head and the guided-filter refinement"}
    save_model(a.out, net, config)
    print(f"written {a.out}: validation mIoU {final['miou']}, pixel accuracy {final['pixel_accuracy']}", flush=True)


if __name__ == "__main__":
    main()
