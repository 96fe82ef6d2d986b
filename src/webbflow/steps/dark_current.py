"""Dark current subtraction (stcal ``dark_current``).

The DARK reference holds one plane per *frame* (or per group of
``dark_nframes`` frames separated by ``dark_groupgap`` dropped frames).  When
the science readout groups frames differently, the dark planes are averaged
to the science group structure: ``nframes`` consecutive planes per group, then
``groupgap`` planes skipped.  A dark shorter than the science ramp is
extrapolated linearly from its last two planes, as stcal 1.20 does.
"""

import logging

import numpy as np

from webbflow.ramp import StepStatus

__all__ = ["run", "average_dark_frames", "extrapolate_dark", "resolve_average_dark_current"]

log = logging.getLogger(__name__)


def extrapolate_dark(dark, nplanes):
    """Append ``nplanes`` planes continuing the slope of the last two.

    Parameters
    ----------
    dark : ndarray, (n, ny, nx)
        Dark planes, ``n >= 2``.
    nplanes : int
        Number of planes to add.

    Returns
    -------
    ndarray, float64, (n + nplanes, ny, nx)
        stcal promotes to float64 here, and so do we, so that the following
        averaging rounds the same way.
    """
    if dark.shape[0] < 2:
        raise ValueError(
            f"the dark reference has {dark.shape[0]} plane(s): too few to cover the science "
            "ramp and at least two are needed to extrapolate it"
        )
    rate = dark[-1] - dark[-2]
    steps = np.arange(1, nplanes + 1).reshape(-1, 1, 1)
    new = steps * rate + dark[-1]
    return np.concatenate((dark, new))


def average_dark_frames(dark, ngroups, nframes, groupgap):
    """Average dark planes to the science group structure.

    Parameters
    ----------
    dark : ndarray, (nplanes, ny, nx)
        Dark planes.
    ngroups, nframes, groupgap : int
        Science readout.

    Returns
    -------
    ndarray, float32, (ngroups, ny, nx)
        Group ``g`` is the mean of planes ``g*(nframes+groupgap)`` to
        ``g*(nframes+groupgap) + nframes - 1``.
    """
    out = np.zeros((ngroups,) + dark.shape[1:], np.float32)
    start = 0
    for g in range(ngroups):
        end = start + nframes
        if nframes == 1:
            out[g] = dark[start]
        else:
            # Same reduction as stcal (mean over axis 0 in the dark's dtype).
            out[g] = dark[start:end].mean(axis=0)
        start = end + groupgap
    return out


def resolve_average_dark_current(shape, step_value=None, dark_array=None, dark_scalar=None):
    """Average dark current (DN/s) for ramp fitting, with jwst's priorities.

    Parameters
    ----------
    shape : tuple
        (ny, nx) of the science frame.
    step_value : float or None
        The step parameter ``average_dark_current`` (user override).
    dark_array : ndarray or None
        The DARK reference's 2-D AVERAGE_DARK_CURRENT array, if any.
    dark_scalar : float or None
        The DARK reference's scalar keyword (``meta.exposure.average_dark_current``).

    Returns
    -------
    ndarray, float32, shape
        The step value if given; else the reference array unless it is absent
        or sums to zero; else the reference scalar; else zeros.
    """
    base = np.zeros(shape, np.float32)
    if step_value is not None:
        return base + np.float32(step_value)
    if dark_array is None or np.sum(dark_array) == 0.0:
        return base + np.float32(0.0 if dark_scalar is None else dark_scalar)
    dark_array = np.asarray(dark_array, dtype=np.float32)
    if dark_array.shape != tuple(shape):
        log.warning("dark average_dark_current shape %s does not match the data %s; using 0",
                    dark_array.shape, tuple(shape))
        return base
    return dark_array.copy()


def _nan_to_zero(planes):
    """``planes`` (a fresh or read-only array) with NaN replaced by 0."""
    planes = np.asarray(planes)
    nan = np.isnan(planes)
    if nan.any():
        planes = np.where(nan, planes.dtype.type(0), planes)
    return planes


def run(ramp, readout, dark_frames, dark_dq, dark_nframes=1, dark_groupgap=0,
        average_dark_current=None):
    """Subtract the dark current from a ramp, in place.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        Ramp to correct; ``data`` and ``pixeldq`` are updated and
        ``average_dark_current`` is set.
    readout : webbflow.ramp.Readout
        Science readout (``ngroups``, ``nframes``, ``groupgap``).
    dark_frames : ndarray or PlaneStack, (nplanes, ny, nx)
        DARK SCI cut to the science subarray (DN), one plane per
        ``dark_nframes`` frames; a lazy :class:`webbflow.refs.PlaneStack`
        is read one group's planes at a time.
    dark_dq : ndarray, (ny, nx)
        DARK DQ.
    dark_nframes, dark_groupgap : int
        NFRAMES and GROUPGAP of the dark reference.
    average_dark_current : float, ndarray or None
        Average dark current in DN/s: a scalar, a (ny, nx) array, or None for
        zero.  Use :func:`resolve_average_dark_current` to apply jwst's
        choice between the step parameter and the reference values.

    Returns
    -------
    str
        ``"COMPLETE"``, or ``"SKIPPED"`` when the dark groups more frames
        (or drops more) than the science data, as stcal does.
    """
    planes = prepare(ramp, readout, dark_frames, dark_dq, dark_nframes, dark_groupgap, average_dark_current)
    if planes is None:
        return StepStatus.SKIPPED
    for g, plane in planes:
        ramp.data[:, g] -= plane
    return StepStatus.COMPLETE


