"""Statistics page: modal mineralogy, grain sizes, associations, occurrence and liberation from the session's masks
or uploaded masks, per image, per sample and pooled."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import streamlit as st

from core import io as cio
from core.minerals import IGNORE, by_code
from core.stats import (BORDER_POLICIES, PERIMETER_METHODS, SIZE_SERIES, Options, group_samples, measure,
                        sample_comparison, summarize, tables)
from core.stats.chemistry import DEFAULT_GANGUE_DENSITY
from core.stats.export import csv_zip, export_tables, xlsx_bytes
from core.stats.figures import (association_figure, liberation_figure, modal_figure, occurrence_figure,
                                sample_figure, sample_size_figure, scope_entry, size_figure)
from core.stats.summary import (DEFAULT_ENCLOSED, LIBERATED_PCT, MAX_SAMPLE_NAME, check_sample_name,
                                liberation_rows, sample_from_name)
from core.stats.report import DEFAULT_TITLE, build_report, thumbnail
from ui import state, widgets

# Pixel size = camera pixel pitch / (objective magnification × camera adapter). These presets assume a 3.45 µm
# camera pixel behind a 1× adapter, a common set-up; every microscope differs.
CAMERA_PIXEL_UM = 3.45
OBJECTIVES = {"5×": 5, "10×": 10, "20×": 20, "50×": 50, "100×": 100}
CUSTOM = "Custom (enter µm/px)"
DEFAULT_SAMPLE = "sample 1"
SAMPLE_SCOPE = "sample: "


def _preset_label(name: str) -> str:
    if name == CUSTOM:
        return name
    return f"{name} objective (≈ {CAMERA_PIXEL_UM / OBJECTIVES[name]:.3g} µm/px)"


def _pixel_sizes(inputs: dict | None) -> dict[str, float] | None:
    """The pixel size (µm) of every mask to analyse: its own where known, else the page's value; None when no
    input."""
    if not inputs:
        return None
    own = {n: rec.get("pixel_um") for n, rec in inputs.items()}
    missing = [n for n, v in own.items() if v is None]
    if missing:
        c1, c2 = st.columns([2, 1])
        preset = c1.selectbox("Pixel size preset", list(OBJECTIVES) + [CUSTOM], index=3, format_func=_preset_label,
                              key="stats-preset")
        default = CAMERA_PIXEL_UM / OBJECTIVES[preset] if preset != CUSTOM else 1.0
        label = ("Pixel size (µm per pixel)" if len(missing) == len(own) else
                 f"Pixel size of the {len(missing)} image(s) without one (µm per pixel)")
        value = float(c2.number_input(label, min_value=1e-4, max_value=1000.0, value=float(default), step=None,
                                      format="%.4f", key=f"stats-ps-{preset}"))
        st.info("The presets are typical values (a 3.45 µm camera pixel behind a 1× adapter), not your microscope's: "
                "check the pixel size against your own stage-micrometer calibration before you report sizes in µm. "
                "Area fractions and associations do not depend on it. An image's own pixel size (recorded in its "
                "file, or set under Upload & calibrate → Images in this session) is used where it has one.",
                icon="📏")
    sizes = {n: v if v is not None else value for n, v in own.items()}
    if len(missing) < len(own):
        st.dataframe([{"image": n, "µm per pixel": sizes[n],
                       "from": "this page" if own[n] is None else "the image"} for n in sizes],
                     hide_index=True, width="stretch", column_config={
                         "µm per pixel": st.column_config.NumberColumn(format="%.4g")})
    return sizes


def _sample_of(name: str) -> str:
    """The sample of ``name``: its image record's for a session image (saved with the session), the page's own
    for a mask uploaded on its own; :data:`DEFAULT_SAMPLE` when none is set."""
    images = state.bucket("images")
    rec = images[name] if name in images else state.bucket("statistics").get("upload_samples", {}).get(name, {})
    return rec.get("sample") or DEFAULT_SAMPLE


def _set_sample(name: str, value: str) -> None:
    if name in state.bucket("images"):
        state.set_sample(name, value)
    else:
        state.bucket("statistics").setdefault("upload_samples", {})[name] = {"sample": check_sample_name(value)}


def _samples(inputs: dict | None) -> dict[str, str] | None:
    """Image -> sample for the masks to analyse, as set in the page's table; None when no input or all in one."""
    if not inputs:
        return None
    st.markdown("#### Samples")
    st.caption("Give the images of one sample (a section, a drill-core interval, an ore type) the same sample name "
               "to compare samples: each is then pooled on its own, with its own 95 % interval, beside the total.")
    current = {n: _sample_of(n) for n in inputs}
    rows = [{"image": n, "sample": v} for n, v in current.items()]
    key = widgets.content_key("stats-samples-", rows)
    edited = st.data_editor(pd.DataFrame(rows), hide_index=True, width="stretch", key=key, disabled=["image"],
                            column_config={"sample": st.column_config.TextColumn(
                                max_chars=MAX_SAMPLE_NAME, help="Double-click to name the sample of this image.")})
    for n, v in zip(edited["image"], edited["sample"]):
        v = "" if v is None or pd.isna(v) else str(v).strip()
        if n in current and v and v != current[n]:
            _set_sample(n, v)
            current[n] = v
    with st.container(horizontal=True, vertical_alignment="bottom"):
        pick = st.multiselect("Images", list(inputs), key="stats-sample-pick", placeholder="Choose images")
        name = st.text_input("Sample name", max_chars=MAX_SAMPLE_NAME, key="stats-sample-name",
                             placeholder="e.g. DH-12 41.0–42.5 m")
        if st.button("Assign", disabled=not (pick and name.strip()), key="stats-sample-set"):
            for n in pick:
                _set_sample(n, name)
            del st.session_state["stats-sample-pick"]
            state.rerun_then_show("stats-samples", [("success", f"{len(pick)} image(s) put in sample "
                                                                f"{name.strip()}.")])
    if st.button("Name the samples after the images", key="stats-sample-names",
                 help="Each image's sample is its name up to the last '-', '_' or space: DH12-41m-01 and "
                      "DH12-41m-02 go into DH12-41m."):
        for n in inputs:
            _set_sample(n, sample_from_name(n))
        state.rerun_then_show("stats-samples", [("success", "Samples named after the images.")])
    state.show_carried("stats-samples")
    groups = group_samples(list(current), current)
    if len(groups) < 2:
        return None
    st.caption(f"{len(groups)} samples: " + "; ".join(f"{g} ({len(m)} image{'s' if len(m) > 1 else ''})"
                                                      for g, m in groups.items()))
    return current


