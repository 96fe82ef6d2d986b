"""detector1's (and tso3's) numba kernels compiled ahead of time (``numba.pycc``): a job need not load numba.

A detector1 job that calls its kernels through numba's JIT loads numba, llvmlite and LLVM (~110 MiB of
its peak RSS, ~0.5 s of CPU) even when every kernel comes from numba's on-disk cache.  This module
exports those kernels, with the argument types a workflow job calls them with (:data:`SPEC`), into one
extension module in a cache folder; :mod:`webbflow.steps._jit` calls a kernel's compiled twin when one
matches the call's argument types exactly, and numba's JIT otherwise (no module, a stale one, another
dtype or layout, a parallel kernel in a job with more than one thread).

Build it with ``python -m webbflow.aot`` (the job server starts that in the background when the module
is missing, see :func:`build_in_background`).  The module's name carries a hash of the kernels' sources
and of the Python, numpy and numba versions: an edited kernel is never run from a stale module.

Each kernel is exported through a serial twin (``parallel`` dropped: pycc links no threading layer, so a
``prange`` runs as ``range``) with the kernel's own ``error_model``, ``fastmath`` and ``nogil``, called
from a one-line wrapper (pycc compiles the functions it exports with numba's default flags); the
code is generated for this machine's CPU, as numba's JIT does.
"""

import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["SPEC", "build", "build_in_background", "cache_dir", "load", "twins"]

