"""Catalogue and I/O: every odd input type, corrupt files, clear errors."""
import io

import numpy as np
import pytest
from PIL import Image

from core import io as cio
from core import minerals
from core.registry import Registry


def _png(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_catalogue_codes_and_lookup():
    assert minerals.CODES == tuple(range(15))
    assert minerals.by_code(6).name == "pyrite"
    assert minerals.by_label("PY").code == 6
    assert minerals.by_label("magnetite").code == 3
    assert len({m.color for m in minerals.MINERALS}) == 15  # colours distinguish classes
    aniso = {m.label for m in minerals.MINERALS if m.anisotropic}
    assert {"po", "apy", "mrc", "cv", "hem"} <= aniso
    assert not minerals.by_code(6).anisotropic and minerals.by_code(6).reflectance > minerals.by_code(3).reflectance
    with pytest.raises(ValueError, match="valid codes"):
        minerals.by_code(42)
    with pytest.raises(ValueError, match="valid labels"):
        minerals.by_label("unobtainium")


def test_colorize_uses_catalogue_colours():
    mask = np.array([[0, 6], [255, 3]], np.uint8)
    rgb = minerals.colorize(mask)
    assert tuple(rgb[0, 1]) == minerals.by_code(6).color
    assert tuple(rgb[1, 1]) == minerals.by_code(3).color


def test_registry_suggests_nearest():
    r = Registry("method")
    r.add("white_balance", lambda: 1)
    with pytest.raises(ValueError, match="Did you mean 'white_balance'"):
        r.get("white_balanse")
    assert r.get("WHITE_BALANCE")() == 1


@pytest.fixture()
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_read_rgb_png_and_jpeg(rgb, tmp_path):
    assert np.array_equal(cio.read_image(_png(rgb)), rgb)
    p = tmp_path / "a.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    out = cio.read_image(p)
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_read_grayscale_rgba_palette_cmyk(rgb, tmp_path):
    g = rgb[..., 0]
    out = cio.read_image(_png(g))
    assert out.shape == (40, 60, 3) and np.array_equal(out[..., 1], g)
    rgba = np.dstack([rgb, np.full(g.shape, 7, np.uint8)])
    assert np.array_equal(cio.read_image(_png(rgba)), rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("P").save(buf, format="PNG")
    assert cio.read_image(buf.getvalue()).shape == (40, 60, 3)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    assert cio.read_image(buf.getvalue()).shape == (40, 60, 3)


def test_read_16bit_tiff_and_png_keeps_precision(tmp_path):
    import tifffile

    arr = (np.arange(40 * 60 * 3, dtype=np.uint32) * 9 % 65536).astype(np.uint16).reshape(40, 60, 3)
    p = tmp_path / "x.tif"
    tifffile.imwrite(p, arr)
    f = cio.read_image(p, dtype="float32")
    assert f.dtype == np.float32 and np.allclose(f, arr / 65535.0, atol=1e-6)
    u8 = cio.read_image(p)
    assert u8.dtype == np.uint8 and np.abs(u8.astype(int) - np.rint(arr / 257.0)).max() <= 1
    g16 = arr[..., 0]
    p2 = tmp_path / "g.png"
    Image.fromarray(g16).save(p2)
    assert cio.read_image(p2, dtype="float32").shape == (40, 60, 3)


def test_a_white_level_scales_right_aligned_16bit_data(tmp_path):
    import tifffile

    arr = (np.arange(40 * 60 * 3, dtype=np.uint32) % 4096).astype(np.uint16).reshape(40, 60, 3)  # 12-bit values
    arr[0, 0] = 4095
    p = tmp_path / "cam12.tif"
    tifffile.imwrite(p, arr)
    assert cio.read_image(p).max() == 16  # read on the 16-bit range: 4095 / 65535 of white
    u8 = cio.read_image(p, max_value=4095)
    assert u8.max() == 255 and np.array_equal(u8, np.rint(arr * (255 / 4095)).astype(np.uint8))
    f = cio.read_image(p, dtype="float32", max_value=4095)
    assert np.allclose(f, arr / 4095.0, atol=1e-6)
    # 8-bit data ignore it; an impossible white level is refused
    assert np.array_equal(cio.read_image(cio.encode_png(u8), max_value=4095), u8)
    for bad in (0, 255, 70000):
        with pytest.raises(ValueError, match="white level"):
            cio.read_image(p, max_value=bad)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
    ],
)
def test_bad_bytes(data, message):
    with pytest.raises(ValueError, match=message):
        cio.read_image(data)


def test_truncated_jpeg(rgb):
    buf = io.BytesIO()
    Image.fromarray(np.tile(rgb, (4, 4, 1))).save(buf, format="JPEG")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        cio.read_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_tiny_and_huge_images():
    with pytest.raises(ValueError, match="too small"):
        cio.read_image(_png(np.zeros((1, 1, 3), np.uint8)))
    # a PNG header claiming 60000x60000 px is refused before decoding
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ValueError, match="larger than the limit"):
        cio.read_image(bomb)


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        cio.read_image(tmp_path / "nope.jpg")
    with pytest.raises(ValueError, match="folder"):
        cio.read_image(tmp_path)


