"""Quality-assessment numbers of one exposure's products, as pure functions of their arrays and headers.

The numbers shown per exposure in the workflow's report (``snakemake --report``):

- ``jump_fraction``: the fraction of science pixels whose DQ has ``JUMP_DET`` (a cosmic ray or
  other jump was found in some group of some integration);
- ``saturated_fraction``: the same for ``SATURATED``;
- ``median_rate``: the median of SCI over the pixels without ``DO_NOT_USE`` (DN/s for a rate);
- ``one_over_f``: per amplifier output, the robust scatter (1.4826 x MAD) of the row medians of
  SCI, sources and flagged pixels masked.  NIRCam reads each output along rows, so 1/f noise left
  after the reference-pixel correction shows as row-to-row offsets within an output; white noise
  alone gives about ``one_over_f_white`` (the median ERR over the square root of the pixels per row,
  times 1.2533 for a median), so a ratio well above 1 means correlated (1/f) noise remains;
- ``steps``: the status of every step (the products' ``S_*`` keywords).

Reference pixels (``REFERENCE_PIXEL``) are not science pixels and are left out of every fraction.
"""

import numpy as np

from webbflow import dqflags

__all__ = ["AMPLIFIER_WIDTH", "amplifier_slices", "flag_fraction", "median_rate", "one_over_f_residual",
           "step_statuses", "exposure_qa"]

AMPLIFIER_WIDTH = 512
"""Columns per NIRCam amplifier output in a full-frame (2048-column) read with four outputs."""

MAD_TO_SIGMA = 1.4826
MEDIAN_EFFICIENCY = 1.2533  # sqrt(pi/2): the noise of a median of n Gaussian samples over that of their mean


def _science(dq):
    """Pixels that are not reference pixels."""
    return (np.asarray(dq) & dqflags.REFERENCE_PIXEL) == 0


def flag_fraction(dq, flag):
    """Fraction of science pixels with ``flag`` set.

    Parameters
    ----------
    dq : array_like of int
        A DQ array (2-D, or 3-D per integration: the fraction is then over all integrations).
    flag : int
        The bit(s) to count (e.g. ``dqflags.JUMP_DET``).

    Returns
    -------
    float
        Flagged science pixels over all science pixels (0 when there are none).
    """
    dq = np.asarray(dq)
    science = _science(dq)
    n = int(science.sum())
    return float(((dq & flag) != 0)[science].sum() / n) if n else 0.0


def _good(sci, dq):
    return np.isfinite(sci) & ((np.asarray(dq) & dqflags.DO_NOT_USE) == 0)


def median_rate(sci, dq):
    """Median of ``sci`` over the pixels without ``DO_NOT_USE`` (NaN when there are none)."""
    good = _good(sci, dq)
    return float(np.median(sci[good])) if good.any() else float("nan")


def amplifier_slices(ncols, noutputs=4, xstart=1):
    """Column slices of an image's amplifier outputs.

    Parameters
    ----------
    ncols : int
        Columns of the image (``SUBSIZE1``).
    noutputs : int
        ``NOUTPUTS``: 4 for a full-frame read (and the full-width subarrays), 1 for a subarray read
        through one output.
    xstart : int
        ``SUBSTRT1``: the image's first column on the detector (1-based), as the four outputs
        of a full-frame read meet at detector columns 512, 1024 and 1536.

    Returns
    -------
    list of slice
        One slice of image columns per output the image covers (one slice for ``noutputs == 1``).
    """
    if noutputs <= 1:
        return [slice(0, ncols)]
    first = xstart - 1
    edges = sorted({0, ncols} | {b - first for b in range(AMPLIFIER_WIDTH, 4 * AMPLIFIER_WIDTH, AMPLIFIER_WIDTH)
                                  if 0 < b - first < ncols})
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _mad_sigma(values):
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def one_over_f_residual(sci, dq, slices, err=None, nsigma=3.0, min_pixels=8):
    """Row-to-row scatter per amplifier output: the 1/f noise left in a rate image.

    Parameters
    ----------
    sci, dq : ndarray
        The rate image and its DQ (2-D).
    slices : list of slice
        Column slices of the outputs (:func:`amplifier_slices`).
    err : ndarray, optional
        The rate's ERR: gives the white-noise expectation of the same statistic.
    nsigma : float
        Pixels further than ``nsigma`` robust sigmas above the output's median (sources) are masked.
    min_pixels : int
        Rows with fewer good pixels in the output are left out.

    Returns
    -------
    residual : list of float
        Per output, 1.4826 x MAD of the row medians (NaN when fewer than three rows are usable).
    white : list of float
        Per output, what white noise alone would give: 1.2533 x median(ERR) / sqrt(good pixels per
        row) (NaN without ``err``).
    """
    good_all = _good(sci, dq)
    residual, white = [], []
    for cols in slices:
        data, good = sci[:, cols], good_all[:, cols]
        if good.sum() < 3:
            residual.append(float("nan"))
            white.append(float("nan"))
            continue
        values = data[good]
        centre, sigma = np.median(values), _mad_sigma(values)
        # Sources bias row medians up; masking above nsigma (not below) keeps the sky's noise symmetric
        # enough for a median while removing stars and galaxies.
        good = good & (data < centre + nsigma * max(sigma, np.finfo(np.float32).tiny))
        counts = good.sum(axis=1)
        rows = counts >= min_pixels
        medians = np.array([np.median(data[r][good[r]]) for r in np.flatnonzero(rows)])
        residual.append(_mad_sigma(medians) if medians.size >= 3 else float("nan"))
        if err is None or medians.size < 3:
            white.append(float("nan"))
        else:
            noise = np.median(err[:, cols][good])
            white.append(float(MEDIAN_EFFICIENCY * noise / np.sqrt(np.median(counts[rows]))))
    return residual, white


