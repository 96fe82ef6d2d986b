#!/usr/bin/env python
"""A whole imaging program through the workflow and through jwst 3.0, stage by stage, in one run (issue 18).

``--case full`` simulates the ``program-imaging`` preset (16 full-frame exposures: NRCA1 + NRCALONG,
2 filter pairs x 4 dithers, 1 x 10 x 2048 x 2048, with their stage-1 and stage-2 references);
``--case subarray`` the ``program-subarray`` preset (32 SUB160 and SUB64P exposures); ``--quick`` a
reduced program of either (1 filter pair x 2 dithers) for checking the harness.  Then:

- ours: the workflow itself, ``snakemake --cores N`` (``step_defaults: jwst``), for every ``--cores``
  value (default 2 and 1: the throughput line), twice: once as an astronomer runs a program, one
  ``snakemake`` for every stage's products (``stage1 stage2 stage3``: one start and planning, the
  stages overlapping as the DAG allows; the end-to-end figure), then once per stage target
  (``stage1``, ``stage2``, ``stage3``, each a fresh ``snakemake`` process, planning included: the
  per-stage figures);
- jwst 3.0 as its users run it: one process per exposure (``calwebb_detector1``, then
  ``calwebb_image2``) and per association (``calwebb_image3``), two at a time, stage after stage, with
  the same references (``webbflow.oracle``'s ``*_command`` helpers).

jwst's image2 skips its per-exposure ``resample`` and its image3 skips ``source_catalog`` (no apcorr
or abvegaoffset reference is simulated): ours makes no per-exposure i2d and does make the catalog,
so jwst does less work than ours in both, and the ratios are conservative.

Peak memory per job is each process's own: for jwst, ``os.wait4``'s rusage from a small launcher
(:func:`bench_detector1.measure`); for ours, every workflow job appends its own ``VmHWM`` and wall
time to the file named by ``WEBBFLOW_JOB_STATS`` (:func:`webbflow.workflow.run_job`):
``getrusage`` inside a Snakemake job would count Snakemake's own resident memory, which Linux
carries into the job across ``bash -c``'s fork and exec.  Numba's cache and both pipelines' imports
are warmed first (one detector1 of each, untimed).

Prints ``program wall ours/jwst`` (``small-subarray program wall ours/jwst`` for ``--case
subarray``: ours in one ``snakemake``) and the same from the three stage runs (``program wall, three
stage runs, ours/jwst``), per stage ``<stage> wall ours/jwst`` (the stage's own run: ours with its
``snakemake`` start and planning) and ``<stage> summed job wall ours/jwst`` (its jobs' own wall times
added up), ``<job> peak memory ours/jwst`` per job type, per job type of the one-``snakemake`` run the
median and largest job wall and how many are above 0.6 s (issue 18 part 2), and ``throughput --cores 2 /
--cores 1`` (one ``snakemake`` each).

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_program.py --case subarray [--quick] [--cores 2,1] [--no-jwst]

Results: ``benchmarks/results/<date>-<host>-program-<case>[-quick].json``; the simulated program
stays in ``benchmarks/.work/program-<case>[-quick]/`` and is reused.
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure  # noqa: E402  (one measuring helper for every benchmark)
from bench_job_overhead import compiled_kernels  # noqa: E402
from bench_tso_demo import _write_result  # noqa: E402

STAGES = (("detector1", "stage1"), ("image2", "stage2"), ("image3", "stage3"))
"""(job type, the workflow's target rule that makes that stage's products)."""

GOALS = {"program": 0.10, "small-subarray program": 0.15, "detector1": 0.05, "image2": 0.10, "image3": 0.20,
         "memory": 0.33}
"""Issue 18's goals for the ratios ours/jwst."""

JOB_WALL_GOAL_S = 0.6
"""Issue 18 part 2: a SUB160 job of any stage takes at most this wall time."""


def program_specs(case, quick):
    """The exposure specs of ``case`` (``full`` or ``subarray``), reduced for ``quick``."""
    from webbflow.simulate.presets import program_imaging_specs, program_subarray_specs

    size = dict(n_filters=1, n_dithers=2) if quick else {}
    return (program_imaging_specs if case == "full" else program_subarray_specs)(**size)