def _options() -> Options:
    with st.expander("Method options"):
        c1, c2, c3, c4, c5 = st.columns(5)
        border = c1.selectbox("Grains cut by the image edge", BORDER_POLICIES.names(), key="stats-border",
                              format_func=lambda n: f"{n} — {BORDER_POLICIES.describe(n)}")
        perimeter = c2.selectbox("Perimeter / boundary estimator", PERIMETER_METHODS.names(), key="stats-perimeter",
                                 format_func=lambda n: f"{n} — {PERIMETER_METHODS.describe(n)}")
        series = c3.selectbox("Size classes", SIZE_SERIES.names(), key="stats-series",
                              format_func=lambda n: f"{n} — {SIZE_SERIES.describe(n)}")
        gangue = c4.number_input("Gangue density (g/cm³)", min_value=0.5, max_value=10.0, value=DEFAULT_GANGUE_DENSITY,
                                 step=0.05, format="%.2f", key="stats-gangue",
                                 help="Density of the non-metallic class, for weight % and the calculated assay "
                                      "(quartz 2.65, calcite 2.71, feldspars 2.56–2.76). Area %, weight % of the "
                                      "minerals only and the deportment do not depend on it.")
        enclosed = c5.number_input("Enclosed from (% of a grain's boundary)", min_value=50, max_value=100,
                                   value=round(100 * DEFAULT_ENCLOSED), step=5, key="stats-enclosed",
                                   help="A grain counts as enclosed in a class (free in the gangue, or an inclusion "
                                        "in another mineral) when at least this share of its boundary is against "
                                        "that class; otherwise it lies between several classes.")
    return Options(border=border, perimeter=perimeter, series=series, gangue_density=gangue,
                   enclosed=enclosed / 100)


