"""Writing statistics tables as CSV files, a zip of CSV files, or an XLSX workbook."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

__all__ = ["write_csv", "csv_zip", "xlsx_bytes", "export_tables"]


def write_csv(tables: dict, folder) -> list[Path]:
    """Write every table as ``<folder>/<name>.csv``; returns the paths written.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        As returned by :func:`core.stats.tables`.
    folder : path
        Created if missing.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder; give a folder for the CSV files")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables.items():
        p = folder / f"{name}.csv"
        df.to_csv(p, index=False)
        paths.append(p)
    return paths


def export_tables(tables: dict, *, checks: dict | None = None, samples: dict | None = None,
                  quality: dict | None = None) -> dict:
    """The tables to export: :func:`core.stats.tables`' and, where there are some, ``pointcount`` (the point counts
    against the masks analysed, and their pools: :func:`core.stats.pointcount.checks_table`) and ``segmentations``
    (the segmentations analysed: :func:`core.stats.report.quality_rows`)."""
    out = dict(tables)
    if checks:
        from .pointcount import checks_table

        out["pointcount"] = checks_table(checks, samples)
    if quality:
        from .report import quality_rows

        out["segmentations"] = quality_rows(quality)
    return out


def csv_zip(tables: dict) -> bytes:
    """A zip archive holding ``<name>.csv`` for every table."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, df in tables.items():
            z.writestr(f"{name}.csv", df.to_csv(index=False))
    return buf.getvalue()


def xlsx_bytes(tables: dict) -> bytes:
    """An XLSX workbook (openpyxl) with one sheet per table.

    Sheets are limited to Excel's 1,048,575 data rows; longer tables are cut
    there and the last row says so.
    """
    import pandas as pd

    limit = 1_048_575
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as xw:
        for name, df in tables.items():
            if len(df) > limit:
                df = pd.concat([df.iloc[:limit - 1],
                                pd.DataFrame([{df.columns[0]: f"... {len(df) - limit + 1} more rows in the CSV export"}])])
            df.to_excel(xw, sheet_name=name[:31], index=False)
    return buf.getvalue()
