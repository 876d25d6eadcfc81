"""The mineral catalogue: LumenStone class codes, names, colours and optical facts.

Codes and colours follow the LumenStone dataset so that masks written here
interoperate with it.

References
----------
.. [1] Korshunov D. et al., "From visual diagnostics to deep learning: automatic
   mineral identification in polished section images", Mining Science and
   Technology (Russia) 10(3), 2025, 232-244. doi:10.17073/2500-0632-2025-05-416
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Mineral",
    "MINERALS",
    "IGNORE",
    "BACKGROUND",
    "CODES",
    "by_code",
    "by_label",
    "palette",
    "colorize",
    "name_of",
]

IGNORE = 255
BACKGROUND = 0


@dataclass(frozen=True)
class Mineral:
    """One class of the catalogue.

    Attributes
    ----------
    code : int
        LumenStone class code written into masks.
    label : str
        Short mineralogical abbreviation (``"ccp"``).
    name : str
        Full name.
    color : tuple of int
        LumenStone display colour (R, G, B).
    formula : str
        Chemical formula.
    reflected_color : str
        Colour in plane-polarised reflected light, as a geologist describes it.
    reflectance : float
        Approximate reflectance in air at 546 nm, percent.
    anisotropic : bool
        Whether the mineral is anisotropic under crossed polars.
    anisotropy_strength : float
        0 (isotropic) to 1 (strongly anisotropic); drives XPL simulation.
    density : float or None
        Typical density in g/cm³ (None for the non-metallic class, whose density the user gives: it depends
        on the gangue).
    composition : tuple of (str, float)
        Atoms per formula unit of the idealised end member the mass balance uses (pyrrhotite as Fe7S8,
        pentlandite with Fe:Ni 1:1, sphalerite iron-free, tennantite Cu12As4S13, gold pure).
    """

    code: int
    label: str
    name: str
    color: tuple[int, int, int]
    formula: str
    reflected_color: str
    reflectance: float
    anisotropic: bool
    anisotropy_strength: float
    density: float | None = None
    composition: tuple[tuple[str, float], ...] = ()


MINERALS: tuple[Mineral, ...] = (
    Mineral(0, "bg", "non-metallic / background", (0, 0, 0), "-",
            "dark grey (gangue, epoxy)", 5.0, False, 0.0),
    Mineral(1, "ccp", "chalcopyrite", (255, 0, 0), "CuFeS2",
            "brass yellow", 44.0, True, 0.15,
            density=4.19, composition=(("Cu", 1), ("Fe", 1), ("S", 2))),
    Mineral(2, "gl", "galena", (203, 255, 0), "PbS",
            "white, triangular pits", 43.0, False, 0.0,
            density=7.58, composition=(("Pb", 1), ("S", 1))),
    Mineral(3, "mag", "magnetite", (0, 0, 255), "Fe3O4",
            "grey with brownish tint", 20.0, False, 0.0,
            density=5.18, composition=(("Fe", 3), ("O", 4))),
    Mineral(4, "br", "bornite", (0, 101, 255), "Cu5FeS4",
            "pinkish brown, tarnishes purple", 22.0, False, 0.0,
            density=5.09, composition=(("Cu", 5), ("Fe", 1), ("S", 4))),
    Mineral(5, "po", "pyrrhotite", (255, 153, 0), "Fe1-xS",
            "creamy pinkish brown", 39.0, True, 0.8,
            density=4.61, composition=(("Fe", 7), ("S", 8))),
    Mineral(6, "py", "pyrite", (255, 76, 76), "FeS2",
            "pale yellowish white", 52.0, False, 0.0,
            density=5.01, composition=(("Fe", 1), ("S", 2))),
    Mineral(7, "pn", "pentlandite", (255, 255, 0), "(Fe,Ni)9S8",
            "light creamy", 47.0, False, 0.0,
            density=4.8, composition=(("Fe", 4.5), ("Ni", 4.5), ("S", 8))),
    Mineral(8, "sh", "sphalerite", (76, 255, 147), "ZnS",
            "grey, internal reflections", 17.0, False, 0.0,
            density=4.05, composition=(("Zn", 1), ("S", 1))),
    Mineral(9, "apy", "arsenopyrite", (0, 204, 204), "FeAsS",
            "white with creamy tint", 51.0, True, 0.6,
            density=6.07, composition=(("Fe", 1), ("As", 1), ("S", 1))),
    Mineral(10, "hem", "hematite", (153, 51, 0), "Fe2O3",
            "grey-white with bluish tint, red internal reflections", 28.0, True, 0.5,
            density=5.26, composition=(("Fe", 2), ("O", 3))),
    Mineral(11, "tnt", "tennantite", (255, 153, 153), "Cu12As4S13",
            "grey with greenish tint", 29.0, False, 0.0,
            density=4.62, composition=(("Cu", 12), ("As", 4), ("S", 13))),
    Mineral(12, "cv", "covellite", (102, 0, 204), "CuS",
            "indigo blue, strongly pleochroic", 15.0, True, 1.0,
            density=4.68, composition=(("Cu", 1), ("S", 1))),
    Mineral(13, "mrc", "marcasite", (255, 0, 204), "FeS2",
            "creamy white", 49.0, True, 0.9,
            density=4.89, composition=(("Fe", 1), ("S", 2))),
    Mineral(14, "au", "native gold", (255, 215, 0), "Au",
            "bright golden yellow", 74.0, False, 0.0,
            density=19.3, composition=(("Au", 1),)),
)

CODES: tuple[int, ...] = tuple(m.code for m in MINERALS)
_BY_CODE = {m.code: m for m in MINERALS}
_BY_LABEL = {m.label: m for m in MINERALS}


def by_code(code: int) -> Mineral:
    """Return the mineral with LumenStone ``code``; ``ValueError`` if unknown."""
    try:
        return _BY_CODE[int(code)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"unknown class code {code!r}; valid codes are {list(CODES)} (255 = unlabelled)"
        ) from None


def by_label(label: str) -> Mineral:
    """Return the mineral with abbreviation ``label`` (``"py"``) or full name."""
    key = str(label).strip().lower()
    if key in _BY_LABEL:
        return _BY_LABEL[key]
    for m in MINERALS:
        if m.name == key:
            return m
    raise ValueError(f"unknown mineral {label!r}; valid labels are {sorted(_BY_LABEL)}")


def name_of(code: int) -> str:
    """Human-readable name for a code, including 255."""
    if int(code) == IGNORE:
        return "unlabelled"
    return by_code(code).name


def palette() -> np.ndarray:
    """(256, 3) uint8 lookup table: code -> LumenStone colour; 255 -> white-grey."""
    lut = np.zeros((256, 3), np.uint8)
    for m in MINERALS:
        lut[m.code] = m.color
    lut[IGNORE] = (224, 224, 224)
    return lut


_PALETTE = palette()


def colorize(mask: np.ndarray) -> np.ndarray:
    """Colour a mask of codes.

    Parameters
    ----------
    mask : (M, N) uint8 ndarray
        LumenStone codes.

    Returns
    -------
    rgb : (M, N, 3) uint8 ndarray
    """
    return _PALETTE[np.asarray(mask, dtype=np.uint8)]
