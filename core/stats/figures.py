"""Plotly figures of the statistics: modal mineralogy, size curves, association heat map.

The figures are built from the JSON-ready summary of :func:`core.stats.summarize`
so that the app and the HTML report draw the same numbers.
"""
from __future__ import annotations

from ..minerals import by_code
from .summary import cumulative_shares, occurrence_label

__all__ = ["modal_figure", "sample_figure", "sample_size_figure", "size_figure", "association_figure",
           "occurrence_figure", "liberation_figure", "mineral_color", "scope_entry"]


def mineral_color(code) -> str:
    """CSS colour of a class code given as int or string."""
    r, g, b = by_code(int(code)).color
    return f"rgb({r},{g},{b})"


def _label(code) -> str:
    m = by_code(int(code))
    return f"{m.name} ({m.label})"


def modal_figure(summary: dict, *, background: bool = True):
    """Stacked bars of area percent per mineral, one bar per image and one for the total.

    Parameters
    ----------
    summary : dict
        Output of :func:`core.stats.summarize`.
    background : bool
        Include the non-metallic background; otherwise percentages are of the minerals only.
    """
    import plotly.graph_objects as go

    scopes = list(summary["images"]) + (["total"] if len(summary["images"]) > 1 else [])
    entries = {**summary["images"], "total": summary["total"]}
    codes = sorted({int(c) for s in scopes for c in entries[s]["area_fraction"]})
    if not background:
        codes = [c for c in codes if c != 0]
    fig = go.Figure()
    for c in codes:
        ys = []
        for s in scopes:
            af = entries[s]["area_fraction"]
            if background:
                ys.append(100 * af.get(str(c), 0.0))
            else:
                tot = sum(v for k, v in af.items() if k != "0")
                ys.append(100 * af.get(str(c), 0.0) / tot if tot else 0.0)
        fig.add_bar(x=scopes, y=ys, name=_label(c), marker_color=mineral_color(c),
                    marker_line_color="#555", marker_line_width=0.5,
                    hovertemplate="%{x}<br>" + _label(c) + ": %{y:.3f} %<extra></extra>")
    fig.update_layout(barmode="stack", title="Modal mineralogy" + ("" if background else " (minerals only)"),
                      yaxis_title="area %", xaxis_title="image", legend_title="class", height=420,
                      margin=dict(l=50, r=20, t=50, b=50))
    return fig


def scope_entry(summary: dict, scope: str = "total", sample: str | None = None) -> tuple[dict, str]:
    """The summary entry of ``sample`` when given, else of ``scope`` ("total" or an image stem), and its title."""
    if sample is not None:
        return summary["samples"][sample], f"sample {sample}"
    return (summary["total"] if scope == "total" else summary["images"][scope]), scope


def sample_figure(summary: dict, *, background: bool = False):
    """Grouped bars of area percent per mineral, one bar per sample, with the 95 % interval between its images.

    Parameters
    ----------
    summary : dict
        Output of :func:`core.stats.summarize` with ``samples``.
    background : bool
        Include the non-metallic background (its bars dwarf the minerals', so off by default). The bars are
        always percent of all labelled area, so that the intervals apply to them.
    """
    import plotly.graph_objects as go

    samples = summary["samples"]
    codes = sorted({int(c) for e in samples.values() for c in e["area_fraction"]})
    if not background:
        codes = [c for c in codes if c != 0]
    fig = go.Figure()
    for name, e in samples.items():
        ys = [100 * e["area_fraction"].get(str(c), 0.0) for c in codes]
        ci = e.get("area_fraction_ci95")
        err = None
        if ci:  # the interval is symmetric; drawn within 0–100 %, where a fraction can lie
            half = [100 * ci.get(str(c), 0.0) for c in codes]
            err = dict(type="data", symmetric=False, visible=True, array=[min(h, 100 - y) for h, y in zip(half, ys)],
                       arrayminus=[min(h, y) for h, y in zip(half, ys)])
        n = len(e["images"])
        fig.add_bar(x=[by_code(c).label for c in codes], y=ys, name=f"{name} ({n} image{'s' if n > 1 else ''})",
                    error_y=err, customdata=[by_code(c).name for c in codes],
                    hovertemplate=name + "<br>%{customdata}: %{y:.3f} %<extra></extra>")
    fig.update_layout(barmode="group",
                      title="Modal mineralogy by sample (95 % interval between its images, within 0–100 %)",
                      yaxis_title="area %", xaxis_title="mineral", legend_title="sample", height=420,
                      margin=dict(l=50, r=20, t=50, b=50))
    return fig