def _session_masks() -> dict:
    """name -> {"mask", "image", "source"} for the session's images that have a mask to analyse."""
    images = state.bucket("images")
    if not images:
        state.no_image_hint()
        return {}
    use_gt = st.checkbox("Where an image has no segmentation or annotation, use the expert mask supplied with it",
                         value=True, key="stats-use-gt")
    rows, found = [], {}
    for name, rec in images.items():
        mask, source = state.best_mask(name)
        if mask is None and use_gt and rec.get("gt") is not None:
            mask, source = rec["gt"], "expert mask"
        rows.append({"image": name, "mask": source or "none (segment or annotate it first)"})
        if mask is not None:
            found[name] = {"mask": mask, "image": rec["image"], "source": source, "pixel_um": rec.get("pixel_um")}
    st.dataframe(rows, hide_index=True, width="stretch")
    if not found:
        st.warning("No image of this session has a mask yet: run the Segment or Annotate step, or upload masks.")
        return {}
    chosen = st.multiselect("Images to analyse (pooled in the total)", list(found), default=list(found),
                            key="stats-chosen")
    return {n: found[n] for n in chosen}


def _match_image(stem: str, names: list[str]) -> str | None:
    for n in names:
        if n == stem or n.endswith("-" + stem):
            return n
    return None


def _uploaded_masks() -> dict | None:
    """name -> {"mask", "image", "source"} from uploaded masks; None when one is unusable (error shown)."""
    images = state.bucket("images")
    with st.expander("Upload masks instead", expanded=not images):
        files = st.file_uploader("Mask files (8-bit PNG of LumenStone class codes, 255 = unlabelled)",
                                 type=["png", "tif", "tiff"], accept_multiple_files=True, key="stats-uploads")
        standalone = True
        if images:
            standalone = st.checkbox("These masks are not of this session's images (no size check, no thumbnails)",
                                     value=False, key="stats-standalone")
            if not standalone:
                st.caption("Each mask is paired with the session image of the same name (05.png → demo-05); a "
                           "single mask with no such image is paired with the current image. A mask must match its "
                           "image's size.")
    if not files:
        return {}
    out, ok = {}, True
    names = list(images)
    for f in files:
        stem = cio.safe_name(f.name, "mask")
        target = None
        if not standalone:
            target = _match_image(stem, names)
            if target is None and len(files) == 1:
                target = state.current_name()
            if target is None:
                st.error(f"{f.name}: no image of this session is called {stem}; name the mask after its image, "
                         "or tick the box above to analyse the masks on their own.")
                ok = False
                continue
        shape = images[target]["image"].shape[:2] if target else None
        mask = state.read_upload(f, kind="mask", shape=shape)
        if mask is None:
            ok = False
            continue
        key = target or stem
        if key in state.RESERVED_NAMES:  # the pooled rows' name: total.png is analysed as total-2
            key = f"{key}-2"
        if key in out:
            st.error(f"{f.name}: two masks for {key}; give each image one mask.")
            ok = False
            continue
        # the mask's own record of its pixel size (OreLens writes one), else its image's
        pixel_um = cio.read_pixel_size(f.getvalue())
        if pixel_um is None and target:
            pixel_um = images[target].get("pixel_um")
        out[key] = {"mask": mask, "image": images[target]["image"] if target else None,
                    "source": f"uploaded {cio.safe_name(f.name)}", "pixel_um": pixel_um}
    return out if ok else None


