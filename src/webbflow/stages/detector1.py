"""Stage 1 (calwebb_detector1): an uncal exposure to ``rate`` and ``rateints``.

The steps run in memory on one :class:`~webbflow.ramp.Ramp`, in jwst's NIR
order: dq_init, saturation, superbias, refpix, linearity, dark_current,
charge_migration, jump, clean_flicker_noise, ramp_fit, gain_scale
(charge_migration and clean_flicker_noise off unless ``skip: false``, as in
jwst), and, beyond jwst and off unless asked, the persistence flags from
earlier exposures after dq_init (:mod:`webbflow.steps.persistence`).
Everything that can fail on bad input (reading the exposure,
choosing and cutting references) happens before the first step, and the
products are written only at the end, atomically, so a failed run leaves
nothing behind that looks finished.
"""

import importlib
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from webbflow.config import DETECTOR1_STEPS, step_kwargs, step_skipped
from webbflow.provenance import reference_names, stage_provenance
from webbflow.io import persistence as highpix_io
from webbflow.io import read_uncal, write_fitopt, write_rate, write_rateints
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.io.files import atomic_group
from webbflow.io.uncal import SUPPORTED_EXP_TYPES, UncalStream, read_uncal_headers, readout_from_header
from webbflow.jobmode import threads as job_thread_count
from webbflow.ramp import StepStatus
from webbflow.refs import load_references
from webbflow.stages import detector1_stream
from webbflow.steps import persistence

__all__ = ["STEP_REFTYPES", "call_step", "fitopt_path", "iter_steps", "jump_fraction", "one_over_f_table", "run",
           "write_one_over_f"]

log = logging.getLogger(__name__)

STEP_REFTYPES = {
    "dq_init": ("mask",),
    "saturation": ("saturation",),
    "superbias": ("superbias",),
    "refpix": (),
    "linearity": ("linearity",),
    "dark_current": ("dark",),
    "charge_migration": (),
    "jump": ("gain", "readnoise"),
    "clean_flicker_noise": ("gain", "readnoise"),  # its draft rate is a ramp fit
    "ramp_fit": ("gain", "readnoise"),
    "gain_scale": (),
}
"""Reference types each step needs."""


def _gain_factor(headers, refs):
    """gain_scale's factor: the exposure's GAINFACT, else the gain reference's (as jwst), else None.

    Parameters
    ----------
    headers : webbflow.io.uncal.UncalHeaders
    refs : dict
        Loaded references (:func:`webbflow.refs.load_references`).

    Returns
    -------
    float or None
    """
    factor = headers.primary.get("GAINFACT")
    if factor is None and "gain" in refs:
        factor = refs["gain"]["gain_factor"]
    return factor


def _needed_reftypes(params):
    needed = []
    for step in DETECTOR1_STEPS:
        if step_skipped(params, step):
            continue
        needed += [t for t in STEP_REFTYPES[step] if t not in needed]
    return needed


def _references_used(params, references):
    """(references with str paths, the types the steps of ``params`` need, type -> path of those read)."""
    references = {t: (str(p) if p else None) for t, p in (references or {}).items()}
    needed = _needed_reftypes(params)
    used = {t: references[t] for t in needed if references.get(t)}
    # superbias also feeds the saturation step's A/D-floor test, as in jwst.
    if not params["saturation"].get("skip") and references.get("superbias"):
        used["superbias"] = references["superbias"]
    # SIRS's kernel is optional, as in jwst: without one refpix keeps the running median
    if (not params["refpix"].get("skip") and params["refpix"].get("refpix_algorithm") == "sirs"
            and references.get("sirskernel")):
        used["sirskernel"] = references["sirskernel"]
    return references, needed, used


def _drop_subarray_sirskernel(used, refs, readout):
    if "sirskernel" in used and "FULL" not in str(readout.subarray).upper():
        # jwst reads the kernel for full frames only (and records R_SIRSKL only then)
        del used["sirskernel"]
        refs.pop("sirskernel", None)


def _check_references(uncal_path, headers, references, needed):
    missing = [t for t in needed if not references.get(t)]
    if missing:
        steps = sorted({s for s, types in STEP_REFTYPES.items() for t in missing if t in types})
        raise ReferenceFileError(
            uncal_path,
            f"no {', '.join(missing)} reference for DETECTOR={headers.primary.get('DETECTOR')} "
            f"SUBARRAY={headers.primary.get('SUBARRAY')}",
            "set references.dir to a folder holding them, name them with overrides.<reftype>, "
            f"or skip {', '.join(steps)} with steps.<step>.skip: true",
        )


