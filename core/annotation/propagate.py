"""Label propagation from scribbles.

A scribble mask holds LumenStone codes where the user drew and 255 elsewhere.
Every method turns it into a full mask of codes:

- ``multiscale`` (default): each stroke labels the superpixels it touches,
  walking the hierarchy of :mod:`.superpixels` from coarse to fine; a segment
  touched by strokes of two or more minerals is split into its finer segments,
  down to the atoms. Atoms that no stroke reached are filled by a geodesic
  colour distance on the atom adjacency graph (a shortest path whose steps
  cost the colour/texture difference of neighbouring atoms) plus the colour
  distance to the nearest scribbled atom of each mineral; each atom takes the
  mineral with the lowest total cost.
- ``slic`` / ``felzenszwalb``: the same with one fine superpixel level.
- ``nearest``: every pixel takes the code of the nearest scribbled pixel
  (Euclidean; no image content; a baseline).

With a ``prior`` mask (for example the model's prediction) only the atoms the
strokes reach — their superpixels and the colour-similar area around them —
change; the rest keeps the prior.

References
----------
.. [1] Korshunov D. et al., Mining Science and Technology (Russia) 10(3),
   2025, 232-244. doi:10.17073/2500-0632-2025-05-416
.. [2] Criminisi A., Sharp T., Blake A., "GeoS: geodesic image
   segmentation", ECCV 2008, 99-112. doi:10.1007/978-3-540-88682-2_9
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

from ..minerals import CODES, IGNORE
from ..registry import Registry
from .superpixels import Superpixels, compute_superpixels

__all__ = ["METHODS", "DEFAULT_METHOD", "propagate", "Propagation", "check_scribbles"]

ProgressFn = Optional[Callable[[float, str], None]]

METHODS: Registry = Registry("propagation method")
DEFAULT_METHOD = "multiscale"

# feature weights: L*, a*, b*, std(L*), mean |grad L*|
_FEATURE_WEIGHTS = np.array([1.0, 1.0, 1.0, 0.5, 0.25], np.float32)


@dataclass
class Propagation:
    """Result of a propagation.

    Attributes
    ----------
    mask : (M, N) uint8 ndarray
        Full mask of LumenStone codes.
    changed : (M, N) bool ndarray
        Pixels decided by the strokes (all pixels when there is no prior).
    classes : list of int
        Codes present in the scribbles.
    """

    mask: np.ndarray
    changed: np.ndarray
    classes: list[int]


def check_scribbles(scribbles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Validate a scribble mask; returns it as (M, N) uint8.

    Raises
    ------
    ValueError
        Wrong size, unknown codes, or no scribbled pixel at all.
    """
    s = np.asarray(scribbles)
    if s.ndim != 2 or s.shape != tuple(shape[:2]):
        raise ValueError(f"the scribble mask is {s.shape} but the image is {tuple(shape[:2])}; they must match")
    s = s.astype(np.uint8, copy=False)
    valid = np.zeros(256, bool)
    valid[list(CODES)] = True
    valid[IGNORE] = True
    bad = np.unique(s[~valid[s]])
    if bad.size:
        raise ValueError(f"the scribble mask holds unknown codes {bad.tolist()[:10]}; use {list(CODES)} and 255")
    if not (s != IGNORE).any():
        raise ValueError("the scribble mask is empty: draw at least one stroke (codes other than 255)")
    return s


def _stroke_counts(sp: Superpixels, scribbles: np.ndarray):
    ys, xs = np.nonzero(scribbles != IGNORE)
    codes = scribbles[ys, xs]
    classes = np.unique(codes).tolist()
    lut = np.zeros(256, np.int64)
    lut[classes] = np.arange(len(classes))
    yw, xw = sp.to_work(ys, xs)
    atom = sp.atoms[yw, xw].astype(np.int64)
    K = len(classes)
    counts = np.bincount(atom * K + lut[codes], minlength=sp.n_atoms * K).reshape(sp.n_atoms, K)
    return classes, counts.astype(np.float64), (ys, xs, codes)


def _weighted_features(sp: Superpixels) -> np.ndarray:
    return sp.features * _FEATURE_WEIGHTS[: sp.features.shape[1]]


