#!/usr/bin/env python
"""Prototype (issue 13, memory): detector1's numba kernels compiled ahead of time with ``numba.pycc``.

Measures what a detector1 job of the grism TSO demo would save if its kernels came from an AOT-compiled
extension module instead of numba's JIT (numba, llvmlite and LLVM never loaded).  Three parts:

1. ``trace``: one detector1 job in this process (JIT, numba's cache), every numba kernel wrapped so that
   the ones called *from Python* are recorded with their argument types (the kernels they call are
   compiled into them).
2. ``build``: those kernels exported with ``numba.pycc`` with the traced signatures: each through a
   serial twin (``parallel`` dropped: pycc links no threading layer, ``prange`` runs as ``range``) that
   keeps the kernel's ``error_model``/``fastmath``/``nogil``, called from a one-line wrapper (pycc
   compiles exported functions with default flags, which then cover no arithmetic); ``target_cpu``
   "host", as numba's JIT.
3. ``run``: every segment's detector1 in a fresh process twice, JIT and AOT (a stub ``numba`` module
   routes each ``njit`` kernel to its AOT twin after an exact type check: dtype, ndim, layout,
   read-only), one thread as the workflow runs the rule; prints CPU (user + sys) and peak RSS of each,
   and compares the products (``compare_products.py``).

Usage::

    python benchmarks/aot_prototype.py [--workdir benchmarks/.work/tso-demo/n20] [--aot /tmp/aot]

Needs the grism demo's inputs (``bench_tso_demo.py --mode grism`` simulates them).  Not a build step:
see ``benchmarks/aot-prototype.md`` for the results and the design this points to.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

# Runs in the job processes: a stub numba whose njit hands each kernel to its AOT twin.
_STUB = r'''
import importlib.util, json, os, re, sys, types
import numpy as np
AOT = sys.argv.pop(1)
so = next(f for f in os.listdir(AOT) if f.endswith(".so"))
spec = importlib.util.spec_from_file_location("_wf_aot", os.path.join(AOT, so))
aot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(aot)
table = json.load(open(os.path.join(AOT, "table.json")))

def parse(t):
    m = re.match(r"(readonly )?array\((\w+), (\d+)d, (\w)\)", t)
    return ("a", np.dtype(m[2]), int(m[3]), m[4], bool(m[1])) if m else ("s", t)

def key(a):
    if isinstance(a, np.ndarray):
        lay = "C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else "A"
        return ("a", a.dtype, a.ndim, lay, not a.flags.writeable)
    if isinstance(a, (bool, np.bool_)):
        return ("s", "bool")
    if isinstance(a, int):
        return ("s", "int64")
    if isinstance(a, float):
        return ("s", "float64")
    if isinstance(a, np.generic):
        return ("s", str(a.dtype))
    return ("s", type(a).__name__)

def match(d, k):
    if d[0] != k[0] or d[0] == "s":
        return d == k
    # numba types a 1-d contiguous array as C; an 'A' signature takes any layout
    return d[1:3] == k[1:3] and d[4] == k[4] and (d[3] in ("A", k[3]) or (k[2] == 1 and k[3] in "CF" and d[3] in "CF"))

class Twin:
    def __init__(self, fn):
        self.py_func, self.name = fn, f"{fn.__module__}.{fn.__name__}"
        self.sigs = [(getattr(aot, s), [parse(t) for t in args]) for s, args in table.get(self.name, [])]

    def __call__(self, *args):
        ks = [key(a) for a in args]
        for f, decl in self.sigs:
            if len(decl) == len(ks) and all(match(d, k) for d, k in zip(decl, ks)):
                return f(*args)
        raise TypeError(f"no AOT signature for {self.name}: {ks}")

def njit(*a, **opts):
    return Twin(a[0]) if a and callable(a[0]) else Twin

numba = types.ModuleType("numba")
numba.njit, numba.prange, numba.get_num_threads, numba.set_num_threads = njit, range, lambda: 1, lambda n: None
numba.config = types.SimpleNamespace(NUMBA_NUM_THREADS=1)
sys.modules["numba"] = numba
'''

_JOB = r'''
import json, resource, sys
from pathlib import Path
from webbflow.stages import detector1
uncal, out, refs = sys.argv[1:4]
root = Path(uncal).name.removesuffix("_uncal.fits")
detector1.run(uncal, f"{out}/{root}_rate.fits", f"{out}/{root}_rateints.fits", json.loads(refs), {})
r = resource.getrusage(resource.RUSAGE_SELF)
print(f"@@ {r.ru_utime + r.ru_stime:.3f} {r.ru_maxrss} {'llvmlite' in sys.modules}", file=sys.stderr)
'''


def _refs(uncal, data):
    import bench_tso_demo

    return bench_tso_demo._detector1_refs(uncal, data / "refs")


def trace(uncal, data, out):
    """Run detector1 here: {kernel 'module.name': the numba signatures it was called with from Python}."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    import webbflow.io
    import webbflow.stages
    import webbflow.steps

    for pkg in (webbflow.io, webbflow.steps, webbflow.stages):
        for m in pkgutil.iter_modules(pkg.__path__):
            try:
                importlib.import_module(f"{pkg.__name__}.{m.name}")
            except ImportError:  # an optional dependency
                pass
    called, wrappers, replaced = set(), {}, []
    for module in [m for name, m in sys.modules.items() if name.startswith("webbflow")]:
        for name, value in list(vars(module).items()):
            lazy = hasattr(value, "njit_options") and hasattr(value, "py_func")
            if not (lazy or isinstance(value, CPUDispatcher)):
                continue
            if id(value) not in wrappers:
                def wrapper(*args, _k=value):
                    called.add(_k)
                    return _k(*args)
                wrappers[id(value)] = wrapper
            replaced.append((module, name, value))
            setattr(module, name, wrappers[id(value)])
    from webbflow.stages import detector1

    root = uncal.name.removesuffix("_uncal.fits")
    try:
        detector1.run(str(uncal), str(out / f"{root}_rate.fits"), str(out / f"{root}_rateints.fits"),
                      json.loads(_refs(uncal, data)), {})
    finally:  # the kernels compiled next must find the kernels they call, not the wrappers
        for module, name, value in replaced:
            setattr(module, name, value)
    found = {}
    for k in called:
        d = k.dispatcher if hasattr(k, "njit_options") else k
        found[f"{d.py_func.__module__}.{d.py_func.__name__}"] = d
    return found