def call_step(step, ramp, readout, refs, kwargs):
    """Run one of the steps before ramp_fit on ``ramp`` (in place), per docs/contracts.md.

    Parameters
    ----------
    step : str
        One of dq_init, saturation, superbias, refpix, linearity, dark_current, jump.
    ramp : webbflow.ramp.Ramp
    readout : webbflow.ramp.Readout
    refs : dict
        Loaded references (:func:`webbflow.refs.load_references`).
    kwargs : dict
        The step's parameters (:func:`webbflow.config.step_kwargs`).

    Returns
    -------
    str
        The step's status.
    """
    module = importlib.import_module(f"webbflow.steps.{step}")
    if step == "dq_init":
        return module.run(ramp, refs["mask"]["mask_dq"])
    if step == "saturation":
        sat = refs["saturation"]
        bias = refs["superbias"]["bias"] if "superbias" in refs else None
        return module.run(ramp, readout, sat["sat_thresh"], sat["sat_dq"], bias=bias, **kwargs)
    if step == "superbias":
        return module.run(ramp, refs["superbias"]["bias"], refs["superbias"]["bias_dq"])
    if step == "refpix":
        if kwargs.get("refpix_algorithm") == "sirs":
            kwargs = dict(kwargs, sirs_kernel=refs.get("sirskernel"))
        return module.run(ramp, readout, **kwargs)
    if step == "linearity":
        return module.run(ramp, refs["linearity"]["coeffs"], refs["linearity"]["lin_dq"])
    if step == "dark_current":
        dark = refs["dark"]
        return module.run(ramp, readout, dark["dark_frames"], dark["dark_dq"],
                          dark_nframes=dark["dark_nframes"], dark_groupgap=dark["dark_groupgap"], **kwargs)
    if step == "charge_migration":
        return module.run(ramp, **kwargs)
    if step == "jump":
        return module.run(ramp, readout, refs["gain"]["gain"], refs["readnoise"]["readnoise"], **kwargs)
    raise ValueError(f"unknown step {step!r}")


def _start_numba_warmup(readout, params, frame_shape=None):
    """Load numba and the stage-1 kernels in a background thread; join it before the steps.

    The first jitted calls of a process cost ~0.6 s of registry loading and
    ~0.1 s of kernel loading (see :mod:`webbflow.steps._warmup`); the main
    thread meanwhile reads the exposure and references, work that mostly
    runs outside the GIL.
    """
    from webbflow import aot

    if aot.load():  # the kernels' compiled twins: nothing to load, and numba stays unloaded
        thread = threading.Thread(target=lambda: None, name="numba-warmup", daemon=True)
        thread.start()
        return thread

    def warm():
        try:
            from webbflow.steps import _warmup

            if readout is None:
                _warmup.init_numba()
            else:
                _warmup.warm_stage1(readout, params, frame_shape)
        except Exception:  # a failed warm-up costs only time: the steps compile as usual
            log.debug("numba warm-up failed", exc_info=True)

    thread = threading.Thread(target=warm, name="numba-warmup", daemon=True)
    thread.start()
    return thread


class _EarlyReferences(threading.Thread):
    """Load the references in the background while the exposure's pixels are read."""

    def __init__(self, used, readout, shape):
        super().__init__(name="references", daemon=True)
        self.used, self.readout, self.shape = used, readout, tuple(shape)
        self.refs = self.error = None

    def run(self):
        try:
            self.refs = load_references(self.used, self.readout, self.shape)
        except BaseException as exc:  # re-raised in the main thread by result()
            self.error = exc

    def result(self):
        if self.error is not None:
            raise self.error
        return self.refs


def _peek_readout(uncal_path, exp_types):
    """(readout, (ny, nx)) from the uncal's headers alone; None if they cannot tell.

    Lets the references load (and the kernels warm up) while the ramps are
    read.  Anything odd about the file is left for :func:`read_uncal` to
    report, with its own clear message.
    """
    try:
        hdrs = read_uncal_headers(uncal_path, validate=True)
        sci = hdrs.sci
        if exp_types is not None and hdrs.primary.get("EXP_TYPE") not in exp_types:
            return None
        readout = readout_from_header(hdrs.primary, nints=int(sci["NAXIS4"]), ngroups=int(sci["NAXIS3"]),
                                      path=uncal_path)
        return readout, (int(sci["NAXIS2"]), int(sci["NAXIS1"]))
    except Exception:  # noqa: BLE001 - read_uncal reports it properly
        return None