def _fill(sp: Superpixels, assigned: np.ndarray, touched: np.ndarray, K: int, *, lam: float, step: float,
          boundary: float = 0.0, power: float = 1.0, unary_power: float = 1.0, knn: int = 1):
    """Assign the atoms left at -1; returns (labels, cost of the chosen class)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra
    from scipy.spatial import cKDTree

    n = sp.n_atoms
    f = _weighted_features(sp)
    i, j = sp.edges[:, 0], sp.edges[:, 1]
    w = np.linalg.norm(f[i] - f[j], axis=1) ** power + step
    if boundary:
        for seg in sp.levels.values():
            w = w + boundary * (seg[i] != seg[j])
    graph = coo_matrix((np.concatenate([w, w]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                       shape=(n, n)).tocsr()
    cost = np.full((K, n), np.inf)
    for k in range(K):
        seeds = np.flatnonzero(assigned == k)
        if seeds.size == 0:
            continue
        geo = dijkstra(graph, directed=False, indices=seeds, min_only=True)
        ref = np.flatnonzero(touched[:, k] > 0)
        if ref.size == 0:
            ref = seeds
        kk = int(min(knn, ref.size))
        unary, _ = cKDTree(f[ref]).query(f, k=kk)
        if kk > 1:
            unary = unary.mean(1)
        cost[k] = geo + lam * unary ** unary_power
    labels = assigned.copy()
    todo = labels < 0
    best = np.argmin(cost, axis=0)
    labels[todo] = best[todo]
    best_cost = cost[best, np.arange(n)]
    best_cost[~todo] = 0.0
    return labels, best_cost


def _hierarchy_assign(sp: Superpixels, counts: np.ndarray, level_names: list[str], *, guard: float | None):
    n, K = counts.shape
    assigned = np.full(n, -1, np.int64)
    f = _weighted_features(sp) if guard is not None else None
    means = None
    if guard is not None:
        tot = counts.sum(0)
        means = (counts.T @ f) / np.maximum(tot[:, None], 1e-9)
    for name in level_names:
        seg = sp.levels[name]
        n_seg = int(seg.max()) + 1
        segc = np.zeros((n_seg, K))
        np.add.at(segc, seg, counts)
        pure = (segc > 0).sum(1) == 1
        cls = segc.argmax(1)
        sel = (assigned < 0) & pure[seg]
        if guard is not None:
            # a coarse segment may spill over a boundary that no stroke crossed: keep only atoms whose colour is
            # nearest to the segment's mineral among the scribbled ones, or close to it
            d = np.linalg.norm(f[:, None, :] - means[None], axis=2)
            c = cls[seg]
            own = d[np.arange(n), c]
            sel &= (own <= d.min(1) + guard)
        assigned[sel] = cls[seg[sel]]
    hit = (assigned < 0) & (counts.sum(1) > 0)
    assigned[hit] = counts[hit].argmax(1)
    return assigned


def _superpixel_method(sp: Superpixels, scribbles: np.ndarray, *, levels: tuple[str, ...], lam: float = 1.0,
                       step: float = 1.0, guard: float | None = None, boundary: float = 0.0, power: float = 1.0,
                       unary_power: float = 1.0, knn: int = 1):
    classes, counts, strokes = _stroke_counts(sp, scribbles)
    assigned = _hierarchy_assign(sp, counts, list(levels), guard=guard)
    labels, cost = _fill(sp, assigned, counts, len(classes), lam=lam, step=step, boundary=boundary, power=power,
                         unary_power=unary_power, knn=knn)
    return classes, labels, cost, strokes


def _nearest_method(sp: Superpixels, scribbles: np.ndarray):
    from scipy.ndimage import distance_transform_edt

    classes, counts, strokes = _stroke_counts(sp, scribbles)
    m, n = sp.work_shape
    lut = np.zeros(256, np.uint8)
    lut[classes] = np.arange(len(classes))
    work = np.full((m, n), 255, np.uint8)
    ys, xs, codes = strokes
    yw, xw = sp.to_work(ys, xs)
    work[yw, xw] = lut[codes]
    _, (iy, ix) = distance_transform_edt(work == 255, return_indices=True)
    per_pixel = work[iy, ix]
    # per-atom majority of the per-pixel answer, to share the atom interface
    flat = sp.atoms.ravel().astype(np.int64)
    K = len(classes)
    votes = np.bincount(flat * K + per_pixel.ravel(), minlength=sp.n_atoms * K).reshape(sp.n_atoms, K)
    return classes, votes.argmax(1), np.zeros(sp.n_atoms), strokes


_ALL = ("felzenszwalb-coarse", "slic-coarse", "felzenszwalb-fine", "slic-fine")
# weights chosen on held-out images with synthetic strokes (bench/annotation.py)
_TUNED = dict(lam=300.0, step=0.2, power=2.0)
METHODS.add("multiscale", partial(_superpixel_method, levels=_ALL, guard=0.0, **_TUNED),
            doc="SLIC + Felzenszwalb, coarse to fine, split where minerals meet, colour-checked, geodesic colour fill")
METHODS.add("multiscale-unguarded", partial(_superpixel_method, levels=_ALL, guard=None, **_TUNED),
            doc="multiscale without the colour check: a segment touched by one mineral takes all of it")
METHODS.add("fine", partial(_superpixel_method, levels=("felzenszwalb-fine", "slic-fine"), guard=0.0, **_TUNED),
            doc="fine SLIC + Felzenszwalb levels only, colour-checked, geodesic colour fill")
METHODS.add("slic", partial(_superpixel_method, levels=("slic-fine",), guard=0.0, **_TUNED),
            doc="fine SLIC superpixels only, colour-checked, geodesic colour fill")
METHODS.add("felzenszwalb", partial(_superpixel_method, levels=("felzenszwalb-fine",), guard=0.0, **_TUNED),
            doc="fine Felzenszwalb segments only, colour-checked, geodesic colour fill")
METHODS.add("geodesic", partial(_superpixel_method, levels=(), **_TUNED),
            doc="no superpixel voting: only the geodesic colour fill from the stroked atoms")
METHODS.add("nearest", _nearest_method, doc="code of the nearest scribbled pixel (baseline, ignores the image)")


def propagate(
    image: np.ndarray,
    scribbles: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    superpixels: Superpixels | None = None,
    prior: np.ndarray | None = None,
    reach: float = 12.0,
    keep_strokes: bool = True,
    progress: ProgressFn = None,
) -> Propagation:
    """Spread scribbled labels over the whole image.

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
        RGB photograph.
    scribbles : (M, N) uint8 ndarray
        LumenStone codes where strokes were drawn, 255 elsewhere.
    method : str
        One of ``METHODS.names()``.
    superpixels : Superpixels, optional
        A hierarchy from :func:`compute_superpixels` for this image (computed,
        and cached, when not given).
    prior : (M, N) uint8 ndarray, optional
        A mask to correct (the model's prediction): pixels the strokes do not
        reach keep it.
    reach : float
        With a prior, the largest fill cost (colour-distance units) at which an
        atom still follows the strokes rather than the prior.
    keep_strokes : bool
        Write the scribbled pixels' own codes into the result.
    progress : callable(fraction, message), optional

    Returns
    -------
    Propagation
    """
    fn = METHODS.get(method)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (M, N, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    scribbles = check_scribbles(scribbles, image.shape[:2])
    if prior is not None:
        prior = np.asarray(prior).astype(np.uint8, copy=False)
        if prior.shape != image.shape[:2]:
            raise ValueError(f"the prior mask is {prior.shape} but the image is {image.shape[:2]}; they must match")
    sp = superpixels
    if sp is None:
        sp = compute_superpixels(image, progress=(lambda f, m: progress(0.8 * f, m)) if progress else None)
    elif sp.shape != image.shape[:2]:
        raise ValueError("the superpixels were computed for an image of another size")
    if progress:
        progress(0.85, "propagating labels")
    classes, labels, cost, (ys, xs, codes) = fn(sp, scribbles)
    lut = np.asarray(classes, np.uint8)
    per_atom = lut[labels]
    mask = sp.expand(per_atom)
    if prior is None:
        changed = np.ones(mask.shape, bool)
    else:
        affected = cost <= reach
        changed = sp.expand(affected)
        mask = np.where(changed, mask, prior)
    if keep_strokes:
        mask[ys, xs] = codes
        changed[ys, xs] = True
    if progress:
        progress(1.0, "done")
    return Propagation(mask=mask, changed=changed, classes=[int(c) for c in classes])
