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


def bare_forward(image: np.ndarray, repeats: int) -> float:
    net = create_model("pspnet", "resnet18", classes=10).eval()
    h, w = image.shape[:2]
    H, W = (h + 7) // 8 * 8, (w + 7) // 8 * 8
    x = torch.zeros(1, 3, H, W)
    x[0, :, :h, :w] = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return min(times)


def segment_command(image_path: str, model: str, out: str, repeats: int) -> tuple[float, float]:
    """Whole-process time, and the command's own per-image time (read, segment, write)."""
    import json

    times, inner = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "core", "segment", image_path, "--out", out, "--model", model,
                        "--device", "cpu", "--json", f"{out}/seg.json"], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
        inner.append(next(iter(json.loads(Path(f"{out}/seg.json").read_text())["images"].values()))["seconds"])
    return min(times), min(inner)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=str(ROOT.parent / "shared/data/lumenstone/imgs/train/05.jpg"))
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    image = read_image(a.image)
    out = "/tmp/orelens_speed"
    seg, per_image = segment_command(a.image, a.model, out, a.repeats)
    fwd = bare_forward(image, a.repeats)
    print(f"image {image.shape[1]}x{image.shape[0]}, torch threads {torch.get_num_threads()}")
    print(f"bare PSPNet-ResNet18 forward, full resolution: {fwd:.2f} s (best of {a.repeats})")
    print(f"python -m core segment (whole process: start, model load, read, infer, write): {seg:.2f} s "
          f"(best of {a.repeats})")
    print(f"segment, per image inside the command (read, segment, write mask): {per_image:.2f} s")
    print(f"ratio per-image segment / bare forward: {per_image / fwd:.2f} (target <= 1.5); "
          f"whole process / bare forward: {seg / fwd:.2f}")


if __name__ == "__main__":
    main()