def _small_pages():
    """Ask numpy for ordinary 4 kB pages for this job's arrays (unless WEBBFLOW_HUGEPAGES=1).

    numpy marks big arrays for transparent huge pages.  On the virtual
    machines this was measured on (Firecracker, free-page reporting) the
    first touch of fresh huge-page memory cost ~1.5-2 ms per MB, three times
    the 4 kB cost, and a full-frame job touches ~800 MB of new memory once:
    the reading phase took 1.0-1.2 s with huge pages and 0.35-0.4 s
    without.  On hosts where huge pages pay, set WEBBFLOW_HUGEPAGES=1.
    """
    if os.environ.get("WEBBFLOW_HUGEPAGES", "0") == "1":
        return
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # a numpy without the switch: keep its default
        return
    _set_madvise_hugepage(False)


def _reuse_freed_memory():
    """Keep the memory this job frees for its next arrays instead of handing it back (glibc only).

    glibc gives every array of 128 kB or more its own mapping until the first is freed, and hands
    freed heap memory back above a threshold; each new array then starts on fresh pages, and a job
    touches most of its memory once per step that makes an array (the first touch of a page costs a
    fault, about a microsecond of system time each).  With arrays up to 32 MB (glibc's limit) taken
    from the heap and the heap never trimmed, a freed array's pages serve the next ones.  The job's
    peak memory is what it holds at once, as before; it exits when done.
    """
    if os.environ.get("WEBBFLOW_MALLOC_REUSE", "1") != "1":
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: its allocator decides
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def _limit_threads():
    """Run numba's parallel loops on no more threads than the job was given.

    Snakemake exports the job's ``threads`` as OMP_NUM_THREADS; without this,
    two single-thread jobs on two cores would each start one numba thread per
    core and fight over them.
    """
    n = job_thread_count()
    if n is not None:
        from webbflow.steps import _jit

        _jit.set_num_threads(n)


def _run_fused(ramp, readout, refs, params, steps, one_over_f):
    """superbias to dark_current in one pass (:mod:`webbflow.steps.fused`) where they all run here and
    can be fused: step -> status, else None (nothing done)."""
    from webbflow.steps import fused

    if any(s not in steps or step_skipped(params, s) for s in fused.STEPS):
        return None
    rp = step_kwargs(params, "refpix")
    if rp.get("refpix_algorithm") == "sirs":
        rp["sirs_kernel"] = refs.get("sirskernel")
    dark = refs["dark"]
    return fused.run(ramp, readout, refs["superbias"]["bias"], refs["superbias"]["bias_dq"], rp,
                     refs["linearity"]["coeffs"], refs["linearity"]["lin_dq"],
                     dict(dark_frames=dark["dark_frames"], dark_dq=dark["dark_dq"], dark_nframes=dark["dark_nframes"],
                          dark_groupgap=dark["dark_groupgap"], **step_kwargs(params, "dark_current")),
                     one_over_f=one_over_f)


