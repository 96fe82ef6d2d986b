"""source_catalog: segmentation-based catalog of a resampled image, as jwst's ``source_catalog``.

The i2d (MJy/sr) is converted to Jy per pixel with the output pixel area.  As
jwst's ``make_tweakreg_catalog``: a 2-D background (``bkg_boxsize`` meshes,
3-sigma clipped medians, 3x3 filter; one mesh of the whole image when none
fits) is subtracted, the image is convolved with a centre-sampled Gaussian of
``kernel_fwhm`` (astropy ``convolve``, masked pixels interpolated) and sources
are the connected regions of at least ``npixels`` pixels above
``snr_threshold`` x the background RMS (optionally deblended).  photutils
measures centroids, isophotal fluxes and shapes.  As jwst's
``JWSTSourceCatalog``: circular apertures enclosing 30/50/70 % of a point
source's energy are summed on the i2d itself (NaN outside the coverage, so an
aperture touching it gives NaN) minus the 3-sigma clipped median of an
annulus, ``aper_total_flux`` is the 70 % flux times the aperture correction,
and a source is extended when both concentration indices exceed their
thresholds.  With the same i2d and APCORR the catalog equals jwst 3.0's to
float32 precision (tests/test_parity_image3.py).

jwst takes the aperture radii, annulus and corrections from the APCORR
reference file.  Without one, webbflow measures them: the encircled-energy
curve of the brightest isolated point sources in the image, normalised at a
large radius (``ee_norm_radius`` x the median FWHM).  An APCORR table
(``radius``, ``apcorr``, ``eefraction``, ``skyin``, ``skyout``; radii in
pixels of the i2d) can be given instead.  Column names follow jwst; Vega
magnitudes are the AB magnitudes minus ``abvega_offset`` (m_AB - m_Vega of the
filter, from an ABVEGAOFFSET reference, :func:`read_abvega_offset`; 0 without
one, as jwst, which then warns that they are not correct).
"""

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.convolution import Gaussian2DKernel, convolve
from astropy.stats import SigmaClip, gaussian_fwhm_to_sigma, sigma_clipped_stats
from astropy.table import QTable
from scipy.spatial import cKDTree

from webbflow.steps._bkgzoom import use_separable_zoom
from webbflow.steps._photutils import import_photutils

# first: photutils without its distribution scan, its segmentation without scipy.signal (~0.7 s of CPU)
import_photutils("photutils.segmentation")
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.background import Background2D, MedianBackground
from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources  # noqa: E402

__all__ = ["ApertureModel", "CatalogResult", "abmag", "encircled_energy_apertures", "read_abvega_offset",
           "read_apcorr", "source_catalog"]

log = logging.getLogger(__name__)

AB_ZEROPOINT_JY = 3631.0


@dataclass
class ApertureModel:
    """Aperture radii (pixels) for the EE fractions, the correction of the largest, and the sky annulus."""

    eefractions: tuple
    radii: tuple
    apcorr: float
    skyin: float
    skyout: float


@dataclass
class CatalogResult:
    catalog: QTable
    segmentation: np.ndarray  # int32, 0 = background
    apertures: ApertureModel


