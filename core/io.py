"""Reading, validating and writing images, masks and LumenStone-layout datasets.

All user-supplied data enters through this module. Every problem with a file
becomes a ``ValueError`` whose message says what was wrong and what to do, so
the CLI and the app can show one clear sentence instead of a traceback.
"""
from __future__ import annotations

import io as _io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile

from .minerals import CODES, IGNORE, MINERALS, colorize

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "IMAGE_SUFFIXES",
    "expand_folders",
    "read_image",
    "read_mask",
    "read_pixel_size",
    "check_pixel_size",
    "common_pixel_size",
    "write_mask",
    "write_image",
    "tiff_resolution",
    "encode_png",
    "encode_jpeg",
    "overlay",
    "DatasetItem",
    "list_dataset",
    "safe_name",
    "display_copy",
    "rescale_pair",
]

# A 5x5 panorama of 3396x2547 frames is ~12000x8000 = 96 Mpx; allow twice that.
# Anything larger is refused before decoding so a forged header cannot exhaust RAM.
MAX_PIXELS = 200_000_000
MIN_SIDE = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
Image.MAX_IMAGE_PIXELS = None  # we enforce MAX_PIXELS ourselves, with a clearer message
ImageFile.LOAD_TRUNCATED_IMAGES = False

Source = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


def _name_of(src: Source) -> str:
    if isinstance(src, (str, os.PathLike)):
        return Path(src).name
    return getattr(src, "name", None) or "uploaded file"


def _read_bytes(src: Source) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.exists():
            raise ValueError(f"{p}: no such file")
        if p.is_dir():
            raise ValueError(f"{p}: is a folder, expected an image file")
        return p.read_bytes()
    if hasattr(src, "getvalue"):
        return bytes(src.getvalue())
    if hasattr(src, "read"):
        if hasattr(src, "seek"):
            src.seek(0)
        return src.read()
    raise ValueError(f"cannot read an image from a {type(src).__name__}")


