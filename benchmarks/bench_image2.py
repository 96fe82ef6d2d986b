#!/usr/bin/env python
"""Stage 2 imaging alone, ours against jwst 3.0's calwebb_image2 -- and optionally against our own
image2 from another checkout (``--before SRC``) -- on the demo's SUB160 rates and a full-frame rate.

The jobs are bench_image23's (our ``webbflow.jobs.image2`` and jwst's calwebb_image2 with the same
references, its ``resample`` skipped), each in a fresh process measured by bench_detector1's launcher
(wall, CPU seconds, the process's peak RSS); per rate file the pipelines alternate (before, ours,
jwst), after one untimed warm-up job of each.  The full-frame rate is the ``fullframe`` preset (NRCA1
F200W, 10 groups) through our detector1, with its stage-2 references written by
``write_stage2_references`` (simulated once into the work folder, ~0.5 GB).

Usage::

    python benchmarks/bench_image2.py [--before OTHER_CHECKOUT/src] [--no-demo] [--no-full] [--server]

``--server``: our jobs (and ``--before``'s) go through a warm job server of their own, as the workflow
runs them with ``jobs.warm_server`` (bench_job_overhead's ``start_server`` and ``run_served``: each job
a client making Snakemake's script-preamble imports; one server per set and checkout, warmed for image2
jobs, its start's wall time and its own CPU seconds counted once in the totals and printed apart).

Prints per set the summed wall time, CPU seconds and largest peak RSS of each pipeline and the ratios
to jwst; results: ``benchmarks/results/<date>-<host>-image2.json``.
"""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure  # noqa: E402  (one measuring helper for every benchmark)
from bench_image23 import _image2_jobs, _rates, add_server, start_run, time_job  # noqa: E402
from bench_job_overhead import start_server, workflow_env  # noqa: E402
from bench_tso_demo import _write_result  # noqa: E402


def _full_frame(data):
    """The ``fullframe`` preset's rate (through our detector1) and its folder of references."""
    from astropy.io import fits

    from webbflow.config import DETECTOR1_STEPS
    from webbflow.refs.select import DETECTOR1_REFTYPES, select_references
    from webbflow.simulate import run_preset
    from webbflow.simulate.presets import preset_specs
    from webbflow.simulate.stage2_refs import write_stage2_references
    from webbflow.stages import detector1

    if not (data / "uncal").is_dir():
        print("simulating fullframe ...", flush=True)
        run_preset("fullframe", data)
    spec = preset_specs("fullframe")[0]
    write_stage2_references(data, spec.detector, spec.geometry, spec.filter, spec.pupil, spec.ref_seed,
                            extra_keywords={"WFSEED": spec.ref_seed})
    rates = []
    for uncal in sorted((data / "uncal").glob("*_uncal.fits")):
        rate = data / "rate" / uncal.name.replace("_uncal.fits", "_rate.fits")
        if not rate.exists():
            rate.parent.mkdir(exist_ok=True)
            detector1.run(uncal, rate, rate.with_name(rate.name.replace("_rate.", "_rateints.")),
                          select_references(fits.getheader(uncal), data / "refs", None, DETECTOR1_REFTYPES),
                          {s: {} for s in DETECTOR1_STEPS})
        rates.append(rate)
    return rates, data / "refs"


def _run_set(label, rates, refs, out, before, served=False):
    """Time every rate file through each pipeline, alternating; -> {who: totals}.  ``served``: ours (and
    the before checkout's) through a warm job server each, its start counted once in the totals.  Ours
    (and the before checkout's) run in the environment the workflow's image2 rule gives its jobs."""
    jobs, _ = _image2_jobs(rates, refs, out / label)
    env = {"ours": workflow_env("image2"), "jwst": None}
    if before:
        env["before"] = workflow_env("image2", dict(os.environ, PYTHONPATH=str(Path(before).resolve())))
        jobs["before"] = jobs["ours"]
    order = [w for w in ("before", "ours", "jwst") if w in env]
    for who in order:  # warm-up: numba's cache, the interpreters' compiled imports
        measure(jobs[who][0][1], out, env=env[who])
    # one server folder per checkout (each its own server, warmed for image2 jobs)
    servers = {w: out / label / f"server-{w}" for w in order if served and w != "jwst"}
    starts = {w: start_server(folder, jobs=("image2",), env=env[w]) for w, folder in servers.items()}
    totals = {who: {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mib": 0.0} for who in order}
    try:
        for k, rate in enumerate(rates):
            for who in order:
                wall, cpu, rss, parts = time_job(jobs[who][k][1], f"{who}-{rate.name}", out, servers.get(who),
                                                 env[who])
                t = totals[who]
                t["wall_s"] += wall
                t["cpu_s"] += cpu
                t["peak_rss_mib"] = max(t["peak_rss_mib"], rss)
                print(f"  {label} {who:6s} {rate.name}: {wall:6.2f} s wall, {cpu:6.2f} s CPU{parts}, "
                      f"peak RSS {rss:5.0f} MiB", flush=True)
    finally:
        for who, server in servers.items():
            add_server(totals[who], server, starts[who], f"{label} {who}")
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default=None,
                        help="the src/ folder of another webbflow checkout: its image2 job is timed too")
    parser.add_argument("--no-demo", action="store_true", help="leave out the demo's 16 SUB160 rates")
    parser.add_argument("--no-full", action="store_true", help="leave out the full-frame rate")
    parser.add_argument("--server", action="store_true",
                        help="our jobs through a warm job server (WEBBFLOW_JOB_SERVER=wait), one started per set, "
                             "its start counted in our totals and printed apart")
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work"))
    parser.add_argument("--out", default=None, help="JSON results file")
    args = parser.parse_args(argv)

    work, out, machine, load = start_run(args.workdir, "image2-run")
    sets = []
    if not args.no_demo:
        sets.append(("sub160", *_rates(work / "image23" / "data", None)))
    if not args.no_full:
        sets.append(("full", *_full_frame(work / "image2-full")))
    result = {"date": str(dt.date.today()), "machine": machine, "load_before": load, "before": args.before,
              "server": args.server}
    for label, rates, refs in sets:
        totals = _run_set(label, rates, refs, out, args.before, args.server)
        result[label] = {"jobs": len(rates), "totals": totals}
        j = totals["jwst"]
        for who in [w for w in totals if w != "jwst"]:
            t = totals[who]
            print(f"{label} ({len(rates)} jobs) {who}/jwst: wall {t['wall_s'] / j['wall_s']:.3f} "
                  f"({t['wall_s']:.1f} vs {j['wall_s']:.1f} s), CPU {t['cpu_s'] / j['cpu_s']:.3f} "
                  f"({t['cpu_s']:.1f} vs {j['cpu_s']:.1f} s), peak RSS {t['peak_rss_mib'] / j['peak_rss_mib']:.2f} "
                  f"({t['peak_rss_mib']:.0f} vs {j['peak_rss_mib']:.0f} MiB)", flush=True)
    result["load_after"] = os.getloadavg()
    print(f"load average after: {result['load_after'][0]:.2f} {result['load_after'][1]:.2f}")
    return _write_result(result, args.out, "image2")


if __name__ == "__main__":
    sys.exit(main())
