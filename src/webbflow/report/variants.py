"""Parameter variants side by side (config ``variants``): per exposure and variant, the numbers that
tell parameter sets apart, a table (HTML, CSV, JSON) and a figure for the report.

Per exposure and variant, from its rate product (the variant's own or the main tree's, shared):

- ``jump_fraction``: science pixels with ``JUMP_DET`` (:func:`webbflow.report.qa.flag_fraction`);
- ``one_over_f``: the mean over amplifier outputs of the row-median scatter of the rate, sources
  masked (:func:`webbflow.report.qa.one_over_f_residual`), and ``one_over_f_white``, what white
  noise alone gives for it.

With the demo's truth (``truth/<root>_truth_rate.fits``, the simulated rate without noise), over the
science pixels without ``DO_NOT_USE``:

- ``rate_noise_truth``: 1.4826 x MAD of rate - truth (DN/s), and ``err_median``, the median ERR the
  pipeline states for the same pixels (their ratio is ~1 when ERR describes the scatter);
- ``rate_bias_truth``: the median of rate - truth (DN/s);
- ``outlier_fraction_truth``: the fraction of those pixels more than 5 ERR off the truth (a cosmic
  ray left in the ramp by a high jump threshold shows here);
- ``one_over_f_truth``: the row-median scatter of rate - truth per output (mean over outputs): the
  1/f left, free of the scene.
"""

import csv
import html
import json
from pathlib import Path

import numpy as np

from webbflow import dqflags
from webbflow.io.files import atomic_output, atomic_write_text
from webbflow.report import figures, qa

__all__ = ["TRUTH_RATE_SUFFIX", "METRICS", "variant_metrics", "summarise", "qa_variants"]

TRUTH_RATE_SUFFIX = "_truth_rate.fits"
"""The demo's true rate of an exposure: ``<demo>/truth/<root>_truth_rate.fits`` (webbflow.simulate)."""

OUTLIER_NSIGMA = 5.0

METRICS = {
    # key: (column title, scale for display, format digits)
    "jump_fraction": ("jump %", 100.0, 4),
    "one_over_f": ("1/f, rows (DN/s)", 1.0, 3),
    "one_over_f_white": ("white level (DN/s)", 1.0, 3),
    "rate_noise_truth": ("rate - truth, robust sigma (DN/s)", 1.0, 4),
    "err_median": ("median ERR (DN/s)", 1.0, 4),
    "rate_bias_truth": ("rate - truth, median (DN/s)", 1.0, 3),
    "outlier_fraction_truth": (f"> {OUTLIER_NSIGMA:g} ERR off truth %", 100.0, 3),
    "one_over_f_truth": ("1/f of rate - truth (DN/s)", 1.0, 3),
}
"""The numbers of a row, with the table's column titles (fractions shown in %)."""


def _nanmean(values):
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def variant_metrics(rate, truth=None):
    """The comparison numbers of one rate product.

    Parameters
    ----------
    rate : str or Path
        A rate product (2-D).
    truth : str or Path, optional
        The simulated true rate of the same exposure (DN/s, same shape): adds the ``*_truth`` numbers.

    Returns
    -------
    dict
        ``jump_fraction``, ``one_over_f``, ``one_over_f_white`` and, with ``truth``,
        ``rate_noise_truth``, ``err_median``, ``rate_bias_truth``, ``outlier_fraction_truth``,
        ``one_over_f_truth`` (see the module's docstring).
    """
    from astropy.io import fits

    with fits.open(rate) as hdul:
        primary = hdul[0].header
        sci = hdul["SCI"].data.astype(np.float64)
        dq = hdul["DQ"].data
        err = hdul["ERR"].data.astype(np.float64)
    if sci.ndim != 2:
        raise ValueError(f"{rate}: a rate image (2-D) is compared, not a {sci.ndim}-D product")
    slices = qa.amplifier_slices(sci.shape[1], int(primary.get("NOUTPUTS", 4)), int(primary.get("SUBSTRT1", 1)))
    residual, white = qa.one_over_f_residual(sci, dq, slices, err)
    row = {"jump_fraction": qa.flag_fraction(dq, dqflags.JUMP_DET), "one_over_f": _nanmean(residual),
           "one_over_f_white": _nanmean(white)}
    if truth is None:
        return row
    true = fits.getdata(truth).astype(np.float64)
    if true.shape != sci.shape:
        raise ValueError(f"{truth}: shape {true.shape} is not that of {rate} {sci.shape}")
    diff = sci - true
    good = (np.isfinite(diff) & np.isfinite(err) & (err > 0)
            & ((dq & (dqflags.DO_NOT_USE | dqflags.REFERENCE_PIXEL)) == 0))
    if not good.any():
        return {**row, **{k: float("nan") for k in METRICS if k.endswith("_truth") or k == "err_median"}}
    values = diff[good]
    centre = np.median(values)
    row.update(rate_noise_truth=float(qa.MAD_TO_SIGMA * np.median(np.abs(values - centre))),
               err_median=float(np.median(err[good])), rate_bias_truth=float(centre),
               outlier_fraction_truth=float(np.mean(np.abs(values) > OUTLIER_NSIGMA * err[good])),
               one_over_f_truth=_nanmean(qa.one_over_f_residual(np.where(good, diff, np.nan), dq, slices)[0]))
    return row