def _fingerprints(inputs: dict) -> dict[str, str]:
    """name -> a digest of its mask's content, so that a mask changed since (segmented again, annotated,
    fine-tuned) is noticed even under the same name.

    The page checks this on every rerun (each change of a view), so a mask the session still holds as the same
    array is not hashed again: a new result is always a new array, never one changed in place.
    """
    import hashlib

    memo = st.session_state.get("_stats_mask_digests", {})
    out, keep = {}, {}
    for name, rec in inputs.items():
        m = rec["mask"]
        hit = memo.get(id(m))
        if hit is not None and hit[0] is m:
            d = hit[1]
        else:
            a = np.ascontiguousarray(m)
            d = hashlib.blake2b(a.data, digest_size=16, person=str(a.shape).encode()[:16]).hexdigest()
        keep[id(m)] = (m, d)  # the array is held, so its id cannot pass to another while it is remembered
        out[name] = d
    st.session_state["_stats_mask_digests"] = keep
    return out


def _compute(inputs: dict, pixel_sizes: dict[str, float], options: Options, samples: dict | None = None) -> dict:
    empty = [name for name, rec in inputs.items() if not np.any(rec["mask"] != IGNORE)]
    if empty:
        raise ValueError(f"{', '.join(empty)}: the mask holds no labelled pixel (every pixel is 255, unlabelled); "
                         "leave it out, or segment or annotate the image first")
    bar = st.progress(0.0, text="Measuring…")
    results, thumbs, sources = {}, {}, {}
    n = len(inputs)
    for i, (name, rec) in enumerate(inputs.items()):
        bar.progress(i / (n + 1), text=f"Measuring {name} ({i + 1} of {n})…")
        results[name] = measure(rec["mask"], pixel_size=pixel_sizes[name])
        thumbs[name] = thumbnail(image=rec["image"], mask=rec["mask"], pixel_um=pixel_sizes[name])
        sources[name] = rec["source"]
    bar.progress(n / (n + 1), text="Summarising…")
    summary = summarize(results, options=options, samples=samples)
    quality = {}  # the segmentations analysed: which model, how sure it was, what to look at
    for name, rec in inputs.items():
        pred = state.bucket("predictions").get(name)
        if pred is not None and rec.get("image") is not None and str(rec.get("source", "")).startswith("segmentation"):
            ov = state.result_overview(pred)
            quality[name] = {"model": pred.get("model"), "unsure": ov["unsure"], "drift": pred.get("drift"),
                             "notes": state.result_notes(name, pred)}
    checks = {}
    for name, rec in inputs.items():  # a session image's point count (Segment page) against the mask analysed
        chk = state.count_check(name, rec["mask"]) if rec.get("image") is not None else None
        if chk is not None:
            checks[name] = chk
    out = {
        "token": uuid.uuid4().hex, "summary": summary, "tables": tables(results, options=options, samples=samples),
        "thumbs": thumbs, "sources": sources, "pixel_sizes": dict(pixel_sizes), "options": options.as_dict(),
        "samples": dict(samples) if samples else None, "checks": checks, "quality": quality,
        "fingerprints": _fingerprints(inputs),
        "json": json.dumps(summary, indent=1).encode(), "files": {},
    }
    bar.progress(1.0, text="Done")
    bar.empty()
    return out


def build_download(res: dict, kind: str, *, title: str = DEFAULT_TITLE, notes: str = "") -> bytes:
    """The report or an export of a result, built on first request and kept with the result (the report once per
    title and notes)."""
    files = res["files"]
    key = ("report", title, notes) if kind == "report" else kind
    if key not in files:
        if kind == "report":
            html = build_report(res["summary"], res["tables"], options=Options.from_dict(res["options"]),
                                thumbnails=res["thumbs"], sources=res["sources"], title=title, notes=notes,
                                checks=res.get("checks"), quality=res.get("quality"))
            files[key] = html.encode("utf-8")
        else:
            tabs = export_tables(res["tables"], checks=res.get("checks"), samples=res.get("samples"),
                                 quality=res.get("quality"))
            files[key] = csv_zip(tabs) if kind == "csv" else xlsx_bytes(tabs)
    return files[key]


