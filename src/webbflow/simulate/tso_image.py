"""An imaging time series (NRC_TSIMAGE): one star on a small subarray, transited by a planet, moving.

The scene of ``ExposureSpec(scene="tso_image", tso=TsoImageScene(...))`` (issue #14 part 1):

* **PSF** (:class:`TsoPsf`): for a weak lens (WLP8) a uniform annulus of radii ``r_inner`` …
  ``r_outer`` (the defocused, centrally obscured pupil) convolved with a Gaussian of σ ``sigma``;
  in focus (``r_outer`` 0) the Gaussian alone.  The image of each pixel is the PSF integrated over
  the pixel's area, computed exactly in Fourier space (annulus 2 [R J1(2πfR)]/… × Gaussian ×
  sinc(fx) sinc(fy) × the phase of the centre) for the annulus, and with ``erf`` for the Gaussian
  alone.  It integrates to 1 over the plane, so the star's total is ``total_rate`` DN/s (all
  pixels, before the pixel response) times the transit.  The real WLP8 donut of the SW channel is
  larger than SUB64P (which is why jwst's tso_photometry sums the whole SUB64P + WLP8 subarray); the
  demo's (r 8–20 px, σ 1.5 px) is scaled down so that the whole PSF lands on the light-sensitive
  pixels and the sum of the subarray is the total flux (``psf_fraction`` in the truth says how
  much: 1 to ~1e-9).
* **Position**: 0-based ``(XREF_SCI − 1, YREF_SCI − 1)`` (where target acquisition put the star)
  plus, per integration, a slow linear drift and jitter on each axis
  (:func:`webbflow.simulate.tso_grism.pointing_track`, independent draws per axis) and one sudden
  step of ``step`` pixels from integration ``step_integration`` on (a high-gain-antenna move, say).
* **Transit**: :func:`webbflow.transit.relative_flux` at the transit's ``wave_ref`` (the filter's
  pivot), evaluated at each integration's INT_TIMES ``int_mid_MJD_UTC``.
* **Sky** and the **pixel response** as the grism scene (:func:`tso_grism.detector_rate`).

Truth (:func:`write_tso_image_truth`): ``transit.ecsv`` (per integration: relative flux), ``centroid.ecsv``
(per integration: x, y of the PSF centre, 0-based subarray pixels, the drift and the step marked,
the fraction of the PSF on the light-sensitive pixels) and ``star.ecsv`` (total rate, PSF model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import j1

from webbflow.simulate.detectors import DETECTORS
from webbflow.simulate.tso_grism import (_profile, exposure_times, pointing_track, transit_meta,
                                         write_truth_tables)
from webbflow.simulate.headers import int_times_table
from webbflow.transit import TransitParams, relative_flux

__all__ = ["TsoPsf", "TsoImageScene", "psf_images", "star_positions", "star_rate_cube",
           "tso_image_truth", "write_tso_image_references", "write_tso_image_truth"]


@dataclass(frozen=True)
class TsoPsf:
    """The PSF of an imaging time series (see the module docstring).

    Attributes
    ----------
    r_outer, r_inner : float
        Radii (pixels) of the uniform annulus of a defocused (weak-lens) image; ``r_outer`` 0: in focus.
    sigma : float
        σ (pixels) of the Gaussian the annulus is convolved with (the whole PSF when in focus).
    """

    r_outer: float = 0.0
    r_inner: float = 0.0
    sigma: float = 1.0

    def __post_init__(self):
        bad_ring = self.r_inner < 0 or (self.r_inner >= self.r_outer if self.r_outer > 0 else self.r_inner != 0)
        if self.sigma <= 0 or bad_ring:
            raise ValueError(f"bad PSF {self}: need sigma > 0 and 0 <= r_inner < r_outer (or both 0)")

    @property
    def defocused(self):
        return self.r_outer > 0


@dataclass(frozen=True)
class TsoImageScene:
    """The star, its transit and the pointing of an imaging time series.

    Attributes
    ----------
    transit : TransitParams
        The planet (t0 in MJD UTC); evaluated at ``transit.wave_ref`` (µm).
    total_rate : float
        DN/s of the whole PSF, out of transit, before the pixel response.
    psf : TsoPsf
    drift_rate : (float, float)
        Slow drift (x, y), pixels per second of exposure.
    jitter_rms : float
        Per-integration pointing jitter on each axis, pixels (rms).
    jitter_seed : int
    step_integration : int or None
        First integration (1-based, of the exposure) after the sudden step; None: no step.
    step : (float, float)
        The step (x, y), pixels.
    """

    transit: TransitParams
    total_rate: float = 3.0e5
    psf: TsoPsf = field(default_factory=TsoPsf)
    drift_rate: tuple = (0.0, 0.0)
    jitter_rms: float = 0.0
    jitter_seed: int = 0
    step_integration: int | None = None
    step: tuple = (0.0, 0.0)


def _scene(spec):
    if not isinstance(spec.tso, TsoImageScene):
        raise ValueError("scene='tso_image' needs ExposureSpec.tso (a TsoImageScene)")
    return spec.tso


def _reference_position(spec):
    """0-based subarray pixel of XREF_SCI/YREF_SCI (the SCI header's, where TA put the star)."""
    from webbflow.simulate.headers import pointing_keywords

    kw = pointing_keywords(spec)
    return float(kw["XREF_SCI"]) - 1.0, float(kw["YREF_SCI"]) - 1.0


def star_positions(spec, integrations=None):
    """True PSF centre (x, y; 0-based subarray pixels) and the step flag per integration.

    Parameters
    ----------
    spec : ExposureSpec
        Any segment of the exposure.
    integrations : array_like of int, optional
        1-based integration numbers of the exposure; default those of ``spec``'s file.

    Returns
    -------
    x, y : ndarray
    after_step : ndarray of bool
        True from ``step_integration`` on.
    """
    scene = _scene(spec)
    if integrations is None:
        integrations = spec.first_int + 1 + np.arange(spec.nints)
    integrations = np.asarray(integrations, int)
    x0, y0 = _reference_position(spec)
    # streams 18/17: x and y draw independent jitter (17 is the grism's y series)
    dx = pointing_track(spec, scene.drift_rate[0], scene.jitter_rms, scene.jitter_seed, integrations, stream=18)
    dy = pointing_track(spec, scene.drift_rate[1], scene.jitter_rms, scene.jitter_seed, integrations, stream=17)
    after = np.zeros(integrations.shape, bool) if scene.step_integration is None \
        else integrations >= scene.step_integration
    return x0 + dx + scene.step[0] * after, y0 + dy + scene.step[1] * after, after


def _fft_size(n):
    return int(2 ** np.ceil(np.log2(2 * n)))


def psf_images(psf, shape, x, y):
    """Pixel-integrated PSF images centred at (x, y) (0-based pixels), each integrating to 1 over the plane.

    Parameters
    ----------
    psf : TsoPsf
    shape : (int, int)
        (ny, nx) of the array.
    x, y : array_like
        Centres, one image each.

    Returns
    -------
    ndarray float64 (n, ny, nx)
        Pixel (j, i) holds the PSF integrated over [i − ½, i + ½] × [j − ½, j + ½].
    """
    ny, nx = shape
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    if not psf.defocused:
        # separable: a pixel-integrated Gaussian along each axis
        gx = _profile(nx, x, np.full(x.size, psf.sigma))  # (nx, n)
        gy = _profile(ny, y, np.full(y.size, psf.sigma))  # (ny, n)
        return gy.T[:, :, None] * gx.T[:, None, :]
    # The annulus convolved with the Gaussian and the pixel box, in Fourier space on a grid at least
    # twice the array (the PSF must stay well inside it: what leaves the array is not wrapped back in).
    n = _fft_size(max(ny, nx))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.hypot(fx, fy)
    ro, ri = psf.r_outer, psf.r_inner
    with np.errstate(divide="ignore", invalid="ignore"):
        ring = (ro * j1(2 * np.pi * f * ro) - ri * j1(2 * np.pi * f * ri)) / (np.pi * f * (ro ** 2 - ri ** 2))
    ring[0, 0] = 1.0
    otf = ring * np.exp(-2 * np.pi ** 2 * psf.sigma ** 2 * f ** 2) * np.sinc(fx) * np.sinc(fy)
    phase = np.exp(-2j * np.pi * (fx[None] * x[:, None, None] + fy[None] * y[:, None, None]))
    image = np.fft.irfft2(otf[None] * phase, s=(n, n), axes=(-2, -1))
    return image[:, :ny, :nx]


def _transit_flux(spec, mid_times):
    tp = _scene(spec).transit
    return relative_flux(mid_times, [tp.wave_ref], tp)[:, 0]


def star_rate_cube(spec):
    """The star alone, per integration: total_rate · f_i · PSF_i, DN/s, float64 (nints, ny, nx).

    Before the pixel response and without sky; the truth that sums of the rate follow
    (:func:`webbflow.simulate.tso_grism.detector_rate` turns it into what the pixels see).
    """
    scene = _scene(spec)
    x, y, _ = star_positions(spec)
    flux = _transit_flux(spec, int_times_table(spec)["int_mid_MJD_UTC"])
    return psf_images(scene.psf, spec.geometry.shape, x, y) * (scene.total_rate * flux)[:, None, None]


def tso_image_truth(specs):
    """Truth tables of one imaging time series from all its segment specs.

    Parameters
    ----------
    specs : sequence of ExposureSpec
        The exposure's segments (any order; ``tso_image`` scenes).

    Returns
    -------
    dict of astropy.table.QTable
        ``transit``, ``centroid``, ``star``.
    """
    import astropy.units as u
    from astropy.table import QTable

    specs, times, seg = exposure_times(specs)
    spec = specs[0]
    scene = _scene(spec)
    tp = scene.transit
    flux = _transit_flux(spec, times["int_mid_MJD_UTC"])
    numbers = times["integration_number"]
    x, y, after = star_positions(spec, numbers)
    x0, y0 = _reference_position(spec)
    light = spec.geometry.reference_pixels() == 0  # the light-sensitive pixels of the subarray
    fraction = (psf_images(scene.psf, spec.geometry.shape, x, y) * light).sum(axis=(1, 2))

    transit = QTable()
    transit["integration"] = numbers.astype(np.int32)
    transit["segment"] = seg.astype(np.int32)
    transit["int_mid_MJD_UTC"] = times["int_mid_MJD_UTC"] * u.d
    transit["int_mid_BJD_TDB"] = times["int_mid_BJD_TDB"] * u.d
    transit["white_flux"] = flux
    depth = float(tp.depth_at(tp.wave_ref))
    u1, u2 = tp.ld_at(tp.wave_ref)
    transit.meta.update({
        "comments": ["webbflow simulated transit truth (imaging time series): relative flux of the star"
                     " (1 out of transit) per integration, evaluated at int_mid_MJD_UTC"],
        **transit_meta(tp), "white_depth": depth, "u1": float(u1), "u2": float(u2),
        "filter": spec.filter, "pupil": spec.pupil, "nints": int(times.size)})

    centroid = QTable()
    centroid["integration"] = transit["integration"]
    centroid["segment"] = transit["segment"]
    centroid["int_mid_MJD_UTC"] = transit["int_mid_MJD_UTC"]
    centroid["x"] = x * u.pix
    centroid["y"] = y * u.pix
    centroid["dx"] = (x - x0) * u.pix
    centroid["dy"] = (y - y0) * u.pix
    centroid["after_step"] = after
    centroid["step"] = np.r_[False, np.diff(after.astype(int)) > 0] if after.size else after
    centroid["psf_fraction"] = fraction
    centroid.meta.update({
        "comments": ["webbflow injected position of the star per integration: PSF centre in 0-based subarray"
                     " pixels (x, y), offset from XREF_SCI-1/YREF_SCI-1 (dx, dy) = drift + jitter + step;"
                     " step marks the first integration after the sudden step, after_step all from there;"
                     " psf_fraction = share of the PSF on the light-sensitive pixels"],
        "xref_sci": x0 + 1.0, "yref_sci": y0 + 1.0, "drift_rate_x_pix_per_s": float(scene.drift_rate[0]),
        "drift_rate_y_pix_per_s": float(scene.drift_rate[1]), "jitter_rms_pix": scene.jitter_rms,
        "jitter_seed": scene.jitter_seed,
        "step_integration": -1 if scene.step_integration is None else int(scene.step_integration),
        "step_x_pix": float(scene.step[0]), "step_y_pix": float(scene.step[1])})

    gain = DETECTORS[spec.detector].gain
    star = QTable()
    star["filter"] = [spec.filter]
    star["pupil"] = [spec.pupil]
    star["total_rate"] = [scene.total_rate] * u.Unit("DN/s")
    star["total_rate_e"] = [scene.total_rate * gain] * u.Unit("electron/s")
    star["psf_model"] = ["annulus*gaussian" if scene.psf.defocused else "gaussian"]
    star["r_outer"] = [scene.psf.r_outer] * u.pix
    star["r_inner"] = [scene.psf.r_inner] * u.pix
    star["sigma"] = [scene.psf.sigma] * u.pix
    star["x_ref"] = [x0] * u.pix
    star["y_ref"] = [y0] * u.pix
    star["sky"] = [spec.sky] * u.Unit("DN/s")
    star.meta.update({
        "comments": ["webbflow simulated star of an imaging time series: total_rate = the whole PSF out of"
                     " transit (DN/s, before the pixel response; total_rate_e with the nominal gain);"
                     " PSF = uniform annulus r_inner..r_outer convolved with a Gaussian sigma, pixel-integrated"
                     " (in focus: the Gaussian alone); x_ref, y_ref = XREF_SCI-1, YREF_SCI-1 (0-based);"
                     " sky in DN/s per pixel (times the relative pixel area)"],
        "detector": spec.detector, "subarray": spec.geometry.name, "substrt1": spec.geometry.xstart,
        "substrt2": spec.geometry.ystart, "nominal_gain": gain,
        "min_psf_fraction": float(fraction.min())})
    return {"transit": transit, "centroid": centroid, "star": star}


TSIMAGE_P_EXP_TYPE = "NRC_TSIMAGE|"


def write_tso_image_references(outdir, spec):
    """Write the stage-2 references of an imaging time series ``spec`` into ``<outdir>/refs``.

    FLAT (the exposure's PUPIL, e.g. WLP8, at the subarray), PHOTOM (with the weak-lens rows),
    AREA and DISTORTION as imaging uses them (:func:`webbflow.simulate.stage2_refs.write_stage2_references`),
    targeted to NRC_TSIMAGE; the stage-1 dark too (the local CRDS cache matches EXP_TYPE literally
    for dark, area and distortion).

    Parameters
    ----------
    outdir : path-like
        Simulation folder (the stage-1 references of ``spec`` are already in ``refs/``).
    spec : ExposureSpec
        An NRC_TSIMAGE exposure.

    Returns
    -------
    dict
        reftype -> Path: flat, photom, area, distortion.
    """
    from webbflow.simulate.stage2_refs import retarget_exp_type, write_stage2_references
    from webbflow.simulate.writers import reference_path

    extra = {"WFSEED": spec.ref_seed, "EXP_TYPE": spec.exp_type, "P_EXP_TY": TSIMAGE_P_EXP_TYPE}
    paths = write_stage2_references(outdir, spec.detector, spec.geometry, spec.filter, spec.pupil,
                                    spec.ref_seed, extra_keywords=extra)
    for path in (paths["distortion"], reference_path(outdir, spec.detector, "dark", spec.geometry.name)):
        retarget_exp_type(path, spec.exp_type, TSIMAGE_P_EXP_TYPE)  # the ASDF takes no extra keywords
    return paths


def write_tso_image_truth(outdir, specs):
    """Write ``truth/{transit,centroid,star}.ecsv`` for one imaging time series; returns name -> Path."""
    return write_truth_tables(outdir, tso_image_truth(specs))
