"""Multi-scale superpixels, computed once per image and cached.

An image is reduced to a working scale (about 1.4 Mpx by default), then cut
by SLIC [1]_ and by Felzenszwalb-Huttenlocher graph segmentation [2]_, each
at a coarse and a fine setting. The finest partition ("atoms") is the
intersection of fine SLIC and fine Felzenszwalb segments, so that every atom
respects the boundaries of both. Each coarser segmentation is stored as a map
from atoms to its segments (majority vote), which gives a hierarchy that
label propagation can walk from coarse to fine. Per-atom colour and texture
features and the atom adjacency graph are computed here too, so that a new
stroke only costs a pass over the atoms.

References
----------
.. [1] Achanta R. et al., "SLIC superpixels compared to state-of-the-art
   superpixel methods", IEEE TPAMI 34(11), 2012, 2274-2282.
   doi:10.1109/TPAMI.2012.120
.. [2] Felzenszwalb P. F., Huttenlocher D. P., "Efficient graph-based image
   segmentation", IJCV 59(2), 2004, 167-181.
   doi:10.1023/B:VISI.0000022288.19776.77
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np

__all__ = ["Superpixels", "compute_superpixels", "clear_cache", "DEFAULT_WORK_PIXELS"]

DEFAULT_WORK_PIXELS = 1_400_000
_CACHE_SIZE = 6
_cache: "OrderedDict[tuple, Superpixels]" = OrderedDict()
_cache_lock = threading.Lock()

ProgressFn = Optional[Callable[[float, str], None]]


@dataclass
class Superpixels:
    """A superpixel hierarchy of one image.

    Attributes
    ----------
    shape : (M, N) tuple
        Full-resolution image size.
    work_shape : (m, n) tuple
        Size at the working scale.
    atoms : (m, n) int32 ndarray
        Finest partition at the working scale, labels ``0 .. n_atoms - 1``.
    levels : dict of str to (n_atoms,) int32 ndarray
        For each segmentation, coarse first, the segment holding each atom.
    features : (n_atoms, F) float32 ndarray
        Per-atom mean CIELAB colour, standard deviation of L* and mean
        gradient magnitude (texture).
    sizes : (n_atoms,) int64 ndarray
        Pixels of each atom at the working scale.
    edges : (E, 2) int32 ndarray
        Pairs of 4-adjacent atoms, each pair once with ``i < j``.
    key : str
        Content hash of the image and the settings.
    """

    shape: tuple[int, int]
    work_shape: tuple[int, int]
    atoms: np.ndarray
    levels: dict[str, np.ndarray]
    features: np.ndarray
    sizes: np.ndarray
    edges: np.ndarray
    key: str = ""
    _full_index: dict = field(default_factory=dict, repr=False)

    @property
    def n_atoms(self) -> int:
        return int(self.sizes.size)

    @property
    def scale(self) -> tuple[float, float]:
        """Working-scale factors (sy, sx): working = full * factor."""
        return self.work_shape[0] / self.shape[0], self.work_shape[1] / self.shape[1]

    def to_work(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map full-resolution pixel coordinates to working-scale pixels."""
        sy, sx = self.scale
        yw = np.clip((np.asarray(ys) * sy).astype(np.int64), 0, self.work_shape[0] - 1)
        xw = np.clip((np.asarray(xs) * sx).astype(np.int64), 0, self.work_shape[1] - 1)
        return yw, xw

    def expand(self, per_atom: np.ndarray) -> np.ndarray:
        """Full-resolution (M, N) map of a per-atom value (nearest neighbour).

        Parameters
        ----------
        per_atom : (n_atoms,) ndarray
            One value per atom (uint8 codes, floats, ...).

        Returns
        -------
        (M, N) ndarray
        """
        work = np.asarray(per_atom)[self.atoms]
        if self.work_shape == self.shape:
            return work
        M, N = self.shape
        if work.dtype == np.bool_:
            work = work.astype(np.uint8)
            return cv2.resize(work, (N, M), interpolation=cv2.INTER_NEAREST).astype(bool)
        return cv2.resize(work, (N, M), interpolation=cv2.INTER_NEAREST)


