"""detector1 in bounded memory, for exposures (time-series segments) too big to hold at once.

The in-memory stage holds the whole ramp: ~14 bytes per sample with the step
work arrays, so a 1000-integration SUBGRISM256 segment of 10 groups would
need ~75 GB (jwst needs ~31 GB, users report jobs killed for memory).  This
runner gives the same products, bit for bit, with a working set set by a
memory budget instead of by NINTS:

A. **Chunks of integrations.**  dq_init, saturation, superbias, refpix,
   linearity, dark_current and charge_migration treat each integration alone; they run on a few
   integrations at a time, and the calibrated ramp and its group DQ go to
   scratch files (4 + 1 bytes per sample) next to the products.  ROEBA's
   background mask comes from the first integrations only
   (:data:`webbflow.steps.roeba.DRAFT_INTS`), found in a first, two-group
   pass, so every chunk uses the mask the whole exposure would.
B. **Blocks of rows.**  jump (its median is pooled over all integrations of a
   pixel; sigma clipping compares them) and ramp_fit (the median rate and the
   rate product combine integrations) need every integration of a pixel but
   nothing of other pixels except the neighbour flagging, which reaches one
   row: blocks of rows are read back with one extra row on each side.  The
   things jwst decides on the whole frame are decided on the whole frame
   here too (the regime, from every integration's all-DO_NOT_USE groups;
   the sigma-clip rule that clears JUMP from planes flagged everywhere; the
   median gain of the after-jump thresholds).  The rateints rows go straight
   into their place in the product (:class:`webbflow.io.products.RateintsStream`).
C. **clean_flicker_noise** (when on) between the two: its draft rate by blocks
   of rows, its scene mask on the whole frame, then its group differences by
   chunks of integrations, written back to scratch.

Scratch needs 5 bytes per sample (a second group-DQ file adds 1 more while
jump runs); it is checked against the free space first and removed at the
end, whatever happens; the folder of a run killed with SIGKILL, which nothing
could remove, is removed by the next run of the same product (:func:`scratch_name`).
"""

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from webbflow import dqflags
from webbflow.io.errors import InputError
from webbflow.io.files import part_folder, read_at, write_at
from webbflow.ramp import Ramp, StepStatus

# The steps (numba) are imported on first use: detector1 imports this module for plan(), and numba
# loads in a background thread there (see webbflow.stages.detector1._start_numba_warmup).

__all__ = ["BYTES_PER_SAMPLE", "DEFAULT_MAX_MEMORY_MB", "Plan", "in_memory_bytes", "plan", "run"]

log = logging.getLogger(__name__)

BYTES_PER_SAMPLE = 14
"""Working set of the in-memory stage per ramp sample (float32 ramp, group DQ, read buffers and step
work arrays; 1256 MiB measured for a 75 M-sample full frame, less ~240 MiB of interpreter and references)."""

BYTES_PER_INT_PIXEL = 24
"""Per integration and pixel: the five rateints arrays and the ramp fit's work."""

BYTES_PER_PIXEL = 120
"""Per pixel: references cut to the subarray, PIXELDQ, the rate product and jump's median and sigma."""

DEFAULT_MAX_MEMORY_MB = 4000
"""The budget when none is given: exposures whose in-memory working set is larger are streamed."""

PRE_JUMP_STEPS = ("dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current", "charge_migration")
ROEBA_MASK_STEPS = ("dq_init", "saturation", "superbias", "refpix")
"""The steps before ROEBA's background mask is found (on the first integrations)."""


