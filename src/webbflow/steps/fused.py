"""superbias, refpix, linearity and dark_current in one pass over the ramp, with their numbers.

Run one after another, the four cheap per-pixel steps read and write the whole float32 cube four times
(a full frame's 10 groups are 160 MB each time).  Here each group of each integration is read and
written once: a kernel takes every pixel through the superbias subtraction, the reference-pixel
correction, the linearity polynomial and the dark subtraction, row by row (rows in parallel), with the
arithmetic of the separate steps (the same float32 and float64 operations in the same order), so the
ramp, PIXELDQ and ZEROFRAME come out bit for bit as :func:`webbflow.steps.superbias.run`,
:func:`~webbflow.steps.refpix.run`, :func:`~webbflow.steps.linearity.run` and
:func:`~webbflow.steps.dark_current.run` leave them.

The one dependency between pixels is refpix's: a group's corrections are statistics of its reference
pixels after the superbias.  Those few pixels (:meth:`webbflow.steps.refpix._Corrector.read_mask`) are
bias-subtracted first, the group's corrections computed from them, and the kernel then subtracts the
bias from the other pixels only.  refpix sees PIXELDQ as it is after superbias (a copy), as it does when
the steps run in turn.

refpix's 1/f QA table (the workflow always writes it) needs the ramp after refpix: the kernel leaves each
group's values after refpix in a plane, and :class:`_QASums` adds them into their integration's slope
and draft image, group by group, with the numbers of refpix's own measurement.

Not fused (:func:`run` returns None and the caller runs the steps in turn): ROEBA (it needs the whole
corrected ramp before linearity), a subarray without usable reference pixels or off the detector, and a
detector read along its rows (|FASTAXIS| = 2; no NIRCam detector is).
"""

import inspect

import numpy as np

from webbflow.steps._jit import njit, prange

from webbflow import dqflags
from webbflow.ramp import StepStatus
from webbflow.steps import dark_current, linearity, refpix, superbias
from webbflow.steps.linearity import horner
from webbflow.steps.refpix import _tb_value

__all__ = ["STEPS", "run"]

STEPS = ("superbias", "refpix", "linearity", "dark_current")
"""The steps :func:`run` does, in their order in detector1."""

_SAT = np.uint8(dqflags.SATURATED)
QA_MAX_BYTES = 64 << 20
"""The most memory the 1/f QA's slopes may take in the fused pass (float64, one per integration, all at
once as the pass goes group by group); a ramp of more integrations runs the steps in turn, where refpix
measures one integration at a time."""


@njit(cache=True, inline="always")
def _row(plane, bias, colref, colkind, side, chan, use_side, gdq, coeffs, identity, saturated, dark, post, y):
    if coeffs.shape[0] == 5:
        _row5(plane, bias, colref, colkind, side, chan, use_side, gdq, coeffs, identity, saturated, dark, post, y)
        return
    for x in range(plane.shape[1]):
        # superbias (float32), refpix (its _apply_row), linearity (skipping SATURATED groups), dark: a
        # float64 dark plane is subtracted in float64 and rounded on the store, as numpy's ``-=`` does
        t = _tb_value(plane[y, x] - bias[y, x], colref[x], colkind[x])
        if use_side:
            t = t - side[y, chan[x]]
        d = np.float32(t)
        post[y, x] = d  # the value after refpix, for the 1/f QA table
        if (gdq[y, x] & saturated) == 0:
            d = horner(d, coeffs, identity, y, x)
        plane[y, x] = d - dark[y, x]


@njit(cache=True, inline="always")
def _row5(plane, bias, colref, colkind, side, chan, use_side, gdq, coeffs, identity, saturated, dark, post, y):
    """:func:`_row` for the usual five linearity coefficients: :func:`~webbflow.steps.linearity.horner`
    unrolled, and evaluated in SATURATED groups too but not kept (a select, not a branch around the
    polynomial): the same operations on every kept value, ~30% faster."""
    one, zero = np.float32(1.0), np.float32(0.0)
    for x in range(plane.shape[1]):
        t = _tb_value(plane[y, x] - bias[y, x], colref[x], colkind[x])
        if use_side:
            t = t - side[y, chan[x]]
        d = np.float32(t)
        post[y, x] = d  # the value after refpix, for the 1/f QA table
        ident = identity[y, x] != 0
        c4 = zero if ident else coeffs[4, y, x]
        c3 = zero if ident else coeffs[3, y, x]
        c2 = zero if ident else coeffs[2, y, x]
        c1 = one if ident else coeffs[1, y, x]
        c0 = zero if ident else coeffs[0, y, x]
        r = c4 * d
        r = (r + c3) * d
        r = (r + c2) * d
        r = (r + c1) * d
        r = r + c0
        if (gdq[y, x] & saturated) != 0:
            r = d
        plane[y, x] = r - dark[y, x]