def iter_steps(ramp, readout, headers, refs, params, one_over_f=None, steps=DETECTOR1_STEPS, fuse=False):
    """Run the detector1 steps in order on ``ramp`` (in place), yielding after each one.

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
    readout : webbflow.ramp.Readout
    headers : webbflow.io.uncal.UncalHeaders
        The exposure's headers (GAINFACT for gain_scale).
    refs : dict
        Loaded references (:func:`webbflow.refs.load_references`).
    params : dict
        step -> {parameter: value}; ``skip: true`` skips a step.
    one_over_f : list, optional
        Passed to refpix, which appends the 1/f statistic before and after ROEBA
        (:func:`webbflow.steps.refpix.run`).
    steps : sequence of str
        The steps to run, in :data:`~webbflow.config.DETECTOR1_STEPS` order (default all; the
        streamed runner runs those before jump on chunks of integrations).
    fuse : bool
        Run superbias, refpix, linearity and dark_current in one pass where they can be
        (:mod:`webbflow.steps.fused`: the same numbers, one read and write of the ramp instead of
        four).  Their statuses are then yielded together after the pass, so ``ramp`` does not hold
        the state between them (the per-step parity tests leave this off).

    Yields
    ------
    step : str
    status : str
        ``COMPLETE`` or ``SKIPPED``.
    result : RampFitResult or None
        The ramp-fit products once ramp_fit has run, else None.  Between
        yields ``ramp`` holds the state after ``step`` (the per-step parity
        tests compare it with jwst's intermediate products).
    """
    result = None
    fused = {}
    for step in steps:
        t0 = time.perf_counter()
        if step in fused:
            status = fused[step]
        elif step_skipped(params, step):
            status = StepStatus.SKIPPED
        elif fuse and step == "superbias" and (fused := _run_fused(ramp, readout, refs, params, steps,
                                                                   one_over_f) or {}):
            status = fused[step]
        elif step == "ramp_fit":
            module = importlib.import_module("webbflow.steps.ramp_fit")
            status, result = module.run(ramp, readout, refs["gain"]["gain"], refs["readnoise"]["readnoise"],
                                        **step_kwargs(params, step))
        elif step == "gain_scale":
            module = importlib.import_module("webbflow.steps.gain_scale")
            status = module.run(result, gain_factor=_gain_factor(headers, refs))
        elif step == "clean_flicker_noise":
            module = importlib.import_module("webbflow.steps.clean_flicker_noise")
            status = module.run(ramp, readout, refs["gain"]["gain"], refs["readnoise"]["readnoise"],
                                exp_type=headers.primary.get("EXP_TYPE"), **step_kwargs(params, step))
        else:
            kwargs = step_kwargs(params, step)
            if step == "refpix" and one_over_f is not None:
                kwargs["one_over_f"] = one_over_f
            status = call_step(step, ramp, readout, refs, kwargs)
        log.info("%-13s %-9s %7.2f s", step, status, time.perf_counter() - t0)
        yield step, status, result


ONE_OVER_F_STATISTIC = (
    "per integration and amplifier output (detector order, 1 = detector columns 0-511): 1.4826 x MAD of the row "
    "medians of the background pixels (ROEBA's mask) of the integration's least-squares slope over its groups "
    "(DN/s), after jwst's reference-pixel correction (before) and after ROEBA (after); white_* is what white noise "
    "alone gives: 1.2533 x the pixels' robust scatter about their row median / sqrt(pixels per row)")


def one_over_f_table(records, headers):
    """The 1/f QA table of an exposure from refpix's records (:func:`webbflow.steps.refpix.run`'s ``one_over_f``).

    Parameters
    ----------
    records : list of dict
        One per refpix call (one for the in-memory stage, one per chunk of integrations streamed).
    headers : webbflow.io.uncal.UncalHeaders
        The exposure's headers (FILENAME, INTSTART).

    Returns
    -------
    astropy.table.Table
        One row per integration and amplifier output: ``integration`` (number in the exposure),
        ``amplifier``, ``before``, ``after``, ``white_before``, ``white_after`` (DN/s),
        ``ratio_before``, ``ratio_after`` and ``rows``; meta ``roeba`` (False: before and after
        are the same measurement), ``exposure`` and ``statistic``.  No rows when refpix did not run.
    """
    from astropy.table import Table

    start = int(headers.primary.get("INTSTART") or 1)
    columns = {k: [] for k in ("integration", "amplifier", "before", "after", "white_before", "white_after",
                               "rows")}
    for rec in sorted(records, key=lambda r: r["first_integration"]):
        (before, white_b, rows), (after, white_a, _) = rec["before"], rec["after"]
        nints, namp = before.shape
        columns["integration"].append(np.repeat(start + rec["first_integration"] + np.arange(nints), namp))
        columns["amplifier"].append(np.tile(np.arange(1, namp + 1), nints))
        for name, values in (("before", before), ("after", after), ("white_before", white_b),
                             ("white_after", white_a), ("rows", rows)):
            columns[name].append(values.ravel())
    table = Table({k: np.concatenate(v) if v else np.zeros(0, np.int64 if k in ("integration", "amplifier", "rows")
                                                              else np.float64) for k, v in columns.items()})
    with np.errstate(invalid="ignore", divide="ignore"):
        table["ratio_before"] = table["before"] / table["white_before"]
        table["ratio_after"] = table["after"] / table["white_after"]
    for name in ("before", "after", "white_before", "white_after"):
        table[name].unit = "DN/s"
    table.meta.update({"exposure": str(headers.primary.get("FILENAME", "")),
                       "roeba": bool(records) and all(r["roeba"] for r in records),
                       "refpix": bool(records), "statistic": ONE_OVER_F_STATISTIC})
    return table