def abmag(flux_jy, flux_err_jy=None):
    """AB magnitude (and its error) of fluxes in Jy; NaN for non-positive fluxes."""
    f = np.asarray(flux_jy, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(f > 0, -2.5 * np.log10(f / AB_ZEROPOINT_JY), np.nan)
        if flux_err_jy is None:
            return mag
        err = np.where(f > 0, 2.5 / np.log(10) * np.asarray(flux_err_jy, float) / f, np.nan)
    return mag, err


def read_abvega_offset(path, filter_name, pupil):
    """m_AB - m_Vega of ``filter_name``/``pupil`` from an ABVEGAOFFSET reference (jwst's format).

    Parameters
    ----------
    path : str or Path
        ABVEGAOFFSET reference (ASDF, ``abvega_offset`` table with ``filter``, ``pupil``,
        ``abvega_offset`` columns), as CRDS serves them and the simulator writes them.
    filter_name, pupil : str
        The i2d's FILTER and PUPIL.

    Returns
    -------
    float

    Raises
    ------
    InputError
        The file cannot be read, or has not exactly one row for the filter and pupil.
    """
    from stdatamodels.jwst.datamodels import ABVegaOffsetModel

    from webbflow.io.errors import InputError

    try:
        with ABVegaOffsetModel(str(path)) as model:
            table = model.abvega_offset
            filters = np.char.upper(np.asarray(table["filter"]).astype(str))
            pupils = np.char.upper(np.asarray(table["pupil"]).astype(str))
            rows = np.asarray(table["abvega_offset"], float)[(filters == filter_name.upper())
                                                             & (pupils == pupil.upper())]
    except Exception as exc:
        raise InputError(path, f"cannot be read as an ABVEGAOFFSET reference ({exc})",
                         "give an ABVEGAOFFSET reference (ASDF, abvega_offset table) or leave "
                         "steps.source_catalog.abvegaoffset_file null") from None
    if rows.size != 1:
        raise InputError(path, f"has {rows.size} rows for {filter_name}/{pupil} (one needed)",
                         "give the ABVEGAOFFSET reference that lists this filter and pupil")
    log.info("AB to Vega magnitude offset %.5f", rows[0])
    return float(rows[0])


def read_apcorr(path, filter_name, pupil):
    """The rows of ``filter_name``/``pupil`` in an APCORR reference (jwst's NIRCam imaging format).

    Parameters
    ----------
    path : str or Path
        APCORR reference (FITS, ``APCORR`` table with ``filter``, ``pupil``, ``eefraction``,
        ``radius``, ``apcorr``, ``skyin``, ``skyout``), as CRDS serves them and the simulator writes them.
    filter_name, pupil : str
        The i2d's FILTER and PUPIL.

    Returns
    -------
    astropy.table.Table
        That filter's rows (the ``apcorr_table`` of :func:`source_catalog`).

    Raises
    ------
    InputError
        The file cannot be read, or has no row for the filter and pupil.
    """
    from astropy.table import Table

    from webbflow.io.errors import InputError

    try:
        table = Table.read(path, hdu="APCORR")
        filters = np.char.upper(np.char.strip(np.asarray(table["filter"]).astype(str)))
        pupils = np.char.upper(np.char.strip(np.asarray(table["pupil"]).astype(str)))
        rows = table[(filters == filter_name.upper()) & (pupils == pupil.upper())]
    except Exception as exc:
        raise InputError(path, f"cannot be read as an APCORR reference ({exc})",
                         "give an APCORR reference (FITS, APCORR table) or leave steps.source_catalog.apcorr_file "
                         "null") from None
    if len(rows) == 0:
        raise InputError(path, f"has no rows for {filter_name}/{pupil}",
                         "give the APCORR reference that lists this filter and pupil")
    return rows


def _background(data, mask, boxsize):
    """jwst's JWSTBackground: (3, 3)-filtered, 3-sigma clipped median meshes of ``boxsize`` pixels;
    when no mesh fits (``boxsize`` larger than the image), one mesh of the whole unmasked image."""
    kw = dict(filter_size=(3, 3), coverage_mask=mask, sigma_clip=SigmaClip(sigma=3.0),
              bkg_estimator=MedianBackground())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaNs under the coverage mask are expected
        try:
            bkg = Background2D(data, int(boxsize), **kw)
        except ValueError:
            try:
                bkg = Background2D(data, data.shape, exclude_percentile=100.0, **kw)
            except ValueError:
                _, med, std = sigma_clipped_stats(data, mask=mask)
                return np.full(data.shape, med), np.full(data.shape, std)
    use_separable_zoom(bkg)  # the same level and rms, ~10x cheaper than photutils' ndimage.zoom
    return bkg.background, bkg.background_rms


def encircled_energy_apertures(data, error, xy, eefractions=(0.3, 0.5, 0.7), fwhm=None, norm_radius=4.0,
                               max_sources=30, mask=None):
    """Radii enclosing ``eefractions`` of a point source's flux, measured on bright isolated sources.

    Parameters
    ----------
    data : ndarray
        Background-subtracted image.
    error : ndarray
    xy : (N, 2) array
        Positions of candidate point sources, brightest first.
    eefractions : tuple of float
    fwhm : float
        Median FWHM (pixels) of the candidates.
    norm_radius : float
        Curves are normalised at ``norm_radius`` x FWHM (the "total" flux).
    max_sources : int
    mask : ndarray of bool, optional

    Returns
    -------
    ApertureModel
    """
    fwhm = float(fwhm or 2.0)
    r_norm = max(norm_radius * fwhm, 5.0)
    skyin, skyout = r_norm + 2.0, r_norm + 2.0 + max(3.0 * fwhm, 5.0)
    ny, nx = data.shape
    xy = np.asarray(xy, float)
    tree = cKDTree(xy) if len(xy) > 1 else None
    keep = []
    for k, (x, y) in enumerate(xy):
        if not (skyout < x < nx - 1 - skyout and skyout < y < ny - 1 - skyout):
            continue
        # Neighbours inside the normalisation radius would bias the curve; in the
        # annulus the clipped median ignores them.
        if tree is not None and len(tree.query_ball_point((x, y), r_norm + fwhm)) > 1:
            continue
        keep.append(k)
        if len(keep) >= max_sources:
            break
    radii = np.linspace(0.5, r_norm, int(4 * r_norm))
    if not keep:
        log.warning("no isolated point source for the curve of growth: Gaussian PSF of FWHM %.2f assumed", fwhm)
        sigma = fwhm / 2.3548
        r = tuple(float(sigma * np.sqrt(-2 * np.log(1 - f))) for f in eefractions)
        return ApertureModel(tuple(eefractions), r, 1.0 / eefractions[-1], skyin, skyout)
    pos = xy[keep]
    annulus = CircularAnnulus(pos, skyin, skyout)
    sky = np.array([sigma_clipped_stats(m.get_values(data))[1] for m in annulus.to_mask(method="center")])
    curves = np.array([aperture_photometry(data, CircularAperture(pos, r), mask=mask)["aperture_sum"].value
                       - sky * np.pi * r**2 for r in radii]).T
    curves = curves / curves[:, -1:]
    curve = np.nanmedian(curves, axis=0)
    r_ee = tuple(float(np.interp(f, np.maximum.accumulate(curve), radii)) for f in eefractions)
    log.info("curve of growth from %d sources: EE radii %s px", len(keep), ", ".join(f"{r:.2f}" for r in r_ee))
    return ApertureModel(tuple(eefractions), r_ee, 1.0 / eefractions[-1], skyin, skyout)


def source_catalog(data, err, wcs, pixel_area_sr, *, mask=None, bkg_boxsize=1000, kernel_fwhm=2.0,
                   snr_threshold=3.0, npixels=25, deblend=False, aperture_ee=(30, 50, 70), apcorr_table=None,
                   ci1_star_threshold=2.0, ci2_star_threshold=1.8, ee_norm_radius=4.0, abvega_offset=0.0,
                   clip_apertures=False):
    """Catalog of the sources of a resampled image.

    Parameters
    ----------
    data, err : ndarray
        i2d SCI and ERR, MJy/sr.
    wcs : gwcs.wcs.WCS
        Pixel (0-based) -> ICRS.
    pixel_area_sr : float
        Area of an i2d pixel (sr).
    mask : ndarray of bool, optional
        Pixels to ignore (default: non-finite data or zero weight supplied by the caller).
    bkg_boxsize, kernel_fwhm, snr_threshold, npixels, deblend :
        jwst defaults (1000, 2.0, 3.0, 25, False).
    aperture_ee : (int, int, int)
        Encircled-energy percentages of the three apertures.
    apcorr_table : astropy.table.Table, optional
        Columns ``eefraction``, ``radius`` (i2d pixels), ``apcorr``, ``skyin``, ``skyout``.
    ci1_star_threshold, ci2_star_threshold : float
        Concentration-index limits of point sources (``is_extended``).
    ee_norm_radius : float
        Curve-of-growth normalisation radius in FWHM (no ``apcorr_table``).
    abvega_offset : float
        m_AB - m_Vega of the filter (:func:`read_abvega_offset`): the ``*_vegamag`` columns are
        the ``*_abmag`` ones minus it, with the same errors (jwst).
    clip_apertures : bool
        False (jwst): an aperture that reaches a pixel with no data (off the mosaic's coverage, or
        a hole no exposure measured, such as a core saturated in all of them) gives NaN.  True
        (beyond jwst): such apertures sum the measured pixels, less the sky over the area those
        cover, and the column ``aper_coverage`` (fraction of the largest aperture's area on
        measured pixels; below 1 = clipped, the fluxes are then lower limits) flags them.

    Returns
    -------
    CatalogResult
    """
    to_jy = pixel_area_sr * 1e6
    bad = ~np.isfinite(data) | (np.zeros(data.shape, bool) if mask is None else mask)
    sci = np.where(bad, 0.0, data * to_jy)
    error = np.where(bad, 0.0, np.nan_to_num(err) * to_jy)
    background, rms = _background(np.where(bad, np.nan, sci), bad, bkg_boxsize)
    sub = np.where(bad, 0.0, sci - background)
    # jwst: a centre-sampled Gaussian of 8 sigma (odd) and astropy's convolve, masked pixels interpolated.
    kernel = Gaussian2DKernel(kernel_fwhm * gaussian_fwhm_to_sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convolved = convolve(np.where(bad, np.nan, sci - background), kernel, mask=bad)
    threshold = snr_threshold * rms
    segm = detect_sources(convolved, threshold, n_pixels=npixels, mask=bad)
    fractions = tuple(e / 100.0 for e in aperture_ee)
    if segm is None:
        log.warning("no sources above %.1f sigma", snr_threshold)
        return CatalogResult(QTable(), np.zeros(data.shape, np.int32), ApertureModel(fractions, (), 1.0, 0, 0))
    if deblend:
        segm = deblend_sources(convolved, segm, n_pixels=npixels, progress_bar=False)
    total_error = np.sqrt(error**2)  # background-limited ERR already holds every variance term
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils' column-name deprecations
        cat = SourceCatalog(sub, segm, convolved_data=convolved, error=total_error, mask=bad, wcs=wcs)
        xc = np.asarray(cat.x_centroid if hasattr(cat, "x_centroid") else cat.xcentroid, float)
        yc = np.asarray(cat.y_centroid if hasattr(cat, "y_centroid") else cat.ycentroid, float)
        fwhm_each = np.asarray(cat.fwhm.value, float)
    bright = np.argsort(-np.asarray(cat.segment_flux, float))
    if apcorr_table is not None:
        row = {round(float(f), 2): r for f, r in zip(apcorr_table["eefraction"], apcorr_table)}
        sel = [row[round(f, 2)] for f in fractions]
        apertures = ApertureModel(fractions, tuple(float(r["radius"]) for r in sel), float(sel[-1]["apcorr"]),
                                  float(sel[-1]["skyin"]), float(sel[-1]["skyout"]))
    else:
        fwhm = float(np.nanmedian(fwhm_each[bright[: max(5, len(bright) // 4)]]))
        apertures = encircled_energy_apertures(sub, total_error, np.c_[xc, yc][bright], fractions, fwhm,
                                               ee_norm_radius, mask=bad)
    pos = np.c_[xc, yc]
    # As jwst: apertures on the i2d itself (NaN off the coverage, so an aperture touching it gives NaN),
    # minus the 3-sigma clipped median of the annulus; the error is the aperture sum's.
    raw = np.where(bad, np.nan, sci)
    raw_err = np.where(bad, np.nan, error)
    annulus = CircularAnnulus(pos, apertures.skyin, apertures.skyout)
    clip = SigmaClip(sigma=3.0)
    sky, sky_err = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in annulus.to_mask(method="center"):
            v = clip(m.get_values(raw), masked=False)
            v = v[np.isfinite(v)]
            sky.append(np.median(v) if v.size else np.nan)
            sky_err.append(np.sqrt(np.pi / (2.0 * v.size)) * np.std(v) if v.size else np.nan)
    sky, sky_err = np.array(sky), np.array(sky_err)
    table = QTable()
    table["label"] = np.asarray(cat.label, np.int32)
    table["xcentroid"] = xc
    table["ycentroid"] = yc
    table["sky_centroid"] = cat.sky_centroid
    table["aper_bkg_flux"] = sky * u.Jy
    table["aper_bkg_flux_err"] = sky_err * u.Jy
    fluxes = {}
    nodata = ~np.isfinite(raw)
    for frac, radius in zip(fractions, apertures.radii):
        ap = CircularAperture(pos, radius)
        if clip_apertures:
            # Beyond jwst: sum the measured pixels only, and the sky over the area they cover.
            phot = aperture_photometry(np.where(nodata, 0.0, raw), ap, error=np.where(nodata, 0.0, raw_err))
            covered = np.asarray(aperture_photometry((~nodata).astype(float), ap)["aperture_sum"], float)
            # the exact overlaps of a fully measured aperture sum to its area only to rounding
            covered = np.where(covered > ap.area * (1 - 1e-6), ap.area, covered)
            flux = np.asarray(phot["aperture_sum"], float) - sky * covered
        else:
            phot = aperture_photometry(raw, ap, error=raw_err)
            covered = np.full(len(pos), ap.area)
            flux = np.asarray(phot["aperture_sum"], float) - sky * ap.area
        ferr = np.asarray(phot["aperture_sum_err"], float)
        name = f"aper{int(round(frac * 100))}"
        fluxes[name] = flux
        table[f"{name}_flux"] = flux * u.Jy
        table[f"{name}_flux_err"] = ferr * u.Jy
    if clip_apertures:
        # The flag of a clipped aperture: its flux (and total) miss what fell on unmeasured pixels.
        table["aper_coverage"] = np.clip(covered / ap.area, 0.0, 1.0)
    last = f"aper{int(round(fractions[-1] * 100))}"
    total = fluxes[last] * apertures.apcorr
    total_err = np.asarray(table[f"{last}_flux_err"].value) * apertures.apcorr
    table["aper_total_flux"] = total * u.Jy
    table["aper_total_flux_err"] = total_err * u.Jy
    for name in list(fluxes) + ["aper_total"]:
        mag, magerr = abmag(table[f"{name}_flux"].value, table[f"{name}_flux_err"].value)
        table[f"{name}_abmag"] = mag
        table[f"{name}_abmag_err"] = magerr
        table[f"{name}_vegamag"] = mag - abvega_offset
        table[f"{name}_vegamag_err"] = magerr
    names = list(fluxes)
    with np.errstate(divide="ignore", invalid="ignore"):
        ci = {}
        for hi, lo in ((1, 0), (2, 1), (2, 0)):
            key = f"CI_{names[hi][4:]}_{names[lo][4:]}"
            ci[key] = fluxes[names[hi]] / fluxes[names[lo]]
            table[key] = ci[key]
    ci1 = ci[f"CI_{names[1][4:]}_{names[0][4:]}"]
    ci2 = ci[f"CI_{names[2][4:]}_{names[1][4:]}"]
    table["is_extended"] = (ci1 > ci1_star_threshold) & (ci2 > ci2_star_threshold)  # both, as jwst
    iso = np.asarray(cat.segment_flux, float)
    iso_err = np.asarray(cat.segment_flux_err, float)
    table["isophotal_flux"] = iso * u.Jy
    table["isophotal_flux_err"] = iso_err * u.Jy
    mag, magerr = abmag(iso, iso_err)
    table["isophotal_abmag"] = mag
    table["isophotal_abmag_err"] = magerr
    table["isophotal_vegamag"] = mag - abvega_offset
    table["isophotal_vegamag_err"] = magerr
    table["isophotal_area"] = cat.area
    table["semimajor_sigma"] = cat.semimajor_axis if hasattr(cat, "semimajor_axis") else cat.semimajor_sigma
    table["semiminor_sigma"] = cat.semiminor_axis if hasattr(cat, "semiminor_axis") else cat.semiminor_sigma
    table["ellipticity"] = cat.ellipticity
    table["orientation"] = cat.orientation
    if len(pos) > 1:
        dist, idx = cKDTree(pos).query(pos, k=2)
        table["nn_label"] = table["label"][idx[:, 1]]
        table["nn_dist"] = dist[:, 1] * u.pix
    else:
        table["nn_label"] = np.full(len(pos), -1, np.int32)
        table["nn_dist"] = np.full(len(pos), np.nan) * u.pix
    table.meta["aperture_ee"] = list(aperture_ee)
    table.meta["aperture_radii_pix"] = [float(r) for r in apertures.radii]
    table.meta["aperture_correction"] = float(apertures.apcorr)
    table.meta["abvega_offset"] = float(abvega_offset)
    log.info("%d sources", len(table))
    return CatalogResult(table, np.asarray(segm.data, np.int32), apertures)
