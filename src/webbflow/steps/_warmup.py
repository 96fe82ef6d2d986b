"""Load numba's compiled stage-1 kernels before the data arrive.

numba's first jitted call in a process, even one served from the on-disk cache,
loads its typing and lowering registries (see :func:`init_numba`): about half a
second that does not depend on the data, plus a few ms per kernel
to load its machine code.  The detector1 stage calls :func:`warm_stage1` in a
background thread while the main thread reads the exposure and its references,
so that this time overlaps I/O instead of adding to it.
"""

import dataclasses
import logging
import threading

import numpy as np

from webbflow.steps import _jit
from webbflow.steps._jit import njit

__all__ = ["init_numba", "touch", "warm_stage1"]

log = logging.getLogger(__name__)


@njit(cache=True)
def touch(x):
    """Return ``x + 1`` (the call is what matters)."""
    return x + 1


def init_numba():
    """Initialise numba's registries (the first jitted call), skipping its BLAS probe.

    Loading the registries imports ``numba.np.arraymath``, which probes for
    BLAS by importing ``scipy.linalg`` (~0.25 s) only to decide how to
    compile ``np.correlate``; no stage-1 kernel uses BLAS.  While the
    registries load, ``scipy.linalg`` is made unimportable, so the probe
    answers "absent" at once; the block is lifted right after, so a later
    import (or a kernel needing BLAS) finds scipy as usual.  When scipy.linalg
    or numba's registries are already loaded, nothing is blocked.
    """
    import sys

    block = "scipy.linalg" not in sys.modules and "numba.np.arraymath" not in sys.modules
    if block:
        sys.modules["scipy.linalg"] = None  # an import of it raises ImportError
    try:
        _jit.dispatcher(touch)(0)  # numba's, not the kernel's compiled twin (webbflow.aot)
    finally:
        if block and "scipy.linalg" in sys.modules and sys.modules["scipy.linalg"] is None:
            del sys.modules["scipy.linalg"]


class _DropThread(logging.Filter):
    """Drop the records one thread logs (the warm-up's step messages)."""

    def __init__(self, thread):
        super().__init__()
        self.ident = thread.ident

    def filter(self, record):
        return record.thread != self.ident


def _tiny_inputs(readout, size=8):
    """A small ramp and references with the dtypes and layouts of a real run."""
    from webbflow.ramp import Ramp

    ngroups = max(int(readout.ngroups), 3)
    ro = dataclasses.replace(readout, nints=1, ngroups=ngroups, subarray="FULL", substrt1=1, substrt2=1)
    shape = (size, size)

    def frozen(a):  # references are cached read-only: numba types them apart
        a.flags.writeable = False
        return a

    def plane(value, dtype=np.float32):
        return frozen(np.full(shape, value, dtype))

    ramp = Ramp(data=np.ascontiguousarray(np.broadcast_to(
                    np.arange(ngroups, dtype=np.float32)[None, :, None, None] * 100.0 + 1000.0,
                    (1, ngroups) + shape)),
                groupdq=np.zeros((1, ngroups) + shape, np.uint8),
                pixeldq=np.zeros(shape, np.uint32))
    coeffs = np.zeros((5,) + shape, np.float32)
    coeffs[1] = 1.0
    nplanes = ngroups * ro.nframes + (ngroups - 1) * ro.groupgap
    refs = {
        "mask": {"mask_dq": plane(0, np.uint32)},
        "saturation": {"sat_thresh": plane(6.0e4), "sat_dq": plane(0, np.uint32)},
        "superbias": {"bias": plane(0.0), "bias_dq": plane(0, np.uint32)},
        "linearity": {"coeffs": frozen(coeffs), "lin_dq": plane(0, np.uint32)},
        "dark": {"dark_frames": frozen(np.zeros((nplanes,) + shape, np.float32)),
                 "dark_dq": plane(0, np.uint32), "dark_nframes": 1, "dark_groupgap": 0},
        "gain": {"gain": plane(2.0), "gain_factor": None},
        "readnoise": {"readnoise": plane(10.0)},
    }
    return ramp, ro, refs


def warm_stage1(readout, params=None, frame_shape=None):
    """Run detector1's steps once on a tiny ramp, so every kernel is loaded.

    Parameters
    ----------
    readout : webbflow.ramp.Readout
        The exposure's readout (its frame grouping picks the kernels used).
    params : dict, optional
        The step parameters of the real run (``skip`` honoured).
    frame_shape : tuple of int, optional
        The exposure's (ny, nx): a small frame's fused pass runs on one thread, and its parallel
        kernel is not loaded.
    """
    init_numba()
    from webbflow.config import DETECTOR1_STEPS
    from webbflow.stages.detector1 import iter_steps

    quiet = _DropThread(threading.current_thread())
    loggers = [logging.getLogger(name) for name in ("webbflow.stages.detector1",) + tuple(
        f"webbflow.steps.{s}" for s in DETECTOR1_STEPS)]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        ramp, ro, refs = _tiny_inputs(readout)

        class _Headers:
            primary = {}

        # refpix needs a detector-sized frame: its kernels are small, left cold
        steps = {s: dict(p) for s, p in (params or {}).items()}
        steps["refpix"] = {"skip": True}
        steps["clean_flicker_noise"] = {"skip": True}  # its new kernel is loaded by _warm_unexercised
        for _ in iter_steps(ramp, ro, _Headers(), refs, steps):
            pass
        _warm_fused(ramp, refs, None if frame_shape is None else int(np.prod(frame_shape)))
        _warm_unexercised(params or {})
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)


def _warm_unexercised(params):
    """Load the kernels of the steps turned on that the tiny ramp does not reach: the snowball search's
    labeller (the tiny ramp has no jumps) and clean_flicker_noise's (skipped above)."""
    if params.get("jump", {}).get("expand_large_events"):
        from webbflow.steps import _jump_numba

        _jump_numba.label8(np.zeros((2, 2), bool))
    if params.get("clean_flicker_noise", {}).get("skip") is False:
        from webbflow.steps import clean_flicker_noise

        clean_flicker_noise._mirror_sorted_into(np.zeros(2), 0.0, 1, np.empty(2))


def _warm_fused(ramp, refs, frame_pixels=None):
    """Load the fused pass's kernels (:mod:`webbflow.steps.fused`) with the argument types of a real run.

    ``frame_pixels``: the exposure's ny * nx, when known; its frames run on the serial kernel only
    below :data:`webbflow.steps.refpix._PARALLEL_MIN_PIXELS`, and the parallel one (~20 ms to load
    from numba's cache) is left cold.
    """
    from webbflow.steps import fused, refpix

    plane, gdq = ramp.data[0, 0], ramp.groupdq[0, 0]
    ny, nx = plane.shape
    tables = (np.zeros(nx), np.zeros(nx, np.int8), np.zeros((ny, 1)), np.zeros(nx, np.int64))
    coeffs = refs["linearity"]["coeffs"]
    kernels = (fused._plane_serial, fused._plane_parallel)
    if frame_pixels is not None and frame_pixels < refpix._PARALLEL_MIN_PIXELS:
        kernels = kernels[:1]
    for kernel in kernels:
        kernel(plane, np.zeros_like(plane), *tables, False, gdq, coeffs, np.zeros((ny, nx), np.uint8),
               fused._SAT, np.zeros_like(plane), np.empty_like(plane))
