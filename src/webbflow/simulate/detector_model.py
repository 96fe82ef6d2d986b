"""The static detector: bias, gain, noise, dark, linearity, saturation, bad pixels.

One :class:`DetectorModel` is both the physics the simulator applies and the
content of the reference files it writes, so the pipeline's corrections are
exact inverses of what went in (dark, superbias, linearity, saturation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from webbflow import dqflags
from webbflow.simulate.detectors import DETECTORS, Geometry, frame_time

__all__ = ["DetectorModel", "make_detector_model", "linearize", "delinearize"]

ADC_MAX = 65535
SAT_MARGIN = 300.0
"""Raw DN by which a full well sits above the saturation-reference threshold."""


@dataclass
class DetectorModel:
    """Per-pixel detector properties on one (sub)array, science frame.

    Attributes
    ----------
    detector : str
    geometry : Geometry
    tframe : float
        Frame time, s.
    superbias : ndarray float32 (ny, nx)
        Bias level, DN.
    gain : ndarray float32 (ny, nx)
        e-/DN.
    readnoise : ndarray float32 (ny, nx)
        CDS read noise, DN (single frame noise is this / sqrt(2)).
    dark_rate : ndarray float32 (ny, nx)
        Dark current, DN/s (0 on reference pixels).
    coeffs : ndarray float32 (ncoeffs, ny, nx)
        Linearity correction: linear = sum_i c_i m^i on bias-subtracted DN.
    sat_thresh : ndarray float32 (ny, nx)
        Saturation threshold in raw DN (bias included).
    full_well : ndarray float32 (ny, nx)
        Raw DN at which a pixel stops integrating (> sat_thresh).
    mask : ndarray uint32 (ny, nx)
        JWST DQ bits of the MASK reference.
    qe : ndarray float32 (ny, nx)
        Relative response to light (0 for dead and reference pixels).
    """

    detector: str
    geometry: Geometry
    tframe: float
    superbias: np.ndarray
    gain: np.ndarray
    readnoise: np.ndarray
    dark_rate: np.ndarray
    coeffs: np.ndarray
    sat_thresh: np.ndarray
    full_well: np.ndarray
    mask: np.ndarray
    qe: np.ndarray

    @property
    def refpix(self):
        """Boolean map of reference pixels."""
        return (self.mask & dqflags.REFERENCE_PIXEL) != 0

    def dark_frames(self, nframes):
        """Dark reference cube: accumulated dark (DN) at the read of each frame.

        Frame ``k`` is read ``(k + 1) * tframe`` after the reset.
        """
        k = np.arange(1, nframes + 1, dtype=np.float32)[:, None, None]
        return (k * np.float32(self.tframe)) * self.dark_rate[None]

    def group_dark(self, ngroups, nframes, groupgap):
        """Dark per group, averaged over frames exactly as the dark step does.

        Returns float32 (ngroups, ny, nx).
        """
        frames = self.dark_frames(ngroups * (nframes + groupgap))
        per = nframes + groupgap
        out = np.empty((ngroups,) + frames.shape[1:], np.float32)
        for g in range(ngroups):
            out[g] = frames[g * per: g * per + nframes].mean(axis=0, dtype=np.float32)
        return out


def _smooth_field(rng, shape, scale):
    """A smooth random field in [-1, 1] built from a few low-order cosines."""
    ny, nx = shape
    y = np.linspace(0, 1, ny)[:, None]
    x = np.linspace(0, 1, nx)[None, :]
    field = np.zeros(shape)
    for _ in range(4):
        kx, ky = rng.uniform(0.3, scale, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        field += np.cos(2 * np.pi * kx * x + px) * np.cos(2 * np.pi * ky * y + py)
    return field / 4


def make_detector_model(detector, geometry, rng, *, bad_pixel_fraction=0.002):
    """Draw a detector model for ``detector`` on ``geometry``.

    Parameters
    ----------
    detector : str
        DETECTOR value.
    geometry : Geometry
        The array the references (and exposures) cover.
    rng : numpy.random.Generator
        Source of randomness (the model is a deterministic function of it).
    bad_pixel_fraction : float
        Fraction of light-sensitive pixels made dead (1/3) or hot (2/3).

    Returns
    -------
    DetectorModel
    """
    info = DETECTORS[detector]
    shape = geometry.shape
    ny, nx = shape
    refpix = geometry.reference_pixels()

    # Superbias: ~12-16 kDN with smooth, column and pixel structure.
    bias = (rng.uniform(12000, 16000) + 1500 * _smooth_field(rng, shape, 2.0)
            + rng.normal(0, 40, nx)[None, :] + rng.normal(0, 120, shape))
    gain = info.gain * (1 + 0.02 * _smooth_field(rng, shape, 1.5) + rng.normal(0, 0.005, shape))
    rn_e = 13.25 if info.is_long else 15.77  # CDS noise in e-
    readnoise = rn_e / info.gain * (1 + rng.normal(0, 0.05, shape))
    dark_e = 0.034 if info.is_long else 0.002  # e-/s
    dark = np.abs(rng.normal(dark_e, dark_e / 3, shape)) / gain

    mask = np.zeros(shape, np.uint32)
    mask[refpix] |= dqflags.REFERENCE_PIXEL
    qe = np.where(refpix, 0.0, 1.0)
    light = np.flatnonzero(~refpix)
    nbad = int(round(bad_pixel_fraction * light.size))
    bad = rng.choice(light, size=nbad, replace=False)
    dead, hot = bad[: nbad // 3], bad[nbad // 3:]
    mask.flat[dead] |= dqflags.DEAD | dqflags.DO_NOT_USE
    qe.flat[dead] = 0.0
    mask.flat[hot] |= dqflags.HOT | dqflags.DO_NOT_USE
    dark.flat[hot] = 10 ** rng.uniform(0, 1.5, hot.size)  # 1-30 DN/s
    warm = rng.choice(light, size=max(1, nbad // 2), replace=False)
    warm = warm[(mask.flat[warm] & dqflags.DO_NOT_USE) == 0]
    mask.flat[warm] |= dqflags.WARM
    dark.flat[warm] = rng.uniform(0.05, 0.3, warm.size)
    dark[qe == 0] = 0.0  # reference and dead pixels collect no dark charge

    # Linearity correction linear = m + c2 m^2 + c3 m^3 + c4 m^4 (m = bias-subtracted DN):
    # the detector is sub-linear, so the correction is >= m (about +8 % at 40 kDN).
    coeffs = np.zeros((5,) + shape, np.float32)
    coeffs[1] = 1.0
    coeffs[2] = 1.2e-6 * (1 + rng.normal(0, 0.05, shape))
    coeffs[3] = 2.0e-11 * (1 + rng.normal(0, 0.05, shape))
    coeffs[4] = -1.0e-16

    # Saturation: full well of ~40 kDN above bias, below the 16-bit ADC ceiling.
    well = rng.normal(40000, 1500, shape)
    sat = np.minimum(bias + well, ADC_MAX - 3 * SAT_MARGIN)
    full_well = sat + SAT_MARGIN

    f32 = np.float32
    return DetectorModel(
        detector=detector, geometry=geometry, tframe=frame_time(geometry),
        superbias=bias.astype(f32), gain=gain.astype(f32), readnoise=readnoise.astype(f32),
        dark_rate=dark.astype(f32), coeffs=coeffs, sat_thresh=sat.astype(f32),
        full_well=full_well.astype(f32), mask=mask, qe=qe.astype(f32),
    )


@njit(cache=True)
def _delinearize(linear, coeffs, out):
    ny, nx = linear.shape
    nc = coeffs.shape[0]
    # Serial on purpose: on the shared 2-core machines threads lost to contention.
    for y in range(ny):
        for x in range(nx):
            target = linear[y, x]
            m = target
            # Newton on f(m) - target; f is monotonic and close to identity,
            # so 3-5 steps reach float64 precision.
            for _ in range(30):
                f = 0.0
                df = 0.0
                for i in range(nc - 1, -1, -1):  # Horner for f and f'
                    df = df * m + f
                    f = f * m + coeffs[i, y, x]
                step = (f - target) / df
                m -= step
                if abs(step) < 1e-7:
                    break
            out[y, x] = m


def delinearize(linear, coeffs):
    """Measured (non-linear) DN whose linearity correction gives ``linear``.

    Parameters
    ----------
    linear : ndarray (ny, nx)
        Linear, bias-subtracted DN.
    coeffs : ndarray (ncoeffs, ny, nx)
        Correction polynomial coefficients (``linear = sum c_i m^i``).

    Returns
    -------
    ndarray float64 (ny, nx)
    """
    linear = np.ascontiguousarray(linear, dtype=np.float64)
    out = np.empty_like(linear)
    _delinearize(linear, np.ascontiguousarray(coeffs, dtype=np.float64), out)
    return out


def linearize(measured, coeffs):
    """Apply the correction polynomial ``sum c_i m^i`` (float64)."""
    measured = np.asarray(measured, dtype=np.float64)
    acc = np.zeros_like(measured)
    for c in coeffs[::-1]:
        acc = acc * measured + c
    return acc
