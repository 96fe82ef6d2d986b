"""webbflow.aot / webbflow.steps._jit: kernels' ahead-of-time twins against numba's JIT, and the fallbacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from webbflow import aot
from webbflow.steps import _jit

# a few kernels of every kind: integer and float, serial and parallel (run serially), 'A'/'F' layouts,
# read-only arguments, error_model="numpy"
SUBSET = (
    ("io._decode.uint16_be_to_float32", "u2[2C] f4[2C]"),
    ("steps._jump_numba.clear_jump_on_bad", "u1[4C]"),
    ("steps._jump_numba.count_all_dnu_groups", "u1[4C]"),
    ("steps.saturation._flag_from", "u1[3C] i2[2C] u1"),
    ("steps.linearity._classify", "f4[3C,ro] u4[2C,ro] u4[2C] u4 u1[2C]"),
    ("steps.linearity._apply_horner", "f4[4C] u1[4C] f4[3C,ro] u1[2C] u1"),
    ("steps.refpix._running_median", "f8[2C] b1[2F] i8 i8 i8 b1"),
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """SUBSET compiled into a private cache folder, which the kernels then use."""
    directory = tmp_path_factory.mktemp("aot")
    saved = {k: os.environ.get(k) for k in ("WEBBFLOW_AOT", "WEBBFLOW_AOT_DIR")}
    os.environ.update(WEBBFLOW_AOT="1", WEBBFLOW_AOT_DIR=str(directory))
    try:
        try:
            aot.build(directory, spec=SUBSET)
        except Exception as exc:  # no C compiler here: the JIT fallback is all there is
            pytest.skip(f"pycc cannot build here: {exc}")
        _forget()
        yield directory
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget()


def _forget():
    """Every kernel looks its twins up again (they are looked up once per process)."""
    aot._LOADED.clear()
    for name, _ in aot.SPEC:
        _kernel(name)._twins = None


def _kernel(name):
    import importlib

    module, fn = name.rsplit(".", 1)
    return getattr(importlib.import_module(f"webbflow.{module}"), fn)


def _ro(a):
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _inputs(name, rng):
    """Random arguments for kernel ``name`` (NaN and edge values included)."""
    if name.endswith("uint16_be_to_float32"):
        raw = rng.integers(0, 65536, (7, 13), dtype=np.uint16)
        raw[0, :4] = (0, 0x0080, 0xFF7F, 0xFFFF)
        return raw, np.empty((7, 13), np.float32)
    if name.endswith(("clear_jump_on_bad", "count_all_dnu_groups")):
        gdq = rng.choice(np.array([0, 1, 2, 4, 5, 6, 7], np.uint8), (2, 5, 6, 9))
        gdq[1, 2] = 1  # a group wholly DO_NOT_USE
        return (gdq,)
    if name.endswith("_flag_from"):
        return rng.integers(0, 4, (6, 5, 7), dtype=np.uint8), rng.integers(0, 8, (5, 7), dtype=np.int16), np.uint8(2)
    if name.endswith("_classify"):
        coeffs = rng.normal(size=(4, 6, 8)).astype(np.float32)
        coeffs[2, 1, 1], coeffs[1, 2, 2] = np.nan, 0.0
        lin_dq = rng.choice(np.array([0, 0, 0, 2**20], np.uint32), (6, 8))
        return _ro(coeffs), _ro(lin_dq), np.zeros((6, 8), np.uint32), np.uint32(2**20), np.zeros((6, 8), np.uint8)
    if name.endswith("_apply_horner"):
        cube = rng.normal(1000, 300, (2, 4, 6, 8)).astype(np.float32)
        cube[0, 1, 2, 3], cube[1, 0, 0, 0] = np.nan, np.inf
        gdq = rng.choice(np.array([0, 0, 2], np.uint8), cube.shape)
        coeffs = rng.normal(0, 1e-3, (4, 6, 8)).astype(np.float32)
        coeffs[1] = 1.0
        identity = (rng.random((6, 8)) < 0.2).astype(np.uint8)
        return cube, gdq, _ro(coeffs), identity, np.uint8(2)
    if name.endswith("_running_median"):
        vals = rng.normal(size=(40, 4))
        vals[3, 1] = np.nan
        good = np.asfortranarray(rng.random((40, 4)) < 0.8)
        return vals, good, 4, 48, 11, True
    raise KeyError(name)


def _copy(args):
    return tuple(a.copy(order="K") if isinstance(a, np.ndarray) and a.flags.writeable else a for a in args)


def _same(a, b):
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and (a == b or (a != a and b != b))


@pytest.mark.parametrize("name", sorted({n for n, _ in SUBSET}))
def test_twin_bit_identical_to_jit(built, name):
    """The compiled twin gives the JIT kernel's outputs bit for bit (arrays written in place and the
    returned value), on random inputs with NaN, inf and edge values."""
    kernel = _kernel(name)
    rng = np.random.default_rng(7)
    for _ in range(3):
        args = _inputs(name, rng)
        kernel.twin(args)  # loads its twins (a parallel kernel's is taken in a one-thread job only)
        keys = tuple(map(_jit._key, args))
        (twin,) = [f for f, declared, _ in kernel._twins if len(declared) == len(keys)
                   and all(map(_jit._matches, declared, keys))]
        a, b = _copy(args), _copy(args)
        ra, rb = twin(*a), _jit.dispatcher(kernel)(*b)
        assert _same(ra, rb)
        for x, y in zip(a, b):
            if isinstance(x, np.ndarray):
                assert _same(x, y)


def test_call_routes_to_twin_then_falls_back(built, monkeypatch):
    """A call runs the twin when the types match exactly; another dtype, layout or read-only flag, or a
    parallel kernel in a job of more than one thread, runs numba's JIT (same result)."""
    from webbflow.io._decode import uint16_be_to_float32 as decode
    from webbflow.steps import linearity

    raw = np.arange(12, dtype=np.uint16).reshape(3, 4)
    out = np.empty((3, 4), np.float32)
    assert decode.twin((raw, out)) is not None
    assert decode.twin((raw, np.empty((3, 4), np.float64))) is None  # other dtype
    assert decode.twin((raw[:, ::2], np.empty((3, 2), np.float32))) is None  # 'A' layout, twin is C
    assert decode.twin((_ro(raw), out)) is None  # read-only: numba types it apart
    wide = np.empty((3, 4), np.float64)
    decode(raw, wide)  # numba's JIT: no twin for float64
    decode(raw, out)
    assert np.array_equal(wide, out.astype(np.float64))

    args = _inputs("steps.linearity._classify", np.random.default_rng(1))
    monkeypatch.setattr(_jit, "num_threads", lambda: 1)
    assert linearity._classify.twin(args) is not None
    monkeypatch.setattr(_jit, "num_threads", lambda: 2)
    assert linearity._classify.twin(args) is None


