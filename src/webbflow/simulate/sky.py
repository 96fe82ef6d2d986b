"""A sky of stars and galaxies with known RA/Dec and flux per filter, seen through the WCS.

The catalogue is a deterministic function of (field centre, ``scene_seed``,
counts), so every exposure of a program -- both channels, every dither --
sees the same sources.  Fluxes follow a power law ``f_nu ∝ λ^alpha`` from the
F200W flux, so any filter's flux is known.

Rendering (:func:`render_sky_rate`) puts each source at the pixel the *true*
attitude and the distortion give, converts Jy to DN/s with the filter's
PHOTMJSR and the detector's PIXAR_SR, and multiplies by the flat-field
response: point sources by the pixel response only (all photons land
somewhere), the uniform sky also by the relative pixel area (a bigger pixel
sees more sky).  That is what makes jwst's flat (response × area) and photom
recover surface brightness, and AREA-weighted sums recover fluxes.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from webbflow.simulate import optics
from webbflow.simulate.detectors import DETECTORS
from webbflow.simulate.scene import add_galaxy, add_star, psf_sigma_pixels
from webbflow.wcs import sky_to_v23

__all__ = ["make_catalog", "catalog_for", "flux_column", "gaia_like_catalog", "GAIA_EPOCH", "GAIA_G_LIMIT", "source_rates", "place_sources",
           "render_sky_rate"]

REF_WAVE = 1.989  # micron (F200W): fluxes are specified here and extrapolated
GAIA_EPOCH = 2016.0  # Gaia DR3's reference epoch (Julian year)
GAIA_G_LIMIT = 20.7  # G where Gaia DR3 stops being complete
G_WAVE = 0.64  # micron: pivot of Gaia's G band; G ~ the AB magnitude there
# Gaia DR3 5-parameter uncertainties by G (approximately Lindegren et al. 2021, A&A 649, A2, Table 4):
# position at the catalog epoch (mas, per coordinate) and proper motion (mas/yr).
_GAIA_G = np.array([12.0, 15.0, 17.0, 19.0, 20.0, 21.0])
_GAIA_POS_MAS = np.array([0.01, 0.02, 0.05, 0.15, 0.4, 1.0])
_GAIA_PM_MASYR = np.array([0.01, 0.02, 0.07, 0.2, 0.5, 1.4])
# Field-star proper motions (mas/yr): a common drift plus a dispersion, as at high galactic latitude.
_PM_MEAN = (-2.5, 1.5)
_PM_SIGMA = 5.0


def flux_column(filter_name):
    """Catalogue column of a filter's flux: ``flux_<filter>`` (lower case, Jy)."""
    return f"flux_{filter_name.lower()}"


def make_catalog(ra, dec, *, seed, half_size=9.0, n_bright=None, bright_spacing=1.4,
                 bright_rate=(1500.0, 8000.0), n_faint=40, faint_rate=(5.0, 300.0), n_galaxies=8,
                 n_saturating=2, filters=None):
    """A field of sources around (``ra``, ``dec``).

    Bright stars sit on a jittered grid (``bright_spacing`` arcsec) so that
    each exposure gets many well-separated, high-S/N stars for alignment.

    Parameters
    ----------
    ra, dec : float
        Field centre, deg.
    seed : int
        Scene seed.
    half_size : float
        Half side (arcsec) of the square field.
    n_bright : int, optional
        Cap on the grid stars (None: the whole grid).
    bright_spacing : float
        Grid pitch of the bright stars, arcsec.
    bright_rate, faint_rate : (float, float)
        F200W count rates (DN/s on a SW detector) of bright/faint stars, log-uniform.
    n_faint, n_galaxies, n_saturating : int
        Faint random stars, exponential-disk galaxies, stars that saturate.
    filters : iterable of str, optional
        Flux columns to write (default: every filter of :data:`optics.FILTERS`).

    Returns
    -------
    astropy.table.Table
        ``id``, ``ra``, ``dec`` (deg), ``type`` (star/galaxy), ``alpha``,
        ``r_half`` (arcsec), ``axis_ratio``, ``pa`` (deg), and ``flux_<filter>`` (Jy).
    """
    rng = np.random.default_rng([seed, 3])
    # F200W rate -> Jy with SW photometry (the definition of the rate ranges).
    jy_per_rate = optics.photmjsr("F200W") * optics.pixar_sr("NRCA1") * 1e6
    g = np.arange(-half_size + bright_spacing / 2, half_size, bright_spacing)
    gx, gy = np.meshgrid(g, g)
    gx = gx.ravel() + rng.uniform(-0.25, 0.25, gx.size) * bright_spacing
    gy = gy.ravel() + rng.uniform(-0.25, 0.25, gy.size) * bright_spacing
    if n_bright is not None:
        gx, gy = gx[:n_bright], gy[:n_bright]
    nb = gx.size
    u = np.concatenate([gx, rng.uniform(-half_size, half_size, n_faint),
                        rng.uniform(-0.5, 0.5, n_saturating) * half_size,
                        rng.uniform(-half_size, half_size, n_galaxies)])
    v = np.concatenate([gy, rng.uniform(-half_size, half_size, n_faint),
                        rng.uniform(-0.5, 0.5, n_saturating) * half_size,
                        rng.uniform(-half_size, half_size, n_galaxies)])
    rate = np.concatenate([
        10 ** rng.uniform(*np.log10(bright_rate), nb),
        10 ** rng.uniform(*np.log10(faint_rate), n_faint),
        rng.uniform(1.5e5, 3e5, n_saturating),
        10 ** rng.uniform(1.5, 3.0, n_galaxies),
    ])
    n_star = nb + n_faint + n_saturating
    kind = np.array(["star"] * n_star + ["galaxy"] * n_galaxies)
    alpha = np.concatenate([rng.uniform(-1.5, -0.3, n_star), rng.uniform(0.0, 1.5, n_galaxies)])
    cosd = np.cos(np.radians(dec))
    table = Table({
        "id": np.arange(1, u.size + 1, dtype=np.int32),
        "ra": ra + u / 3600.0 / cosd, "dec": dec + v / 3600.0,
        "type": kind, "alpha": alpha,
        "r_half": np.where(kind == "galaxy", rng.uniform(0.12, 0.35, u.size), 0.0),
        "axis_ratio": np.where(kind == "galaxy", rng.uniform(0.3, 1.0, u.size), 1.0),
        "pa": np.where(kind == "galaxy", rng.uniform(0, 180, u.size), 0.0),
    })
    table["ra"].unit = table["dec"].unit = table["pa"].unit = "deg"
    table["r_half"].unit = "arcsec"
    f200 = rate * jy_per_rate
    for name in (filters or optics.FILTERS):
        wave = optics.FILTERS.get(name, (REF_WAVE,))[0]
        table[flux_column(name)] = f200 * (wave / REF_WAVE) ** alpha
        table[flux_column(name)].unit = "Jy"
    table.meta["comments"] = ["webbflow simulated sky: f_nu = flux_f200w * (lambda/1.989um)**alpha"]
    table.meta.update({"ra_center": ra, "dec_center": dec, "seed": int(seed)})
    return table