def test_masks_codes_colours_and_errors(tmp_path):
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:10] = 6
    m[0, 0] = 255
    p = cio.write_mask(tmp_path / "m.png", m)
    assert np.array_equal(cio.read_mask(p), m)
    assert np.array_equal(cio.read_mask(_png(minerals.colorize(m[1:, 1:]))), m[1:, 1:])
    with pytest.raises(ValueError, match="must match"):
        cio.read_mask(p, shape=(21, 30))
    bad = m.copy()
    bad[3, 3] = 77
    with pytest.raises(ValueError, match="unknown class codes \\[77\\]"):
        cio.read_mask(_png(bad))
    weird = np.zeros((20, 30, 3), np.uint8)
    weird[..., 0] = 13
    weird[..., 1] = 200
    with pytest.raises(ValueError, match="not LumenStone class colours"):
        cio.read_mask(_png(weird))


def test_overlay_and_display_copy(rgb):
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[:, 30:] = 6
    ov = cio.overlay(rgb, mask, 1.0)
    assert tuple(ov[0, 40]) == minerals.by_code(6).color
    ov0 = cio.overlay(rgb, mask, 0.7, skip_background=True)
    assert np.array_equal(ov0[:, :30], rgb[:, :30])
    big = np.zeros((3000, 1500, 3), np.uint8)
    assert cio.display_copy(big, 1000).shape == (1000, 500, 3)
    with pytest.raises(ValueError):
        cio.overlay(rgb, mask[:10], 0.5)


def test_dataset_listing(tmp_path, rgb):
    (tmp_path / "imgs" / "train").mkdir(parents=True)
    (tmp_path / "masks" / "train").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "imgs" / "train" / "s1.jpg")
    cio.write_mask(tmp_path / "masks" / "train" / "s1.png", np.zeros((40, 60), np.uint8))
    items = cio.list_dataset(tmp_path)
    assert [i.stem for i in items] == ["s1"]
    Image.fromarray(rgb).save(tmp_path / "imgs" / "train" / "s2.jpg")
    with pytest.raises(ValueError, match="no mask"):
        cio.list_dataset(tmp_path)
    with pytest.raises(ValueError, match="not a LumenStone-layout"):
        cio.list_dataset(tmp_path / "imgs")


def test_safe_name_never_a_path():
    assert cio.safe_name("../../etc/passwd") == "passwd"
    assert cio.safe_name("C:\\x\\my photo (1).JPG") == "my_photo_1"
    assert cio.safe_name("....") == "image"


def test_demo_sample_reads(demo_items):
    assert len(demo_items) == 3
    for it in demo_items:
        img = cio.read_image(it.image)
        cio.read_mask(it.mask, shape=img.shape[:2])


def _peak_bytes(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_16bit_and_overlay_of_a_panorama_are_converted_in_bands(tmp_path, monkeypatch):
    """A 16-bit panorama is scaled to 8 bits, and an overlay blended, a band of rows at a time: no float copy of
    the whole image (2.3 GB in float64 for 12000×8000 px), and the same values as converting it whole."""
    import tifffile

    arr = (np.arange(300 * 400 * 3, dtype=np.uint32) * 7 % 65536).astype(np.uint16).reshape(300, 400, 3)
    p = tmp_path / "pano.tif"
    tifffile.imwrite(p, arr)
    data = p.read_bytes()
    monkeypatch.setattr(cio, "_BLOCK_SAMPLES", 400 * 3 * 16)  # bands of 16 rows
    u8, peak = _peak_bytes(lambda: cio.read_image(data))
    whole = np.clip(np.rint(arr.astype(np.float64) * (255.0 / 65535)), 0, 255).astype(np.uint8)
    assert np.array_equal(u8, whole)
    assert peak < arr.size * 8  # less than one float64 copy of the image
    f32 = cio.read_image(data, dtype="float32")
    assert f32.dtype == np.float32 and np.allclose(f32, arr / 65535.0, atol=1e-6)

    mask = (np.arange(300 * 400).reshape(300, 400) % 7).astype(np.uint8)
    mask[:50] = minerals.IGNORE
    ov, peak = _peak_bytes(lambda: cio.overlay(u8, mask, 0.55, skip_background=True))
    full = u8.astype(np.float32) * 0.45 + minerals.colorize(mask).astype(np.float32) * 0.55
    keep = (mask == 0) | (mask == minerals.IGNORE)
    full[keep] = u8[keep]
    assert np.array_equal(ov, np.clip(full + 0.5, 0, 255).astype(np.uint8))
    assert peak < u8.size * 4  # less than one float32 copy of the image
