"""Cosmic rays and snowballs: random charge deposits at random times."""

from __future__ import annotations

import numpy as np

__all__ = ["Deposits", "SNOWBALL_FIELDS", "draw_deposits", "frames_read", "afterglow_deposits"]

SNOWBALL_FIELDS = ("integration", "group", "frame", "time", "x", "y", "r_core", "halo_amplitude", "halo_radius")
"""Columns of :attr:`Deposits.snowballs`, one row per snowball: 0-based integration and first group
showing it, the frame and time of the hit, the core centre (x, y, 0-based pixel coordinates: pixel
centres are integers), the saturated core's radius, the halo's amplitude at the core's edge (DN) and the
radius (pixels) where the halo falls to HALO_FLOOR_DN, beyond which nothing is deposited."""

HALO_FLOOR_DN = 5.0
"""The faintest snowball deposit (DN): halo pixels below it are not written."""

HALO_SCALE = 1.5
"""Exponential scale length (pixels) of a snowball's halo beyond its core."""


def frames_read(ngroups, nframes, groupgap):
    """Frames read in one integration (the gap after the last group is not read)."""
    return ngroups * (nframes + groupgap) - groupgap


class Deposits:
    """Charge deposits of one exposure, one row per (event, pixel).

    Attributes (all 1-D arrays of equal length)
    ----------
    integration, frame, group, y, x : int
        0-based; ``frame`` is the first frame read after the hit, ``group``
        the first group containing such a frame.
    amplitude : float
        Deposited charge in linear DN (electrons / gain).
    time : float
        Seconds after the reset of the integration.
    kind : str
        ``"cosmic_ray"``, ``"snowball"`` or ``"afterglow"`` (persistence, :func:`afterglow_deposits`).
    snowballs : dict of ndarray
        One entry per snowball event (not per pixel), keys :data:`SNOWBALL_FIELDS`.
    """

    FIELDS = ("integration", "frame", "group", "y", "x", "amplitude", "time", "kind")

    def __init__(self, snowballs=None, **columns):
        for name in self.FIELDS:
            setattr(self, name, np.asarray(columns[name]))
        self.snowballs = snowballs if snowballs is not None else {n: np.zeros(0) for n in SNOWBALL_FIELDS}

    def __len__(self):
        return len(self.x)

    @classmethod
    def concatenate(cls, parts):
        if not parts:
            empty = {n: np.zeros(0, int) for n in cls.FIELDS}
            empty.update(amplitude=np.zeros(0), time=np.zeros(0), kind=np.zeros(0, "<U10"))
            return cls(**empty)
        events = {n: np.concatenate([p.snowballs[n] for p in parts]) for n in SNOWBALL_FIELDS}
        return cls(snowballs=events, **{n: np.concatenate([getattr(p, n) for p in parts]) for n in cls.FIELDS})

    def select(self, keep):
        """The deposits ``keep`` selects; the snowball events are kept whole."""
        return Deposits(snowballs=self.snowballs, **{n: getattr(self, n)[keep] for n in self.FIELDS})


def _timing(t, tframe, nframes, groupgap):
    frame = np.maximum(np.ceil(t / tframe).astype(int) - 1, 0)
    per = nframes + groupgap
    group = frame // per + (frame % per >= nframes)  # hits in dropped frames show next group
    return frame, group


def draw_deposits(spec, model, rng):
    """Draw cosmic rays and snowballs for ``spec`` on ``model``'s pixels.

    Parameters
    ----------
    spec : ExposureSpec
    model : DetectorModel
    rng : numpy.random.Generator

    Returns
    -------
    Deposits
    """
    ny, nx = model.geometry.shape
    nread = frames_read(spec.ngroups, spec.nframes, spec.groupgap)
    t_last = nread * model.tframe
    sensitive = np.flatnonzero(model.qe.ravel() > 0)
    parts = []
    for i in range(spec.nints):
        n = rng.poisson(spec.cr_rate * sensitive.size * t_last) if spec.cr_rate > 0 else 0
        pix = rng.choice(sensitive, size=n)
        t = rng.uniform(0, t_last, n)
        frame, group = _timing(t, model.tframe, spec.nframes, spec.groupgap)
        # Log-normal energy spectrum: median 600 e-, most hits far above 10 sigma.
        amp_e = np.minimum(rng.lognormal(np.log(600.0), 1.0, n), 2e5)
        y, x = np.unravel_index(pix, (ny, nx))
        parts.append(Deposits(integration=np.full(n, i), frame=frame, group=group, y=y, x=x,
                              amplitude=amp_e / model.gain[y, x], time=t,
                              kind=np.full(n, "cosmic_ray")))
    for _ in range(spec.snowballs):
        parts.append(_snowball(spec, model, rng, t_last))
    return Deposits.concatenate(parts)


