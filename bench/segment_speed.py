"""`segment` on a full 3396x2547 photograph against a bare PSPNet-ResNet18 forward pass of the same
full-resolution image, measured in the same run.

    python bench/segment_speed.py --image ../shared/data/lumenstone/imgs/train/05.jpg [--model models/default]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.io import read_image  # noqa: E402
from core.segmentation import create_model  # noqa: E402


def bare_forward(image: np.ndarray):
    """A function timing one bare full-resolution forward pass of an untrained PSPNet-ResNet18."""
    net = create_model("pspnet", "resnet18", classes=10).eval()
    h, w = image.shape[:2]
    H, W = (h + 7) // 8 * 8, (w + 7) // 8 * 8
    x = torch.zeros(1, 3, H, W)
    x[0, :, :h, :w] = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255

    def once() -> float:
        with torch.inference_mode():
            t = time.perf_counter()
            net(x)
            return time.perf_counter() - t

    return once


def segment_command(image_path: str, model: str, out: str, extra: list[str]) -> tuple[float, float]:
    """Whole-process time of one run, and the command's own per-image time (read, segment, write)."""
    import json

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "segment", image_path, "--out", out, "--model", model,
                    "--device", "cpu", "--json", f"{out}/seg.json", *extra], cwd=ROOT, check=True, capture_output=True)
    whole = time.perf_counter() - t
    return whole, next(iter(json.loads(Path(f"{out}/seg.json").read_text())["images"].values()))["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=str(ROOT.parent / "shared/data/lumenstone/imgs/train/05.jpg"))
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refine", default=None, help="passed to segment --refine (default: the model's config)")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    image = read_image(a.image)
    out = "/tmp/orelens_speed"
    extra = ["--refine", a.refine] if a.refine else []
    bare = bare_forward(image)
    # the two are interleaved, so that a change of the machine's speed during the run affects both alike
    runs, fwds = [], []
    for _ in range(a.repeats):
        runs.append(segment_command(a.image, a.model, out, extra))
        fwds.append(bare())
    seg, per_image = min(r[0] for r in runs), min(r[1] for r in runs)
    fwd = min(fwds)
    print(f"image {image.shape[1]}x{image.shape[0]}, torch threads {torch.get_num_threads()}")
    print(f"bare PSPNet-ResNet18 forward, full resolution: {fwd:.2f} s (best of {a.repeats})")
    print(f"python -m core segment (whole process: start, model load, read, infer, write): {seg:.2f} s "
          f"(best of {a.repeats})")
    print(f"segment, per image inside the command (read, segment, write mask): {per_image:.2f} s")
    print(f"ratio per-image segment / bare forward: {per_image / fwd:.2f} (target <= 1.5); "
          f"whole process / bare forward: {seg / fwd:.2f}")


if __name__ == "__main__":
    main()
