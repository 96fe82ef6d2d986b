#!/usr/bin/env python
"""Speed and memory of webbflow against STScI's jwst 3.0 (the oracle), measured in one run.

Runs, alternating, webbflow's detector1 and jwst's detector1 on the same simulated
full-frame exposure (preset ``fullframe``: 1 x 10 x 2048 x 2048) with the same reference
files, several repeats each, every run in a fresh process; reports the median wall time,
the peak RSS of that process (``os.wait4`` rusage, from a small launcher: see ``measure``),
the time of the jump and ramp_fit steps alone (from each pipeline's own step log), and ratios
ours/jwst.  Optionally (``--demo``) also the whole demo program through Snakemake with ``--cores 1`` and
``--cores 2``, and jwst detector1 looped over the same 16 demo exposures.

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_detector1.py --repeats 3 --demo

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
from pathlib import Path

import numpy as np
from astropy.io import fits

from webbflow.oracle import PRODUCT_ARRAYS, detector1_command, product_agreement
from webbflow.refs import select_references
from webbflow.simulate import run_preset

REPO = Path(__file__).resolve().parents[1]
STEP_TIME = re.compile(r"webbflow\.stages\.detector1: (\w+)\s+\w+\s+([\d.]+) s")
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


def measure(cmd, cwd, env=None):
    """Run ``cmd``; return (wall s, peak RSS MiB, combined output) of that process alone."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, cmd)], cwd=cwd, stdout=log,
                              stderr=subprocess.STDOUT, env=env)
        log.seek(0)
        text = log.read()
    lines = [line for line in text.splitlines() if line.startswith("@@measure ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(text[-3000:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd[:4]))} ...")
    wall, maxrss = lines[-1].split()[1:3]
    return float(wall), int(maxrss) / 1024.0, text


def cpu_seconds(text):
    """User + system CPU seconds of the process :func:`measure` ran (from its output): on a shared
    machine a steadier figure than the wall time."""
    return float([line for line in text.splitlines() if line.startswith("@@measure ")][-1].split()[3])


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


def bench_fullframe(workdir, repeats, settle=5.0):
    data = workdir / "fullframe"
    if not (data / "uncal").is_dir():
        print("simulating the fullframe preset ...", flush=True)
        run_preset("fullframe", data)
    uncal = next((data / "uncal").glob("*_uncal.fits"))
    refs = select_references(fits.getheader(uncal), data / "refs")
    ours_cmd = [sys.executable, "-m", "webbflow.cli", "detector1", str(uncal), str(workdir / "ours"),
                "--refs-dir", str(data / "refs"), "-v"]
    jwst_cmd = detector1_command(uncal, refs, workdir / "jwst")
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
            runs[name].append({"wall_s": wall, "peak_rss_mib": rss,
                               "jump_s": steps.get("jump"), "ramp_fit_s": steps.get("ramp_fit")})
            print(f"  repeat {i + 1} {name:4s}: wall {wall:6.2f} s, peak RSS {rss:7.0f} MiB, "
                  f"jump {steps.get('jump')} s, ramp_fit {steps.get('ramp_fit')} s", flush=True)
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
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"benchmark on {machine}, {dt.date.today()}", flush=True)
    runs = bench_fullframe(workdir, args.repeats, args.settle)
    med = {name: {k: statistics.median(r[k] for r in rs if r[k] is not None)
                  for k in ("wall_s", "peak_rss_mib", "jump_s", "ramp_fit_s")}
           for name, rs in runs.items()}
    ratios = {k: med["ours"][k] / med["jwst"][k] for k in med["ours"]}
    summary = {"date": str(dt.date.today()), "machine": machine, "repeats": args.repeats, "settle_s": args.settle,
               "fullframe": {"runs": runs, "median": med, "ratio_ours_over_jwst": ratios,
                             "parity": compare_products(workdir / "ours", workdir / "jwst")}}
    if args.demo:
        summary["demo"] = bench_demo(workdir)

    print()
    print(f"detector1 wall ours/jwst = {ratios['wall_s']:.3f}   "
          f"(median {med['ours']['wall_s']:.2f} s vs {med['jwst']['wall_s']:.2f} s)")
    print(f"detector1 peak RSS ours/jwst = {ratios['peak_rss_mib']:.3f}   "
          f"(median {med['ours']['peak_rss_mib']:.0f} MiB vs {med['jwst']['peak_rss_mib']:.0f} MiB)")
    print(f"jump wall ours/jwst = {ratios['jump_s']:.3f}   "
          f"({med['ours']['jump_s']:.2f} s vs {med['jwst']['jump_s']:.2f} s)")
    print(f"ramp_fit wall ours/jwst = {ratios['ramp_fit_s']:.3f}   "
          f"({med['ours']['ramp_fit_s']:.2f} s vs {med['jwst']['ramp_fit_s']:.2f} s)")
    if args.demo:
        d = summary["demo"]
        print(f"demo wall ours(--cores 2)/jwst = {d['ours_cores2']['wall_s'] / d['jwst_sequential']['wall_s']:.3f}")
        print(f"demo throughput --cores 2 / --cores 1 = "
              f"{d['ours_cores2']['exposures_per_min'] / d['ours_cores1']['exposures_per_min']:.2f}")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{dt.date.today()}-{platform.node()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
