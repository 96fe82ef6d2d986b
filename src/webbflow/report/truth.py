"""Matching a mosaic's source catalog to a sky truth (the demo's ``demo/truth/sources.ecsv``).

Used by the report's residual plots and by the demo's stage-3 tests, so both judge the same stars:
isolated (no other source within ``isolation`` arcsec, so no blend), bright (aperture S/N above
``min_snr``), away from the mosaic's edge (a source whose isophote reaches the edge has a clipped
centroid), and matched within ``max_sep`` arcsec.
"""

from pathlib import Path

import numpy as np

__all__ = ["mark_isolated", "edge_mask", "exposure_residuals", "match_stars", "truth_residuals", "wcs_residuals"]


def mark_isolated(truth, radius=0.4):
    """Add a boolean ``isolated`` column: no other truth source within ``radius`` arcsec.

    Parameters
    ----------
    truth : astropy.table.Table
        Truth sources with ``ra`` and ``dec`` in degrees (every source, stars and galaxies).
    radius : float
        Arcsec; 0.4" is about three long-wavelength FWHM.

    Returns
    -------
    astropy.table.Table
        ``truth`` itself, with the column added.
    """
    from astropy.coordinates import SkyCoord

    sky = SkyCoord(truth["ra"], truth["dec"], unit="deg")
    if len(truth) < 2:
        truth["isolated"] = np.ones(len(truth), bool)
        return truth
    _, nearest, _ = sky.match_to_catalog_sky(sky, nthneighbor=2)
    truth["isolated"] = nearest.arcsec > radius
    return truth


def edge_mask(wht, iterations=8):
    """Pixels of a mosaic within ``iterations`` pixels of no data (``WHT == 0``) or of its border."""
    from scipy import ndimage

    return ndimage.binary_dilation(np.asarray(wht) == 0, iterations=iterations, border_value=1)


def match_stars(cat, stars, edge, max_sep=0.3, min_snr=100.0):
    """Match catalog sources to truth stars; say which matches are clean enough to judge.

    Parameters
    ----------
    cat : astropy.table.Table
        A source catalog (jwst columns: ``sky_centroid``, ``xcentroid``, ``ycentroid``,
        ``aper_total_flux``, ``aper_total_flux_err``).
    stars : astropy.table.Table
        Truth stars with ``ra``, ``dec`` and ``isolated`` (:func:`mark_isolated`).
    edge : ndarray of bool
        The mosaic's :func:`edge_mask`.
    max_sep : float
        Arcsec: farther matches are not matches.
    min_snr : float
        Aperture-total S/N below which a source is not judged.

    Returns
    -------
    idx : ndarray of int
        Per catalog source, the row of its nearest truth star.
    sep : ndarray of float
        Its separation (arcsec).
    good : ndarray of bool
        Per catalog source: matched, bright, isolated and away from the edge.
    """
    from astropy.coordinates import SkyCoord

    idx, sep, _ = cat["sky_centroid"].match_to_catalog_sky(SkyCoord(stars["ra"], stars["dec"], unit="deg"))
    snr = np.asarray(cat["aper_total_flux"]) / np.asarray(cat["aper_total_flux_err"])
    x = np.rint(np.asarray(cat["xcentroid"])).astype(int)
    y = np.rint(np.asarray(cat["ycentroid"])).astype(int)
    inside = ~edge[np.clip(y, 0, edge.shape[0] - 1), np.clip(x, 0, edge.shape[1] - 1)]
    good = (sep.arcsec < max_sep) & (snr > min_snr) & inside & np.asarray(stars["isolated"])[idx]
    return idx, sep.arcsec, good


