"""Point counting: the microscopist's own modal analysis, and a check of a segmentation against it.

A systematic grid of points is laid over a photograph. At each point the microscopist names the mineral under
the cross-hair, or says that it cannot be told (a pit, a crack, a point on a grain boundary). The share of the
counted points that fall on a mineral estimates its area share. Its error is binomial (van der Plas & Tobi 1965);
here it is given as the Wilson score interval, which stays inside 0–100 % and is right for rare minerals too.
The interval assumes that the points are independent, which holds when they lie further apart than the grains
are large; on a denser grid it is too narrow.

A segmentation read at the same points gives the model's accuracy on the user's own sample, against the person
who knows it:

- the share of the points where the two agree, with its interval, and Cohen's kappa;
- for each mineral, the share of its points that the model found (recall) and the share of the model's points
  that were right (precision);
- whether the model's area % over the whole photograph lies inside the point count's interval.

Points are (row, column) pixel positions of the full-resolution photograph. A call is a class code,
:data:`CANNOT_TELL` (the mask code for "unlabelled", 255) or :data:`NOT_CALLED` (-1).
"""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from ..minerals import IGNORE, MINERALS, by_code

__all__ = ["CANNOT_TELL", "NOT_CALLED", "MAX_POINTS", "Z95", "grid_points", "wilson_interval", "check",
           "check_table", "agreement_sentence", "points_csv", "read_points_csv", "point_view", "call_name",
           "parse_call", "csv_delimiter", "next_uncalled", "calls_as_scribbles", "pool_checks",
           "pooled_checks", "checks_table", "class_area"]

CANNOT_TELL = IGNORE
NOT_CALLED = -1
MAX_POINTS = 5000
Z95 = 1.959963984540054
_CODES = {m.code for m in MINERALS}


def grid_points(shape: tuple[int, int], n: int, *, seed: int | None = None, margin: int = 0) -> np.ndarray:
    """About ``n`` points on a square grid over an image of ``shape`` (rows, columns), as an (k, 2) int array of
    (row, column).

    The grid's spacing is the square root of the area per point. Its start is the centre of the first cell, or,
    with ``seed``, a random position within it (systematic random sampling: every pixel has the same chance to be
    counted). ``margin`` pixels along every edge get no point. The points are in the order of a stage traverse:
    along the first row, back along the second, and so on, so that each point is near the one before.
    """
    n = int(n)
    if not 1 <= n <= MAX_POINTS:
        raise ValueError(f"the number of points must be between 1 and {MAX_POINTS}, got {n}")
    H, W = (int(v) for v in shape[:2])
    h, w = H - 2 * int(margin), W - 2 * int(margin)
    if margin < 0 or h < 1 or w < 1:
        raise ValueError(f"a margin of {margin} px leaves nothing of a {W}×{H} px image")
    if n > h * w:
        raise ValueError(f"{n} points do not fit into {w}×{h} px")
    d = math.sqrt(h * w / n)
    nr, nc = max(1, min(h, round(h / d))), max(1, min(w, round(w / d)))
    off = np.random.default_rng(seed).random(2) if seed is not None else np.array([0.5, 0.5])
    rows = np.minimum(margin + np.floor((np.arange(nr) + off[0]) * h / nr).astype(int), H - 1 - margin)
    cols = np.minimum(margin + np.floor((np.arange(nc) + off[1]) * w / nc).astype(int), W - 1 - margin)
    out = []
    for i, r in enumerate(rows):
        for c in (cols if i % 2 == 0 else cols[::-1]):
            out.append((r, c))
    return np.asarray(out, np.int32).reshape(-1, 2)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k`` of ``n`` (as fractions); (nan, nan) when ``n`` is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_calls(calls) -> np.ndarray:
    c = np.asarray(calls, np.int64).reshape(-1)
    bad = sorted(set(np.unique(c).tolist()) - _CODES - {CANNOT_TELL, NOT_CALLED})
    if bad:
        raise ValueError(f"unknown class codes among the calls: {bad}")
    return c


def _at(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points).reshape(-1, 2)
    if points.size and (points.min() < 0 or (points[:, 0] >= labels.shape[0]).any()
                        or (points[:, 1] >= labels.shape[1]).any()):
        raise ValueError(f"some points lie outside the {labels.shape[1]}×{labels.shape[0]} px mask")
    return labels[points[:, 0], points[:, 1]].astype(np.int64)


