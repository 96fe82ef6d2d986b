"""Jump (cosmic-ray) detection by the two-point difference method (jwst 3.0 / stcal 1.20).

For every pixel the first differences of the ramp (in electrons, pooled over
integrations) are compared with their median; a difference more than
``rejection_threshold`` sigma away flags JUMP_DET on the later group. With few
usable differences the search is iterative and the threshold rises (4/5/6
sigma for >=4/3/2 usable differences); with many differences it is a single
pass; with many integrations it is a sigma clip across integrations. Large jumps
also flag their four neighbours. Snowball/shower flagging is not implemented.
"""

import functools
import logging

import numpy as np

from webbflow import dqflags
from webbflow.ramp import StepStatus

from . import _jump_numba as K

__all__ = ["run", "MIN_DIFFS_SINGLE_PASS", "after_detection", "choose_regime", "detect", "gain_terms"]

log = logging.getLogger(__name__)

# stcal ``min_diffs_single_pass``: with this many usable differences the
# iterative search is replaced by a single pass.
MIN_DIFFS_SINGLE_PASS = 10


@functools.lru_cache(maxsize=16)
def _sorting_network(n):
    """``K.sorting_network(n)``, built once per n (read-only, shared)."""
    net = K.sorting_network(n)
    net.flags.writeable = False
    return net


def _choose_regime(gdq, minimum_groups, minimum_sigclip_groups):
    """Return the detection regime, or None when the step has too few groups."""
    nints, ngroups = gdq.shape[:2]
    return choose_regime(int(K.count_all_dnu_groups(gdq).max()), nints, ngroups, minimum_groups,
                         minimum_sigclip_groups)


def choose_regime(max_all_dnu, nints, ngroups, minimum_groups=3, minimum_sigclip_groups=100):
    """The detection regime from the exposure's group counts; None when there are too few groups.

    Parameters
    ----------
    max_all_dnu : int
        The most groups of one integration in which every pixel is DO_NOT_USE
        (such groups do not count as usable, as in stcal).
    nints, ngroups : int
        The exposure's (segment's) integrations and groups.
    minimum_groups, minimum_sigclip_groups : int
        As for :func:`run`.
    """
    min_usable_groups = ngroups - int(max_all_dnu)
    # jwst uses only_use_ints=True: sigma clipping compares integrations
    sigclip_ok = nints >= minimum_sigclip_groups
    if min_usable_groups < minimum_groups and not sigclip_ok:
        return None
    if sigclip_ok:
        return K.REGIME_SIGMA_CLIP
    if min_usable_groups - 1 >= MIN_DIFFS_SINGLE_PASS:
        return K.REGIME_SINGLE_PASS
    return K.REGIME_ITERATIVE


def gain_terms(gain, readnoise):
    """(gain as float32, squared CDS noise in electrons, pixels of unusable gain) for the kernels."""
    gain32 = np.ascontiguousarray(gain, dtype=np.float32)
    rn32 = np.asarray(readnoise, dtype=np.float32)
    bad_gain = (gain32 <= 0.0) | np.isnan(gain32)
    # stcal works in electrons; squared CDS noise kept in float32 as it does
    rn2 = np.ascontiguousarray((rn32 * gain32) ** 2)
    return gain32, rn2, bad_gain


def detect(data, gdq, gain32, rn2, nframes, regime, rejection_threshold=4.0,
           three_group_rejection_threshold=6.0, four_group_rejection_threshold=5.0):
    """The primary search of :func:`run` on a cube (or a block of rows of one); returns (median, sigma).

    ``gdq`` gains JUMP_DET in place; the per-pixel median difference and its
    sigma (electrons, float64, (ny, nx)) feed the neighbour and after-jump
    flagging.  Every pixel is independent, so blocks of rows give the rows
    of the whole cube.
    """
    nints, ngroups, ny, nx = data.shape
    med = np.empty((ny, nx), np.float64)
    sig = np.empty((ny, nx), np.float64)
    ndiff = nints * (ngroups - 1)
    # the sigma clip works per pixel (scalar code) and needs no network
    net = (_sorting_network(ndiff) if regime != K.REGIME_SIGMA_CLIP else np.zeros((0, 2), np.int64))
    K.detect(data, gdq, gain32, rn2, float(nframes), regime,
             float(rejection_threshold), float(four_group_rejection_threshold),
             float(three_group_rejection_threshold), 5, net, K.block_width(ndiff), med, sig)
    return med, sig