def simulate(data, specs):
    """Simulate ``specs`` into ``data`` unless a complete earlier run is there; the uncal paths."""
    from webbflow.simulate.presets import run_specs

    names = sorted(f"{s.rootname}_uncal.fits" for s in specs)
    if sorted(p.name for p in (data / "uncal").glob("*_uncal.fits")) != names:
        shutil.rmtree(data, ignore_errors=True)
        print(f"simulating {len(specs)} exposures into {data} ...", flush=True)
        t0 = time.perf_counter()
        run_specs(specs, data)
        print(f"  simulated in {time.perf_counter() - t0:.0f} s", flush=True)
    return [data / "uncal" / n for n in names]


def _stats(rows):
    """Per job type: count, summed wall, largest peak RSS."""
    out = {}
    for r in rows:
        s = out.setdefault(r["job"], {"jobs": 0, "wall_s": 0.0, "peak_rss_mib": 0.0})
        s["jobs"] += 1
        s["wall_s"] += r["wall_s"]
        s["peak_rss_mib"] = max(s["peak_rss_mib"], r["peak_rss_mib"])
    return out


def _workdir(data, work, name):
    """A fresh folder ``work/name`` with the workflow config of the program (``step_defaults: jwst``)."""
    wd = work / name
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    config = {"inputs": {"uncal_dir": str(data / "uncal")}, "results_dir": str(wd / "results"),
              "references": {"dir": str(data / "refs")}, "modes": ["imaging"], "step_defaults": "jwst"}
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    return wd


