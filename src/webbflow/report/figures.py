"""The report's figures: small PNGs drawn headless (matplotlib's Agg canvas, no pyplot, no display).

Each function reads nothing: it takes arrays/tables and writes one PNG, so the figures can be drawn
from products in memory as well as from files (:mod:`webbflow.report.jobs` reads the files).
"""

import numpy as np

from webbflow import dqflags

__all__ = ["DQ_OVERLAY", "PANELS_KEY", "binned_rms", "coron3_panels", "jump_fraction_bars", "product_thumbnail", "mosaic_preview",
           "panels_of", "photometry_panels", "point_to_point_rms", "residual_plots", "timeseries_panels"]

DQ_OVERLAY = (
    # (label, bits, RGBA): drawn in this order, the last on top.
    ("DO_NOT_USE", dqflags.DO_NOT_USE, (1.0, 0.85, 0.0, 0.9)),
    ("SATURATED", dqflags.SATURATED, (0.0, 0.75, 1.0, 0.9)),
    ("JUMP_DET", dqflags.JUMP_DET, (1.0, 0.1, 0.1, 0.9)),
)
"""DQ flags painted over the thumbnails, with their colours."""

DPI = 80


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, png, metadata=None):
    from webbflow.io.files import atomic_output

    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", metadata=metadata)


PANELS_KEY = "webbflow-panels"
"""PNG text chunk in which a figure records what its panels show (JSON; :func:`panels_of`)."""


def panels_of(png):
    """The panel summary a figure recorded in its PNG (``PANELS_KEY``), or None.

    Parameters
    ----------
    png : str or Path

    Returns
    -------
    dict or None
        Panel name -> what it shows (titles, the numbers drawn): the figure's data without reading pixels.
    """
    import json

    from PIL import Image

    with Image.open(png) as image:
        text = image.info.get(PANELS_KEY)
    return json.loads(text) if text else None


def _image_summary(image):
    """Shape, finite-pixel count and sum of a panel's image (float64 sum: what a reader recomputes)."""
    good = np.isfinite(image)
    return {"shape": list(image.shape), "finite": int(good.sum()), "sum": float(np.sum(image[good], dtype=float))}


def _stretch(image, good, high=99.5):
    """Asinh-stretched image in [0, 1] (NaN where not ``good``) and its (low, high) limits.

    From 3 robust sigmas below the sky (the median) to the ``high`` percentile, with the asinh knee
    at 3 sigma: the sky's noise stays visible as grey while stars keep their cores.
    """
    values = image[good]
    if values.size == 0:
        return np.full(image.shape, np.nan), (np.nan, np.nan)
    sky = np.median(values)
    sigma = 1.4826 * np.median(np.abs(values - sky))
    lo, hi = sky - 3 * sigma, np.percentile(values, high)
    scale = max(hi - lo, np.finfo(np.float32).tiny)
    soft = float(np.clip(3 * sigma / scale, 1e-4, 0.1))
    out = np.arcsinh(np.clip((image - lo) / scale, 0, 1) / soft) / np.arcsinh(1 / soft)
    return np.where(good, out, np.nan), (lo, hi)


