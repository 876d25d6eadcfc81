"""Global adjustment of all tile transforms at once.

Every pairwise correspondence ``(p in tile i, q in tile j)`` asks for
``A_i(p) = A_j(q)`` in panorama coordinates. All of them are solved together
by linear least squares (tile 0 fixes the gauge), so errors do not accumulate
along chains of tiles; pairs that disagree with the solution are dropped and
the system is solved again.

References
----------
M. Brown and D. G. Lowe, "Automatic panoramic image stitching using invariant
features", IJCV 74, 59-73, 2007. doi:10.1007/s11263-006-0002-3

S. Preibisch, S. Saalfeld and P. Tomancak, Bioinformatics 25(11), 1463-1465,
2009. doi:10.1093/bioinformatics/btp184
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..registry import Registry

__all__ = ["MODELS", "Alignment", "UnmatchedTiles", "adjust", "connected_components", "lstsq"]

MODELS: Registry = Registry("transform model")


class _Model:
    n = 0

    @staticmethod
    def jac(p):  # (K, 2) -> (K, 2, n) and constant (K, 2)
        raise NotImplementedError

    @staticmethod
    def identity():
        raise NotImplementedError

    @staticmethod
    def matrix(theta):
        raise NotImplementedError


@MODELS.register("translation", doc="Translation only: a perfectly aligned stage (2 parameters per tile).")
class Translation(_Model):
    """Translation only: a perfectly aligned stage."""

    n = 2

    @staticmethod
    def jac(p):
        k = len(p)
        j = np.zeros((k, 2, 2))
        j[:, 0, 0] = 1
        j[:, 1, 1] = 1
        return j, p.copy()

    @staticmethod
    def identity():
        return np.zeros(2)

    @staticmethod
    def matrix(t):
        return np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])


@MODELS.register("similarity", doc="Rotation, uniform scale and translation: a stage with a slightly rotated camera (default).")
class Similarity(_Model):
    """Rotation, uniform scale and translation."""

    n = 4

    @staticmethod
    def jac(p):
        k = len(p)
        j = np.zeros((k, 2, 4))
        j[:, 0] = np.c_[p[:, 0], -p[:, 1], np.ones(k), np.zeros(k)]
        j[:, 1] = np.c_[p[:, 1], p[:, 0], np.zeros(k), np.ones(k)]
        return j, np.zeros_like(p)

    @staticmethod
    def identity():
        return np.array([1.0, 0.0, 0.0, 0.0])

    @staticmethod
    def matrix(t):
        a, b, tx, ty = t
        return np.array([[a, -b, tx], [b, a, ty]])


@MODELS.register("affine", doc="Full affine: also shear and anisotropic scale (6 parameters per tile).")
class Affine(_Model):
    """Full affine map per tile."""

    n = 6

    @staticmethod
    def jac(p):
        k = len(p)
        j = np.zeros((k, 2, 6))
        j[:, 0, 0:3] = np.c_[p, np.ones(k)]
        j[:, 1, 3:6] = np.c_[p, np.ones(k)]
        return j, np.zeros_like(p)

    @staticmethod
    def identity():
        return np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    @staticmethod
    def matrix(t):
        return np.asarray(t, float).reshape(2, 3)

    # Overlap strips give nearly collinear matches, which leave shear and anisotropic
    # scale of a tile weakly determined; a light pull towards a similarity keeps
    # them from drifting along chains of tiles.
    regularizer = np.array([[1.0, 0, 0, 0, -1.0, 0], [0, 1.0, 0, 1.0, 0, 0]])


@dataclass
class Alignment:
    """Result of registration.

    Attributes
    ----------
    transforms : (T, 3, 3) ndarray
        ``H[k]`` maps tile ``k`` pixel (x, y, 1), pixel centres at integers, to panorama pixels.
    size : (W, H) tuple of int
        Panorama size.
    pairs : list of PairMatch
        Pairs used in the adjustment.
    rejected : list of (i, j, reason)
        Candidate pairs not used.
    rmse_px : float
        Root-mean-square residual (px) of all correspondences after adjustment.
    pair_rmse : dict (i, j) -> float
    model : str
    """

    transforms: np.ndarray
    size: tuple[int, int]
    pairs: list
    rejected: list = field(default_factory=list)
    rmse_px: float = float("nan")
    pair_rmse: dict = field(default_factory=dict)
    model: str = "similarity"
    shapes: list = field(default_factory=list)


class UnmatchedTiles(ValueError):
    """Some tiles could not be matched to the rest.

    Attributes
    ----------
    tiles : list of int
        Their numbers, counted from 1 in the order given.
    """

    def __init__(self, tiles, grid_hint: str = "give the right --grid"):
        self.tiles = [int(k) for k in tiles]
        self.grid_hint = grid_hint
        super().__init__(self.explain(grid_hint))

    def __reduce__(self):
        return type(self), (self.tiles, self.grid_hint)

    def explain(self, grid_hint: str, names=None) -> str:
        """The message, with ``grid_hint`` saying how the tile layout is given where the tiles come from (the
        command line's ``--grid``, a page's field); with ``names`` (every tile's, in the order given) each tile
        is named after its number."""
        which = [f"{k} ({names[k - 1]})" if names is not None and 0 < k <= len(names) else str(k)
                 for k in self.tiles]
        return (f"tile{'s' if len(which) > 1 else ''} {', '.join(which)} could not be matched to the rest; "
                f"check that every tile overlaps a neighbour (or {grid_hint})")


def connected_components(n: int, edges) -> list[list[int]]:
    """Connected components of an undirected graph with ``n`` nodes."""
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in edges:
        parent[find(i)] = find(j)
    comps: dict[int, list[int]] = {}
    for k in range(n):
        comps.setdefault(find(k), []).append(k)
    return sorted(comps.values(), key=lambda c: (-len(c), c[0]))


def _solve(n_tiles, pairs, model, scale=1000.0):
    m = model.n
    rows, rhs = [], []
    for pm in pairs:
        ji, ci = model.jac(pm.pts_i)
        jj, cj = model.jac(pm.pts_j)
        k = len(pm.pts_i)
        block = np.zeros((k, 2, n_tiles * m))
        block[:, :, pm.i * m:(pm.i + 1) * m] = ji
        block[:, :, pm.j * m:(pm.j + 1) * m] -= jj
        rows.append(block.reshape(2 * k, -1))
        rhs.append((cj - ci).reshape(-1))
    reg = getattr(model, "regularizer", None)
    if reg is not None:
        lam = 0.2 * scale
        for k in range(n_tiles):
            r = np.zeros((reg.shape[0], n_tiles * m))
            r[:, k * m:(k + 1) * m] = lam * reg
            rows.append(r)
            rhs.append(np.zeros(reg.shape[0]))
    w = 1e4
    gauge = np.zeros((m, n_tiles * m))
    gauge[:, :m] = np.eye(m) * w
    a = np.vstack(rows + [gauge])
    b = np.concatenate(rhs + [model.identity() * w])
    theta = lstsq(a, b)
    return theta.reshape(n_tiles, m)


def lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least-squares solution of ``a x = b`` through the normal equations.

    Single-threaded (OpenCV) so that it stays fast on a machine busy with other work.

    Parameters
    ----------
    a : (K, P) ndarray
    b : (K,) ndarray

    Returns
    -------
    x : (P,) ndarray
    """
    import cv2

    a = np.ascontiguousarray(a, np.float64)
    b = np.ascontiguousarray(b, np.float64).reshape(-1, 1)
    # column scaling keeps the normal equations well conditioned
    scale = np.sqrt((a * a).sum(axis=0)) + 1e-12
    ok, x = cv2.solve(a / scale, b, flags=cv2.DECOMP_SVD | cv2.DECOMP_NORMAL)
    return x.ravel() / scale


def _pair_residuals(pm, mats):
    pi = pm.pts_i @ mats[pm.i][:, :2].T + mats[pm.i][:, 2]
    pj = pm.pts_j @ mats[pm.j][:, :2].T + mats[pm.j][:, 2]
    return np.linalg.norm(pi - pj, axis=1)


def adjust(pairs, shapes, *, model: str = "similarity", max_rejections: int = 8) -> Alignment:
    """Solve all tile transforms from pairwise correspondences.

    Parameters
    ----------
    pairs : list of PairMatch
    shapes : list of (M, N)
        Tile heights and widths.
    model : {"translation", "similarity", "affine"}
    max_rejections : int
        Most pairs dropped as inconsistent with the others.

    Returns
    -------
    Alignment

    Raises
    ------
    UnmatchedTiles
        If the pairs do not connect every tile (a ``ValueError``).
    """
    mdl = MODELS.get(model)
    n = len(shapes)
    pairs = [p for p in pairs if p is not None and p.n > 0]
    rejected = []
    comps = connected_components(n, [(p.i, p.j) for p in pairs])
    if len(comps) > 1:
        raise UnmatchedTiles(sorted(k + 1 for c in comps[1:] for k in c))
    while True:
        theta = _solve(n, pairs, mdl, scale=float(np.mean([np.hypot(*sh) for sh in shapes])))
        mats = [mdl.matrix(t) for t in theta]
        res = {(p.i, p.j): _pair_residuals(p, mats) for p in pairs}
        prms = {k: float(np.sqrt(np.mean(v ** 2))) for k, v in res.items()}
        if len(rejected) >= max_rejections or len(pairs) <= n - 1:
            break
        med = float(np.median(list(prms.values())))
        worst = max(pairs, key=lambda p: prms[(p.i, p.j)])
        if prms[(worst.i, worst.j)] <= max(2.0, 5.0 * med):
            break
        rest = [p for p in pairs if p is not worst]
        if len(connected_components(n, [(p.i, p.j) for p in rest])) > 1:
            break
        rejected.append((worst.i, worst.j, f"inconsistent with the other pairs ({prms[(worst.i, worst.j)]:.1f} px)"))
        pairs = rest
    allres = np.concatenate(list(res.values())) if res else np.zeros(1)
    rmse = float(np.sqrt(np.mean(allres ** 2)))
    # gauge: zero mean rotation and unit mean scale keep the panorama upright at the tiles' pixel size
    lin = np.array([m_[:, :2] for m_ in mats])
    ang = float(np.mean(np.arctan2(lin[:, 1, 0] - lin[:, 0, 1], lin[:, 0, 0] + lin[:, 1, 1])))
    scl = float(np.mean(np.sqrt(np.abs(np.linalg.det(lin)))))
    c, s = np.cos(-ang) / scl, np.sin(-ang) / scl
    g = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    hs = np.array([g @ np.vstack([m_, [0, 0, 1]]) for m_ in mats])
    corners = []
    for hk, (h, w) in zip(hs, shapes):
        q = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
        corners.append(q @ hk[:2, :2].T + hk[:2, 2])
    corners = np.vstack(corners)
    lo = np.floor(corners.min(axis=0))
    hi = np.ceil(corners.max(axis=0))
    hs[:, 0, 2] -= lo[0]
    hs[:, 1, 2] -= lo[1]
    size = (int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1)
    return Alignment(hs, size, pairs, rejected, rmse, prms, model=mdl.__name__.lower(), shapes=list(shapes))