def class_area(labels: np.ndarray) -> np.ndarray:
    """Pixels per code (256 bins) of a mask, counted in strips of rows: counting a panorama at once would first
    copy it to 64-bit integers (0.8 GB for 12000×8000)."""
    labels = np.asarray(labels)
    area = np.zeros(256, np.int64)
    step = max(1, (1 << 22) // max(1, labels.shape[1]))
    for y in range(0, labels.shape[0], step):
        area += np.bincount(labels[y:y + step].ravel(), minlength=256)[:256]
    return area


def check(points, calls, labels: np.ndarray | None = None, *, z: float = Z95) -> dict:
    """The modal analysis of a point count and, with ``labels`` (a mask of class codes, e.g. a segmentation), how
    the mask agrees with it.

    Returns
    -------
    dict
        ``points`` (grid size), ``called``, ``cannot_tell``, ``not_called``; ``minerals``: one row per mineral
        called or (with ``labels``) found at a counted point, each with ``code``, ``label``, ``mineral``,
        ``points``, ``percent`` and its interval ``low``/``high`` (percent); with ``labels`` also
        ``mask_percent`` (the mineral's area % of the mask's labelled pixels), ``inside`` (whether that lies in
        the interval), ``mask_points`` (counted points where the mask has it), ``agree``, ``recall`` and
        ``precision`` (None where undefined). With ``labels`` the dict also has ``agreement`` (share of counted
        points where mask and count agree), its ``agreement_low``/``agreement_high``, ``kappa`` (Cohen's; None
        when undefined), ``mask_unlabelled`` (counted points on unlabelled mask pixels, left out of the
        agreement), ``confusion``: ``[{"call", "mask", "points"}]`` for every pair that occurs, and ``mask_area``
        ({code: pixels} of the mask, unlabelled pixels left out).
    """
    calls = _as_calls(calls)
    points = np.asarray(points).reshape(-1, 2)
    if len(points) != len(calls):
        raise ValueError(f"{len(points)} points but {len(calls)} calls")
    counted = (calls != NOT_CALLED) & (calls != CANNOT_TELL)
    codes, k = np.unique(calls[counted], return_counts=True)
    tally = {"points": int(len(calls)), "called": int(counted.sum()), "cannot_tell": int((calls == CANNOT_TELL).sum()),
             "not_called": int((calls == NOT_CALLED).sum()), "counts": dict(zip(codes.tolist(), k.tolist()))}
    if labels is not None:
        labels = np.asarray(labels)
        mask_at = _at(labels, points)
        both = counted & (mask_at != IGNORE)
        pairs: dict[tuple[int, int], int] = {}
        for a, b in zip(calls[both].tolist(), mask_at[both].tolist()):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
        area = class_area(labels)
        tally["mask"] = {"unlabelled": int((counted & (mask_at == IGNORE)).sum()), "pairs": pairs,
                         "area": {int(c): int(area[c]) for c in np.flatnonzero(area) if c != IGNORE}}
    return _figures(tally, z)


def _figures(tally: dict, z: float = Z95) -> dict:
    """:func:`check`'s result from the counts it rests on (``tally``: ``points``, ``called``, ``cannot_tell``,
    ``not_called``, ``counts`` {code: points} and, with a mask, ``mask``: ``unlabelled``, ``pairs`` {(call, mask):
    points}, ``area`` {code: pixels}). The result keeps those counts, so that counts can be pooled
    (:func:`pool_checks`)."""
    n = tally["called"]
    counts = tally["counts"]
    out = {k: tally[k] for k in ("points", "called", "cannot_tell", "not_called")}
    codes = {c for c, v in counts.items() if v}
    mask = tally.get("mask")
    if mask is not None:
        pairs, area = mask["pairs"], mask["area"]
        total = sum(area.values())
        nb = sum(pairs.values())
        codes |= {b for (_, b) in pairs}
        by_call: dict[int, int] = {}
        by_mask: dict[int, int] = {}
        for (a, b), v in pairs.items():
            by_call[a] = by_call.get(a, 0) + v
            by_mask[b] = by_mask.get(b, 0) + v
        agree_all = sum(v for (a, b), v in pairs.items() if a == b)
        out["mask_unlabelled"] = mask["unlabelled"]
        out["agreement"] = agree_all / nb if nb else None
        lo, hi = wilson_interval(agree_all, nb, z)
        out["agreement_low"], out["agreement_high"] = (lo, hi) if nb else (None, None)
        expected = sum(by_call.get(c, 0) * by_mask.get(c, 0) for c in codes) / (nb * nb) if nb else None
        out["kappa"] = (None if not nb or expected >= 1 else (agree_all / nb - expected) / (1 - expected))
        out["confusion"] = [{"call": a, "mask": b, "points": v} for (a, b), v in sorted(pairs.items())]
        out["mask_area"] = {str(c): v for c, v in sorted(area.items())}
    rows = []
    for code in sorted(codes):
        k = counts.get(code, 0)
        lo, hi = wilson_interval(k, n, z)
        mineral = by_code(code)
        row = {"code": int(code), "label": mineral.label, "mineral": mineral.name, "points": k,
               "percent": 100.0 * k / n if n else None,
               "low": 100.0 * lo if n else None, "high": 100.0 * hi if n else None}
        if mask is not None:
            mp = 100.0 * area.get(code, 0) / total if total else None
            mk, ok, kc = by_mask.get(code, 0), pairs.get((code, code), 0), by_call.get(code, 0)
            row.update({"mask_percent": mp,
                        "inside": None if mp is None or not n else bool(100.0 * lo - 1e-9 <= mp <= 100.0 * hi + 1e-9),
                        "mask_points": mk, "agree": ok,
                        "recall": ok / kc if kc else None, "precision": ok / mk if mk else None})
        rows.append(row)
    out["minerals"] = rows
    return out


def pool_checks(results, z: float = Z95) -> dict:
    """Several counts (:func:`check` results, e.g. the fields of one sample) as one: points, calls, mask pixels and
    agreements summed, and every figure computed again from the sums. With a mask only when every result has one."""
    results = list(results)
    if not results:
        raise ValueError("no point count to pool")
    tally = {k: sum(r[k] for r in results) for k in ("points", "called", "cannot_tell", "not_called")}
    tally["counts"] = {}
    for r in results:
        for m in r["minerals"]:
            tally["counts"][m["code"]] = tally["counts"].get(m["code"], 0) + m["points"]
    if all("confusion" in r for r in results):
        pairs: dict[tuple[int, int], int] = {}
        area: dict[int, int] = {}
        for r in results:
            for e in r["confusion"]:
                pairs[(e["call"], e["mask"])] = pairs.get((e["call"], e["mask"]), 0) + e["points"]
            for c, v in r["mask_area"].items():
                area[int(c)] = area.get(int(c), 0) + v
        tally["mask"] = {"unlabelled": sum(r["mask_unlabelled"] for r in results), "pairs": pairs, "area": area}
    return _figures(tally, z)


def pooled_checks(checks: dict, samples: dict | None = None) -> dict:
    """The counts of several images as one (:func:`pool_checks`): per sample of two or more counted images
    (``samples``: image -> sample name), and over all of them when there are two or more. Returns
    {title: result}, e.g. ``{"sample A (2 images)": ..., "all 3 images": ...}``; empty with fewer than two counts."""
    out = {}
    samples = samples or {}
    groups: dict[str, list[str]] = {}
    for name in checks:
        if samples.get(name):
            groups.setdefault(samples[name], []).append(name)
    for group, names in groups.items():
        if len(names) > 1 and len(names) < len(checks):
            out[f"sample {group} ({len(names)} images)"] = pool_checks(checks[n] for n in names)
    if len(checks) > 1:
        out[f"all {len(checks)} images"] = pool_checks(checks.values())
    return out


def checks_table(checks: dict, samples: dict | None = None):
    """Every count of ``checks`` ({image: :func:`check` result}) and their pools (:func:`pooled_checks`) in one
    table (pandas.DataFrame) for the exports: ``image`` (or the pool's title), the agreement with its interval and
    kappa, and per mineral the rows of :func:`check_table` against the mask analysed."""
    import pandas as pd

    frames = []
    for name, res in {**checks, **{f"pooled: {k}": v for k, v in pooled_checks(checks, samples).items()}}.items():
        t = check_table(res, mask="mask")
        t.insert(0, "image", name)
        for key in ("agreement", "agreement_low", "agreement_high", "kappa"):
            t[key] = res.get(key)
        frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def check_table(res: dict, mask: str = "segmentation"):
    """:func:`check`'s minerals as a table (pandas.DataFrame): the count's area % with its interval and, where a
    mask was checked, its area % (column named after ``mask``), whether that is inside the interval, and the
    mask's recall ("found") and precision ("right") against the calls."""
    import pandas as pd

    rows = []
    for m in res["minerals"]:
        row = {"mineral": m["mineral"], "points": m["points"], "area % (count)": m["percent"],
               "95 % interval": "" if m["low"] is None else f"{m['low']:.1f}–{m['high']:.1f}"}
        if "mask_percent" in m:
            row.update({f"area % ({mask})": m["mask_percent"],
                        "inside the interval": "" if m["inside"] is None else ("yes" if m["inside"] else "no"),
                        "found (recall)": m["recall"], "right (precision)": m["precision"]})
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_sentence(res: dict, *, what: str = "the segmentation", bold: str = "") -> str:
    """One sentence on how a checked mask agrees with the count (``bold``: Markdown's ``"**"`` around the share)."""
    if not res["called"]:
        return "No point is called yet."
    if res.get("agreement") is None:
        return f"None of the {res['called']} counted points lies on a labelled pixel of {what}."
    kappa = "" if res.get("kappa") is None else f", Cohen's kappa {res['kappa']:.2f}"
    off = res.get("mask_unlabelled", 0)
    left_out = f"; {off} on its unlabelled pixels left out" if off else ""
    return (f"{what[0].upper() + what[1:]} agrees with the count at {bold}{res['agreement'] * 100:.1f} %{bold} of "
            f"the {res['called'] - off} counted points (95 % interval {res['agreement_low'] * 100:.1f}–"
            f"{res['agreement_high'] * 100:.1f} %{left_out}){kappa}.")


def call_name(code: int) -> str:
    """How a call reads in a table or a CSV: the mineral's name, "cannot tell", or "" when not called."""
    code = int(code)
    if code == NOT_CALLED:
        return ""
    if code == CANNOT_TELL:
        return "cannot tell"
    return by_code(code).name


def parse_call(text: str) -> int:
    """A call from a CSV cell: a class code, a mineral's label or name, "cannot tell", or blank (not called)."""
    t = str(text).strip()
    if not t:
        return NOT_CALLED
    if t.lstrip("-").isdigit():
        v = int(t)
        if v in _CODES or v in (CANNOT_TELL, NOT_CALLED):
            return v
        raise ValueError(f"{t!r} is not a class code")
    low = t.lower()
    if low in ("cannot tell", "?", "unknown", "unlabelled"):
        return CANNOT_TELL
    for m in MINERALS:
        if low in (m.label.lower(), m.name.lower()):
            return m.code
    raise ValueError(f"{t!r} is not a mineral (give a class code, a label such as ccp, or a name)")


def points_csv(points, calls, labels: np.ndarray | None = None) -> str:
    """The count as CSV: ``point,x,y,call_code,call`` and, with ``labels``, ``mask_code,mask`` (x is the
    column, y the row, in pixels of the full-resolution photograph; a point not yet called has empty calls)."""
    points = np.asarray(points).reshape(-1, 2)
    calls = _as_calls(calls)
    at = _at(np.asarray(labels), points) if labels is not None else None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["point", "x", "y", "call_code", "call"] + (["mask_code", "mask"] if at is not None else []))
    for i, ((r, c), k) in enumerate(zip(points.tolist(), calls.tolist()), 1):
        row = [i, c, r, "" if k == NOT_CALLED else k, call_name(k)]
        if at is not None:
            row += [int(at[i - 1]), call_name(at[i - 1])]
        w.writerow(row)
    return buf.getvalue()