SPEC = (
    ("io._decode.uint16_be_to_float32", "u2[2C] f4[2C]"),
    ("steps.saturation._forward", "f4[3C] f4[2C] u1[3C] u1 u1"),
    ("steps.saturation._flag_from", "u1[3C] i2[2C] u1"),
    ("steps.saturation._count_pixels", "u1[4C] u1"),
    ("steps.saturation._group2_kernel", "f4[2C] f4[2C] u1[2C] u1[2C] f4[2C] f4[2C,ro] f8 f8 f4 u1 u1"),
    ("steps.linearity._classify", "f4[3C,ro] u4[2C,ro] u4[2C] u4 u1[2C]"),
    ("steps.linearity._apply_horner", "f4[4C] u1[4C] f4[3C,ro] u1[2C] u1"),
    ("steps.fused._plane_serial",
     "f4[2C] f4[2C] f8[1C] i1[1C] f8[2C] i8[1C] b1 u1[2C] f4[3C,ro] u1[2C] u1 f4[2C] f4[2C]"),
    ("steps.fused._plane_parallel",
     "f4[2C] f4[2C] f8[1C] i1[1C] f8[2C] i8[1C] b1 u1[2C] f4[3C,ro] u1[2C] u1 f4[2C] f4[2C]"),
    ("steps.refpix._apply_serial", "f4[2A] f8[1C] i1[1C] f8[2C] i8[1C] b1"),
    ("steps.refpix._apply_parallel", "f4[2A] f8[1C] i1[1C] f8[2C] i8[1C] b1"),
    ("steps.refpix._clipped_mean_section", "f4[2A] u4[2A] f4[1C] f4[1C] f4[1C] u4 b1"),
    ("steps.refpix._clipped_mean_section", "f4[2A] u4[2A] f8[1C] f8[1C] f8[1C] u4 b1"),
    ("steps.refpix._running_median", "f8[2C] b1[2F] i8 i8 i8 b1"),
    ("steps.refpix._side_values", "f4[2A] i8[1C] f8[1C] i1[1C]"),
    ("steps._jump_numba.detect",
     "f4[4C] u1[4C] f4[2C,ro] f4[2C] f8 i8 f8 f8 f8 i8 i8[2C,ro] i8 f8[2C] f8[2C]"),
    ("steps._jump_numba._find_cores", "f4[4C] u1[4C] f4[2C,ro] f8[2C] f8[2C] f8 f8 i8[1C] i4[2C]"),
    ("steps._jump_numba._flag_around_cores", "u1[4C] i4[2C]"),
    ("steps._jump_numba.clear_jump_on_bad", "u1[4C]"),
    ("steps._jump_numba.count_all_dnu_groups", "u1[4C]"),
    ("steps._ramp_numba.weight_table", "i8"),
    ("steps._ramp_numba.ols_fit",
     "i8 i8 f4[4C] u1[4C] u4[2C] f4[2C,ro] f4[2C] f4[2C] f4[3C] b1 b1 f8 f8 i8 f8[3C] i8[2C] i8[1C] f4[2C] "
     "u4[2C] f4[2C] f4[2C] f4[2C] f4[3C] u4[3C] f4[3C] f4[3C] f4[3C] b1 f8 f4[4C] f4[4C] f4[4C] f4[4C] "
     "f4[4C] f4[4C] f4[4C] f4[3C] f4[4C] i2[4C]"),
    ("steps._warmup.touch", "i8"),
    # the coronagraphy and imaging presets (pseudo reference pixels, saturation's second group), the
    # time-series presets' recommended ROEBA, and charge_migration / clean_flicker_noise when turned on
    ("steps.saturation._partial_saturation", "f4[2C] u1[2C] u1[2C] f4[2C] b1[2C] f8 u1 u1"),
    ("steps._jump_numba.label8", "b1[2C]"),
    ("steps._jump_numba.label8", "b1[2A]"),
    ("steps.charge_migration._first_crossing", "f4[3C] u1[3C] f4 u1"),
    ("steps.roeba._correct_frame", "f4[2C] b1[2C] i8[1C] b1 i8 f8[1C] f8[2C] b1 i8"),
    ("steps.roeba._measure_rows", "f8[2C] b1[2C] i8[1C] b1 i8 f8[1C] f8[2C] i8 b1"),
    ("steps.roeba._frame_levels", "f8[2C] i8 f8[1C]"),
    ("steps.roeba._apply_rows", "f8[2C] i8[1C] f8[2C] f8[1C] b1"),
    # the 1/f QA record's row scatter (refpix on a subarray without reference columns: the coronagraphic ones)
    ("steps.roeba._row_medians", "f8[2C] b1[2C] i8[1C] i8 f8[3C]"),
    ("steps.clean_flicker_noise._unmask_outside", "f4[2C] b1[2C] f8 f8"),
    ("steps.clean_flicker_noise._row_median_kernel", "f4[2C] b1[2C] i8 f4[2C] f8 f8"),
    ("steps.clean_flicker_noise._destripe", "f4[2C] f4[2C] f4 b1[2C]"),
    ("steps.clean_flicker_noise._shifted_sums", "f8[1C] i8 i8 f8 f8 f8[1C]"),
    ("steps.clean_flicker_noise._mirror_sorted_into", "f8[1C] f8 i8 f8[1C]"),
    ("steps.outlier_detection._rolling_median_kernel", "f4[3C] i8 f8[3C]"),
    ("steps.outlier_detection._rolling_median_kernel", "f4[3C,ro] i8 f8[3C]"),
    ("steps.outlier_detection._kth_key", "u4[1C] i8"),  # tso3's on an imaging time series
    # coron3: align_refs' model (jwst's float32 line and the float64 one) and the i2d's square drizzle
    ("steps.align_refs._residuals", "f4[2C] f8 c8[2C] f4[2C]"),
    ("steps.align_refs._shift_spectrum", "c8[2C] f8[1C] f8[1C] c8[2C]"),
    ("steps.align_refs._shift_spectrum", "c16[2C] f8[1C] f8[1C] c16[2C]"),
    ("steps._drizzle_square._square_planes",
     "f4[3C] f4[2C] f8[3C,ro] f4[3C] f4[2C] f8 i8[2C] f4[2C] f4[2C] i4[2C] i4"),
    ("steps._drizzle_square.accumulate_variance", "f4[2C] f8[2C] f8[2C] f8[2C]"),
    ("steps._drizzle_square.ivm_input_weight", "f4[2C] u4[2C] u4 f4[2C]"),
    ("steps._drizzle_square.ivm_weight", "f4[2C]"),
)
"""(kernel, argument types) compiled: the kernel as ``module.name`` under ``webbflow``; each type a numpy
type code (``f4``, ``i8``, ``b1``, ...) for a scalar, or ``code[<ndim><layout>]`` for an array, with
``,ro`` for a read-only one (numba types those apart).  The types detector1's steps call them with in a
workflow job of one thread (traced with ``WEBBFLOW_AOT_TRACE``, :mod:`webbflow.steps._jit`, on the grism
and imaging TSO, coronagraphy, imaging and full-frame program demos: ``step_defaults`` jwst and
recommended, streamed or not, charge_migration and clean_flicker_noise on), and tso3's rolling median
(outlier_detection, a series longer than its window, and its order statistic of an imaging time series
under jwst's defaults); a call with other types runs numba's JIT."""