def sample_size_figure(summary: dict, code, *, weight: str = "area"):
    """Cumulative size curves of one mineral, one per sample of ``summary["samples"]``.

    Parameters
    ----------
    summary : dict
        Output of :func:`core.stats.summarize` with ``samples``.
    code : int or str
        Mineral code.
    weight : {"area", "number"}
    """
    import plotly.graph_objects as go

    key = "cum_area_pct" if weight == "area" else "cum_number_pct"
    fig = go.Figure()
    for name, e in summary["samples"].items():
        g = e["grains"].get(str(code))
        cls = g["size_classes"] if g else []
        if not cls:
            continue
        xs = [cls[0]["lower_um"]] + [k["upper_um"] for k in cls]
        ys = [0.0] + [k[key] for k in cls]
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=f"{name} ({g['count']} grains)",
                        customdata=[name] * len(xs),
                        hovertemplate="%{customdata}<br>%{y:.1f} % finer than %{x:.3g} µm<extra></extra>")
    fig.update_layout(title=f"Grain-size distribution of {_label(code)} by sample "
                            f"({'by area' if weight == 'area' else 'by number'})",
                      xaxis_title="equivalent circle diameter, µm", yaxis_title="cumulative % finer",
                      xaxis_type="log", yaxis_range=[0, 101], legend_title="sample", height=400,
                      margin=dict(l=50, r=20, t=50, b=50))
    return fig


def _series_words(entry: dict) -> str:
    """" (√2 classes)" or " (doubling classes)": the size-class series of an entry's grains, read from the
    classes themselves (the options chose it); "" when no mineral has a grain."""
    for g in entry["grains"].values():
        if g["size_classes"]:
            k = g["size_classes"][0]
            ratio = k["upper_um"] / k["lower_um"]
            return " (√2 classes)" if abs(ratio - 2 ** 0.5) < 1e-6 else \
                " (doubling classes)" if abs(ratio - 2) < 1e-6 else f" (classes ×{ratio:.3g})"
    return ""


def size_figure(summary: dict, *, scope: str = "total", weight: str = "area", sample: str | None = None):
    """Cumulative size curves (percent finer than the class upper edge) per mineral.

    Parameters
    ----------
    summary : dict
    scope : str
        ``"total"`` or an image stem.
    weight : {"area", "number"}
    sample : str, optional
        A sample of ``summary["samples"]`` instead of ``scope``.
    """
    import plotly.graph_objects as go

    entry, scope = scope_entry(summary, scope, sample)
    key = "cum_area_pct" if weight == "area" else "cum_number_pct"
    fig = go.Figure()
    for c, g in entry["grains"].items():
        cls = g["size_classes"]
        if not cls:
            continue
        xs = [cls[0]["lower_um"]] + [k["upper_um"] for k in cls]
        ys = [0.0] + [k[key] for k in cls]
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=_label(c), line=dict(color=mineral_color(c), width=2),
                        hovertemplate=_label(c) + "<br>%{y:.1f} % finer than %{x:.3g} µm<extra></extra>")
    fig.update_layout(title=f"Grain-size distribution ({'by area' if weight == 'area' else 'by number'}, {scope})",
                      xaxis_title="equivalent circle diameter, µm" + _series_words(entry),
                      yaxis_title="cumulative % finer",
                      xaxis_type="log", yaxis_range=[0, 101], height=420, margin=dict(l=50, r=20, t=50, b=50))
    return fig