@njit(cache=True, parallel=True)
def _plane_parallel(plane, bias, colref, colkind, side, chan, use_side, gdq, coeffs, identity, saturated, dark, post):
    for y in prange(plane.shape[0]):
        _row(plane, bias, colref, colkind, side, chan, use_side, gdq, coeffs, identity, saturated, dark, post, y)


@njit(cache=True)
def _plane_serial(plane, bias, colref, colkind, side, chan, use_side, gdq, coeffs, identity, saturated, dark, post):
    for y in range(plane.shape[0]):
        _row(plane, bias, colref, colkind, side, chan, use_side, gdq, coeffs, identity, saturated, dark, post, y)


def _plane(*args):
    """The kernel on one group plane; small planes on one thread (see refpix's ``_PARALLEL_MIN_PIXELS``)."""
    kernel = _plane_parallel if args[0].size >= refpix._PARALLEL_MIN_PIXELS else _plane_serial
    kernel(*args)


class _PixelDQ:
    """What :func:`webbflow.steps.refpix.corrector` reads of a ramp: its shape and a PIXELDQ."""

    def __init__(self, data, pixeldq):
        self.data, self.pixeldq = data, pixeldq


def _science_tables(tables, readout, ny, nx, use_side):
    """refpix's per-group tables, indexed by science-frame column and row (flipped, |FASTAXIS| = 1)."""
    colref, colkind, side, chan = tables
    fx = int(np.sign(readout.fastaxis))
    fy = int(np.sign(readout.slowaxis))
    side = side[::fy] if use_side else np.zeros((ny, 1))
    return (np.ascontiguousarray(colref[::fx]), np.ascontiguousarray(colkind[::fx]), np.ascontiguousarray(side),
            np.ascontiguousarray(chan[::fx]))


def run(ramp, readout, bias, bias_dq, refpix_kwargs, coeffs, lin_dq, dark_kwargs, one_over_f=None):
    """superbias, refpix, linearity and dark_current on ``ramp`` in place, in one pass; or None, untouched.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        After saturation (linearity skips its SATURATED groups).
    readout : webbflow.ramp.Readout
    bias, bias_dq : ndarray
        The superbias reference (:func:`webbflow.steps.superbias.run`).
    refpix_kwargs : dict
        refpix's parameters (:func:`webbflow.steps.refpix.run`), without ``one_over_f``.
    coeffs, lin_dq : ndarray
        The linearity reference (:func:`webbflow.steps.linearity.run`).
    dark_kwargs : dict
        :func:`webbflow.steps.dark_current.run`'s arguments after ``readout``: ``dark_frames``,
        ``dark_dq``, ``dark_nframes``, ``dark_groupgap``, ``average_dark_current``.
    one_over_f : list, optional
        refpix's 1/f QA record is appended to it, as :func:`webbflow.steps.refpix.run` appends it with
        ROEBA off (the same numbers: :class:`_QASums` adds up each integration's slope and draft image
        from the values after refpix that the kernel leaves in a plane).  Not fused (None) when its
        slopes would take more than :data:`QA_MAX_BYTES`.

    Returns
    -------
    dict or None
        step -> status for :data:`STEPS` (dark_current ``SKIPPED`` where its step would skip); None when
        the steps cannot be fused here (module docstring): nothing has been changed then.
    """
    nints, ngroups, ny, nx = ramp.data.shape
    if abs(readout.fastaxis) != 1 or refpix_kwargs.get("one_over_f") is not None or (
            one_over_f is not None and nints * ny * nx * 8 > QA_MAX_BYTES):
        return None
    # refpix after superbias sees superbias's DQ, and nothing later (a copy: linearity and dark OR theirs)
    after_bias = ramp.pixeldq | np.asarray(bias_dq).astype(np.uint32, copy=False)
    corr = refpix.corrector(_PixelDQ(ramp.data, after_bias), readout, **refpix_kwargs)
    if corr is None:
        return None
    bias = superbias.prepare(ramp, bias, bias_dq)
    coeffs, identity = linearity.prepare(ramp, coeffs, lin_dq)
    planes = dark_current.prepare(ramp, readout, **dark_kwargs)
    statuses = dict.fromkeys(STEPS, StepStatus.COMPLETE)
    if planes is None:
        statuses["dark_current"] = StepStatus.SKIPPED
        zero = np.zeros((ny, nx), np.float32)  # x - 0 is x, -0.0 included
        planes = ((g, zero) for g in range(ngroups))
    qa = _QASums(ramp.data.shape, readout, refpix_kwargs) if one_over_f is not None else None

    # the pixels refpix reads get their bias before its statistics; the kernel subtracts the rest
    reads = np.zeros((ny, nx), np.bool_)
    refpix.to_detector_frame(reads, readout.fastaxis, readout.slowaxis)[...] = corr.read_mask()
    at = np.nonzero(reads)
    bias_rest = np.where(reads, np.float32(0.0), bias)
    no_bias = np.zeros((ny, nx), np.float32)
    neutral = (np.zeros(nx), np.zeros(nx, np.int8), np.zeros((ny, 1)), np.zeros(nx, np.int64))
    post = np.empty((ny, nx), np.float32)  # each group's values after refpix (the kernel's one extra store)
    # group by group, then integration: the dark plane is read once, and refpix's one change of state
    # (float64 after the exposure's first corrected group) happens after the same first group
    for g, dark in planes:
        dark = np.ascontiguousarray(dark)
        for i in range(nints):
            plane = ramp.data[i, g]
            plane[at] -= bias[at]
            det = refpix.to_detector_frame(plane, readout.fastaxis, readout.slowaxis)
            tables, partial = corr.plan(det)
            if partial is not None:  # rare (refpix's one-amplifier fallback): bias and offsets first
                plane -= bias_rest
                corr._one_amp_partial(det, partial)
                _plane(plane, no_bias, *neutral, False, ramp.groupdq[i, g], coeffs, identity, _SAT, dark, post)
                if qa is not None:
                    qa.add(post, i, g)
                continue
            _plane(plane, bias_rest, *_science_tables(tables, readout, ny, nx, corr.use_side), corr.use_side,
                   ramp.groupdq[i, g], coeffs, identity, _SAT, dark, post)
            if qa is not None:
                qa.add(post, i, g)
            if corr.use_side:
                corr.mode64 = True
    superbias.correct_zeroframe(ramp, bias)
    refpix.correct_zeroframe(ramp, readout, corr)
    linearity.finish(ramp, coeffs, identity)
    if qa is not None:
        one_over_f.append(qa.record(after_bias))
    return statuses


