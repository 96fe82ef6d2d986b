"""extract_1d box extraction of a time series (jwst 3.0, dispersion along rows), with its JSON reference.

jwst's box extraction, as it runs on a NIRCam grism TSO cutout (``dispaxis`` 1, no source-position
shift, no aperture correction):

1. The aperture is a profile of weights in [0, 1]: rows ``ystart..ystop`` (inclusive, partial
   weights at non-integer limits), or pairs of polynomials ``src_coeff`` whose values are pixel
   *edges* (each pair gives ``[lower + 0.5, upper - 0.5]``); columns outside
   ``ceil(xstart)..floor(xstop)`` and pixels without a finite wavelength get weight 0.
2. The background (when ``bkg_coeff`` is given) is fitted per column over its own profile:
   ``median`` (whole pixels only; variance 1.2² x that of the mean) or ``poly`` of ``bkg_order``
   (``mean`` is ``poly`` 0), after an optional boxcar of ``smoothing_length`` along the rows.
3. Per column: FLUX = Σ w (data - b), NPIXELS = Σ w over finite pixels, SURF_BRIGHT =
   FLUX / NPIXELS, BACKGROUND = Σ w b / NPIXELS, variances Σ w² VAR plus the background's; the
   wavelength is the weighted mean of the aperture's; columns with no finite wavelength are dropped.
   After photom the sums are MJy/sr and FLUX is converted to Jy with the pixel area.

The arithmetic follows jwst's dtypes and order of operations (float32 data and background,
float64 weights and sums), so the spectra agree bit for bit.

Beyond jwst, :func:`optimal_extract` (``steps.extract_1d.method: optimal``) weights the same
background-subtracted aperture by Horne's (1986) profile from the median frame and rejects
outlying pixels (cosmic rays) instead of summing them; a NaN pixel no longer lowers FLUX.
"""

import json
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np

from webbflow import dqflags
from webbflow.io.errors import ReferenceFileError

__all__ = ["BoxAperture", "aperture_from_reference", "box_extract", "box_profile", "extract", "optimal_extract",
           "read_extract1d_json", "spatial_profile"]

log = logging.getLogger(__name__)

_APERTURE_KEYS = {"id", "region_type", "spectral_order", "dispaxis", "xstart", "xstop", "ystart", "ystop",
                  "src_coeff", "bkg_coeff", "bkg_fit", "bkg_order", "smoothing_length", "extract_width",
                  "independent_var", "use_source_posn", "position_offset", "extraction_type"}


def read_extract1d_json(path):
    """The ``apertures`` of a JSON EXTRACT1D reference, checked.

    Parameters
    ----------
    path : path-like
        The reference file (jwst reads only the JSON form for NIRCam).

    Returns
    -------
    dict
        The parsed reference, ``{"apertures": [...], ...}``.

    Raises
    ------
    ReferenceFileError
        Not JSON, no ``apertures`` list, or an aperture with a key of the wrong type; the
        message names the file and the aperture.
    """
    fix = "give an EXTRACT1D reference in jwst's JSON form ({\"apertures\": [{\"id\": \"ANY\", ...}]})"
    try:
        with open(path) as fh:
            ref = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReferenceFileError(path, f"not a readable JSON extract1d reference ({exc})", fix) from None
    apertures = ref.get("apertures") if isinstance(ref, dict) else None
    if not isinstance(apertures, list) or not apertures:
        raise ReferenceFileError(path, "no \"apertures\" list", fix)
    for k, aper in enumerate(apertures):
        where = f"aperture {k} ({aper.get('id', '?') if isinstance(aper, dict) else '?'})"
        if not isinstance(aper, dict):
            raise ReferenceFileError(path, f"{where} is not an object", fix)
        for key in ("xstart", "xstop", "ystart", "ystop", "bkg_order", "smoothing_length", "extract_width"):
            value = aper.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ReferenceFileError(path, f"{where}: {key}={value!r} is not a number", fix)
        for key in ("src_coeff", "bkg_coeff"):
            value = aper.get(key)
            if value is None:
                continue
            ok = (isinstance(value, list) and len(value) % 2 == 0 and all(
                isinstance(c, list) and c and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in c) for c in value))
            if not ok:
                raise ReferenceFileError(path, f"{where}: {key} must be pairs of lower and upper coefficient "
                                         f"lists, e.g. [[21], [31]]", fix)
        if aper.get("bkg_fit") not in (None, "poly", "mean", "median"):
            raise ReferenceFileError(path, f"{where}: bkg_fit={aper['bkg_fit']!r} is not poly, mean or median",
                                     fix)
    return ref


