"""``python -m core <command>``: the engine, headless.

Each sub-command lives in ``core/<domain>/cli.py`` with two functions:
``configure(parser)`` adds its arguments and ``run(args) -> int`` does the
work (heavy imports inside ``run`` so that ``--help`` stays fast). Errors a
user can fix are raised as ``ValueError`` and printed as one sentence on
stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

__all__ = ["COMMANDS", "add_pixel_size", "add_white_level", "build_parser", "main", "make_folder"]

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("core.segmentation.cli_segment", "segment images into LumenStone class masks"),
    "evaluate": ("core.segmentation.cli_evaluate", "score a model against ground-truth masks (mIoU, pixel accuracy)"),
    "train": ("core.segmentation.cli_train", "train a segmentation model on a LumenStone-layout dataset"),
    "train-pixel": ("core.segmentation.cli_pixel", "train a model's pixel expert (a second opinion per pixel)"),
    "calibrate": ("core.calibration.cli", "colour-correct images from partial annotation (and flat-field)"),
    "stitch": ("core.stitching.cli", "stitch overlapping tiles into one panorama"),
    "register": ("core.registration.cli", "align crossed-polar (XPL) shots to the plane-polarised image"),
    "simulate-xpl": ("core.registration.cli_simulate", "build a SIMULATED crossed-polar training set from a dataset"),
    "annotate": ("core.annotation.cli_annotate", "propagate scribbles into a full mask with superpixels"),
    "uncertainty": ("core.annotation.cli_uncertainty", "map where the model is unsure"),
    "stats": ("core.stats.cli", "modal mineralogy, grain sizes and associations from masks"),
    "pointcount": ("core.stats.cli_pointcount", "point counting: a grid of points, and a mask checked against a count"),
}


def make_folder(folder: Path, what: str) -> Path:
    """Create ``folder`` (and its parents) for the output named ``what`` (e.g. "--out"); ValueError, before any
    work is done, where a file stands in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{what}: cannot make the folder {folder}: a file of that name (or of a folder above it) "
                         "is in the way") from None
    return folder


def add_white_level(parser: argparse.ArgumentParser, what: str = "photographs") -> None:
    """``--white-level N`` for the commands that read photographs (``core.io.read_image(max_value=N)``)."""
    parser.add_argument("--white-level", type=int, default=None, metavar="N",
                        help=f"white level of 16-bit {what}, e.g. 4095 for a 12-bit camera's values saved unscaled "
                             "(default: the file's MaxSampleValue tag, else 65535)")


def add_pixel_size(parser: argparse.ArgumentParser, what: str,
                   default: str = "the pixel size the input file records, if any; core.io.read_pixel_size") -> None:
    """``--pixel-size UM`` (µm per pixel) for the commands that write images or masks: recorded in what they write
    (a PNG's physical pixel size, a TIFF's resolution) and used for scale bars; ``default`` says what is recorded
    without it."""
    parser.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                        help=f"pixel size in µm per pixel, recorded in the {what} (default: {default})")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit status 2 with one line, like every other user error
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _load(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            return None
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``only``, other commands' modules are not imported (faster start-up)."""
    parser = _Parser(prog="python -m core", description="OreLens: ore-mineral identification in polished-section photographs.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for name, (module, help_) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_)
            continue
        mod = _load(module)
        if mod is None:
            p = sub.add_parser(name, help=f"{help_} (not built yet)", description=f"{help_}. This command is not built yet.")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(_run=_not_built(name))
        else:
            p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def _not_built(name):
    def run(args):
        sys.stderr.write(f"python -m core {name}: this command is not built yet in this version of OreLens.\n")
        return 3

    return run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except ValueError as e:
        sys.stderr.write(f"python -m core {args.command}: error: {e}\n")
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        sys.stderr.write(f"python -m core {args.command}: error: {e.strerror or e}: {e.filename}\n")
        return 2
    except MemoryError:
        sys.stderr.write(f"python -m core {args.command}: error: out of memory; try smaller images\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as e:  # an internal fault, not the user's: keep the message short unless debugging
        if os.environ.get("ORELENS_DEBUG"):
            raise
        sys.stderr.write(f"python -m core {args.command}: internal error: {type(e).__name__}: {e} "
                         "(set ORELENS_DEBUG=1 for a traceback)\n")
        return 1