def _assay(tabs: dict, gangue_density: float) -> None:
    """Element grades of the pooled sample and which minerals carry each element."""
    assay = tabs["assay"]
    total = assay[assay["image"] == "total"]
    if not len(total):
        st.caption("No ore mineral in these masks, so no element grade to report.")
        return
    st.caption(f"From weight % and the minerals' ideal formulas, with the non-metallic class at {gangue_density:g} "
               "g/cm³ and carrying none of these elements (set under Method options). The report's method section "
               "lists the densities and formulas.")
    rows = [{"element": r.element, "wt % of the sample": 100 * r.grade,
             "wt % of the ore minerals": 100 * r.grade_in_ore_minerals} for r in total.itertuples()]
    st.dataframe(rows, hide_index=True, width="stretch")
    dep = tabs["deportment"]
    dep = dep[dep["image"] == "total"]
    pivot = dep.pivot_table(index="element", columns="label", values="share", sort=False) * 100
    st.caption("Deportment: % of each element carried by each mineral.")
    st.dataframe(pivot.round(2), width="stretch")
    if assay["image"].nunique() > 2:  # several images and the total
        with st.expander("Grades per image"):
            per = assay[assay["image"] != "total"].pivot_table(index="image", columns="element", values="grade",
                                                               sort=False) * 100
            st.caption("wt % of each element in each image's sample.")
            st.dataframe(per.round(4), width="stretch")


def _compare_samples(res: dict) -> None:
    """Area %, wt %, grades and grain sizes of every sample side by side."""
    cmp = sample_comparison(res["tables"], res["summary"])
    st.plotly_chart(sample_figure(res["summary"]), key=f"samples-{res['token']}")
    st.caption("Area % of every sample, ± the half-width of its 95 % interval from how much its own images differ "
               "(a sample of one image has none). Samples whose intervals do not overlap differ by more than their "
               "fields do; the intervals do not include errors of the segmentation itself.")
    st.dataframe(cmp["area_text"], width="stretch")
    c1, c2 = st.columns(2)
    c1.caption("wt % (from the minerals' densities)")
    c1.dataframe(cmp["wt"].round(3), width="stretch")
    c2.caption("Calculated assay, wt % of the sample")
    if len(cmp["assay"].columns):
        c2.dataframe(cmp["assay"].round(4), width="stretch")
    else:
        c2.caption("No ore mineral, so no element grade.")
    if len(cmp["d50"].columns):
        st.caption("d50 (µm, by area) of every mineral in every sample")
        st.dataframe(cmp["d50"].round(2), width="stretch")
    if len(cmp["liberated"].columns):
        st.caption(f"Liberated: % of each mineral in particles at least {LIBERATED_PCT} % of which it makes up (see "
                   "Liberation below for the particles and how much of each mineral they hold)")
        st.dataframe(cmp["liberated"].round(2), width="stretch")
    codes = sorted({int(c) for e in res["summary"]["samples"].values() for c, g in e["grains"].items()
                    if g["size_classes"]})
    if codes:
        c1, c2 = st.columns(2)
        code = c1.selectbox("Grain sizes of", codes, key="stats-sample-mineral",
                            format_func=lambda c: f"{by_code(c).name} ({by_code(c).label})")
        weight = c2.radio("Distribution", ["area", "number"], horizontal=True, key="stats-sample-weight",
                          format_func=lambda w: f"by {w}")
        st.plotly_chart(sample_size_figure(res["summary"], code, weight=weight),
                        key=f"sample-size-{res['token']}-{code}-{weight}")