def _snowball(spec, model, rng, t_last):
    """A round saturated core (radius 2-4 px) with a fainter exponential halo."""
    ny, nx = model.geometry.shape
    margin = 8
    ok = False
    for _ in range(100):
        cy = rng.uniform(margin, ny - margin)
        cx = rng.uniform(margin, nx - margin)
        if model.qe[int(cy), int(cx)] > 0:
            ok = True
            break
    if not ok:
        return Deposits.concatenate([])
    r_core = rng.uniform(2.0, 4.0)
    halo = rng.uniform(300.0, 1000.0)
    i = rng.integers(spec.nints)
    t = rng.uniform(0.2 * t_last, 0.8 * t_last)
    reach = int(np.ceil(2.5 * r_core)) + 1
    yy, xx = np.mgrid[int(cy) - reach: int(cy) + reach + 1, int(cx) - reach: int(cx) + reach + 1]
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    yy, xx = yy[inside], xx[inside]
    r = np.hypot(yy + 0.5 - cy, xx + 0.5 - cx)
    amp = np.where(r <= r_core, 1.5 * (model.full_well[yy, xx] - model.superbias[yy, xx]),
                   halo * np.exp(-(r - r_core) / HALO_SCALE))
    keep = (amp > HALO_FLOOR_DN) & (model.qe[yy, xx] > 0)
    yy, xx, amp = yy[keep], xx[keep], amp[keep]
    n = yy.size
    frame, group = _timing(np.full(n, t), model.tframe, spec.nframes, spec.groupgap)
    # the square drawn above cuts the halo at reach pixels along the axes
    r_halo = min(r_core + HALO_SCALE * np.log(halo / HALO_FLOOR_DN), reach)
    event = {"integration": [i], "group": group[:1], "frame": frame[:1], "time": [t], "x": [cx - 0.5],
             "y": [cy - 0.5], "r_core": [r_core], "halo_amplitude": [halo], "halo_radius": [r_halo]}
    return Deposits(snowballs={k: np.asarray(v) for k, v in event.items()},
                    integration=np.full(n, i), frame=frame, group=group, y=yy, x=xx,
                    amplitude=amp, time=np.full(n, t), kind=np.full(n, "snowball"))


def afterglow_deposits(spec, model, x_full, y_full, amplitude, tau, delay):
    """Persistence from an earlier exposure: a decaying excess current in the pixels it saturated.

    The trapped charge leaks out as ``amplitude * exp(-t / tau)`` (DN/s, linear),
    ``t`` counted from the end of the bright exposure; each frame read of this
    exposure gets the charge released since the previous read (the reset frame
    of each integration clears what leaked before it).  One deposit row per
    (pixel, integration, frame read), so keep the pixel list short.

    Parameters
    ----------
    spec : ExposureSpec
        This (later) exposure.
    model : DetectorModel
        Its detector model (geometry and frame time).
    x_full, y_full : array of int
        0-based full-frame science-grid coordinates of the earlier exposure's
        bright pixels; those outside this exposure's array are dropped.
    amplitude : float
        Excess current (DN/s) at the end of the bright exposure.
    tau : float
        Decay time, s.
    delay : float
        Seconds from the bright exposure's end to this exposure's start.

    Returns
    -------
    Deposits
        Kind ``"afterglow"``; ``time`` is the read time within the integration.
    """
    geom = model.geometry
    ny, nx = geom.shape
    xs = np.asarray(x_full, int) - (geom.xstart - 1)
    ys = np.asarray(y_full, int) - (geom.ystart - 1)
    inside = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    xs, ys = xs[inside], ys[inside]
    inside = model.qe[ys, xs] > 0
    xs, ys = xs[inside], ys[inside]
    nread = frames_read(spec.ngroups, spec.nframes, spec.groupgap)
    tframe = model.tframe
    t_int = (nread + 1) * tframe  # one reset frame per integration, as the headers' timing
    per = spec.nframes + spec.groupgap
    frames = np.arange(nread)
    parts = []
    for i in range(spec.nints):
        # read k is (k + 1) tframe after the reset; charge released in ((k) tframe, (k + 1) tframe]
        t0 = delay + i * t_int + tframe  # the reset frame's end
        lo, hi = t0 + frames * tframe, t0 + (frames + 1) * tframe
        charge = amplitude * tau * (np.exp(-lo / tau) - np.exp(-hi / tau))  # DN per frame
        n = xs.size * nread
        parts.append(Deposits(integration=np.full(n, i), frame=np.tile(frames, xs.size),
                              group=np.tile(frames // per + (frames % per >= spec.nframes), xs.size),
                              y=np.repeat(ys, nread), x=np.repeat(xs, nread),
                              amplitude=np.tile(charge, xs.size), time=np.tile((frames + 1) * tframe, xs.size),
                              kind=np.full(n, "afterglow")))
    return Deposits.concatenate(parts)
