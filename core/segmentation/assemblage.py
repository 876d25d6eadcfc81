"""Mineral assemblages: which minerals can be predicted together in one photograph.

Ore minerals come in assemblages. The LumenStone photographs, for example, are either copper-nickel ores
(pyrrhotite, pentlandite, chalcopyrite, magnetite) or complex base-metal ores (galena, sphalerite, pyrite,
bornite, tennantite, chalcopyrite), and no photograph holds pyrrhotite and pyrite together. A network that sees
a patch at a time does not know this and calls a pyrrhotite grain pyrite where the colours are close.

Two ways to use this after the network:

- **automatic** (config ``"assemblage"``): training records the pairs of minerals that never occur in the same
  training photograph (``"exclusive"``). For a new photograph, every set of minerals with no exclusive pair
  between them (a maximal clique of the "seen together" graph) is scored by the probability mass the network
  gives it over the whole photograph; the best set is kept and the other minerals' probabilities are removed.
  A photograph whose predicted minerals were all seen together is left exactly as it was.
- **by hand**: the user names the minerals the sample can hold (a geologist usually knows the ore type); every
  other mineral's probability is removed. The non-metallic class (code 0) is always kept.

Probabilities are renormalised over the kept minerals, so labels, uncertainty and areas all follow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable

import numpy as np

from ..minerals import IGNORE, by_code, by_label
from .halfprec import assign

__all__ = ["Assemblage", "DEFAULT_MIN_SHARE", "assemblage_from_masks", "assemblage_settings", "choose_minerals",
           "compatible_sets", "parse_minerals", "probability_mass", "restrict", "user_minerals",
           "widen_assemblage"]

DEFAULT_MIN_SHARE = 1e-4  # a mineral counts as present in a photograph from 0.01 % of its labelled pixels
NOTABLE_SHARE = 1e-3  # removals below this share of the probability mass are not worth a message
# the choice is a close call when the best alternative set's own minerals hold at least this fraction of what
# the kept set's own minerals hold (shared minerals, e.g. chalcopyrite and non-metallic, count for neither)
CLOSE_RATIO = 0.5
ALWAYS = 0  # non-metallic minerals / background: in every polished section


@dataclass
class Assemblage:
    """Which minerals were kept for a photograph, and why.

    Attributes
    ----------
    mode : str
        ``"auto"`` (from the training assemblages) or ``"user"`` (minerals named by hand).
    kept, removed : list of int
        Class codes kept and removed (removed is empty when nothing changed).
    mass : dict
        Share of the photograph's probability mass per class code, before the change.
    alternative : list of int
        The compatible set with the next most probability mass (automatic mode; empty when there is none).
    """

    mode: str
    kept: list[int]
    removed: list[int] = field(default_factory=list)
    mass: dict = field(default_factory=dict)
    alternative: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    @property
    def removed_share(self) -> float:
        """Probability mass of the removed minerals (the share of the photograph that may change label)."""
        return float(sum(self.mass.get(c, 0.0) for c in self.removed))

    def _own_shares(self) -> tuple[float, float]:
        """Probability mass of the kept set's own minerals and of the alternative's own (not shared) minerals."""
        kept, alt = set(self.kept), set(self.alternative)
        return (float(sum(self.mass.get(c, 0.0) for c in kept - alt)),
                float(sum(self.mass.get(c, 0.0) for c in alt - kept)))

    @property
    def close(self) -> bool:
        """Whether the automatic choice was a close call (see ``CLOSE_RATIO``), so the user should check it."""
        if self.mode != "auto" or not self.alternative or self.removed_share < NOTABLE_SHARE:
            return False
        own, other = self._own_shares()
        return other >= NOTABLE_SHARE and other >= CLOSE_RATIO * own

    def describe(self) -> str:
        """One line for the user; empty when nothing that mattered was removed (automatic mode, < 0.1 %)."""
        if not self.removed or (self.mode == "auto" and self.removed_share < NOTABLE_SHARE):
            return ""
        names = ", ".join(by_code(c).name for c in self.removed)
        if self.mode == "user":
            return f"left out minerals not chosen for this sample: {names}"
        line = (f"left out {names} ({100 * self.removed_share:.1f} % of the photograph's probability): never seen "
                f"in one training photograph with the minerals found here")
        if self.close:
            own, other = self._own_shares()
            kept = ", ".join(by_code(c).name for c in sorted(set(self.kept) - set(self.alternative)))
            alt = ", ".join(by_code(c).name for c in sorted(set(self.alternative) - set(self.kept)))
            line += (f". A close call: {kept} held {100 * own:.1f} % of the probability against {100 * other:.1f} % "
                     f"for {alt}; check the result, and if the sample's minerals are known, name them")
        return line

    def as_dict(self) -> dict:
        out = {"mode": self.mode, "kept": self.kept, "removed": self.removed,
               "removed_share": round(self.removed_share, 4)}
        if self.mode == "auto":
            own, other = self._own_shares()
            out.update(alternative=self.alternative, kept_own_share=round(own, 4),
                       alternative_own_share=round(other, 4), close=self.close)
        return out


def _present(mask: np.ndarray, classes: list[int], min_share: float) -> set[int]:
    m = np.asarray(mask)
    labelled = int((m != IGNORE).sum())
    if labelled == 0:
        return set()
    counts = np.bincount(m.ravel(), minlength=256)
    return {c for c in classes if counts[c] > 0 and counts[c] / labelled >= min_share}


def assemblage_from_masks(masks: Iterable[np.ndarray], classes: list[int], *,
                          min_share: float = DEFAULT_MIN_SHARE) -> dict:
    """The config entry ``"assemblage"``: class pairs that never occur together in one of ``masks``.

    Masks hold LumenStone codes (255 ignored); a class is present in a mask from ``min_share`` of its labelled
    pixels. The non-metallic class is never part of an exclusive pair.
    """
    seen: set[tuple[int, int]] = set()
    n = 0
    for m in masks:
        p = sorted(_present(m, classes, min_share))
        n += 1
        seen.update(combinations(p, 2))
    exclusive = [[a, b] for a, b in combinations(sorted(classes), 2)
                 if (a, b) not in seen and ALWAYS not in (a, b)]
    return {"exclusive": exclusive, "min_share": min_share, "n_images": n}


def widen_assemblage(entry: dict | None, masks: Iterable[np.ndarray], classes: list[int]) -> dict | None:
    """``entry`` without the exclusive pairs that ``masks`` (e.g. a user's annotations) show together.

    Annotations are sparse, so here any labelled pixel counts.
    """
    if not entry:
        return entry
    together: set[tuple[int, int]] = set()
    for m in masks:
        together.update(combinations(sorted(_present(m, classes, 0.0)), 2))
    out = dict(entry)
    out["exclusive"] = [p for p in entry.get("exclusive", []) if tuple(sorted(p)) not in together]
    return out


def assemblage_settings(config: dict) -> list[tuple[int, int]] | None:
    """The exclusive class pairs of a model config, or None when the model has no assemblage entry (or none)."""
    entry = config.get("assemblage")
    if not entry or not entry.get("exclusive"):
        return None
    classes = set(config["classes"])
    pairs = []
    for p in entry["exclusive"]:
        if len(p) != 2:
            raise ValueError(f"assemblage exclusive pairs need two class codes each, got {p}")
        a, b = int(p[0]), int(p[1])
        if a in classes and b in classes:
            pairs.append((a, b))
    return pairs or None


def compatible_sets(classes: list[int], exclusive: list[tuple[int, int]]) -> list[list[int]]:
    """Maximal sets of ``classes`` with no exclusive pair inside (Bron-Kerbosch on the compatibility graph)."""
    bad = {frozenset(p) for p in exclusive}
    nbr = {c: {d for d in classes if d != c and frozenset((c, d)) not in bad} for c in classes}
    out: list[list[int]] = []

    def expand(r: set, p: set, x: set) -> None:
        if not p and not x:
            out.append(sorted(r))
            return
        pivot = max(p | x, key=lambda u: len(nbr[u] & p))
        for v in sorted(p - nbr[pivot]):
            expand(r | {v}, p & nbr[v], x & nbr[v])
            p = p - {v}
            x = x | {v}

    expand(set(), set(classes), set())
    return sorted(out)


def probability_mass(probs: np.ndarray, classes: list[int]) -> dict:
    """Share of the total probability per class code over all pixels of ``probs`` (K, H, W)."""
    k = len(classes)
    flat = probs.reshape(k, -1)
    # mean over pixels in chunks, in float64, so float16 input neither overflows nor needs a full copy
    total = np.zeros(k)
    for s in range(0, flat.shape[1], 1 << 20):
        total += flat[:, s:s + (1 << 20)].sum(1, dtype=np.float64)
    total /= max(total.sum(), 1e-12)
    return {c: float(total[i]) for i, c in enumerate(classes)}


def choose_minerals(probs: np.ndarray, classes: list[int], exclusive: list[tuple[int, int]]) -> Assemblage:
    """The compatible set of minerals with the most probability mass in ``probs`` (K, H, W)."""
    mass = probability_mass(probs, classes)
    sets = sorted(compatible_sets(classes, exclusive), key=lambda s: (sum(mass[c] for c in s), len(s)), reverse=True)
    best = sets[0]
    return Assemblage("auto", kept=best, removed=[c for c in classes if c not in best], mass=mass,
                      alternative=sets[1] if len(sets) > 1 else [])


def user_minerals(probs: np.ndarray, classes: list[int], keep: list[int]) -> Assemblage:
    """The report for minerals named by the user (``keep``, class codes the model knows)."""
    return Assemblage("user", kept=keep, removed=[c for c in classes if c not in keep],
                      mass=probability_mass(probs, classes))


def parse_minerals(spec: str | Iterable, classes: list[int]) -> list[int]:
    """Class codes from a user's list of minerals: codes or labels (``"5,7,ccp"`` or ``["po", 7]``).

    Every mineral must be one the model knows. The non-metallic class is added when the model has it.
    """
    codes = []
    for item in spec.split(",") if isinstance(spec, str) else spec:
        text = str(item).strip()
        if not text:
            continue
        code = int(text) if text.lstrip("-").isdigit() else by_label(text).code
        by_code(code)  # a clear error for an unknown code
        if code not in classes:
            known = ", ".join(f"{c} ({by_code(c).label})" for c in classes)
            raise ValueError(f"this model does not know {by_code(code).name} (code {code}); it knows {known}")
        codes.append(code)
    if not codes:
        raise ValueError("name at least one mineral (codes or labels, e.g. 'po,pn,ccp')")
    if ALWAYS in classes:
        codes.append(ALWAYS)
    return sorted(set(codes))


def restrict(probs: np.ndarray, classes: list[int], keep: Iterable[int], *, inplace: bool = False) -> np.ndarray:
    """``probs`` (K, H, W) with the channels of classes not in ``keep`` set to zero and the rest renormalised.

    Works in strips of rows, so a panorama's probabilities need no float32 copy; ``inplace`` reuses ``probs``.
    Pixels where the kept classes have no probability at all are shared equally among them.
    """
    keep = set(int(c) for c in keep)
    drop = np.array([c not in keep for c in classes])
    if not drop.any():
        return probs
    if drop.all():
        raise ValueError("cannot remove every class")
    out = probs if inplace else probs.copy()
    fill = (~drop).astype(np.float32)[:, None, None] / float((~drop).sum())
    for y in range(0, out.shape[1], 256):
        band = out[:, y:y + 256].astype(np.float32)
        band[drop] = 0
        total = band.sum(0, keepdims=True)
        assign(out[:, y:y + 256], np.where(total > 1e-12, band / np.maximum(total, 1e-12), fill))
    return out