def _snakemake(wd, cores, targets):
    """One ``snakemake --cores cores`` of ``targets`` in ``wd`` (its jobs' stats appended to
    ``wd/job-stats.jsonl``); its wall time, from the launcher of :func:`measure`."""
    env = {**os.environ, "WEBBFLOW_JOB_STATS": str(wd / "job-stats.jsonl"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(wd), "--cores", str(cores),
           "--configfile", str(wd / "config.yaml"), "--quiet", "all", "--", *targets]
    wall, _, _ = measure(cmd, wd, env=env)
    return wall


def _job_rows(wd):
    return [json.loads(line) for line in (wd / "job-stats.jsonl").read_text().splitlines()]


def run_ours(data, work, cores):
    """The program through ``snakemake --cores cores``, one stage target after another (the per-stage
    figures: each stage's wall includes its own Snakemake start, planning and end)."""
    wd = _workdir(data, work, f"ours-cores{cores}")
    stage_wall = {}
    for job, target in STAGES:
        stage_wall[job] = _snakemake(wd, cores, [target])
        print(f"    ours --cores {cores} {target}: {stage_wall[job]:.1f} s", flush=True)
    rows = _job_rows(wd)
    return {"cores": cores, "wall_s": sum(stage_wall.values()), "stage_wall_s": stage_wall,
            "job_types": _stats(rows), "jobs": rows}


def run_ours_whole(data, work, cores):
    """The program as an astronomer runs it: one ``snakemake --cores cores`` for every stage's products
    (one start and planning; the stages overlap as the DAG allows).  Its targets are the three stages'
    products (``stage1 stage2 stage3``), the same as the per-stage runs make: the default target ``all``
    would add the report's QA products, which jwst's run has no counterpart of."""
    wd = _workdir(data, work, f"ours-cores{cores}-whole")
    wall = _snakemake(wd, cores, [target for _, target in STAGES])
    print(f"    ours --cores {cores} stage1 stage2 stage3 (one snakemake): {wall:.1f} s", flush=True)
    rows = _job_rows(wd)
    return {"cores": cores, "wall_s": wall, "job_types": _stats(rows), "jobs": rows}


def jwst_jobs(data, uncals, work):
    """Per stage, the jwst 3.0 commands (job type, command) a user runs, one per exposure or association."""
    from webbflow.associations import image3_associations, write_asn
    from webbflow.exposures import exposure_table
    from webbflow.oracle import detector1_command, image2_command, image3_command
    from webbflow.refs import select_references
    from webbflow.refs.select import IMAGE2_REFTYPES

    d1, i2, i3 = (work / "jwst" / s for s in ("detector1", "image2", "image3"))
    for d in (d1, i2, i3):
        d.mkdir(parents=True, exist_ok=True)
    stage1, stage2 = [], []
    for uncal in uncals:
        header = fits.getheader(uncal)
        root = uncal.name.removesuffix("_uncal.fits")
        stage1.append(("detector1", detector1_command(uncal, select_references(header, data / "refs"), d1)))
        refs2 = {k: str(v) for k, v in select_references(header, data / "refs", None, IMAGE2_REFTYPES).items() if v}
        # no per-exposure i2d: the workflow's image2 makes none
        stage2.append(("image2", image2_command(d1 / f"{root}_rate.fits", refs2, i2, skip=("resample",))))
    stage3 = []
    for asn in image3_associations(exposure_table(data / "uncal")):
        path = i2 / f"{asn.product}_asn.json"  # members are found next to it: jwst's cal files
        write_asn(asn, path, suffix="cal")
        stage3.append(("image3", image3_command(path, {}, i3, skip=("source_catalog",))))
    return {"detector1": stage1, "image2": stage2, "image3": stage3}


def run_jwst(data, uncals, work, parallel=2):
    """jwst's three pipelines on the program, ``parallel`` processes at a time, stage after stage."""
    shutil.rmtree(work / "jwst", ignore_errors=True)
    stages = jwst_jobs(data, uncals, work)
    rows, stage_wall = [], {}

    def one(job_cmd):
        job, cmd = job_cmd
        wall, rss, _ = measure(cmd, work)
        return {"job": job, "wall_s": wall, "peak_rss_mib": rss}

    for job, commands in stages.items():
        t0 = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            rows += list(pool.map(one, commands))  # list(): re-raises a failed job's error
        stage_wall[job] = time.perf_counter() - t0
        print(f"    jwst {job} ({len(commands)} processes, {parallel} at a time): {stage_wall[job]:.1f} s", flush=True)
    return {"parallel": parallel, "wall_s": sum(stage_wall.values()), "stage_wall_s": stage_wall,
            "job_types": _stats(rows), "jobs": rows}


def warm(data, uncals, work, jwst):
    """One untimed detector1 of each pipeline: numba's cache and the interpreters' files, as production finds them."""
    from webbflow.oracle import detector1_command
    from webbflow.refs import select_references

    out = work / "warm"
    shutil.rmtree(out, ignore_errors=True)
    measure([sys.executable, "-m", "webbflow.cli", "detector1", str(uncals[0]), str(out / "ours"), "--refs-dir",
             str(data / "refs")], work)
    if jwst:
        measure(detector1_command(uncals[0], select_references(fits.getheader(uncals[0]), data / "refs"),
                                  out / "jwst"), work)
    shutil.rmtree(out, ignore_errors=True)


def _ratio_line(label, ours, theirs, goal=None):
    r = ours / theirs
    mark = "" if goal is None else f"   (goal <= {goal:.2f}: {'met' if r <= goal else 'NOT met'})"
    print(f"{label} = {r:.3f}   ({ours:.1f} vs {theirs:.1f}){mark}")
    return r


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=("full", "subarray"), default="full")
    parser.add_argument("--cores", default="2,1",
                        help="comma-separated --cores of the workflow runs (default 2,1); the first is compared "
                             "with jwst run two processes at a time")
    parser.add_argument("--no-jwst", action="store_true", help="skip the jwst run")
    parser.add_argument("--quick", action="store_true", help="1 filter pair x 2 dithers: a check of the harness")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    cores = [int(c) for c in args.cores.split(",")]
    name = f"program-{args.case}" + ("-quick" if args.quick else "")
    work = Path(args.workdir or REPO / "benchmarks" / ".work" / name).resolve()
    data = work / "data"
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    load_before = os.getloadavg()
    print(f"program benchmark ({name}) on {machine}, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"load average {load_before[0]:.1f}", flush=True)
    uncals = simulate(data, program_specs(args.case, args.quick))
    # built before our runs, so that no run's onstart builds them in the background while it is timed
    kernels = compiled_kernels()
    print(f"compiled kernels (webbflow.aot): {kernels}", flush=True)
    warm(data, uncals, work, not args.no_jwst)
    result = {"date": str(dt.date.today()), "machine": machine, "case": args.case, "quick": args.quick,
              "exposures": len(uncals), "load_average_before": load_before[0], "ours": {},
              "compiled_kernels": kernels}
    result["ours_whole"] = {}
    for n in cores:
        result["ours_whole"][f"cores{n}"] = run_ours_whole(data, work, n)
        result["ours"][f"cores{n}"] = run_ours(data, work, n)
    if not args.no_jwst:
        result["jwst"] = run_jwst(data, uncals, work)
    result["load_average_after"] = os.getloadavg()[0]

    print()
    ours = result["ours"][f"cores{cores[0]}"]
    whole = result["ours_whole"][f"cores{cores[0]}"]
    for n in cores:
        o, w = result["ours"][f"cores{n}"], result["ours_whole"][f"cores{n}"]
        print(f"ours --cores {n}: {w['wall_s']:.1f} s for {len(uncals)} exposures in one snakemake "
              f"({60 * len(uncals) / w['wall_s']:.1f} exposures/min); {o['wall_s']:.1f} s in three, stage by stage")
    for job, s in whole["job_types"].items():  # issue 18 part 2: a small job of any stage <= 0.6 s of wall
        walls = sorted(r["wall_s"] for r in whole["jobs"] if r["job"] == job)
        over = sum(w > JOB_WALL_GOAL_S for w in walls)
        print(f"ours {job} jobs (one snakemake): median wall {walls[len(walls) // 2]:.2f} s, largest {walls[-1]:.2f} s, "
              f"{over} of {len(walls)} above {JOB_WALL_GOAL_S} s")
    if 1 in cores and 2 in cores:
        result["throughput_cores2_over_cores1"] = (result["ours_whole"]["cores1"]["wall_s"]
                                                   / result["ours_whole"]["cores2"]["wall_s"])
        print(f"throughput --cores 2 / --cores 1 = {result['throughput_cores2_over_cores1']:.2f}   (one snakemake each)")
    if "jwst" in result:
        jw = result["jwst"]
        label = "program" if args.case == "full" else "small-subarray program"
        # end to end: one snakemake for the whole program, as the README runs it, against jwst's three
        # pipelines stage after stage; then the same program as three stage runs (the per-stage lines')
        ratios = {"program": _ratio_line(f"{label} wall ours/jwst", whole["wall_s"], jw["wall_s"], GOALS[label]),
                  "program_stage_by_stage": _ratio_line(f"{label} wall, three stage runs, ours/jwst", ours["wall_s"],
                                                        jw["wall_s"])}
        for job, _ in STAGES:
            ratios[job] = _ratio_line(f"{job} wall ours/jwst", ours["stage_wall_s"][job], jw["stage_wall_s"][job],
                                      GOALS[job])
        for job, _ in STAGES:  # the jobs alone, without Snakemake's planning and scheduling
            ratios[f"{job}_jobs"] = _ratio_line(f"{job} summed job wall ours/jwst", ours["job_types"][job]["wall_s"],
                                                jw["job_types"][job]["wall_s"])
        for job, _ in STAGES:
            ratios[f"{job}_memory"] = _ratio_line(
                f"{job} peak memory ours/jwst (largest job, MiB)", ours["job_types"][job]["peak_rss_mib"],
                jw["job_types"][job]["peak_rss_mib"], GOALS["memory"])
        result["ratios_ours_over_jwst"] = ratios
    print(f"load average {load_before[0]:.1f} before, {result['load_average_after']:.1f} after "
          f"({os.cpu_count()} cores): the figures are only as good as the machine is quiet")
    return _write_result(result, args.out, name)


if __name__ == "__main__":
    sys.exit(main())
