#!/usr/bin/env python
"""Fixed cost of every workflow job type: import CPU and whole-job CPU, one fresh process per job.

Issue 18 part 2.  A small job (a SUB64 time-series segment, a SUB160 demo exposure) is almost all
fixed cost: the interpreter, imports (gwcs, astropy.modeling, stdatamodels, numba), ASDF extension
loading on open/write.  This benchmark simulates a few small inputs, then runs each job type as the
workflow runs it (``webbflow.jobs.<job>`` in a fresh ``python`` process) and prints, per job:

- ``start``: CPU until the job's code begins (interpreter + ``site``);
- ``import``: CPU to import the job's stage module (what ``-X importtime`` breaks down);
- ``run``: CPU of the job itself (reading, computing, writing);
- ``total``: ``getrusage`` user + system CPU of the whole process (numba's compile thread included);
- ``rss``: the process's peak resident memory.

CPU time, not wall time: the benchmark machine is shared.  Every job runs ``--repeat`` times (default
2, the first warms numba's cache as a production run finds it) and the smallest total is kept.
``--profile N`` prints each job's N most expensive functions (cProfile, cumulative) instead.

Usage::

    python benchmarks/bench_job_overhead.py [--repeat 2] [--profile 25] [--jobs detector1,image2]

Results: ``benchmarks/results/<date>-<host>-job-overhead.json``.
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# One job in a fresh process: argv = job, stage module, profile rows, then the job's JSON kwargs.
_CHILD = r"""
import resource, sys, time, json
t0 = time.process_time()
job, module, top, kwargs = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
import importlib
from webbflow import jobs
importlib.import_module(module)
t1 = time.process_time()
if top:
    import cProfile, pstats
    prof = cProfile.Profile()
    prof.runcall(getattr(jobs, job), **kwargs)
    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(top)
else:
    getattr(jobs, job)(**kwargs)
t2 = time.process_time()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"start": t0, "import": t1 - t0, "run": t2 - t1, "total": ru.ru_utime + ru.ru_stime,
                  "rss_mib": ru.ru_maxrss / 1024}))
