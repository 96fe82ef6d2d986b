"""A NIRCam coronagraphic scene (NRC_CORON): a star behind a round Lyot mask and a faint companion.

The scene of ``ExposureSpec(scene="coron", coron=CoronScene(...))`` (issue #15 part 1):

* **Optics** (coron-algorithms.md §5, numpy only): matrix Fourier transforms (MFT) between the pupil
  and the focal planes with Babinet's trick, so only the occulter's core is sampled finely::

      E_p = Π_pupil · exp(2πi/λ · (W + x·θx + y·θy))       (6.5 m circle, 0.74 m obscuration)
      E_f = MFT(E_p) over the occulter's core (±2.2″ at λ/D/4)
      E_L = (E_p − MFT⁻¹[(1 − t) · E_f]) · Π_Lyot          (t: occulter amplitude transmission)
      I   = |MFT(E_L)|² at the detector's pixels (2 × 2 sub-samples per pixel, averaged)

  with MASK335R's ``t(r) = 1 − (2 J1(σr)/(σr))²``, σ = 3.2927866 /″, σr clipped at J1's second zero
  (stpsf's band-limited occulter), a Lyot stop of 0.84 D outside and 0.3 D inside, and three
  wavelengths across the filter (pivot ± 4 %).  The image is normalised so that a source far from
  the mask puts ``rate`` DN/s on the whole plane: the **flux** of a point source is its total rate
  seen through the Lyot stop, unocculted.
* **Wavefront** ``W``: a static low-order error (``wfe_nm`` rms, defocus/astigmatism/coma/trefoil,
  fixed by ``wfe_seed``), a static mid-spatial-frequency screen (``speckle_nm`` rms, 3–40 cycles per
  pupil: the speckles at 0.3–4″) plus, per exposure, a drift of ``drift_nm`` rms (seeded by ``drift_seed``):
  the reference star sees another wavefront than the target, so RDI is imperfect.
* **Positions** come from the WCS machinery of the other scenes: the commanded attitude points the
  target at the aperture's reference pixel (XREF_SCI/YREF_SCI = the mask centre); the exposure's
  ``dither_offset`` (small-grid dither, arcsec on the sky) moves the commanded pointing and
  ``pointing_error`` (target acquisition, FSM) the true one; the star and the companion are placed
  by the true attitude and the distortion (:func:`webbflow.simulate.optics.v23_to_pixel`).  The
  optics are evaluated on the tangent plane around the mask centre at the nominal pixel scale, so
  each source's PSF is drawn exactly where the distortion puts it.
* **Sky** and **pixel response** as the time-series scenes (:func:`tso_grism.detector_rate`).

Truth (:func:`write_coron_truth`): ``companion.ecsv`` (RA/Dec, separation, PA, contrast, flux, mask
transmission per filter) and ``star_positions.ecsv`` (per exposure: the star's and companion's pixel
positions, the TA/SGD offsets, roll, IS_PSF).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import j1

from webbflow.io.uncal import CORON_SUBARRAYS as _MODE_SUBARRAYS

__all__ = [
    "BAR_OFFSETS",
    "BAR_WEDGE",
    "CORON_MASKS",
    "CORON_SUBARRAYS",
    "CoronOptics",
    "CoronScene",
    "PSF_TEMPLATE",
    "companion_radec",
    "coron_image",
    "coron_positions",
    "coron_rate",
    "coron_truth",
    "bar_offset",
    "is_bar",
    "mask_transmission",
    "occulter_map",
    "occulter_transmission",
    "psf_template",
    "psfmask_array",
    "write_coron_references",
    "write_coron_truth",
]

ARCSEC = np.pi / 180.0 / 3600.0
"""Radians per arcsec."""

CORON_MASKS = {
    # CORONMSK (header) -> (sigma per arcsec of the band-limited occulter, pupil, channel)
    "MASKA335R": (3.2927866, "MASKRND", "LONG"),
    "MASKA430R": (2.58832, "MASKRND", "LONG"),
    "MASKA210R": (5.253, "MASKRND", "SHORT"),
    # bars: σ varies along the bar (BAR_WEDGE)
    "MASKALWB": (None, "MASKBAR", "LONG"),
    "MASKASWB": (None, "MASKBAR", "SHORT"),
}
"""Occulters the simulator knows: round (coron-algorithms.md §5; stpsf's σ) and the two bars."""

BAR_WEDGE = {
    # CORONMSK -> (sign of x towards the wide end, polynomial n -> σ per arcsec): stpsf's
    # NIRCam_BandLimitedCoron 'nircamwedge' (optics.py): the half width at half maximum grows from 2 to 6
    # λ/D (λ = 2.1 µm SWB, 4.6 µm LWB) linearly over x = -7.5 ... +7.5" along the bar, flat beyond, and the
    # bar ends at |x| = 10"; the wide ends of the SW and LW bars are on opposite sides.
    "MASKASWB": (1.0, (2.01210737e-04, -7.18758337e-03, 1.12381516e-01, -1.00877701e+00, 5.72538509e+00,
                       -2.12943497e+01, 5.18745152e+01, -7.97815606e+01, 7.02728734e+01)),
    "MASKALWB": (-1.0, (9.16195583e-05, -3.27354831e-03, 5.11960734e-02, -4.59674047e-01, 2.60963397e+00,
                        -9.70881273e+00, 2.36585911e+01, -3.63978587e+01, 3.20703511e+01)),
}
"""Bar occulters' width along the bar (stpsf, ``NIRCam_BandLimitedCoron.get_transmission``)."""

BAR_OFFSETS = {
    # CORONMSK -> filter -> x (arcsec) of the filter's reference point along the bar from the subarray
    # (bar) centre: the NRCA4_MASKSWB_* / NRCA5_MASKLWB_* apertures of pySIAF as tabulated by spaceKLIP's
    # early pyKLIP pipeline (offset_swb / offset_lwb): each filter sits where the bar's HWHM suits its λ/D
    "MASKASWB": {"F182M": -1.743, "F187N": -1.544, "F210M": -0.034, "F212N": 0.144, "F200W": 0.196},
    "MASKALWB": {"F250M": 6.565, "F300M": 5.042, "F277W": 4.917, "F335M": 3.875, "F360M": 3.057, "F356W": 2.327,
                 "F410M": 1.622, "F430M": 0.998, "F460M": -0.094, "F444W": -0.723, "F480M": -0.854},
}
"""Filter-dependent star position along the bars (arcsec from the bar centre, science-frame +x)."""

CORON_SUBARRAYS = {sub: mask for sub, mask in _MODE_SUBARRAYS.items() if mask in CORON_MASKS}
"""Coronagraphic subarray -> its occulter: those of the mode's table (:data:`webbflow.io.uncal.CORON_SUBARRAYS`)
whose occulter the simulator draws."""

_J1_ZERO2 = 7.0156


@dataclass(frozen=True)
class CoronOptics:
    """Telescope and coronagraph geometry of the MFT model (metres, arcsec)."""

    diameter: float = 6.5
    obscuration: float = 0.74
    lyot_outer: float = 0.84
    lyot_inner: float = 0.30
    npupil: int = 192
    occulter_half_size: float = 2.2


@dataclass(frozen=True)
class CoronScene:
    """A star behind the mask, its companion and the wavefront of one exposure.

    Attributes
    ----------
    star_rate : float
        DN/s of the star through the Lyot stop, unocculted (the whole plane), before the pixel response.
    contrast : float
        Companion flux / star flux (0: no companion, e.g. a reference star).
    separation, position_angle : float
        Companion offset: arcsec, and degrees east of north.
    is_psf : bool
        A PSF-reference exposure (IS_PSF = T; a reference star has no companion).
    wfe_nm, wfe_seed : float, int
        Static wavefront error (nm rms, low order) and its seed.
    speckle_nm : float
        Static mid-spatial-frequency wavefront error (nm rms; seeded by ``wfe_seed`` too): the speckles
        at the companion's separation, the same for the target and the reference star.
    drift_nm, drift_seed : float, int
        This exposure's wavefront drift on top of it (nm rms) and its seed.
    sgd_pattern : str or None
        SMGRDPAT of a small-grid dither (reference star).
    mask : str
        CORONMSK (``MASKA335R``...).
    optics : CoronOptics
    """

    star_rate: float = 5.0e6
    contrast: float = 1.0e-4
    separation: float = 1.5
    position_angle: float = 60.0
    is_psf: bool = False
    wfe_nm: float = 20.0
    wfe_seed: int = 0
    speckle_nm: float = 0.0
    drift_nm: float = 0.0
    drift_seed: int = 1
    sgd_pattern: str | None = None
    mask: str = "MASKA335R"
    optics: CoronOptics = CoronOptics()


def _scene(spec):
    if not isinstance(spec.coron, CoronScene):
        raise ValueError("scene='coron' needs ExposureSpec.coron (a CoronScene)")
    return spec.coron


def is_bar(mask):
    """True for the bar (wedge) occulters."""
    return mask in BAR_WEDGE


def occulter_transmission(r_arcsec, mask="MASKA335R"):
    """Amplitude transmission t(r) of a round band-limited occulter (1 far out, 0 at the centre)."""
    sigma = CORON_MASKS[mask][0]
    x = np.clip(sigma * np.asarray(r_arcsec, float), 1e-12, _J1_ZERO2)
    return 1.0 - (2.0 * j1(x) / x) ** 2


def occulter_map(dx, dy, mask="MASKA335R", along=0.0):
    """Amplitude transmission of any occulter at offsets (arcsec, science frame) from its reference point.

    Parameters
    ----------
    dx, dy : array_like
        Offsets from the star's nominal position (the round mask's centre; the filter's point on a bar).
    mask : str
        CORONMSK.
    along : float
        For a bar: x (arcsec) of the reference point from the bar's centre (:data:`BAR_OFFSETS`).

    Returns
    -------
    ndarray
        t: 1 far out, 0 on the occulter's axis.  A bar is ``1 - sinc²(σ(x) y)`` with σ(x) from the wedge's
        HWHM (``σ|y|`` clipped at the first zero of sinc past which the hardware is clear) and t = 1 beyond
        the bar's ends.
    """
    dx, dy = np.broadcast_arrays(np.asarray(dx, float), np.asarray(dy, float))
    if not is_bar(mask):
        return occulter_transmission(np.hypot(dx, dy), mask)
    sign, coeffs = BAR_WEDGE[mask]
    x = dx + along
    sigma = np.poly1d(coeffs)((2.0 + (sign * x + 7.5) * 4.0 / 15.0).clip(2.0, 6.0))
    s = np.clip(sigma * np.abs(dy), 1e-12, 2.0 * np.pi)
    return np.where(np.abs(x) > 10.0, 1.0, 1.0 - (np.sin(s) / s) ** 2)


def bar_offset(mask, filter_name):
    """x (arcsec, science frame) of ``filter_name``'s point along ``mask``'s bar from its centre (0 for round)."""
    if not is_bar(mask):
        return 0.0
    try:
        return BAR_OFFSETS[mask][filter_name]
    except KeyError:
        raise ValueError(f"no reference point on {mask} for filter {filter_name}: one of "
                         f"{sorted(BAR_OFFSETS[mask])}") from None


def _zernike_basis(rho, phi):
    """Defocus, astigmatism ×2, coma ×2, trefoil ×2 on the unit disc (rms-normalised)."""
    return np.stack([
        np.sqrt(3) * (2 * rho ** 2 - 1),
        np.sqrt(6) * rho ** 2 * np.cos(2 * phi), np.sqrt(6) * rho ** 2 * np.sin(2 * phi),
        np.sqrt(8) * (3 * rho ** 3 - 2 * rho) * np.cos(phi), np.sqrt(8) * (3 * rho ** 3 - 2 * rho) * np.sin(phi),
        np.sqrt(8) * rho ** 3 * np.cos(3 * phi), np.sqrt(8) * rho ** 3 * np.sin(3 * phi)])


def _wavefront(x, y, radius, rms_nm, seed):
    """A low-order wavefront (metres) of ``rms_nm`` rms over the pupil, drawn from ``seed``."""
    if rms_nm == 0:
        return np.zeros_like(x)
    rho = np.hypot(x, y) / radius
    basis = _zernike_basis(rho, np.arctan2(y, x))
    c = np.random.default_rng(seed).normal(size=basis.shape[0])
    c *= rms_nm * 1e-9 / np.sqrt(np.sum(c ** 2))
    return np.tensordot(c, basis, axes=1)


def _speckle_screen(n, rms_nm, seed, fmin=3.0, fmax=40.0):
    """A static mid-spatial-frequency wavefront (metres) on the n × n pupil grid: white noise filtered to
    a 1/f² power spectrum between ``fmin`` and ``fmax`` cycles per pupil (the polishing and segment
    errors that put speckles at 0.3–4″ in the LW channel), ``rms_nm`` rms over the grid."""
    if rms_nm == 0:
        return np.zeros((n, n))
    rng = np.random.default_rng([int(seed), 77])
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n))
    amp = np.where((f >= fmin) & (f <= fmax), 1.0 / np.maximum(f, 1.0), 0.0)
    screen = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * amp).real
    return screen * (rms_nm * 1e-9 / screen.std())