def gaia_like_catalog(catalog, epoch, *, seed, g_limit=GAIA_G_LIMIT, ref_epoch=GAIA_EPOCH):
    """The stars of a sky catalogue as Gaia DR3 would list them.

    The sky catalogue's positions are the stars' true positions at the
    observation (``epoch``).  Each star gets a proper motion; its catalogued
    position is where it was at ``ref_epoch``, plus Gaia's position error for
    its G magnitude, and its catalogued proper motion carries Gaia's error too.
    Stars fainter than ``g_limit`` (G ~ AB magnitude at 0.64 micron from the
    power-law spectrum) and galaxies are not listed.

    Parameters
    ----------
    catalog : astropy.table.Table
        :func:`make_catalog` output (positions at ``epoch``).
    epoch : float
        Julian year of the observation.
    seed : int
        Random seed (proper motions and errors).
    g_limit : float
        Faintest G listed.
    ref_epoch : float
        Catalogue epoch (Julian year).

    Returns
    -------
    astropy.table.Table
        ``source_id``, ``truth_id`` (the sky catalogue's ``id``), ``ra``, ``dec``
        (deg, at ``ref_epoch``), ``ra_error``, ``dec_error`` (mas), ``pmra``
        (mas/yr, times cos dec), ``pmdec``, ``pmra_error``, ``pmdec_error``
        (mas/yr), ``phot_g_mean_mag``, ``ref_epoch`` (Julian year), as Gaia's
        columns; ``pmra_true``/``pmdec_true`` for tests.
    """
    rng = np.random.default_rng([seed, 7])
    stars = catalog[catalog["type"] == "star"]
    f200 = np.asarray(stars[flux_column("F200W")], float)
    g = -2.5 * np.log10(f200 * (G_WAVE / REF_WAVE) ** np.asarray(stars["alpha"], float) / 3631.0)
    keep = g <= g_limit
    stars, g = stars[keep], g[keep]
    n = len(stars)
    pm_true = rng.normal(_PM_MEAN, _PM_SIGMA, (n, 2))
    sig_pos = np.exp(np.interp(g, _GAIA_G, np.log(_GAIA_POS_MAS)))
    sig_pm = np.exp(np.interp(g, _GAIA_G, np.log(_GAIA_PM_MASYR)))
    dt = ref_epoch - float(epoch)
    mas = 1.0 / 3.6e6
    dec0 = np.asarray(stars["dec"], float)
    cosd = np.cos(np.radians(dec0))
    d_ra = pm_true[:, 0] * dt + rng.normal(0.0, sig_pos)  # mas on the sky
    d_dec = pm_true[:, 1] * dt + rng.normal(0.0, sig_pos)
    table = Table({
        "source_id": np.arange(1, n + 1, dtype=np.int64) + 4_000_000_000_000,
        "truth_id": np.asarray(stars["id"]),
        "ra": np.asarray(stars["ra"], float) + d_ra * mas / cosd,
        "dec": dec0 + d_dec * mas,
        "ra_error": sig_pos, "dec_error": sig_pos,
        "pmra": pm_true[:, 0] + rng.normal(0.0, sig_pm), "pmdec": pm_true[:, 1] + rng.normal(0.0, sig_pm),
        "pmra_error": sig_pm, "pmdec_error": sig_pm,
        "phot_g_mean_mag": g,
        "ref_epoch": np.full(n, ref_epoch),
        "pmra_true": pm_true[:, 0], "pmdec_true": pm_true[:, 1],
    })
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("ra_error", "mas"), ("dec_error", "mas"),
                      ("pmra", "mas / yr"), ("pmdec", "mas / yr"), ("pmra_error", "mas / yr"),
                      ("pmdec_error", "mas / yr"), ("pmra_true", "mas / yr"), ("pmdec_true", "mas / yr"),
                      ("phot_g_mean_mag", "mag"), ("ref_epoch", "yr")):
        table[col].unit = unit
    table.meta["comments"] = [
        f"webbflow simulated Gaia DR3-like catalog: stars to G={g_limit}, positions at ref_epoch {ref_epoch} "
        f"with Gaia-like errors; the true positions at the observation (J{float(epoch):.3f}) are "
        "truth/sources.ecsv's"]
    table.meta.update({"ref_epoch": ref_epoch, "observation_epoch": float(epoch), "g_limit": g_limit})
    return table