def after_detection(data, gdq, gain32, med, sig, tgroup, gain_median=None, flag_4_neighbors=True,
                    max_jump_to_flag_neighbors=1000.0, min_jump_to_flag_neighbors=10.0,
                    after_jump_flag_dn1=0.0, after_jump_flag_time1=0.0, after_jump_flag_dn2=0.0,
                    after_jump_flag_time2=0.0):
    """Neighbour and after-jump flagging of :func:`run`, after :func:`detect` (in place on ``gdq``).

    Neighbours reach one row up and down: on a block of rows the flags are
    those of the whole cube on all but its first and last row.
    ``gain_median`` is the NaN-median of the whole gain reference (stcal
    scales the after-jump DN thresholds by it); None takes it from ``gain32``.
    """
    if flag_4_neighbors:
        K.flag_neighbors(data, gdq, gain32, med, sig, float(min_jump_to_flag_neighbors),
                         float(max_jump_to_flag_neighbors))
    n1 = int(after_jump_flag_time1 // tgroup)
    n2 = int(after_jump_flag_time2 // tgroup)
    if n1 > 0 or n2 > 0:
        # stcal scales the DN thresholds by the median gain (float32 product)
        if gain_median is None:
            gain_median = np.nanmedian(gain32)
        e1 = float(after_jump_flag_dn1 * gain_median)
        e2 = float(after_jump_flag_dn2 * gain_median)
        K.after_jump(data, gdq, gain32, med, e1, n1, e2, n2)


def _clear_jump_only_planes(gdq):
    """stcal sigma-clip rule: a group plane that is JUMP or DNU everywhere loses its JUMP-only flags."""
    jd = np.uint8(dqflags.JUMP_DET | dqflags.DO_NOT_USE)
    for i in range(gdq.shape[0]):
        for k in range(gdq.shape[1]):
            plane = gdq[i, k]
            if np.all(plane & jd):
                plane[plane == dqflags.JUMP_DET] = 0


def run(ramp, readout, gain, readnoise, rejection_threshold=4.0,
        three_group_rejection_threshold=6.0, four_group_rejection_threshold=5.0,
        flag_4_neighbors=True, max_jump_to_flag_neighbors=1000.0,
        min_jump_to_flag_neighbors=10.0, minimum_groups=3, minimum_sigclip_groups=100,
        after_jump_flag_dn1=0.0, after_jump_flag_time1=0.0, after_jump_flag_dn2=0.0,
        after_jump_flag_time2=0.0):
    """Flag cosmic-ray jumps in ``ramp.groupdq`` (in place).

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        ``groupdq`` gains JUMP_DET; ``pixeldq`` gains NO_GAIN_VALUE | DO_NOT_USE
        where the gain is not positive. ``data`` is not modified.
    readout : webbflow.ramp.Readout
        ``nframes`` sets the read noise of a difference, ``tgroup`` converts the
        after-jump times to groups.
    gain : ndarray, (ny, nx)
        GAIN reference (e-/DN).
    readnoise : ndarray, (ny, nx)
        READNOISE reference: CDS read noise in DN.
    rejection_threshold : float
        Sigma threshold with >= 4 usable differences (and single-pass/sigma-clip).
    three_group_rejection_threshold : float
        Threshold when 2 usable differences remain (three groups).
    four_group_rejection_threshold : float
        Threshold when 3 usable differences remain (four groups).
    flag_4_neighbors : bool
        Also flag the 4 neighbours of jumps with
        ``min_jump_to_flag_neighbors < ratio < max_jump_to_flag_neighbors``.
    max_jump_to_flag_neighbors, min_jump_to_flag_neighbors : float
        Sigma bounds for neighbour flagging.
    minimum_groups : int
        Fewest usable groups for the difference search.
    minimum_sigclip_groups : int
        Integrations needed to switch to sigma clipping across integrations.
    after_jump_flag_dn1, after_jump_flag_time1, after_jump_flag_dn2, after_jump_flag_time2 : float
        Flag the groups within ``time`` seconds after a jump larger than ``dn`` DN.

    Returns
    -------
    str
        ``"COMPLETE"``, or ``"SKIPPED"`` when there are fewer than 3 groups.
    """
    nints, ngroups, ny, nx = ramp.data.shape
    if ngroups <= 2:
        log.warning("Cannot apply jump detection when NGROUPS<=2; jump step skipped")
        return StepStatus.SKIPPED

    data = ramp.data
    if data.dtype != np.float32 or not data.flags.c_contiguous:
        data = np.ascontiguousarray(data, dtype=np.float32)
    gdq = ramp.groupdq
    gain32, rn2, bad_gain = gain_terms(gain, readnoise)
    ramp.pixeldq[bad_gain] |= np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)

    regime = _choose_regime(gdq, minimum_groups, minimum_sigclip_groups)
    if regime is None:
        log.info("Too few usable groups: no jump detection")
    else:
        if regime == K.REGIME_SIGMA_CLIP:
            log.info("jump: sigma clip across %d integrations (>= minimum_sigclip_groups=%d) instead of "
                     "two-point differences, as jwst", nints, minimum_sigclip_groups)
        med, sig = detect(data, gdq, gain32, rn2, readout.nframes, regime, rejection_threshold,
                          three_group_rejection_threshold, four_group_rejection_threshold)
        if regime == K.REGIME_SIGMA_CLIP:
            _clear_jump_only_planes(gdq)
        after_detection(data, gdq, gain32, med, sig, readout.tgroup, None, flag_4_neighbors,
                        max_jump_to_flag_neighbors, min_jump_to_flag_neighbors, after_jump_flag_dn1,
                        after_jump_flag_time1, after_jump_flag_dn2, after_jump_flag_time2)
    K.clear_jump_on_bad(gdq)
    return StepStatus.COMPLETE