def _show(res: dict) -> None:
    summary, tabs = res["summary"], res["tables"]
    names = list(summary["images"])
    st.subheader("Results")
    sizes = sorted(set(res["pixel_sizes"].values()))
    at = (f"at {sizes[0]:g} µm/px" if len(sizes) == 1 else
          "at " + ", ".join(f"{n} {v:g}" for n, v in res["pixel_sizes"].items()) + " µm/px")
    st.caption(f"{len(names)} image(s) {at}; " +
               ", ".join(f"{k} = {v}" for k, v in res["options"].items()) + "; masks: " +
               "; ".join(f"{n} ({s})" for n, s in res["sources"].items()))
    with st.expander("Report title and notes", key="stats-report-box"):
        title = st.text_input("Title", value=DEFAULT_TITLE, max_chars=200, key="stats-report-title").strip()
        notes = st.text_area("Notes under the title", max_chars=4000, key="stats-report-notes",
                             placeholder="Project, sample, drill hole and interval, operator, microscope and "
                                         "objective…").strip()
    c = st.columns(4)
    # the report and the workbooks are built when first asked for (large samples have 10⁵ grains)
    c[0].download_button("Report (HTML)", lambda: build_download(res, "report", title=title or DEFAULT_TITLE,
                                                                 notes=notes), "orelens-statistics.html",
                         "text/html", key=f"dl-report-{res['token']}", type="primary", icon="📄", on_click="ignore")
    c[1].download_button("Tables (CSV, zip)", lambda: build_download(res, "csv"), "orelens-statistics-csv.zip",
                         "application/zip", key=f"dl-csv-{res['token']}", on_click="ignore")
    c[2].download_button("Tables (XLSX)", lambda: build_download(res, "xlsx"), "orelens-statistics.xlsx",
                         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                         key=f"dl-xlsx-{res['token']}", on_click="ignore")
    c[3].download_button("Statistics (JSON)", res["json"], "orelens-statistics.json", "application/json",
                         key=f"dl-json-{res['token']}", on_click="ignore")
    if res.get("checks"):
        st.caption("The report includes the point count" + (f"s of {len(res['checks'])} images" if len(res["checks"]) > 1
                                                             else f" of {next(iter(res['checks']))}")
                   + " (Segment page) checked against the mask analysed, as it stood when these statistics "
                     "were computed.")

    samples = list(summary.get("samples") or {})
    scopes = ["total"] + names + [SAMPLE_SCOPE + s for s in samples]
    labels = ["Modal mineralogy & assay"] + (["Samples compared"] if samples else []) + [
        "Grain sizes", "Associations & occurrence", "Liberation", "Masks analysed"]
    tab = dict(zip(labels, st.tabs(labels, key="stats-tabs")))  # keyed: the tab stays chosen over reruns

    with tab["Modal mineralogy & assay"]:
        _modal_and_assay(res)
    if samples:
        with tab["Samples compared"]:
            _compare_samples(res)

    # one scope for the grain, association, occurrence and liberation tabs
    scope = st.session_state.get("stats-scope")
    if scope not in scopes:
        scope = "total"
    sample = scope[len(SAMPLE_SCOPE):] if scope not in names and scope.startswith(SAMPLE_SCOPE) else None
    col, where = ("sample", sample) if sample is not None else ("image", scope)
    pre = "sample_" if sample is not None else ""

    pickers = [f"stats-scope-{t}" for t in ("grains", "assoc", "lib")]
    for k in pickers:  # every tab's select box shows the one scope (also after the scopes changed)
        if st.session_state.get(k) != scope:
            st.session_state[k] = scope

    def chosen(key: str) -> None:
        v = st.session_state[key]
        st.session_state.update({"stats-scope": v, **{k: v for k in pickers}})

    def scope_picker(where_key: str):
        """The same scope, chosen from whichever tab."""
        key = f"stats-scope-{where_key}"
        st.selectbox("Scope", scopes, key=key, on_change=chosen, args=(key,),
                     help="All images pooled (total), one image, or one sample.")

    with tab["Grain sizes"]:
        c1, c2 = st.columns(2)
        with c1:
            scope_picker("grains")
        weight = c2.radio("Distribution", ["area", "number"], horizontal=True, key="stats-weight",
                          format_func=lambda w: f"by {w}")
        st.plotly_chart(size_figure(summary, scope=scope, weight=weight, sample=sample),
                        key=f"size-{res['token']}-{scope}-{weight}")
        gs = tabs[pre + "grain_summary"]
        st.dataframe(gs[gs[col] == where].drop(columns=[col]), hide_index=True, width="stretch")
        with st.expander("Size classes"):
            sc = tabs[pre + "size_classes"]
            st.dataframe(sc[sc[col] == where].drop(columns=[col]), hide_index=True, width="stretch")

    with tab["Associations & occurrence"]:
        scope_picker("assoc")
        st.markdown("#### Mineral associations")
        st.plotly_chart(association_figure(summary, scope=scope, sample=sample),
                        key=f"assoc-{res['token']}-{scope}")
        entry, _ = scope_entry(summary, scope, sample)
        rows = []
        for a, row in entry["association"].items():
            rows.append({"mineral": by_code(int(a)).label,
                         **{by_code(int(b)).label: round(100 * v, 3) for b, v in row.items()}})
        st.caption("Percent of each mineral's boundary touching each class; bg = free surface, the rest is locked.")
        st.dataframe(rows, hide_index=True, width="stretch")

        st.markdown("#### How the minerals occur")
        st.plotly_chart(occurrence_figure(summary, scope=scope, sample=sample), key=f"occ-{res['token']}-{scope}")
        oc = tabs[pre + "occurrence"]
        oc = oc[oc[col] == where]
        share = round(100 * res["options"].get("enclosed_share", DEFAULT_ENCLOSED))
        st.caption(f"Each grain is free in the gangue or enclosed in another mineral when at least {share} % of its "
                   "boundary is against it, else between several classes (set under Method options); % of the "
                   "mineral's area in such grains, with their count and d50. Inclusions need finer grinding to be "
                   "freed.")
        st.dataframe(pd.DataFrame({"mineral": oc["label"], "occurs": oc["occurs"], "grains": oc["grains"],
                                   "% of its area": (100 * oc["share"]).round(2),
                                   "d50 µm": pd.to_numeric(oc["d50_um"]).round(2)}), hide_index=True,
                     width="stretch")

    with tab["Liberation"]:
        scope_picker("lib")
        st.plotly_chart(liberation_figure(summary, scope=scope, sample=sample), key=f"lib-{res['token']}-{scope}")
        st.caption("For grain mounts of crushed ore: a particle is a connected region of ore minerals between "
                   "non-metallic pixels (reflected light cannot tell gangue from the mounting medium, so purity is "
                   "among the ore minerals). % of each mineral's area in particles at least 50, 80 or 90 % of which, "
                   "or all of which, it makes up; and what it is locked with. In a section of massive ore the "
                   "particles are the aggregates of ore minerals, and the large ones reach the image edge: '% of it "
                   "counted' says how much of each mineral lies in the particles counted (Method options: grains cut "
                   "by the image edge). A plane section through a locked particle can look liberated, so these "
                   "figures overstate liberation somewhat, as every section-based measurement does.")
        st.dataframe(liberation_rows(tabs[pre + "liberation"], tabs[pre + "locking"], col, where),
                     hide_index=True, width="stretch")

    with tab["Masks analysed"]:
        cols = st.columns(min(3, max(1, len(names))))
        for i, n in enumerate(names):
            t = res["thumbs"][n]
            c = cols[i % len(cols)]
            if t.get("image") is not None:
                c.image(t["image"], caption=f"{n}: image")
            c.image(t["mask"], caption=f"{n}: mask ({res['sources'][n]})")
        if res.get("quality"):
            from core.stats.report import quality_rows

            st.markdown("#### The segmentations analysed")
            st.dataframe(quality_rows(res["quality"]), hide_index=True, width="stretch",
                         column_config={"unsure %": st.column_config.NumberColumn(format="%.1f"),
                                        "ΔE00": st.column_config.NumberColumn(format="%.1f")})
            st.caption("Unsure %: the share of the photograph where the model's two likeliest minerals are less than "
                       "0.5 apart; the higher it is, the more the image is worth checking (point counting, Annotate). "
                       "The report has this table too.")
        if res.get("checks"):
            from core.stats.pointcount import agreement_sentence, check_table, pooled_checks

            st.markdown("#### Checked by point counting")
            pooled = pooled_checks(res["checks"], res.get("samples"))
            for n, chk in {**res["checks"], **{f"Pooled: {k}": v for k, v in pooled.items()}}.items():
                st.markdown(f"**{state.plain(n)}**: " + agreement_sentence(chk, what="the mask analysed"))
                st.dataframe(check_table(chk, mask="mask"), hide_index=True, width="stretch",
                             column_config={c: st.column_config.NumberColumn(format="%.2f") for c in
                                            ("area % (count)", "area % (mask)")})
            st.caption("The point counts made on the Segment page, against the masks analysed here; the report "
                       "has them too.")