@dataclass
class BoxAperture:
    """Box-extraction parameters of one spectral order (jwst's ``extract_params``, box case).

    Attributes
    ----------
    xstart, xstop, ystart, ystop : float
        0-based inclusive limits (the whole cutout by default).
    src_coeff, bkg_coeff : list of list of float or None
        Pairs of lower/upper polynomial coefficients (pixel edges) of the source and background
        regions, in the ``independent_var`` (``pixel`` or ``wavelength``).
    extract_width : float or None
        Width centred on the ystart/ystop middle when ``src_coeff`` is None.
    subtract_background : bool
    bkg_fit : {"poly", "median"} or None
    bkg_order : int
    smoothing_length : int
        Odd boxcar length along the dispersion for the background image (0: none).
    independent_var : str
    """

    xstart: float
    xstop: float
    ystart: float
    ystop: float
    src_coeff: list = None
    bkg_coeff: list = None
    extract_width: float = None
    subtract_background: bool = False
    bkg_fit: str = None
    bkg_order: int = 0
    smoothing_length: int = 0
    independent_var: str = "pixel"


def _smoothing_length(value):
    n = value
    if n != int(n):
        n = int(np.round(n))
        log.warning("smoothing length must be an integer: rounded to %d", n)
    if n != 0:
        if n < 3:
            log.warning("smoothing length %s is not allowed: set to 0", n)
            n = 0
        elif n % 2 == 0:
            n -= 1
            log.warning("even smoothing lengths are not supported: rounded down to %d", n)
    return int(n)


def aperture_from_reference(ref, shape, spectral_order=1, slit_name="ANY", *, subtract_background=None,
                            bkg_fit=None, bkg_order=None, smoothing_length=None):
    """The box aperture of ``spectral_order`` from an EXTRACT1D reference (or the whole cutout).

    As jwst's ``get_extract_parameters``: the first ``target`` aperture whose id is ``ANY`` or
    ``slit_name`` and whose order matches; missing limits default to the cutout; a ``bkg_coeff``
    turns background subtraction on unless ``subtract_background`` is False; ``bkg_fit: mean``
    is ``poly`` of order 0.  Keyword arguments, when not None, override the reference (the
    step parameters of the same names).

    Parameters
    ----------
    ref : dict or None
        :func:`read_extract1d_json` result; None: no reference, the whole cutout, no background.
    shape : tuple of int
        The cutout's shape; its last two entries are (ny, nx).
    spectral_order : int
    slit_name : str

    Returns
    -------
    BoxAperture

    Raises
    ------
    ValueError
        When the reference has no aperture for this slit and order.
    """
    ny, nx = shape[-2:]
    if ref is None:
        return BoxAperture(0, nx - 1, 0, ny - 1)
    for aper in ref["apertures"]:
        if aper.get("id") in (None, "dummy") or not (aper["id"] in (slit_name, "ANY") or slit_name == "ANY"):
            continue
        if aper.get("region_type", "target") != "target":
            continue
        if aper.get("spectral_order", spectral_order) not in (spectral_order, "ANY"):
            continue
        subtract = subtract_background
        if aper.get("bkg_coeff") is not None and subtract is None:
            subtract = True
        fit, order = None, aper.get("bkg_order", 0) if bkg_order is None else bkg_order
        if subtract:
            fit = aper.get("bkg_fit", "poly") if bkg_fit is None else bkg_fit
            if fit == "mean":  # jwst maps only the step parameter so, and fails on a reference's "mean"
                fit, order = "poly", 0
        return BoxAperture(
            xstart=aper.get("xstart", 0), xstop=aper.get("xstop", nx - 1),
            ystart=aper.get("ystart", 0), ystop=aper.get("ystop", ny - 1),
            src_coeff=aper.get("src_coeff"), bkg_coeff=aper.get("bkg_coeff"),
            extract_width=aper.get("extract_width"), subtract_background=bool(subtract), bkg_fit=fit,
            bkg_order=order,
            smoothing_length=_smoothing_length(aper.get("smoothing_length", 0) if smoothing_length is None
                                               else smoothing_length),
            independent_var=str(aper.get("independent_var", "pixel")).lower(),
        )
    raise ValueError(f"the extract1d reference has no target aperture for {slit_name} order {spectral_order}")


