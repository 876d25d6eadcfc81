"""The stitching pipeline: pairs → pairwise registration → global adjustment → composition."""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .adjust import Alignment, adjust
from .compose import Photometric, estimate_photometric, render
from .matchers import PairMatch, TileStack, make_matcher

__all__ = ["StitchResult", "parse_grid", "candidate_pairs", "identical_tiles", "register", "stitch", "tile_names",
           "STAGES"]

STAGES = ("matching", "adjustment", "exposure", "composition")


@dataclass
class StitchResult:
    """A stitched panorama and how it was made.

    Attributes
    ----------
    panorama : (H, W, 3) uint8 ndarray
    alignment : Alignment
        ``alignment.transforms[k]`` maps tile ``k`` pixels to panorama pixels.
    photometric : Photometric
    seconds : float
    timings : dict
        Seconds per stage.
    """

    panorama: np.ndarray
    alignment: Alignment
    photometric: Photometric
    seconds: float
    timings: dict = field(default_factory=dict)

    @property
    def rmse_px(self) -> float:
        return self.alignment.rmse_px

    def to_json(self, names) -> dict:
        """The ``--json`` record: ``{"tiles": {name: {"H": 3×3}}, "rmse_px", "seconds", "size"}``.

        Raises
        ------
        ValueError
            If ``names`` are not one distinct name per tile (the record would hold fewer tiles than were stitched).
        """
        names = [str(n) for n in names]
        if len(names) != len(self.alignment.transforms):
            raise ValueError(f"{len(names)} tile names for {len(self.alignment.transforms)} stitched tiles")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two tiles are called {twice[0]}; give every tile its own name")
        return {
            "tiles": {n: {"H": np.round(h, 9).tolist()} for n, h in zip(names, self.alignment.transforms)},
            "rmse_px": round(float(self.alignment.rmse_px), 4),
            "seconds": round(float(self.seconds), 3),
            "size": [int(self.alignment.size[0]), int(self.alignment.size[1])],
            "model": self.alignment.model,
            "pairs": [[int(p.i), int(p.j), int(p.n), round(float(self.alignment.pair_rmse.get((p.i, p.j), 0.0)), 4)]
                      for p in self.alignment.pairs],
        }