_ARG = re.compile(r"^(\w\d+)(?:\[(\d)([CFA])(,ro)?\])?$")


def parse(types):
    """The argument keys of a :data:`SPEC` entry: per argument ``("s", dtype)`` for a scalar or
    ``("a", dtype, ndim, layout, readonly)`` for an array.

    Parameters
    ----------
    types : str
        Space-separated type codes (see :data:`SPEC`).

    Returns
    -------
    tuple
    """
    keys = []
    for t in types.split():
        m = _ARG.match(t)
        if m is None:
            raise ValueError(f"bad AOT type {t!r}")
        dtype = np.dtype(m[1])
        keys.append(("s", dtype) if m[2] is None else ("a", dtype, int(m[2]), m[3], bool(m[4])))
    return tuple(keys)


def _sources():
    """The files whose code the compiled module holds (every module of :data:`SPEC`, the kernels they
    call included, and the code that exports them)."""
    root = Path(__file__).resolve().parent
    modules = sorted({name.rsplit(".", 1)[0] for name, _ in SPEC})
    return [root / (m.replace(".", "/") + ".py") for m in modules] + [Path(__file__).resolve()]


def _numba_version():
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.origin:
        return None
    version = Path(spec.origin).with_name("_version.py")
    try:  # numba's version without importing numba (the point of this module)
        return re.search(r"version\s*=\s*['\"]([^'\"]+)", version.read_text())[1]
    except (OSError, TypeError):
        return "?"


def key():
    """The hash naming the compiled module: sources, SPEC, Python, numpy and numba versions (16 hex
    digits; None without numba)."""
    numba_version = _numba_version()
    if numba_version is None:
        return None
    h = hashlib.sha256()
    for path in _sources():
        h.update(path.read_bytes())
    h.update(repr((SPEC, sys.version, np.__version__, numba_version)).encode())
    return h.hexdigest()[:16]


