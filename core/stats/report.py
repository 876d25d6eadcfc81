"""Self-contained HTML report of a statistics run.

One file holds everything: plotly.js inline (nothing is fetched when the
report is opened, so it works offline and in archives), the charts, the tables,
thumbnails of the sample's images and masks as inline base64 PNG/JPEG, and the
method and parameters used.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
from typing import Mapping

import numpy as np

from .. import io as cio
from ..minerals import by_code, colorize
from .figures import (association_figure, liberation_figure, mineral_color, modal_figure, occurrence_figure,
                      sample_figure, size_figure)
from .summary import BORDER_POLICIES, LIBERATED_PCT, SIZE_SERIES, Options, liberation_rows, sample_comparison
from .measure import PERIMETER_METHODS

__all__ = ["thumbnail", "build_report", "DEFAULT_TITLE"]

DEFAULT_TITLE = "OreLens statistics report"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.thumbs{display:flex;flex-wrap:wrap;gap:14px}
.thumbs figure{margin:0}.thumbs img{max-width:360px;border:1px solid #999;display:block}
figcaption{font-size:12px;color:#555}.sw{display:inline-block;width:12px;height:12px;border:1px solid #777;
vertical-align:middle;margin-right:4px}.muted{color:#666;font-size:13px}
"""


def thumbnail(*, image: np.ndarray | None = None, mask: np.ndarray | None = None, max_side: int = 480,
              pixel_um: float | None = None) -> dict:
    """Small display copies for the report.

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray, optional
        The photograph.
    mask : (M, N) uint8 ndarray, optional
        The class mask (coloured in the LumenStone colours).
    max_side : int
    pixel_um : float, optional
        Pixel size of the full-size image and mask, µm: both copies then carry a scale bar.

    Returns
    -------
    dict
        ``{"image": (m, n, 3) uint8 or None, "mask": (m, n, 3) uint8 or None}``.
    """
    out = {"image": None, "mask": None}
    if image is not None:
        out["image"] = cio.display_copy(np.asarray(image), max_side)
    if mask is not None:
        out["mask"] = colorize(cio.display_copy(np.asarray(mask, np.uint8), max_side))
    if pixel_um is not None and (image is not None or mask is not None):
        from ..scalebar import draw_scale_bar

        full_width = (image if image is not None else mask).shape[1]  # the mask is the image's size
        out = {k: v if v is None else draw_scale_bar(v, pixel_um, full_width=full_width) for k, v in out.items()}
    return out


def _img_tag(rgb: np.ndarray, *, jpeg: bool, alt: str) -> str:
    data = cio.encode_jpeg(rgb, 85) if jpeg else cio.encode_png(rgb)
    mime = "image/jpeg" if jpeg else "image/png"
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'