"""

# job type -> (webbflow.jobs function, stage module it imports)
JOBS = {
    "detector1-tso": ("detector1", "webbflow.stages.detector1"),
    "detector1": ("detector1", "webbflow.stages.detector1"),
    "image2": ("image2", "webbflow.stages.image2"),
    "image2-tso": ("image2", "webbflow.stages.image2"),
    "spec2": ("spec2", "webbflow.stages.spec2"),
    "tso3-phot": ("tso3", "webbflow.stages.tso3"),
    "tso3-grism": ("tso3", "webbflow.stages.tso3"),
    "image3": ("image3", "webbflow.stages.image3"),
}


def _simulate(work):
    """Small inputs of every job type (simulated once; kept in ``work``)."""
    from webbflow.simulate import optics
    from webbflow.simulate.grism import write_grism_references
    from webbflow.simulate.presets import (
        preset_specs,
        run_specs,
        tso_grism_specs,
        tso_image_specs,
    )
    from webbflow.simulate.stage2_refs import write_stage2_references

    tsoimg, grism, imaging = work / "tso-imaging", work / "tso-grism", work / "imaging"
    if not (tsoimg / "uncal").is_dir():
        run_specs(tso_image_specs(n_segments=2, ints_per_segment=4), tsoimg)
    if not (grism / "uncal").is_dir():
        specs = tso_grism_specs(n_segments=2, ints_per_segment=4)
        run_specs(specs, grism)
        spec = specs[0]
        write_grism_references(grism, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                               optics.pixar_a2(spec.detector))
        write_stage2_references(grism, spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
    if not (imaging / "uncal").is_dir():
        # the demo's F200W short-wave association: 4 dithered SUB160 exposures of one detector
        specs = [s for s in preset_specs("demo-imaging") if s.filter == "F200W" and s.detector == "NRCA1"]
        run_specs([replace(s, nints=1) for s in specs], imaging)
        s = specs[0]
        write_stage2_references(imaging, s.detector, s.geometry, s.filter, s.pupil, s.ref_seed)
    return tsoimg, grism, imaging


def _refs(uncal, refs_dir, reftypes=None):
    from astropy.io import fits

    from webbflow.refs import select_references
    from webbflow.refs.select import DETECTOR1_REFTYPES

    chosen = select_references(fits.getheader(uncal), refs_dir, None, reftypes or DETECTOR1_REFTYPES)
    return {k: (str(v) if v else None) for k, v in chosen.items()}


def _job_list(work):
    """(job type, measured?, kwargs) of every job, in the order their inputs are made: one job of each
    type is measured (detector1 on the first SUB64 imaging segment), the others make its inputs."""
    from astropy.io import fits

    from webbflow.associations import image3_associations, tso3_associations, write_asn
    from webbflow.exposures import exposure_table
    from webbflow.refs.select import IMAGE2_REFTYPES

    out = []
    for data, stage2 in zip(_simulate(work), ("image2-tso", "spec2", "image2")):
        prod = data / "products"
        prod.mkdir(exist_ok=True)
        uncals = sorted((data / "uncal").glob("*_uncal.fits"))
        refs2 = _refs(uncals[0], data / "refs", IMAGE2_REFTYPES)
        for i, uncal in enumerate(uncals):
            root = uncal.name.removesuffix("_uncal.fits")
            exp_type = fits.getval(uncal, "EXP_TYPE")
            rate, rateints = prod / f"{root}_rate.fits", prod / f"{root}_rateints.fits"
            d1 = "detector1-tso" if stage2 == "image2-tso" else "detector1"
            out.append((d1, i == 0 and stage2 != "spec2", {
                "uncal": str(uncal), "rate": str(rate), "rateints": str(rateints), "steps": {},
                "exp_types": [exp_type], "references": _refs(uncal, data / "refs")}))
            if stage2 == "spec2":
                kw = {"rateints": str(rateints), "calints": str(prod / f"{root}_calints.fits"),
                      "x1dints": str(prod / f"{root}_x1dints.fits"), "steps": {},
                      "references": {**{k: str(v) for k, v in _grism_refs(data).items()},
                                     "flat": refs2["flat"], "distortion": refs2["distortion"]}}
            else:
                src, dst = (rateints, "calints") if stage2 == "image2-tso" else (rate, "cal")
                kw = {"rate": str(src), "cal": str(prod / f"{root}_{dst}.fits"), "steps": {},
                      "references": {k: v for k, v in refs2.items() if v}}
            out.append((stage2, i == 0, kw))
        table = exposure_table(data / "uncal")
        if stage2 == "image2":
            asn = image3_associations(table)[0]
            asn_path = prod / "image3_asn.json"
            write_asn(asn, asn_path, suffix="cal")
            p = asn.product
            out.append(("image3", True, {"asn": str(asn_path), "i2d": str(prod / f"{p}_i2d.fits"),
                                         "cat": str(prod / f"{p}_cat.ecsv"), "segm": str(prod / f"{p}_segm.fits"),
                                         "crf": str(prod), "steps": {}}))
        else:
            (asn,) = tso3_associations(table)
            asn_path = prod / "tso3_asn.json"
            write_asn(asn, asn_path, suffix="calints")
            p = asn.product
            if stage2 == "spec2":
                kw = {"asn": str(asn_path), "x1dints": str(prod / f"{p}_x1dints.fits"),
                      "whtlt": str(prod / f"{p}_whtlt.ecsv"), "crfints": str(prod), "steps": {},
                      "references": {"extract1d": str(_grism_refs(data)["extract1d"])}}
                out.append(("tso3-grism", True, kw))
            else:
                gain = _refs(uncals[0], data / "refs")["gain"]
                out.append(("tso3-phot", True, {"asn": str(asn_path), "phot": str(prod / f"{p}_phot.ecsv"),
                                                "crfints": str(prod), "steps": {}, "references": {"gain": gain}}))
    return out


def _grism_refs(data):
    from webbflow.simulate import optics
    from webbflow.simulate.grism import write_grism_references
    from webbflow.simulate.presets import tso_grism_specs

    spec = tso_grism_specs(n_segments=2, ints_per_segment=4)[0]
    return write_grism_references(data, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                                  optics.pixar_a2(spec.detector))


def run_one(job, kwargs, top=0):
    """Run one job in a fresh process; its CPU figures (dict)."""
    func, module = JOBS[job]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, func, module, str(top), json.dumps(kwargs)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"{job} failed:\n{proc.stderr[-3000:]}")
    if top:
        print(proc.stderr[proc.stderr.find("   ncalls"):][:6000])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per job; the smallest total is kept")
    parser.add_argument("--profile", type=int, default=0, help="print each job's N costliest functions")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job types to measure")
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work" / "job-overhead"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    wanted = set(args.jobs.split(","))
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"job overhead benchmark on {machine}, {dt.date.today()} (CPU seconds, best of {args.repeat})",
          flush=True)
    rows = {}
    for job, measured, kwargs in _job_list(Path(args.workdir)):
        if not measured or job not in wanted:  # an input of a later job: made once, not measured
            made = [kwargs[k] for k in ("rateints", "cal", "calints", "x1dints", "i2d", "phot") if k in kwargs]
            if not all(Path(p).exists() for p in made):
                run_one(job, kwargs)
            continue
        runs = [run_one(job, kwargs) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total"])
        rows[job] = best
        if args.profile:
            run_one(job, kwargs, args.profile)
        print(f"  {job:11s} start {best['start']:5.2f}  import {best['import']:5.2f}  run {best['run']:5.2f}  "
              f"total {best['total']:5.2f} s CPU  peak RSS {best['rss_mib']:4.0f} MiB", flush=True)
    result = {"date": str(dt.date.today()), "machine": machine, "unit": "CPU seconds", "jobs": rows}
    out = Path(args.out) if args.out else (REPO / "benchmarks" / "results"
                                           / f"{dt.date.today()}-{platform.node()}-job-overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