def write_one_over_f(path, records, headers):
    """Write :func:`one_over_f_table` to ``path`` (ECSV, atomically)."""
    from webbflow.io.files import write_ecsv

    table = one_over_f_table(records, headers)
    write_ecsv(path, table)
    return Path(path)


def fitopt_path(rate_path):
    """The optional fit product (``steps.ramp_fit.save_opt``) written beside ``rate_path``."""
    rate_path = Path(rate_path)
    return rate_path.with_name(rate_path.name.removesuffix("_rate.fits").removesuffix(".fits") + "_fitopt.fits")


def _persistence(params, earlier_highpix):
    """The persistence settings of a run: (settings, on, window, fraction, earlier summaries).

    ``params["persistence"]`` (beyond jwst, :mod:`webbflow.steps.persistence`) is off unless
    ``skip: false``; the earlier exposures' summaries are read only when it is on.
    """
    settings = dict(params.get("persistence") or {})
    on = not settings.get("skip", True)
    window = float(settings.get("window", persistence.DEFAULT_WINDOW_S))
    fraction = float(settings.get("fraction", 1.0))
    records = [highpix_io.read_high_pixels(p) for p in earlier_highpix] if on else []
    return settings, on, window, fraction, records


def _raw_group_max(stream, batch=8):
    """Each pixel's highest raw group value of a streamed exposure, ``batch`` groups at a time.

    For exposures reduced in chunks (:mod:`~webbflow.stages.detector1_stream`), whose whole ramp
    never sits in memory: the persistence summary needs only this plane.
    """
    nints, ngroups = stream.shape[:2]
    top = None
    for i in range(nints):
        for g0 in range(0, ngroups, batch):
            plane = stream.ramp(i, i + 1, groups=range(g0, min(g0 + batch, ngroups))).data.max(axis=(0, 1))
            top = plane if top is None else np.maximum(top, plane)
    return top