def build(kernels, out):
    """Export ``kernels`` (name -> dispatcher with its signatures) with pycc into ``out``; CPU seconds."""
    from numba import njit
    from numba.pycc import CC

    cc = CC("_wf_aot")
    cc.output_dir, cc.target_cpu, cc.verbose = str(out), "host", False
    table = {}
    for full, d in sorted(kernels.items()):
        opts = {k: v for k, v in d.targetoptions.items() if k in ("error_model", "fastmath", "nogil")}
        serial = njit(**opts)(d.py_func)
        for i, sig in enumerate(d.nopython_signatures):
            names = ", ".join(f"a{j}" for j in range(len(sig.args)))
            ns = {"_k": serial}
            exec(f"def w({names}):\n    return _k({names})\n", ns)  # noqa: S102  (pycc exports a fixed arity)
            symbol = f"{full.replace('.', '_')}__{i}"
            cc.export(symbol, sig.return_type(*sig.args))(ns["w"])
            table.setdefault(full, []).append([symbol, [str(a) for a in sig.args]])
    t = time.process_time()
    cc.compile()
    (out / "table.json").write_text(json.dumps(table, indent=1))
    return time.process_time() - t, table


def run_job(uncal, out, refs, aot=None):
    """One detector1 job in a fresh process (one thread, started by a small launcher so that its peak
    RSS is its own): (CPU s, peak RSS MiB, numba loaded)."""
    from bench_detector1 import measure

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    code = (_STUB + _JOB) if aot else _JOB
    argv = [sys.executable, "-c", code] + ([str(aot)] if aot else []) + [str(uncal), str(out), refs]
    _, rss, text, cpu = measure(argv, REPO, env=env, cpu=True)
    line = [x for x in text.splitlines() if x.startswith("@@ ")]
    return cpu, rss, line[-1].split()[3] == "True"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work" / "tso-demo" / "n20"))
    parser.add_argument("--aot", default="/tmp/webbflow-aot-prototype")
    parser.add_argument("--no-build", action="store_true", help="reuse the module --aot holds")
    args = parser.parse_args(argv)
    data, aot = Path(args.workdir), Path(args.aot)
    uncals = sorted((data / "uncal").glob("*_uncal.fits"))
    for d in ("trace", "jit", "aot"):
        (aot / d).mkdir(parents=True, exist_ok=True)
    if not args.no_build:
        kernels = trace(uncals[0], data, aot / "trace")
        print(f"{len(kernels)} kernels called from Python, {sum(len(d.signatures) for d in kernels.values())} "
              "signatures:", ", ".join(sorted(kernels)), flush=True)
        cpu, _ = build(kernels, aot)
        so = next(aot.glob("_wf_aot*.so"))
        print(f"pycc build: {cpu:.1f} s CPU in this process, {so.stat().st_size / 2**20:.1f} MiB module", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for uncal in uncals:
        refs = _refs(uncal, data)
        jit = run_job(uncal, aot / "jit", refs)
        ahead = run_job(uncal, aot / "aot", refs, aot=aot)
        print(f"  {uncal.name}: JIT CPU {jit[0]:.2f} s, peak RSS {jit[1]:.0f} MiB (numba {jit[2]}); "
              f"AOT CPU {ahead[0]:.2f} s, peak RSS {ahead[1]:.0f} MiB (numba {ahead[2]})", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return subprocess.call([sys.executable, str(REPO / "benchmarks" / "compare_products.py"), str(aot / "jit"),
                            str(aot / "aot")])


if __name__ == "__main__":
    sys.exit(main())
