"""Ramp fitting: ordinary least squares with optimal weighting (jwst 3.0 / stcal 1.20 ``OLS_C``).

Each integration's ramp is cut into segments at flagged groups (a group flagged
only JUMP starts the next segment), each segment is fitted with the
SNR-dependent "optimal" weights of Fixsen et al. (2000), and segments and
integrations are combined with inverse read-noise-variance weights, as stcal
>= 1.19 does. The per-pixel work is in :mod:`webbflow.steps._ramp_numba`.
"""

import logging
from dataclasses import dataclass

import numpy as np

from webbflow import dqflags
from webbflow.ramp import StepStatus

from ._ramp_numba import fit_rows_threaded, row_network, weight_table

__all__ = ["ImageArrays", "OPT_ARRAYS", "RampFitResult", "run", "fit_ramps"]

log = logging.getLogger(__name__)


@dataclass
class ImageArrays:
    """Arrays of a rate (2-D) or rateints (3-D) product.

    Attributes
    ----------
    data : ndarray, float32
        Count rate in DN/s (NaN where DO_NOT_USE or SATURATED).
    dq : ndarray, uint32
    var_poisson, var_rnoise : ndarray, float32
        Poisson and read-noise variances of ``data`` in (DN/s)^2.
    err : ndarray, float32
        Total error in DN/s.
    """

    data: np.ndarray
    dq: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    err: np.ndarray

    @classmethod
    def empty(cls, shape):
        """Allocate uninitialised arrays of the given shape."""
        return cls(
            data=np.empty(shape, np.float32),
            dq=np.empty(shape, np.uint32),
            var_poisson=np.empty(shape, np.float32),
            var_rnoise=np.empty(shape, np.float32),
            err=np.empty(shape, np.float32),
        )


OPT_ARRAYS = ("slope", "sigslope", "var_poisson", "var_rnoise", "yint", "sigyint", "pedestal", "weights", "crmag")
"""Arrays of the optional fit product (jwst's ``RampFitOutputModel``), in its order."""


@dataclass
class RampFitResult:
    """Output of the ramp fit: the exposure ``rate``, per-integration ``rateints`` and,
    when asked for, the optional product ``opt`` (:data:`OPT_ARRAYS` name -> float32 array:
    (nints, max segments, ny, nx) per segment, ``pedestal`` (nints, ny, nx), ``crmag``
    (nints, max jumps, ny, nx); zero where a ramp has fewer segments or jumps)."""

    rate: ImageArrays
    rateints: ImageArrays
    opt: dict | None = None


def single_read_noise(readnoise, gain, nframes):
    """Convert CDS read noise in DN to single-group read noise in electrons.

    Reproduces stcal's in-place ``readnoise_2d *= gain_2d / sqrt(2 * nframes)``
    including its float32 rounding.

    Parameters
    ----------
    readnoise : ndarray
        CDS read noise (DN), the READNOISE reference.
    gain : ndarray
        Gain (e-/DN).
    nframes : int
        Frames averaged per group.

    Returns
    -------
    ndarray, float32
    """
    rn = np.array(readnoise, dtype=np.float32, copy=True)
    rn *= np.asarray(gain, dtype=np.float32) / np.sqrt(2.0 * nframes)
    return rn