def product_thumbnail(png, sci, dq, title, unit, overlay=DQ_OVERLAY):
    """A rate or cal image (asinh stretch) with its DQ flags painted over it.

    Parameters
    ----------
    png : str or Path
        The PNG to write.
    sci, dq : ndarray
        The image and its DQ (2-D).
    title : str
        The panel's title (the exposure and product).
    unit : str
        The image's unit (DN/s, MJy/sr), for the colour bar.
    overlay : sequence of (label, bits, RGBA)
        The flags to paint; the legend gives each flag's colour and its fraction of pixels.
    """
    from matplotlib.patches import Patch

    sci = np.asarray(sci, np.float64)
    good = np.isfinite(sci) & ((dq & dqflags.DO_NOT_USE) == 0)
    fig = _figure(4.0, 4.4)
    ax = fig.add_axes([0.02, 0.14, 0.96, 0.78])
    stretched, (lo, hi) = _stretch(sci, good)
    ax.imshow(stretched, origin="lower", cmap=_cmap("gray"), vmin=0, vmax=1, interpolation="nearest")
    handles = []
    for label, bits, rgba in overlay:
        flagged = (dq & bits) != 0
        layer = np.zeros(sci.shape + (4,))
        layer[flagged] = rgba
        ax.imshow(layer, origin="lower", interpolation="nearest")
        handles.append(Patch(color=rgba, label=f"{label} {100 * flagged.mean():.2f}%"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=6.5, frameon=False,
               handlelength=1.0, columnspacing=0.8, title=f"asinh {lo:.3g} .. {hi:.3g} {unit}",
               title_fontsize=6.5)
    _save(fig, png)


def _cmap(name):
    import matplotlib

    # no data: a blue-grey, not black (which reads as empty sky)
    return matplotlib.colormaps[name].with_extremes(bad=(0.35, 0.35, 0.45))


def mosaic_preview(png, sci, wht, cat, title):
    """A mosaic (i2d) with its catalog's sources circled.

    Parameters
    ----------
    png : str or Path
        The PNG to write.
    sci, wht : ndarray
        The mosaic and its weight (pixels with ``wht == 0`` have no data).
    cat : astropy.table.Table
        The catalog: ``xcentroid``, ``ycentroid`` (0-based pixels) and, when present,
        ``is_extended`` (extended sources are drawn in orange, point sources in green).
    title : str
        The figure's title.
    """
    from matplotlib.lines import Line2D

    sci = np.asarray(sci, np.float64)
    good = np.isfinite(sci) & (np.asarray(wht) > 0)
    ny, nx = sci.shape
    width = 5.0
    fig = _figure(width, min(max(width * ny / nx, 2.5), 8.0) + 0.5)
    ax = fig.add_axes([0.02, 0.08, 0.96, 0.84])
    ax.imshow(_stretch(sci, good)[0], origin="lower", cmap=_cmap("gray"), vmin=0, vmax=1,
              interpolation="nearest")
    x, y = np.asarray(cat["xcentroid"]), np.asarray(cat["ycentroid"])
    extended = np.asarray(cat["is_extended"], bool) if "is_extended" in cat.colnames else np.zeros(len(cat), bool)
    size = 60 * (max(nx, ny) / 400) ** -1 if max(nx, ny) > 400 else 60
    for mask, colour in ((~extended, "lime"), (extended, "orange")):
        ax.scatter(x[mask], y[mask], s=size, facecolors="none", edgecolors=colour, linewidths=0.8)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    handles = [Line2D([], [], ls="none", marker="o", mfc="none", mec=c, label=f"{lab} ({int(m.sum())})")
               for lab, c, m in (("point source", "lime", ~extended), ("extended", "orange", extended))]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    _save(fig, png)


def residual_plots(png, residuals, title, exposures=None):
    """Astrometric and photometric residuals of a catalog against the truth (two or three panels).

    Parameters
    ----------
    png : str or Path
        The PNG to write.
    residuals : dict
        :func:`webbflow.report.truth.truth_residuals`' result.
    title : str
        The figure's title.
    exposures : list of dict, optional
        :func:`webbflow.report.truth.exposure_residuals`' result: a third panel with each
        exposure's median offset (its aligned WCS against the truth) and rms.
    """
    if exposures:
        fig = _figure(12.0, 3.6)
        left = fig.add_axes([0.055, 0.14, 0.24, 0.66])
        right = fig.add_axes([0.39, 0.14, 0.25, 0.66])
        _exposure_panel(fig.add_axes([0.72, 0.14, 0.24, 0.66]), exposures)
    else:
        fig = _figure(8.0, 3.6)
        left = fig.add_axes([0.08, 0.14, 0.36, 0.66])
        right = fig.add_axes([0.58, 0.14, 0.38, 0.66])
    fig.suptitle(title, fontsize=9)
    dra, ddec, n = residuals["dra"], residuals["ddec"], residuals["n"]
    left.scatter(dra, ddec, s=14, color="tab:blue")
    left.axhline(0, color="0.6", lw=0.6)
    left.axvline(0, color="0.6", lw=0.6)
    lim = max(5.0, 1.15 * float(np.max(np.abs(np.r_[dra, ddec])))) if n else 5.0
    left.set_xlim(-lim, lim)
    left.set_ylim(-lim, lim)
    left.set_aspect("equal")
    left.set_xlabel(r"$\Delta\alpha\cos\delta$ (mas)", fontsize=8)
    left.set_ylabel(r"$\Delta\delta$ (mas)", fontsize=8)
    off = residuals["offset_mas"]
    left.set_title(f"astrometry: {n} stars, median ({off[0]:+.1f}, {off[1]:+.1f}) mas,\n"
                   f"rms {residuals['rms_mas']:.1f} mas, {residuals['scatter_mas']:.1f} about the median",
                   fontsize=7.5)
    flux, ratio = residuals["true_flux"], residuals["flux_ratio"]
    if flux.size:
        mag = -2.5 * np.log10(flux / 3631.0)
        right.scatter(mag, ratio, s=14, color="tab:red")
    right.axhline(1, color="0.6", lw=0.6)
    right.set_xlabel("true AB magnitude", fontsize=8)
    right.set_ylabel("catalog / true flux (aperture total)", fontsize=8)
    right.set_title(f"photometry: {residuals['n_flux']} stars, median ratio {residuals['median_flux_ratio']:.4f}",
                    fontsize=7.5)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
    _save(fig, png)


def _exposure_panel(ax, exposures):
    """Each exposure's median WCS offset from the truth (mas), labelled by its position in the list."""
    off = np.array([e["offset_mas"] for e in exposures], float)
    rms = np.array([e["rms_mas"] for e in exposures], float)
    ax.scatter(off[:, 0], off[:, 1], s=16, color="tab:green")
    for k, (x, y) in enumerate(off, start=1):
        ax.annotate(str(k), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6.5)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)
    finite = np.isfinite(off).all(axis=1)
    lim = max(5.0, 1.15 * float(np.max(np.abs(off[finite])))) if finite.any() else 5.0
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$\Delta\alpha\cos\delta$ (mas)", fontsize=8)
    ax.set_ylabel(r"$\Delta\delta$ (mas)", fontsize=8)
    ax.set_title(f"per exposure (aligned WCS at the true pixels): {len(exposures)} exposures,\n"
                 f"worst median offset {np.nanmax(np.hypot(off[:, 0], off[:, 1])):.1f} mas, "
                 f"worst rms {np.nanmax(rms):.1f} mas", fontsize=7.5)
    ax.tick_params(labelsize=7)