@njit(cache=True)
def _add_weighted(total, weight, plane):
    """``total += weight * plane`` (float64 += float64 x float32) without numpy's float64 temporary: the
    same two roundings per pixel (no fused multiply-add: numba's default floating-point rules)."""
    for y in range(plane.shape[0]):
        for x in range(plane.shape[1]):
            total[y, x] += weight * np.float64(plane[y, x])


class _QASums:
    """The sums of refpix's 1/f QA record (:func:`webbflow.steps.refpix.run`, ROEBA off), added up group
    by group from the values after refpix: every integration's least-squares slope (float64, as
    :func:`webbflow.steps.roeba.one_over_f_per_integration` adds a group) and, unless ``roeba_mask``
    gives the background pixels, the last-minus-first-group image (float32) of the first
    :data:`~webbflow.steps.roeba.DRAFT_INTS` integrations they are found from
    (:func:`webbflow.steps.roeba.background_mask`)."""

    def __init__(self, shape, readout, refpix_kwargs):
        from webbflow.steps import roeba

        nints, ngroups, ny, nx = shape
        defaults = {k: p.default for k, p in inspect.signature(refpix.run).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        self.options = {**defaults, **refpix_kwargs}
        self.nints, self.ngroups, self.shape, self.readout = nints, ngroups, (ny, nx), readout
        sloped = ngroups >= 2
        self.weights = roeba.slope_weights(ngroups, readout.tgroup) if sloped else None
        self.slopes = np.zeros((nints if sloped else 0, ny, nx))
        drafts = min(nints, roeba.DRAFT_INTS) if sloped and self.options["roeba_mask"] is None else 0
        self.draft = np.empty((drafts, ny, nx), np.float32)

    def add(self, post, i, g):
        """Add group ``g`` of integration ``i`` after refpix (``post``, float32)."""
        if self.weights is not None:
            _add_weighted(self.slopes[i], self.weights[g], post)
        if i < len(self.draft) and g == 0:
            self.draft[i] = post
        elif i < len(self.draft) and g == self.ngroups - 1:
            np.subtract(post, self.draft[i], out=self.draft[i])

    def record(self, pixeldq):
        """The QA record from the sums (``pixeldq``: PIXELDQ as refpix saw it)."""
        from webbflow.steps import roeba

        opts = self.options
        if opts["roeba_mask"] is not None:
            mask = opts["roeba_mask"]
        elif len(self.draft):
            mask = roeba.draft_mask(self.draft, pixeldq, nsigma=opts["roeba_nsigma"], grow=opts["roeba_grow"])
        else:  # one group: background_mask looks at PIXELDQ alone
            mask = roeba.background_mask(np.zeros((1, 1) + self.shape, np.float32), pixeldq)
        return refpix.one_over_f_record(iter(self.slopes), self.nints, mask, self.readout, self.shape,
                                        opts["first_integration"], opts["roeba_min_pixels"])
