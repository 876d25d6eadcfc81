"""Modal mineralogy, grain-size distributions and associations from measured masks.

The numbers follow the conventions of automated mineralogy (MLA, QEMSCAN):

- modal mineralogy: area fraction of every class over the labelled pixels
  (unlabelled code 255 left out), and of every mineral over the mineral
  pixels (non-metallic background left out);
- grain sizes: equivalent circle diameter ECD = 2√(A/π) of every grain,
  distributed over classes of a geometric series (√2 by default, anchored at
  1 µm: …, 0.71, 1, 1.41, 2, 2.83, … µm), by number and by area, with curves
  of the cumulative percentage finer than each class's upper edge. d10, d50
  and d90 are area-weighted (the share of the mineral's area in grains finer
  than d), the optical analogue of the mass-based sieve passing sizes;
- mass balance: mass fractions from the area fractions (Delesse: area in a
  section estimates volume) and mineral densities, element grades and their
  deportment from idealised formulas (:mod:`core.stats.chemistry`);
- precision of the pooled modal mineralogy over several images (fields of one
  section): the standard error of each class's area fraction from the
  variation between images, by the ratio estimator (Cochran, *Sampling
  Techniques*, 3rd ed., 1977, ch. 6: the fraction is a ratio of two sums over
  the images), and the 95 % interval with Student's t on n − 1 degrees of
  freedom. It measures how much the fields differ, not how well they were
  segmented;
- associations: boundary length shared by every pair of classes, and for every
  mineral the fraction of its boundary against each other class; the fraction
  against background (code 0) is its free surface, the rest is locked. The
  image edge and unlabelled pixels are not contacts and are left out of the
  fractions.

References
----------
.. [1] Gu Y., "Automated scanning electron microscope based mineral liberation
   analysis", Journal of Minerals and Materials Characterization and
   Engineering 2(1), 2003, 33-41. doi:10.4236/jmmce.2003.21003
.. [2] Lantuéjoul C., "Computation of the histograms of the number of edges
   and neighbours of cells in a tessellation", Lecture Notes in
   Biomathematics 23, 1978, 323-329. doi:10.1007/978-3-642-93089-8_14
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

from ..minerals import BACKGROUND, CODES, IGNORE, by_code
from ..registry import Registry
from .chemistry import DEFAULT_GANGUE_DENSITY, check_gangue_density, deportment, grades, mass_fractions
from .measure import OUTSIDE, PERIMETER_METHODS, GrainTable, MaskStats, ParticleTable, combine

__all__ = [
    "BORDER_POLICIES",
    "SIZE_SERIES",
    "PERIMETER_METHODS",
    "Options",
    "modal",
    "select_grains",
    "class_index",
    "size_classes",
    "d_values",
    "grain_summary",
    "association",
    "occurrence",
    "occurrence_label",
    "liberation",
    "grain_hosts",
    "image_entry",
    "summarize",
    "group_samples",
    "check_sample_name",
    "sample_from_name",
    "tables",
    "sample_comparison",
    "liberation_rows",
]

_UNLABELLED_SLOT = 15
DEFAULT_ENCLOSED = 0.9
MAX_SAMPLE_NAME = 80

BORDER_POLICIES: Registry = Registry("border policy")
BORDER_POLICIES.add("exclude", lambda t: ~t.border,
                    doc="Leave grains cut by the image edge out of the grain statistics (they are truncated).")
BORDER_POLICIES.add("keep", lambda t: np.ones(len(t), bool),
                    doc="Count every grain, including those cut by the image edge.")

SIZE_SERIES: Registry = Registry("size-class series")
# value: class width in log2 units, so that class edges 2**(k*step) are exact powers of two where they should be
SIZE_SERIES.add("sqrt2", 0.5, doc="√2 geometric series of µm classes anchored at 1 µm (…, 1, 1.41, 2, 2.83, …).")
SIZE_SERIES.add("2", 1.0, doc="Doubling series of µm classes anchored at 1 µm (…, 1, 2, 4, 8, …), as the Wentworth scale.")


class Options:
    """Parameters of a statistics run (all keyword-only, validated by name).

    Parameters
    ----------
    border : str
        A :data:`BORDER_POLICIES` name (``"exclude"`` or ``"keep"``).
    perimeter : str
        A :data:`PERIMETER_METHODS` name (``"crofton"`` or ``"pixel-edges"``).
    series : str
        A :data:`SIZE_SERIES` name (``"sqrt2"`` or ``"2"``).
    gangue_density : float
        Density of the non-metallic class in g/cm³, for mass fractions and element grades (default 2.7).
    enclosed : float
        Share of a grain's boundary against one class from which the grain counts as enclosed in it
        (:func:`occurrence`; default 0.9).
    """

    def __init__(self, *, border: str = "exclude", perimeter: str = "crofton", series: str = "sqrt2",
                 gangue_density: float = DEFAULT_GANGUE_DENSITY, enclosed: float = DEFAULT_ENCLOSED):
        BORDER_POLICIES.get(border)
        PERIMETER_METHODS.get(perimeter)
        SIZE_SERIES.get(series)
        self.border = BORDER_POLICIES.get_key(border)
        self.perimeter = PERIMETER_METHODS.get_key(perimeter)
        self.series = SIZE_SERIES.get_key(series)
        self.gangue_density = check_gangue_density(gangue_density)
        try:
            enclosed = float(enclosed)
        except (TypeError, ValueError):
            raise ValueError(f"the enclosed share must be a number from 0.5 to 1 (50-100 %), not "
                             f"{enclosed!r}") from None
        if not 0.5 <= enclosed <= 1.0:  # from one half on, at most one class can enclose a grain
            raise ValueError(f"a grain is enclosed from 50 to 100 % of its boundary against one class, not from "
                             f"{100 * enclosed:g} %")
        self.enclosed = enclosed

    def as_dict(self) -> dict:
        return {"border": self.border, "perimeter": self.perimeter, "size_series": self.series,
                "gangue_density_g_cm3": self.gangue_density, "enclosed_share": self.enclosed}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Options":
        """The inverse of :meth:`as_dict`."""
        return cls(border=d["border"], perimeter=d["perimeter"], series=d["size_series"],
                   gangue_density=d.get("gangue_density_g_cm3", DEFAULT_GANGUE_DENSITY),
                   enclosed=d.get("enclosed_share", DEFAULT_ENCLOSED))


def _codes_present(stats: MaskStats) -> list[int]:
    return [int(c) for c in CODES if stats.pixels[c] > 0]


def modal(stats: MaskStats) -> dict[int, dict]:
    """Modal mineralogy.

    Parameters
    ----------
    stats : MaskStats

    Returns
    -------
    dict
        code -> ``{"pixels", "area_um2", "fraction", "fraction_no_background"}``
        for every class present (unlabelled excluded). ``fraction`` is over
        all labelled area, ``fraction_no_background`` over the minerals only
        (None for the background itself). Fractions are computed from µm²,
        which equals the exact pixel-count ratio when one pixel size is used.
    """
    codes = _codes_present(stats)
    total = float(sum(stats.area_um2[c] for c in codes))
    minerals = float(sum(stats.area_um2[c] for c in codes if c != BACKGROUND))
    out = {}
    for c in codes:
        a = float(stats.area_um2[c])
        out[c] = {
            "pixels": int(stats.pixels[c]),
            "area_um2": a,
            "fraction": a / total if total else 0.0,
            "fraction_no_background": (a / minerals if minerals else 0.0) if c != BACKGROUND else None,
        }
    return out


def between_images(results) -> dict[int, dict]:
    """Precision of the pooled area fractions from the variation between images.

    Parameters
    ----------
    results : sequence of MaskStats
        One measurement per image (field) of the sample.

    Returns
    -------
    dict
        code -> ``{"se", "ci95"}``: the standard error of the pooled area fraction r = Σ aᵢ / Σ Aᵢ (aᵢ the
        class's area in image i, Aᵢ the image's labelled area, both µm²), Var(r) ≈ Σ (aᵢ − r Aᵢ)² /
        ((n − 1) n Ā²), and the half-width of its 95 % interval (Student's t, n − 1 degrees of freedom). Empty
        for fewer than two images.
    """
    results = list(results)
    n = len(results)
    if n < 2:
        return {}
    from scipy.stats import t as student

    codes = sorted({c for r in results for c in _codes_present(r)})
    labelled = np.array([sum(float(r.area_um2[c]) for c in CODES) for r in results])
    if not (labelled > 0).all():
        return {}
    mean_a = labelled.mean()
    t95 = float(student.ppf(0.975, n - 1))
    out = {}
    for c in codes:
        a = np.array([float(r.area_um2[c]) for r in results])
        ratio = a.sum() / labelled.sum()
        se = float(np.sqrt(np.sum((a - ratio * labelled) ** 2) / ((n - 1) * n * mean_a ** 2)))
        out[c] = {"se": se, "ci95": t95 * se}
    return out


def _mass_balance(mod: dict, options: Options) -> tuple[dict, dict, dict]:
    """Area fractions of a :func:`modal` table and the mass fractions over everything and over the ore minerals."""
    area = {c: v["fraction"] for c, v in mod.items()}
    return (area, mass_fractions(area, gangue_density=options.gangue_density),
            mass_fractions(area, gangue_density=options.gangue_density, background=False))


def select_grains(grains: GrainTable, *, border: str = "exclude") -> GrainTable:
    """The grains a :data:`BORDER_POLICIES` policy keeps."""
    return grains.select(BORDER_POLICIES.get(border)(grains))


def class_index(ecd_um: np.ndarray, *, series: str = "sqrt2") -> np.ndarray:
    """(G,) int: index k of the size class [2^(k·s), 2^((k+1)·s)) µm of every ECD (s the series step)."""
    step = SIZE_SERIES.get(series)
    e = np.asarray(ecd_um, np.float64)
    return np.floor(np.log2(e) / step + 1e-9).astype(np.int64)


def size_classes(ecd_um: np.ndarray, area_um2: np.ndarray, *, series: str = "sqrt2") -> list[dict]:
    """Size distribution over geometric classes, by number and by area.

    Parameters
    ----------
    ecd_um : (G,) ndarray
        Equivalent circle diameters, µm.
    area_um2 : (G,) ndarray
        Grain areas, µm².
    series : str
        A :data:`SIZE_SERIES` name.

    Returns
    -------
    list of dict
        One dict per class from the finest to the coarsest class holding a
        grain (empty classes between them included): ``lower_um``,
        ``upper_um``, ``count``, ``area_um2``, ``number_pct``, ``area_pct``,
        ``cum_number_pct`` and ``cum_area_pct`` (percentage finer than
        ``upper_um``).
    """
    e = np.asarray(ecd_um, np.float64)
    a = np.asarray(area_um2, np.float64)
    if e.size == 0:
        return []
    step = SIZE_SERIES.get(series)
    k = class_index(e, series=series)
    k0, k1 = int(k.min()), int(k.max())
    cnt = np.bincount(k - k0, minlength=k1 - k0 + 1)
    area = np.bincount(k - k0, weights=a, minlength=k1 - k0 + 1)
    n_tot, a_tot = cnt.sum(), area.sum()
    cum_n, cum_a = np.cumsum(cnt), np.cumsum(area)
    out = []
    for i in range(k1 - k0 + 1):
        kk = k0 + i
        out.append({
            "lower_um": float(2.0 ** (kk * step)), "upper_um": float(2.0 ** ((kk + 1) * step)),
            "count": int(cnt[i]), "area_um2": float(area[i]),
            "number_pct": float(100 * cnt[i] / n_tot), "area_pct": float(100 * area[i] / a_tot),
            "cum_number_pct": float(100 * cum_n[i] / n_tot), "cum_area_pct": float(100 * cum_a[i] / a_tot),
        })
    return out


def d_values(ecd_um: np.ndarray, weights: np.ndarray, percents=(10, 50, 90)) -> list[float | None]:
    """Passing sizes: the smallest ECD d such that grains with ECD ≤ d hold p % of the weight.

    Parameters
    ----------
    ecd_um : (G,) ndarray
    weights : (G,) ndarray
        Area (for area-weighted d-values) or ones (by number).
    percents : sequence of float

    Returns
    -------
    list of float or None
        None when there are no grains.
    """
    e = np.asarray(ecd_um, np.float64)
    if e.size == 0:
        return [None for _ in percents]
    order = np.argsort(e, kind="stable")
    cum = np.cumsum(np.asarray(weights, np.float64)[order])
    cum /= cum[-1]
    out = []
    for p in percents:
        i = int(np.searchsorted(cum, p / 100.0 - 1e-12, side="left"))
        out.append(float(e[order[min(i, e.size - 1)]]))
    return out


def grain_summary(grains: GrainTable, code: int, *, options: Options, extra: bool = False) -> dict:
    """Grain statistics of one mineral.

    Parameters
    ----------
    grains : GrainTable
        All grains (the border policy of ``options`` is applied here).
    code : int
        Mineral code.
    options : Options
    extra : bool
        Also give areas, perimeters, shape factors and border counts.

    Returns
    -------
    dict
        ``count``, ``ecd_um_mean``, ``ecd_um_median``, ``d10_um``, ``d50_um``,
        ``d90_um`` (area-weighted) and ``size_classes`` (see :func:`size_classes`).
    """
    of_code = grains.select(grains.code == code)
    t = select_grains(of_code, border=options.border)
    ecd, area = t.ecd_um, t.area_um2
    d10, d50, d90 = d_values(ecd, area)
    out = {
        "count": len(t),
        "ecd_um_mean": float(ecd.mean()) if len(t) else None,
        "ecd_um_median": float(np.median(ecd)) if len(t) else None,
        "d10_um": d10, "d50_um": d50, "d90_um": d90,
        "size_classes": size_classes(ecd, area, series=options.series),
    }
    if extra:
        per = t.perimeter_um(options.perimeter)
        circ = 4 * math.pi * area / np.maximum(per, 1e-12) ** 2
        major, minor = t.axes_um()
        out.update({
            "count_all": len(of_code),
            "border_cut": int(of_code.border.sum()),
            "area_um2_mean": float(area.mean()) if len(t) else None,
            "perimeter_um_mean": float(per.mean()) if len(t) else None,
            "circularity_mean": float(circ.mean()) if len(t) else None,
            "aspect_ratio_mean": float((major / np.maximum(minor, 1e-12)).mean()) if len(t) else None,
        })
    return out


BETWEEN, UNCLASSIFIED = -1, -2


def grain_hosts(grains: GrainTable, *, enclosed: float = DEFAULT_ENCLOSED) -> np.ndarray:
    """(G,) int: the code of the class enclosing every grain (at least ``enclosed`` of its boundary against it),
    :data:`BETWEEN` (-1) for a grain between several classes, :data:`UNCLASSIFIED` (-2) for one whose only
    contacts are the image edge and unlabelled pixels."""
    known = grains.contacts[:, :_UNLABELLED_SLOT].astype(np.float64)
    total = known.sum(1)
    host = np.full(len(grains), UNCLASSIFIED)
    ok = total > 0
    if ok.any():
        best = known[ok].argmax(1)
        inside = known[ok][np.arange(int(ok.sum())), best] >= enclosed * total[ok] - 1e-9
        host[ok] = np.where(inside, best, BETWEEN)
    return host


def occurrence(grains: GrainTable, code: int, *, options: Options) -> dict:
    """How the grains of one mineral occur: enclosed in one class, or between several.

    A grain is enclosed in a class when at least ``options.enclosed`` of its boundary (Cauchy-Crofton length)
    is against that class: in the non-metallic background it is free in the gangue, in another mineral it is an
    inclusion (chalcopyrite in sphalerite, pentlandite in pyrrhotite). Otherwise it lies between several
    classes. The image edge and unlabelled pixels are not contacts; a grain with no other contact is not
    classified. The border policy of ``options`` chooses the grains.

    Parameters
    ----------
    grains : GrainTable
    code : int
        Mineral code.
    options : Options

    Returns
    -------
    dict
        ``{"grains": n classified, "unclassified": n, "hosts": [...]}``; every host entry is ``{"host": code of
        the enclosing class, or None for between several, "grains", "area_um2", "share" (of the classified
        grains' area), "d50_um"}``, largest share first.
    """
    t = select_grains(grains.select(grains.code == code), border=options.border)
    host = grain_hosts(t, enclosed=options.enclosed)
    ok = host != UNCLASSIFIED
    area, ecd = t.area_um2, t.ecd_um
    counted = float(area[ok].sum())
    hosts = []
    for h in np.unique(host[ok]):
        sel = host == h
        a = area[sel]
        hosts.append({"host": None if h == BETWEEN else int(h), "grains": int(sel.sum()), "area_um2": float(a.sum()),
                      "share": float(a.sum()) / counted if counted else 0.0,
                      "d50_um": d_values(ecd[sel], a, percents=(50,))[0]})
    hosts.sort(key=lambda e: -e["share"])
    return {"grains": int(ok.sum()), "unclassified": int((~ok).sum()), "hosts": hosts}


#: Lower edges (% of a particle's area) of the liberation classes; the last class is exactly 100 %.
LIBERATION_EDGES = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
#: Purities (% of the particle) at which the liberation summary reads the cumulative yield.
LIBERATION_READ = (50, 80, 90, 100)
#: The purity from which the samples' comparison counts a mineral as liberated (a common convention).
LIBERATED_PCT = 80


def liberation(particles: ParticleTable, code: int, *, options: Options) -> dict:
    """How free one mineral is of the other minerals, particle by particle (liberation by area, as automated
    mineralogy reports it for polished grain mounts).

    A particle is an 8-connected region of mineral pixels of any code between non-metallic (and unlabelled)
    pixels; in reflected light the non-metallic class holds both the gangue and the mounting medium, so purity is
    among the ore minerals. Every particle holding the mineral is classed by the mineral's share of its area, and
    the mineral's area is distributed over those classes. Particles cut by the image edge follow the border
    policy of ``options``.

    Parameters
    ----------
    particles : ParticleTable
    code : int
        Mineral code.
    options : Options

    Returns
    -------
    dict
        ``particles`` (count holding the mineral), ``counted`` (the share of the mineral's area in the particles
        counted: in a section of massive ore the large aggregates reach the image edge and are left out under
        the default border policy), ``classes`` (``lower_pct``, ``upper_pct``, ``share``: of the
        mineral's area in particles whose purity is in [lower, upper), the last class being exactly 100 %),
        ``at_least`` (purity % -> share of the mineral's area in particles at least that pure, for
        :data:`LIBERATION_READ`) and ``locking`` (``{"free": share in particles of it alone, "binary": {code: share
        in particles of it and that mineral only}, "multiple": share in particles of three minerals or more}``).
    """
    everywhere = float((particles.composition[:, code] * particles.pixel_size ** 2).sum())
    kept = particles.select(BORDER_POLICIES.get(options.border)(particles))
    comp, ps2 = kept.composition, kept.pixel_size ** 2
    has = comp[:, code] > 0
    comp, ps2 = comp[has], ps2[has]
    area = comp[:, code] * ps2  # the mineral's µm² in each particle
    total = float(area.sum())
    purity = 100.0 * comp[:, code] / np.maximum(comp.sum(1), 1)
    out = {"particles": int(has.sum()), "counted": total / everywhere if everywhere else 0.0, "classes": [],
           "at_least": {}, "locking": {"free": 0.0, "binary": {}, "multiple": 0.0}}
    if not total:
        return out
    edges = LIBERATION_EDGES
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (purity >= lo) & (purity < hi)
        out["classes"].append({"lower_pct": lo, "upper_pct": hi, "share": float(area[sel].sum()) / total})
    out["classes"].append({"lower_pct": 100, "upper_pct": 100, "share": float(area[purity >= 100].sum()) / total})
    for p in LIBERATION_READ:
        out["at_least"][p] = float(area[purity >= p - 1e-9].sum()) / total
    others = (comp > 0).sum(1) - 1
    out["locking"]["free"] = float(area[others == 0].sum()) / total
    out["locking"]["multiple"] = float(area[others >= 2].sum()) / total
    two = others == 1
    if two.any():
        partner = np.where(comp[two] > 0, np.arange(comp.shape[1]), -1)
        partner[:, code] = -1
        partner = partner.max(1)
        for c in np.unique(partner):
            out["locking"]["binary"][int(c)] = float(area[two][partner == c].sum()) / total
    return out


def cumulative_shares(classes: list[dict]) -> list[float]:
    """For every :func:`liberation` class, the share of the mineral in particles at least its lower edge pure."""
    out, cum = [], 0.0
    for k in reversed(classes):
        cum += k["share"]
        out.append(cum)
    return out[::-1]


def occurrence_label(host) -> str:
    """Words for an :func:`occurrence` host (a code as int or str, None for between several classes)."""
    if host is None:
        return "between several classes"
    return "free in the gangue" if int(host) == BACKGROUND else f"enclosed in {by_code(int(host)).name}"


def association(stats: MaskStats, *, method: str = "crofton") -> tuple[dict, dict]:
    """Shared boundary lengths and boundary fractions.

    Parameters
    ----------
    stats : MaskStats
    method : str
        A :data:`PERIMETER_METHODS` name.

    Returns
    -------
    lengths : dict
        code -> {code -> µm} for every pair of classes present, plus the keys
        255 (unlabelled pixels) and ``"edge"`` (the image edge) in the rows
        where they occur.
    fractions : dict
        mineral code -> {code -> fraction of the mineral's boundary against
        labelled classes that touches that class}; the entry for 0 is the
        free (background) surface.
    """
    length = stats.shared_length_um(method=method)
    codes = _codes_present(stats)
    lengths: dict = {}
    fractions: dict = {}
    for a in codes:
        row = {b: float(length[a, b]) for b in codes if b != a}
        if length[a, _UNLABELLED_SLOT] > 0:
            row[IGNORE] = float(length[a, _UNLABELLED_SLOT])
        if length[a, OUTSIDE] > 0:
            row["edge"] = float(length[a, OUTSIDE])
        lengths[a] = row
        if a == BACKGROUND:
            continue
        tot = sum(length[a, b] for b in codes if b != a)
        fractions[a] = {b: (float(length[a, b] / tot) if tot > 0 else 0.0) for b in codes if b != a}
    return lengths, fractions


def _skey(k) -> str:
    return str(k)


def _str_keys(d):
    if isinstance(d, dict):
        return {_skey(k): _str_keys(v) for k, v in d.items()}
    return d


def _occurrence_json(occ: dict) -> dict:
    return {**occ, "hosts": [{**h, "host": None if h["host"] is None else str(h["host"])} for h in occ["hosts"]]}


def image_entry(stats: MaskStats, *, options: Options, extra: bool = True) -> dict:
    """JSON-ready statistics of one measured mask (or a pooled set, with ``extra=False``).

    Returns
    -------
    dict
        ``area_fraction``, ``mass_fraction``, ``mass_fraction_no_background``,
        ``grains``, ``association``, ``occurrence`` (:func:`occurrence`) and ``liberation`` (:func:`liberation`)
        keyed by class codes as strings,
        ``element_grade`` (element -> mass fraction of the sample) and
        ``element_deportment`` (element -> code -> share of the element); with ``extra`` also ``shape``, ``pixel_size_um``,
        ``pixels``, ``area_um2``, ``area_fraction_no_background``,
        ``boundary_um`` and ``parameters``.
    """
    mod = modal(stats)
    minerals = [c for c in mod if c != BACKGROUND]
    lengths, fractions = association(stats, method=options.perimeter)
    area, mass, mass_ore = _mass_balance(mod, options)
    out = {
        "area_fraction": area,
        "mass_fraction": mass,
        "mass_fraction_no_background": mass_ore,
        "element_grade": grades(mass),
        "element_deportment": deportment(mass),
        "grains": {c: grain_summary(stats.grains, c, options=options, extra=extra) for c in minerals},
        "association": fractions,
        "occurrence": {c: _occurrence_json(occurrence(stats.grains, c, options=options)) for c in minerals},
        "liberation": {c: liberation(stats.particles, c, options=options) for c in minerals},
    }
    if extra:
        out = {
            "shape": [int(stats.shapes[0][0]), int(stats.shapes[0][1])] if len(stats.shapes) == 1 else
            [[int(h), int(w)] for h, w in stats.shapes],
            "pixel_size_um": stats.pixel_sizes[0] if len(stats.pixel_sizes) == 1 else list(stats.pixel_sizes),
            "pixels": {c: v["pixels"] for c, v in mod.items()} | (
                {IGNORE: int(stats.pixels[IGNORE])} if stats.pixels[IGNORE] else {}),
            "area_um2": {c: v["area_um2"] for c, v in mod.items()},
            "area_fraction_no_background": {c: mod[c]["fraction_no_background"] for c in minerals},
            **out,
            "boundary_um": lengths,
            "parameters": options.as_dict(),
        }
    return _str_keys(out)


def sample_from_name(name: str) -> str:
    """The sample an image's name suggests: the name up to its last '-', '_' or space (the whole name if it has
    none): DH12-41m-01 and DH12-41m-02 are of sample DH12-41m."""
    base = re.sub(r"[-_ ][^-_ ]*$", "", name).strip(" -_")
    return (base or name)[:MAX_SAMPLE_NAME]


def check_sample_name(value, *, what: str = "the sample name") -> str:
    """``value`` without surrounding spaces; ``ValueError`` (starting with ``what``) for one that is not text, is
    blank, or is longer than :data:`MAX_SAMPLE_NAME`."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty; name the sample (e.g. a drill-hole interval)")
    value = value.strip()
    if len(value) > MAX_SAMPLE_NAME:
        raise ValueError(f"{what} is {len(value)} characters long; use at most {MAX_SAMPLE_NAME}")
    return value


def group_samples(names, samples: Mapping[str, str]) -> dict[str, list[str]]:
    """The images of every sample, samples in order of their first image.

    Parameters
    ----------
    names : sequence of str
        The image stems analysed, in display order.
    samples : mapping of str to str
        Image stem -> sample name (a drill-core interval, a section, an ore type). Every image needs one; names
        are compared with surrounding spaces removed.

    Returns
    -------
    dict of str to list of str
        Sample -> its image stems.

    Raises
    ------
    ValueError
        For an image without a sample, a sample for an image not analysed, or an empty or over-long name.
    """
    names = list(names)
    missing = [n for n in names if n not in samples]
    if missing:
        raise ValueError(f"no sample given for {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}: "
                         "give every image a sample")
    extra = [n for n in samples if n not in names]
    if extra:
        raise ValueError(f"a sample is given for {', '.join(map(str, extra[:5]))}, which is not among the images "
                         f"analysed ({', '.join(names[:5])}{' …' if len(names) > 5 else ''})")
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(check_sample_name(samples[n], what=f"{n}: its sample name"), []).append(n)
    return groups


def summarize(results: Mapping[str, MaskStats], *, options: Options | None = None,
              samples: Mapping[str, str] | None = None) -> dict:
    """Statistics of every image and of all of them pooled.

    Parameters
    ----------
    results : mapping of str to MaskStats
        Image stem -> its measurement, in display order.
    options : Options, optional
    samples : mapping of str to str, optional
        Image stem -> the sample it belongs to (:func:`group_samples`), for statistics per sample.

    Returns
    -------
    dict
        ``{"images": {stem: image_entry}, "total": {"area_fraction", "grains",
        "association", ...}}`` with class codes as strings; with two images or more
        the total also has ``area_fraction_se`` and ``area_fraction_ci95``
        (:func:`between_images`). With ``samples``, also ``"samples": {sample: entry}``: each sample's images
        pooled as the total pools them all, with ``"images"`` (its stems) and, from two images on,
        ``area_fraction_se`` / ``area_fraction_ci95`` from the variation between its own images.
    """
    options = options or Options()
    if not results:
        raise ValueError("no masks to summarise: give at least one mask")
    groups = group_samples(list(results), samples) if samples is not None else None
    images = {name: image_entry(s, options=options) for name, s in results.items()}
    out = {"images": images, "total": _pooled_entry(list(results.values()), options)}
    if groups is not None:
        out["samples"] = {sample: {"images": members, **_pooled_entry([results[n] for n in members], options)}
                          for sample, members in groups.items()}
    return out


def _pooled_entry(results: list, options: Options) -> dict:
    """:func:`image_entry` of several measurements pooled, with the spread between them from two on."""
    entry = image_entry(combine(results), options=options, extra=False)
    spread = between_images(results)
    if spread:
        entry["area_fraction_se"] = {str(c): v["se"] for c, v in spread.items()}
        entry["area_fraction_ci95"] = {str(c): v["ci95"] for c, v in spread.items()}
    return entry


_TABLE_KINDS = ("modal", "assay", "deportment", "grain_summary", "size_classes", "association", "occurrence",
                "liberation", "locking")


def _scope_rows(scope: str, stats: MaskStats, options: Options, spread: Mapping, rows: dict, *,
                key: str = "image") -> None:
    """Append the rows of every :data:`_TABLE_KINDS` table for one scope (an image, a sample or the total)."""
    mod = modal(stats)
    _, mass, mass_ore = _mass_balance(mod, options)
    for c, v in mod.items():
        m = by_code(c)
        sp = spread.get(c, {})
        rows["modal"].append({key: scope, "code": c, "label": m.label, "mineral": m.name, **v,
                              "fraction_se": sp.get("se"), "fraction_ci95": sp.get("ci95"),
                              "mass_fraction": mass.get(c, 0.0),
                              "mass_fraction_no_background": mass_ore.get(c, 0.0) if c != BACKGROUND else None})
    ore_grades = grades(mass_ore)
    for el, g in grades(mass).items():
        rows["assay"].append({key: scope, "element": el, "grade": g, "grade_in_ore_minerals": ore_grades[el]})
    for el, shares in deportment(mass).items():
        for c, share in shares.items():
            m = by_code(c)
            rows["deportment"].append({key: scope, "element": el, "code": c, "label": m.label, "mineral": m.name,
                                       "share": share})
    for c in mod:
        if c == BACKGROUND:
            continue
        g = grain_summary(stats.grains, c, options=options, extra=True)
        m = by_code(c)
        rows["grain_summary"].append({key: scope, "code": c, "label": m.label, "mineral": m.name,
                                      **{k: v for k, v in g.items() if k != "size_classes"}})
        for row in g["size_classes"]:
            rows["size_classes"].append({key: scope, "code": c, "label": m.label, **row})
        for h in occurrence(stats.grains, c, options=options)["hosts"]:
            rows["occurrence"].append({
                key: scope, "code": c, "label": m.label, "mineral": m.name, "host_code": h["host"],
                "occurs": occurrence_label(h["host"]), "grains": h["grains"], "area_um2": h["area_um2"],
                "share": h["share"], "d50_um": h["d50_um"]})
        lib = liberation(stats.particles, c, options=options)
        for k, at_least in zip(lib["classes"], cumulative_shares(lib["classes"])):
            rows["liberation"].append({key: scope, "code": c, "label": m.label, "mineral": m.name,
                                       "particles": lib["particles"], "counted": lib["counted"],
                                       "lower_pct": k["lower_pct"], "upper_pct": k["upper_pct"],
                                       "share": k["share"], "share_at_least_lower": at_least})
        lock = lib["locking"]
        if lib["classes"]:
            locks = [(None, "free of other minerals", lock["free"])] + [
                (w, f"with {by_code(w).name} only", v) for w, v in sorted(lock["binary"].items(), key=lambda kv: -kv[1])
            ] + [(None, "with two or more other minerals", lock["multiple"])]
            for w, words, v in locks:
                rows["locking"].append({key: scope, "code": c, "label": m.label, "mineral": m.name,
                                        "locked": words, "with_code": w, "share": v})
    lengths, fractions = association(stats, method=options.perimeter)
    for a, row in lengths.items():
        for b, length in row.items():
            rows["association"].append({
                key: scope, "code": a, "label": by_code(a).label,
                "other": b if b != "edge" else "edge",
                "other_label": ("unlabelled" if b == IGNORE else "image edge" if b == "edge" else by_code(b).label),
                "shared_length_um": length,
                "fraction_of_boundary": fractions.get(a, {}).get(b) if isinstance(b, int) else None,
            })


def _frames(rows: dict, key: str) -> dict:
    import pandas as pd

    head = [key, "code", "label"]
    columns = {
        "modal": head + ["mineral", "pixels", "area_um2", "fraction", "fraction_se", "fraction_ci95",
                         "fraction_no_background", "mass_fraction", "mass_fraction_no_background"],
        "assay": [key, "element", "grade", "grade_in_ore_minerals"],
        "deportment": [key, "element", "code", "label", "mineral", "share"],
        "grain_summary": head + [
            "mineral", "count", "ecd_um_mean", "ecd_um_median", "d10_um", "d50_um", "d90_um", "count_all",
            "border_cut", "area_um2_mean", "perimeter_um_mean", "circularity_mean", "aspect_ratio_mean"],
        "size_classes": head + [
            "lower_um", "upper_um", "count", "area_um2", "number_pct", "area_pct", "cum_number_pct", "cum_area_pct"],
        "association": head + ["other", "other_label", "shared_length_um", "fraction_of_boundary"],
        "occurrence": head + ["mineral", "host_code", "occurs", "grains", "area_um2", "share", "d50_um"],
        "liberation": head + ["mineral", "particles", "counted", "lower_pct", "upper_pct", "share",
                              "share_at_least_lower"],
        "locking": head + ["mineral", "locked", "with_code", "share"],
    }
    return {k: pd.DataFrame(rows[k], columns=columns[k]) for k in _TABLE_KINDS}


def tables(results: Mapping[str, MaskStats], *, options: Options | None = None,
           samples: Mapping[str, str] | None = None) -> dict:
    """Flat tables for CSV/XLSX export.

    Parameters
    ----------
    results : mapping of str to MaskStats
    options : Options, optional
    samples : mapping of str to str, optional
        Image stem -> sample (see :func:`group_samples`); adds the tables of the samples.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``modal``, ``assay``, ``deportment``, ``grain_summary``, ``size_classes``, ``association``,
        ``occurrence`` (one row per image and class, pair or host, plus ``total``) and ``grains`` (one row per
        grain); with ``samples`` also ``samples`` (image, sample) and the same seven tables of the samples
        (``sample_modal`` … ``sample_occurrence``), with a ``sample`` column where the others have ``image``.
    """
    import pandas as pd

    options = options or Options()
    names = list(results)
    groups = group_samples(names, samples) if samples is not None else None
    pooled = combine([results[n] for n in names])
    rows = {k: [] for k in _TABLE_KINDS}
    for n in names:
        _scope_rows(n, results[n], options, {}, rows)
    _scope_rows("total", pooled, options, between_images(results[n] for n in names), rows)
    out = _frames(rows, "image")
    if groups is not None:
        srows = {k: [] for k in _TABLE_KINDS}
        for sample, members in groups.items():
            sub = [results[n] for n in members]
            _scope_rows(sample, combine(sub), options, between_images(sub), srows, key="sample")
        out["samples"] = pd.DataFrame([{"image": n, "sample": samples[n].strip()} for n in names],
                                      columns=["image", "sample"])
        out.update({f"sample_{k}": v for k, v in _frames(srows, "sample").items()})
    t = pooled.grains
    per = t.perimeter_um(options.perimeter)
    major, minor = t.axes_um()
    area = t.area_um2
    known = t.contacts[:, :_UNLABELLED_SLOT].astype(np.float64).sum(1)
    hosts = grain_hosts(t, enclosed=options.enclosed)
    grains = pd.DataFrame({
        "image": [names[i] for i in t.image] if len(t) else [],
        "code": t.code.astype(int), "label": [by_code(int(c)).label for c in t.code],
        "area_px": t.pixels, "area_um2": area, "ecd_um": t.ecd_um, "perimeter_um": per,
        "circularity": 4 * math.pi * area / np.maximum(per, 1e-12) ** 2,
        "major_axis_um": major, "minor_axis_um": minor,
        "aspect_ratio": major / np.maximum(minor, 1e-12),
        "x": t.centroid[:, 0], "y": t.centroid[:, 1],
        "bbox_x": t.bbox[:, 0], "bbox_y": t.bbox[:, 1], "bbox_w": t.bbox[:, 2], "bbox_h": t.bbox[:, 3],
        "border_cut": t.border,
        # against the classes only (the image edge and unlabelled pixels left out), as for how the minerals occur
        "boundary_share_gangue": np.where(known > 0, t.contacts[:, BACKGROUND] / np.maximum(known, 1e-12), np.nan),
        "host_code": pd.Series(hosts, dtype="Int64").mask(hosts < 0),
        "occurs": pd.Series(hosts).map({h: None if h == UNCLASSIFIED else occurrence_label(None if h == BETWEEN else h)
                                        for h in np.unique(hosts)}).to_numpy(object),
    })
    out["grains"] = grains
    first = [*_TABLE_KINDS, "grains"]  # the images' tables first, as before samples existed
    return {k: out[k] for k in first} | {k: v for k, v in out.items() if k not in first}


def liberation_rows(lib, lock, col: str, where: str):
    """One row per mineral of a scope: particles, % of its area in particles at least 50, 80, 90 and 100 % of it,
    free of other minerals, locked with the most common partner only, and with two or more others; from the
    ``liberation`` and ``locking`` tables (or their ``sample_`` versions) for ``lib[col] == where``."""
    import pandas as pd

    lib, lock = lib[lib[col] == where], lock[lock[col] == where]
    out = []
    for (code, label), rows in lib.groupby(["code", "label"], sort=False):
        at = dict(zip(rows["lower_pct"], rows["share_at_least_lower"]))
        exact = rows[(rows["lower_pct"] == 100)]["share"].sum()
        lk = lock[lock["code"] == code]
        binary = lk[lk["with_code"].notna()]
        top = binary.iloc[0] if len(binary) else None
        out.append({"mineral": label, "particles": int(rows["particles"].iloc[0]),
                    "% of it counted": 100 * rows["counted"].iloc[0],
                    "≥ 50 %": 100 * at.get(50, 0.0), "≥ 80 %": 100 * at.get(80, 0.0),
                    "≥ 90 %": 100 * at.get(90, 0.0), "100 %": 100 * exact,
                    "locked with": "–" if top is None else by_code(int(top["with_code"])).label,
                    "% locked with it only": 0.0 if top is None else 100 * top["share"],
                    "% with two or more others": 100 * lk[lk["locked"] == "with two or more other minerals"]
                    ["share"].sum()})
    return pd.DataFrame(out, columns=["mineral", "particles", "% of it counted", "≥ 50 %", "≥ 80 %", "≥ 90 %",
                                      "100 %", "locked with",
                                      "% locked with it only", "% with two or more others"]).round(2)


def half_width_text(v: float) -> str:
    """An interval's half-width in two significant figures, written out in full from 10 on (150, not 1.5e+02)."""
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def sample_comparison(tabs: Mapping, summary: Mapping) -> dict:
    """The samples side by side, for the page and the report.

    Parameters
    ----------
    tabs : dict of str to pandas.DataFrame
        :func:`tables` with ``samples``.
    summary : dict
        :func:`summarize` with the same ``samples``.

    Returns
    -------
    dict of str to pandas.DataFrame
        Indexed by sample, in the summary's order, one column per class label: ``area`` (area %, 0 where a
        sample has none of a class), ``area_ci95`` (half-width of its 95 % interval in area %, NaN for a sample
        of one image), ``area_text`` ("12.3 ± 4.5", "60.1 ± 150", with an ``images`` column first), ``wt``
        (wt %); ``assay`` (wt % per element), ``d50`` (µm, NaN where no grain was counted) and ``liberated``
        (% of each mineral in particles at least :data:`LIBERATED_PCT` % of which it makes up).
    """
    order = list(summary["samples"])

    def pivot(df, values, scale=100.0, columns="label"):
        out = df.pivot_table(index="sample", columns=columns, values=values, sort=False, dropna=False) * scale
        return out.reindex(order)

    modal = tabs["sample_modal"]
    area = pivot(modal, "fraction")
    ci = pivot(modal, "fraction_ci95").reindex(columns=area.columns)
    area = area.fillna(0.0)
    text = area.map(lambda v: f"{v:.3g}")
    text = text.where(ci.isna(), text + " ± " + ci.map(half_width_text))
    text.insert(0, "images", [len(summary["samples"][g]["images"]) for g in order])
    lib = tabs["sample_liberation"]
    return {"area": area, "area_ci95": ci, "area_text": text, "wt": pivot(modal, "mass_fraction").fillna(0.0),
            "assay": pivot(tabs["sample_assay"], "grade", columns="element"),
            "d50": pivot(tabs["sample_grain_summary"], "d50_um", scale=1.0),
            "liberated": pivot(lib[lib["lower_pct"] == LIBERATED_PCT], "share_at_least_lower")}
