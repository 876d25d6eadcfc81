"""Mass balance of a modal mineralogy: mineral weight percent, calculated element grades and deportment.

The area fraction of a mineral in a random section estimates its volume fraction in the rock (Delesse's
principle). Weighting each volume by the mineral's density gives its mass fraction, and the idealised
formula of each mineral (:attr:`core.minerals.Mineral.composition`) turns mass fractions into the grade of
every element and into its deportment: which minerals carry what share of it.

What the numbers assume, and say in the report:

- The non-metallic class (gangue, but also epoxy and holes where the photograph shows them) has one density,
  ``gangue_density`` (2.7 g/cm³ by default: quartz 2.65, calcite 2.71, feldspars 2.56–2.76) and carries none of
  the elements reported. Mass fractions over the ore minerals alone, and the deportment, do not depend on it.
- Minerals have their ideal compositions: natural pyrrhotite, pentlandite, sphalerite and tennantite vary
  (Fe1-xS with 0 < x < 0.125, Fe:Ni of pentlandite, iron in sphalerite, Fe and Zn in tennantite).
- Only what the section shows is counted: gold or pentlandite below the photograph's resolution is missed.
"""
from __future__ import annotations

from typing import Mapping

from ..minerals import BACKGROUND, by_code

__all__ = ["ATOMIC_WEIGHTS", "DEFAULT_GANGUE_DENSITY", "ELEMENTS", "check_gangue_density", "element_fractions",
           "mass_fractions", "grades", "deportment"]

#: Standard atomic weights (IUPAC, conventional values), g/mol.
ATOMIC_WEIGHTS: dict[str, float] = {
    "Cu": 63.546, "Ni": 58.693, "Pb": 207.2, "Zn": 65.38, "Au": 196.97, "Fe": 55.845, "As": 74.922,
    "S": 32.06, "O": 15.999,
}
#: Elements reported, in this order: the payable metals first, then iron, arsenic (a smelter penalty) and sulphur.
ELEMENTS: tuple[str, ...] = ("Cu", "Ni", "Pb", "Zn", "Au", "Fe", "As", "S")
DEFAULT_GANGUE_DENSITY = 2.7


def check_gangue_density(value) -> float:
    """``value`` as a density in g/cm³; ``ValueError`` unless it is a plausible rock density (0.5–10)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the gangue density must be a number in g/cm³, not {value!r}") from None
    if not 0.5 <= v <= 10.0:
        raise ValueError(f"a gangue density of {v:g} g/cm³ is not a rock's; give a value between 0.5 and 10 "
                         "(quartz 2.65, calcite 2.71)")
    return v


def element_fractions(code: int) -> dict[str, float]:
    """Mass fraction of each element in mineral ``code`` (from its idealised formula); empty for the gangue."""
    comp = by_code(code).composition
    if not comp:
        return {}
    mass = {el: n * ATOMIC_WEIGHTS[el] for el, n in comp}
    total = sum(mass.values())
    return {el: m / total for el, m in mass.items()}


def _density(code: int, gangue_density: float) -> float:
    if int(code) == BACKGROUND:
        return gangue_density
    d = by_code(code).density
    if d is None:
        raise ValueError(f"no density is known for {by_code(code).name}")
    return float(d)


def mass_fractions(area_fraction: Mapping, *, gangue_density: float = DEFAULT_GANGUE_DENSITY,
                   background: bool = True) -> dict[int, float]:
    """Mass fractions from area (= volume) fractions.

    Parameters
    ----------
    area_fraction : mapping of class code (int or str) to float
        As in :func:`core.stats.modal` (any normalisation: they are renormalised).
    gangue_density : float
        Density of the non-metallic class, g/cm³.
    background : bool
        False: over the ore minerals only (the non-metallic class left out, and with it the gangue density).

    Returns
    -------
    dict of int to float
        Code -> mass fraction, summing to 1 (empty when there is no mass to share).
    """
    gangue_density = check_gangue_density(gangue_density)
    mass = {int(c): float(f) * _density(int(c), gangue_density) for c, f in area_fraction.items()
            if background or int(c) != BACKGROUND}
    total = sum(mass.values())
    return {c: m / total for c, m in mass.items()} if total > 0 else {}


def grades(mass_fraction: Mapping) -> dict[str, float]:
    """Element -> mass fraction of the sample carried by its minerals (:data:`ELEMENTS`, those present only)."""
    out = {el: 0.0 for el in ELEMENTS}
    for c, f in mass_fraction.items():
        for el, w in element_fractions(int(c)).items():
            if el in out:
                out[el] += float(f) * w
    return {el: v for el, v in out.items() if v > 0}


def deportment(mass_fraction: Mapping) -> dict[str, dict[int, float]]:
    """Element -> {mineral code -> share of that element it carries}; each element's shares sum to 1."""
    out: dict[str, dict[int, float]] = {}
    for c, f in mass_fraction.items():
        for el, w in element_fractions(int(c)).items():
            if el in ELEMENTS and f > 0:
                out.setdefault(el, {})[int(c)] = float(f) * w
    ordered = {}
    for el in ELEMENTS:
        if el in out:
            total = sum(out[el].values())
            ordered[el] = {c: v / total for c, v in sorted(out[el].items())}
    return ordered