def point_to_point_rms(flux):
    """Robust point-to-point scatter of a light curve: 1.4826 MAD of successive differences / sqrt(2)
    (ingress and egress, a few large differences, do not count)."""
    d = np.diff(np.asarray(flux, float))
    d = d[np.isfinite(d)]
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)) if d.size > 2 else float("nan")


def _one_over_f_panel(ax, onef, t0):
    """detector1's 1/f per amplifier before (dashed) and after (solid) ROEBA, same colour per amplifier."""
    from matplotlib.lines import Line2D

    th = (np.asarray(onef["time"], float) - t0) * 24
    before, after = np.asarray(onef["before"], float), np.asarray(onef["one_over_f"], float)
    colours = [f"C{k}" for k in range(before.shape[1])]
    handles = []
    for k, amp in enumerate(onef["amplifiers"]):
        if onef["roeba"]:
            ax.plot(th, before[:, k], "--", color=colours[k], lw=0.9)
        ax.plot(th, after[:, k], "-", color=colours[k], lw=1)
        handles.append(Line2D([], [], color=colours[k], lw=1,
                              label=f"amp {amp}: {np.nanmedian(before[:, k]):.2f}"
                                    + (f" \u2192 {np.nanmedian(after[:, k]):.2f}" if onef["roeba"] else "")))
    if onef["roeba"]:
        handles += [Line2D([], [], color="0.3", ls="--", lw=0.9, label="before ROEBA"),
                    Line2D([], [], color="0.3", ls="-", lw=1, label="after")]
        ax.set_title("1/f per amplifier before and after ROEBA (row-median scatter / white noise)", fontsize=7.5)
    else:
        ax.set_title("1/f per amplifier (row-median scatter / white noise);\nROEBA off: before = after, "
                     "jwst's refpix output", fontsize=7.5)
    top = np.nanmax(np.r_[before.ravel(), after.ravel(), 1.0])
    ax.set_ylim(0, 1.5 * top)  # room above the curves for the legend
    ax.set_ylabel("ratio (medians in the legend)", fontsize=7)
    ax.legend(handles=handles, fontsize=5.5, frameon=False, ncol=3, loc="upper center")


