#!/usr/bin/env python
"""Speed and memory of webbflow against STScI's jwst 3.0 (the oracle), measured in one run.

Runs, alternating, webbflow's detector1 and jwst's detector1 on the same simulated
full-frame exposure (preset ``fullframe``: 1 x 10 x 2048 x 2048) with the same reference
files, several repeats each, every run in a fresh process; reports the median wall time,
the peak RSS of that process (``os.wait4`` rusage, from a small launcher: see ``measure``),
the time of the jump and ramp_fit steps alone (from each pipeline's own step log), and ratios
ours/jwst.  Optionally (``--demo``) also the whole demo program through Snakemake with ``--cores 1`` and
``--cores 2``, and jwst detector1 looped over the same 16 demo exposures.

``--steps-on`` turns on, in both pipelines and with the same parameters, snowball flagging
(jump's ``expand_large_events``, jwst's other snowball parameters at their defaults) and
clean_flicker_noise (jwst's defaults: median fit of the whole row, median background), the
figure of issue 16; their step times are reported as well.  ``--size N`` reduces an N x N
subarray cut from the same full-frame scene (``SUB<N>``, at the detector corner with the
reference pixels) instead, for a busy machine.

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_detector1.py --repeats 3 --demo
    python benchmarks/bench_detector1.py --repeats 3 --steps-on          # issue 16

Results go to ``benchmarks/results/<date>-<host>.json`` and a line per figure on stdout,
e.g. ``detector1 wall ours/jwst = 0.08``.
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from webbflow.oracle import PRODUCT_ARRAYS, detector1_command, product_agreement
from webbflow.refs import select_references
from webbflow.simulate import run_preset, run_specs
from webbflow.simulate.presets import preset_specs

REPO = Path(__file__).resolve().parents[1]
STEP_TIME = re.compile(r"webbflow\.stages\.detector1: (\w+)\s+\w+\s+([\d.]+) s")
STEPS_ON = {"jump.expand_large_events": True, "clean_flicker_noise.skip": False}
"""``--steps-on``: the step parameters both pipelines get (ours as ``--set``, jwst's as its step options)."""
TIMED_STEPS = ("jump", "clean_flicker_noise", "ramp_fit")
JW_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - stpipe\.step - INFO - Step (\w+) (running|done)")


# The measured command runs as the child of this small launcher, not of the benchmark itself:
# Linux carries a process's peak RSS across fork and exec (the kernel records the parent's
# high-water mark in the child at exec), so a child of a benchmark that simulated a few hundred
# MiB of data would report at least that much, whatever it used itself.
_LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"@@measure {time.perf_counter() - t0!r} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime!r}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def compile_ours():
    """Byte-compile webbflow's sources (once per benchmark process), before anything of ours is timed.

    pip byte-compiles the packages it installs (jwst's and every dependency's), but not the sources of
    an editable install.  Where the environment sets ``PYTHONDONTWRITEBYTECODE`` (this project's
    machines do), every process of ours would compile webbflow from source (0.1-0.4 s per stage
    import) and jwst's none; Python still reads existing .pyc files with that variable set, so
    compiling once here times ours as a user sees it from their second run on.
    """
    global _COMPILED
    if not _COMPILED:
        import compileall

        compileall.compile_dir(str(REPO / "src"), quiet=1)
        _COMPILED = True


_COMPILED = False


def measure(cmd, cwd, env=None, cpu=False):
    """Run ``cmd``; return (wall s, peak RSS MiB, combined output) of that process alone (``cpu``:
    and its CPU seconds, user + system, last).  Our sources are byte-compiled first
    (:func:`compile_ours`)."""
    compile_ours()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, cmd)], cwd=cwd, stdout=log,
                              stderr=subprocess.STDOUT, env=env)
        log.seek(0)
        text = log.read()
    lines = [line for line in text.splitlines() if line.startswith("@@measure ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(text[-3000:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd[:4]))} ...")
    # the launcher's line: wall s, peak RSS KiB, user + system CPU s (on a shared machine a steadier
    # figure than the wall time)
    wall, maxrss, cpu_s = lines[-1].split()[1:4]
    return (float(wall), int(maxrss) / 1024.0, text) + ((float(cpu_s),) if cpu else ())


def our_steps(text):
    return {m.group(1): float(m.group(2)) for m in STEP_TIME.finditer(text)}


def jwst_steps(text):
    start, took = {}, {}
    for line in text.splitlines():
        m = JW_STAMP.match(line)
        if not m:
            continue
        stamp = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if m.group(3) == "running":
            start[m.group(2)] = stamp
        elif m.group(2) in start:
            took[m.group(2)] = (stamp - start[m.group(2)]).total_seconds()
    return took


def simulate(workdir, size=None):
    """The benchmark's exposure (the ``fullframe`` preset, or a SUB<size> cut of its scene): its data folder."""
    data = workdir / ("fullframe" if size is None else f"sub{size}")
    if not (data / "uncal").is_dir():
        print(f"simulating {data.name} ...", flush=True)
        if size is None:
            run_preset("fullframe", data)
        else:
            run_specs([replace(spec, subarray=f"SUB{size}", size=size, corner="refpix")
                       for spec in preset_specs("fullframe")], data)
    return data


def bench_fullframe(workdir, repeats, settle=5.0, steps_on=False, size=None):
    data = simulate(workdir, size)
    uncal = next((data / "uncal").glob("*_uncal.fits"))
    refs = select_references(fits.getheader(uncal), data / "refs")
    settings = STEPS_ON if steps_on else {}
    ours_cmd = [sys.executable, "-m", "webbflow.cli", "detector1", str(uncal), str(workdir / "ours"),
                "--refs-dir", str(data / "refs"), "-v"]
    ours_cmd += [f"--set={k}={json.dumps(v)}" for k, v in settings.items()]
    jwst_cmd = detector1_command(uncal, refs, workdir / "jwst", settings=settings)
    runs = {"ours": [], "jwst": []}
    # one untimed run of ours first, so numba's cache is warm as it is in production
    measure(ours_cmd, workdir)
    for i in range(repeats):
        for name, cmd in (("ours", ours_cmd), ("jwst", jwst_cmd)):
            # Previous products are removed before the clock starts: replacing
            # them inside the run would time the file system freeing (and, on a
            # disk mounted with discard, trimming) their blocks.
            shutil.rmtree(workdir / name, ignore_errors=True)
            (workdir / name).mkdir(parents=True)
            # Let the machine settle: on a VM the memory the previous run freed is
            # handed back to the host for a few seconds after it exits, and a
            # run started meanwhile pays for that (either pipeline, in turn).
            time.sleep(settle)
            wall, rss, text = measure(cmd, workdir)
            steps = our_steps(text) if name == "ours" else jwst_steps(text)
            runs[name].append({"wall_s": wall, "peak_rss_mib": rss, **{f"{s}_s": steps.get(s) for s in TIMED_STEPS}})
            print(f"  repeat {i + 1} {name:4s}: wall {wall:6.2f} s, peak RSS {rss:7.0f} MiB, "
                  + ", ".join(f"{s} {steps.get(s)} s" for s in TIMED_STEPS if s in steps), flush=True)
    return runs


def compare_products(ours_dir, jwst_dir):
    """Parity of the last full-frame run: ours against jwst, product by product.

    The figures of issue #5 (:func:`webbflow.oracle.product_agreement`, which
    tests/test_parity_steps.py applies to small exposures) plus how much is
    bit-identical.
    """
    out = {}
    for suffix in ("rate", "rateints"):
        paths = [next(Path(d).glob(f"*_{suffix}.fits")) for d in (ours_dir, jwst_dir)]
        with fits.open(paths[0]) as a, fits.open(paths[1]) as b:
            agreement = product_agreement({e: a[e].data for e in PRODUCT_ARRAYS},
                                          {e: b[e].data for e in PRODUCT_ARRAYS})
        z = agreement.pop("dz")
        out[suffix] = {"median_dz": float(np.median(z)), "p999_dz": float(np.percentile(z, 99.9)),
                       **agreement}
        print(f"parity {suffix}: median |d|/ERR = {out[suffix]['median_dz']:.3g}, 99.9th pct = "
              f"{out[suffix]['p999_dz']:.3g}, DQ (DNU/SAT/JUMP) same on {out[suffix]['dq_key_same']:.6%}, "
              f"max rel diff " + ", ".join(f"{e} {v:.2g}" for e, v in agreement["max_rel"].items())
              + "; bit-identical: " + ", ".join(f"{e} {v:.4%}" for e, v in agreement["identical"].items()),
              flush=True)
    return out


def bench_demo(workdir):
    results = {}
    for cores in (1, 2):
        wd = workdir / f"demo-cores{cores}"
        shutil.rmtree(wd, ignore_errors=True)
        wd.mkdir(parents=True)
        # simulate first (untimed), so the figure is the reduction alone
        run_preset("demo-imaging", wd / "demo")
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(wd),
               "--cores", str(cores), "--quiet"]
        wall, rss, _ = measure(cmd, wd)
        n = len(list((wd / "demo" / "uncal").glob("*_uncal.fits")))
        results[f"ours_cores{cores}"] = {"wall_s": wall, "exposures": n, "exposures_per_min": 60 * n / wall}
        print(f"  demo ours --cores {cores}: {wall:6.1f} s for {n} exposures", flush=True)
    data = workdir / "demo-cores1" / "demo"
    t0 = time.perf_counter()
    for uncal in sorted((data / "uncal").glob("*_uncal.fits")):
        refs = select_references(fits.getheader(uncal), data / "refs")
        measure(detector1_command(uncal, refs, workdir / "demo-jwst"), workdir)
    wall = time.perf_counter() - t0
    results["jwst_sequential"] = {"wall_s": wall}
    print(f"  demo jwst detector1, one exposure after another: {wall:6.1f} s", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds of idle before each timed run (default 5)")
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work"))
    parser.add_argument("--demo", action="store_true", help="also time the demo program end to end")
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument("--steps-on", action="store_true",
                        help="snowball flagging and clean_flicker_noise on in both pipelines (issue 16)")
    parser.add_argument("--size", type=int, default=None,
                        help="an N x N subarray of the full-frame scene instead of the full frame (busy machine)")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"benchmark on {machine}, {dt.date.today()}", flush=True)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    runs = bench_fullframe(workdir, args.repeats, args.settle, args.steps_on, args.size)
    figures = ["wall_s", "peak_rss_mib", *(f"{s}_s" for s in TIMED_STEPS)]
    med = {name: {k: statistics.median(v) for k in figures
                  if (v := [r[k] for r in rs if r[k] is not None])}
           for name, rs in runs.items()}
    ratios = {k: med["ours"][k] / med["jwst"][k] for k in med["ours"] if k in med["jwst"]}
    summary = {"date": str(dt.date.today()), "machine": machine, "repeats": args.repeats, "settle_s": args.settle,
               "load_average_before": load, "load_average_after": os.getloadavg(),
               "steps_on": sorted(STEPS_ON) if args.steps_on else [], "size": args.size or 2048,
               "fullframe": {"runs": runs, "median": med, "ratio_ours_over_jwst": ratios,
                             "parity": compare_products(workdir / "ours", workdir / "jwst")}}
    if args.demo:
        summary["demo"] = bench_demo(workdir)

    print()
    print(f"detector1 wall ours/jwst = {ratios['wall_s']:.3f}   "
          f"(median {med['ours']['wall_s']:.2f} s vs {med['jwst']['wall_s']:.2f} s)")
    print(f"detector1 peak RSS ours/jwst = {ratios['peak_rss_mib']:.3f}   "
          f"(median {med['ours']['peak_rss_mib']:.0f} MiB vs {med['jwst']['peak_rss_mib']:.0f} MiB)")
    for step in TIMED_STEPS:
        if f"{step}_s" in ratios:
            print(f"{step} wall ours/jwst = {ratios[f'{step}_s']:.3f}   "
                  f"({med['ours'][f'{step}_s']:.2f} s vs {med['jwst'][f'{step}_s']:.2f} s)")
    print("load average after: " + " ".join(f"{v:.2f}" for v in summary["load_average_after"]))
    if args.demo:
        d = summary["demo"]
        print(f"demo wall ours(--cores 2)/jwst = {d['ours_cores2']['wall_s'] / d['jwst_sequential']['wall_s']:.3f}")
        print(f"demo throughput --cores 2 / --cores 1 = "
              f"{d['ours_cores2']['exposures_per_min'] / d['ours_cores1']['exposures_per_min']:.2f}")
    tag = ("-steps-on" if args.steps_on else "") + (f"-sub{args.size}" if args.size else "")
    out = (Path(args.out) if args.out
           else REPO / "benchmarks" / "results" / f"{dt.date.today()}-{platform.node()}{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
