#!/usr/bin/env python
"""Imaging stages 2 and 3, ours against jwst 3.0's calwebb_image2 and calwebb_image3, in one run.

On the demo program (``demo-imaging``: 16 SUB160 exposures, 4 filters x 4 dithers; simulated and
taken through our detector1 first, untimed, or taken from a finished run with ``--from-run``):

* image2: every rate file through our image2 job (``webbflow.jobs.image2``, the workflow's job, one
  fresh process each) and through jwst's calwebb_image2 with the same references (distortion, flat,
  photom, area), its ``resample`` skipped (a per-exposure i2d that our image2 does not make;
  ``bkg_subtract`` has no background members to use), as tests/test_image2.py compares them;
* image3: each filter's association of our cal files through our image3 job
  (``webbflow.jobs.image3``) and through jwst's calwebb_image3, both with the demo's small-field
  tweakreg settings (relative alignment, jwst's line: no ``abs_refcat``), the same APCORR (written
  from our curve of growth, as tests/test_parity_image3.py does) and ABVEGAOFFSET, ``deblend`` on.

Jobs of the two pipelines alternate, each in a fresh process measured by bench_detector1's
launcher (wall time, CPU seconds and that process's peak RSS), after one untimed warm-up job of each stage and
pipeline (numba's cache, the interpreters' compiled imports).  ``--server``: our jobs go through a warm
job server (``WEBBFLOW_JOB_SERVER=wait``, as the workflow runs them with ``jobs.warm_server``), each job a
client process that makes Snakemake's script-preamble imports and hands the job to a child of the
server; one server is started per stage and repeat, and its start (wall time until it listens) and its
own CPU seconds are counted once in our totals and printed apart; a job's CPU is its client's plus its
child's, its peak RSS the child's.  Prints per stage the summed wall
time and CPU seconds (medians over ``--repeats``; CPU is the steadier figure on a shared machine),
the largest peak RSS, and the ratios ours/jwst (issue 17 Speed:
image2 <= 0.10, image3 <= 0.20).  ``--profile`` adds cProfile's top functions of our image3 on one
association (in this process, after the timed runs).

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_image23.py [--repeats 2] [--from-run WORKDIR] [--profile] [--server]

Results: ``benchmarks/results/<date>-<host>-image23.json``.
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure  # noqa: E402  (one measuring helper for every benchmark)
from bench_tso_demo import _CORON_JOB as JOB  # noqa: E402  (runs one webbflow.jobs function)
from bench_tso_demo import _write_result  # noqa: E402
from bench_job_overhead import run_served, start_server, stop_servers, workflow_env  # noqa: E402

TWEAK = {"minobj": 4, "searchrad": 0.5, "separation": 0.5, "tolerance": 0.2}  # the demo's small fields
CATALOG = {"deblend": True}


def _ours(stage, *args, **kwargs):
    return [sys.executable, "-c", JOB, stage, *(json.dumps(a) for a in (*args, kwargs))]


def _served(cmd):
    """A ``_ours`` command as ``(job type, keyword arguments)`` for :func:`bench_job_overhead.run_served`
    (a workflow job as Snakemake runs it with the warm job server on: it passes keywords only)."""
    import inspect

    from webbflow import jobs

    stage, args = cmd[3], [json.loads(a) for a in cmd[4:]]
    bound = inspect.signature(getattr(jobs, stage)).bind(*args[:-1], **args[-1])
    return stage, dict(bound.arguments)


def time_job(cmd, name, out, server=None, env=None):
    """One of our jobs (a ``_ours`` command) or jwst's: (wall s, CPU s, peak RSS MiB, how the CPU
    divides) in a fresh process, or through the warm job server of folder ``server`` (started by
    :func:`bench_job_overhead.start_server` there; the CPU is the client's plus the job's child's, the
    RSS the child's).  ``env``: the job's environment (default this process's)."""
    if server is None:
        wall, rss, _, cpu = measure(cmd, out, env=env, cpu=True)
        return wall, cpu, rss, ""
    r = run_served(*_served(cmd), server, env=env)
    client, child = r["client_cpu"], r["child_cpu"]
    return r["wall"], client + child, r["rss_mib"], f" (client {client:.2f} + child {child:.2f})"


def add_server(totals, server, start, label):
    """Stop the job server of folder ``server`` and count it once in ``totals``: its start's wall time (the first
    job waits for it) and its own CPU seconds over its life; the figures also apart, under ``server``."""
    cpu = stop_servers(server)
    totals["wall_s"] += start["wall"]
    totals["cpu_s"] += cpu
    totals["server"] = {"start_wall_s": start["wall"], "start_cpu_s": start["server_cpu"], "cpu_s": cpu,
                        "start_rss_mib": start["rss_mib"]}
    print(f"  {label} job server: {start['wall']:.2f} s wall to start, {cpu:.2f} s CPU in all "
          f"({start['server_cpu']:.2f} of it its start, RSS {start['rss_mib']:.0f} MiB); counted in the totals",
          flush=True)


def _rates(data, from_run):
    """The demo's rate files and reference folder: from a finished workflow run, or simulated and
    taken through our detector1 here (untimed)."""
    if from_run:
        run = Path(from_run)
        return sorted((run / "results" / "detector1").rglob("*_rate.fits")), run / "demo" / "refs"
    from webbflow.config import DETECTOR1_STEPS
    from webbflow.refs.select import DETECTOR1_REFTYPES, select_references
    from webbflow.simulate import run_preset
    from webbflow.stages import detector1

    if not (data / "uncal").is_dir():
        print("simulating demo-imaging ...", flush=True)
        run_preset("demo-imaging", data)
    rates = []
    for uncal in sorted((data / "uncal").glob("*_uncal.fits")):
        root = uncal.name.removesuffix("_uncal.fits")
        rate = data / "rate" / f"{root}_rate.fits"
        if not rate.exists():
            rate.parent.mkdir(exist_ok=True)
            detector1.run(uncal, rate, data / "rate" / f"{root}_rateints.fits",
                          select_references(fits.getheader(uncal), data / "refs", None, DETECTOR1_REFTYPES),
                          {s: {} for s in DETECTOR1_STEPS})
        rates.append(rate)
    return rates, data / "refs"


def _image2_jobs(rates, refs_dir, out):
    """{who: [(name, command)]} of image2 on every rate file; and our cal paths."""
    from webbflow.oracle import image2_command
    from webbflow.refs.select import IMAGE2_REFTYPES, select_references

    jobs, cals = {"ours": [], "jwst": []}, []
    for rate in rates:
        refs = {t: str(p) for t, p in select_references(fits.getheader(rate), refs_dir, None,
                                                       IMAGE2_REFTYPES).items() if p}
        cal = out / "ours" / "image2" / rate.name.replace("_rate.fits", "_cal.fits")
        cals.append(cal)
        jobs["ours"].append((rate.name, _ours("image2", str(rate), str(cal), {}, refs)))
        jobs["jwst"].append((rate.name, image2_command(rate, refs, out / "jwst" / "image2",
                                                       skip=("resample", "bkg_subtract"))))
    return jobs, cals


def _image3_jobs(cals, out):
    """{who: [(name, command)]} of image3 on every filter's association of ``cals`` (which exist)."""
    from webbflow.associations import associations_from_cals, write_asn
    from webbflow.io.image3 import read_cal
    from webbflow.oracle import image3_command
    from webbflow.simulate.stage2_refs import write_abvegaoffset_reference, write_apcorr_reference
    from webbflow.stages import image3

    jobs = {"ours": [], "jwst": []}
    work = out / "ours" / "image2"
    for asn in associations_from_cals(cals):
        asn_path = write_asn(asn, work / f"{asn.product}_asn.json")  # members beside it
        members = [work / f"{m}_cal.fits" for m in asn.members]
        header = fits.getheader(members[0])
        det, filt, pupil = header["DETECTOR"], header["FILTER"], header["PUPIL"]
        # Both catalogs use the same aperture model: our curve of growth on this association's i2d.
        probe = image3.run_models([read_cal(p) for p in members], {"tweakreg": {"skip": True},
                                                                  "source_catalog": CATALOG})["catalog"].apertures
        refs = {"apcorr": write_apcorr_reference(
                    out / f"{asn.product}_apcorr.fits", det, filt, pupil, probe.eefractions, probe.radii,
                    [1 / f for f in probe.eefractions[:-1]] + [probe.apcorr], probe.skyin, probe.skyout),
                "abvegaoffset": write_abvegaoffset_reference(out / f"{asn.product}_abvega.asdf", det,
                                                             {(filt, pupil): 1.7})}
        steps = {"tweakreg": TWEAK, "source_catalog": {**CATALOG, "apcorr_file": str(refs["apcorr"])}}
        d = out / "ours" / "image3"
        jobs["ours"].append((asn.product, _ours("image3", str(asn_path), str(d / f"{asn.product}_i2d.fits"),
                                                str(d / f"{asn.product}_cat.ecsv"),
                                                str(d / f"{asn.product}_segm.fits"), str(d / "crf" / asn.product),
                                                steps)))
        settings = {f"tweakreg.{k}": v for k, v in TWEAK.items()}
        settings.update({f"source_catalog.{k}": v for k, v in CATALOG.items()})
        jobs["jwst"].append((asn.product, image3_command(asn_path.resolve(), refs,
                                                         (out / "jwst" / "image3" / asn.product).resolve(),
                                                         settings=settings)))
    return jobs


def _run_stage(jobs, out, repeats, stage, served=False):
    """Time every job of both pipelines, alternating, ``repeats`` times; one warm-up job each first.
    ``served``: ours through a warm job server started for each repeat (its start counted).  Ours run
    in the environment the workflow's rule ``stage`` gives its jobs (its threads), jwst's in this one."""
    env = {"ours": workflow_env(stage), "jwst": None}
    for who in ("ours", "jwst"):
        measure(jobs[who][0][1], out, env=env[who])
    runs = {"ours": [], "jwst": []}
    for i in range(repeats):
        totals = {who: {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mib": 0.0} for who in runs}
        # the server warms for this stage's jobs, as the workflow's onstart passes the planned kinds
        start = start_server(out, jobs=(stage,), env=env["ours"]) if served else None
        try:
            for k in range(len(jobs["ours"])):
                for who in ("ours", "jwst"):
                    name, cmd = jobs[who][k]
                    wall, cpu, rss, parts = time_job(cmd, name, out, out if served and who == "ours" else None,
                                                     env=env[who])
                    totals[who]["wall_s"] += wall
                    totals[who]["cpu_s"] += cpu
                    totals[who]["peak_rss_mib"] = max(totals[who]["peak_rss_mib"], rss)
                    print(f"  {stage} repeat {i + 1} {who:4s} {name}: {wall:6.2f} s wall, {cpu:6.2f} s CPU{parts}, "
                          f"peak RSS {rss:6.0f} MiB", flush=True)
        finally:
            if served:
                add_server(totals["ours"], out, start, f"{stage} repeat {i + 1}")
        for who in runs:
            runs[who].append(totals[who])
    med = {who: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "peak_rss_mib")}
           for who, rs in runs.items()}
    ratio = {k: med["ours"][k] / med["jwst"][k] for k in med["ours"]}
    return {"jobs": len(jobs["ours"]), "runs": runs, "median": med, "ratio_ours_over_jwst": ratio}


def _profile(jobs, top=20):
    """cProfile of our image3 job on the first association (in this process), top functions by
    cumulative and by own time."""
    import cProfile
    import io
    import pstats

    from webbflow import jobs as webbflow_jobs

    args = [json.loads(a) for a in jobs["ours"][0][1][4:]]
    profiler = cProfile.Profile()
    profiler.runcall(webbflow_jobs.image3, *args[:-1], **args[-1])
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def start_run(workdir, run="run"):
    """The work folder, a fresh (emptied) ``run`` folder in it, the machine's description and the load
    average, with the benchmark's first line printed."""
    work = Path(workdir).resolve()
    out = work / run
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    load = os.getloadavg()
    print(f"benchmark on {machine}, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    return work, out, machine, load


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work" / "image23"))
    parser.add_argument("--from-run", default=None,
                        help="a finished workflow folder (results/detector1 rate files, demo/refs) to start from")
    parser.add_argument("--profile", action="store_true", help="also profile our image3 on one association")
    parser.add_argument("--server", action="store_true",
                        help="our jobs through a warm job server (WEBBFLOW_JOB_SERVER=wait), one started per stage "
                             "and repeat, its start counted in our totals and printed apart")
    parser.add_argument("--out", default=None, help="JSON results file")
    args = parser.parse_args(argv)

    work, out, machine, load = start_run(args.workdir)
    rates, refs_dir = _rates(work / "data", args.from_run)
    t0 = time.perf_counter()
    jobs2, cals = _image2_jobs(rates, refs_dir, out)
    result = {"date": str(dt.date.today()), "machine": machine, "load_before": load, "repeats": args.repeats,
              "server": args.server, "image2": _run_stage(jobs2, out, args.repeats, "image2", args.server)}
    result["image3"] = _run_stage(_image3_jobs(cals, out), out, args.repeats, "image3", args.server)
    result["load_after"] = os.getloadavg()
    result["bench_wall_s"] = time.perf_counter() - t0
    print()
    for stage in ("image2", "image3"):
        r = result[stage]
        m, q = r["median"], r["ratio_ours_over_jwst"]
        print(f"{stage} wall ours/jwst = {q['wall_s']:.3f}   ({r['jobs']} jobs: {m['ours']['wall_s']:.1f} s vs "
              f"{m['jwst']['wall_s']:.1f} s); CPU ours/jwst = {q['cpu_s']:.3f} ({m['ours']['cpu_s']:.1f} s vs "
              f"{m['jwst']['cpu_s']:.1f} s); peak RSS ours/jwst = "
              f"{r['ratio_ours_over_jwst']['peak_rss_mib']:.2f} ({r['median']['ours']['peak_rss_mib']:.0f} vs "
              f"{r['median']['jwst']['peak_rss_mib']:.0f} MiB)")
    print(f"load average after: {result['load_after'][0]:.2f} {result['load_after'][1]:.2f}")
    if args.profile:
        result["profile_image3"] = _profile(_image3_jobs(cals, out))
        print(result["profile_image3"])
    return _write_result(result, args.out, "image23")


if __name__ == "__main__":
    sys.exit(main())