def _modal_and_assay(res: dict) -> None:
    summary, tabs = res["summary"], res["tables"]
    names = list(summary["images"])
    st.markdown("#### Modal mineralogy")
    bg = st.toggle("Include the non-metallic background", value=True, key="stats-bg")
    st.plotly_chart(modal_figure(summary, background=bg), key=f"modal-{res['token']}-{bg}")
    modal = tabs["modal"].copy()
    modal["area %"] = modal.pop("fraction") * 100
    modal["± area % (95 %)"] = modal.pop("fraction_ci95") * 100
    modal.pop("fraction_se")
    modal["area % (minerals only)"] = modal.pop("fraction_no_background") * 100
    modal["wt %"] = modal.pop("mass_fraction") * 100
    modal["wt % (minerals only)"] = modal.pop("mass_fraction_no_background") * 100
    total = modal[modal["image"] == "total"].drop(columns=["image"])
    if total["± area % (95 %)"].isna().all():
        total = total.drop(columns=["± area % (95 %)"])
    st.dataframe(total, hide_index=True, width="stretch",
                 column_config={"± area % (95 %)": st.column_config.NumberColumn(format="%.3g")})
    if len(names) > 1:
        st.caption(f"± area %: half-width of the 95 % interval of each pooled area % from how much the {len(names)} "
                   "images differ (ratio estimator, Student's t). It tells whether more fields are needed; it does "
                   "not include errors of the segmentation itself.")
        with st.expander("Per image"):
            per = modal[modal["image"] != "total"].drop(columns=["± area % (95 %)"])
            if res.get("samples"):
                per.insert(1, "sample", per["image"].map(res["samples"]))
            st.dataframe(per, hide_index=True, width="stretch")

    st.markdown("#### Calculated assay")
    _assay(tabs, res["options"]["gangue_density_g_cm3"])