def _hash_image(image: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def _majority(atoms_flat: np.ndarray, seg_flat: np.ndarray, n_atoms: int) -> np.ndarray:
    """Segment of each atom by majority of its pixels."""
    n_seg = int(seg_flat.max()) + 1
    pair = atoms_flat.astype(np.int64) * n_seg + seg_flat.astype(np.int64)
    uniq, counts = np.unique(pair, return_counts=True)
    a = uniq // n_seg
    s = uniq % n_seg
    order = np.lexsort((counts, a))  # by atom, then count ascending: last of each atom wins
    out = np.zeros(n_atoms, np.int32)
    out[a[order]] = s[order]
    return out


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels.ravel(), return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


def compute_superpixels(
    image: np.ndarray,
    *,
    work_pixels: int = DEFAULT_WORK_PIXELS,
    slic_segments: tuple[int, int] = (1500, 12000),
    felzenszwalb_scales: tuple[float, float] = (400.0, 60.0),
    compactness: float = 10.0,
    sigma: float = 0.8,
    cache: bool = True,
    progress: ProgressFn = None,
) -> Superpixels:
    """Superpixel hierarchy of an image (cached by content).

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
        RGB photograph.
    work_pixels : int
        Pixel budget of the working scale; larger images are reduced to it.
    slic_segments : (coarse, fine) tuple of int
        Target numbers of SLIC superpixels.
    felzenszwalb_scales : (coarse, fine) tuple of float
        Felzenszwalb ``scale`` parameters (larger = larger segments).
    compactness : float
        SLIC compactness.
    sigma : float
        Gaussian pre-smoothing of both methods, in working-scale pixels.
    cache : bool
        Reuse a hierarchy already computed for identical pixels and settings.
    progress : callable(fraction, message), optional

    Returns
    -------
    Superpixels
    """
    from skimage.segmentation import felzenszwalb, slic

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (M, N, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    if work_pixels < 10_000:
        raise ValueError(f"work_pixels must be at least 10000, got {work_pixels}")
    settings = (int(work_pixels), tuple(slic_segments), tuple(felzenszwalb_scales), float(compactness), float(sigma))
    key = None
    if cache:
        key = (_hash_image(image), settings)
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit

    def say(f, msg):
        if progress:
            progress(f, msg)

    M, N = image.shape[:2]
    s = min(1.0, float(np.sqrt(work_pixels / (M * N))))
    if s < 1.0:
        m, n = max(8, round(M * s)), max(8, round(N * s))
        work = cv2.resize(image, (n, m), interpolation=cv2.INTER_AREA)
    else:
        m, n = M, N
        work = image
    say(0.05, "SLIC and Felzenszwalb superpixels")
    # scale the segment counts with the working area so that small images are not over-cut
    area_ratio = (m * n) / DEFAULT_WORK_PIXELS

    def run_slic(k):
        k = int(max(16, round(k * min(1.0, area_ratio))))
        return slic(work, n_segments=k, compactness=compactness, sigma=sigma, start_label=0, enforce_connectivity=True)

    def run_fz(sc, reduce):
        # the coarse graph segmentation runs at half the working scale: its segments are large anyway
        src = work if reduce == 1 else cv2.resize(work, (max(8, n // reduce), max(8, m // reduce)),
                                                    interpolation=cv2.INTER_AREA)
        lab = felzenszwalb(src, scale=sc / reduce, sigma=sigma / reduce, min_size=max(10, int(sc // 4) // reduce ** 2))
        if reduce != 1:
            lab = cv2.resize(lab.astype(np.int32), (n, m), interpolation=cv2.INTER_NEAREST)
        return lab

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {"felzenszwalb-fine": pool.submit(run_fz, felzenszwalb_scales[1], 1),
                "slic-coarse": pool.submit(run_slic, slic_segments[0]),
                "slic-fine": pool.submit(run_slic, slic_segments[1]),
                "felzenszwalb-coarse": pool.submit(run_fz, felzenszwalb_scales[0], 2 if m * n > 200_000 else 1)}
        levels_raw = {k: f.result() for k, f in jobs.items()}
    say(0.8, "hierarchy and features")
    fine_s = levels_raw["slic-fine"].astype(np.int64)
    fine_f = levels_raw["felzenszwalb-fine"].astype(np.int64)
    atoms = _relabel(fine_s * (int(fine_f.max()) + 1) + fine_f)
    n_atoms = int(atoms.max()) + 1
    flat = atoms.ravel()
    order = ("felzenszwalb-coarse", "slic-coarse", "felzenszwalb-fine", "slic-fine")
    levels = {name: _majority(flat, levels_raw[name].ravel(), n_atoms) for name in order}

    lab = cv2.cvtColor(work.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    grey = lab[..., 0]
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    grad = np.sqrt(gx * gx + gy * gy)
    sizes = np.bincount(flat, minlength=n_atoms).astype(np.int64)
    feats = []
    for c in range(3):
        feats.append(np.bincount(flat, weights=lab[..., c].ravel(), minlength=n_atoms) / sizes)
    sq = np.bincount(flat, weights=(grey.astype(np.float64) ** 2).ravel(), minlength=n_atoms) / sizes
    feats.append(np.sqrt(np.maximum(sq - feats[0] ** 2, 0)))
    feats.append(np.bincount(flat, weights=grad.ravel(), minlength=n_atoms) / sizes)
    features = np.stack(feats, 1).astype(np.float32)

    h_pairs = np.stack([atoms[:, :-1].ravel(), atoms[:, 1:].ravel()], 1)
    v_pairs = np.stack([atoms[:-1, :].ravel(), atoms[1:, :].ravel()], 1)
    pairs = np.concatenate([h_pairs, v_pairs])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs.sort(axis=1)
    edges = np.unique(pairs[:, 0].astype(np.int64) * n_atoms + pairs[:, 1])
    edges = np.stack([edges // n_atoms, edges % n_atoms], 1).astype(np.int32)
    sp = Superpixels(shape=(M, N), work_shape=(m, n), atoms=atoms, levels=levels, features=features,
                     sizes=sizes, edges=edges, key=key[0] if key else _hash_image(image))
    say(1.0, f"{n_atoms} superpixels")
    if cache:
        with _cache_lock:
            _cache[key] = sp
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return sp


def clear_cache() -> None:
    """Forget every cached hierarchy."""
    with _cache_lock:
        _cache.clear()
