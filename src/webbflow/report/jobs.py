"""The report's jobs: files in, QA rows and figures out (one function per rule of ``workflow/rules/report.smk``)."""

import csv
import html
import json
import warnings
from pathlib import Path

import numpy as np

from webbflow import dqflags
from webbflow.io.files import atomic_output, atomic_write_text
from webbflow.report import figures, qa

__all__ = ["qa_coron3", "qa_coron_jumps", "qa_exposure", "qa_exposures", "qa_table", "qa_mosaic", "qa_mosaics", "qa_photometry", "qa_timeseries", "qa_truth",
           "qa_truths"]


def _thumbnail(path, png, title, unit):
    from astropy.io import fits

    with fits.open(path) as hdul:
        sci, dq = hdul["SCI"].data, hdul["DQ"].data
    if sci.ndim == 3:  # rateints/calints: the first integration
        sci, dq = sci[0], dq[0]
    figures.product_thumbnail(png, sci, dq, title, unit)


def qa_exposure(rate, row_json, rate_png, cal=None, cal_png=None, mode="imaging"):
    """One exposure's QA row (JSON) and the thumbnails of its rate and (when given) cal product.

    Parameters
    ----------
    rate : str or Path
        The rate (or rateints) product.
    row_json : str or Path or None
        Where the row of :func:`webbflow.report.qa.exposure_qa` goes (with ``mode`` added).
    rate_png : str or Path
        The rate thumbnail (DN/s, DQ overlaid).
    cal, cal_png : str or Path, optional
        The cal product and its thumbnail (MJy/sr, DQ overlaid).
    mode : str
        The exposure's mode (e.g. ``imaging``), recorded in the row.

    Returns
    -------
    dict
        The row.
    """
    row = {"mode": mode, **qa.exposure_qa(rate, cal)}
    if row_json is not None:
        atomic_write_text(row_json, json.dumps(row, indent=1, sort_keys=True) + "\n")
    _thumbnail(rate, rate_png, f"{row['exposure']} rate", "DN/s")
    if cal is not None and cal_png is not None:
        _thumbnail(cal, cal_png, f"{row['exposure']} cal", "MJy/sr")
    return row


def _root(path):
    """The exposure's root name of a product path (``<root>_<suffix>.fits``)."""
    return Path(path).name.rsplit("_", 1)[0]