def _set_weights(profile, idx, lower, upper, partial):
    profile[(idx >= lower) & (idx <= upper)] = 1.0
    if partial:
        for w in (idx - lower + 1, upper - idx + 1):
            take = (w > 0) & (w < 1) & (profile < w)
            profile[take] = w[take]


def _poly(coeff, x):
    # astropy's Polynomial1D (Horner, constant first); a constant is c0 * ones_like(x)
    if len(coeff) == 1:
        return np.float64(coeff[0]) * np.ones_like(x)
    out = np.float64(coeff[-1])
    for c in coeff[-2::-1]:
        out = np.float64(c) + out * x
    return out


def box_profile(shape, aperture, wavelength, coefficients="src_coeff"):
    """Aperture weights (ny, nx) of the source (``src_coeff``) or background (``bkg_coeff``) region.

    Returns
    -------
    profile : ndarray
        float64 weights in [0, 1].
    limits : (float, float)
        Mean lower and upper row limits (inclusive), for the EXTRXSTR/EXTRYSTR keywords.
    """
    yidx, xidx = np.mgrid[: shape[0], : shape[1]]
    partial = not (coefficients == "bkg_coeff" and aperture.bkg_fit == "median")
    profile = np.full(shape, 0.0)
    coeffs = getattr(aperture, coefficients)
    if coeffs is not None:
        ival = wavelength if aperture.independent_var.startswith("wavelength") else xidx.astype(np.float32)
        lower_limit = upper_limit = None
        for lo, hi in zip(coeffs[0::2], coeffs[1::2], strict=True):
            low = _poly(lo, ival) + 0.5
            high = _poly(hi, ival) - 0.5
            _set_weights(profile, yidx, low, high, partial)
            mlo, mhi = np.mean(low), np.mean(high)
            lower_limit = mlo if lower_limit is None else min(lower_limit, mlo)
            upper_limit = mhi if upper_limit is None else max(upper_limit, mhi)
    elif aperture.extract_width is not None:
        middle = (aperture.ystart + aperture.ystop) / 2.0
        lower_limit = middle - (aperture.extract_width - 1.0) / 2.0
        upper_limit = lower_limit + aperture.extract_width - 1
        _set_weights(profile, yidx, lower_limit, upper_limit, True)
    else:
        lower_limit, upper_limit = aperture.ystart, aperture.ystop
        _set_weights(profile, yidx, lower_limit, upper_limit, True)
    profile[:, : int(np.ceil(aperture.xstart))] = 0
    profile[:, int(np.floor(aperture.xstop)) + 1:] = 0
    return profile, (lower_limit, upper_limit)


def _column_nanmedian(work):
    """``np.nanmedian(work, axis=0)`` of a 2-D float array, to the bit.

    Below 600 rows numpy takes this median through a masked array (``np.ma.median``: ~6 ms for a
    64 x 2048 SUBGRISM64 cutout, most of a TSO integration's box extraction); these are its steps
    on plain arrays (~2 ms): the same argsort of the values with the NaNs as +inf (so equal values, ±0
    included, keep its order), the low and high middle values of each column's finite ones, their
    sum (``ndarray.sum``) halved in the array's dtype; NaN for an all-NaN column.
    """
    if work.shape[0] >= 600:  # numpy partitions each column instead: its own result
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning, message="All-NaN")
            return np.nanmedian(work, axis=0)
    nan = np.isnan(work)
    # each column sorted as a contiguous row: numpy sorts every 1-D slice alike, a third faster so
    order = np.ascontiguousarray(np.where(nan, np.inf, work).T).argsort(axis=1).T
    counts = work.shape[0] - np.count_nonzero(nan, axis=0)
    high = counts // 2
    low = np.where(counts % 2 == 1, high, high - 1)
    # a NaN among the middle values lies behind +inf data (np.ma.median returns +inf there)
    middle = np.take_along_axis(work, np.take_along_axis(order, np.stack([low, high]), axis=0), axis=0)
    middle[np.isnan(middle)] = np.inf
    median = middle.sum(axis=0)  # as np.ma.sum adds them (-0.0 twice gives +0.0)
    np.true_divide(median, 2.0, casting="unsafe", out=median)
    median[counts == 0] = np.nan
    return median