def summarise(rows):
    """One row per variant (in first-seen order): the mean of each number over its exposures.

    Parameters
    ----------
    rows : list of dict
        Rows of :func:`variant_metrics` with ``variant``, ``exposure`` and ``own`` (the product is
        the variant's own, not the main tree's).

    Returns
    -------
    list of dict
        ``variant``, ``exposures``, ``own`` (how many of its rates it computed itself) and the mean
        of every number of :data:`METRICS` its rows have (NaNs ignored).
    """
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        summary = {"variant": name, "exposures": len(mine), "own": sum(bool(r["own"]) for r in mine)}
        summary.update({k: _nanmean([r[k] for r in mine]) for k in METRICS if k in mine[0]})
        out.append(summary)
    return out


def _cell(value, scale, digits):
    return "" if value is None or not np.isfinite(value) else f"{value * scale:.{digits}g}"


def _write_table(summary, rows, overrides, out_html, out_csv):
    keys = [k for k in METRICS if k in rows[0]]
    with atomic_output(out_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["variant", "exposure", "own", *keys])
        writer.writerows([[r["variant"], r["exposure"], int(bool(r["own"]))] + [r[k] for k in keys] for r in rows])
    head = "".join(f"<th>{html.escape(t)}</th>" for t in
                   ["variant", "overrides", "rates computed / exposures", *(METRICS[k][0] for k in keys)])
    body = "\n".join(
        "<tr>" + f"<td>{html.escape(s['variant'])}</td>"
        + f"<td class=\"o\">{html.escape(json.dumps(overrides.get(s['variant'], {}), sort_keys=True))}</td>"
        + f"<td>{s['own']} / {s['exposures']}</td>"
        + "".join(f"<td>{_cell(s[k], *METRICS[k][1:])}</td>" for k in keys) + "</tr>" for s in summary)
    atomic_write_text(out_html, f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Variants side by side</title>
<style>
body {{ font-family: sans-serif; font-size: 12px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }}
th {{ background: #eee; }}
td:first-child, td.o {{ text-align: left; font-family: monospace; }}
</style></head><body>
<h3>Variants side by side ({len(summary)} parameter sets, {summary[0]['exposures']} exposures each)</h3>
<p>Means over the exposures of each variant's rate products ("main": the main config; a variant whose
detector1 parameters equal the main ones shares its rates, and computes 0 of them). Jump %: science
pixels with JUMP_DET. 1/f: row-median scatter per amplifier output, sources masked, beside what white noise
alone gives. Against the demo's truth (when it exists): the robust sigma and median of rate - truth, the
pipeline's median ERR for comparison, the pixels more than {OUTLIER_NSIGMA:g} ERR off, and the row-median
scatter of rate - truth (the 1/f left, free of the scene). Per exposure: variants.csv.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></body></html>
""")


def _figure(summary, rows, png):
    keys = [k for k in ("jump_fraction", "rate_noise_truth", "outlier_fraction_truth", "one_over_f_truth",
                        "one_over_f") if k in rows[0]][:4]
    fig = figures._figure(4.0 * len(keys), 3.4)
    names = [s["variant"] for s in summary]
    exposures = list(dict.fromkeys(r["exposure"] for r in rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        title, scale, _ = METRICS[key]
        for j, name in enumerate(names):
            values = {r["exposure"]: r[key] * scale for r in rows if r["variant"] == name}
            ax.plot(range(len(exposures)), [values.get(e, np.nan) for e in exposures], "o", ms=4, alpha=0.8,
                    label=name, color=f"C{j}")
            ax.axhline(summary[j][key] * scale, color=f"C{j}", lw=1)
        ax.set_xlabel("exposure (index in variants.csv)")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    figures._save(fig, png)


def qa_variants(rates, labels, out_html, out_csv, out_json, png, truths=(), overrides=None):
    """The report's comparison of the variants: numbers per exposure and variant, their table and figure.

    Parameters
    ----------
    rates : list of str or Path
        Rate products, one per entry of ``labels``.
    labels : list of (str, str, bool)
        Per rate: its variant ("main" for the main config), its exposure's root name, and whether the
        variant computed it itself (False: the main tree's product, shared).
    out_html, out_csv, out_json, png : str or Path
        The summary table (one row per variant), the rows per exposure (CSV and JSON), the figure.
    truths : list of str or Path, optional
        The true rate of each exposure, in the order of the first variant's rates (empty: no truth).
    overrides : dict, optional
        variant -> its overrides as written (shown in the table).

    Returns
    -------
    list of dict
        The summary, one row per variant.
    """
    if len(rates) != len(labels):
        raise ValueError(f"{len(rates)} rates for {len(labels)} labels")
    truth_of = dict(zip([root for _, root, _ in labels], truths)) if truths else {}
    rows = [{"variant": variant, "exposure": root, "own": bool(own), **variant_metrics(rate, truth_of.get(root))}
            for rate, (variant, root, own) in zip(rates, labels)]
    summary = summarise(rows)
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json.dumps({"summary": summary, "rows": rows}, indent=1, sort_keys=True) + "\n")
    _write_table(summary, rows, overrides or {}, out_html, out_csv)
    _figure(summary, rows, png)
    return summary