def step_statuses(header):
    """Step keyword -> status (``COMPLETE``/``SKIPPED``) from a product's primary header (``S_*``)."""
    return {k: str(header[k]) for k in header if k.startswith("S_") and k != "S_REGION"}


def exposure_qa(rate, cal=None):
    """The QA row of one exposure.

    Parameters
    ----------
    rate : str or Path
        The exposure's rate product (or rateints: fractions are then over all integrations, the
        median and 1/f residual of the first integration).
    cal : str or Path, optional
        Its cal product: its step statuses join the row, its median (MJy/sr) too.

    Returns
    -------
    dict
        ``exposure``, ``filter``, ``detector``, ``exp_type``, ``subarray``, ``noutputs``,
        ``jump_fraction``, ``saturated_fraction``, ``do_not_use_fraction``, ``median_rate``
        (DN/s), ``one_over_f`` and ``one_over_f_white`` (DN/s per output), ``median_cal``
        (MJy/sr or None) and ``steps`` (keyword -> status, both products).
    """
    from astropy.io import fits

    with fits.open(rate) as hdul:
        primary = hdul[0].header
        sci = hdul["SCI"].data.astype(np.float64)
        dq = hdul["DQ"].data
        err = hdul["ERR"].data.astype(np.float64)
        steps = step_statuses(primary)
    # rateints: the fractions over every integration; the images' statistics of the first one.
    image, image_dq, image_err = (sci[0], dq[0], err[0]) if sci.ndim == 3 else (sci, dq, err)
    noutputs = int(primary.get("NOUTPUTS", 4))
    slices = amplifier_slices(image.shape[1], noutputs, int(primary.get("SUBSTRT1", 1)))
    residual, white = one_over_f_residual(image, image_dq, slices, image_err)
    row = {
        "exposure": str(primary.get("FILENAME", "")).rsplit("_", 1)[0],
        "filter": str(primary.get("FILTER", "")), "detector": str(primary.get("DETECTOR", "")),
        "exp_type": str(primary.get("EXP_TYPE", "")), "subarray": str(primary.get("SUBARRAY", "")),
        "noutputs": noutputs,
        "jump_fraction": flag_fraction(dq, dqflags.JUMP_DET),
        "saturated_fraction": flag_fraction(dq, dqflags.SATURATED),
        "do_not_use_fraction": flag_fraction(dq, dqflags.DO_NOT_USE),
        "median_rate": median_rate(image, image_dq),
        "one_over_f": residual, "one_over_f_white": white,
        "median_cal": None,
        "steps": steps,
    }
    if cal is not None:
        with fits.open(cal) as hdul:
            row["median_cal"] = median_rate(hdul["SCI"].data.astype(np.float64), hdul["DQ"].data)
            row["steps"] = {**steps, **step_statuses(hdul[0].header)}
    return row