def _check_size(w: int, h: int, name: str, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ValueError(
            f"{name}: {w}x{h} px is larger than the limit of {max_pixels / 1e6:.0f} Mpx; "
            "split it into tiles or downscale it first"
        )
    if min(w, h) < MIN_SIDE:
        raise ValueError(f"{name}: {w}x{h} px is too small; images must be at least {MIN_SIDE} px on each side")


def _is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_tiff_without_pillow(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """A TIFF that Pillow cannot open (floating-point RGB, BigTIFF, many samples), read by tifffile, with its
    size checked from the header before the pixels are decoded."""
    import tifffile

    try:
        with tifffile.TiffFile(_io.BytesIO(data)) as tif:
            page = tif.pages[0]
            h, w = int(page.imagelength), int(page.imagewidth)
            _check_size(w, h, name, max_pixels)
            arr = page.asarray()
            axes = page.axes
    except ValueError as e:
        if str(e).startswith(f"{name}:"):
            raise
        raise ValueError(f"{name}: the TIFF is truncated or corrupt") from None
    except Exception:
        raise ValueError(f"{name}: the TIFF is truncated or corrupt") from None
    if arr.ndim == 3 and axes.endswith("YX"):  # samples stored plane by plane
        arr = np.moveaxis(arr, 0, 2)
    return arr


def _declared_max(data: bytes) -> int | None:
    """The largest sample value a 16-bit TIFF declares (its MaxSampleValue tag, as cameras with 10-, 12- or
    14-bit sensors write it), or None when the file declares none or the full 16-bit range."""
    if not _is_tiff(data):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(_io.BytesIO(data)) as tif:
            tag = tif.pages[0].tags.get("MaxSampleValue")
            if tag is None:
                return None
            v = int(np.max(np.atleast_1d(tag.value)))
    except Exception:  # an unreadable tag leaves the full range
        return None
    return v if 255 < v < 65535 else None


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image | None:
    """The image opened by Pillow with its size checked; None for a TIFF only tifffile can read."""
    if len(data) == 0:
        raise ValueError(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(_io.BytesIO(data))
    except Exception:
        if _is_tiff(data):
            return None
        raise ValueError(
            f"{name}: not a readable image; use JPEG, PNG or TIFF"
        ) from None
    w, h = im.size
    _check_size(w, h, name, max_pixels)
    return im


def _decode_high_depth(data: bytes, name: str) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None:
        try:
            import tifffile

            arr = tifffile.imread(_io.BytesIO(data))
        except Exception:
            raise ValueError(f"{name}: the file is truncated or corrupt") from None
    else:
        if arr.ndim == 3 and arr.shape[2] >= 3:
            arr = np.concatenate([arr[..., 2::-1], arr[..., 3:]], axis=2)
    return arr


def _to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha
        arr = np.repeat(arr[..., :1], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., :3]
    else:
        raise ValueError(f"{name}: unsupported image layout {arr.shape}")
    return np.ascontiguousarray(arr)


def _decode(im: Image.Image, data: bytes, name: str) -> np.ndarray:
    """The pixels of an image Pillow has opened: high bit depths and TIFFs through OpenCV or tifffile."""
    high_depth = im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or (
        im.format == "TIFF" and im.mode not in ("1", "L", "P", "RGB", "RGBA", "CMYK", "LA")
    )
    if high_depth or im.format == "TIFF":
        arr = _decode_high_depth(data, name)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if im.mode == "CMYK" and im.format == "JPEG":
                    im.load()
                    im = im.convert("RGB")
                elif im.mode in ("P", "1", "LA", "PA", "RGBA", "CMYK", "YCbCr", "HSV", "LAB"):
                    im = im.convert("RGBA" if im.mode in ("P", "PA", "LA") else "RGB")
                else:
                    im.load()
                arr = np.asarray(im)
        except (OSError, SyntaxError, ValueError):
            raise ValueError(f"{name}: the file is truncated or corrupt") from None
    return arr


def read_image(
    src: Source,
    *,
    dtype: str = "uint8",
    max_pixels: int = MAX_PIXELS,
    max_value: int | None = None,
) -> np.ndarray:
    """Read a photograph as RGB.

    Accepts JPEG, PNG, TIFF and BMP in 8 or 16 bits per channel, grayscale,
    RGBA (alpha dropped), palette and CMYK; TIFFs also in floating point
    (0-1) and signed integers. A 16-bit TIFF that declares a smaller range
    (MaxSampleValue, e.g. 4095 from a 12-bit camera) is scaled by that range.

    Parameters
    ----------
    src : path, bytes or file-like
        The image.
    dtype : {"uint8", "float32"}
        ``"uint8"`` scales 16-bit data to 8 bits; ``"float32"`` returns values
        in [0, 1] with the file's full precision (for calibration).
    max_pixels : int
        Refuse images with more pixels than this before decoding them.
    max_value : int, optional
        The white level of 16-bit data (4095 for a 12-bit camera's values stored right-aligned), overriding the
        file's MaxSampleValue tag and the full 16-bit range; 8-bit and floating-point data ignore it.

    Returns
    -------
    image : (M, N, 3) ndarray
        uint8 or float32 RGB.

    Raises
    ------
    ValueError
        Empty, corrupt, truncated, too large, too small or not an image.
    """
    if dtype not in ("uint8", "float32"):
        raise ValueError(f"dtype must be 'uint8' or 'float32', not {dtype!r}")
    if max_value is not None and not (255 < int(max_value) <= 65535):
        raise ValueError(f"the white level of 16-bit data must be between 256 and 65535, not {max_value}")
    name = _name_of(src)
    data = _read_bytes(src)
    im = _open_checked(data, name, max_pixels)
    arr = _read_tiff_without_pillow(data, name, max_pixels) if im is None else _decode(im, data, name)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    arr = _to_rgb(arr, name)
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        declared = int(max_value) if max_value is not None else _declared_max(data)
        scale = float(declared or 65535)
        if declared:
            arr = np.minimum(arr, np.uint16(declared))
    elif arr.dtype in (np.int32, np.uint32):
        scale = 65535.0 if arr.max(initial=0) <= 65535 else float(arr.max())
    elif arr.dtype in (np.int8, np.int16):  # signed camera data: negative values are noise below black
        scale = float(np.iinfo(arr.dtype).max)
        arr = np.clip(arr, 0, None)
    elif arr.dtype.kind == "f":
        a = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        arr = np.clip(a, 0, 1) if a.max(initial=0) <= 1.0 else np.clip(a / max(a.max(), 1e-9), 0, 1)
        scale = 1.0
    else:
        raise ValueError(f"{name}: unsupported pixel type {arr.dtype}")
    if dtype == "float32":
        out = arr.astype(np.float32)  # divided in place: a panorama's float copies are 1 GB each
        out /= np.float32(scale)
        return out
    if arr.dtype == np.uint8:
        return arr
    out = np.empty(arr.shape, np.uint8)
    for rows in _row_blocks(arr.shape):  # in bands: a float64 copy of a 16-bit panorama would take 2.3 GB
        out[rows] = np.clip(np.rint(arr[rows].astype(np.float64) * (255.0 / scale)), 0, 255)
    return out


_BLOCK_SAMPLES = 1 << 22  # values per band of the conversions done in bands (32 MB in float64)


def _row_blocks(shape: tuple[int, ...]):
    """Slices of consecutive rows of an array of ``shape``, about :data:`_BLOCK_SAMPLES` values each."""
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, _BLOCK_SAMPLES // per_row)
    for y in range(0, shape[0], step):
        yield slice(y, min(y + step, shape[0]))


_COLOR_TO_CODE = {m.color: m.code for m in MINERALS}


def read_mask(
    src: Source,
    *,
    shape: tuple[int, int] | None = None,
    allow_unknown: bool = False,
) -> np.ndarray:
    """Read a mask of LumenStone class codes.

    Parameters
    ----------
    src : path, bytes or file-like
        8-bit single-channel PNG of codes (255 = unlabelled), or an RGB mask
        painted in the LumenStone colours.
    shape : (M, N) tuple, optional
        Expected height and width (the image's); a mismatch is an error.
    allow_unknown : bool
        If False (default) codes outside the catalogue are an error.

    Returns
    -------
    mask : (M, N) uint8 ndarray
    """
    name = _name_of(src)
    data = _read_bytes(src)
    im = _open_checked(data, name, MAX_PIXELS)
    if im is None:
        raise ValueError(f"{name}: not a readable mask; save masks as 8-bit PNG of class codes")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError):
        raise ValueError(f"{name}: the mask file is truncated or corrupt") from None
    if im.mode in ("L", "P", "I", "I;16", "1"):
        arr = np.asarray(im if im.mode != "P" else im)
        if arr.dtype != np.uint8:
            if arr.max(initial=0) > 255:
                raise ValueError(f"{name}: mask values above 255; a mask holds class codes 0-14 and 255")
            arr = arr.astype(np.uint8)
    else:
        rgb = np.asarray(im.convert("RGB"))
        if np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]):
            arr = rgb[..., 0].copy()
        else:
            arr = np.full(rgb.shape[:2], IGNORE, np.uint8)
            packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
            known = np.zeros(packed.shape, bool)
            for color, code in _COLOR_TO_CODE.items():
                sel = packed == ((color[0] << 16) | (color[1] << 8) | color[2])
                arr[sel] = code
                known |= sel
            white = packed == 0xFFFFFF
            known |= white
            if not known.all():
                raise ValueError(
                    f"{name}: colour mask contains colours that are not LumenStone class colours; "
                    "save masks as 8-bit PNG of class codes"
                )
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if shape is not None and arr.shape != tuple(shape[:2]):
        raise ValueError(
            f"{name}: mask is {arr.shape[1]}x{arr.shape[0]} px but the image is "
            f"{shape[1]}x{shape[0]} px; masks must match their image"
        )
    if not allow_unknown:
        valid = np.zeros(256, bool)
        valid[list(CODES)] = True
        valid[IGNORE] = True
        bad = np.unique(arr[~valid[arr]])
        if bad.size:
            raise ValueError(
                f"{name}: mask contains unknown class codes {bad.tolist()[:10]}; "
                f"valid codes are {list(CODES)} and 255 (unlabelled)"
            )
    return arr