def qa_exposures(rates, cals, rate_dir, cal_dir, rows_json, out_html, out_csv, mode="imaging"):
    """Every exposure of a mode: QA rows, thumbnails (``<dir>/<filter>/<root>_{rate,cal}.png``) and the table.

    One job for all of a mode's exposures: a figure takes ~0.4 s once matplotlib is loaded, a
    job of its own ~2 s more (the interpreter, snakemake's script preamble, the imports).

    Parameters
    ----------
    rates : list of str or Path
        The exposures' rate products.
    cals : list of str or Path
        Their cal products, in the same order (empty when the mode makes none).
    rate_dir, cal_dir : str or Path
        Folders the rate and cal thumbnails go to (created; ``cal_dir`` stays empty without cals).
    rows_json : str or Path
        All rows, as a JSON list (see :func:`qa_exposure`).
    out_html, out_csv : str or Path
        The table (:func:`qa_table`).
    mode : str
        The mode (recorded in the rows).

    Returns
    -------
    list of dict
        The rows.
    """
    cals = list(cals) or [None] * len(rates)
    if len(cals) != len(rates) or any(c is not None and _root(c) != _root(r) for r, c in zip(rates, cals)):
        raise ValueError("qa_exposures: rates and cals must name the same exposures in the same order")
    rows = []
    for rate, cal in zip(rates, cals):
        row = {"mode": mode, **qa.exposure_qa(rate, cal)}
        for product, folder, unit in ((rate, rate_dir, "DN/s"), (cal, cal_dir, "MJy/sr")):
            if product is None:
                continue
            suffix = "rate" if product is rate else "cal"
            png = Path(folder) / row["filter"].lower() / f"{_root(rate)}_{suffix}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            _thumbnail(product, png, f"{row['exposure']} {suffix}", unit)
        rows.append(row)
    Path(cal_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(rows_json, json.dumps(rows, indent=1, sort_keys=True) + "\n")
    qa_table(rows, out_html, out_csv)
    return rows


def _fmt(value, digits=3):
    return "" if value is None else f"{value:.{digits}g}"


def qa_table(rows, out_html, out_csv=None):
    """Collect exposure QA rows into one HTML table (and a CSV with the same columns).

    Parameters
    ----------
    rows : list of dict, or of str or Path
        The rows of :func:`qa_exposure`, or the JSON files holding them.
    out_html : str or Path
        A self-contained HTML page (shown in the report).
    out_csv : str or Path, optional
        The same table as CSV, one row per exposure (1/f values joined with ``;``).
    """
    data = [r if isinstance(r, dict) else json.loads(Path(r).read_text()) for r in rows]
    data = sorted(data, key=lambda r: (r["filter"], r["exposure"]))
    steps = []
    for row in data:
        steps += [k for k in row["steps"] if k not in steps]
    columns = ["exposure", "filter", "detector", "subarray", "jump %", "saturated %", "DO_NOT_USE %",
               "median rate (DN/s)", "median cal (MJy/sr)", "1/f per output (DN/s)", "white-noise level (DN/s)"]
    table = []
    for row in data:
        table.append([row["exposure"], row["filter"], row["detector"], row["subarray"],
                      f"{100 * row['jump_fraction']:.3f}", f"{100 * row['saturated_fraction']:.3f}",
                      f"{100 * row['do_not_use_fraction']:.3f}", _fmt(row["median_rate"], 4),
                      _fmt(row["median_cal"], 4), "; ".join(_fmt(v) for v in row["one_over_f"]),
                      "; ".join(_fmt(v) for v in row["one_over_f_white"])]
                     + [row["steps"].get(k, "") for k in steps])
    header = columns + steps
    if out_csv is not None:
        with atomic_output(out_csv) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(table)
    # Step statuses as one mark each, so that the table fits a screen (the CSV keeps the words).
    short = {"COMPLETE": "\u2713", "SKIPPED": "skip"}
    cells = "\n".join(
        "<tr>" + "".join(f'<td class="{_status_class(v)}" title="{html.escape(str(v))}">'
                         f'{html.escape(short.get(v, str(v)))}</td>' for v in r) + "</tr>"
        for r in table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    mode = html.escape(", ".join(sorted({r["mode"] for r in data})))
    atomic_write_text(out_html, f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>QA per exposure ({mode})</title>
<style>
body {{ font-family: sans-serif; font-size: 12px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }}
th {{ background: #eee; }}
td:first-child {{ text-align: left; font-family: monospace; }}
td.complete {{ color: #176b1d; }}
td.skipped {{ color: #777; }}
td.other {{ color: #b00; font-weight: bold; }}
</style></head><body>
<h3>QA per exposure ({mode}, {len(data)} exposures)</h3>
<p>Fractions of science pixels with the DQ flag in the rate product. 1/f per output: robust scatter
of the row medians per amplifier output (sources masked); the white-noise level is what uncorrelated
noise alone would give. S_* columns: step statuses of the rate and cal products (&#10003; COMPLETE, skip SKIPPED).</p>
<table><thead><tr>{head}</tr></thead><tbody>
{cells}
</tbody></table></body></html>
""")


def _status_class(value):
    if value == "COMPLETE":
        return "complete"
    if value == "SKIPPED":
        return "skipped"
    return "other" if value in ("FAILED", "INCOMPLETE") else ""


def _read_mosaic(i2d, cat):
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(i2d) as hdul:
        sci, wht = hdul["SCI"].data, hdul["WHT"].data
        filt = hdul[0].header.get("FILTER", "")
    return sci, wht, Table.read(cat), str(filt)


def qa_mosaic(i2d, cat, png, product=None):
    """The preview of one mosaic (i2d) with its catalog overlaid.

    Parameters
    ----------
    i2d, cat : str or Path
        The association's i2d product and ECSV catalog.
    png : str or Path
        The preview to write.
    product : str, optional
        The association's product name (the title; the i2d's name by default).
    """
    sci, wht, table, _ = _read_mosaic(i2d, cat)
    name = product or Path(i2d).name.removesuffix("_i2d.fits")
    figures.mosaic_preview(png, sci, wht, table, f"{name}: {len(table)} sources")


def qa_mosaics(i2ds, cats, out_dir):
    """:func:`qa_mosaic` of several associations: ``<out_dir>/<product>_preview.png`` each (one job per mode)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for i2d, cat in zip(i2ds, cats, strict=True):
        product = Path(i2d).name.removesuffix("_i2d.fits")
        qa_mosaic(i2d, cat, Path(out_dir) / f"{product}_preview.png", product=product)


def qa_truths(i2ds, cats, truth, out_dir, crf_dirs=None):
    """:func:`qa_truth` of several associations: ``<out_dir>/<product>_truth.{png,json}`` each
    (``crf_dirs``: each association's crf folder, for the per-exposure residuals)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    crf_dirs = crf_dirs or [None] * len(i2ds)
    for i2d, cat, crf_dir in zip(i2ds, cats, crf_dirs, strict=True):
        product = Path(i2d).name.removesuffix("_i2d.fits")
        crfs = sorted(Path(crf_dir).glob("*_crf.fits")) if crf_dir else None
        qa_truth(i2d, cat, truth, Path(out_dir) / f"{product}_truth.png", Path(out_dir) / f"{product}_truth.json",
                 product=product, crfs=crfs)


def qa_truth(i2d, cat, truth, png, out_json=None, product=None, max_sep=0.3, min_snr=100.0, crfs=None):
    """Astrometric and photometric residuals of a mosaic's catalog against the sky truth (the demo).

    Parameters
    ----------
    i2d, cat : str or Path
        The association's i2d product and ECSV catalog.
    truth : str or Path
        The truth table (``ra``, ``dec``, ``type``, ``flux_<filter>`` in Jy).
    png : str or Path
        The residual plots to write.
    out_json : str or Path, optional
        The summary numbers (``n``, ``offset_mas``, ``rms_mas``, ``median_flux_ratio``).
    product : str, optional
        The association's product name (the title).
    max_sep, min_snr : float
        Matching radius (arcsec) and S/N cut (:func:`webbflow.report.truth.match_stars`).
    crfs : list of str or Path, optional
        The association's crf files: adds each exposure's aligned-WCS residuals
        (:func:`webbflow.report.truth.exposure_residuals`) to the figure and, as ``exposures``,
        to the summary.

    Returns
    -------
    dict
        The residuals (:func:`webbflow.report.truth.truth_residuals`), with ``exposures`` when
        ``crfs`` are given.
    """
    from astropy.table import Table

    from webbflow.report.truth import exposure_residuals, truth_residuals

    sci, wht, table, filt = _read_mosaic(i2d, cat)
    residuals = truth_residuals(table, Table.read(truth), wht, filt, max_sep=max_sep, min_snr=min_snr)
    exposures = exposure_residuals(crfs, truth) if crfs else None
    if exposures is not None:
        residuals["exposures"] = exposures
    name = product or Path(i2d).name.removesuffix("_i2d.fits")
    figures.residual_plots(png, residuals, f"{name} against the truth", exposures)
    if out_json is not None:
        summary = {k: v for k, v in residuals.items() if not isinstance(v, np.ndarray)}
        atomic_write_text(out_json, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return residuals


def _baseline(flux):
    """Out-of-transit level: the median of the first and last fifth of the curve (the baseline a TSO
    schedules around the event); the whole curve's median when it is too short."""
    flux = np.asarray(flux, float)
    k = len(flux) // 5
    edges = np.r_[flux[:k], flux[-k:]] if k >= 2 else flux
    level = np.nanmedian(edges) if np.isfinite(edges).any() else 1.0
    return level if level else 1.0


def _one_over_f_tables(paths, times):
    """detector1's 1/f QA tables of the segments, on the time axis: ``time`` (nints), ``before`` and
    ``one_over_f`` (nints, namps: the ratio to white noise before and after ROEBA) and ``roeba``."""
    from astropy.table import Table, vstack

    tables = [Table.read(p) for p in paths]
    roeba = all(t.meta.get("roeba", False) for t in tables)
    table = vstack(tables, metadata_conflicts="silent")
    ints = np.unique(np.asarray(table["integration"]))
    amps = np.unique(np.asarray(table["amplifier"]))
    shape = (ints.size, amps.size)
    before, after = np.full(shape, np.nan), np.full(shape, np.nan)
    i = np.searchsorted(ints, table["integration"])
    a = np.searchsorted(amps, table["amplifier"])
    before[i, a], after[i, a] = table["ratio_before"], table["ratio_after"]
    return {"time": np.array([times.get(int(n), np.nan) for n in ints]), "before": before, "one_over_f": after,
            "roeba": roeba, "amplifiers": amps}


def qa_timeseries(whtlt, calints, rateints, png, product=None, truth=None, trace=None, drift=None, onef=None):
    """The QA figure of one time-series association (:func:`webbflow.report.figures.timeseries_panels`).

    Parameters
    ----------
    whtlt : str or Path
        The association's white-light curve (ECSV).
    calints, rateints : list of str or Path
        Its segments' calints and rateints, in segment order.
    png : str or Path
    product : str, optional
        Title (default: from the ECSV name).
    truth : str or Path, optional
        The simulator's ``transit.ecsv`` (``int_mid_MJD_UTC``, ``white_flux``), drawn when given.
    trace : str or Path, optional
        The association's ``trace.ecsv`` (row and width per integration): two more panels.
    drift : str or Path, optional
        The simulator's ``drift.ecsv`` (``int_mid_MJD_UTC``, ``dy``), drawn beside the measured row.
    onef : list of str or Path, optional
        The segments' 1/f QA tables from detector1
        (:func:`webbflow.stages.detector1.one_over_f_table`): the 1/f panel then shows each
        amplifier before and after ROEBA.  Without them it shows the 1/f left in the rateints.

    Returns
    -------
    dict
        Numbers shown: ``rms`` (point-to-point, relative), ``jump_fraction`` (mean), ``one_over_f`` (mean ratio;
        after ROEBA) and, with ``onef``, ``one_over_f_before``.
    """
    from astropy.io import fits
    from astropy.table import Table

    curve = Table.read(whtlt)
    flux = np.asarray(curve["whitelight_flux"], float)
    data = {"time": np.asarray(curve["MJD_UTC"], float), "flux": flux / _baseline(flux)}
    if truth is not None and Path(truth).exists():
        t = Table.read(truth)
        true = np.interp(data["time"], np.asarray(t["int_mid_MJD_UTC"], float), np.asarray(t["white_flux"], float))
        # normalised as the measured curve, so the two overlay without a fit
        data["truth"] = true / _baseline(true)
    with fits.open(calints[0]) as hdul:
        cube = hdul["SCI"].data
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            image = np.nanmedian(cube, axis=0)
        wavelength = np.nanmedian(hdul["WAVELENGTH"].data, axis=0)
    times, jumps, ratios, numbered = [], [], [], {}
    tables = [p for p in (onef or []) if Path(p).exists()]
    for path in rateints:
        with fits.open(path) as hdul:
            h, sci, dq, err = hdul[0].header, hdul["SCI"].data, hdul["DQ"].data, hdul["ERR"].data
            slices = qa.amplifier_slices(sci.shape[-1], int(h.get("NOUTPUTS", 4) or 4), int(h.get("SUBSTRT1", 1)))
            int_times = hdul["INT_TIMES"].data
            times.extend(np.asarray(int_times["int_mid_MJD_UTC"], float)[:sci.shape[0]])
            numbered.update(zip(np.asarray(int_times["integration_number"]).tolist(),
                                np.asarray(int_times["int_mid_MJD_UTC"], float).tolist()))
            if tables:  # detector1 measured the 1/f before and after ROEBA: no need to measure it here
                jumps.extend(qa.flag_fraction(dq[i], dqflags.JUMP_DET) for i in range(sci.shape[0]))
                continue
            # the trace is static: rows through it differ from the rest in every integration, which
            # is structure, not 1/f; the change from the segment's median image is what 1/f moves
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
                static = np.nanmedian(np.where((dq & dqflags.DO_NOT_USE) == 0, sci, np.nan), axis=0)
            for i in range(sci.shape[0]):
                jumps.append(qa.flag_fraction(dq[i], dqflags.JUMP_DET))
                residual, white = qa.one_over_f_residual(sci[i] - static, dq[i], slices, err[i])
                ratios.append(np.asarray(residual) / np.asarray(white))
    per_int = {"time": np.asarray(times), "jump": np.asarray(jumps), "one_over_f": np.asarray(ratios)}
    if tables:
        per_int["onef"] = _one_over_f_tables(tables, numbered)
        ratios = per_int["onef"]["one_over_f"]
        per_int["one_over_f"] = ratios
    rows = None
    if trace is not None and Path(trace).exists():
        tr = Table.read(trace)
        rows = {"time": np.asarray(tr["MJD_UTC"], float), "y": np.asarray(tr["trace_y"], float),
                "width": np.asarray(tr["trace_width"], float)}
        if drift is not None and Path(drift).exists():
            d = Table.read(drift)
            rows["truth_dy"] = np.interp(rows["time"], np.asarray(d["int_mid_MJD_UTC"], float),
                                         np.asarray(d["dy"], float))
    figures.timeseries_panels(png, data, image, wavelength, per_int,
                              product or Path(whtlt).name.removesuffix("_whtlt.ecsv"), trace=rows)
    rms = figures.point_to_point_rms(data["flux"])
    numbers = {"rms": rms, "jump_fraction": float(np.mean(jumps)) if jumps else float("nan"),
               "one_over_f": float(np.nanmean(per_int["one_over_f"])) if len(ratios) else float("nan")}
    if "onef" in per_int:
        numbers["one_over_f_before"] = float(np.nanmean(per_int["onef"]["before"]))
    return numbers



def qa_photometry(phot, png, product=None, truth=None, centroid_truth=None):
    """The QA figure of one imaging time series (:func:`webbflow.report.figures.photometry_panels`).

    Parameters
    ----------
    phot : str or Path
        The association's ``_phot.ecsv`` (tso3's tso_photometry).
    png : str or Path
    product : str, optional
        Title (default: from the ECSV name).
    truth : str or Path, optional
        The simulator's ``transit.ecsv`` (``int_mid_MJD_UTC``, ``white_flux``), drawn when given.
    centroid_truth : str or Path, optional
        The simulator's ``centroid.ecsv`` (``int_mid_MJD_UTC``, ``x``, ``y``), drawn beside the centroids.

    Returns
    -------
    dict
        Numbers shown: ``rms`` (point-to-point, relative) and, with ``centroid_truth``, ``centroid_rms``
        (pixels, against the injected track).
    """
    from astropy.table import QTable, Table

    table = QTable.read(phot)
    time = np.asarray(table["MJD"], float)
    net = table["net_aperture_sum"]
    flux = np.asarray(getattr(net, "value", net), float)
    curve = {"time": time, "flux": flux / _baseline(flux)}
    if truth is not None and Path(truth).exists():
        t = Table.read(truth)
        true = np.interp(time, np.asarray(t["int_mid_MJD_UTC"], float), np.asarray(t["white_flux"], float))
        curve["truth"] = true / _baseline(true)

    def column(name):
        if name not in table.colnames:
            return np.full(len(table), np.nan)
        return np.asarray(getattr(table[name], "value", table[name]), float)

    centroid = {"time": time, "x": column("centroid_x"), "y": column("centroid_y"),
                "width_x": column("psf_width_x"), "width_y": column("psf_width_y"),
                "aperture_x": column("aperture_x"), "aperture_y": column("aperture_y")}
    numbers = {"rms": figures.point_to_point_rms(curve["flux"])}
    if centroid_truth is not None and Path(centroid_truth).exists():
        c = Table.read(centroid_truth)
        ct = np.asarray(c["int_mid_MJD_UTC"], float)
        centroid["truth_x"] = np.interp(time, ct, np.asarray(c["x"], float))
        centroid["truth_y"] = np.interp(time, ct, np.asarray(c["y"], float))
        numbers["centroid_rms"] = float(np.sqrt(np.nanmean((centroid["x"] - centroid["truth_x"]) ** 2
                                                           + (centroid["y"] - centroid["truth_y"]) ** 2)))
    figures.photometry_panels(png, {"time": time, "flux": flux, "unit": str(getattr(net, "unit", ""))}, curve,
                              centroid, product or Path(phot).name.removesuffix("_phot.ecsv"),
                              radius_scan=table.meta.get("radius_scan"))
    return numbers


def _true_companion_xy(truth, meta):
    """The truth's companion in the north-up KLIP image (star at ``center_x/y``, east left)."""
    from astropy.table import Table

    row = Table.read(truth, format="ascii.ecsv")[0]
    r = float(row["separation"]) / float(meta["pixel_scale_arcsec"])
    pa = np.radians(float(row["position_angle"]))
    return float(meta["center_x"]) - r * np.sin(pa), float(meta["center_y"]) + r * np.cos(pa)


def qa_coron3(psfsubs, i2d, shifts, png, product=None, klipsub=None, contrast=None, companions=None, truth=None,
              psfmask=None):
    """The QA figure of one coron3 association (:func:`webbflow.report.figures.coron3_panels`).

    Parameters
    ----------
    psfsubs : list of str or Path
        The science exposures' ``_psfsub.fits`` (one panel each: the mean over integrations).
    i2d : str or Path
        The association's ``_i2d.fits`` (the combined panel when there is no ``klipsub``).
    shifts : str or Path
        ``_psfshifts.ecsv`` (align_refs' shift of every PSF integration on each science exposure).
    png : str or Path
    product : str, optional
        Title (default: from the i2d name).
    klipsub, contrast, companions : str or Path, optional
        The beyond-jwst products: the north-up sector KLIP cube (its deepest finite plane is the
        combined panel), ``_contrast.ecsv``, ``_companions.ecsv`` (marked in green).
    truth : str or Path, optional
        The simulator's ``companion.ecsv`` (marked with a black circle; needs ``klipsub``).
    psfmask : str or Path, optional
        The association's PSFMASK reference (coron3's): shown as the first panel with the star's pointed
        position, the first science exposure's XREF_SCI/YREF_SCI (the mask centre, or the filter's point
        along a bar), and its t² = 0.5 contour drawn over the psfsub panels.

    Returns
    -------
    dict
        ``offset_pix``: measured minus true position of the companion nearest the truth (pixels), when
        both are known.
    """
    from astropy.table import QTable, Table
    from stdatamodels.jwst import datamodels

    rolls, star = [], None
    for path in psfsubs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with datamodels.open(str(path)) as model:
                roll = model.meta.wcsinfo.roll_ref
                if star is None and model.meta.wcsinfo.siaf_xref_sci is not None:
                    star = (model.meta.wcsinfo.siaf_xref_sci - 1.0, model.meta.wcsinfo.siaf_yref_sci - 1.0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    image = np.nanmean(np.asarray(model.data, float), axis=0)
        rolls.append((f"roll {roll:.1f}°" if roll is not None else Path(path).name[:25], image))
    numbers, combined, meta = {}, None, None
    table = QTable.read(companions) if companions else None
    curve = QTable.read(contrast) if contrast else None
    meta = (table.meta if table is not None else curve.meta if curve is not None else None)
    if klipsub:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with datamodels.open(str(klipsub)) as model:
                cube = np.asarray(model.data, float)
        finite = [k for k in range(cube.shape[0]) if np.isfinite(cube[k]).any()]
        plane = finite[-1] if finite else 0
        nb = (meta or {}).get("numbasis", [])
        combined = {"image": cube[plane], "label": f"sector KLIP, north up (KL {nb[plane] if plane < len(nb) else plane})"}
        if meta:  # the star and 1.5x the farthest companion (or 40 px) around it
            far = max([40.0] + [1.5 * float(np.hypot(r["x"].value - meta["center_x"], r["y"].value - meta["center_y"]))
                                for r in (table if table is not None else [])])
            combined["zoom"] = (float(meta["center_x"]), float(meta["center_y"]), far)
        if table is not None and len(table):
            combined["measured"] = [(float(r["x"].value), float(r["y"].value)) for r in table]
        if truth and meta:
            combined["truth"] = [_true_companion_xy(truth, meta)]
            if combined.get("measured"):
                tx, ty = combined["truth"][0]
                d = [np.hypot(x - tx, y - ty) for x, y in combined["measured"]]
                numbers["offset_pix"] = float(min(d))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with datamodels.open(str(i2d)) as model:
                combined = {"image": np.asarray(model.data, float), "label": "i2d (jwst's klip, both rolls)"}
    contrast_panel = None
    if curve is not None:
        contrast_panel = {"separation": np.asarray(curve["separation"].value),
                          "curves": {c.removeprefix("contrast_").replace("kl", "KL "): np.asarray(curve[c])
                                     for c in curve.colnames if c.startswith("contrast_kl")}}
        if table is not None:
            contrast_panel["companions"] = [(float(r["separation"].value), float(r["contrast"])) for r in table]
    mask_panel = None
    if psfmask:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with datamodels.PsfMaskModel(str(psfmask)) as model:
                ins = model.meta.instrument
                mask_panel = {"image": np.asarray(model.data, float), "label": f"{ins.coronagraph} {ins.filter}",
                              "star": star if star is not None else ((model.data.shape[1] - 1) / 2.0,
                                                                     (model.data.shape[0] - 1) / 2.0)}
    s = Table.read(shifts, format="ascii.ecsv")
    figures.coron3_panels(png, rolls, combined, contrast_panel,
                          {"science": list(s["science"]), "psf_integration": np.asarray(s["psf_integration"]),
                           "dx": np.asarray(s["dx"], float), "dy": np.asarray(s["dy"], float)},
                          product or Path(i2d).name.removesuffix("_i2d.fits"), psfmask=mask_panel)
    return numbers


JUMP_LINES = {"recommended": "preset (dark skipped, pseudo refpix rows)", "jwst": "jwst 3.0 line (dark on)"}
"""Stage-1 lines of the coronagraphy jump figure and their legends."""


def qa_coron_jumps(uncals, rateints, references, lines, png, table, title="coronagraphy"):
    """The JUMP_DET fraction of each coronagraphic exposure under two stage-1 lines (NC-CI01).

    Each line's detector1 runs up to jump on the uncal, with the references of the exposure's detector1
    job (:func:`webbflow.stages.detector1.jump_fraction`: no ramp fit, nothing written; ~0.3 s on a
    320 × 320 × 2 × 5 exposure); the workflow's own rateints gives a third column, which equals the line
    the run used.

    Parameters
    ----------
    uncals, rateints : list of str or Path
        The exposures' uncal files and the workflow's rateints products (same order).
    references : list of dict
        reftype -> path, each exposure's detector1 references.
    lines : dict or str
        line name (``recommended``, ``jwst``) -> detector1 step parameters (or their JSON).
    png, table : str or Path
        The figure (:func:`webbflow.report.figures.jump_fraction_bars`) and its numbers (ECSV: one row per
        exposure, columns ``rootname``, ``nints``, ``jump_<line>`` and ``jump_rateints``, fractions 0-1 of
        the integrations' pixels).
    title : str

    Returns
    -------
    astropy.table.Table
        The table written.
    """
    from astropy.io import fits
    from astropy.table import Table

    from webbflow.stages.detector1 import jump_fraction

    if isinstance(lines, str):
        lines = json.loads(lines)
    rows = []
    for uncal, product, refs in zip(uncals, rateints, references, strict=True):
        with fits.open(product) as hdul:
            flagged = (hdul["DQ"].data & dqflags.JUMP_DET) != 0
        # per integration, then over them: the same sums as jump_fraction's
        row = {"rootname": _root(product), "nints": flagged.shape[0],
               "jump_rateints": float(np.mean(np.mean(flagged, axis=(1, 2))))}
        for line, params in lines.items():
            row[f"jump_{line}"] = float(np.mean(jump_fraction(uncal, refs, params)))
        rows.append(row)
    out = Table(rows=rows, names=list(rows[0]) if rows else ["rootname"])
    out.meta["comments"] = [("webbflow: fraction of the rateints pixels (all integrations) with JUMP_DET under each"
                             " stage-1 line; jump_rateints: in the workflow's own rateints (the line it ran with)")]
    with atomic_output(table) as tmp:
        out.write(tmp, format="ascii.ecsv", overwrite=True)
    # program + observation + visit ... exposure: the science rolls and the reference's dither points apart
    figures.jump_fraction_bars(png, [f"o{r['rootname'][7:10]} e{r['rootname'][20:25]}" for r in rows],
                               {JUMP_LINES.get(line, line): [r[f"jump_{line}"] for r in rows] for line in lines},
                               f"{title}: jump flags with and without the dark (NC-CI01)",
                               product=[r["jump_rateints"] for r in rows])
    return out