def cache_dir():
    """The folder of compiled modules: ``$WEBBFLOW_AOT_DIR``, else ``$XDG_CACHE_HOME/webbflow/aot``
    (``~/.cache/webbflow/aot``)."""
    if os.environ.get("WEBBFLOW_AOT_DIR"):
        return Path(os.environ["WEBBFLOW_AOT_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "webbflow" / "aot"


def _paths(directory=None):
    k = key()
    if k is None:
        return None
    d = Path(directory) if directory else cache_dir()
    return d / f"wf_aot_{k}.json", d / f"wf_aot_{k}"


_LOADED = {}


def load(directory=None):
    """The compiled twins: ``{kernel name: [(function, argument keys), ...]}``; {} when there is no
    module for the current sources (never built, stale, numba absent, WEBBFLOW_AOT=0) or it does not load.

    Parameters
    ----------
    directory : path, optional
        Default :func:`cache_dir`.

    Returns
    -------
    dict
    """
    d = str(directory or cache_dir())
    if d in _LOADED:
        return _LOADED[d]
    twins = {}
    if os.environ.get("WEBBFLOW_AOT", "1") != "0":
        paths = _paths(directory)
        if paths is not None and paths[0].is_file():
            try:
                table = json.loads(paths[0].read_text())
                spec = importlib.util.spec_from_file_location(paths[1].name, paths[0].with_name(table["file"]))
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                for name, entries in table["kernels"].items():
                    twins[name] = [(getattr(module, symbol), parse(types)) for symbol, types in entries]
            except Exception as exc:  # a broken module costs only numba's JIT
                log.warning("AOT kernels in %s not loaded (%s): numba's JIT runs them", paths[0].parent, exc)
                twins = {}
    _LOADED[d] = twins
    return twins


def twins(name):
    """The compiled twins of kernel ``name`` (``module.function``, full): [(function, keys), ...]."""
    return load().get(name, [])


def _numba_type(k):
    import numba
    from numba.core import types

    dtype = numba.from_dtype(k[1])
    if k[0] == "s":
        return dtype
    return types.Array(dtype, k[2], k[3], readonly=k[4])


def build(directory=None, spec=SPEC):
    """Compile ``spec``'s kernels with ``numba.pycc`` into ``directory`` (default :func:`cache_dir`).

    The module is compiled in a temporary folder and its table renamed into place last, so that a
    concurrent build or a job loading it meanwhile sees either no module or a whole one.

    Parameters
    ----------
    directory : path, optional
    spec : sequence of (str, str), optional
        (kernel, argument types) pairs, as :data:`SPEC`.

    Returns
    -------
    pathlib.Path
        The module's table (JSON).
    """
    import importlib
    import warnings

    from numba import njit

    with warnings.catch_warnings():  # pycc's pending deprecation: no replacement exists yet
        warnings.simplefilter("ignore")
        from numba.pycc import CC

    from webbflow.steps import _jit

    table_path, module_path = _paths(directory)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    cc = CC(module_path.name)
    cc.target_cpu, cc.verbose = "host", False
    kernels, serial = {}, {}
    for i, (name, types) in enumerate(spec):
        module, fn = name.rsplit(".", 1)
        kernel = getattr(importlib.import_module(f"webbflow.{module}"), fn)
        full = f"webbflow.{name}"
        if full not in serial:
            d = _jit.dispatcher(kernel) if isinstance(kernel, _jit.Kernel) else kernel
            opts = {k: v for k, v in d.targetoptions.items() if k in ("error_model", "fastmath", "nogil")}
            serial[full] = njit(**opts)(d.py_func)
        argtypes = [_numba_type(k) for k in parse(types)]
        serial[full].compile(tuple(argtypes))
        cres = serial[full].overloads[tuple(argtypes)]
        names = ", ".join(f"a{j}" for j in range(len(argtypes)))
        ns = {"_k": serial[full]}
        exec(f"def w({names}):\n    return _k({names})\n", ns)  # noqa: S102  (pycc exports a fixed arity)
        symbol = f"k{i}"
        cc.export(symbol, cres.signature.return_type(*argtypes))(ns["w"])
        kernels.setdefault(full, []).append([symbol, types])
    with tempfile.TemporaryDirectory(dir=table_path.parent) as tmp:
        cc.output_dir = tmp
        cc.compile()
        (built,) = Path(tmp).glob(module_path.name + ".*")
        os.replace(built, table_path.with_name(built.name))
        part = Path(tmp) / "table.json"
        part.write_text(json.dumps({"file": built.name, "kernels": kernels}, indent=1))
        os.replace(part, table_path)
    table_path.with_suffix(".building").unlink(missing_ok=True)
    _LOADED.pop(str(directory or cache_dir()), None)
    return table_path


def build_in_background():
    """Start ``python -m webbflow.aot`` in a detached low-priority process when the module for the
    current sources is missing (a job server's start: this run's jobs use numba's JIT, the next run's
    the compiled twins).  Nothing when it is there, WEBBFLOW_AOT=0, or numba is absent.

    Returns
    -------
    subprocess.Popen or None
    """
    import time

    paths = _paths()
    if os.environ.get("WEBBFLOW_AOT", "1") == "0" or paths is None or paths[0].is_file():
        return None
    marker = paths[0].with_suffix(".building")  # one build at a time (a failed one is retried after an hour)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        if marker.exists() and time.time() - marker.stat().st_mtime < 3600:
            return None
        marker.write_text(str(os.getpid()))
        with open(marker.with_suffix(".log"), "w") as out:  # its one line when it fails
            return subprocess.Popen([sys.executable, "-m", "webbflow.aot", "--quiet", "--nice"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    except OSError as exc:
        log.info("AOT kernels not built (%s): numba's JIT runs them", exc)
        return None


def main(argv=None):
    """``python -m webbflow.aot [--dir DIR] [--quiet] [--nice]``: build the module (exit 0), or log one line and
    exit 1 when it cannot (no compiler: the jobs keep numba's JIT)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="default: " + str(cache_dir()))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--nice", action="store_true", help="at the lowest CPU priority (a background build)")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(19)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        path = build(args.dir)
    except Exception as exc:  # e.g. no C compiler
        log.warning("AOT kernels not built (%s: %s): numba's JIT runs them", type(exc).__name__, exc)
        return 1
    log.info("AOT kernels: %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