# A pixel size recorded in a file is believed between these (µm per pixel): a microscope photograph lies well
# inside, and the 72-600 dpi that cameras and editors write by default (42-350 µm) lies outside.
PIXEL_SIZE_RANGE = (1e-3, 25.0)
GIVEN_PIXEL_SIZE_RANGE = (1e-4, 1000.0)  # what a user may give (the pages' fields allow the same)
_UNIT_UM = {"micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0, "mm": 1e3, "nm": 1e-3,
            "cm": 1e4, "m": 1e6}


def check_pixel_size(value, what: str = "the pixel size") -> float:
    """``value`` as a float of µm per pixel; ``ValueError`` saying so when it is not a number within
    :data:`GIVEN_PIXEL_SIZE_RANGE`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of µm per pixel, not {value!r}") from None
    if not (v > 0 and np.isfinite(v)):
        raise ValueError(f"{what} must be a positive number of µm per pixel, not {value}")
    lo, hi = GIVEN_PIXEL_SIZE_RANGE
    if not lo <= v <= hi:
        raise ValueError(f"{what} must be between {lo:g} and {hi:g} µm per pixel (a microscope photograph's pixel "
                         f"is a fraction of a µm to a few µm), not {value:g}")
    return v


def _believable(um: float | None) -> float | None:
    if um is None or not np.isfinite(um):
        return None
    lo, hi = PIXEL_SIZE_RANGE
    return float(f"{um:.6g}") if lo <= um <= hi else None  # 6 digits: a PNG keeps whole pixels per metre


def _square(x: float, y: float | None) -> float | None:
    if not (x and x > 0) or (y is not None and y > 0 and abs(x - y) > 0.01 * max(x, y)):
        return None  # no resolution, or pixels that are not square
    return x


def _ratio(v) -> float | None:
    try:
        if isinstance(v, tuple):
            return float(v[0]) / float(v[1]) if float(v[1]) else None
        return float(v)
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None


def _tiff_pixel_size(fh) -> float | None:
    import tifffile

    with tifffile.TiffFile(fh) as t:
        ome = t.ome_metadata
        if ome:
            m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
            if m:
                u = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
                factor = _UNIT_UM.get((u.group(1) if u else "µm").lower().replace("μ", "µ"))
                return float(m.group(1)) * factor if factor else None
        tags = t.pages[0].tags
        x = _ratio(tags["XResolution"].value) if "XResolution" in tags else None
        y = _ratio(tags["YResolution"].value) if "YResolution" in tags else None
        per = _square(x or 0.0, y)
        if per is None:
            return None
        ij = t.imagej_metadata or {}
        if ij.get("unit"):  # ImageJ: pixels per calibrated unit
            factor = _UNIT_UM.get(str(ij["unit"]).lower().replace("μ", "µ"))
            return factor / per if factor else None
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        return {2: 25400.0, 3: 10000.0}.get(unit, 0.0) / per or None


def read_pixel_size(src: Source) -> float | None:
    """The pixel size (µm per pixel) a file records, or None when it records none worth believing.

    Read from a TIFF's OME-XML (``PhysicalSizeX``), its ImageJ calibration (``unit`` with the resolution tags),
    or its resolution tags in centimetres or inches; from a PNG's physical pixel dimensions (``pHYs``, as OreLens
    writes its masks), a JPEG's JFIF or EXIF density, or a BMP's. Only sizes between 0.001 and 25 µm are believed:
    the 72-600 dpi that cameras and editors record by default are not a microscope calibration.
    """
    try:  # a file on disk is opened, not read: only its header is (a panorama is read once, by read_image)
        fh = open(src, "rb") if isinstance(src, (str, os.PathLike)) else _io.BytesIO(_read_bytes(src))
    except (OSError, ValueError):
        return None
    try:
        with fh:
            if _is_tiff(fh.read(4)):
                fh.seek(0)
                return _believable(_tiff_pixel_size(fh))
            fh.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dpi = Image.open(fh).info.get("dpi")
    except Exception:  # an unreadable file records nothing; reading its pixels says why
        return None
    if not isinstance(dpi, tuple) or len(dpi) != 2:
        return None
    per = _square(_ratio(dpi[0]) or 0.0, _ratio(dpi[1]))
    return _believable(25400.0 / per) if per else None


def common_pixel_size(sizes) -> float | None:
    """The pixel size every one of ``sizes`` (µm per pixel, None for unknown) agrees on within 1 % (their mean),
    which a panorama of such tiles keeps; None when one is unknown or they differ."""
    sizes = list(sizes)
    if not sizes or any(v is None for v in sizes):
        return None
    return float(f"{np.mean(sizes):.6g}") if max(sizes) <= min(sizes) * 1.01 else None


def _png_dpi(pixel_um: float | None) -> dict:
    """Pillow's PNG keyword that writes ``pixel_um`` as the file's physical pixel size (pixels per metre)."""
    if pixel_um is None:
        return {}
    return {"dpi": (25400.0 / check_pixel_size(pixel_um),) * 2}


def encode_png(array: np.ndarray, *, pixel_um: float | None = None) -> bytes:
    """PNG bytes of a uint8 (M, N) or (M, N, 3) array; ``pixel_um`` (µm per pixel) is recorded in the file."""
    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=3, **_png_dpi(pixel_um))
    return buf.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 92) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_mask(path: str | os.PathLike, mask: np.ndarray, *, pixel_um: float | None = None) -> Path:
    """Write a mask of codes as an 8-bit PNG; ``pixel_um`` (µm per pixel) is recorded in the file."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(p, format="PNG", **_png_dpi(pixel_um))
    return p


