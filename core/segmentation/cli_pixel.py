"""Train the pixel expert of a model (core/segmentation/pixel.py) on a LumenStone-layout dataset, into the model's config."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR", help="LumenStone-layout folder (imgs/<split>/, masks/<split>/)")
    p.add_argument("--model", required=True, metavar="MODEL_DIR",
                   help="model folder whose config.json gains the expert (its weights are not touched); the "
                        "photographs it was validated on (training.val_images) are left out")
    p.add_argument("--per-class", type=int, default=4000, metavar="N",
                   help="pixels drawn per class and photograph (default 4000)")
    p.add_argument("--epochs", type=int, default=6, help="passes over the drawn pixels (default 6)")
    p.add_argument("--hidden", type=int, default=64, help="units per hidden layer (default 64)")
    p.add_argument("--subsample", type=int, default=2, choices=[1, 2, 3, 4],
                   help="work at 1/N of the model's working scale (default 2: a quarter of the pixels, fast enough "
                        "to add well under a second per photograph on two CPU cores)")
    p.add_argument("--weight", type=float, default=1.0,
                   help="weight of the expert's log-probabilities against the network's (default 1: independent "
                        "experts; 0 keeps it but switches it off)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from ..io import list_dataset, read_image, read_mask, rescale_pair
    from .pixel import fit, reduce, reduce_mask

    folder = Path(args.model)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{folder}: not a model folder (no config.json)")
    config = json.loads(cfg_path.read_text())
    if args.per_class < 10 or args.epochs < 1 or args.hidden < 4 or not np.isfinite(args.weight) or args.weight < 0:
        raise ValueError("--per-class must be at least 10, --epochs and --hidden positive, --weight 0 or more")
    held_out = set(config.get("training", {}).get("val_images", []))
    items = [it for it in list_dataset(args.data) if it.stem not in held_out]
    if not items:
        raise ValueError(f"{args.data}: no photograph with a mask outside the model's validation images")
    scale = float(config["scale"])
    images, masks = [], []
    for it in tqdm(items, desc="reading", unit="photo"):
        img = read_image(it.image)
        # the working scale, made as training and inference make it
        img, m = rescale_pair(img, read_mask(it.mask, shape=img.shape[:2]), scale)
        images.append(reduce(img, args.subsample))
        masks.append(reduce_mask(m, args.subsample))
    bar = tqdm(total=100, desc="pixel expert", unit="%")

    def progress(frac, msg):
        bar.n = round(100 * frac)
        bar.set_postfix_str(msg)
        bar.refresh()

    expert = fit(images, masks, [int(c) for c in config["classes"]], per_class=args.per_class, hidden=args.hidden,
                 epochs=args.epochs, seed=args.seed, progress=progress)
    bar.close()
    expert.weight = float(args.weight)
    expert.subsample = int(args.subsample)
    expert.info["held_out"] = sorted(held_out)
    config["pixel_expert"] = expert.to_config()
    tmp = cfg_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(cfg_path)
    print(f"pixel expert of {folder.name}: {len(images)} photographs, {expert.info['pixels']} pixels, "
          f"final loss {expert.info['final_loss']}, weight {expert.weight:g}; written to {cfg_path}")
    return 0
