"""Train a segmentation model on a LumenStone-layout dataset."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    d = TrainConfig()
    p.add_argument("--data", required=True, metavar="DIR", help="LumenStone-layout folder (imgs/<split>/, masks/<split>/)")
    p.add_argument("--val", metavar="DIR", default=None, help="validation folder; default: hold out --val-fraction of --data")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write (config.json, weights.pt)")
    p.add_argument("--arch", default=d.arch, help="pspnet, upernet, unet, fpn or deeplabv3plus (default pspnet)")
    p.add_argument("--encoder", default=d.encoder, help="encoder name (default resnet18)")
    p.add_argument("--scale", type=float, default=d.scale, help="working scale relative to the photographs (default 0.5)")
    p.add_argument("--patch", type=int, default=d.patch, help="patch side at the working scale (default 256)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers (each seeded differently)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (with a final validation) after this long (default 0: no limit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema", type=float, default=d.ema_decay, metavar="DECAY",
                   help=f"weight averaging decay; the average is validated and saved (default {d.ema_decay}, 0 = off)")
    p.add_argument("--xpl", metavar="ENCODING", default=None,
                   help="train with crossed-polar channels: every image needs its XPL shots (any stage angles) in "
                        "<data>/xpl/<split>/<stem>/; they are aligned to the image and encoded as ENCODING "
                        "('compact': mean, range and standard deviation over the shots; 'raw': every shot)")
    p.add_argument("--init", metavar="MODEL_DIR", default=None,
                   help="start from this model's weights (same architecture, encoder and input channels; its classes "
                        "are kept, so the masks may show fewer minerals)")
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint.pt")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep the batch-normalisation statistics of the starting weights (for fine-tuning with --init "
                        "and small batches)")


def run(args) -> int:
    from .model import ARCHITECTURES
    from .train import TrainConfig, train

    ARCHITECTURES.get(args.arch)
    if not 0.05 <= args.scale <= 1.0:
        raise ValueError(f"--scale must be between 0.05 and 1, got {args.scale}")
    if not 0.0 <= args.ema < 1.0:
        raise ValueError(f"--ema must be in [0, 1), got {args.ema}")
    if args.patch % 32:
        raise ValueError(f"--patch must be a multiple of 32, got {args.patch}")
    # checked before the images are read, not found out by the training loop later
    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--val-every", args.val_every, 1),
                               ("--iterations", args.iterations, 0), ("--workers", args.workers, 0)):
        if value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be a positive learning rate, got {args.lr}")
    from pathlib import Path

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: is a file; give a folder for the model")
    xpl = None
    if args.xpl is not None:
        from ..registration import ENCODINGS

        xpl = ENCODINGS.get_key(args.xpl)
    cfg = TrainConfig(arch=args.arch, encoder=args.encoder, scale=args.scale, patch=args.patch,
                      batch_size=args.batch_size, iterations=args.iterations, val_every=args.val_every,
                      val_fraction=args.val_fraction, lr=args.lr, workers=args.workers, device=args.device,
                      max_minutes=args.max_minutes, seed=args.seed, ema_decay=args.ema,
                      xpl=xpl, freeze_bn=args.freeze_bn)
    config = train(args.data, args.out, cfg, val=args.val, resume=args.resume, init=args.init)
    v = config.get("validation", {})
    print(f"best validation mIoU {v.get('miou', float('nan')):.4f}, pixel accuracy "
          f"{v.get('pixel_accuracy', float('nan')):.4f}; model written to {args.out}")
    return 0