def tiff_resolution(pixel_um: float | None) -> dict:
    """tifffile keywords recording ``pixel_um`` (µm per pixel) as the resolution in pixels per centimetre."""
    if pixel_um is None:
        return {}
    per_cm = 1e4 / check_pixel_size(pixel_um)
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95,
                pixel_um: float | None = None) -> Path:
    """Write an RGB uint8 image; format from the suffix (JPEG, PNG, TIFF).

    ``pixel_um`` (µm per pixel) is recorded in a PNG or TIFF (a JPEG's 16-bit density field cannot hold a
    microscope's resolution, so JPEGs go without)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    image = np.ascontiguousarray(image)
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(p, image, bigtiff=image.nbytes > 2**31, compression="zlib", **tiff_resolution(pixel_um))
    elif suffix in (".jpg", ".jpeg"):
        Image.fromarray(image).save(p, format="JPEG", quality=quality)
    else:
        Image.fromarray(image).save(p, format="PNG", **_png_dpi(pixel_um))
    return p


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, *, skip_background: bool = False) -> np.ndarray:
    """Blend the LumenStone colours of ``mask`` over ``image``.

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
    mask : (M, N) uint8 ndarray
    alpha : float
        Opacity of the colours, 0..1.
    skip_background : bool
        Leave background (code 0) and unlabelled pixels unpainted.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    result = np.empty(mask.shape + (3,), np.uint8)
    for rows in _row_blocks(image.shape):  # in bands: float copies of a whole panorama would take several GB
        img, m = image[rows], mask[rows]
        out = img.astype(np.float32) * (1 - alpha) + colorize(m).astype(np.float32) * alpha
        if skip_background:
            keep = (m == 0) | (m == IGNORE)
            out[keep] = img[keep]
        result[rows] = np.clip(out + 0.5, 0, 255)
    return result