def _mft_matrix(out_coords, in_coords, wavelength, sign):
    """exp(sign·2πi·out·in/λ) for 1-D coordinates (radians × metres or metres × radians)."""
    return np.exp(sign * 2j * np.pi * np.outer(out_coords, in_coords) / wavelength)


@lru_cache(maxsize=4)
def _pupil(optics):
    n = optics.npupil
    dx = optics.diameter / n
    x = (np.arange(n) - (n - 1) / 2) * dx
    xx, yy = np.meshgrid(x, x)
    r = np.hypot(xx, yy)
    R = optics.diameter / 2
    pupil = ((r <= R) & (r >= optics.obscuration / 2)).astype(float)
    lyot = ((r <= optics.lyot_outer * R) & (r >= optics.lyot_inner * R)).astype(float)
    return x, dx, xx, yy, pupil, lyot


def coron_image(shape, centre, scale, sources, wavelength, mask, wfe, optics=CoronOptics(), along=0.0):
    """Coronagraphic image of point sources on a pixel grid, normalised to each source's flux.

    Parameters
    ----------
    shape : (int, int)
        (ny, nx) pixels.
    centre : (float, float)
        0-based pixel (x, y) of the occulter's centre.
    scale : (float, float)
        Pixel scale (arcsec) along x and y.
    sources : sequence of (x, y, flux)
        0-based pixel positions and fluxes (DN/s through the Lyot stop, unocculted).
    wavelength : sequence of float
        Wavelengths (metres), averaged with equal weights.
    mask : str
        CORONMSK.
    wfe : ndarray
        Wavefront error (metres) on the pupil grid of :func:`_pupil`.
    optics : CoronOptics
    along : float
        A bar's reference point from the bar's centre (arcsec along x; :func:`occulter_map`).

    Returns
    -------
    ndarray float64 (ny, nx)
        DN/s per pixel (the PSF averaged over 2 × 2 sub-pixel samples times the pixel's solid angle).
    """
    ny, nx = shape
    x, dx, xx, yy, pupil, lyot = _pupil(optics)
    norm = np.sum(lyot) * dx * dx  # ∫|Π_pupil Π_Lyot|²: the total of an unocculted source
    sub = np.array([-0.25, 0.25])
    ax = (((np.arange(nx) - centre[0])[:, None] + sub[None]).ravel()) * scale[0] * ARCSEC
    ay = (((np.arange(ny) - centre[1])[:, None] + sub[None]).ravel()) * scale[1] * ARCSEC
    out = np.zeros((2 * ny, 2 * nx))
    for lam in np.atleast_1d(wavelength):
        # occulter core: λ/D/4 sampling over ±occulter_half_size
        du = lam / optics.diameter / 4
        nf = int(np.ceil(2 * optics.occulter_half_size * ARCSEC / du)) | 1
        v = (np.arange(nf) - nf // 2) * du
        # a bar blocks along its whole length: sample 3x farther along x (the star's wings on the bar)
        nfx = int(np.ceil(2 * 3 * optics.occulter_half_size * ARCSEC / du)) | 1 if is_bar(mask) else nf
        u = (np.arange(nfx) - nfx // 2) * du
        uu, vv = np.meshgrid(u, v)
        block = 1.0 - occulter_map(uu / ARCSEC, vv / ARCSEC, mask, along)
        # per axis: F(u) = ∫ f(x) e^{-2πixu/λ} dx and its inverse ∫ F(u) e^{+2πixu/λ} du / λ; the
        # detector plane gets 1/√λ per axis so that ∫|E|² dθ² = ∫|E_L|² dx² (Parseval)
        fx = _mft_matrix(u, x, lam, -1) * dx
        bx = _mft_matrix(x, u, lam, +1) * du / lam
        fy = _mft_matrix(v, x, lam, -1) * dx
        by = _mft_matrix(x, v, lam, +1) * du / lam
        ox = _mft_matrix(ax, x, lam, -1) * dx / np.sqrt(lam)
        oy = _mft_matrix(ay, x, lam, -1) * dx / np.sqrt(lam)
        phase_w = np.exp(2j * np.pi * wfe / lam)
        for sx, sy, flux in sources:
            if flux == 0:
                continue
            tx, ty = (sx - centre[0]) * scale[0] * ARCSEC, (sy - centre[1]) * scale[1] * ARCSEC
            e_p = pupil * phase_w * np.exp(2j * np.pi * (xx * tx + yy * ty) / lam)
            e_f = fy @ e_p @ fx.T
            e_l = (e_p - by @ (block * e_f) @ bx.T) * lyot
            image = np.abs(oy @ e_l @ ox.T) ** 2
            out += flux * image / norm
    # intensity per steradian × the pixel's solid angle, averaged over wavelengths and sub-pixels
    solid = scale[0] * scale[1] * ARCSEC ** 2
    out *= solid / len(np.atleast_1d(wavelength))
    return out.reshape(ny, 2, nx, 2).mean(axis=(1, 3))


def _band(filter_name):
    from webbflow.simulate.optics import FILTERS

    pivot = FILTERS[filter_name][0] * 1e-6
    return pivot * np.array([0.96, 1.0, 1.04])


def _mask_centre(spec):
    from webbflow.simulate.headers import pointing_keywords

    kw = pointing_keywords(spec)
    return float(kw["XREF_SCI"]) - 1.0, float(kw["YREF_SCI"]) - 1.0


def companion_radec(spec):
    """(RA, Dec) in degrees of the companion of ``spec``'s target (a small-angle offset from TARG_RA/DEC)."""
    scene = _scene(spec)
    pa = np.radians(scene.position_angle)
    dec = spec.dec + scene.separation * np.cos(pa) / 3600.0
    ra = spec.ra + scene.separation * np.sin(pa) / 3600.0 / np.cos(np.radians(spec.dec))
    return float(ra), float(dec)


def coron_positions(spec):
    """0-based pixel positions of the star and the companion in ``spec``'s exposure (true attitude).

    Returns
    -------
    dict
        ``star`` (x, y), ``companion`` (x, y), ``mask`` (x, y): the occulter's centre.
    """
    from webbflow.simulate import optics
    from webbflow.wcs import sky_to_v23

    attitude = optics.true_attitude(spec)
    out = {"mask": _mask_centre(spec)}
    for name, (ra, dec) in (("star", (spec.ra, spec.dec)), ("companion", companion_radec(spec))):
        v2, v3 = sky_to_v23(ra, dec, attitude)
        x, y = optics.v23_to_pixel(spec.detector, spec.geometry, v2, v3)
        out[name] = (float(x), float(y))
    return out


def _pixel_scale(spec):
    from webbflow.simulate.optics import SIAF

    return SIAF[spec.detector][3], SIAF[spec.detector][4]


def _wfe(spec):
    scene = _scene(spec)
    r = scene.optics.diameter / 2
    _, _, xx, yy, _, _ = _pupil(scene.optics)
    return (_wavefront(xx, yy, r, scene.wfe_nm, scene.wfe_seed)
            + _speckle_screen(xx.shape[0], scene.speckle_nm, scene.wfe_seed)
            + _wavefront(xx, yy, r, scene.drift_nm, [scene.wfe_seed, scene.drift_seed]))


def coron_rate(spec, components=False):
    """The star and companion of ``spec`` in DN/s per pixel, before sky and pixel response.

    Parameters
    ----------
    spec : ExposureSpec
        ``scene="coron"``.
    components : bool
        Return ``(star, companion)`` separately instead of their sum.

    Returns
    -------
    ndarray float64 (ny, nx), or a pair of them
    """
    scene = _scene(spec)
    pos = coron_positions(spec)
    kw = dict(shape=spec.geometry.shape, centre=pos["mask"], scale=_pixel_scale(spec),
              wavelength=_band(spec.filter), mask=scene.mask, wfe=_wfe(spec), optics=scene.optics,
              along=bar_offset(scene.mask, spec.filter))
    star = coron_image(sources=[(*pos["star"], scene.star_rate)], **kw)
    flux = 0.0 if scene.is_psf else scene.contrast * scene.star_rate
    companion = coron_image(sources=[(*pos["companion"], flux)], **kw) if flux else np.zeros_like(star)
    return (star, companion) if components else star + companion


def psfmask_array(spec):
    """PSFMASK weights on ``spec``'s subarray: the occulter's intensity transmission t² (0 at the centre,
    1 far out; a bar's whole length on the subarray), as the CRDS PSFMASK references are
    (coron-algorithms.md §3.4)."""
    scene = _scene(spec)
    xm, ym = _mask_centre(spec)
    sx, sy = _pixel_scale(spec)
    ny, nx = spec.geometry.shape
    t = occulter_map((np.arange(nx)[None, :] - xm) * sx, (np.arange(ny)[:, None] - ym) * sy, scene.mask,
                     bar_offset(scene.mask, spec.filter))
    return (t ** 2).astype(np.float32)


def mask_transmission(spec, x, y):
    """The occulter's intensity transmission t² at 0-based pixel (x, y) of ``spec``'s subarray."""
    scene = _scene(spec)
    xm, ym = _mask_centre(spec)
    sx, sy = _pixel_scale(spec)
    return float(occulter_map((x - xm) * sx, (y - ym) * sy, scene.mask, bar_offset(scene.mask, spec.filter)) ** 2)


def coron_truth(specs):
    """Truth tables of a coronagraphic program: ``companion`` and ``star_positions``."""
    import astropy.units as u
    from astropy.table import QTable

    from webbflow.simulate.optics import photmjsr

    sci = [s for s in specs if not _scene(s).is_psf]
    first = sci[0] if sci else specs[0]
    scene = _scene(first)
    ra, dec = companion_radec(first)
    flux = scene.contrast * scene.star_rate
    filters = sorted({s.filter for s in specs})
    companion = QTable()
    companion["filter"] = filters
    companion["ra"] = [ra] * len(filters) * u.deg
    companion["dec"] = [dec] * len(filters) * u.deg
    companion["separation"] = [scene.separation] * len(filters) * u.arcsec
    companion["position_angle"] = [scene.position_angle] * len(filters) * u.deg
    companion["contrast"] = [scene.contrast] * len(filters)
    companion["flux"] = [flux] * len(filters) * u.Unit("DN/s")
    companion["star_flux"] = [scene.star_rate] * len(filters) * u.Unit("DN/s")
    # round: at the separation; a bar: where the companion falls on the first science exposure (roll-dependent)
    transmission = (mask_transmission(first, *coron_positions(first)["companion"]) if is_bar(scene.mask)
                    else float(occulter_transmission(scene.separation, scene.mask) ** 2))
    companion["mask_transmission"] = [transmission] * len(filters)
    companion["photmjsr"] = [photmjsr(f, first.pupil) for f in filters]
    companion.meta["comments"] = [
        "webbflow injected companion: flux = contrast x star_flux, DN/s of the whole PSF through the Lyot"
        " stop, unocculted, before the pixel response (the flat); mask_transmission = occulter intensity"
        " transmission t^2 at its separation; position angle east of north"]
    rows = []
    for s in specs:
        pos = coron_positions(s)
        sc = _scene(s)
        rows.append((s.rootname, bool(sc.is_psf), s.filter, float(s.roll), s.dither_position,
                     sc.sgd_pattern or "NONE", s.dither_offset[0], s.dither_offset[1],
                     s.pointing_error[0], s.pointing_error[1], *pos["star"], *pos["mask"],
                     *(pos["companion"] if not sc.is_psf else (np.nan, np.nan)), sc.drift_nm))
    names = ("rootname", "is_psf", "filter", "roll", "dither", "sgd_pattern", "sgd_dra", "sgd_ddec",
             "ta_dra", "ta_ddec", "star_x", "star_y", "mask_x", "mask_y", "companion_x", "companion_y",
             "drift_nm")
    positions = QTable(rows=rows, names=names)
    for c in ("sgd_dra", "sgd_ddec", "ta_dra", "ta_ddec"):
        positions[c].unit = u.arcsec
    for c in ("star_x", "star_y", "mask_x", "mask_y", "companion_x", "companion_y"):
        positions[c].unit = u.pix
    positions["roll"].unit = u.deg
    positions.meta["comments"] = [
        "webbflow true positions per exposure: 0-based subarray pixels of the star, the occulter centre"
        " (XREF_SCI-1, YREF_SCI-1) and the companion (NaN for PSF references); sgd = small-grid-dither"
        " offset (commanded, in the header), ta = target-acquisition + FSM error (true - commanded, not"
        " in the header); roll = V3 position angle; drift_nm = wavefront drift of the exposure"]
    return {"companion": companion, "star_positions": positions}


PSF_TEMPLATE = "psf_template.fits"
"""The unocculted PSF the simulator writes beside the truth tables (``truth/psf_template.fits``)."""


def psf_template(spec, size=41, offset_arcsec=8.0):
    """The unocculted PSF of a unit-flux source in ``spec``'s optics, centred on the middle pixel.

    The source is put ``offset_arcsec`` from the occulter (whose core the optics model samples only
    within ``occulter_half_size``), so the image is the Lyot-stopped PSF with the exposure's wavefront;
    it is not renormalised: its sum is the fraction of the source's flux on the ``size`` x ``size``
    stamp.

    Parameters
    ----------
    spec : ExposureSpec
        ``scene="coron"`` (the first science exposure: the companion's wavefront).
    size : int
        Odd stamp size (pixels).
    offset_arcsec : float
        Distance of the source from the occulter's centre.

    Returns
    -------
    ndarray float64 (size, size)
        DN/s per pixel of a 1 DN/s source.
    """
    scene = _scene(spec)
    scale = _pixel_scale(spec)
    half = size // 2
    # off a bar across it (along it the source would stay behind the bar)
    centre = ((float(half), half - offset_arcsec / scale[1]) if is_bar(scene.mask)
              else (half - offset_arcsec / scale[0], float(half)))
    return coron_image(shape=(size, size), centre=centre, scale=scale, sources=[(half, half, 1.0)],
                       wavelength=_band(spec.filter), mask=scene.mask, wfe=_wfe(spec), optics=scene.optics,
                       along=bar_offset(scene.mask, spec.filter))


def write_coron_truth(outdir, specs):
    """Write ``truth/{companion,star_positions}.ecsv`` and ``truth/psf_template.fits`` (the first science
    exposure's unocculted PSF, :func:`psf_template`); returns name -> Path."""
    from pathlib import Path

    from astropy.io import fits

    from webbflow.io.files import atomic_output
    from webbflow.simulate.tso_grism import write_truth_tables

    paths = write_truth_tables(outdir, coron_truth(specs))
    sci = [s for s in specs if not _scene(s).is_psf] or list(specs)
    template = psf_template(sci[0])
    header = fits.Header()
    header["BUNIT"] = ("DN/s", "per pixel, for 1 DN/s through the Lyot stop")
    header["FLUXFRAC"] = (float(template.sum()), "fraction of the flux on this stamp")
    header["FILTER"], header["CORONMSK"] = sci[0].filter, _scene(sci[0]).mask
    path = Path(outdir) / "truth" / PSF_TEMPLATE
    with atomic_output(path) as tmp:
        fits.PrimaryHDU(template.astype(np.float32), header).writeto(tmp)
    paths["psf_template"] = path
    return paths


CORON_P_EXP_TYPE = "NRC_CORON|"


def _write_psfmask(path, spec, extra):
    from astropy.io import fits

    from webbflow.io.files import atomic_output
    from webbflow.simulate.stage2_refs import _primary

    geom = spec.geometry
    header = _primary("psfmask", "PsfMaskModel", spec.detector, {
        "FILTER": spec.filter, "PUPIL": spec.pupil, "CORONMSK": _scene(spec).mask, "EXP_TYPE": spec.exp_type,
        "P_EXP_TY": CORON_P_EXP_TYPE, "SUBARRAY": geom.name, "SUBSTRT1": geom.xstart, "SUBSTRT2": geom.ystart,
        "SUBSIZE1": geom.xsize, "SUBSIZE2": geom.ysize,
        "DESCRIP": f"webbflow synthetic PSF mask {_scene(spec).mask} {spec.filter}", "FILENAME": path.name, **extra})
    with atomic_output(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(header=header), fits.ImageHDU(psfmask_array(spec), name="SCI")]).writeto(tmp)


def write_coron_references(outdir, spec):
    """Write the stage-2 (and coron3) references of a coronagraphic ``spec`` into ``<outdir>/refs``.

    FLAT (FILTER + PUPIL MASKRND at the subarray), PHOTOM (with the coronagraphic rows), AREA and
    DISTORTION targeted to NRC_CORON (the stage-1 dark too: the local CRDS cache matches EXP_TYPE
    literally for dark, area and distortion), and PSFMASK (the occulter's t² on the subarray).

    Returns
    -------
    dict
        reftype -> Path: flat, photom, area, distortion, psfmask.
    """
    from pathlib import Path

    from webbflow.simulate.stage2_refs import retarget_exp_type, write_stage2_references
    from webbflow.simulate.writers import reference_path

    extra = {"WFSEED": spec.ref_seed, "EXP_TYPE": spec.exp_type, "P_EXP_TY": CORON_P_EXP_TYPE}
    paths = write_stage2_references(outdir, spec.detector, spec.geometry, spec.filter, spec.pupil,
                                    spec.ref_seed, extra_keywords=extra)
    for path in (paths["distortion"], reference_path(outdir, spec.detector, "dark", spec.geometry.name)):
        retarget_exp_type(path, spec.exp_type, CORON_P_EXP_TYPE)
    psfmask = Path(outdir) / "refs" / f"webbflow_{spec.detector}_psfmask_{spec.filter}_{spec.geometry.name}.fits".lower()
    _write_psfmask(psfmask, spec, {"WFSEED": spec.ref_seed})
    return {**paths, "psfmask": psfmask}