def n_workers() -> int:
    """Threads for parallel work: the CPU cores available to this process (at most 4)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def parse_grid(text: str | None) -> tuple[int, int] | None:
    """``"3x4"`` → (3, 4) rows × columns; None or "" → None.

    Raises
    ------
    ValueError
        If the text is not ROWSxCOLS with positive integers.
    """
    if text is None or str(text).strip() == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX×*]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"grid {text!r} is not ROWSxCOLS (for example 3x3)")
    return int(m.group(1)), int(m.group(2))


def tile_names(paths) -> list[str]:
    """Names for tile files: each file's name, or, where two files share a name (``row1/01.jpg``, ``row2/01.jpg``),
    as much of their paths as tells them apart."""
    from pathlib import PurePath

    parts = [PurePath(str(p)).parts for p in paths]
    names = []
    for i, pa in enumerate(parts):
        k = 1
        while k < len(pa) and any(j != i and parts[j][-k:] == pa[-k:] for j in range(len(parts))):
            k += 1
        names.append("/".join(pa[-k:]))
    return names


def identical_tiles(tiles) -> tuple[int, int] | None:
    """The first two tiles (indices) that hold the very same picture, pixel for pixel, or None."""
    import hashlib

    seen: dict[str, list[int]] = {}
    for k, t in enumerate(tiles):
        t = np.asarray(t)
        # a fingerprint of every 4th row and column finds the candidates; a full comparison confirms them
        key = hashlib.blake2b(np.ascontiguousarray(t[::4, ::4]).tobytes() + str(t.shape).encode(),
                              digest_size=16).hexdigest()
        for j in seen.get(key, []):
            if np.array_equal(tiles[j], t):
                return j, k
        seen.setdefault(key, []).append(k)
    return None


def candidate_pairs(n: int, grid: tuple[int, int] | None) -> list[tuple[int, int, str | None]]:
    """Pairs worth registering: grid neighbours (row-major order), or every pair without a grid.

    Returns
    -------
    list of (i, j, direction)
        ``direction`` is "right" or "down" (where tile ``j`` lies relative to ``i``), or None.
    """
    if grid is None:
        return [(i, j, None) for i in range(n) for j in range(i + 1, n)]
    rows, cols = grid
    if rows * cols != n:
        raise ValueError(f"a {rows}x{cols} grid holds {rows * cols} tiles but {n} were given")
    out = []
    for r in range(rows):
        for c in range(cols):
            k = r * cols + c
            if c + 1 < cols:
                out.append((k, k + 1, "right"))
            if r + 1 < rows:
                out.append((k, k + cols, "down"))
    return out


def register(tiles, *, grid: tuple[int, int] | None = None, matcher: str = "phase", model: str = "similarity",
             refine: bool = True, weights: str | None = None, stack: TileStack | None = None,
             progress=None) -> Alignment:
    """Register tiles: pairwise matching between overlapping tiles, then global adjustment.

    Parameters
    ----------
    tiles : sequence of (M, N, 3) uint8 ndarray
    grid : (rows, cols), optional
        Tiles are in row-major order on this grid; only neighbours are matched.
        Without it every pair is tried and overlapping ones are kept.
    matcher : str
        Name in ``MATCHERS``.
    model : str
        Name in ``MODELS``.
    refine : bool
        Full-resolution block phase-correlation refinement of feature matches.
    weights : str, optional
        Local weight file(s) for learned matchers.
    progress : callable(stage, fraction), optional

    Returns
    -------
    Alignment

    Raises
    ------
    ValueError
        Fewer than two tiles, the same picture given twice, a grid that does not hold the tiles, or tiles that
        cannot be matched to the rest (:class:`UnmatchedTiles`).
    """
    if len(tiles) < 2:
        raise ValueError("stitching needs at least two tiles")
    same = identical_tiles(tiles)
    if same is not None:
        raise ValueError(f"tiles {same[0] + 1} and {same[1] + 1} are the same picture; give every tile once")
    stack = stack or TileStack(tiles)
    m = make_matcher(matcher, refine=refine, weights=weights)
    m.prepare(stack)
    cands = candidate_pairs(len(stack), grid)
    pairs: list[PairMatch] = []
    rejected = []
    # OpenCV and NumPy release the GIL in the heavy calls, so pairs are matched in parallel
    workers = n_workers() if matcher in ("phase", "sift", "orb") else 1
    with ThreadPoolExecutor(workers) as ex:
        futures = [ex.submit(m.match, i, j, d) for i, j, d in cands]
        for c, ((i, j, d), fut) in enumerate(zip(cands, futures)):
            pm = fut.result()
            if pm is None:
                if grid is not None:
                    rejected.append((i, j, "no reliable match"))
            else:
                pairs.append(pm)
            if progress is not None:
                progress("matching", (c + 1) / len(cands))
    al = adjust(pairs, stack.shapes, model=model)
    al.rejected = rejected + al.rejected
    if progress is not None:
        progress("adjustment", 1.0)
    return al


def stitch(tiles, *, grid: tuple[int, int] | None = None, matcher: str = "phase", model: str = "similarity",
           refine: bool = True, weights: str | None = None, gain: bool = True, vignetting: bool = True,
           seam: str = "graphcut", blender: str = "multiband", out: np.ndarray | None = None,
           alignment: Alignment | None = None, progress=None) -> StitchResult:
    """Stitch overlapping tiles into one panorama at the tiles' pixel size.

    Parameters
    ----------
    tiles : sequence of (M, N, 3) uint8 ndarray
        Corrected tiles (flat field and lens distortion already removed if needed).
    grid, matcher, model, refine, weights
        See :func:`register`.
    gain, vignetting : bool
        Compensate per-tile exposure and the shared radial vignetting, estimated from the overlaps.
    seam : str
        Name in ``SEAMS``.
    blender : str
        Name in ``BLENDERS``.
    out : (H, W, 3) uint8 ndarray, optional
        Output array (for example a memory-mapped TIFF), or a callable taking the
        panorama size (W, H) and returning such an array (or None to allocate one).
    alignment : Alignment, optional
        Reuse a registration instead of computing one.
    progress : callable(stage, fraction), optional

    Returns
    -------
    StitchResult
    """
    t0 = time.perf_counter()
    timings = {}
    stack = TileStack(tiles)
    if alignment is None:
        alignment = register(tiles, grid=grid, matcher=matcher, model=model, refine=refine, weights=weights,
                             stack=stack, progress=progress)
    timings["registration"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    photo = estimate_photometric(stack, alignment, gain=gain, vignetting=vignetting)
    if progress is not None:
        progress("exposure", 1.0)
    timings["exposure"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    if callable(out):
        out = out(alignment.size)
    pano = render(stack, alignment, photometric=photo, seam=seam, blender=blender, out=out,
                  progress=None if progress is None else (lambda f: progress("composition", f)))
    timings["composition"] = time.perf_counter() - t2
    return StitchResult(pano, alignment, photo, time.perf_counter() - t0, timings)