def run(uncal_path, rate_path, rateints_path, references, params, provenance=None,
        exp_types=SUPPORTED_EXP_TYPES, max_memory_mb=None, scratch_dir=None, one_over_f_path=None,
        highpix_path=None, earlier_highpix=()):
    """Reduce one uncal exposure to ``rate`` and ``rateints`` products.

    Parameters
    ----------
    uncal_path : str or os.PathLike
        The ``*_uncal.fits`` exposure.
    rate_path, rateints_path : str or os.PathLike
        Products to write.
    references : dict
        reftype -> path (or None) for mask, saturation, superbias, linearity,
        dark, gain, readnoise (see :func:`webbflow.refs.select_references`).
    params : dict
        step -> {parameter: value}; ``skip: true`` skips a step.  Missing
        parameters take the jwst defaults of the step functions.
    provenance : dict, optional
        Recorded in the products; ``config_digest`` defaults to the digest of
        ``params`` and the reference file names.
    exp_types : sequence of str
        EXP_TYPE values accepted.
    max_memory_mb : float, optional
        Memory budget of the job's arrays (default
        :data:`~webbflow.stages.detector1_stream.DEFAULT_MAX_MEMORY_MB`).  An
        exposure whose ramp would not fit is reduced in chunks of integrations
        and blocks of rows (:mod:`webbflow.stages.detector1_stream`), with
        identical products.
    scratch_dir : path-like, optional
        Scratch folder for such exposures (default ``$WEBBFLOW_SCRATCH`` or
        the folder of ``rateints_path``).
    one_over_f_path : str or os.PathLike, optional
        Also write the 1/f QA table (:func:`one_over_f_table`, ECSV): per
        integration and amplifier, the 1/f left before and after ROEBA.  The
        products do not change.

    highpix_path : str or os.PathLike, optional
        Also write the exposure's high pixels (those whose raw ramp reaches
        ``params["persistence"]["fraction"]`` (default 1) times the saturation
        reference), :func:`webbflow.io.persistence.write_high_pixels`.
    earlier_highpix : sequence of path-like
        Such summaries of earlier exposures; with ``params["persistence"]["skip"]``
        false, PERSISTENCE is flagged in PIXELDQ after dq_init where one of the same
        detector that ended less than ``window`` s before this one started was high.

    With ``params["ramp_fit"]["save_opt"]`` the optional fit product is also
    written, to :func:`fitopt_path` of ``rate_path`` (in-memory exposures only;
    so is the persistence flagging, while the summary is written for any).

    Returns
    -------
    dict
        step -> status (``COMPLETE``/``SKIPPED``).

    Raises
    ------
    webbflow.io.InputError
        For an unreadable or unsupported exposure, or a missing/mismatched
        reference; nothing is written then.
    """
    t_start = time.perf_counter()
    persist, persist_on, window, fraction, earlier = _persistence(params, earlier_highpix)
    params = {step: dict(params.get(step) or {}) for step in DETECTOR1_STEPS}
    if params["ramp_fit"].pop("skip", False):
        raise ValueError("steps.ramp_fit.skip cannot be true: ramp_fit makes the rate products")
    _small_pages()
    _reuse_freed_memory()
    references, needed, used = _references_used(params, references)
    if highpix_path is not None:  # the summary's levels are the saturation reference's
        if not references.get("saturation"):
            raise ReferenceFileError(uncal_path, "no saturation reference: the persistence summary "
                                     "(_highpix) measures levels against it",
                                     "give one (references.dir or overrides.saturation) or set "
                                     "steps.persistence.skip: true")
        used["saturation"] = references["saturation"]
    peek = _peek_readout(uncal_path, exp_types)
    max_bytes = int((max_memory_mb or detector1_stream.DEFAULT_MAX_MEMORY_MB) * 2**20)
    streamed = peek is not None and detector1_stream.plan(
        (peek[0].nints, peek[0].ngroups, *peek[1]), max_bytes) is not None
    warmup = _start_numba_warmup(peek and peek[0], params, peek and peek[1])
    early = None if peek is None else _EarlyReferences(used, *peek)
    if early is not None:
        early.start()
    try:
        if streamed:
            stream = UncalStream(uncal_path, exp_types=exp_types)
            readout, headers, shape = stream.readout, stream.headers, stream.shape
        else:
            ramp, readout, headers = read_uncal(uncal_path, exp_types=exp_types)
            shape = ramp.shape
    finally:
        if early is not None:
            early.join()
    log.info("%s: %d int x %d groups x %d x %d, %s %s %s", Path(uncal_path).name, *shape,
             readout.detector, readout.subarray, headers.primary.get("FILTER"))
    _check_references(uncal_path, headers, references, needed)
    refs = early.result() if early is not None and early.readout == readout and early.shape == tuple(shape[-2:]) \
        else load_references(used, readout, shape[-2:])
    _drop_subarray_sirskernel(used, refs, readout)
    warmup.join()
    _limit_threads()

    # the persistence parameters are recorded only when it runs: off, the products are as before
    provenance = stage_provenance({**params, "persistence": persist} if persist_on else params, provenance,
                                  references=reference_names(used))
    statuses = {}
    one_over_f = [] if one_over_f_path is not None else None
    for key, wanted in (("ramp_fit.save_opt", params["ramp_fit"].get("save_opt")),
                        ("persistence.skip", persist_on),
                        ("jump.per_integration", (params.get("jump") or {}).get("per_integration"))):
        if streamed and wanted:
            value = "true" if key == "persistence.skip" else "false"
            raise InputError(uncal_path, f"steps.{key} needs the whole ramp in memory, and this exposure "
                             f"exceeds max_memory_mb.detector1 ({max_bytes / 2**20:.0f} MB)",
                             f"raise max_memory_mb.detector1 or set steps.{key}: {value}")
    if streamed:
        with atomic_group():  # rateints, rate and the QA table all in place, or none of them
            detector1_stream.run(stream, rate_path, rateints_path, refs, params, statuses, provenance, used,
                                 max_bytes, scratch_dir=scratch_dir, one_over_f=one_over_f)
            if one_over_f is not None:
                write_one_over_f(one_over_f_path, one_over_f, headers)
            if highpix_path is not None:  # a summary for later exposures (flagging this one needs the ramp)
                top = _raw_group_max(stream)[None, None]
                highpix_io.write_high_pixels(highpix_path, persistence.high_pixels(
                    top, fraction * refs["saturation"]["sat_thresh"], readout.detector, headers.primary["EXPSTART"],
                    headers.primary["EXPEND"], readout.substrt1, readout.substrt2))
        log.info("detector1 done in %.2f s: %s, %s", time.perf_counter() - t_start,
                 Path(rate_path).name, Path(rateints_path).name)
        return statuses

    high = None
    if highpix_path is not None:
        # the raw ramp, before any step: the saturation reference's scale
        high = persistence.high_pixels(ramp.data, fraction * refs["saturation"]["sat_thresh"], readout.detector,
                                       headers.primary["EXPSTART"], headers.primary["EXPEND"],
                                       readout.substrt1, readout.substrt2)
    result = None
    for step, status, result in iter_steps(ramp, readout, headers, refs, params, one_over_f=one_over_f,
                                           fuse=True):
        statuses[step] = status
        if step == "dq_init" and persist_on:  # dq_init sets PIXELDQ from the mask; later steps see the flag
            persistence.flag(ramp.pixeldq, readout.detector, headers.primary["EXPSTART"], earlier,
                             readout.substrt1, readout.substrt2, window=window)
            statuses["persistence"] = StepStatus.COMPLETE
    del ramp  # the 4-D cube is not needed for writing

    # the products' float32 arrays are written byte-swapped in place (the result is not used after),
    # unless two of them share memory
    consume = {"consume": _unshared(result.rateints, result.rate)}
    products = [(write_rateints, result.rateints, rateints_path, consume),
                (write_rate, result.rate, rate_path, consume)]
    if result.opt is not None:
        # jwst's <root>_fitopt.fits beside the rate product
        products.insert(0, (write_fitopt, result.opt, fitopt_path(rate_path), {}))
    with atomic_group():  # a rate without its rateints (or fitopt, or QA table) would be a partial product
        for writer, arrays, path, kwargs in products:
            writer(path, arrays, headers, cal_steps=statuses, ref_files=used, provenance=provenance, **kwargs)
        if one_over_f is not None:
            write_one_over_f(one_over_f_path, one_over_f, headers)
        if high is not None:
            highpix_io.write_high_pixels(highpix_path, high)
    log.info("detector1 done in %.2f s: %s, %s", time.perf_counter() - t_start,
             Path(rate_path).name, Path(rateints_path).name)
    return statuses