@dataclass(frozen=True)
class DatasetItem:
    stem: str
    image: Path
    mask: Path | None


def list_dataset(root: str | os.PathLike, split: str | None = None, *, require_masks: bool = True) -> list[DatasetItem]:
    """List a LumenStone-layout dataset: ``imgs/<split>/<stem>.jpg`` + ``masks/<split>/<stem>.png``.

    ``root`` may also be a folder holding ``imgs/`` and ``masks/`` directly, or
    ``split=None`` to gather every split.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: dataset folder not found")
    img_root, mask_root = root / "imgs", root / "masks"
    if not img_root.is_dir():
        raise ValueError(f"{root}: not a LumenStone-layout dataset (expected imgs/<split>/ and masks/<split>/)")
    if split is not None:
        dirs = [img_root / split]
    else:
        dirs = [d for d in sorted(img_root.iterdir()) if d.is_dir()] or [img_root]
    items: list[DatasetItem] = []
    for d in dirs:
        rel = d.relative_to(img_root)
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            m = mask_root / rel / (f.stem + ".png")
            if not m.exists():
                if require_masks:
                    raise ValueError(f"{f}: no mask {m}; every image needs masks/<split>/<stem>.png")
                m = None
            items.append(DatasetItem(f.stem, f, m))
    if not items:
        raise ValueError(f"{root}: no images found under imgs/")
    return items


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def expand_folders(items, suffixes=IMAGE_SUFFIXES, *, what: str = "images") -> list[Path]:
    """``items`` (paths) with every folder replaced by its files ending in ``suffixes`` (sorted by name, not
    recursive); other paths are kept as given.

    Raises ValueError for a folder that holds no such file.
    """
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise ValueError(f"{p}: the folder holds no {what} ({', '.join(suffixes)})")
            paths += found
        else:
            paths.append(p)
    return paths


def safe_name(name: str, default: str = "image") -> str:
    """A file-system-safe stem from an uploaded file name (never used as a path)."""
    stem = Path(str(name).replace("\\", "/")).stem
    stem = _SAFE.sub("_", stem).strip("._")[:80]
    return stem or default


def rescale_pair(image: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask at ``scale`` (area averaging for the image, nearest code for the mask); both
    unchanged at scale 1."""
    import cv2

    if scale == 1.0:
        return image, mask
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))


def display_copy(image: np.ndarray, max_side: int = 1400) -> np.ndarray:
    """Downscaled copy for display (area interpolation); the input if small enough."""
    import cv2

    h, w = image.shape[:2]
    s = max(h, w)
    if s <= max_side:
        return image
    f = max_side / s
    interp = cv2.INTER_AREA if image.ndim == 3 else cv2.INTER_NEAREST
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp)