def truth_residuals(cat, truth, wht, filt, max_sep=0.3, min_snr=100.0, min_nn_dist=10.0):
    """Astrometric and photometric residuals of a mosaic's catalog against the sky truth.

    Parameters
    ----------
    cat : astropy.table.Table
        The mosaic's catalog (see :func:`match_stars`; ``nn_dist`` too, when present).
    truth : astropy.table.Table
        The truth: ``ra``, ``dec``, ``type`` (``star``/galaxy) and ``flux_<filter>`` in Jy.
    wht : ndarray
        The mosaic's WHT (for the :func:`edge_mask`).
    filt : str
        The filter (``F200W`` or ``f200w``): the truth column ``flux_<filt>``.
    max_sep, min_snr : float
        See :func:`match_stars`.
    min_nn_dist : float
        Photometry only: pixels to the catalog's nearest other source (``nn_dist``), below which a
        neighbour's light may reach the aperture.

    Returns
    -------
    dict
        Over the clean matches: ``dra`` and ``ddec`` (mas, catalog - truth, ``dra`` times
        cos(dec)); over those also clear of catalog neighbours: ``true_flux`` (Jy) and
        ``flux_ratio`` (catalog aperture-total / truth); and the summaries ``n``, ``n_flux``,
        ``offset_mas`` (median dra, ddec), ``rms_mas`` (about zero), ``scatter_mas`` (about the
        median offset) and ``median_flux_ratio``.
    """
    truth = mark_isolated(truth.copy())
    stars = truth[truth["type"] == "star"]
    idx, _, good = match_stars(cat, stars, edge_mask(wht), max_sep=max_sep, min_snr=min_snr)
    centroid = cat["sky_centroid"][good]
    ra, dec = np.asarray(stars["ra"])[idx[good]], np.asarray(stars["dec"])[idx[good]]
    dra = (centroid.ra.deg - ra) * np.cos(np.radians(dec)) * 3.6e6
    ddec = (centroid.dec.deg - dec) * 3.6e6
    clear = good.copy()
    if "nn_dist" in cat.colnames:
        clear &= np.asarray(cat["nn_dist"], np.float64) > min_nn_dist
    true_flux = np.asarray(stars[f"flux_{filt.lower()}"])[idx[clear]]
    ratio = np.asarray(cat["aper_total_flux"])[clear] / true_flux
    n, nan = int(good.sum()), float("nan")
    offset = [float(np.median(dra)), float(np.median(ddec))] if n else [nan, nan]
    return {
        "dra": dra, "ddec": ddec, "true_flux": true_flux, "flux_ratio": ratio,
        "n": n, "n_flux": int(clear.sum()), "offset_mas": offset,
        "rms_mas": float(np.sqrt(np.mean(dra**2 + ddec**2))) if n else nan,
        "scatter_mas": float(np.sqrt(np.mean((dra - offset[0]) ** 2 + (ddec - offset[1]) ** 2))) if n else nan,
        "median_flux_ratio": float(np.median(ratio)) if ratio.size else nan,
    }


def exposure_residuals(crf_paths, truth, margin=5):
    """Per exposure: the aligned WCS at the stars' true pixels against their true sky positions.

    Uses the simulator's ``truth/<root>_sources.ecsv`` (every source's true pixel position in
    that exposure), so it measures each exposure's astrometric error after image3's alignment,
    with no centroiding noise.

    Parameters
    ----------
    crf_paths : list of str or Path
        The association's ``<root>_<asn id>_crf.fits`` (aligned WCS).
    truth : str or Path
        The sky truth ``truth/sources.ecsv``; the per-exposure tables sit beside it.
    margin : int
        Stars within this many pixels of the image edge are left out.

    Returns
    -------
    list of dict
        ``name`` (exposure root), ``n`` (stars), ``offset_mas`` (median dra cos dec, ddec) and
        ``rms_mas`` (about zero), in input order; exposures without a truth table are left out.
    """
    from stdatamodels.jwst import datamodels

    def aligned():
        for path in crf_paths:
            with datamodels.open(path) as model:
                # <root>_<asn id>_crf.fits
                yield Path(path).name.rsplit("_", 2)[0], model.meta.wcs, model.data.shape

    return wcs_residuals(aligned(), truth, margin)


def wcs_residuals(exposures, truth, margin=5):
    """:func:`exposure_residuals` for WCSs in memory (e.g. image3's aligned ones before any crf is written).

    Parameters
    ----------
    exposures : iterable of (str, gwcs.wcs.WCS, tuple)
        Exposure root (``<root>_cal.fits`` without the suffix), its aligned WCS and image shape.
    truth : str or Path
        The sky truth ``truth/sources.ecsv``; the per-exposure tables sit beside it.
    margin : int
        Stars within this many pixels of the image edge are left out.

    Returns
    -------
    list of dict
        As :func:`exposure_residuals`.
    """
    from astropy.table import Table

    sky = Table.read(truth)
    ra_of = dict(zip(np.asarray(sky["id"]), np.asarray(sky["ra"], float)))
    dec_of = dict(zip(np.asarray(sky["id"]), np.asarray(sky["dec"], float)))
    out = []
    for root, wcs, (ny, nx) in exposures:
        placed_path = Path(truth).parent / f"{root}_sources.ecsv"
        if not placed_path.exists():
            continue
        placed = Table.read(placed_path)
        x, y = np.asarray(placed["x"], float), np.asarray(placed["y"], float)
        keep = ((np.asarray(placed["type"]) == "star") & (x >= margin) & (y >= margin)
                & (x < nx - margin) & (y < ny - margin))
        ra, dec = wcs(x[keep], y[keep], with_bounding_box=False)
        ids = np.asarray(placed["id"])[keep]
        ra_t = np.array([ra_of[i] for i in ids])
        dec_t = np.array([dec_of[i] for i in ids])
        dra = (np.asarray(ra) - ra_t) * np.cos(np.radians(dec_t)) * 3.6e6
        ddec = (np.asarray(dec) - dec_t) * 3.6e6
        n = int(ids.size)
        out.append({"name": root, "n": n,
                    "offset_mas": [float(np.median(dra)), float(np.median(ddec))] if n else [np.nan, np.nan],
                    "rms_mas": float(np.sqrt(np.mean(dra**2 + ddec**2))) if n else np.nan})
    return out