def association_figure(summary: dict, *, scope: str = "total", sample: str | None = None):
    """Heat map: fraction of each mineral's boundary (rows) touching each class (columns); ``scope`` and
    ``sample`` as for :func:`size_figure`."""
    import plotly.graph_objects as go

    entry, scope = scope_entry(summary, scope, sample)
    rows = sorted(entry["association"], key=int)
    cols = sorted({k for r in rows for k in entry["association"][r]} | set(rows), key=int)
    z = [[(100 * entry["association"][r].get(c, 0.0) if c != r else None) for c in cols] for r in rows]
    fig = go.Figure(go.Heatmap(
        z=z, x=[by_code(int(c)).label for c in cols], y=[by_code(int(r)).label for r in rows], zmin=0, zmax=100,
        colorscale="Viridis", colorbar=dict(title="% of boundary"),
        text=[[("" if v is None else f"{v:.1f}") for v in row] for row in z], texttemplate="%{text}",
        hovertemplate="%{y} touching %{x}: %{z:.2f} % of its boundary<extra></extra>"))
    fig.update_layout(title=f"Mineral associations ({scope}): share of each mineral's boundary",
                      xaxis_title="touching (bg = free surface)", yaxis_title="mineral", height=420,
                      yaxis_autorange="reversed", margin=dict(l=60, r=20, t=50, b=50))
    return fig


def occurrence_figure(summary: dict, *, scope: str = "total", sample: str | None = None):
    """Stacked bars: the share of each mineral's area (rows) in grains free in the gangue, enclosed in each other
    mineral, or between several classes; ``scope`` and ``sample`` as for :func:`size_figure`."""
    import plotly.graph_objects as go

    entry, scope = scope_entry(summary, scope, sample)
    occ = {c: o for c, o in sorted(entry.get("occurrence", {}).items(), key=lambda kv: int(kv[0])) if o["hosts"]}
    rows = [by_code(int(c)).label for c in occ]
    hosts = sorted({h["host"] for o in occ.values() for h in o["hosts"]},
                   key=lambda h: (h is None, int(h) if h is not None else 0))
    fig = go.Figure()
    for h in hosts:
        name = occurrence_label(h)
        xs = [100 * next((e["share"] for e in o["hosts"] if e["host"] == h), 0.0) for o in occ.values()]
        fig.add_bar(y=rows, x=xs, orientation="h", name=name,
                    # the gangue's class colour is black, which would swallow the bars' outlines
                    marker_color="rgb(200,200,200)" if h is None else "rgb(110,110,110)" if h == "0" else
                    mineral_color(h),
                    marker_line_color="#555", marker_line_width=0.5,
                    marker_pattern_shape="/" if h is None else "",
                    hovertemplate="%{y}: %{x:.1f} % of its area " + name + "<extra></extra>")
    fig.update_layout(barmode="stack", title=f"How each mineral occurs ({scope}): share of its area by grain",
                      xaxis_title="% of the mineral's area", yaxis_title="mineral", xaxis_range=[0, 100],
                      yaxis_autorange="reversed", legend_title="grains", height=max(260, 70 + 34 * len(rows)),
                      margin=dict(l=60, r=20, t=50, b=50))
    return fig


def liberation_figure(summary: dict, *, scope: str = "total", sample: str | None = None):
    """Cumulative liberation curves: the share of each mineral's area in particles at least x % of which it
    makes up; ``scope`` and ``sample`` as for :func:`size_figure`."""
    import plotly.graph_objects as go

    entry, scope = scope_entry(summary, scope, sample)
    fig = go.Figure()
    for c, lib in sorted(entry.get("liberation", {}).items(), key=lambda kv: int(kv[0])):
        if not lib["classes"]:
            continue
        xs = [k["lower_pct"] for k in lib["classes"]]
        ys = [100 * v for v in cumulative_shares(lib["classes"])]
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=_label(c),
                        line=dict(color=mineral_color(c), width=2),
                        hovertemplate=_label(c) + "<br>%{y:.1f} % of it in particles at least %{x} % of it"
                                                  "<extra></extra>")
    fig.update_layout(title=f"Liberation ({scope}): share of each mineral in particles of at least a given purity",
                      xaxis_title="the mineral's share of its particle's area, at least (%)",
                      yaxis_title="% of the mineral's area", xaxis_range=[-2, 102], yaxis_range=[0, 101],
                      height=420, margin=dict(l=50, r=20, t=50, b=50))
    return fig