def prepare(ramp, readout, dark_frames, dark_dq, dark_nframes=1, dark_groupgap=0, average_dark_current=None):
    """:func:`run` but for the subtraction: sets ``average_dark_current`` and PIXELDQ, and returns an
    iterator of ``(group, plane)``, the float32 dark plane to subtract from each group of every integration
    (a plane is valid until the next is asked for: streamed darks reuse one buffer); None when
    :func:`run` would skip the step.
    """
    ny, nx = ramp.data.shape[-2:]
    if average_dark_current is None:
        ramp.average_dark_current = np.zeros((ny, nx), np.float32)
    elif np.ndim(average_dark_current) == 0:
        ramp.average_dark_current = np.full((ny, nx), average_dark_current, np.float32)
    else:
        ramp.average_dark_current = resolve_average_dark_current(
            (ny, nx), dark_array=average_dark_current)

    # ``dark_frames`` may be a lazy stack (webbflow.refs.PlaneStack): it is read
    # group by group below, never whole, unless it must be extrapolated.
    dark = dark_frames if hasattr(dark_frames, "read") else np.asarray(dark_frames)
    if len(dark.shape) != 3 or tuple(dark.shape[1:]) != (ny, nx):
        raise ValueError(f"dark must be (nplanes, {ny}, {nx}), got {tuple(dark.shape)}")
    ngroups = ramp.data.shape[1]
    nframes, groupgap = readout.nframes, readout.groupgap

    if dark_nframes > nframes or dark_groupgap > groupgap:
        log.warning(
            "dark_current: the dark has nframes=%d, groupgap=%d, more than the science "
            "data (%d, %d); step skipped", dark_nframes, dark_groupgap, nframes, groupgap)
        return None

    sci_frames = ngroups * nframes + (ngroups - 1) * groupgap
    drk_planes = dark.shape[0]
    drk_frames = drk_planes * dark_nframes + (drk_planes - 1) * dark_groupgap
    if sci_frames > drk_frames:
        missing = sci_frames - drk_frames
        nplanes = int(np.ceil((missing + dark_groupgap) / (dark_nframes + dark_groupgap)))
        log.warning("dark_current: the dark covers %d frames, the science ramp %d; "
                    "extrapolating %d dark plane(s)", drk_frames, sci_frames, nplanes)
        dark = extrapolate_dark(np.asarray(dark), nplanes)

    same_grouping = nframes == dark_nframes and groupgap == dark_groupgap
    ramp.pixeldq |= np.asarray(dark_dq).astype(np.uint32, copy=False)
    return _group_planes(dark, ny, nx, ngroups, nframes, groupgap, same_grouping)


def _group_planes(dark, ny, nx, ngroups, nframes, groupgap, same_grouping):
    """:func:`prepare`'s iterator of (group, dark plane); a float64 (extrapolated) dark's plane stays
    float64 when the groupings match, so that the subtraction is done in float64 and rounded, as stcal."""
    # One group at a time: the same element-wise arithmetic as averaging the
    # whole dark first (NaN -> 0, mean over the group's planes in the dark's
    # dtype, a float64 extrapolated dark subtracted in float64 and rounded, as
    # stcal does), without a dark-sized temporary.
    start = 0
    # A lazy float32 dark is read into one reusable buffer (fresh memory is not free).
    stream = hasattr(dark, "read") and dark.dtype == np.float32
    if stream:
        buf = np.empty((1 if same_grouping else nframes, ny, nx), np.float32)
        mean = np.empty((ny, nx), np.float32)
    for g in range(ngroups):
        lo = g if same_grouping else start
        hi = min(lo + (1 if same_grouping else nframes), dark.shape[0])
        if stream:
            planes = dark.read(lo, hi, out=buf[:hi - lo])
            np.copyto(planes, np.float32(0), where=np.isnan(planes))
        else:
            planes = _nan_to_zero(dark[lo:hi])
        if len(planes) == 1:
            plane = planes[0]
        else:  # the mean over the group's planes in the dark's dtype, as stcal
            plane = np.mean(planes, axis=0, out=mean if stream else None)
        if not same_grouping:
            plane = plane.astype(np.float32, copy=False)
        yield g, plane
        start += nframes + groupgap
