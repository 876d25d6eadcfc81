"""A session's work as one file: saved from the sidebar, opened again on the Upload & calibrate page.

The archive is a zip (nothing in it is executable or pickled):

- ``manifest.json``: format name and version, the current image, and per image its name, origin, pixel size (µm,
  when known), which parts are saved and the segmentation's settings and notes;
- ``images/<k>.png`` the photograph, ``gt/<k>.png`` its expert mask, ``calibrated/<k>.png`` its colour-corrected
  copy, ``annotations/<k>.png`` the user's annotation (class codes), ``predictions/<k>.npz`` the segmentation's
  labels and probabilities (float16, for the uncertainty map), where ``k`` numbers the images; an image's point
  count (points and calls) is in the manifest.

- ``xpl/<k>/<n>.npz``: the arrays of the image's Register XPL record (the aligned stack, the anisotropy maps), whose
  other fields (shot names, angles, the alignment table) are in the manifest.
- ``models/<m>/config.json`` and ``models/<m>/weights.pt``: the session's own models (fine-tuned on Annotate or
  opened on Segment), as their download holds them (fp16 weights), listed in the manifest with their notes and
  whether the session was using one; read back with ``weights_only=True``.

Lossless throughout: an opened archive gives back the same pixels, labels, probabilities and aligned XPL shots (a
session model comes back with the fp16 weights its own download holds).
The pages' intermediate results (strokes, the last statistics or panorama) are not saved; the panorama and
statistics have their own downloads.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import uuid
import zipfile
import zlib
from typing import Mapping

import numpy as np

from core import io as cio
from core.stats.summary import check_sample_name

__all__ = ["FORMAT", "VERSION", "pack", "describe", "unpack"]

FORMAT = "orelens-session"
VERSION = 1
_MAX_MEMBER_BYTES = 8 << 30  # a member that would unpack to more than this is refused before it is read
# what reading a damaged member raises: a bad CRC or header (zip), bad deflate data (zlib), a cut-off or empty npz
_DAMAGED = (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot save {type(o).__name__} in a session archive")


def _encode(obj, z: zipfile.ZipFile, folder: str, count: list[int]):
    """``obj`` as JSON-ready data, its arrays written to ``folder/<n>.npz`` and replaced by ``{"__array__": path}``."""
    if isinstance(obj, np.ndarray):
        path = f"{folder}/{count[0]}.npz"
        count[0] += 1
        b = io.BytesIO()
        np.savez_compressed(b, a=obj)
        z.writestr(path, b.getvalue())
        return {"__array__": path}
    if isinstance(obj, Mapping):
        return {str(k): _encode(v, z, folder, count) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, z, folder, count) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _decode(obj, r: "_Reader"):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            try:
                with np.load(io.BytesIO(r.read(str(obj["__array__"]))), allow_pickle=False) as f:
                    return f["a"]
            except _DAMAGED:
                raise ValueError(f"{obj['__array__']} is damaged") from None
        return {k: _decode(v, r) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, r) for v in obj]
    return obj


def pack(session: Mapping) -> bytes:
    """The archive of ``session`` (``images``, ``calibrated``, ``predictions``, ``annotations``, ``xpl``,
    ``pointcounts``, ``current``, ``session_models``, ``model_dir``; the buckets of :mod:`ui.state`)."""
    images = session.get("images") or {}
    buf = io.BytesIO()
    entries = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # PNG and npz are compressed already
        for k, (name, rec) in enumerate(images.items()):
            entry = {"name": name, "origin": rec.get("origin", "upload"), "key": k}
            if rec.get("pixel_um") is not None:
                entry["pixel_um"] = float(rec["pixel_um"])
            if rec.get("sample"):
                entry["sample"] = str(rec["sample"])
            if rec.get("source"):  # the fingerprint of the file it was read from (state.placement)
                entry["source"] = str(rec["source"])
            z.writestr(f"images/{k}.png", cio.encode_png(rec["image"]))
            if rec.get("gt") is not None:
                z.writestr(f"gt/{k}.png", cio.encode_png(rec["gt"]))
                entry["gt"] = True
            cal = (session.get("calibrated") or {}).get(name)
            if cal is not None:
                z.writestr(f"calibrated/{k}.png", cio.encode_png(cal))
                entry["calibrated"] = True
            ann = (session.get("annotations") or {}).get(name)
            if ann is not None:
                z.writestr(f"annotations/{k}.png", cio.encode_png(ann))
                entry["annotation"] = True
            pred = (session.get("predictions") or {}).get(name)
            if pred is not None:
                arrays = {"labels": np.asarray(pred["labels"], np.uint8)}
                if pred.get("probs") is not None:
                    arrays["probs"] = np.asarray(pred["probs"])
                b = io.BytesIO()
                np.savez_compressed(b, **arrays)
                z.writestr(f"predictions/{k}.npz", b.getvalue())
                # the overview (unsure share, minerals) is made again from the labels and probabilities
                entry["prediction"] = {key: v for key, v in pred.items() if key not in ("labels", "probs", "overview")}
            count = (session.get("pointcounts") or {}).get(name)
            if count is not None:
                entry["pointcount"] = {"points": np.asarray(count["points"]).tolist(),
                                       "calls": np.asarray(count["calls"]).tolist(), "pos": int(count.get("pos", 0))}
            xpl = (session.get("xpl") or {}).get(name)
            if xpl is not None:
                entry["xpl"] = _encode({key: v for key, v in xpl.items() if key != "token"}, z, f"xpl/{k}", [0])
            entries.append(entry)
        models = []
        from core.segmentation.model import model_parts

        for m, (key, rec) in enumerate((session.get("session_models") or {}).items()):
            config, weights = model_parts(rec["model"])
            z.writestr(f"models/{m}/config.json", config)
            z.writestr(f"models/{m}/weights.pt", weights)
            models.append({"key": key, "note": rec.get("note", ""), "member": m})
        manifest = {"format": FORMAT, "version": VERSION, "saved": _dt.datetime.now().isoformat(timespec="seconds"),
                    "current": session.get("current"), "images": entries, "models": models,
                    "model_in_use": session.get("model_dir") if any(
                        e["key"] == session.get("model_dir") for e in models) else None}
        z.writestr("manifest.json", json.dumps(manifest, indent=1, default=_json_default))
    return buf.getvalue()


class _Reader:
    def __init__(self, z: zipfile.ZipFile):
        self.z = z
        self.names = set(z.namelist())

    def read(self, member: str) -> bytes:
        if member not in self.names:
            raise ValueError(f"the archive lacks {member}")
        if self.z.getinfo(member).file_size > _MAX_MEMBER_BYTES:
            raise ValueError(f"{member} in the archive is too large to open")
        try:
            return self.z.read(member)
        except _DAMAGED:  # its bytes do not match their checksum, or do not unpack
            raise ValueError(f"{member} in the archive is damaged") from None


def _manifest(r: _Reader) -> dict:
    if "manifest.json" not in r.names:
        raise ValueError("not a saved OreLens session (the zip has no manifest.json)")
    try:
        manifest = json.loads(r.read("manifest.json"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the session's manifest.json is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError("not a saved OreLens session (its manifest is of another format)")
    if not isinstance(manifest.get("version"), int) or isinstance(manifest["version"], bool):
        raise ValueError("the session's manifest.json is damaged (it has no format version)")
    if manifest["version"] > VERSION:
        raise ValueError(f"this session was saved by a newer OreLens (format version {manifest.get('version')}); "
                         f"this one reads version {VERSION}")
    if not isinstance(manifest.get("images"), list):
        raise ValueError("the session's manifest lists no images")
    return manifest


def _open_zip(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ValueError("not a saved OreLens session (not a zip file)") from None


def describe(data: bytes) -> str:
    """One line on what a saved session holds, from its manifest alone (fast); ``ValueError`` as :func:`unpack`."""
    with _open_zip(data) as z:
        m = _manifest(_Reader(z))
    entries = [e for e in m["images"] if isinstance(e, dict)]
    parts = [f"{len(entries)} image(s)"] + [f"{sum(1 for e in entries if e.get(k))} {label}" for k, label in (
        ("calibrated", "colour-corrected"), ("prediction", "segmented"), ("annotation", "annotated"),
        ("xpl", "with aligned XPL shots"), ("pointcount", "with a point count"))
        if any(e.get(k) for e in entries)]
    models = m.get("models") if isinstance(m.get("models"), list) else []
    if models:
        parts.append(f"{len(models)} model(s) of the session")
    saved = str(m.get("saved", "")).replace("T", " ")
    return (f"Saved {saved}: " if saved else "") + ", ".join(parts)


def unpack(data: bytes, *, max_images: int | None = None, device: str = "cpu") -> dict:
    """Read an archive made by :func:`pack`; ``ValueError`` (saying what is wrong) when it is not one or is damaged.

    Returns
    -------
    dict
        ``{"images": {name: {"image", "gt", "origin", "pixel_um"}}, "calibrated": {...}, "predictions": {...},
        "annotations": {...}, "xpl": {...}, "pointcounts": {...}, "current": name or None, "saved": str,
        "session_models": {key: {"model", "note"}}, "model_in_use": key or None}`` (the models loaded on ``device``); nothing is half-read: an error
        anywhere raises before anything is returned.
    """
    with _open_zip(data) as z:
        r = _Reader(z)
        manifest = _manifest(r)
        entries = manifest["images"]
        if max_images is not None and len(entries) > max_images:
            raise ValueError(f"the saved session holds {len(entries)} images; a session holds at most {max_images}")
        out = {"images": {}, "calibrated": {}, "predictions": {}, "annotations": {}, "xpl": {}, "pointcounts": {},
               "current": manifest.get("current"), "saved": str(manifest.get("saved", ""))}
        for e in entries:
            try:
                name, k = e["name"], int(e["key"])
                if not isinstance(name, str) or not name:
                    raise TypeError
            except (KeyError, TypeError, ValueError):
                raise ValueError("the session's manifest has an image without a name") from None
            if name in out["images"]:
                raise ValueError(f"the saved session lists {name} twice")
            where = f"saved image {name}"
            try:
                image = cio.read_image(r.read(f"images/{k}.png"))
                shape = image.shape[:2]
                gt = cio.read_mask(r.read(f"gt/{k}.png"), shape=shape) if e.get("gt") else None
                if e.get("calibrated"):
                    cal = cio.read_image(r.read(f"calibrated/{k}.png"))
                    if cal.shape != image.shape:
                        raise ValueError("its colour-corrected copy has another size")
                    out["calibrated"][name] = cal
                if e.get("annotation"):
                    out["annotations"][name] = cio.read_mask(r.read(f"annotations/{k}.png"), shape=shape)
                if e.get("prediction") is not None:
                    out["predictions"][name] = _prediction(r.read(f"predictions/{k}.npz"), e["prediction"], shape)
                if e.get("xpl") is not None:
                    out["xpl"][name] = _xpl(_decode(e["xpl"], r), image.shape)
                if e.get("pointcount") is not None:
                    out["pointcounts"][name] = _pointcount(e["pointcount"], shape)
            except ValueError as err:
                raise ValueError(f"{where}: {str(err).replace('uploaded file: ', '')}") from None
            try:
                pixel_um = None if e.get("pixel_um") is None else cio.check_pixel_size(e["pixel_um"])
            except ValueError:
                raise ValueError(f"{where}: its pixel size is damaged") from None
            out["images"][name] = {"image": image, "gt": gt, "origin": str(e.get("origin", "upload")),
                                   "pixel_um": pixel_um}
            source = e.get("source")
            if source is not None:
                if not (isinstance(source, str) and len(source) == 16 and all(c in "0123456789abcdef" for c in source)):
                    raise ValueError(f"{where}: its file fingerprint is damaged")
                out["images"][name]["source"] = source
            if e.get("sample") is not None:
                try:
                    out["images"][name]["sample"] = check_sample_name(e["sample"])
                except ValueError:
                    raise ValueError(f"{where}: its sample name is damaged") from None
        if not isinstance(out["current"], str) or out["current"] not in out["images"]:
            out["current"] = next(iter(out["images"]), None)
        out["session_models"] = _models(r, manifest, device)
        use = manifest.get("model_in_use")
        out["model_in_use"] = use if use in out["session_models"] else None
        return out


def _models(r: "_Reader", manifest: dict, device: str) -> dict:
    """The session models an archive lists: key -> ``{"model", "note"}``."""
    from core.segmentation.model import model_from_parts

    entries = manifest.get("models", [])
    if not isinstance(entries, list):
        raise ValueError("the session's manifest lists its models wrongly")
    out = {}
    for e in entries:
        try:
            key, m = str(e["key"]), int(e["member"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("the session's manifest has a model without a name") from None
        if not key.startswith("session:") or key in out:
            raise ValueError(f"the session's manifest lists model {key} wrongly")
        try:
            model = model_from_parts(r.read(f"models/{m}/config.json"), r.read(f"models/{m}/weights.pt"),
                                     device=device, name=key.split(":", 1)[1])
        except ValueError as err:
            raise ValueError(f"saved model {key.split(':', 1)[1]}: {err}") from None
        out[key] = {"model": model, "note": str(e.get("note", ""))}
    return out


def _xpl(record, shape: tuple[int, ...]) -> dict:
    if not isinstance(record, dict) or not isinstance(record.get("aligned"), list) or \
            not isinstance(record.get("names"), list) or len(record["names"]) != len(record["aligned"]):
        raise ValueError("its XPL alignment is damaged")
    for a in record["aligned"]:
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.shape != tuple(shape):
            raise ValueError("its aligned XPL shots do not fit the photograph")
    return {**record, "token": uuid.uuid4().hex}  # a new key for the downloads the page caches


def _pointcount(record, shape: tuple[int, int]) -> dict:
    from core.stats.pointcount import MAX_POINTS, check

    try:
        points = np.asarray(record["points"], np.int64).reshape(-1, 2)
        calls = np.asarray(record["calls"], np.int64).reshape(-1)
        pos = int(record.get("pos", 0))
        if not 0 < len(points) <= MAX_POINTS or len(points) != len(calls) or not 0 <= pos < len(points):
            raise ValueError
        if points.min() < 0 or (points[:, 0] >= shape[0]).any() or (points[:, 1] >= shape[1]).any():
            raise ValueError
        check(points, calls)  # every call a known code
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError("its point count is damaged") from None
    return {"points": points.astype(np.int32), "calls": calls.astype(np.int16), "pos": pos}


def _prediction(blob: bytes, meta, shape: tuple[int, int]) -> dict:
    if not isinstance(meta, dict):
        raise ValueError("its segmentation's settings are damaged")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as f:
            labels = f["labels"]
            probs = f["probs"] if "probs" in f.files else None
    except (ValueError, *_DAMAGED):
        raise ValueError("its segmentation is damaged") from None
    if labels.dtype != np.uint8 or labels.shape != tuple(shape):
        raise ValueError("its segmentation does not fit the photograph")
    if probs is not None:
        classes = meta.get("classes") or []
        if probs.ndim != 3 or probs.dtype.kind != "f" or probs.shape[0] != len(classes):
            raise ValueError("its segmentation's probabilities do not fit its classes")
    return {**{k: v for k, v in meta.items() if k != "overview"}, "labels": labels, "probs": probs}