def test_missing_or_stale_module_means_jit(built, monkeypatch, tmp_path):
    """No module for the current sources (another folder, an edited kernel, WEBBFLOW_AOT=0): no twins."""
    assert aot.twins("webbflow.steps._jump_numba.clear_jump_on_bad")
    assert aot.load(tmp_path) == {}
    monkeypatch.setattr(aot, "key", lambda: "0" * 16)
    aot._LOADED.clear()
    assert aot.load(built) == {}
    monkeypatch.undo()
    aot._LOADED.clear()
    monkeypatch.setenv("WEBBFLOW_AOT", "0")
    assert aot.load(built) == {}
    monkeypatch.undo()
    aot._LOADED.clear()
    assert aot.load(built)


def test_key_follows_kernel_sources():
    """The module's hash covers the source of every kernel module it compiles."""
    files = {p.name for p in aot._sources()}
    assert {"_decode.py", "refpix.py", "fused.py", "_ramp_numba.py", "_jump_numba.py", "aot.py"} <= files
    assert len(aot.key()) == 16


def test_fresh_process_with_twins_loads_no_numba(built):
    """A process whose kernels all have twins never imports numba or llvmlite."""
    code = ("import sys, numpy as np\n"
            "from webbflow.steps import _jump_numba, saturation\n"
            "g = np.zeros((1, 3, 4, 5), np.uint8); g[0, 1] = 1\n"
            "print(_jump_numba.count_all_dnu_groups(g).tolist(), 'numba' in sys.modules, 'llvmlite' in sys.modules)\n")
    src = str(Path(aot.__file__).resolve().parents[1])
    env = {**os.environ, "WEBBFLOW_AOT_DIR": str(built), "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[1]", "False", "False"]


def test_parse():
    """SPEC's type codes."""
    assert aot.parse("f4[2C,ro] i8 b1 u2[3A]") == (
        ("a", np.dtype(np.float32), 2, "C", True), ("s", np.dtype(np.int64)), ("s", np.dtype(bool)),
        ("a", np.dtype(np.uint16), 3, "A", False))
    with pytest.raises(ValueError):
        aot.parse("float[2C]")
    for name, types in aot.SPEC:
        assert aot.parse(types) and "." in name


def test_job_server_warms_no_numba_for_kinds_with_twins(monkeypatch):
    """With compiled twins, the server warms numba for none of detector1, spec2 and tso3 (the grism
    TSO run), still for image3; without them, for detector1 and tso3 as before."""
    from webbflow import jobserver

    def labels(kinds):
        return {label for label, _, _ in jobserver.warm_steps(kinds)}

    monkeypatch.setattr(aot, "load", lambda directory=None: {})
    assert {"numba", "numba cache"} <= labels(["detector1", "spec2", "tso3"])
    monkeypatch.setattr(aot, "load", lambda directory=None: {"webbflow.steps._warmup.touch": []})
    assert not {"numba", "numba cache"} & labels(["detector1", "spec2", "tso3"])
    assert "numba" in labels(["detector1", "image3"])
    # image3 (or coron3) still needs numba, but not detector1's cached kernels: twins run those
    assert "numba cache" not in labels(["detector1", "image3"])
    assert "numba cache" not in labels(["detector1", "coron3"])
    monkeypatch.setattr(aot, "load", lambda directory=None: {})
    assert "numba cache" in labels(["detector1", "coron3"])


