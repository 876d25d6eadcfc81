"""The ``stitch`` command: files in, panorama and JSON transforms out."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import main
from core.io import read_image, write_image
from core.stitching.synthetic import make_tile_set, position_rmse


@pytest.fixture(scope="module")
def tile_files(tmp_path_factory, demo_image):
    ts = make_tile_set(demo_image, grid=(2, 3), seed=4)
    d = tmp_path_factory.mktemp("tiles")
    paths = []
    for k, t in enumerate(ts.tiles):
        p = d / f"t{k:02d}.png"
        write_image(p, t)
        paths.append(str(p))
    return ts, paths


def test_cli_writes_panorama_and_json(tmp_path, tile_files):
    ts, paths = tile_files
    out, js = tmp_path / "pano.tif", tmp_path / "pano.json"
    rc = main(["stitch", *paths, "--grid", "2x3", "--out", str(out), "--json", str(js), "--quiet"])
    assert rc == 0
    rec = json.loads(js.read_text())
    assert set(rec) >= {"tiles", "rmse_px", "seconds", "size"}
    assert list(rec["tiles"]) == [f"t{k:02d}.png" for k in range(6)]
    h = np.array([rec["tiles"][f"t{k:02d}.png"]["H"] for k in range(6)])
    assert h.shape == (6, 3, 3) and np.allclose(h[:, 2], [0, 0, 1])
    assert position_rmse(h, ts.truth, [t.shape[:2] for t in ts.tiles]) < 0.3
    pano = read_image(out)
    assert pano.shape[:2] == (rec["size"][1], rec["size"][0])
    # H maps pixel centres: tile 0's centre pixel shows the same content in the panorama
    t0 = ts.tiles[0]
    cy, cx = t0.shape[0] // 2, t0.shape[1] // 2
    x, y, _ = h[0] @ [cx, cy, 1]
    patch_t = t0[cy - 20:cy + 21, cx - 20:cx + 21].astype(float).mean(axis=2)
    xi, yi = int(round(x)), int(round(y))
    patch_p = pano[yi - 20:yi + 21, xi - 20:xi + 21].astype(float).mean(axis=2)
    assert np.corrcoef(patch_t.ravel(), patch_p.ravel())[0, 1] > 0.9


def test_cli_reads_12_bit_tiles_with_their_white_level(tmp_path, tile_files):
    import tifffile

    ts, _ = tile_files
    paths = {"8": [], "12": []}
    for k, t in enumerate(ts.tiles[:3]):
        write_image(tmp_path / f"e{k}.png", t)
        tifffile.imwrite(tmp_path / f"w{k}.tif", np.rint(t * (4095 / 255)).astype(np.uint16))
        paths["8"].append(str(tmp_path / f"e{k}.png"))
        paths["12"].append(str(tmp_path / f"w{k}.tif"))
    assert main(["stitch", *paths["8"], "--grid", "1x3", "--out", str(tmp_path / "p8.png"), "--quiet"]) == 0
    assert main(["stitch", *paths["12"], "--grid", "1x3", "--out", str(tmp_path / "p12.png"), "--quiet",
                 "--white-level", "4095"]) == 0
    assert np.array_equal(read_image(tmp_path / "p12.png"), read_image(tmp_path / "p8.png"))


def test_cli_user_errors(tmp_path, tile_files, capsys):
    _, paths = tile_files
    assert main(["stitch", *paths, "--grid", "2x2", "--out", str(tmp_path / "p.jpg")]) == 2
    assert "grid holds 4 tiles" in capsys.readouterr().err
    assert main(["stitch", *paths, "--out", str(tmp_path / "p.gif")]) == 2
    assert main(["stitch", *paths, "--matcher", "nope", "--out", str(tmp_path / "p.jpg")]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["stitch", paths[0], str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "p.jpg")]) == 2


def test_cli_names_the_tiles_that_match_nothing(tmp_path, demo_image, capsys):
    a, b = demo_image[:300, :300], demo_image[-300:, -300:][::-1]
    write_image(tmp_path / "left.png", a)
    write_image(tmp_path / "right.png", b)
    out = tmp_path / "pano.tif"
    rc = main(["stitch", str(tmp_path / "left.png"), str(tmp_path / "right.png"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert err[-1].startswith("python -m core stitch: error: tile 2 (right.png) could not be matched to the rest;"), err


def test_pixel_size_help_names_one_default_per_command():
    """``--pixel-size`` of ``stitch`` defaults to what the tiles agree on, of ``segment`` to what the photograph
    records; each help text says its own default, once."""
    import argparse

    from core.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    helps = {cmd: next(a.help for a in sub[cmd]._actions if "--pixel-size" in a.option_strings)
             for cmd in ("stitch", "segment")}
    assert all(h.count("default") == 1 for h in helps.values()), helps
    assert "every tile records, if they agree" in helps["stitch"] and "panorama" in helps["stitch"]
    assert "the input file records" in helps["segment"] and "masks" in helps["segment"]