def _light_curve_panel(ax, curve, t0, label):
    """A normalised light curve (``curve``: ``time``, ``flux``, optional ``truth``, ``model``) against
    hours since ``t0``, its point-to-point rms in the title."""
    hours = (np.asarray(curve["time"]) - t0) * 24
    ax.plot(hours, curve["flux"], "k.", ms=3, label=label)
    if curve.get("truth") is not None:
        ax.plot(hours, curve["truth"], "r-", lw=1, label="truth")
    if curve.get("model") is not None:
        ax.plot(hours, curve["model"], "-", color="tab:orange", lw=1, label="fit")
    rms = point_to_point_rms(curve["flux"])
    ax.set_title(f"{label} (point-to-point rms {rms * 1e6:.0f} ppm)", fontsize=8)
    ax.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
    ax.set_ylabel("relative flux", fontsize=8)
    ax.legend(fontsize=7, frameon=False)


def _panel_box(col, row, height):
    """Axes rectangle of panel (col, row) in a two-column figure ``height`` inches tall (row 0 on top)."""
    h = 0.32 * 6.4 / height
    bottom = 1 - (0.10 * 6.4 / height) - h - row * (h + 0.17 * 6.4 / height)
    return [0.07, bottom, 0.40, h] if col == 0 else [0.55, bottom, 0.42, h]


def binned_rms(residual, sizes):
    """rms of ``residual`` averaged in consecutive bins of each size (NaN with fewer than 4 bins).

    White noise gives rms(1) / sqrt(N); red noise stays above that line.
    """
    residual = np.asarray(residual, float)
    out = []
    for n in sizes:
        nb = residual.size // int(n)
        if nb < 4:
            out.append(np.nan)
            continue
        out.append(float(np.nanstd(np.nanmean(residual[:nb * int(n)].reshape(nb, int(n)), axis=1))))
    return np.array(out)


def _residual(curve, window=9):
    """The light curve minus the truth when given, else minus its running median over ``window``
    integrations (which takes the transit out, and with it red noise slower than the window)."""
    flux = np.asarray(curve["flux"], float)
    if curve.get("truth") is not None:
        return flux - np.asarray(curve["truth"], float), "truth"
    from scipy.ndimage import median_filter

    return flux - median_filter(flux, size=window, mode="nearest"), f"running median of {window}"