def test_trace_writes_spec_entries(tmp_path, monkeypatch):
    """WEBBFLOW_AOT_TRACE: a call that runs numba's JIT appends its kernel and argument types as a SPEC
    entry, which parse() reads back."""
    trace = tmp_path / "trace.txt"
    monkeypatch.setattr(_jit, "_TRACE", str(trace))
    monkeypatch.setenv("WEBBFLOW_AOT", "0")
    aot._LOADED.clear()
    kernel = _kernel("steps.saturation._flag_from")
    kernel._twins = None
    try:
        kernel(np.zeros((2, 3, 4), np.uint8), np.zeros((3, 4), np.int16), np.uint8(2))
        ro = np.zeros((2, 3), np.float32)
        ro.flags.writeable = False
        assert _jit._code(_jit._key(ro)) == "f4[2C,ro]"
        assert _jit._code(_jit._key(np.zeros((3, 2), np.float64).T)) == "f8[2F]"
        assert _jit._code(_jit._key(True)) == "b1" and _jit._code(_jit._key(3)) == "i8"
    finally:
        kernel._twins = None
        aot._LOADED.clear()
    (line,) = trace.read_text().splitlines()
    name, types = line.split("\t")
    assert (name, types) == ("steps.saturation._flag_from", "u1[3C] i2[2C] u1")
    assert (name, types) in aot.SPEC and len(aot.parse(types)) == 3


# detector1's step options whose kernels differ: jwst's defaults, the time-series presets' ROEBA
# (group levels with relative clipped means; integration levels), and the steps off by default
_D1_STEPS = {
    "defaults": {},
    "roeba-grism": {"refpix": {"roeba": True, "roeba_relative": True, "roeba_estimator": "mean"}},
    "roeba-imaging": {"refpix": {"roeba": True, "roeba_level": "integration", "roeba_min_pixels": 4,
                                 "roeba_grow": 1}},
    "cm-cfn": {"charge_migration": {"skip": False}, "clean_flicker_noise": {"skip": False}},
}

_D1_JOB = """
import json, sys
from webbflow import jobs
jobs.detector1(**json.loads(sys.argv[1]))
print("numba loaded:", "numba" in sys.modules)
"""


@pytest.mark.slow
def test_detector1_jobs_of_every_kind_load_no_numba_with_twins(tmp_path_factory):
    """With :data:`webbflow.aot.SPEC` built, a one-thread detector1 job on small exposures of each kind
    (4-output grism strip with a zero frame, 1-output strip, a SUB160 image with frames averaged per
    group) and each set of step options runs every kernel as its twin: no JIT call, numba never loaded.
    A kernel or signature missing from SPEC fails here (WEBBFLOW_AOT_TRACE names it)."""
    from dataclasses import replace

    from astropy.io import fits
    from tso_segments import TSO_SPECS

    from webbflow.refs import select_references
    from webbflow.simulate import ExposureSpec, simulate_exposure

    directory = tmp_path_factory.mktemp("aot-full")
    try:
        aot.build(directory)
    except Exception as exc:
        pytest.skip(f"pycc cannot build here: {exc}")
    specs = {
        "grism-4out-zeroframe": replace(TSO_SPECS["grism-4out"], zeroframe=True),
        "strip-1out": TSO_SPECS["strip-1out"],
        "image-sub160": ExposureSpec(detector="NRCA1", subarray="SUB160", readpatt="BRIGHT2", nints=1, ngroups=4,
                                     filter="F210M", exp_type="NRC_IMAGE", n_stars=3, n_galaxies=0,
                                     n_saturating_stars=1, seed=41),
    }
    env = dict(os.environ, WEBBFLOW_AOT="1", WEBBFLOW_AOT_DIR=str(directory), OMP_NUM_THREADS="1")
    failures = []
    for label, spec in specs.items():
        out = tmp_path_factory.mktemp(label)
        uncal = simulate_exposure(spec, out)
        refs = {k: (str(v) if v else None) for k, v in
                select_references(fits.getheader(uncal), out / "refs").items()}
        for options, steps in _D1_STEPS.items():
            trace = out / f"{options}.trace"
            args = {"uncal": str(uncal), "rate": str(out / f"{options}_rate.fits"),
                    "rateints": str(out / f"{options}_rateints.fits"), "steps": steps, "references": refs,
                    "exp_types": [spec.exp_type]}
            r = subprocess.run([sys.executable, "-c", _D1_JOB, json.dumps(args)],
                               env={**env, "WEBBFLOW_AOT_TRACE": str(trace)}, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
            jit = trace.read_text().splitlines() if trace.exists() else []
            if jit or "numba loaded: False" not in r.stdout:
                failures.append((label, options, r.stdout.strip().splitlines()[-1:], sorted(set(jit))))
    assert not failures