def _unshared(*products):
    """True when no two arrays of the ramp-fit ``products`` (:class:`~webbflow.steps.ramp_fit.ImageArrays`)
    may share memory: each can then be given up to its writer (``consume``) without touching another."""
    arrays = [a for p in products for a in vars(p).values() if isinstance(a, np.ndarray)]
    return not any(np.may_share_memory(a, b) for k, a in enumerate(arrays) for b in arrays[k + 1:])


def jump_fraction(uncal_path, references, params, exp_types=SUPPORTED_EXP_TYPES):
    """The fraction of an exposure's rateints pixels that detector1 under ``params`` flags JUMP_DET,
    without fitting the ramps or writing anything.

    The steps up to jump run in memory as :func:`run` runs them (same references, same parameters);
    a pixel of an integration counts when any of its groups is JUMP_DET, which is the JUMP_DET bit of
    the rateints DQ that :func:`run` writes (ramp_fit ORs the group flags into it).  The report compares
    two stage-1 lines this way (coronagraphy: dark subtracted or not, NC-CI01).

    Parameters
    ----------
    uncal_path : str or os.PathLike
    references : dict
        reftype -> path, as for :func:`run`.
    params : dict
        step -> {parameter: value}, as for :func:`run`.
    exp_types : sequence of str

    Returns
    -------
    ndarray float64 (nints,)
        Per integration, the fraction of its pixels with a JUMP_DET group.
    """
    from webbflow.dqflags import JUMP_DET

    params = {step: dict(params.get(step) or {}) for step in DETECTOR1_STEPS}
    references, needed, used = _references_used(params, references)
    ramp, readout, headers = read_uncal(uncal_path, exp_types=exp_types)
    _check_references(uncal_path, headers, references, needed)
    refs = load_references(used, readout, ramp.shape[-2:])
    _drop_subarray_sirskernel(used, refs, readout)
    steps = DETECTOR1_STEPS[:DETECTOR1_STEPS.index("jump") + 1]
    for _ in iter_steps(ramp, readout, headers, refs, params, steps=steps, fuse=True):
        pass
    flagged = np.bitwise_or.reduce(ramp.groupdq, axis=1) & JUMP_DET
    return np.mean(flagged != 0, axis=(1, 2))
