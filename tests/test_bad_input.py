"""Bad input through ``core.io``, through every CLI command that is built, and through every upload widget.

Each bad file either works correctly (16-bit TIFF, grayscale, RGBA, CMYK JPEG:
the pixels are checked against the truth) or is refused with one clear
sentence: a ``ValueError`` in the engine, one line on stderr with exit status 2
and no traceback in the CLI, ``st.error`` in the app with the rest of the
session's work left intact.

The CLI and page checks adapt to what is built: a command whose ``--help``
says "not built yet" is skipped with that reason, and a page without an upload
widget is skipped likewise; everything that is built is exercised.
"""
from __future__ import annotations

import argparse
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import io as cio

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


# --------------------------------------------------------------------------- the bad files


def _photo() -> np.ndarray:
    """A (96, 128, 3) uint8 crop of a real demo photograph (smooth enough for JPEG round trips)."""
    item = cio.list_dataset(ROOT / "samples", "demo")[0]
    img = cio.read_image(item.image)
    return np.ascontiguousarray(img[400:496, 600:728])


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` px but which holds almost no data."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _tiff16(arr16: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr16, photometric="rgb")
    return buf.getvalue()


PHOTO = _photo()
H, W = PHOTO.shape[:2]
GOOD_MASK = np.zeros((H, W), np.uint8)
GOOD_MASK[20:60, 30:90] = 6
GOOD_MASK[70:, :] = 255

# name -> (file name, bytes, expected): expected is None when the file must be refused
BAD_IMAGES: dict[str, tuple[str, bytes]] = {
    "zero_byte": ("empty.jpg", b""),
    "truncated_jpeg": ("truncated.jpg", _encode(PHOTO, "JPEG", quality=95)[:700]),
    "text_named_jpg": ("notes.jpg", b"These are my field notes, not a photograph.\n" * 20),
    "one_pixel": ("dot.png", _encode(np.zeros((1, 1, 3), np.uint8), "PNG")),
    "decompression_bomb": ("bomb.png", _png_claiming(60000, 60000)),
}
PHOTO16 = PHOTO.astype(np.uint16) * 257 + np.uint16(3)  # distinct low byte: a 16-bit file must keep its high byte
GOOD_ODD_IMAGES: dict[str, tuple[str, bytes]] = {
    "tiff_16bit": ("deep.tif", _tiff16(PHOTO16)),
    "grayscale": ("grey.png", _encode(PHOTO[..., 1], "PNG")),
    "rgba": ("alpha.png", _encode(np.dstack([PHOTO, np.full((H, W), 128, np.uint8)]), "PNG")),
    "cmyk_jpeg": ("cmyk.jpg", (lambda b: (Image.fromarray(PHOTO).convert("CMYK").save(b, "JPEG", quality=97), b.getvalue())[1])(io.BytesIO())),
}
_unknown = GOOD_MASK.copy()
_unknown[0:5, 0:5] = 77
BAD_MASKS: dict[str, tuple[str, bytes]] = {
    "mask_wrong_size": ("small.png", _encode(GOOD_MASK[: H // 2, : W // 2], "PNG")),
    "mask_unknown_codes": ("odd_codes.png", _encode(_unknown, "PNG")),
}


# --------------------------------------------------------------------------- core.io


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_read_image_refuses_with_one_sentence(case):
    name, data = BAD_IMAGES[case]
    with pytest.raises(ValueError) as err:
        cio.read_image(data)
    msg = str(err.value)
    assert "\n" not in msg and 10 < len(msg) < 300
    with pytest.raises(ValueError):  # the same from a named path
        cio.read_image(io.BytesIO(data))


def test_bad_image_messages_say_what_is_wrong(tmp_path):
    expect = {"zero_byte": "empty", "truncated_jpeg": "truncated or corrupt", "text_named_jpg": "not a readable image",
              "one_pixel": "too small", "decompression_bomb": "larger than the limit"}
    for case, words in expect.items():
        name, data = BAD_IMAGES[case]
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ValueError, match=words) as err:
            cio.read_image(p)
        assert name in str(err.value)  # the user learns which file


def test_bomb_is_refused_before_decoding():
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ValueError, match="60000x60000"):
        cio.read_image(BAD_IMAGES["decompression_bomb"][1])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50e6  # 60000x60000x3 would be 10.8 GB


def test_16bit_tiff_keeps_precision():
    u8 = cio.read_image(GOOD_ODD_IMAGES["tiff_16bit"][1])
    f32 = cio.read_image(GOOD_ODD_IMAGES["tiff_16bit"][1], dtype="float32")
    assert u8.dtype == np.uint8 and u8.shape == PHOTO.shape
    assert np.abs(u8.astype(int) - PHOTO).max() <= 1
    assert np.allclose(f32, PHOTO16 / 65535.0, atol=1e-6)


def _tiff(arr: np.ndarray, **kw) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def test_tiffs_pillow_cannot_open_are_read_by_tifffile():
    """Floating-point RGB TIFFs (as exported by image-analysis software) and planar ones are read, not
    refused as unreadable; their size is checked from the header before decoding, and a broken one is named."""
    f = PHOTO.astype(np.float32) / 255
    for data in (_tiff(f, photometric="rgb"), _tiff(np.moveaxis(f, 2, 0), photometric="rgb", planarconfig="separate")):
        assert np.abs(cio.read_image(data).astype(int) - PHOTO).max() <= 1
        assert np.allclose(cio.read_image(data, dtype="float32"), f, atol=1e-6)
    data = _tiff(f, photometric="rgb")
    with pytest.raises(ValueError, match=r"deep.tif: 128x96 px is larger than the limit"):
        cio.read_image(_named(data, "deep.tif"), max_pixels=1000)
    with pytest.raises(ValueError, match="deep.tif: the TIFF is truncated or corrupt"):
        cio.read_image(_named(data[: len(data) // 3], "deep.tif"))
    with pytest.raises(ValueError, match="deep.tif: not a readable mask"):
        cio.read_mask(_named(data, "deep.tif"))
    # five samples stored plane by plane (a multispectral export): the first three are the photograph
    planes = np.stack([PHOTO[..., 0], PHOTO[..., 1], PHOTO[..., 2], PHOTO[..., 0] // 2, PHOTO[..., 1] // 2])
    assert np.array_equal(cio.read_image(_tiff(planes, photometric="minisblack", planarconfig="separate")), PHOTO)
    # a 12-bit camera's 16-bit TIFF that says so is read on its declared range, not as a near-black picture
    twelve = (PHOTO.astype(np.int32) * 4095 // 255).astype(np.uint16)
    out = cio.read_image(_tiff(twelve, photometric="rgb", extratags=[(281, "H", 3, (4095,) * 3, True)]))
    assert np.abs(out.astype(int) - PHOTO).max() <= 1
    assert cio.read_image(_tiff(twelve, photometric="rgb")).max() <= 16  # no tag: the full 16-bit range
    # signed 16-bit camera data: 0..32767 is the range, negative noise is black
    signed = (PHOTO.astype(np.int16) * 128) - np.int16(64)
    out = cio.read_image(_tiff(signed, photometric="rgb"))
    assert np.abs(out.astype(float) - np.clip(signed, 0, None) / 32767 * 255).max() <= 0.5


def _named(data: bytes, name: str) -> io.BytesIO:
    buf = io.BytesIO(data)
    buf.name = name
    return buf


def test_grayscale_becomes_three_equal_channels():
    out = cio.read_image(GOOD_ODD_IMAGES["grayscale"][1])
    assert out.shape == PHOTO.shape
    for c in range(3):
        assert np.array_equal(out[..., c], PHOTO[..., 1])


def test_rgba_drops_alpha():
    assert np.array_equal(cio.read_image(GOOD_ODD_IMAGES["rgba"][1]), PHOTO)


def test_cmyk_jpeg_comes_back_as_rgb():
    out = cio.read_image(GOOD_ODD_IMAGES["cmyk_jpeg"][1])
    assert out.shape == PHOTO.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - PHOTO).mean() < 6  # JPEG loss only; no inverted or swapped channels


def test_masks_of_wrong_size_or_unknown_codes():
    assert np.array_equal(cio.read_mask(_encode(GOOD_MASK, "PNG"), shape=(H, W)), GOOD_MASK)
    with pytest.raises(ValueError, match=r"mask is \d+x\d+ px but the image is"):
        cio.read_mask(BAD_MASKS["mask_wrong_size"][1], shape=(H, W))
    with pytest.raises(ValueError, match=r"unknown class codes \[77\]"):
        cio.read_mask(BAD_MASKS["mask_unknown_codes"][1], shape=(H, W))
    for case in BAD_IMAGES:  # a broken file is refused as a mask too
        with pytest.raises(ValueError):
            cio.read_mask(BAD_IMAGES[case][1])


def test_safe_name_never_yields_a_path():
    for evil in ["../../etc/passwd", "..\\..\\boot.ini", "/abs/path/x.jpg", "a/../../b.png", "", "....", "~root/.ssh/id"]:
        s = cio.safe_name(evil)
        assert s and "/" not in s and "\\" not in s and not s.startswith(".")


# --------------------------------------------------------------------------- CLI


def _subparser(cmd: str) -> argparse.ArgumentParser:
    from core.cli import build_parser

    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[cmd]


def _built_commands() -> dict[str, bool]:
    """command -> built? (its ``python -m core <cmd> --help`` text does not say "not built yet")."""
    from core.cli import COMMANDS

    return {cmd: "not built yet" not in " ".join(_subparser(cmd).format_help().split()) for cmd in COMMANDS}


@pytest.fixture(scope="module")
def built():
    return _built_commands()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained PSPNet saved like a shipped model (the CLI needs some model to reach the image)."""
    import torch

    from core.segmentation import create_model, save_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    net = create_model("pspnet", "resnet18", classes=len(classes), in_channels=3)
    cfg = {"name": "tiny", "architecture": "pspnet", "encoder": "resnet18", "in_channels": 3, "classes": classes,
           "scale": 1.0, "tile": 64, "overlap": 16,
           "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
           "reference_colors": {str(c): [128.0, 128.0, 128.0] for c in classes}}
    return save_model(tmp_path_factory.mktemp("model") / "tiny", net, cfg)


def _files(tmp: Path, cases: dict[str, tuple[str, bytes]], case: str) -> Path:
    name, data = cases[case]
    d = tmp / case
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_bytes(data)
    return p


def _good_image(tmp: Path, stem: str = "good") -> Path:
    p = tmp / f"{stem}.png"
    p.write_bytes(_encode(PHOTO, "PNG"))
    return p


def _good_mask(tmp: Path, stem: str = "good") -> Path:
    d = tmp / "good_masks"
    d.mkdir(exist_ok=True)
    p = d / f"{stem}.png"
    p.write_bytes(_encode(GOOD_MASK, "PNG"))
    return p


def _invoke(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``python -m core`` in-process: exit status and stderr. An escaping exception is a traceback."""
    import torch

    from core.cli import main

    torch.set_num_threads(1)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = int(e.code or 0)
    err = capsys.readouterr().err
    return rc, err


def _assert_one_sentence(rc: int, err: str, *, name: str | None = None) -> None:
    # progress bars (tqdm, on stderr by convention) are not messages; everything else must be one line
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    assert rc == 2, f"exit status {rc}, stderr: {err!r}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert "usage:" not in err and "internal error" not in err
    if name:
        assert name in lines[0], f"the message should name the file {name}: {lines[0]!r}"


# How each built command takes an image / a mask. A command that is not listed here gets an
# invocation built from its argparse definition (see _generic_argv).
def _segment_argv(tmp, model, image=None, mask=None):
    if image is None:
        return None
    return ["segment", str(image), "--out", str(tmp / "out"), "--model", str(model), "--device", "cpu"]


def _evaluate_argv(tmp, model, image=None, mask=None):
    imgs, masks = tmp / "ev_imgs", tmp / "ev_masks"
    imgs.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    if image is not None:
        stem = Path(image).stem
        (imgs / Path(image).name).write_bytes(Path(image).read_bytes())
        (masks / f"{stem}.png").write_bytes(_encode(GOOD_MASK, "PNG"))
    else:
        (imgs / "good.png").write_bytes(_encode(PHOTO, "PNG"))
        (masks / "good.png").write_bytes(Path(mask).read_bytes())
    return ["evaluate", "--images", str(imgs), "--masks", str(masks), "--model", str(model), "--device", "cpu"]


def _out(tmp, name):
    (tmp / "out").mkdir(parents=True, exist_ok=True)
    return str(tmp / "out" / name)


def _calibrate_argv(tmp, model, image=None, mask=None):
    img = image if image is not None else _good_image(tmp)
    ann = mask if mask is not None else _good_mask(tmp)
    return ["calibrate", str(img), "--annotation", str(ann), "--out", _out(tmp, ""), "--reference", str(model)]


def _stitch_argv(tmp, model, image=None, mask=None):
    if image is None:
        return None
    return ["stitch", str(image), str(_good_image(tmp, "tile2")), "--out", _out(tmp, "pano.png")]


def _register_argv(tmp, model, image=None, mask=None):
    if image is None:
        return None
    return ["register", str(image), str(_good_image(tmp, "xpl1")), "--out", _out(tmp, "")]


def _annotate_argv(tmp, model, image=None, mask=None):
    img = image if image is not None else _good_image(tmp)
    scr = mask if mask is not None else _good_mask(tmp)
    return ["annotate", str(img), "--scribbles", str(scr), "--out", _out(tmp, "full.png")]


def _uncertainty_argv(tmp, model, image=None, mask=None):
    if image is None:
        return None
    return ["uncertainty", str(image), "--out", _out(tmp, "map.png"), "--model", str(model)]


def _stats_argv(tmp, model, image=None, mask=None):
    # stats reads masks; a broken file given as a mask must be refused like any image
    if image is not None:
        return ["stats", str(image), "--pixel-size", "1.0"]
    return ["stats", str(mask), "--pixel-size", "1.0", "--images", str(_good_image(tmp, Path(mask).stem))]


def _pointcount_argv(tmp, model, image=None, mask=None):
    # the grid reads a photograph's size; a mask given to the grid must be refused like any mask
    if image is not None:
        return ["pointcount", "grid", str(image), "--out", _out(tmp, "points.csv")]
    return ["pointcount", "grid", str(_good_image(tmp)), "--mask", str(mask), "--out", _out(tmp, "points.csv")]


RECIPES = {"pointcount": _pointcount_argv, "segment": _segment_argv, "evaluate": _evaluate_argv, "calibrate": _calibrate_argv,
           "stitch": _stitch_argv, "register": _register_argv, "annotate": _annotate_argv,
           "uncertainty": _uncertainty_argv, "stats": _stats_argv}
NO_IMAGE_INPUT = {"train", "train-pixel", "simulate-xpl"}  # work on a dataset folder; covered by the folder checks below


def _generic_argv(cmd: str, tmp: Path, model: Path, image=None, mask=None):
    """Fill a command's required arguments from its argparse definition.

    Arguments whose name mentions a mask/annotation/label get the mask (or a good one), model
    arguments the tiny model, output/JSON/CSV arguments a fresh path, anything else the image.
    Returns None when the command takes no mask but a mask case is asked for.
    """
    sub = _subparser(cmd)
    argv: list[str] = [cmd]
    used_mask = False
    good_img = _good_image(tmp)
    for act in sub._actions:
        if isinstance(act, argparse._HelpAction) or act.dest in ("_run",):
            continue
        if act.option_strings and not act.required:
            continue
        words = " ".join(str(x) for x in (act.dest, act.metavar, act.help) if x).lower()
        if act.dest.startswith(("out", "json", "csv", "xlsx", "report", "maps")):
            value = str(tmp / f"out_{act.dest}")
        elif any(w in words for w in ("mask", "annot", "label", "scribble")):
            value = str(mask) if mask is not None else str(_good_mask(tmp))
            used_mask = used_mask or mask is not None
        elif "model" in words:
            value = str(model)
        elif any(w in words for w in ("out", "json", "csv", "report", "save", "write")):
            value = str(tmp / f"out_{act.dest}")
        else:
            value = str(image) if image is not None else str(good_img)
        if act.choices:
            value = list(act.choices)[0]
        vals = [value]
        if act.nargs in ("+", "*") or (isinstance(act.nargs, int) and act.nargs > 1):
            n = act.nargs if isinstance(act.nargs, int) else 2
            vals = [value] + [str(_good_image(tmp, f"good{i}")) if value == str(image) else value for i in range(1, n)]
        argv += ([act.option_strings[0]] if act.option_strings else []) + vals
    if mask is not None and not used_mask:
        return None
    return argv


def _argv(cmd, tmp, model, *, image=None, mask=None):
    recipe = RECIPES.get(cmd)
    if recipe is not None:
        return recipe(tmp, model, image=image, mask=mask)
    return _generic_argv(cmd, tmp, model, image=image, mask=mask)


def _cli_commands():
    from core.cli import COMMANDS

    return [c for c in COMMANDS if c not in NO_IMAGE_INPUT]


@pytest.mark.parametrize("cmd", _cli_commands())
def test_cli_refuses_bad_images(cmd, built, tiny_model, tmp_path, capsys):
    if not built[cmd]:
        pytest.skip(f"`python -m core {cmd}` is not built yet")
    for case in BAD_IMAGES:
        path = _files(tmp_path, BAD_IMAGES, case)
        run_dir = tmp_path / f"run_{case}"
        run_dir.mkdir()
        argv = _argv(cmd, run_dir, tiny_model, image=path)
        rc, err = _invoke(argv, capsys)
        if rc == 2 and "usage:" in err and cmd not in RECIPES:
            pytest.skip(f"could not build an invocation of `{cmd}` from its arguments: {err.strip().splitlines()[-1]}")
        _assert_one_sentence(rc, err, name=path.name)


@pytest.mark.parametrize("cmd", _cli_commands())
def test_cli_accepts_odd_but_valid_images(cmd, built, tiny_model, tmp_path, capsys):
    if not built[cmd]:
        pytest.skip(f"`python -m core {cmd}` is not built yet")
    for case in GOOD_ODD_IMAGES:
        path = _files(tmp_path, GOOD_ODD_IMAGES, case)
        run_dir = tmp_path / f"run_{case}"
        run_dir.mkdir()
        argv = _argv(cmd, run_dir, tiny_model, image=path)
        rc, err = _invoke(argv, capsys)
        assert "Traceback" not in err and "internal error" not in err, err
        if cmd == "segment":
            assert rc == 0, err
            mask = cio.read_mask(run_dir / "out" / f"{path.stem}.png", allow_unknown=True)
            assert mask.shape == (H, W)
        else:
            # other commands may need more than an image to succeed, but never reject the format itself
            # register exits 1 when a shot cannot be aligned: a result about the content, not the format
            assert rc in (0, 2) or (cmd == "register" and rc == 1 and "could not be aligned" in err), err
            assert not any(w in err for w in ("not a readable image", "truncated or corrupt", "unsupported")), err


@pytest.mark.parametrize("cmd", _cli_commands())
def test_cli_refuses_bad_masks(cmd, built, tiny_model, tmp_path, capsys):
    if not built[cmd]:
        pytest.skip(f"`python -m core {cmd}` is not built yet")
    ran = False
    for case in BAD_MASKS:
        path = _files(tmp_path, BAD_MASKS, case)
        run_dir = tmp_path / f"run_{case}"
        run_dir.mkdir()
        argv = _argv(cmd, run_dir, tiny_model, mask=path)
        if argv is None:
            continue
        ran = True
        rc, err = _invoke(argv, capsys)
        _assert_one_sentence(rc, err)
        assert ("mask is" in err or "unknown class codes" in err or "size" in err), err
    if not ran:
        pytest.skip(f"`python -m core {cmd}` takes no mask")


@pytest.mark.parametrize("cmd", sorted(NO_IMAGE_INPUT))
def test_cli_dataset_commands_refuse_a_folder_that_is_not_a_dataset(cmd, built, tmp_path, capsys):
    if not built[cmd]:
        pytest.skip(f"`python -m core {cmd}` is not built yet")
    (tmp_path / "imgs").mkdir()
    _files(tmp_path, BAD_IMAGES, "text_named_jpg")
    sub = _subparser(cmd)
    required = [a for a in sub._actions if (a.required or not a.option_strings) and not isinstance(a, argparse._HelpAction)]
    argv = [cmd]
    for a in required:
        argv += ([a.option_strings[0]] if a.option_strings else []) + [str(tmp_path / ("out" if "out" in a.dest else "data"))]
    rc, err = _invoke(argv, capsys)
    _assert_one_sentence(rc, err)


def test_cli_as_a_process_prints_no_traceback(built, tiny_model, tmp_path):
    """The real ``python -m core`` process: one sentence on stderr, status 2, for a text file named .jpg."""
    cmds = [c for c in _cli_commands() if built[c]]
    if not cmds:
        pytest.skip("no CLI command that reads images is built yet")
    for cmd in cmds[:3]:  # each process imports torch; three are enough to prove the wiring
        path = _files(tmp_path / cmd, BAD_IMAGES, "text_named_jpg")
        argv = _argv(cmd, tmp_path / cmd, tiny_model, image=path)
        p = subprocess.run([PY, "-m", "core", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
        if "usage:" in p.stderr and cmd not in RECIPES:
            continue
        _assert_one_sentence(p.returncode, p.stderr, name=path.name)


def test_cli_outputs_blocked_by_a_file_are_refused_before_any_work(tiny_model, tmp_path, capsys):
    """An output path under a file (a typo'd --out that names an existing file) is one sentence and status 2,
    before an image is read or a model trained; nothing is written."""
    blocker = tmp_path / "results"
    blocker.write_text("notes")
    img, mask = _good_image(tmp_path), _good_mask(tmp_path)
    points = tmp_path / "points.csv"
    points.write_text("x,y,call_code\n10,10,0\n")
    cases = [
        (["segment", str(img), "--out", str(blocker), "--model", str(tiny_model)], str(blocker)),
        (["segment", str(img), "--out", str(tmp_path / "ok"), "--model", str(tiny_model),
          "--json", str(blocker / "r.json")], "--json"),
        (["annotate", str(img), "--scribbles", str(mask), "--out", str(blocker / "m" / "a.png")], "--out"),
        (["uncertainty", str(img), "--out", str(blocker / "u.png"), "--model", str(tiny_model)], "--out"),
        (["train", "--data", str(tmp_path), "--out", str(blocker)], "is a file"),
        (["evaluate", "--images", str(tmp_path), "--masks", str(tmp_path), "--model", str(tiny_model),
          "--json", str(blocker / "e.json")], "--json"),
        (["pointcount", "check", str(points), "--json", str(blocker / "p.json")], "--json"),
    ]
    for argv, said in cases:
        rc, err = _invoke(argv, capsys)
        _assert_one_sentence(rc, err)
        assert said in err and ("in the way" in err or "is a file" in err), (argv, err)
    assert blocker.read_text() == "notes"
    assert not (tmp_path / "ok" / "good.png").exists()  # the --json folder was refused before the image


def test_device_option_is_the_same_in_every_command(tmp_path, capsys):
    """``--device`` takes auto, cpu or cuda wherever it is offered, and anything else is refused by the parser
    before a model is loaded (``uncertainty`` once took any word and failed later)."""
    from core.cli import COMMANDS

    offered = []
    for cmd in COMMANDS:
        act = next((a for a in _subparser(cmd)._actions if "--device" in a.option_strings), None)
        if act is not None:
            offered.append(cmd)
            assert list(act.choices or []) == ["auto", "cpu", "cuda"] and act.default == "auto", cmd
    assert {"segment", "evaluate", "train", "uncertainty"} <= set(offered)
    rc, err = _invoke(["uncertainty", str(_good_image(tmp_path)), "--out", str(tmp_path / "u.png"),
                       "--device", "gpu"], capsys)
    assert rc == 2 and "invalid choice: 'gpu'" in err and "Traceback" not in err
    assert not (tmp_path / "u.png").exists()


def test_every_command_that_reads_photographs_takes_their_white_level(tiny_model, tmp_path, capsys):
    """12-bit camera values saved unscaled in a 16-bit file (no white-level tag) read with --white-level 4095 give
    what the 8-bit photograph gives, in evaluate, annotate and uncertainty as in segment."""
    import json

    eight, twelve = tmp_path / "eight", tmp_path / "twelve"
    eight.mkdir()
    twelve.mkdir()
    (eight / "p.png").write_bytes(_encode(PHOTO, "PNG"))
    (twelve / "p.tif").write_bytes(_tiff((PHOTO.astype(np.int32) * 4095 // 255).astype(np.uint16), photometric="rgb"))
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "p.png").write_bytes(_encode(GOOD_MASK, "PNG"))
    out = {}
    for d, extra in ((eight, []), (twelve, ["--white-level", "4095"])):
        img = next(d.iterdir())
        for argv in (["evaluate", "--images", str(d), "--masks", str(masks), "--model", str(tiny_model),
                      "--json", str(d / "e.json")],
                     ["annotate", str(img), "--scribbles", str(masks / "p.png"), "--out", str(d / "a.png")],
                     ["uncertainty", str(img), "--model", str(tiny_model), "--out", str(d / "u.png")]):
            rc, err = _invoke(argv + extra, capsys)
            assert rc == 0, (argv, err)
        out[d.name] = (json.loads((d / "e.json").read_text()), cio.read_mask(d / "a.png"),
                       np.asarray(Image.open(d / "u.png")))
    assert out["twelve"][0] == out["eight"][0]
    assert np.array_equal(out["twelve"][1], out["eight"][1]) and np.array_equal(out["twelve"][2], out["eight"][2])


@pytest.mark.parametrize("flag,value", [("--val-every", "0"), ("--batch-size", "0"), ("--workers", "-1"),
                                        ("--lr", "0"), ("--iterations", "-5")])
def test_train_refuses_bad_numbers_before_reading_the_data(flag, value, tmp_path, capsys):
    """Found out by the training loop, --val-every 0 stopped a run with an internal error after its first
    iteration; every such number is refused before the (here missing) dataset is even looked at."""
    rc, err = _invoke(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"), flag, value],
                      capsys)
    _assert_one_sentence(rc, err)
    assert flag in err and "dataset folder not found" not in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("value", ["0", "-2"])
def test_segment_refuses_a_batch_of_no_tiles_before_any_work(value, tmp_path, capsys, demo_items):
    rc, err = _invoke(["segment", str(demo_items[0].image), "--out", str(tmp_path / "o"), "--batch-size", value],
                      capsys)
    _assert_one_sentence(rc, err)
    assert "--batch-size must be at least 1" in err, err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- upload widgets in the app



PAGES = ["upload_calibrate", "stitch", "register_xpl", "segment", "annotate", "statistics"]


def _uploaders_of(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.sidebar.button[0].click().run()  # Load demo sample
    at.switch_page(f"pages/{page}.py").run()
    return at


def _name_for(uploader, case_name: str) -> str:
    allowed = [t.lower().lstrip(".") for t in uploader.allowed_type]
    stem, ext = case_name.rsplit(".", 1)
    if not allowed or ext in allowed:
        return case_name
    return f"{stem}.{allowed[0]}"


def _press_go(at) -> None:
    """Press an action button that some uploaders need after choosing files (never the demo loader)."""
    for b in at.main.button:
        label = (b.label or "").lower()
        if any(w in label for w in ("add", "upload", "import", "use ", "load")) and "demo" not in label:
            b.click()
            at.run()
            return


@pytest.mark.parametrize("page", PAGES)
def test_bad_uploads_show_error_and_keep_session(page):
    at = _uploaders_of(page)
    assert not at.exception, at.exception
    if not len(at.file_uploader):
        pytest.skip(f"pages/{page}.py has no upload widget (yet)")
    before = set(at.session_state["images"].keys())
    assert before, "the demo sample should be loaded"
    n = len(at.file_uploader)
    for i in range(n):
        label = (at.file_uploader[i].label or "").lower()
        cases = BAD_MASKS if any(w in label for w in ("mask", "annot", "label")) else BAD_IMAGES
        for case, (fname, data) in cases.items():
            # one session for all cases: each bad file in turn must leave the earlier work intact
            up = at.file_uploader[i]
            payload = (_name_for(up, fname), data, "application/octet-stream")
            up.set_value([payload] if up.accept_multiple_files else payload)
            at.run()
            if not len(at.error):
                _press_go(at)
            assert not at.exception, f"{page} uploader {i} {case}: {at.exception}"
            assert len(at.error) >= 1, f"{page} uploader {i} ({up.label!r}) showed no st.error for {case}"
            assert "Traceback" not in " ".join(e.value for e in at.error)
            after = set(at.session_state["images"].keys())
            assert before <= after, f"{page}: {case} removed the session's images {before - after}"
            for name in before:
                assert at.session_state["images"][name]["image"].shape[2] == 3
            assert len(at.file_uploader) == n, f"{page}: the upload widgets changed after {case}"
        at.file_uploader[i].set_value(None)
        at.run()