def photometry_panels(png, raw, curve, centroid, title, radius_scan=None):
    """An imaging time series (NRC_TSIMAGE ``_phot.ecsv``) at a glance: six panels.

    Parameters
    ----------
    png : str or Path
    raw : dict
        ``time`` (MJD), ``flux`` (net aperture sum) and ``unit``.
    curve : dict
        ``time``, ``flux`` normalised out of transit, optional ``truth`` (as :func:`timeseries_panels`).
    centroid : dict
        ``time``, ``x``, ``y`` (0-based pixels), ``width_x``, ``width_y`` (pixels), optional
        ``truth_x``, ``truth_y`` (the injected track, same times) and ``aperture_x``, ``aperture_y``.
    title : str
    radius_scan : list of dict, optional
        ``radius`` and ``rms_ppm`` (the phot table's ``radius_scan`` meta), drawn beside the rms vs bin size.
    """
    height = 3.2 * 3
    fig = _figure(9.0, height)
    fig.suptitle(title, fontsize=9)
    t0 = float(np.nanmin(raw["time"])) if len(raw["time"]) else 0.0
    hours = (np.asarray(raw["time"], float) - t0) * 24
    axes = []

    ax = fig.add_axes(_panel_box(0, 0, height))
    ax.plot(hours, raw["flux"], "k.", ms=3)
    ax.set_title("net aperture sum per integration", fontsize=8)
    ax.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
    ax.set_ylabel(str(raw.get("unit") or ""), fontsize=8)
    axes.append(ax)
    ax = fig.add_axes(_panel_box(1, 0, height))
    _light_curve_panel(ax, curve, t0, "normalised")
    axes.append(ax)

    for col, axis in enumerate("xy"):
        ax = fig.add_axes(_panel_box(col, 1, height))
        v = np.asarray(centroid[axis], float)
        ref = np.nanmedian(v)
        ax.plot(hours, 1e3 * (v - ref), "k.", ms=3, label="centroid")
        if centroid.get(f"aperture_{axis}") is not None:
            ap = np.asarray(centroid[f"aperture_{axis}"], float)
            ax.plot(hours, 1e3 * (ap - ref), "-", color="tab:blue", lw=0.8, label="aperture")
        if centroid.get(f"truth_{axis}") is not None:
            tv = np.asarray(centroid[f"truth_{axis}"], float)
            err = np.sqrt(np.nanmean((v - tv) ** 2))
            ax.plot(hours, 1e3 * (tv - ref), "r-", lw=1, label=f"injected (rms error {1e3 * err:.1f} mpx)")
        ax.set_title(f"centroid {axis} (median {ref:.3f} px) per integration", fontsize=8)
        ax.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
        ax.set_ylabel("millipixels from the median", fontsize=8)
        ax.legend(fontsize=6.5, frameon=False)
        axes.append(ax)

    ax = fig.add_axes(_panel_box(0, 2, height))
    for axis, colour in (("x", "tab:blue"), ("y", "tab:orange")):
        ax.plot(hours, centroid[f"width_{axis}"], "-", color=colour, lw=1, label=axis)
    ax.set_title("PSF width per integration", fontsize=8)
    ax.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
    ax.set_ylabel("pixels", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    axes.append(ax)

    ax = fig.add_axes(_panel_box(1, 2, height))
    residual, against = _residual(curve)
    sizes = np.unique(np.round(np.logspace(0, np.log10(max(residual.size // 4, 1)), 12)).astype(int))
    rms = binned_rms(residual, sizes)
    ax.loglog(sizes, 1e6 * rms, "ko-", ms=3, lw=1, label="measured")
    if np.isfinite(rms[0]):
        ax.loglog(sizes, 1e6 * rms[0] / np.sqrt(sizes), "--", color="0.5", lw=1, label="white noise")
    ax.set_title(f"rms vs bin size (residual from the {against})", fontsize=8)
    ax.set_xlabel("integrations per bin", fontsize=8)
    ax.set_ylabel("ppm", fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    if radius_scan:
        inset = ax.inset_axes([0.62, 0.52, 0.35, 0.34])
        r = [row["radius"] for row in radius_scan]
        inset.plot(r, [row["rms_ppm"] for row in radius_scan], "o-", color="tab:green", ms=3, lw=1)
        inset.set_title("rms (ppm) per radius (px)", fontsize=6)
        inset.tick_params(labelsize=5.5)
    axes.append(ax)
    for a in axes:
        a.tick_params(labelsize=7)
    _save(fig, png)


def timeseries_panels(png, curve, spectrum2d, wavelength, per_int, title, trace=None):
    """A grism time series at a glance (four panels; six with the trace).

    Parameters
    ----------
    png : str or Path
        The PNG to write.
    curve : dict
        ``time`` (MJD), ``flux`` (white light, normalised), optional ``truth`` (same times).
    spectrum2d : ndarray
        (ny, nx) median over integrations of the first segment's calints cutout.
    wavelength : ndarray
        (nx,) wavelength of each column (µm), for the image's x axis.
    per_int : dict
        ``time`` (MJD, one per integration), ``jump`` (fraction of science pixels flagged JUMP_DET)
        and ``one_over_f`` ((nints, namps) row-to-row scatter over its white-noise expectation);
        optional ``onef``, detector1's measurement before and after ROEBA: ``time``, ``before``
        and ``one_over_f`` ((nints, namps) ratios), ``roeba`` (False: the two are one measurement)
        and ``amplifiers`` (their numbers), drawn instead.
    title : str
    trace : dict, optional
        ``time`` (MJD), ``y`` and ``width`` (rows) of the trace per integration, optional
        ``truth_dy`` (the injected drift, same times): two more panels.
    """
    rows = 3 if trace is not None else 2
    height = 3.2 * rows
    fig = _figure(9.0, height)
    fig.suptitle(title, fontsize=9)

    def box(col, row):  # row 0 at the top; the same margins as the two-row layout
        return _panel_box(col, row, height)

    ax = fig.add_axes(box(0, 0))
    t0 = float(np.nanmin(curve["time"])) if len(curve["time"]) else 0.0
    _light_curve_panel(ax, curve, t0, "white light")
    img = fig.add_axes(box(1, 0))
    good = np.isfinite(spectrum2d)
    lam = np.asarray(wavelength, float)
    extent = [lam[0], lam[-1], -0.5, spectrum2d.shape[0] - 0.5] if lam.size > 1 else None
    img.imshow(_stretch(np.asarray(spectrum2d, float), good)[0], origin="lower", cmap=_cmap("magma"), vmin=0,
               vmax=1, aspect="auto", extent=extent, interpolation="nearest")
    img.set_title("median cutout of the first segment (calints)", fontsize=8)
    img.set_xlabel("wavelength (µm)", fontsize=8)
    img.set_ylabel("row", fontsize=8)
    jumps = fig.add_axes(box(0, 1))
    th = (np.asarray(per_int["time"]) - t0) * 24
    jumps.plot(th, 100 * np.asarray(per_int["jump"]), "-", color="tab:red", lw=1)
    jumps.set_title("pixels flagged JUMP_DET per integration", fontsize=8)
    jumps.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
    jumps.set_ylabel("%", fontsize=8)
    f = fig.add_axes(box(1, 1))
    onef = per_int.get("onef")
    if onef is None:
        ratio = np.asarray(per_int["one_over_f"], float)
        for a in range(ratio.shape[1] if ratio.ndim == 2 else 0):
            f.plot(th, ratio[:, a], "-", lw=1, label=f"output {a + 1}")
        f.set_title("1/f left: row-median scatter / white-noise expectation", fontsize=8)
        f.legend(fontsize=6, frameon=False, ncol=4)
    else:
        _one_over_f_panel(f, onef, t0)
    f.axhline(1, color="0.6", lw=0.6)
    f.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
    axes = [ax, img, jumps, f]
    if trace is not None:
        tt = (np.asarray(trace["time"], float) - t0) * 24
        y = np.asarray(trace["y"], float)
        pos = fig.add_axes(box(0, 2))
        pos.plot(tt, 1e3 * (y - np.nanmedian(y)), "k.", ms=3, label="measured")
        if trace.get("truth_dy") is not None:
            dy = np.asarray(trace["truth_dy"], float)
            pos.plot(tt, 1e3 * (dy - np.nanmedian(dy)), "r-", lw=1, label="injected drift")
            pos.legend(fontsize=7, frameon=False)
        pos.set_title(f"trace row (median {np.nanmedian(y):.3f}) per integration", fontsize=8)
        pos.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
        pos.set_ylabel("millirows from the median", fontsize=8)
        width = fig.add_axes(box(1, 2))
        width.plot(tt, trace["width"], "-", color="tab:blue", lw=1)
        width.set_title("trace width (Gaussian sigma) per integration", fontsize=8)
        width.set_xlabel(f"hours since MJD {t0:.5f}", fontsize=8)
        width.set_ylabel("rows", fontsize=8)
        axes += [pos, width]
    for a in axes:
        a.tick_params(labelsize=7)
    _save(fig, png)


def coron3_panels(png, rolls, combined, contrast, shifts, title, psfmask=None):
    """The coronagraphy QA figure of one coron3 association.

    Parameters
    ----------
    png : str or Path
    rolls : list of (str, 2-D array)
        Label and image of each science exposure's psfsub (mean over its integrations).
    combined : dict
        ``image`` (2-D, north up: the sector KLIP combination, or the i2d), ``label`` and, optional,
        ``truth`` and ``measured``: lists of (x, y) pixels in that image to mark; ``zoom``: (x, y,
        half width) of the region shown.
    contrast : dict or None
        ``separation`` (arcsec) and ``curves``: label -> 5-sigma contrast; optional ``companions``:
        (separation, contrast) pairs drawn as stars.
    shifts : dict
        ``psf_integration``, ``dx``, ``dy`` (pixels) and ``science`` (label per row): align_refs' fit.
    psfmask : dict, optional
        ``image`` (the PSFMASK weights on the subarray: the occulter's t²), ``label`` and ``star``: the
        (x, y) 0-based pixel the target is pointed at (XREF_SCI/YREF_SCI: the mask centre, or the filter's
        point along a bar).  Drawn as the first panel, and its t² = 0.5 contour and the star's point over
        every psfsub panel (same detector frame).

    Notes
    -----
    What each panel shows (image shape, finite pixels and sum, marks, zoom, curves) is written as JSON
    into the PNG's ``PANELS_KEY`` text chunk (:func:`panels_of`), so a test can check the figure's
    data against the products without reading pixels.
    """
    import json

    summary = {"title": title}
    n = max(len(rolls), 1) + (psfmask is not None)
    fig = _figure(3.4 * (n + 1), 7.4)
    top = fig.subfigures(2, 1, height_ratios=[1.1, 1])
    axes = list(np.atleast_1d(top[0].subplots(1, n + 1)))
    if psfmask is not None:
        ax = axes.pop(0)
        mask = np.asarray(psfmask["image"], float)
        ax.imshow(mask, origin="lower", cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.contour(mask, levels=[0.5], colors="orange", linewidths=0.8)
        sx, sy = psfmask["star"]
        ax.plot(sx, sy, "x", color="red", ms=9, mew=1.5)
        ax.set_title(f"PSFMASK {psfmask.get('label', '')} (t², star ×)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        star_value = (float(mask[round(sy), round(sx)])
                      if 0 <= round(sy) < mask.shape[0] and 0 <= round(sx) < mask.shape[1] else None)
        summary["psfmask"] = {**_image_summary(mask), "label": psfmask.get("label", ""),
                              "star": [float(sx), float(sy)], "t2_at_star": star_value,
                              "occulted_fraction": float(np.mean(mask < 0.5))}
    summary["psfsub"] = []
    for ax, (label, image) in zip(axes, rolls):
        good = np.isfinite(image)
        values = image[good]
        lim = np.percentile(np.abs(values), 99.5) if values.size else 1.0
        ax.imshow(image, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        if psfmask is not None and np.shape(psfmask["image"]) == image.shape:
            ax.contour(np.asarray(psfmask["image"], float), levels=[0.5], colors="k", linewidths=0.5, alpha=0.6)
            ax.plot(*psfmask["star"], "x", color="k", ms=7, mew=1.0)
        ax.set_title(f"psfsub {label}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        summary["psfsub"].append({**_image_summary(image), "label": label})
    ax = axes[-1]
    image = combined["image"]
    good = np.isfinite(image)
    values = image[good]
    lim = np.percentile(np.abs(values), 99.5) if values.size else 1.0
    ax.imshow(image, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    for k, (x, y) in enumerate(combined.get("truth", [])):
        ax.plot(x, y, "o", mfc="none", mec="k", ms=14, mew=1.5, label="truth" if k == 0 else None)
    for k, (x, y) in enumerate(combined.get("measured", [])):
        ax.plot(x, y, "+", color="lime", ms=12, mew=1.5, label="measured" if k == 0 else None)
    if combined.get("truth") or combined.get("measured"):
        ax.legend(fontsize=7, loc="lower right")
    if combined.get("zoom"):
        cx, cy, half = combined["zoom"]
        ax.set_xlim(cx - half, cx + half)
        ax.set_ylim(cy - half, cy + half)
    ax.set_title(combined["label"], fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    summary["combined"] = {**_image_summary(image), "label": combined["label"],
                           **{k: [list(map(float, p)) for p in combined.get(k, [])] for k in ("truth", "measured")},
                           "zoom": list(map(float, combined["zoom"])) if combined.get("zoom") else None}
    bottom = top[1].subplots(1, 2)
    top[1].subplots_adjust(bottom=0.18, wspace=0.3)
    ax = bottom[0]
    if contrast:
        for label, curve in contrast["curves"].items():
            ax.plot(contrast["separation"], curve, label=label)
        for sep, con in contrast.get("companions", []):
            ax.plot(sep, con, "r*", ms=10)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        summary["contrast"] = {"separation": [float(v) for v in contrast["separation"]],
                               "curves": {k: [float(v) if np.isfinite(v) else None for v in c]
                                          for k, c in contrast["curves"].items()},
                               "companions": [list(map(float, p)) for p in contrast.get("companions", [])]}
    else:
        ax.text(0.5, 0.5, "no contrast curve (klip.contrast off)", ha="center", va="center", transform=ax.transAxes)
        summary["contrast"] = None
    ax.set_xlabel("separation (arcsec)")
    ax.set_ylabel("5σ contrast")
    ax = bottom[1]
    for name in sorted(set(shifts["science"])):
        rows = np.asarray(shifts["science"]) == name
        label = name.split("_")[0]  # the exposure's program + observation + visit
        ax.plot(shifts["psf_integration"][rows], shifts["dx"][rows], ".-", label=f"dx {label}")
        ax.plot(shifts["psf_integration"][rows], shifts["dy"][rows], "x--", label=f"dy {label}")
    ax.set_xlabel("PSF-reference integration (psfstack plane)")
    ax.set_ylabel("align_refs shift (pixels)")
    ax.legend(fontsize=6)
    summary["shifts"] = {"rows": len(shifts["dx"]), "max_abs": float(np.max(np.abs(np.concatenate(
        [np.asarray(shifts["dx"], float), np.asarray(shifts["dy"], float)])), initial=0.0))}
    fig.suptitle(title, fontsize=9)
    _save(fig, png, metadata={PANELS_KEY: json.dumps(summary)})


def jump_fraction_bars(png, labels, fractions, title, product=None):
    """Grouped bars: the JUMP_DET fraction of each exposure under several stage-1 lines.

    Parameters
    ----------
    png : str or Path
    labels : list of str
        One per exposure (x axis).
    fractions : dict
        line label -> array (one fraction per exposure, 0-1), drawn as percent side by side.
    title : str
    product : array, optional
        The fraction in the workflow's own rateints (one per exposure), drawn as black ticks on top.
    """
    n, k = len(labels), max(len(fractions), 1)
    fig = _figure(max(5.0, 0.9 * n + 2.5), 4.6)
    ax = fig.add_axes([0.1, 0.22, 0.86, 0.5])
    x = np.arange(n)
    width = 0.8 / k
    for i, (label, values) in enumerate(fractions.items()):
        values = 100 * np.asarray(values, float)
        ax.bar(x - 0.4 + (i + 0.5) * width, values, width, label=f"{label} (median {np.median(values):.2f} %)")
    if product is not None:
        ax.plot(x, 100 * np.asarray(product, float), "k_", ms=22, mew=2, label="this run's rateints")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("pixels with JUMP_DET (%)")
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.02), frameon=False)
    fig.suptitle(title, fontsize=9)
    _save(fig, png)
