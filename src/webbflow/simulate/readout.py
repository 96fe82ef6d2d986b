"""Frame-by-frame integration of a ramp: signal, non-linearity, saturation, noise.

Per integration and frame ``k`` (read ``(k+1)·tframe`` after the reset):

* charge: Poisson electrons from the true rate (+ cosmic-ray deposits), in DN
  through the gain, plus the deterministic dark of the dark reference;
* the detector response: the inverse of the linearity correction;
* the well: the bias-included value stops at the pixel's full well;
* bias (superbias + kTC + amplifier offsets), white read noise and 1/f noise;
* groups average ``nframes`` frames; ``groupgap`` frames are read and dropped.
"""

from __future__ import annotations

import numpy as np

from webbflow.simulate.detector_model import ADC_MAX, delinearize
from webbflow.simulate.detectors import DETECTORS
from webbflow.simulate.events import frames_read
from webbflow.simulate.noise import OneOverF, amplifier_offsets

__all__ = ["RampResult", "integrate_exposure", "KTC_ELECTRONS"]

KTC_ELECTRONS = {"SHORT": 37.6, "LONG": 36.8}
"""Reset (kTC) noise per channel, e- (pynrc)."""


class RampResult:
    """What :func:`integrate_exposure` returns.

    Attributes
    ----------
    sci : ndarray uint16 (nints, ngroups, ny, nx)
    zeroframe : ndarray uint16 (nints, ny, nx)
        First frame of each integration.
    first_saturated : ndarray int16 (nints, ny, nx)
        First group whose value reaches the saturation threshold, -1 if none.
    """

    def __init__(self, sci, zeroframe, first_saturated):
        self.sci = sci
        self.zeroframe = zeroframe
        self.first_saturated = first_saturated


def _to_uint16(values):
    return np.clip(np.rint(values), 0, ADC_MAX).astype(np.uint16)


def integrate_exposure(spec, model, rate, deposits, rng):
    """Simulate the raw ramps of ``spec``.

    Parameters
    ----------
    spec : ExposureSpec
    model : DetectorModel
    rate : ndarray (ny, nx) or (nints, ny, nx)
        True count rate, DN/s (dark excluded); 3-D: one image per integration
        of the file (a time series whose scene changes, e.g. a transit).
    deposits : Deposits
        Cosmic rays and snowballs.
    rng : numpy.random.Generator

    Returns
    -------
    RampResult
    """
    info = DETECTORS[spec.detector]
    geom = model.geometry
    ny, nx = geom.shape
    nf, gap, ng = spec.nframes, spec.groupgap, spec.ngroups
    per = nf + gap
    nread = frames_read(ng, nf, gap)
    tframe = model.tframe
    gain = model.gain.astype(np.float64)
    dark_frames = model.dark_frames(nread)
    sigma_read = model.readnoise.astype(np.float64) / np.sqrt(2.0)
    rate = np.asarray(rate)
    if rate.ndim == 3 and rate.shape[0] != spec.nints:
        raise ValueError(f"rate has {rate.shape[0]} integrations, the exposure {spec.nints}")
    if rate.shape[-2:] != (ny, nx):
        raise ValueError(f"rate shape {rate.shape} does not match the array {(ny, nx)}")
    full_well = model.full_well.astype(np.float64)
    # Independent streams, so switching one ingredient off leaves the others unchanged.
    r_ktc, r_amp, r_1f, r_read, r_poisson = rng.spawn(5)

    sci = np.empty((spec.nints, ng, ny, nx), np.uint16)
    zeroframe = np.empty((spec.nints, ny, nx), np.uint16)
    e_per_frame = None
    for i in range(spec.nints):
        if rate.ndim == 3 or e_per_frame is None:
            e_per_frame = np.maximum(rate[i] if rate.ndim == 3 else rate, 0).astype(np.float64) * gain * tframe
        bias = model.superbias.astype(np.float64)
        if spec.ktc:
            bias = bias + r_ktc.normal(0.0, 1.0, (ny, nx)) * (KTC_ELECTRONS[info.channel] / gain)
        if spec.amp_offsets > 0:
            bias = bias + amplifier_offsets(geom, spec.detector, spec.amp_offsets, r_amp)
        flicker = (OneOverF(geom, spec.detector, nread, spec.one_over_f, r_1f,
                            common_fraction=spec.one_over_f_common)
                   if spec.one_over_f > 0 else None)
        mine = deposits.integration == i
        frame_of = deposits.frame[mine]
        dy, dx = deposits.y[mine], deposits.x[mine]
        de = deposits.amplitude[mine] * gain[dy, dx]

        electrons = np.zeros((ny, nx))
        group_sum = np.zeros((ny, nx))
        for k in range(nread):
            if spec.poisson:
                electrons += r_poisson.poisson(e_per_frame)
            else:
                electrons += e_per_frame
            hit = frame_of == k
            if hit.any():
                np.add.at(electrons, (dy[hit], dx[hit]), de[hit])
            in_group = k % per < nf
            if not in_group:
                continue  # dropped frame: charge accumulates, nothing is kept
            linear = electrons / gain + dark_frames[k]
            measured = delinearize(linear, model.coeffs) if spec.nonlinearity else linear
            raw = np.minimum(bias + measured, full_well)
            if spec.read_noise:
                raw += r_read.normal(0.0, 1.0, (ny, nx)) * sigma_read
            if flicker is not None:
                raw += flicker.frame(k)
            if k == 0:
                zeroframe[i] = _to_uint16(raw)
            if in_group:
                group_sum += raw
                if k % per == nf - 1:
                    sci[i, k // per] = _to_uint16(group_sum / nf)
                    group_sum[:] = 0.0

    thresh = model.sat_thresh
    first = np.full((spec.nints, ny, nx), -1, np.int16)
    for g in range(ng - 1, -1, -1):
        first[sci[:, g] >= thresh] = g
    return RampResult(sci, zeroframe, first)
