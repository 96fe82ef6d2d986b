#!/usr/bin/env python
"""Peak memory and wall time of detector1 on a grism time-series segment, ours and jwst 3.0's.

Simulates NRC_TSGRISM segments of the same geometry (NRCALONG SUBGRISM64, 4 outputs, RAPID,
4 groups) at 100 and 1000 integrations, and runs in fresh processes webbflow's detector1 on both
and jwst's on the 100-integration one (jwst holds the whole segment, ~7-8x the float32 cube:
the 1000-integration one would not fit this machine).  Issue 13 asks that our peak memory not
grow with NINTS: ours runs with a memory budget (``--max-memory-mb``, 1000 by default), above
which a segment is reduced in chunks of integrations and blocks of rows with identical products.

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_tso.py [--nints 100 1000] [--no-jwst]

Results: ``benchmarks/results/<date>-<host>-tso.json`` and one line per run on stdout.
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from astropy.io import fits

from webbflow.oracle import detector1_command
from webbflow.refs import select_references
from webbflow.simulate import ExposureSpec, Star, simulate_exposure

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure, our_steps  # noqa: E402  (one measuring helper for every benchmark)


def segment_spec(nints):
    """The benchmark segment: one file of ``nints`` integrations of a 2-segment exposure."""
    return ExposureSpec(
        detector="NRCALONG", subarray="SUBGRISM64", readpatt="RAPID", nints=nints, ngroups=4,
        filter="F322W2", pupil="GRISMR", exp_type="NRC_TSGRISM", tsovisit=True, segment=(1, 2, 1, 2 * nints),
        stars=(Star(1100.0, 33.0, 20000.0),), n_stars=0, n_galaxies=0, n_saturating_stars=0, sky=8.0,
        one_over_f=2.0, cr_rate=2e-4, seed=7)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nints", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--no-jwst", action="store_true", help="skip the oracle run")
    parser.add_argument("--max-memory-mb", type=float, default=1000,
                        help="our detector1's memory budget (larger segments are reduced in chunks)")
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work" / "tso"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"TSO benchmark on {machine}, {dt.date.today()}", flush=True)
    results = []
    for nints in args.nints:
        data = workdir / f"n{nints}"
        spec = segment_spec(nints)
        uncal = data / "uncal" / f"{spec.rootname}_uncal.fits"
        if not uncal.exists():
            print(f"simulating {nints} integrations ...", flush=True)
            simulate_exposure(spec, data)
        refs = select_references(fits.getheader(uncal), data / "refs")
        cube_mib = nints * spec.ngroups * 64 * 2048 * 4 / 2**20
        runs = [("ours", [sys.executable, "-m", "webbflow.cli", "detector1", str(uncal), str(data / "ours"),
                          "--refs-dir", str(data / "refs"), "--max-memory-mb", str(args.max_memory_mb), "-v"])]
        if not args.no_jwst and nints <= 100:
            runs.append(("jwst", detector1_command(uncal, refs, data / "jwst")))
        measure(runs[0][1], data)  # numba's cache warm, as in production
        for name, cmd in runs:
            shutil.rmtree(data / name, ignore_errors=True)
            (data / name).mkdir(parents=True)
            wall, rss, text = measure(cmd, data)
            row = {"pipeline": name, "nints": nints, "wall_s": wall, "peak_rss_mib": rss,
                   "float32_cube_mib": cube_mib, "rss_over_cube": rss / cube_mib}
            if name == "ours":
                row["steps_s"] = our_steps(text)
            results.append(row)
            print(f"  {name:4s} {nints:5d} ints: wall {wall:7.2f} s, peak RSS {rss:7.0f} MiB "
                  f"({rss / cube_mib:.2f} x the {cube_mib:.0f} MiB float32 cube)", flush=True)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{dt.date.today()}-{platform.node()}-tso.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": str(dt.date.today()), "machine": machine,
                               "max_memory_mb": args.max_memory_mb, "runs": results}, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