def _background_median(work, bg_profile):
    """``_column_nanmedian(work)`` of an image whose pixels outside the background region
    (``bg_profile == 0``) are NaN, sorting only the rows that hold some of it (~a third of a
    SUBGRISM64 cutout's), to the bit.

    The rows left out are NaN in every column: they sort behind the column's values, so the middle
    values are the same and so is every median but a zero one (a tie of -0.0 and +0.0 may be taken
    in another order); the columns whose median is zero are taken again with every row.
    """
    rows = np.flatnonzero((bg_profile != 0).any(axis=1))
    if work.shape[0] >= 600 or rows.size in (0, work.shape[0]):  # (numpy's own way from 600 rows)
        return _column_nanmedian(work)
    median = _column_nanmedian(work[rows])
    zero = np.flatnonzero(median == 0)
    if zero.size:
        median[zero] = _column_nanmedian(work[:, zero])
    return median


def _background(image, profile, var_rn, var_ph, var_flat, bg_profile, weights, aperture):
    """Background image (1, nx) or (ny, nx) and the variances it adds to the sums (1, nx)."""
    work = image.copy()
    if aperture.smoothing_length > 1:
        from astropy.convolution import convolve

        kernel = np.ones((1, aperture.smoothing_length)) / aperture.smoothing_length
        work = convolve(work, kernel, boundary="extend")
    if aperture.bkg_fit == "median":
        work[bg_profile == 0] = np.nan
        bkg_2d = _background_median(work, bg_profile)[np.newaxis, :]
        npix = np.sum(profile, axis=0)
        variance = var_rn + var_ph + var_flat
        wgt = np.isfinite(image) * np.isfinite(variance) * (bg_profile != 0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning, message="invalid value")
            pixwgt = wgt / np.sum(wgt, axis=0)[np.newaxis, :]
        scale = 1.2 ** 2 * npix ** 2
        var = [scale * np.array([np.nansum(v * pixwgt ** 2, axis=0)]) for v in (var_rn, var_ph, var_flat)]
        return bkg_2d, var
    if aperture.bkg_fit != "poly" or aperture.bkg_order < 0 or aperture.bkg_order != int(aperture.bkg_order):
        raise ValueError("bkg_fit must be 'median' or 'poly' with an integer bkg_order >= 0")
    order = int(aperture.bkg_order)
    # per-column least squares in y in [-1, 1] over the background pixels (jwst build_coef_matrix)
    y = np.linspace(-1, 1, work.shape[0])
    coefmatrix = np.ones((work.shape[1], work.shape[0], order + 1))
    for i in range(1, order + 1):
        coefmatrix[..., i] = coefmatrix[..., i - 1] * y[np.newaxis, :]
    used = (bg_profile.T != 0) & np.isfinite(work.T)
    target = work.T.copy()
    target[~used] = 0
    masked = coefmatrix * used[:, :, np.newaxis]
    masked *= weights.T[:, :, np.newaxis]
    target *= weights.T
    matrix = np.einsum("lji,ljk->lik", masked, masked)
    vec = np.einsum("lji,lj->li", masked, target)
    ok = np.linalg.cond(matrix) < 1e10
    cov = np.zeros(matrix.shape)
    cov[ok] = np.linalg.inv(matrix[ok])
    pixwgt = weights.T[:, :, np.newaxis] * np.einsum("ijk,ilj->ilk", cov, masked)
    bkg_mat = np.sum(np.swapaxes(coefmatrix, 0, 1) * profile[:, :, np.newaxis], axis=0)
    total = np.sum(bkg_mat[:, np.newaxis, :] * pixwgt, axis=-1)
    var = [np.array([np.nansum(v.T * total ** 2, axis=1)]) for v in (var_rn, var_ph, var_flat)]
    coefs = np.einsum("ijk,ij->ik", cov, vec)
    return np.sum(coefs[:, np.newaxis, :] * coefmatrix, axis=-1).T, var