def catalog_for(spec):
    """The catalogue of ``spec``'s program (shared by all its exposures)."""
    return make_catalog(spec.ra, spec.dec, seed=spec.scene_seed, half_size=spec.field_half_size,
                        n_bright=spec.n_bright_stars, n_faint=spec.n_stars, n_galaxies=spec.n_galaxies,
                        n_saturating=spec.n_saturating_stars)


def source_rates(catalog, spec):
    """Total count rate (DN/s) of each source in ``spec``'s filter, flat response 1."""
    col = flux_column(spec.filter)
    if col in catalog.colnames:
        flux = np.asarray(catalog[col], float)
    else:
        wave = optics.FILTERS.get(spec.filter, (REF_WAVE,))[0]
        flux = np.asarray(catalog[flux_column("F200W")]) * (wave / REF_WAVE) ** np.asarray(catalog["alpha"])
    return flux / (optics.photmjsr(spec.filter, spec.pupil) * optics.pixar_sr(spec.detector) * 1e6)


def place_sources(catalog, spec, attitude=None):
    """0-based subarray pixel positions of the catalogue under the (true) attitude."""
    attitude = optics.true_attitude(spec) if attitude is None else attitude
    v2, v3 = sky_to_v23(np.asarray(catalog["ra"]), np.asarray(catalog["dec"]), attitude)
    return optics.v23_to_pixel(spec.detector, spec.geometry, v2, v3)


def render_sky_rate(spec, catalog, response, area, diffuse=None):
    """True count rate (DN/s) of ``spec`` from the sky catalogue.

    Parameters
    ----------
    spec : ExposureSpec
    catalog : astropy.table.Table
    response : ndarray (ny, nx)
        Pixel response excluding area (flat / area; 0 on dead/reference pixels).
    area : ndarray (ny, nx)
        Relative pixel area.
    diffuse : ndarray (ny, nx), optional
        Extra diffuse light (DN/s per nominal pixel, e.g. a wisp) added to the sky.

    Returns
    -------
    image : ndarray float32 (ny, nx)
    placed : astropy.table.Table
        Catalogue ``id``, ``type``, ``x``, ``y`` (0-based pixels), ``rate`` (DN/s,
        before the flat response) and ``flux`` (Jy in this filter).
    """
    info = DETECTORS[spec.detector]
    sigma = psf_sigma_pixels(spec.detector)
    x, y = place_sources(catalog, spec)
    rate = source_rates(catalog, spec)
    image = np.zeros(spec.geometry.shape)
    ny, nx = image.shape
    for k in range(len(catalog)):
        if not (-20 < x[k] < nx + 20 and -20 < y[k] < ny + 20):
            continue
        if catalog["type"][k] == "star":
            add_star(image, x[k], y[k], rate[k], sigma)
        else:
            rh = catalog["r_half"][k] / info.pixel_scale
            add_galaxy(image, x[k], y[k], rate[k], rh, catalog["axis_ratio"][k],
                        np.radians(catalog["pa"][k]))
    sky = spec.sky if diffuse is None else spec.sky + diffuse
    image = (image + sky * area) * response
    placed = Table({"id": catalog["id"], "type": catalog["type"], "x": x, "y": y, "rate": rate,
                    "flux": np.asarray(catalog[flux_column(spec.filter)])
                    if flux_column(spec.filter) in catalog.colnames else rate * np.nan})
    placed["rate"].unit = "DN/s"
    placed["flux"].unit = "Jy"
    return image.astype(np.float32), placed