def main() -> None:
    st.header("Statistics")
    st.caption("Modal mineralogy and calculated assay, grain sizes, mineral associations, how the minerals occur and "
               "liberation, exact to the pixel, and samples compared side by side.")
    st.markdown("#### Masks")
    session = _session_masks()
    uploaded = _uploaded_masks()
    inputs = uploaded if uploaded is None or uploaded else session
    if uploaded:
        st.info(f"The {len(uploaded)} uploaded mask(s) are analysed instead of the session's masks.")
    pixel_sizes = _pixel_sizes(inputs)
    samples = _samples(inputs)
    try:
        options = _options()
    except ValueError as e:
        st.error(str(e))
        return
    store = state.bucket("statistics")
    if st.button("Compute statistics", type="primary", disabled=not inputs, key="stats-run"):
        try:
            store["result"] = _compute(inputs, pixel_sizes, options, samples)
        except ValueError as e:
            st.error(f"Statistics could not be computed: {e}")
        except MemoryError:
            st.error("Not enough memory for these masks; analyse fewer or smaller masks at a time.")
    if inputs is None:
        return
    res = store.get("result")
    if res is None:
        if inputs:
            st.caption(f"{len(inputs)} mask(s) ready: press **Compute statistics**.")
        return
    before = res.get("fingerprints", {})
    redone = [n for n, f in _fingerprints(inputs).items() if n in before and before[n] != f]
    if redone:
        st.warning(f"The mask of {', '.join(redone)} changed since these results were computed (segmented again, "
                   "annotated or fine-tuned): the figures and downloads below are of the mask before. Press "
                   "**Compute statistics** to update them.")
    elif set(res["summary"]["images"]) != set(inputs) or res.get("pixel_sizes") != pixel_sizes or \
            res["options"] != options.as_dict() or res.get("samples") != samples:
        st.warning("The settings or masks changed since these results were computed; press **Compute statistics** "
                   "to update them.")
    _show(res)


state.through_app(__file__)
main()