def _extract_image(image, var_rn, var_ph, var_flat, profile, bg_profile, aperture):
    """jwst's extract1d (box) of one 2-D image: sums per column, before unit conversion."""
    ncol = image.shape[1]
    variance = var_rn + var_ph + var_flat
    weights = np.isfinite(variance) * np.isfinite(image)
    if bg_profile is not None and aperture.subtract_background:
        bkg_2d, bvar = _background(image, profile, var_rn, var_ph, var_flat, bg_profile, weights, aperture)
        image_sub = image - bkg_2d
    else:
        bkg_2d, bvar = None, [np.zeros((1, ncol)) for _ in range(3)]
        image_sub = image.copy()
    w = profile.copy()
    w[~np.isfinite(image_sub)] = 0
    image_sub[w == 0] = 0
    flux = np.array([np.sum(image_sub * w, axis=0)])
    npixels = np.array([np.sum(w, axis=0)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        warnings.filterwarnings("ignore", "invalid value", RuntimeWarning)
        fvar = [np.array([np.nansum(v * w ** 2, axis=0)]) for v in (var_rn, var_ph, var_flat)]
    if bkg_2d is not None:
        fvar = [f + b for f, b in zip(fvar, bvar)]
        bkg = np.array([np.sum(bkg_2d * w, axis=0)])
        bkg[~np.isfinite(bkg)] = 0.0
    else:
        bkg = np.zeros((1, ncol))
    flux[np.isclose(npixels, 0)] = np.nan
    return flux[0], [f[0] for f in fvar], bkg[0], [b[0] for b in bvar], npixels[0]


SPECTRUM_COLUMNS = ("WAVELENGTH", "FLUX", "FLUX_ERROR", "FLUX_VAR_POISSON", "FLUX_VAR_RNOISE", "FLUX_VAR_FLAT",
                    "SURF_BRIGHT", "SB_ERROR", "SB_VAR_POISSON", "SB_VAR_RNOISE", "SB_VAR_FLAT", "DQ",
                    "BACKGROUND", "BKGD_ERROR", "BKGD_VAR_POISSON", "BKGD_VAR_RNOISE", "BKGD_VAR_FLAT", "NPIXELS")
"""The per-column quantities of an extracted spectrum, in the x1d/x1dints column order."""


def _geometry(cube, wavelength, aperture):
    """The aperture weights, background region and mean wavelength per column (see :func:`box_extract`)."""
    shape = cube.data.shape[-2:]
    profile, (lower, upper) = box_profile(shape, aperture, wavelength)
    profile[~np.isfinite(wavelength)] = 0.0
    used = np.flatnonzero(np.sum(profile, axis=0) > 0)
    bg_profile = None
    if aperture.subtract_background and aperture.bkg_coeff is not None:
        bg_profile, _ = box_profile(shape, aperture, wavelength, coefficients="bkg_coeff")
    mask = np.isnan(wavelength) | (profile <= 0)
    wave = np.average(np.ma.masked_array(wavelength, mask=mask), weights=np.ma.masked_array(profile, mask=mask),
                      axis=0).filled(np.nan)
    valid = np.isfinite(wave)
    if not valid.any():
        raise ValueError("the extraction aperture holds no pixel with a wavelength")
    limits = {"xstart": int(used[0]) if used.size else None, "xstop": int(used[-1]) if used.size else None,
              "ystart": lower, "ystop": upper}
    nints = cube.data.shape[0]
    out = {name: np.empty((nints, int(valid.sum())), np.uint32 if name == "DQ" else np.float64)
           for name in SPECTRUM_COLUMNS}
    out["WAVELENGTH"][:] = wave[valid]
    return profile, bg_profile, valid, limits, out


def _var_flat(cube, i):
    var_flat = getattr(cube, "var_flat", None)
    if var_flat is not None and var_flat.shape == cube.data.shape:
        return var_flat[i]
    return np.zeros(cube.data.shape[-2:], np.float32)


def _spectrum_row(sum_flux, fvar, background, bvar, npixels, pixar_sr):
    """The :data:`SPECTRUM_COLUMNS` of one integration from its sums (jwst's unit conversions)."""
    f_rn, f_ph, f_flat = fvar
    b_rn, b_ph, b_flat = bvar
    npix = np.where(npixels > 0.0, npixels, 1.0)
    npix2 = npix ** 2
    surf = sum_flux / npix
    sb = (f_ph / npix2, f_rn / npix2, f_flat / npix2)
    background = background / npix
    bk = (b_ph / npix2, b_rn / npix2, b_flat / npix2)
    if pixar_sr is not None:
        flux = sum_flux * pixar_sr * 1.0e6
        scale = pixar_sr ** 2 * 1.0e12
        f_ph, f_rn, f_flat = f_ph * scale, f_rn * scale, f_flat * scale
    else:
        flux = sum_flux
    dq = np.zeros(flux.shape, np.uint32)
    dq[np.isnan(flux)] = dqflags.DO_NOT_USE
    return {"FLUX": flux, "FLUX_ERROR": np.sqrt(f_ph + f_rn + f_flat), "FLUX_VAR_POISSON": f_ph,
            "FLUX_VAR_RNOISE": f_rn, "FLUX_VAR_FLAT": f_flat, "SURF_BRIGHT": surf,
            "SB_ERROR": np.sqrt(sb[0] + sb[1] + sb[2]), "SB_VAR_POISSON": sb[0], "SB_VAR_RNOISE": sb[1],
            "SB_VAR_FLAT": sb[2], "DQ": dq, "BACKGROUND": background,
            "BKGD_ERROR": np.sqrt(bk[0] + bk[1] + bk[2]), "BKGD_VAR_POISSON": bk[0],
            "BKGD_VAR_RNOISE": bk[1], "BKGD_VAR_FLAT": bk[2], "NPIXELS": npixels}


def box_extract(cube, wavelength, aperture, *, pixar_sr=None, progress_every=0):
    """Box-extract every integration of a calibrated cutout.

    Parameters
    ----------
    cube : object
        Attributes ``data`` (float32, (nints, ny, nx)), ``var_poisson``, ``var_rnoise`` and
        optionally ``var_flat`` of the same shape (NaNs already matched to DO_NOT_USE).
    wavelength : ndarray
        (ny, nx) wavelengths in µm (NaN where there is none), as the cutout's WAVELENGTH.
    aperture : BoxAperture
    pixar_sr : float or None
        Pixel area in steradians when photom has run (sums in MJy/sr, FLUX in Jy); None: the
        data are in DN/s and stay so.
    progress_every : int
        Log a line every this many integrations (0: never).

    Returns
    -------
    columns : dict
        :data:`SPECTRUM_COLUMNS` name -> (nints, ncols) array, ``ncols`` the columns with a
        finite wavelength (float64; DQ uint32).
    limits : dict
        ``xstart, xstop, ystart, ystop``: the aperture's extent (0-based, inclusive; mean row
        limits for polynomial regions), for the EXTR*STR keywords.
    """
    profile, bg_profile, valid, limits, out = _geometry(cube, wavelength, aperture)
    nints = cube.data.shape[0]
    for i in range(nints):
        sums = _extract_image(cube.data[i], cube.var_rnoise[i], cube.var_poisson[i], _var_flat(cube, i), profile,
                              bg_profile, aperture)
        for name, value in _spectrum_row(*sums, pixar_sr).items():
            out[name][i] = value[valid]
        if progress_every and (i + 1) % progress_every == 0:
            log.info("extract_1d: %d of %d integrations done", i + 1, nints)
    return out, limits


def _running_nanmedian(a, window):
    """Median of each row over ``window`` neighbouring columns (NaNs ignored; shorter at the edges)."""
    if window <= 1:
        return a.copy()
    half = window // 2
    padded = np.pad(a, ((0, 0), (half, window - 1 - half)), constant_values=np.nan)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="All-NaN")
        return np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, window, axis=1), axis=-1)