def fit_ramps(data, groupdq, pixeldq, gain, readnoise, readout, zeroframe=None,
              average_dark_current=None, suppress_one_group=True, save_opt=False):
    """Fit ramps to a 4-D cube with OLS_C semantics.

    Parameters
    ----------
    data : ndarray, float32, (nints, ngroups, ny, nx)
        Calibrated ramps in DN. Not modified.
    groupdq : ndarray, uint8, same shape
        Group DQ (SATURATED, JUMP_DET, DO_NOT_USE ... segment the ramps). Not modified.
    pixeldq : ndarray, uint32, (ny, nx)
    gain : ndarray, (ny, nx)
        Gain in e-/DN; pixels with gain <= 0 or NaN get DO_NOT_USE | NO_GAIN_VALUE.
    readnoise : ndarray, (ny, nx)
        CDS read noise in DN (the READNOISE reference).
    readout : webbflow.ramp.Readout
        Supplies ``nframes``, ``tframe`` and ``tgroup``.
    zeroframe : ndarray, (nints, ny, nx), optional
        Used for integrations whose groups are all unusable (only when
        ``suppress_one_group`` is False); 0 marks an unusable value.
    average_dark_current : ndarray, (ny, nx), optional
        Dark current in DN/s for the Poisson variance (None means 0).
    suppress_one_group : bool
        Treat ramps with a single good group as having none.
    save_opt : bool
        Also compute the optional fit product (``RampFitResult.opt``) as stcal does.

    Returns
    -------
    RampFitResult
    """
    nints, ngroups, ny, nx = data.shape
    if ngroups == 1:
        # stcal ignores suppress_one_group for one-group exposures
        suppress_one_group = False
    data = np.ascontiguousarray(data, dtype=np.float32)
    groupdq = np.ascontiguousarray(groupdq, dtype=np.uint8)
    pixeldq = np.ascontiguousarray(pixeldq, dtype=np.uint32)
    gain32 = np.ascontiguousarray(gain, dtype=np.float32)
    rn = single_read_noise(readnoise, gain32, readout.nframes)
    if average_dark_current is None:
        dark = np.zeros((ny, nx), np.float32)
    else:
        dark = np.ascontiguousarray(average_dark_current, dtype=np.float32)
    has_zf = zeroframe is not None
    if has_zf:
        zf = np.ascontiguousarray(zeroframe, dtype=np.float32)
    else:
        zf = np.zeros((nints, 1, 1), np.float32)
    if np.all(groupdq[:, 0] & dqflags.SATURATED):
        log.warning("All pixels saturated in the first group: every rate will be NaN")

    rate = ImageArrays.empty((ny, nx))
    rateints = ImageArrays.empty((nints, ny, nx))
    # a segment needs a good group and segments are separated by a flagged one
    max_segs, max_crs = ((ngroups + 1) // 2, max(ngroups - 1, 1)) if save_opt else (1, 1)
    shape = (nints, max_segs, ny, nx) if save_opt else (1, 1, 1, 1)
    opt = {name: np.zeros(shape, np.float32) for name in OPT_ARRAYS if name not in ("pedestal", "crmag")}
    opt["pedestal"] = np.zeros((nints, ny, nx) if save_opt else (1, 1, 1), np.float32)
    opt["crmag"] = np.zeros((nints, max_crs, ny, nx) if save_opt else (1, 1, 1, 1), np.float32)
    counts = np.zeros((2, nints, ny, nx) if save_opt else (2, 1, 1, 1), np.int16)
    # stcal's pedestal time factor: ((nframes + 1) / 2 + DRPFRMS1) / (nframes + groupgap)
    ped_tmp = ((readout.nframes + 1) / 2.0 + (readout.drop_frames1 or 0)) / (readout.nframes + readout.groupgap)
    fit_rows_threaded(
        data, groupdq, pixeldq, gain32, rn, dark, zf, has_zf, bool(suppress_one_group),
        float(np.float32(readout.tframe)), float(np.float32(readout.tgroup)),
        int(readout.nframes), weight_table(ngroups), *row_network(max(ngroups - 1, 0)),
        rate.data, rate.dq, rate.var_poisson, rate.var_rnoise, rate.err,
        rateints.data, rateints.dq, rateints.var_poisson, rateints.var_rnoise, rateints.err,
        bool(save_opt), float(ped_tmp),
        *(opt[name] for name in ("slope", "sigslope", "var_poisson", "var_rnoise", "yint", "sigyint", "weights",
                                 "pedestal", "crmag")), counts,
    )
    if not save_opt:
        return RampFitResult(rate=rate, rateints=rateints)
    # stcal sizes the segment and jump axes by the largest count over all ramps
    n_seg, n_cr = int(counts[0].max()), int(counts[1].max())
    for name in OPT_ARRAYS:
        if name != "pedestal":
            opt[name] = np.ascontiguousarray(opt[name][:, :(n_cr if name == "crmag" else n_seg)])
    return RampFitResult(rate=rate, rateints=rateints, opt=opt)


def run(ramp, readout, gain, readnoise, suppress_one_group=True, weighting="optimal", save_opt=False):
    """Fit the ramps of ``ramp`` (the jwst ``ramp_fit`` step, OLS_C).

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Uses ``data``, ``groupdq``, ``pixeldq``, ``zeroframe`` and
        ``average_dark_current``; nothing is modified.
    readout : webbflow.ramp.Readout
    gain : ndarray, (ny, nx)
        GAIN reference (e-/DN).
    readnoise : ndarray, (ny, nx)
        READNOISE reference (CDS, DN).
    suppress_one_group : bool
        jwst default True: one-good-group ramps give no slope.
    weighting : str
        Only ``"optimal"`` is supported.
    save_opt : bool
        Also compute the optional fit product (``result.opt``, written as ``_fitopt.fits``).

    Returns
    -------
    status : str
        ``"COMPLETE"``.
    result : RampFitResult
    """
    if weighting != "optimal":
        raise ValueError(f"unsupported weighting {weighting!r}; only 'optimal' exists")
    result = fit_ramps(
        ramp.data, ramp.groupdq, ramp.pixeldq, gain, readnoise, readout,
        zeroframe=ramp.zeroframe,
        average_dark_current=ramp.average_dark_current,
        suppress_one_group=suppress_one_group,
        save_opt=save_opt,
    )
    return StepStatus.COMPLETE, result