def in_memory_bytes(shape):
    """Estimated working set (bytes) of the in-memory stage for a ramp of ``shape`` (nints, ngroups, ny, nx)."""
    nints, ngroups, ny, nx = shape
    return (BYTES_PER_SAMPLE * nints * ngroups + BYTES_PER_INT_PIXEL * nints + BYTES_PER_PIXEL) * ny * nx


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a streamed exposure is cut: integrations per chunk (phase A), rows per block (phase B)."""

    ints_per_chunk: int
    rows_per_block: int


def plan(shape, max_bytes, min_rows=1):
    """The chunking of an exposure of ``shape`` for a working set of ``max_bytes``; None if it fits whole.

    Parameters
    ----------
    shape : tuple
        (nints, ngroups, ny, nx).
    max_bytes : int
        Budget for the arrays.
    min_rows : int
        Fewest rows per block: jump's and ramp_fit's kernels share a block's rows among the
        job's threads, so a block of fewer rows than threads leaves threads idle.

    Returns
    -------
    Plan or None
    """
    if in_memory_bytes(shape) <= max_bytes:
        return None
    nints, ngroups, ny, nx = shape
    room = max(max_bytes - BYTES_PER_PIXEL * ny * nx, 0)
    ints = max(1, min(nints, room // ((BYTES_PER_SAMPLE * ngroups + BYTES_PER_INT_PIXEL) * ny * nx)))
    rows = room // ((BYTES_PER_SAMPLE * ngroups + BYTES_PER_INT_PIXEL) * nints * nx) - 2  # the halo rows
    return Plan(int(ints), int(max(1, min(ny, max(rows, min_rows)))))


class _Scratch:
    """Files of the calibrated ramp, read back and written by blocks of rows.

    Plain reads and writes, not memory maps: file systems with large folios map megabytes around
    every page touched, and the mapped pages count in the job's resident memory (a 2 GB ramp read
    back by blocks of rows through a map showed 1.9 GB of it).  The page cache holds them instead.
    """

    def __init__(self, folder, shape, has_zeroframe):
        self.folder, self.shape = Path(folder), tuple(shape)
        self.paths = {"data": self.folder / "data.f32", "gdq": self.folder / "gdq_a.u8",
                      "gdq_b": self.folder / "gdq_b.u8", "zeroframe": self.folder / "zeroframe.f32"}
        self.has_zeroframe = has_zeroframe
        self._files = {name: open(self.paths[name], "wb")
                       for name in ("data", "gdq") + (("zeroframe",) if has_zeroframe else ())}

    def append(self, ramp):
        """Append the integrations of ``ramp`` (phase A, in order)."""
        ramp.data.astype(np.float32, copy=False).tofile(self._files["data"])
        ramp.groupdq.tofile(self._files["gdq"])
        if self.has_zeroframe:
            ramp.zeroframe.astype(np.float32, copy=False).tofile(self._files["zeroframe"])

    def close_appends(self):
        for f in self._files.values():
            f.close()
        self._files = {}

    def _layout(self, name):
        """(dtype, planes, ny, nx) of a scratch file: planes are (integration, group) pairs, or integrations."""
        nints, ngroups, ny, nx = self.shape
        dtype = np.dtype(np.uint8 if name.startswith("gdq") else np.float32)
        planes = nints if name == "zeroframe" else nints * ngroups
        return dtype, planes, ny, nx

    def _shape(self, name, rows):
        nints, ngroups, _, nx = self.shape
        return (nints, rows, nx) if name == "zeroframe" else (nints, ngroups, rows, nx)

    def rows(self, name, a, b):
        """Rows a..b-1 of every plane, as a contiguous array."""
        dtype, planes, ny, nx = self._layout(name)
        out = np.empty((planes, b - a, nx), dtype)
        plane, start = ny * nx * dtype.itemsize, a * nx * dtype.itemsize
        with open(self.paths[name], "rb") as f:
            for _ in read_at(f, ((p * plane + start, out[p]) for p in range(planes))):
                pass
        return out.reshape(self._shape(name, b - a))

    def write_rows(self, name, r0, block):
        """Write ``block`` (all planes, n rows) at rows r0..r0+n-1, creating the file if needed."""
        dtype, planes, ny, nx = self._layout(name)
        block = np.ascontiguousarray(block, dtype).reshape(planes, -1, nx)
        plane, start = ny * nx * dtype.itemsize, r0 * nx * dtype.itemsize
        mode = "r+b" if self.paths[name].exists() else "w+b"
        with open(self.paths[name], mode) as f:
            if mode == "w+b":
                f.truncate(planes * plane)  # sparse until written
            write_at(f, ((p * plane + start, block[p].data) for p in range(planes)))

    def integrations(self, name, i0, i1):
        """Integrations i0..i1-1 of a (nints, ngroups, ny, nx) file: (array, writer of it back)."""
        dtype, _, ny, nx = self._layout(name)
        ngroups = self.shape[1]
        out = np.empty((i1 - i0, ngroups, ny, nx), dtype)
        offset = i0 * ngroups * ny * nx * dtype.itemsize
        with open(self.paths[name], "rb") as f:
            for _ in read_at(f, [(offset, out)]):
                pass

        def write_back():
            with open(self.paths[name], "r+b") as f:
                write_at(f, [(offset, out.data)])

        return out, write_back


@contextlib.contextmanager
def _quiet_steps(quiet=True):
    """The steps' INFO lines and detector1's timings once, not once per chunk or block: WARNING and up inside."""
    loggers = [logging.getLogger(name) for name in ("webbflow.steps", "webbflow.stages.detector1")]
    levels = [logger.level for logger in loggers]
    if quiet:
        for logger, level in zip(loggers, levels):
            logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _blocks(n, size):
    for r0 in range(0, n, size):
        yield r0, min(r0 + size, n)


def scratch_name(rateints_path):
    """The name the scratch folder of ``rateints_path``'s streamed run is made for.

    The folder is ``.<rateints name>.detector1.<host>-<pid>.<random>.part``
    (:func:`webbflow.io.files.part_folder`) in ``$WEBBFLOW_SCRATCH`` or beside the product.
    """
    return Path(rateints_path).with_name(Path(rateints_path).name + ".detector1")


def _check_scratch_space(uncal_path, folder, shape, has_zeroframe):
    nints, ngroups, ny, nx = shape
    need = (6 * nints * ngroups + (4 if has_zeroframe else 0) * nints) * ny * nx + 20 * nints * ny * nx
    free = shutil.disk_usage(folder).free
    if free < need:
        raise InputError(
            uncal_path,
            f"this exposure is reduced in chunks (it does not fit in the memory budget) and needs "
            f"{need / 1e9:.1f} GB of scratch and product space in {folder}, which has {free / 1e9:.1f} GB free",
            "free disk space there, point WEBBFLOW_SCRATCH at a larger folder, or raise max_memory_mb.detector1",
        )
    return need


def _roeba_mask(stream, readout, refs, params, ints_per_chunk):
    """ROEBA's background mask from the first DRAFT_INTS integrations (first and last group only)."""
    from webbflow.stages.detector1 import iter_steps
    from webbflow.steps import roeba

    nints, ngroups = stream.shape[:2]
    groups = [0, ngroups - 1] if ngroups > 1 else [0]
    refpix = {k: v for k, v in params["refpix"].items() if k != "roeba_mask"}
    first = min(nints, roeba.DRAFT_INTS)
    minis, pixeldq = [], None
    for i0, i1 in _blocks(first, max(1, ints_per_chunk * ngroups // len(groups))):
        mini = stream.ramp(i0, i1, groups=groups)
        mini_readout = dataclasses.replace(readout, nints=i1 - i0, ngroups=len(groups))
        mini_params = dict(params, refpix=dict(refpix, roeba=False, first_integration=i0))
        with _quiet_steps():
            for _ in iter_steps(mini, mini_readout, stream.headers, refs, mini_params, steps=ROEBA_MASK_STEPS):
                pass
        minis.append(mini.data)
        pixeldq = mini.pixeldq
    rp = params["refpix"]
    return roeba.background_mask(np.concatenate(minis), pixeldq, nsigma=rp.get("roeba_nsigma", 3.0),
                                 grow=rp.get("roeba_grow", 2))


def _phase_a(stream, readout, refs, params, scratch, chunk, one_over_f=None):
    """Pre-jump steps on chunks of integrations; returns (statuses, pixeldq, dark, max all-DNU groups)."""
    from webbflow.stages.detector1 import iter_steps
    from webbflow.steps import _jump_numba as K

    nints = stream.shape[0]
    statuses, pixeldq, dark, max_all_dnu = {}, None, None, 0
    t0 = time.perf_counter()
    for i0, i1 in _blocks(nints, chunk):
        ramp = stream.ramp(i0, i1)
        part = dataclasses.replace(readout, nints=i1 - i0)
        chunk_params = dict(params, refpix=dict(params.get("refpix") or {}, first_integration=i0))
        with _quiet_steps(i0 > 0):
            for step, status, _ in iter_steps(ramp, part, stream.headers, refs, chunk_params, one_over_f=one_over_f,
                                              steps=PRE_JUMP_STEPS, fuse=True):
                if statuses.setdefault(step, status) != status:
                    raise RuntimeError(f"{step} was {statuses[step]} on the first integrations but {status} on "
                                       f"integrations {i0 + 1}-{i1}")
        pixeldq = ramp.pixeldq if pixeldq is None else pixeldq | ramp.pixeldq
        if dark is None:
            dark = ramp.average_dark_current
        max_all_dnu = max(max_all_dnu, int(K.count_all_dnu_groups(ramp.groupdq).max()))
        scratch.append(ramp)
        log.info("detector1: integrations %d-%d of %d through the pre-jump steps (%.1f s)", i0 + 1, i1, nints,
                 time.perf_counter() - t0)
        del ramp
    scratch.close_appends()
    return statuses, pixeldq, dark, max_all_dnu


def _clear_jump_only_planes(scratch, name, chunk):
    """The sigma-clip rule of :func:`webbflow.steps.jump._clear_jump_only_planes`, plane by plane on disk."""
    jd = np.uint8(dqflags.JUMP_DET | dqflags.DO_NOT_USE)
    for i0, i1 in _blocks(scratch.shape[0], chunk):
        gdq, write_back = scratch.integrations(name, i0, i1)
        changed = False
        for i in range(i1 - i0):
            for k in range(scratch.shape[1]):
                plane = gdq[i, k]
                if np.all(plane & jd):
                    plane[plane == dqflags.JUMP_DET] = 0
                    changed = True
        if changed:
            write_back()


def _phase_jump(scratch, readout, refs, pixeldq, params, max_all_dnu, chunk, rows):
    """jump on blocks of rows; returns (status, name of the scratch file holding the final group DQ)."""
    from webbflow.steps import _jump_numba as K
    from webbflow.steps import jump

    nints, ngroups, ny, nx = scratch.shape
    p = params.get("jump") or {}
    if p.get("skip"):
        return StepStatus.SKIPPED, "gdq"
    if ngroups <= 2:
        log.warning("Cannot apply jump detection when NGROUPS<=2; jump step skipped")
        return StepStatus.SKIPPED, "gdq"
    gain32, rn2, bad_gain = jump.gain_terms(refs["gain"]["gain"], refs["readnoise"]["readnoise"])
    pixeldq[bad_gain] |= np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)
    regime = jump.choose_regime(max_all_dnu, nints, ngroups, p.get("minimum_groups", 3),
                                p.get("minimum_sigclip_groups", 100))
    detect_kw = {k: p[k] for k in ("rejection_threshold", "three_group_rejection_threshold",
                                   "four_group_rejection_threshold") if k in p}
    after_kw = {k: p[k] for k in ("flag_4_neighbors", "max_jump_to_flag_neighbors", "min_jump_to_flag_neighbors",
                                  "after_jump_flag_dn1", "after_jump_flag_time1", "after_jump_flag_dn2",
                                  "after_jump_flag_time2") if k in p}
    gmed = np.nanmedian(gain32)
    t0 = time.perf_counter()

    if regime is None:
        log.info("Too few usable groups: no jump detection")
    elif regime == K.REGIME_SIGMA_CLIP:
        log.info("jump: sigma clip across %d integrations (>= minimum_sigclip_groups=%d) instead of "
                 "two-point differences, as jwst", nints, p.get("minimum_sigclip_groups", 100))
    # Pass 1, detection, pixel by pixel: blocks need no neighbours.  Pass 2, the neighbour and
    # after-jump flags, reaches one row: its blocks are read with a row more on each side, from
    # the output of pass 1 (gdq_b), and written to the first file (gdq), no longer needed.
    med = np.full((ny, nx), np.nan)
    sig = np.full((ny, nx), np.nan)
    if regime is not None:
        for r0, r1 in _blocks(ny, rows):
            q = scratch.rows("gdq", r0, r1)
            med[r0:r1], sig[r0:r1] = jump.detect(scratch.rows("data", r0, r1), q, gain32[r0:r1], rn2[r0:r1],
                                                 readout.nframes, regime, **detect_kw)
            scratch.write_rows("gdq_b", r0, q)
        log.info("jump: detection in blocks of %d rows done (%.1f s)", rows, time.perf_counter() - t0)
        if regime == K.REGIME_SIGMA_CLIP:
            _clear_jump_only_planes(scratch, "gdq_b", chunk)
        source, final = "gdq_b", "gdq"
    else:
        source, final = "gdq", "gdq_b"
    for r0, r1 in _blocks(ny, rows):
        a, b = max(r0 - 1, 0), min(r1 + 1, ny)
        q = scratch.rows(source, a, b)
        if regime is not None:
            jump.after_detection(scratch.rows("data", a, b), q, gain32[a:b], med[a:b], sig[a:b], readout.tgroup,
                                 gmed, **after_kw)
        K.clear_jump_on_bad(q)
        scratch.write_rows(final, r0, q[..., r0 - a:r1 - a, :])
    log.info("jump: %d rows in blocks of %d done (%.1f s)", ny, rows, time.perf_counter() - t0)
    if p.get("expand_large_events"):
        _large_events(scratch, final, readout, p)
    return StepStatus.COMPLETE, final


def _large_events(scratch, name, readout, p):
    """Snowball flagging (:func:`webbflow.steps.jump.flag_large_events`) one integration at a time.

    Its regions span rows, so it works on whole frames: one integration's
    group DQ (NGROUPS bytes per pixel) is in memory at a time, and the cores
    found in one are flagged in the next after that one's own search, the
    order in which stcal applies them.
    """
    from webbflow.steps import jump

    def cubes():
        for i in range(scratch.shape[0]):
            q, write_back = scratch.integrations(name, i, i + 1)
            yield q[0]
            write_back()  # the consumer has finished with integration i

    t0 = time.perf_counter()
    params = jump.LargeEvents(**{k: p[k] for k in jump.LARGE_EVENT_KEYS if k in p})
    total = jump.flag_large_events(cubes(), params, readout.tgroup)
    log.info("jump: %d snowballs in %d integrations (%.1f s)", total, scratch.shape[0], time.perf_counter() - t0)


def _row_blocks(scratch, gdq, pixeldq, dark, refs, rows):
    """The jump-flagged ramp by blocks of rows: (r0, r1, Ramp, the references cut to those rows)."""
    gain, readnoise = refs["gain"], refs["readnoise"]
    for r0, r1 in _blocks(scratch.shape[2], rows):
        block = Ramp(data=scratch.rows("data", r0, r1), groupdq=scratch.rows(gdq, r0, r1),
                     pixeldq=np.ascontiguousarray(pixeldq[r0:r1]),
                     zeroframe=scratch.rows("zeroframe", r0, r1) if scratch.has_zeroframe else None,
                     average_dark_current=None if dark is None else dark[r0:r1])
        # the block's rows of the per-pixel references; the rest (GAINFACT of the gain reference) whole
        block_refs = dict(refs, gain=dict(gain, gain=gain["gain"][r0:r1]),
                          readnoise=dict(readnoise, readnoise=readnoise["readnoise"][r0:r1]))
        yield r0, r1, block, block_refs
        del block  # before the next block is read: one block in memory at a time


def _phase_flicker(scratch, gdq, blocks, readout, headers, params, chunk):
    """clean_flicker_noise on the scratch ramp: the draft rate by blocks of rows, then chunks of integrations.

    The scene mask needs the whole frame's draft rate (its clipping statistics are global), and the
    cleaning needs whole group differences (one median per row of the frame), so the two halves
    of :func:`webbflow.steps.clean_flicker_noise.run` run in the two directions this runner knows.
    With ``single_mask: false`` the draft rateints (4 bytes per integration and pixel) and the
    per-integration mask (1 byte) are held in memory, within the budget's per-integration share.
    """
    from webbflow.config import step_kwargs, step_skipped
    from webbflow.steps import clean_flicker_noise as cfn

    if step_skipped(params, "clean_flicker_noise"):
        return StepStatus.SKIPPED
    p = step_kwargs(params, "clean_flicker_noise")
    single = p.get("single_mask", True)
    ok, background, single = cfn.standard_options(p.get("fit_method", "median"), headers.primary.get("EXP_TYPE"),
                                                  p.get("background_method", "median"), single)
    if not ok:
        return StepStatus.FAILED
    t0 = time.perf_counter()
    nints, _, ny, nx = scratch.shape
    draft = np.empty((ny, nx) if single else (nints, ny, nx), np.float32)
    for r0, r1, block, block_refs in blocks():
        draft[..., r0:r1, :] = cfn.draft_rate(block, readout, block_refs["gain"]["gain"],
                                              block_refs["readnoise"]["readnoise"], single)
    mask = cfn.background_mask(draft, n_sigma=p.get("n_sigma", 2.0), fit_histogram=p.get("fit_histogram", False),
                               single_mask=single)
    del draft
    log.info("clean_flicker_noise: draft rate and scene mask (%.1f %% background) in %.1f s", 100 * np.mean(mask),
             time.perf_counter() - t0)
    channels = cfn.channels_for(p.get("fit_by_channel", False), readout.subarray, nx)
    for i0, i1 in _blocks(nints, chunk):
        data, write_back = scratch.integrations("data", i0, i1)
        groupdq, _ = scratch.integrations(gdq, i0, i1)
        cfn.clean_integrations(data, groupdq, mask, background, p.get("background_box_size"), p.get("n_sigma", 2.0),
                               channels, first_integration=i0)
        write_back()
    log.info("clean_flicker_noise: %d integrations cleaned in %.1f s", nints, time.perf_counter() - t0)
    return StepStatus.COMPLETE


def run(stream, rate_path, rateints_path, refs, params, statuses_out, provenance, used, max_bytes,
        scratch_dir=None, one_over_f=None):
    """Run detector1 on ``stream`` in bounded memory and write both products (see the module docstring).

    Parameters
    ----------
    stream : webbflow.io.uncal.UncalStream
        The exposure, opened (its headers checked).
    rate_path, rateints_path : path-like
        Products.
    refs : dict
        Loaded references (:func:`webbflow.refs.load_references`).
    params : dict
        step -> parameters, as :func:`webbflow.stages.detector1.run` has them.
    statuses_out : dict
        Filled with step -> status.
    provenance : dict
        For the products.
    used : dict
        reftype -> path of the references used (``R_*`` keywords).
    max_bytes : int
        Memory budget of the arrays.
    scratch_dir : path-like, optional
        Where the scratch files go (default ``$WEBBFLOW_SCRATCH`` or the rateints' folder).
    one_over_f : list, optional
        Filled by refpix, chunk by chunk, with the 1/f statistic before and after ROEBA
        (:func:`webbflow.steps.refpix.run`); the background mask is then found from the first
        integrations even with ROEBA off, as the in-memory stage finds it.
    """
    from webbflow.io.products import RateintsStream, write_rate
    from webbflow.stages.detector1 import iter_steps
    from webbflow.steps.ramp_fit import ImageArrays, RampFitResult

    readout, headers = stream.readout, stream.headers
    nints, ngroups, ny, nx = shape = stream.shape
    from webbflow.steps import _jit  # numba's thread count without loading numba (kernels' AOT twins)

    cut = plan(shape, max_bytes, min_rows=_jit.num_threads()) or Plan(nints, ny)
    folder = Path(scratch_dir or os.environ.get("WEBBFLOW_SCRATCH") or Path(rateints_path).parent)
    # named for this writer, so that a run killed with SIGKILL has its scratch removed by the next one
    # (before the free space is counted)
    tmp = part_folder(scratch_name(rateints_path), folder)
    try:
        need = _check_scratch_space(stream.path, folder, shape, stream.has_zeroframe)
        log.info("detector1: %d integrations do not fit in %d MB at once (~%d MB): %d integrations per chunk, "
                 "then blocks of %d rows; %.1f GB of scratch in %s", nints, max_bytes // 2**20,
                 in_memory_bytes(shape) // 2**20, cut.ints_per_chunk, cut.rows_per_block, need / 1e9, folder)
        params = {step: dict(v) for step, v in params.items()}
        rp = params["refpix"]
        if (rp.get("roeba") or one_over_f is not None) and not rp.get("skip"):
            rp["roeba_mask"] = _roeba_mask(stream, readout, refs, params, cut.ints_per_chunk)
        scratch = _Scratch(tmp, shape, stream.has_zeroframe)
        statuses, pixeldq, dark, max_all_dnu = _phase_a(stream, readout, refs, params, scratch,
                                                         cut.ints_per_chunk, one_over_f)
        statuses["jump"], gdq = _phase_jump(scratch, readout, refs, pixeldq, params, max_all_dnu,
                                            cut.ints_per_chunk, cut.rows_per_block)
        if (scratch.paths["gdq_b"].exists() and gdq != "gdq_b"):
            scratch.paths["gdq_b"].unlink()
        blocks = functools.partial(_row_blocks, scratch, gdq, pixeldq, dark, refs, cut.rows_per_block)
        statuses["clean_flicker_noise"] = _phase_flicker(scratch, gdq, blocks, readout, headers, params,
                                                         cut.ints_per_chunk)
        rate = ImageArrays.empty((ny, nx))
        product = None
        t0 = time.perf_counter()
        try:
            for r0, r1, block, block_refs in blocks():
                with _quiet_steps(r0 > 0):
                    for step, status, result in iter_steps(block, readout, headers, block_refs, params,
                                                           steps=("ramp_fit", "gain_scale")):
                        statuses[step] = status
                del block
                if product is None:
                    statuses_out.update({s: statuses[s] for s in params if s in statuses})
                    product = RateintsStream(rateints_path, (nints, ny, nx), headers, cal_steps=statuses_out,
                                             ref_files=used, provenance=provenance).__enter__()
                product.write_rows(r0, result.rateints)
                for name in ("data", "dq", "var_poisson", "var_rnoise", "err"):
                    getattr(rate, name)[r0:r1] = getattr(result.rate, name)
            log.info("ramp_fit: %d rows in blocks of %d done (%.1f s)", ny, cut.rows_per_block,
                     time.perf_counter() - t0)
        except BaseException as exc:
            if product is not None:
                product.__exit__(type(exc), exc, exc.__traceback__)
            raise
        product.__exit__(None, None, None)
        # in detector1.run's atomic_group: a rateints without its rate is never in place
        write_rate(rate_path, rate, headers, cal_steps=statuses_out, ref_files=used, provenance=provenance)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RampFitResult(rate=rate, rateints=None)