def spatial_profile(frames, inside, window=7):
    """Horne's (1986) normalised spatial profile of a set of background-subtracted frames.

    Parameters
    ----------
    frames : ndarray
        (nints, ny, nx) background-subtracted data, NaN where a pixel is not to be used.
    inside : ndarray of bool
        (ny, nx) the extraction aperture.
    window : int
        Columns of the running median that smooths each row's fraction along the dispersion.

    Returns
    -------
    ndarray
        (ny, nx) float64 profile: >= 0, zero outside ``inside``, summing to 1 in every column
        that has one (columns whose median frame holds no positive flux take the aperture's
        uniform weights, so they become a box sum).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="All-NaN")
        median = np.nanmedian(frames, axis=0).astype(np.float64)
    median[~inside] = np.nan
    column = np.nansum(median, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(column > 0, median / column, np.nan)
    profile = np.clip(np.nan_to_num(_running_nanmedian(fraction, window), nan=0.0), 0.0, None) * inside
    total = profile.sum(axis=0)
    uniform = inside / np.maximum(inside.sum(axis=0), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, profile / total, uniform)


def optimal_extract(cube, wavelength, aperture, *, pixar_sr=None, sigma=5.0, window=7, max_reject=3,
                    progress_every=0):
    """Optimal extraction (Horne 1986) of every integration of a calibrated cutout.

    The background is fitted and subtracted per integration exactly as :func:`box_extract` does.
    The spatial profile P comes from the median over the cube's integrations of the
    background-subtracted aperture (:func:`spatial_profile`), the same for all of them, so the
    relative photometry of a time series uses one set of weights.  The variance model V of a pixel
    is the median over integrations of its VAR_RNOISE + VAR_POISSON: almost free of the pixel's own
    noise in any one integration, which would otherwise bias the weighted sum low (VAR_FLAT, the
    same in every integration, adds no scatter to a time series and is left out of the weights).
    Per column, f = Σ P M D / V / Σ P² M / V with M excluding NaN and DO_NOT_USE pixels and, up to
    ``max_reject`` times, the pixel deviating most from P f if it lies more than ``sigma`` σ off
    (cosmic rays; Horne's step 8).  Since f = Σ w D with fixed weights w, its variances are Σ w²
    VAR of the integration's own VAR_RNOISE, VAR_POISSON and VAR_FLAT (1 / Σ P² M / V when they
    equal V); the background's variances (BKGD_*, as the box's) enter FLUX's scaled by
    (Σ w / Σ box weights)², exact for a background constant in the column (median or order 0).
    NPIXELS is the aperture's weight sum (f stands for the whole aperture's flux however many
    pixels were masked), SURF_BRIGHT and
    BACKGROUND are as the box's.

    Parameters
    ----------
    cube, wavelength, aperture, pixar_sr, progress_every
        As for :func:`box_extract`; a ``dq`` attribute, when present, adds its DO_NOT_USE pixels
        to the NaNs.
    sigma : float
        Rejection threshold in σ of V.
    window : int
        Running-median length (columns) smoothing the profile along the dispersion.
    max_reject : int
        At most this many pixels rejected per column and integration.

    Returns
    -------
    columns, limits
        As for :func:`box_extract`.
    """
    box, bg_profile, valid, limits, out = _geometry(cube, wavelength, aperture)
    nints, ny, nx = cube.data.shape
    rows = np.flatnonzero((box > 0).any(axis=1))
    sub = slice(int(rows[0]), int(rows[-1]) + 1)
    inside = box[sub] > 0
    dq = getattr(cube, "dq", None)
    frames = np.empty((nints, inside.shape[0], nx), np.float32)
    background = np.zeros(frames.shape, np.float32)
    bvar = np.zeros((3, nints, nx))
    variance = np.empty(frames.shape, np.float32)
    for i in range(nints):
        image, v_rn, v_ph, v_flat = cube.data[i], cube.var_rnoise[i], cube.var_poisson[i], _var_flat(cube, i)
        total_var = v_rn + v_ph + v_flat
        if bg_profile is not None and aperture.subtract_background:
            weights = np.isfinite(total_var) * np.isfinite(image)
            bkg_2d, bv = _background(image, box, v_rn, v_ph, v_flat, bg_profile, weights, aperture)
            background[i] = np.broadcast_to(bkg_2d, (ny, nx))[sub]
            bvar[:, i] = [b[0] for b in bv]
        frames[i] = image[sub] - background[i]
        # the weights' variance leaves VAR_FLAT out: the flat's error is the same in every
        # integration, so it adds no scatter to a time series, and weighting by it (it grows as the
        # signal squared) would flatten the weights towards the box's at the cost of photon noise
        variance[i] = (v_rn + v_ph)[sub]
        variance[i][~np.isfinite(total_var[sub])] = np.nan
        bad = ~np.isfinite(frames[i]) | ~np.isfinite(variance[i]) | ~inside
        if dq is not None:
            bad |= (dq[i][sub] & dqflags.DO_NOT_USE) != 0
        frames[i][bad] = np.nan
        variance[i][bad] = np.nan
    profile = spatial_profile(frames, inside, window)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="All-NaN")
        model_var = np.nanmedian(variance, axis=0).astype(np.float64)
    model_var[~(model_var > 0)] = np.nan
    weight_box = box[sub]
    nbox = np.sum(box, axis=0)
    v_rn_all, v_ph_all = cube.var_rnoise, cube.var_poisson
    rejected = 0
    block = 64
    for i0 in range(0, nints, block):
        i1 = min(nints, i0 + block)
        d = frames[i0:i1].astype(np.float64)
        good = np.isfinite(d) & np.isfinite(model_var) & (profile > 0)
        d[~good] = 0.0
        inv = np.where(good, 1.0 / np.where(np.isfinite(model_var), model_var, 1.0), 0.0)
        for it in range(max_reject + 1):
            w = profile * inv
            den = np.sum(profile * w, axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                f = np.sum(w * d, axis=1) / den
            if it == max_reject:
                break
            z = np.where(good, (d - profile * f[:, None]) ** 2 * inv, -1.0)
            worst = np.argmax(z, axis=1)
            zmax = np.take_along_axis(z, worst[:, None], axis=1)[:, 0]
            hit = zmax > sigma ** 2
            if not hit.any():
                break
            rejected += int(hit.sum())
            n_idx, x_idx = np.nonzero(hit)
            good[n_idx, worst[n_idx, x_idx], x_idx] = False
            inv[n_idx, worst[n_idx, x_idx], x_idx] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            wopt = w / den[:, None, :]
        for i in range(i0, i1):
            k = i - i0
            wk = wopt[k]
            v_flat = _var_flat(cube, i)[sub]
            fvar = [np.nansum(np.where(good[k], v.astype(np.float64), 0.0) * wk ** 2, axis=0)
                    for v in (v_rn_all[i][sub], v_ph_all[i][sub], v_flat)]
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(nbox > 0, np.nansum(wk, axis=0) / nbox, 0.0) ** 2
            flux = f[k].copy()
            flux[~(den[k] > 0)] = np.nan
            # f estimates the flux of the whole aperture whichever pixels were masked: NPIXELS is the
            # aperture's (a lower NPIXELS would tell light-curve code that the column lost flux)
            npixels = np.where(np.isfinite(flux), nbox, 0.0)
            bkg = np.sum(background[i] * weight_box, axis=0)
            fvar = [f + b * scale for f, b in zip(fvar, bvar[:, i])]
            row = _spectrum_row(flux, fvar, bkg, list(bvar[:, i]), npixels, pixar_sr)
            for name, value in row.items():
                out[name][i] = value[valid]
            if progress_every and (i + 1) % progress_every == 0:
                log.info("extract_1d (optimal): %d of %d integrations done", i + 1, nints)
    log.info("extract_1d (optimal): %d pixel(s) rejected above %g sigma", rejected, sigma)
    return out, limits


EXTRACTION_METHODS = ("box", "optimal")
"""``steps.extract_1d.method``: jwst 3.0's box sum, or Horne's optimal extraction (beyond jwst)."""


def extract(cube, wavelength, aperture, *, method="box", optimal_sigma=5.0, pixar_sr=None, progress_every=0):
    """Extract every integration with ``method`` (:func:`box_extract` or :func:`optimal_extract`).

    Parameters
    ----------
    method : {"box", "optimal"}
    optimal_sigma : float
        The optimal extraction's rejection threshold (``sigma``).
    cube, wavelength, aperture, pixar_sr, progress_every
        As for :func:`box_extract`.

    Returns
    -------
    columns, limits
        As for :func:`box_extract`.
    """
    if method == "box":
        return box_extract(cube, wavelength, aperture, pixar_sr=pixar_sr, progress_every=progress_every)
    if method == "optimal":
        return optimal_extract(cube, wavelength, aperture, pixar_sr=pixar_sr, sigma=float(optimal_sigma),
                               progress_every=progress_every)
    raise ValueError(f"extract_1d method {method!r} is not one of {', '.join(EXTRACTION_METHODS)}")
