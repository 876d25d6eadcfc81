"""Score a model against ground-truth masks: per-class IoU, mIoU, pixel accuracy."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, metavar="DIR", help="folder of photographs")
    p.add_argument("--masks", required=True, metavar="DIR", help="folder of masks named <stem>.png")
    p.add_argument("--model", metavar="DIR", default=None, help="model folder (default: models/default)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", metavar="FILE", default=None, help="write the scores as JSON")
    from ..cli import add_white_level

    add_white_level(p)


def evaluate_folders(model, images_dir: Path, masks_dir: Path, *, progress=True, white_level: int | None = None):
    from tqdm import tqdm

    from .. import io as cio
    from .infer import predict
    from .metrics import ConfusionMatrix

    if not images_dir.is_dir():
        raise ValueError(f"{images_dir}: images folder not found")
    if not masks_dir.is_dir():
        raise ValueError(f"{masks_dir}: masks folder not found")
    files = sorted(f for f in images_dir.iterdir() if f.suffix.lower() in cio.IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{images_dir}: no images")
    pairs = []
    for f in files:
        m = masks_dir / f"{f.stem}.png"
        if not m.exists():
            raise ValueError(f"{f.name}: no mask {m}")
        pairs.append((f, m))
    cm = ConfusionMatrix()
    for f, m in tqdm(pairs, desc="evaluate", unit="image", disable=not progress):
        image = cio.read_image(f, max_value=white_level)
        gt = cio.read_mask(m, shape=image.shape[:2])
        cm.update(gt, predict(model, image).labels)
    return cm


def run(args) -> int:
    import numpy as np

    from ..minerals import by_code
    from ..cli import make_folder
    from .model import load_model

    if args.json:
        make_folder(Path(args.json).parent, "--json")  # before the images are segmented, not after
    model = load_model(args.model, device=args.device)
    cm = evaluate_folders(model, Path(args.images), Path(args.masks), white_level=args.white_level)
    s = cm.scores()
    print(f"{'code':>4}  {'mineral':<28} {'IoU':>7}")
    for c, v in sorted(s.iou.items()):
        print(f"{c:>4}  {by_code(c).name:<28} {v:7.4f}")
    print(f"mIoU {s.miou:.4f}   pixel accuracy {s.pixel_accuracy:.4f}   ({s.n_images} images, model {model.name})")
    unknown = sorted(c for c in s.iou if c not in model.classes)
    if unknown:
        known = [v for c, v in s.iou.items() if c in model.classes]
        print(f"note: the masks hold {', '.join(f'{by_code(c).name} ({c})' for c in unknown)}, which model "
              f"{model.name} was not trained to recognise (IoU 0 by construction); mIoU over the model's own "
              f"classes: {float(np.mean(known)) if known else float('nan'):.4f}")
    if args.json:
        out = s.as_dict()
        if unknown:
            out["not_in_model"] = unknown
            out["miou_model_classes"] = float(np.mean(known)) if known else None
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