def csv_delimiter(text: str) -> str:
    """The delimiter of a CSV text's header line: a comma, or the semicolon (or tab) that spreadsheets in locales
    with a decimal comma write instead."""
    head = text.lstrip("\ufeff\r\n").split("\n", 1)[0]
    return max((",", ";", "\t"), key=head.count) if head else ","


def read_points_csv(data: bytes | str, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points and calls from a CSV with columns ``x``, ``y`` and ``call_code`` or ``call`` (as
    :func:`points_csv` writes it; a call is a class code, a label, a name or "cannot tell", blank when not
    made). With ``shape`` (rows, columns) every point must lie inside it. ``ValueError`` names the first bad row."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError("the point list is not a text (CSV) file") from None
    reader = csv.DictReader(io.StringIO(data), delimiter=csv_delimiter(data))
    fields = {f.strip().lower(): f for f in (reader.fieldnames or []) if f}
    if "x" not in fields or "y" not in fields:
        raise ValueError("the point list needs columns x and y (and call_code or call)")
    call_col = fields.get("call_code") or fields.get("call")
    name_col = fields.get("call")
    points, calls = [], []
    for i, row in enumerate(reader, 2):
        if len(points) >= MAX_POINTS:
            raise ValueError(f"the point list has more than {MAX_POINTS} points")
        try:
            x, y = int(float(row[fields["x"]])), int(float(row[fields["y"]]))
        except (TypeError, ValueError):
            raise ValueError(f"line {i}: x and y must be whole pixel numbers") from None
        if shape is not None and not (0 <= y < shape[0] and 0 <= x < shape[1]):
            raise ValueError(f"line {i}: the point ({x}, {y}) lies outside the {shape[1]}×{shape[0]} px image")
        try:
            text = (row.get(call_col) or "") if call_col else ""
            if not str(text).strip() and name_col:
                text = row.get(name_col) or ""
            calls.append(parse_call(text))
        except ValueError as e:
            raise ValueError(f"line {i}: {e}") from None
        points.append((y, x))
    if not points:
        raise ValueError("the point list holds no points")
    return np.asarray(points, np.int32), np.asarray(calls, np.int16)


def next_uncalled(calls, after: int) -> int | None:
    """The first point after ``after`` (wrapping round) that is not called yet; None when every point is."""
    calls = np.asarray(calls)
    n = len(calls)
    for j in range(1, n + 1):
        i = (after + j) % n
        if calls[i] == NOT_CALLED:
            return i
    return None


def calls_as_scribbles(shape: tuple[int, int], points, calls, *, radius: int = 3,
                       base: np.ndarray | None = None) -> np.ndarray:
    """A scribble mask (class codes, 255 elsewhere) with a disc of ``radius`` px of each called mineral at its
    point, drawn over ``base`` (a scribble mask of the same shape) where one is given; cannot-tell and uncalled
    points draw nothing. Superpixel propagation (:mod:`core.annotation`) spreads each disc over its superpixel."""
    import cv2

    out = np.full(shape[:2], IGNORE, np.uint8) if base is None else np.array(base, np.uint8, copy=True)
    if out.shape != tuple(shape[:2]):
        raise ValueError(f"the scribble mask is {out.shape[1]}×{out.shape[0]} px, not {shape[1]}×{shape[0]}")
    calls = _as_calls(calls)
    for (r, c), k in zip(np.asarray(points).reshape(-1, 2).tolist(), calls.tolist()):
        if k not in (NOT_CALLED, CANNOT_TELL):
            cv2.circle(out, (int(c), int(r)), int(radius), int(k), -1)
    return out


def point_view(image: np.ndarray, point, *, half: int = 80, zoom: int = 3) -> np.ndarray:
    """The field around ``point`` (row, column) of an RGB image, ``2·half+1`` px wide, enlarged ``zoom`` times
    (nearest neighbour, so that the pixels stay as they are), with a cross-hair whose arms stop short of the
    point so that the pixel under it stays visible. Beyond the image edge the field is grey."""
    r, c = int(point[0]), int(point[1])
    side = 2 * half + 1
    field = np.full((side, side, 3), 128, np.uint8)
    H, W = image.shape[:2]
    r0, r1, c0, c1 = max(0, r - half), min(H, r + half + 1), max(0, c - half), min(W, c + half + 1)
    src = image[r0:r1, c0:c1]
    if src.ndim == 2:
        src = np.repeat(src[..., None], 3, axis=2)
    field[r0 - (r - half):r1 - (r - half), c0 - (c - half):c1 - (c - half)] = src[..., :3]
    big = np.repeat(np.repeat(field, zoom, axis=0), zoom, axis=1)
    mid, gap, arm = half * zoom + zoom // 2, 2 * zoom, max(6, side * zoom // 6)
    for lo, hi in ((mid - gap - arm, mid - gap), (mid + gap + 1, mid + gap + arm + 1)):
        for colour, width in (((0, 0, 0), 2), ((0, 255, 255), 1)):  # a cyan line with a black edge
            big[max(0, mid - width):mid + width + 1, max(0, lo):hi] = colour
            big[max(0, lo):hi, max(0, mid - width):mid + width + 1] = colour
    return big