def _fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _table(df, *, left=(), digits=4) -> str:
    if df is None or len(df) == 0:
        return "<p class='muted'>(no rows)</p>"
    head = "".join(f"<th class='{'l' if c in left else ''}'>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = "".join(f"<td class='{'l' if c in left else ''}'>{_fmt(v, digits)}</td>" for c, v in zip(df.columns, row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _mineral_cell(code) -> str:
    m = by_code(int(code))
    return f"<span class='sw' style='background:{mineral_color(code)}'></span>{html.escape(m.name)} ({m.label})"


def _association_table(entry: dict) -> str:
    rows = sorted(entry["association"], key=int)
    if not rows:
        return "<p class='muted'>(no minerals)</p>"
    cols = sorted({k for r in rows for k in entry["association"][r]} | set(rows), key=int)
    head = "<th class='l'>mineral</th>" + "".join(f"<th>{by_code(int(c)).label}</th>" for c in cols)
    body = []
    for r in rows:
        cells = "".join("<td>–</td>" if c == r else f"<td>{100 * entry['association'][r].get(c, 0.0):.2f}</td>"
                        for c in cols)
        body.append(f"<tr><td class='l'>{_mineral_cell(r)}</td>{cells}</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "<p class='muted'>Percent of each mineral's boundary (rows) against each class (columns); "
            "the bg column is its free surface, the rest is locked. Image edges and unlabelled pixels are left out.</p>")


def _occurrence_html(tables: Mapping, options: Options) -> str:
    oc = tables["occurrence"]
    oc = oc[oc["image"] == "total"]
    if not len(oc):
        return "<p class='muted'>(no grains)</p>"
    df = oc[["label", "mineral", "occurs", "grains"]].copy()
    df["% of its area"] = oc["share"] * 100
    df["d50 µm"] = oc["d50_um"]
    return (_table(df, left=("label", "mineral", "occurs")) +
            f"<p class='muted'>A grain is free in the gangue, or enclosed in another mineral, when at least "
            f"{100 * options.enclosed:g} % of its boundary is against it; otherwise it lies between several classes. "
            "Shares are of the mineral's area in the grains counted (border policy as for the grain sizes).</p>")


def _densities(codes) -> str:
    return ", ".join(f"{by_code(c).label} {by_code(c).density:g}" for c in codes if by_code(c).density is not None)


def _assay_html(tables: Mapping) -> str:
    """Element grades of the pooled sample and their deportment over the minerals, as two tables."""
    assay = tables.get("assay")
    if assay is None or not len(assay[assay["image"] == "total"]):
        return "<p class='muted'>No ore mineral in these masks, so no element to report.</p>"
    a = assay[assay["image"] == "total"].drop(columns=["image"]).copy()
    a["grade"] = a["grade"] * 100
    a["grade_in_ore_minerals"] = a["grade_in_ore_minerals"] * 100
    a = a.rename(columns={"grade": "wt % of the sample", "grade_in_ore_minerals": "wt % of the ore minerals"})
    d = tables["deportment"]
    d = d[d["image"] == "total"]
    pivot = (d.pivot_table(index="element", columns="label", values="share", sort=False) * 100).reset_index()
    return (_table(a, left=("element",), digits=4) + "<p>Deportment (% of each element carried by each mineral):</p>"
            + _table(pivot, left=("element",), digits=4))


def _samples_html(summary: dict, tables: Mapping) -> str:
    """The samples side by side (:func:`core.stats.summary.sample_comparison`) and their chart."""
    cmp = sample_comparison(tables, summary)
    fig = sample_figure(summary).to_html(full_html=False, include_plotlyjs=False, div_id="chart-samples",
                                         config={"displaylogo": False})
    members = "; ".join(f"{html.escape(g)}: {html.escape(', '.join(e['images']))}"
                        for g, e in summary["samples"].items())

    def table(df, digits=4):
        return _table(df.reset_index(), left=("sample",), digits=digits)

    parts = [f"<p class='muted'>{members}</p>", f"<div class='chart'>{fig}</div>",
             "<p>Area % (± half-width of the 95 % interval from the variation between the sample's own images; a "
             "sample of one image has none; it does not include errors of the segmentation):</p>",
             table(cmp["area_text"]), "<p>wt %:</p>", table(cmp["wt"])]
    if len(cmp["assay"].columns):
        parts += ["<p>Calculated assay, wt % of the sample:</p>", table(cmp["assay"])]
    if len(cmp["d50"].columns):
        parts += ["<p>d50 by area (µm):</p>", table(cmp["d50"], digits=3)]
    if len(cmp["liberated"].columns):
        parts += [f"<p>Liberated: % of each mineral in particles at least {LIBERATED_PCT} % of which it makes up:</p>",
                  table(cmp["liberated"], digits=3)]
    return "".join(parts)


def quality_rows(quality: Mapping[str, dict]):
    """The segmentations analysed as a table (pandas.DataFrame): image, model, unsure %, ΔE00, what to look at."""
    import pandas as pd

    return pd.DataFrame([{"image": n, "model": q.get("model"),
                          "unsure %": None if q.get("unsure") is None else 100.0 * q["unsure"],
                          "ΔE00": q.get("drift"), "to look at": "; ".join(q.get("notes") or [])}
                         for n, q in quality.items()])


def _pointcount_html(checks: Mapping[str, dict], samples: Mapping[str, str] | None = None) -> str:
    """Each image's point count against the mask analysed (:func:`core.stats.pointcount.check`), and the counts
    pooled per sample and over all images (:func:`core.stats.pointcount.pooled_checks`)."""
    from .pointcount import agreement_sentence, check_table, pooled_checks

    parts = []
    for name, res in {**checks, **{f"Pooled: {k}": v for k, v in pooled_checks(dict(checks), samples).items()}}.items():
        parts += [f"<h3>{html.escape(name)}</h3>",
                  f"<p>{html.escape(agreement_sentence(res, what='the mask analysed'))} "
                  f"({res['points']} points laid, {res['cannot_tell']} cannot tell, {res['not_called']} not called.)</p>",
                  _table(check_table(res, mask="mask"), left=("mineral",), digits=3)]
    parts.append("<p class='muted'>A microscopist named the mineral under the cross-hair at each point of a square "
                 "grid over the photograph, without seeing the segmentation's call. Area % (count): the share of "
                 "the counted points, with its 95 % binomial interval (Wilson), which assumes the points lie further "
                 "apart than the grains are large. Area % (mask): over every labelled pixel of the mask analysed. "
                 "Found (recall): of the count's points of a mineral, the share the mask has as it; right "
                 "(precision): of the counted points the mask has as a mineral, the share the count agrees with.</p>")
    return "".join(parts)


def build_report(summary: dict, tables: Mapping, *, options: Options, thumbnails: Mapping[str, dict] | None = None,
                 title: str = DEFAULT_TITLE, sources: Mapping[str, str] | None = None,
                 notes: str | None = None, checks: Mapping[str, dict] | None = None,
                 quality: Mapping[str, dict] | None = None) -> str:
    """The whole report as one HTML string.

    Parameters
    ----------
    summary : dict
        Output of :func:`core.stats.summarize`.
    tables : dict of str to pandas.DataFrame
        Output of :func:`core.stats.tables`.
    options : Options
        The parameters used (written into the method section).
    thumbnails : mapping of str to dict, optional
        Image stem -> :func:`thumbnail` output.
    title : str
    sources : mapping of str to str, optional
        Image stem -> where its mask came from ("annotation", "segmentation", a file name).
    notes : str, optional
        Free text shown under the title (project, sample, operator, instrument); line breaks are kept.
    checks : mapping of str to dict, optional
        Image stem -> :func:`core.stats.pointcount.check` of its point count against the mask analysed.
    quality : mapping of str to dict, optional
        Image stem -> ``{"model", "unsure", "drift", "notes"}`` of the segmentation analysed (:func:`quality_rows`).

    Returns
    -------
    str
        A complete HTML document with plotly.js inline; nothing is fetched when it is opened.
    """
    from plotly.offline import get_plotlyjs

    thumbnails = thumbnails or {}
    sources = sources or {}
    images = summary["images"]
    figs = [modal_figure(summary), modal_figure(summary, background=False),
            size_figure(summary, weight="area"), size_figure(summary, weight="number"),
            association_figure(summary), occurrence_figure(summary), liberation_figure(summary)]
    fig_html = "".join(
        f"<div class='chart'>{f.to_html(full_html=False, include_plotlyjs=False, div_id=f'chart{i}', config={'displaylogo': False})}</div>"
        for i, f in enumerate(figs))

    shapes = [f"{html.escape(n)}: {e['shape'][1]}×{e['shape'][0]} px at {e['pixel_size_um']:g} µm/px"
              + (f" (mask from {html.escape(sources[n])})" if n in sources else "") for n, e in images.items()]
    thumbs = []
    for n, t in thumbnails.items():
        if t.get("image") is not None:
            thumbs.append(f"<figure>{_img_tag(t['image'], jpeg=True, alt=n)}<figcaption>{html.escape(n)}: image</figcaption></figure>")
        if t.get("mask") is not None:
            thumbs.append(f"<figure>{_img_tag(t['mask'], jpeg=False, alt=n + ' mask')}<figcaption>{html.escape(n)}: mask</figcaption></figure>")
    codes = sorted({int(c) for e in images.values() for c in e["area_fraction"]})
    legend = " ".join(f"<span style='margin-right:12px'>{_mineral_cell(c)}</span>" for c in codes)

    modal = tables["modal"]
    modal_total = modal[modal["image"] == "total"].drop(columns=["image", "fraction_se"]).copy()
    for c in ("fraction", "fraction_ci95", "fraction_no_background", "mass_fraction", "mass_fraction_no_background"):
        modal_total[c] = modal_total[c] * 100
    if modal_total["fraction_ci95"].isna().all():  # one image: no spread between images to estimate
        modal_total = modal_total.drop(columns=["fraction_ci95"])
    modal_total = modal_total.rename(columns={"fraction": "area %", "fraction_ci95": "± area % (95 %)",
                                              "fraction_no_background": "area % (minerals only)",
                                              "mass_fraction": "wt %", "mass_fraction_no_background": "wt % (minerals only)"})
    summ = tables["grain_summary"]
    summ_total = summ[summ["image"] == "total"].drop(columns=["image"])
    per_image = modal[modal["image"] != "total"].pivot_table(index="image", columns="label", values="fraction",
                                                             sort=False) * 100 if len(modal) else None
    if per_image is not None:
        per_image = per_image.reset_index()
    per_image_wt = modal[modal["image"] != "total"].pivot_table(index="image", columns="label", values="mass_fraction",
                                                                sort=False) * 100 if len(modal) else None
    if per_image_wt is not None:
        per_image_wt = per_image_wt.reset_index()

    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    method = f"""
<ul>
<li><b>Modal mineralogy</b>: exact pixel counts of every class; area % over all labelled pixels
(unlabelled code 255 left out) and over the mineral pixels only (non-metallic background left out).
Areas in µm² are pixel count × pixel size²; images with different pixel sizes are pooled by µm².</li>
<li><b>Grains</b>: 8-connected components of every mineral. Area = pixel count × pixel size² (not a contour area);
equivalent circle diameter ECD = 2√(A/π); perimeter by the <i>{html.escape(options.perimeter)}</i> estimator
({html.escape(PERIMETER_METHODS.describe(options.perimeter))}); circularity 4πA/P²; aspect ratio of the ellipse with
the grain's second moments. Grains touching the image edge are flagged; border policy
<i>{html.escape(options.border)}</i>: {html.escape(BORDER_POLICIES.describe(options.border))}</li>
<li><b>Size distribution</b>: size classes of the <i>{html.escape(options.series)}</i> series
({html.escape(SIZE_SERIES.describe(options.series))}), by number and by area, with cumulative curves of % finer than
each class's upper edge. d10/d50/d90 are area-weighted: d50 is the smallest ECD such that grains not larger hold 50 % of
the mineral's area.</li>
<li><b>Weight % and calculated assay</b>: area fractions taken as volume fractions (Delesse), weighted by each
mineral's density ({html.escape(_densities(codes))} g/cm³; the non-metallic class at
{options.gangue_density:g} g/cm³, the gangue density given); element grades from idealised formulas (pyrrhotite
Fe7S8, pentlandite Fe:Ni 1:1, iron-free sphalerite, tennantite Cu12As4S13), with the gangue carrying none of
the elements. "In ore minerals" leaves the non-metallic class out and so does not depend on the gangue
density; epoxy or holes in the photographs count as gangue. Deportment: the share of each element carried by each
mineral.</li>
<li><b>Associations</b>: boundary length shared by every pair of classes, from class changes between neighbouring pixels
in four directions (Cauchy-Crofton estimate), and for every mineral the share of its boundary against each other class
(free surface = against background).</li>
<li><b>How the minerals occur</b>: every grain counted is <i>enclosed</i> in the class against which at least
{100 * options.enclosed:g} % of its boundary lies (the non-metallic class: free in the gangue; another mineral: an
inclusion), otherwise <i>between several classes</i>; the image edge and unlabelled pixels are not contacts. The
shares are of the mineral's area, by grain.</li>
<li><b>Liberation</b>: particles are the 8-connected regions of ore-mineral pixels of any code between non-metallic
and unlabelled pixels; each mineral's area is distributed over the purity (its share of its particle's area) of the
particles holding it, in classes of 10 % and exactly 100 %, and read cumulatively; locking counts the particles of it
alone, of it and one other mineral, or of three or more. Particles cut by the image edge follow the border
policy. Both this and the occurrence above are measured on a plane section, which shows a grain's or particle's
section only: a section through a locked particle can look liberated, so two-dimensional figures overstate
liberation (stereological bias), as they do in every automated mineralogy of polished sections.</li>
</ul>
<p>Parameters: border = {html.escape(options.border)}, perimeter = {html.escape(options.perimeter)},
size series = {html.escape(options.series)}, gangue density = {options.gangue_density:g} g/cm³, enclosed from
{100 * options.enclosed:g} % of a grain's boundary. Generated {when} by OreLens.</p>
"""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title or DEFAULT_TITLE)}</title><style>{_CSS}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title or DEFAULT_TITLE)}</h1>",
        "".join(f"<p>{html.escape(par).replace(chr(10), '<br>')}</p>" for par in (notes or "").strip().split("\n\n")
                if par.strip()),
        f"<p class='muted'>{len(images)} image(s): {'; '.join(shapes)}</p>",
        f"<p>{legend}</p>",
        "<h2>Sample</h2>", f"<div class='thumbs'>{''.join(thumbs)}</div>" if thumbs else "<p class='muted'>(no thumbnails)</p>",
        "<h2>Modal mineralogy</h2>", _table(modal_total, left=("label", "mineral")),
    ]
    if "± area % (95 %)" in modal_total:
        parts.append(f"<p class='muted'>± area %: half-width of the 95 % interval of each pooled area % from the "
                     f"variation between the {len(images)} images (ratio estimator, Student's t on "
                     f"{len(images) - 1} degrees of freedom): whether more fields are needed, not the error of the "
                     "segmentation itself.</p>")
    if per_image is not None and len(images) > 1:
        parts += ["<p>Area % per image:</p>", _table(per_image, left=("image",))]
        parts += ["<p>wt % per image:</p>", _table(per_image_wt, left=("image",))]
    parts += ["<h2>Calculated assay</h2>", _assay_html(tables)]
    if summary.get("samples"):
        parts += [f"<h2>Samples compared ({len(summary['samples'])})</h2>", _samples_html(summary, tables)]
    if quality:
        parts += ["<h2>The segmentations analysed</h2>",
                  _table(quality_rows(quality), left=("image", "model", "to look at"), digits=3),
                  "<p class='muted'>Unsure %: the share of the photograph where the model's two likeliest minerals are "
                  "less than 0.5 apart in probability; the higher it is, the more the image is worth checking. "
                  "ΔE00: how far the minerals' colours are from the model's training images (area-weighted "
                  "CIEDE2000).</p>"]
    if checks:
        groups = {n: g for g, e in (summary.get("samples") or {}).items() for n in e["images"]}
        parts += [f"<h2>Checked by point counting ({len(checks)} image(s))</h2>", _pointcount_html(checks, groups)]
    parts += [
        "<h2>Charts</h2>", fig_html,
        "<h2>Grains</h2>", _table(summ_total, left=("label", "mineral")),
        "<p class='muted'>Per-grain measurements and size classes are in the CSV/XLSX export.</p>",
        "<h2>Associations</h2>", _association_table(summary["total"]),
        "<h2>How the minerals occur</h2>", _occurrence_html(tables, options),
        "<h2>Liberation</h2>", _table(liberation_rows(tables["liberation"], tables["locking"], "image", "total"),
                                      left=("mineral", "locked with")),
        "<p class='muted'>% of each mineral's area in particles at least 50, 80, 90 % or all of which it makes up; a "
        "particle is a connected region of ore minerals between non-metallic pixels, so purity is among the ore "
        "minerals (gangue and mounting medium look alike in reflected light). Locked with: its most common partner "
        "in particles of two minerals; % of it counted: the share of the mineral in the particles counted "
        "(particles cut by the image edge follow the border policy).</p>",
        "<h2>Method</h2>", method,
        "</body></html>",
    ]
    return "".join(parts)
