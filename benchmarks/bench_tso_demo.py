#!/usr/bin/env python
"""A time-series (or the coronagraphy) demo through stages 1-3, ours against jwst 3.0, in one run.

``--mode grism`` (default): simulates ``demo-tso-grism`` (3 segments of 20 integrations; or another
size with ``--ints-per-segment``), then runs, one fresh process per job as the workflow does, our
detector1 and spec2 on every segment and tso3 on the exposure, and jwst's calwebb_detector1,
calwebb_spec2 and calwebb_tso3 on the same inputs with the same references (jwst's tso3 on jwst's
calints).  ``--mode imaging``: ``demo-tso-imaging`` (3 segments of 30 integrations, F210M + WLP8
SUB64P) through detector1, image2 (→ calints) and tso3 (outlier_detection, tso_photometry), both
pipelines at jwst's defaults.  Prints total wall time, the largest peak RSS of any job, and the
ratios (issues 13 and 14: >= 10x faster, <= 1/5 of jwst's peak memory), and for ours the CPU
seconds apart from each job's imports (numpy, astropy, the stage module, and stdatamodels where the
stage reads products through it, as its workflow job does: the fixed cost a warm job server would
not pay again) and the RSS when they were done.  Numba's cache is warmed first, as in production.

``--mode coron`` (issue 15): the ``demo-coron`` program (7 exposures: 2 science rolls, 5 reference-star
dither points, 2 integrations x 5 groups on SUB320A335R) through detector1 + image2 + coron3, as each
pipeline's users run it on two cores: per exposure detector1 then image2, two exposures at a time,
then coron3 on the association.  Ours runs the workflow's jobs (``webbflow.jobs``, one fresh process
each, with the step parameters the workflow gives them for ``config/demo-coron.yaml``) twice: under
``step_defaults: jwst`` (the same work as jwst's) and with the preset's recommended layer (no dark,
pseudo reference pixels, float64 align_refs, sector KLIP, contrast curve and companion fit); jwst 3.0's
calwebb_detector1, calwebb_image2 and calwebb_coron3 with the same references.  Prints per stage the
summed wall time of its jobs, the end-to-end wall time, the largest job's peak RSS and the ratios
(issue 15: >= 10x faster, <= 1/3 of jwst's peak memory), with the CPU seconds (user + system) of the
jobs beside the walls and the load average.  ``--before SRC`` also runs our jobs with another source
tree (e.g. the main checkout's ``src``) in the same run, as ``before-jwst`` / ``before-recommended``.
Both pipelines are warmed first (numba's cache, the interpreters' imports).

``--server`` (every mode): our jobs run through the warm job server (:mod:`webbflow.jobserver`) as the
workflow's stage rules run them with ``jobs.warm_server`` on (``WEBBFLOW_JOB_SERVER=wait``: each job is a
client process, an adapter script on its job file, naming its ``webbflow.jobs`` function to ``run_job``; the benchmark's own server,
in a private folder, stopped at the end; ``bench_job_overhead.run_served``).  The server's start (its
imports and warm-up, until it listens) is counted once in our wall and CPU totals and printed apart;
per job it prints the client's wall and CPU and the server child's wall, CPU, peak RSS (which counts
the pages the child shares with the server in full), and PSS and USS (its private pages) at its end;
the memory ratio is also given with the largest job's PSS and USS.

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_tso_demo.py [--mode grism|imaging|coron] [--ints-per-segment 20] [--no-jwst]
        [--before OTHER_CHECKOUT/src] [--server] [--max-memory-mb MB]

Results: ``benchmarks/results/<date>-<host>-tso-demo.json`` (``-tso-imaging-demo.json``,
``-coron-demo.json``).
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

from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure  # noqa: E402  (one measuring helper for every benchmark)
from bench_job_overhead import (compiled_kernels, run_served, start_server, stop_servers,  # noqa: E402
                                workflow_config, workflow_env)

_JOB = """
import resource, sys, time
from pathlib import Path
stage, args = sys.argv[1], sys.argv[2:]


def imported(models=True):
    # the fixed cost of a job (interpreter, imports), printed for the benchmark to take apart from the run;
    # ``models``: the stage opens products through stdatamodels (detector1 does not, nor does its
    # workflow job import it: importing it here would add ~37 MiB to the job's peak RSS)
    if models:
        from stdatamodels.jwst import datamodels  # noqa: F401
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"@@imports {time.process_time()!r} {rss}", file=sys.stderr, flush=True)


if stage == "detector1":
    import json
    from webbflow.stages import detector1
    imported(models=False)
    uncal, out, refs, budget = (*args, None)[:4]
    root = Path(uncal).name.removesuffix("_uncal.fits")
    detector1.run(uncal, f"{out}/{root}_rate.fits", f"{out}/{root}_rateints.fits", json.loads(refs), {},
                  max_memory_mb=float(budget) if budget else None)
elif stage == "image2":
    import json
    from webbflow.stages import image2
    imported()
    rateints, out, refs = args
    root = Path(rateints).name.removesuffix("_rateints.fits")
    image2.run(rateints, f"{out}/{root}_calints.fits", json.loads(refs), {})
elif stage == "tso3_phot":
    import json
    from webbflow.associations import read_asn
    from webbflow.stages import tso3
    imported()
    asn_path, out, gain = args
    asn = read_asn(asn_path)
    crf = [f"{out}/{Path(m).name.removesuffix('_calints.fits')}_{asn['asn_id']}_crfints.fits" for m in asn["members"]]
    tso3.run_photometry(asn["members"], crf, f"{out}/{asn['product']}_phot.ecsv", {"gain": gain}, {})
elif stage == "spec2":
    import json
    from webbflow.stages import spec2
    imported()
    rateints, out, refs = args
    root = Path(rateints).name.removesuffix("_rateints.fits")
    spec2.run(rateints, f"{out}/{root}_calints.fits", f"{out}/{root}_x1dints.fits", json.loads(refs), {})
else:
    import json
    from webbflow.associations import read_asn
    from webbflow.stages import tso3
    imported()
    asn_path, out, extract1d = args
    asn = read_asn(asn_path)
    crf = [f"{out}/{Path(m).name.removesuffix('_calints.fits')}_{asn['asn_id']}_crfints.fits" for m in asn["members"]]
    tso3.run(asn["members"], crf, f"{out}/{asn['product']}_x1dints.fits", f"{out}/{asn['product']}_whtlt.ecsv",
             {"extract1d": extract1d}, {})
"""


def _selected(uncal, refs):
    from webbflow.refs import select_references

    return select_references(fits.getheader(uncal), refs)


def _detector1_refs(uncal, refs):
    """The references of one segment as the JSON a job receives: chosen once by the driver, as
    Snakemake does when it plans the run (and as jwst's commands receive them)."""
    return json.dumps({k: (str(v) if v else None) for k, v in _selected(uncal, refs).items()})


def _detector1_budget(given, imaging):
    """Our detector1 jobs' ``max_memory_mb``: ``given``, else the demo config's
    (``config/demo-tso-{grism,imaging}.yaml``: what the workflow gives the demo's jobs), else None."""
    if given is not None:
        return given
    import yaml

    config = yaml.safe_load((REPO / "config" / f"demo-tso-{'imaging' if imaging else 'grism'}.yaml").read_text())
    budget = (config.get("max_memory_mb") or {}).get("detector1")
    return float(budget) if budget else None


def _jobs(data, uncals, refs, stage2_refs, who, imaging=False, served=False, max_memory_mb=None):
    """(name, command) of every job of one pipeline, in order; and the association it writes.

    ``stage2_refs``: spec2's references (grism) or image2's plus ``gain`` (imaging).  ``served`` (ours):
    each job as ``(job type of bench_job_overhead, keyword arguments of its webbflow.jobs function)``
    instead of a command, for the warm job server.  ``max_memory_mb``: our detector1 jobs' budget
    (``max_memory_mb.detector1``; None: the default)."""
    from webbflow.associations import tso3_associations, write_asn
    from webbflow.exposures import exposure_table
    from webbflow.oracle import detector1_command, image2_command, oracle_paths, spec2_command

    stage2 = "image2" if imaging else "spec2"
    out = data / who
    stage1, stage2_dir, stage3 = out / "detector1", out / stage2, out / "tso3"
    for d in (stage1, stage2_dir, stage3):
        d.mkdir(parents=True, exist_ok=True)
    (asn,) = tso3_associations(exposure_table(data / "uncal"))
    asn_path = stage2_dir / "tso3_asn.json"
    write_asn(asn, asn_path, suffix="calints")
    refs2 = {k: v for k, v in stage2_refs.items() if k != "gain"}
    python, script = oracle_paths() if who == "jwst" else (None, None)
    jobs = []
    for uncal in uncals:
        root = uncal.name.removesuffix("_uncal.fits")
        rateints = stage1 / f"{root}_rateints.fits"
        if who == "ours" and served:  # the workflow's job functions, as its scripts call them
            exp_type = fits.getval(uncal, "EXP_TYPE")
            jobs.append(("detector1", ("detector1", {
                "uncal": str(uncal), "rate": str(stage1 / f"{root}_rate.fits"), "rateints": str(rateints),
                "steps": {}, "references": json.loads(_detector1_refs(uncal, refs)), "exp_types": [exp_type],
                "max_memory_mb": max_memory_mb})))
            paths = {k: str(v) for k, v in refs2.items()}
            if imaging:
                jobs.append(("image2", ("image2", {"rate": str(rateints), "references": paths, "steps": {},
                                                   "cal": str(stage2_dir / f"{root}_calints.fits")})))
            else:
                jobs.append(("spec2", ("spec2", {"rateints": str(rateints), "references": paths, "steps": {},
                                                 "calints": str(stage2_dir / f"{root}_calints.fits"),
                                                 "x1dints": str(stage2_dir / f"{root}_x1dints.fits")})))
        elif who == "ours":
            jobs.append(("detector1", [sys.executable, "-c", _JOB, "detector1", str(uncal), str(stage1),
                                       _detector1_refs(uncal, refs), str(max_memory_mb or "")]))
            jobs.append((stage2, [sys.executable, "-c", _JOB, stage2, str(rateints), str(stage2_dir),
                                  json.dumps({k: str(v) for k, v in refs2.items()})]))
        else:
            jobs.append(("detector1", detector1_command(uncal, _selected(uncal, refs), stage1)))
            if imaging:  # jwst's image2 with the same references (as tests/test_parity_tso_imaging.py)
                jobs.append(("image2", image2_command(rateints, refs2, stage2_dir)))
            else:
                jobs.append(("spec2", spec2_command(rateints, refs2, stage2_dir)))
    if who == "ours" and served:
        product = stage3 / asn.product
        kwargs = {"asn": str(asn_path), "crfints": str(stage3), "steps": {}}
        if imaging:
            jobs.append(("tso3", ("tso3-phot", {**kwargs, "phot": f"{product}_phot.ecsv",
                                                "references": {"gain": str(stage2_refs["gain"])}})))
        else:
            jobs.append(("tso3", ("tso3-grism", {**kwargs, "x1dints": f"{product}_x1dints.fits",
                                                 "whtlt": f"{product}_whtlt.ecsv",
                                                 "references": {"extract1d": str(stage2_refs["extract1d"])}})))
    elif who == "ours":
        arg = stage2_refs["gain"] if imaging else stage2_refs["extract1d"]
        jobs.append(("tso3", [sys.executable, "-c", _JOB, "tso3_phot" if imaging else "tso3", str(asn_path),
                              str(stage3), str(arg)]))
    else:
        override = (f"--override=tso_photometry.gain={stage2_refs['gain']}" if imaging
                    else f"--override=extract_1d.extract1d={stage2_refs['extract1d']}")
        jobs.append(("tso3", [str(python), str(script), "tso3", str(asn_path), str(stage3), override]))
    return jobs


def _imports(text):
    """The CPU seconds and peak RSS (MiB) of one of our jobs when its imports were done (its
    ``@@imports`` line; the fixed cost a warm job server would not pay); {} for jwst's."""
    lines = [line.split() for line in text.splitlines() if line.startswith("@@imports ")]
    return {"import_cpu_s": float(lines[-1][1]), "import_rss_mib": int(lines[-1][2]) / 1024.0} if lines else {}


def _run(job, cmd, data, env=None):
    """Run one of the benchmark's jobs; its row.  ``cmd``: a command (a fresh process: wall, CPU and
    peak RSS of that process) or, with ``--server``, ``(job type, keyword arguments)`` run as a client
    of the warm job server: the client's wall (what Snakemake waits for), CPU as the client's plus the
    child's, the peak RSS of the server's child (which counts the pages it shares with the server), and
    its PSS and USS (private pages) at its end."""
    if isinstance(cmd, tuple):
        r = run_served(*cmd, data, env=env)
        return {"job": job, "wall_s": r["wall"], "cpu_s": r["client_cpu"] + r["child_cpu"],
                "peak_rss_mib": r["rss_mib"], "client_cpu_s": r["client_cpu"], "child_wall_s": r["child_wall"],
                "child_cpu_s": r["child_cpu"], "pss_mib": r["pss_mib"], "uss_mib": r["uss_mib"], "inherited_mib": r.get("inherited_mib")}
    wall, rss, text, cpu = measure(cmd, data, env=env, cpu=True)
    return {"job": job, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss, **_imports(text)}


def _server_life(start, life_cpu):
    """Count the server's CPU over its whole life (``stop_servers``: its start, the warm-up it does after
    it listens, its forks) in ``start["cpu"]`` (with the starting client's); ``start["cpu_at_listen"]``
    keeps the CPU until it listened."""
    start["cpu_at_listen"] = start["cpu"]
    start["server_life_cpu"] = life_cpu
    start["cpu"] = start["client_cpu"] + max(life_cpu, start["server_cpu"])


def _served_summary(rows, start):
    """Print the per-job figures of a ``--server`` run and the server's start; the totals' extra keys."""
    print(f"  job server start (counted once in ours): wall {start['wall']:.2f} s, CPU {start['cpu_at_listen']:.2f} s "
          f"until it listens, {start['cpu']:.2f} s in all (client + server's life), server RSS {start['rss_mib']:.0f} MiB",
          flush=True)
    print(f"  {'job':10s} {'wall':>6s} {'cliCPU':>6s} {'chWall':>6s} {'chCPU':>6s} {'RSS':>5s} {'PSS':>5s} {'USS':>5s}"
          f" {'Inh':>5s}  (s; MiB of the server's child; Inh: the server's anonymous memory it mapped at its fork,"
          " part of its RSS)")
    for r in rows:
        print(f"  {r['job']:10s} {r['wall_s']:6.2f} {r['client_cpu_s']:6.2f} {r['child_wall_s']:6.2f} "
              f"{r['child_cpu_s']:6.2f} {r['peak_rss_mib']:5.0f} {r['pss_mib'] or 0:5.0f} {r['uss_mib'] or 0:5.0f} "
              f"{r.get('inherited_mib') or 0:5.0f}")
    return {"server_start": start, "peak_pss_mib": max(r["pss_mib"] or 0 for r in rows),
            "peak_uss_mib": max(r["uss_mib"] or 0 for r in rows),
            "largest_job_inherited_mib": max(rows, key=lambda r: r["peak_rss_mib"]).get("inherited_mib")}


def _write_result(result, out, name):
    """Write ``result`` to ``out`` (default ``benchmarks/results/<date>-<host>-<name>.json``); return 0."""
    out = Path(out) if out else REPO / "benchmarks" / "results" / f"{dt.date.today()}-{platform.node()}-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"results written to {out}")
    return 0


def main(argv=None):
    from webbflow.simulate import optics
    from webbflow.simulate.grism import write_grism_references
    from webbflow.simulate.presets import run_specs, tso_grism_specs, tso_image_specs
    from webbflow.simulate.stage2_refs import write_stage2_references

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("grism", "imaging", "coron"), default="grism")
    parser.add_argument("--ints-per-segment", type=int, default=None,
                        help="integrations per segment (default: the demo's, 20 grism / 30 imaging)")
    parser.add_argument("--no-jwst", action="store_true", help="skip the oracle run")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--before", default=None, metavar="SRC",
                        help="coron: also run our jobs with this source tree first on PYTHONPATH (before/after in one run; "
                             "with --server through that tree's own job server)")
    parser.add_argument("--server", action="store_true",
                        help="run our jobs through the warm job server (WEBBFLOW_JOB_SERVER=wait, as a workflow "
                             "script with jobs.warm_server on); its start is counted once in our total")
    parser.add_argument("--max-memory-mb", type=float, default=None, metavar="MB",
                        help="our detector1 jobs' memory budget (the workflow's max_memory_mb.detector1; default "
                             "the demo config's, else the workflow's default): a segment above it is streamed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.mode == "coron":
        return bench_coron(args)
    imaging = args.mode == "imaging"
    name = "tso-imaging-demo" if imaging else "tso-demo"
    nint = args.ints_per_segment or (30 if imaging else 20)
    data = Path(args.workdir or REPO / "benchmarks" / ".work" / name) / f"n{nint}"
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"TSO demo benchmark ({args.mode}) on {machine}, {dt.date.today()}", flush=True)
    kernels = compiled_kernels()
    print(f"compiled kernels (webbflow.aot): {kernels}", flush=True)
    specs = (tso_image_specs if imaging else tso_grism_specs)(ints_per_segment=nint)
    if not (data / "uncal").is_dir():
        print(f"simulating {len(specs)} segments x {nint} integrations ...", flush=True)
        run_specs(specs, data)
    uncals = sorted((data / "uncal").glob("*_uncal.fits"))
    refs = data / "refs"
    if imaging:
        from webbflow.refs import select_references
        from webbflow.refs.select import IMAGE2_REFTYPES

        header = fits.getheader(uncals[0])
        stage2_refs = {**{k: str(v) for k, v in select_references(header, refs, None, IMAGE2_REFTYPES).items() if v},
                       "gain": str(_selected(uncals[0], refs)["gain"])}
    else:
        spec = specs[0]
        grism = write_grism_references(data, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                                       optics.pixar_a2(spec.detector))
        flats = write_stage2_references(data, spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
        stage2_refs = {**grism, "flat": flats["flat"], "distortion": flats["distortion"]}
    pipelines = ["ours"] + ([] if args.no_jwst else ["jwst"])
    config = workflow_config(REPO / "config" / f"demo-tso-{args.mode}.yaml")
    stage2, tso3_rule = ("image2", "tso3_phot") if imaging else ("spec2", "tso3")
    # warm numba's cache (first segment's detector1), as a production run finds it
    warm = data / "warm"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir()
    measure([sys.executable, "-c", _JOB, "detector1", str(uncals[0]), str(warm), _detector1_refs(uncals[0], refs)],
            data, env=workflow_env("detector1", config=config))
    totals = {}
    for who in pipelines:
        shutil.rmtree(data / who, ignore_errors=True)
        served = args.server and who == "ours"
        jobs = _jobs(data, uncals, refs, stage2_refs, who, imaging, served=served,
                     max_memory_mb=_detector1_budget(args.max_memory_mb, imaging))
        # the server warms for this mode's job kinds, as the workflow's onstart passes the planned ones
        kinds = ("detector1", "image2_ints", "tso3_phot") if imaging else ("detector1", "spec2", "tso3")
        # ours as the workflow runs its rules (their threads); jwst's as its users run it
        envs = _workflow_envs(("detector1", stage2, tso3_rule), config) if who == "ours" else {}
        start = start_server(data, jobs=kinds, env=envs["detector1"]) if served else {"wall": 0.0, "cpu": 0.0}
        try:
            rows = [_run(job, cmd, data, env=envs.get(job if job != "tso3" else tso3_rule)) for job, cmd in jobs]
        finally:
            if served:
                _server_life(start, stop_servers(data))
        totals[who] = {"wall_s": start["wall"] + sum(r["wall_s"] for r in rows),
                       "cpu_s": start["cpu"] + sum(r["cpu_s"] for r in rows),
                       "peak_rss_mib": max(r["peak_rss_mib"] for r in rows), "jobs": rows,
                       "load": os.getloadavg()[0]}
        t = totals[who]
        if served:
            t.update(_served_summary(rows, start))
        stages = ("detector1", stage2, "tso3")
        per = {s: sum(r["wall_s"] for r in rows if r["job"] == s) for s in stages}
        cpu = {s: sum(r["cpu_s"] for r in rows if r["job"] == s) for s in stages}
        rss = {s: max(r["peak_rss_mib"] for r in rows if r["job"] == s) for s in stages}
        t["stages"] = {s: {"wall_s": per[s], "cpu_s": cpu[s], "peak_rss_mib": rss[s]} for s in stages}
        if who == "ours" and not served:  # the run apart from the fixed cost (interpreter and imports) of each job
            run = {s: sum(r["cpu_s"] - r["import_cpu_s"] for r in rows if r["job"] == s) for s in stages}
            t["run_cpu_s"] = sum(run.values())
            for s in stages:
                t["stages"][s]["run_cpu_s"] = run[s]
            print(f"  ours without the jobs' imports: CPU {t['run_cpu_s']:.1f} s ("
                  + ", ".join(f"{s} {run[s]:.1f} s" for s in stages) + "); RSS after imports "
                  + ", ".join(f"{s} {max(r['import_rss_mib'] for r in rows if r['job'] == s):.0f} MiB"
                              for s in stages), flush=True)
        print(f"  {who:4s}: wall {t['wall_s']:7.1f} s, CPU {t['cpu_s']:6.1f} s (load {t['load']:.1f}); "
              + ", ".join(f"{s} {per[s]:.1f} s / CPU {cpu[s]:.1f} s / {rss[s]:.0f} MiB" for s in stages)
              + f"; largest job peak RSS {t['peak_rss_mib']:.0f} MiB", flush=True)
    result = {"date": str(dt.date.today()), "machine": machine, "compiled_kernels": kernels, "mode": args.mode,
              "segments": len(uncals), "ints_per_segment": nint, "server": args.server, "pipelines": totals}
    if "jwst" in totals:
        result["speedup"] = totals["jwst"]["wall_s"] / totals["ours"]["wall_s"]
        result["memory_ratio"] = totals["ours"]["peak_rss_mib"] / totals["jwst"]["peak_rss_mib"]
        result["cpu_speedup"] = totals["jwst"]["cpu_s"] / totals["ours"]["cpu_s"]
        o, j = totals["ours"]["stages"], totals["jwst"]["stages"]
        result["per_stage"] = {s: {"speedup": j[s]["wall_s"] / o[s]["wall_s"], "cpu_speedup": j[s]["cpu_s"] / o[s]["cpu_s"],
                                   "memory_ratio": o[s]["peak_rss_mib"] / j[s]["peak_rss_mib"]} for s in o}
        print(f"  jwst/ours wall = {result['speedup']:.1f}x, CPU = {result['cpu_speedup']:.1f}x; ours/jwst peak memory "
              f"= {result['memory_ratio']:.2f}; per stage (wall, CPU, memory): "
              + ", ".join(f"{s} {r['speedup']:.1f}x / {r['cpu_speedup']:.1f}x / {r['memory_ratio']:.2f}"
                          for s, r in result["per_stage"].items()))
        _served_ratios(result, totals["ours"], totals["jwst"]["peak_rss_mib"])
    return _write_result(result, args.out, name)


def _served_ratios(result, ours, jwst_rss):
    """With ``--server``: our largest job's PSS and USS against jwst's largest peak RSS (printed, and
    in ``result``); the peak-RSS ratio counts the pages a child shares with the server in full."""
    if "peak_pss_mib" not in ours:
        return
    result["memory_ratio_pss"] = ours["peak_pss_mib"] / jwst_rss
    result["memory_ratio_uss"] = ours["peak_uss_mib"] / jwst_rss
    print(f"  through the job server, ours/jwst memory of the largest job: peak RSS {result['memory_ratio']:.2f}, "
          f"PSS {result['memory_ratio_pss']:.2f}, USS {result['memory_ratio_uss']:.2f} (ours' PSS/USS at the job's "
          "end, jwst's peak RSS)", flush=True)


# One workflow job (webbflow.jobs.<stage>) in a fresh process, as the workflow's script adapters call it:
# positional arguments then keyword arguments, each as JSON.
_CORON_JOB = """
import json, sys
from webbflow import jobs
args = [json.loads(a) for a in sys.argv[2:]]
getattr(jobs, sys.argv[1])(*args[:-1], **args[-1])
"""


def _coron_steps(stage, recommended, data):
    """The step parameters the workflow gives a coronagraphy job of ``stage`` for
    ``config/demo-coron.yaml`` with ``step_defaults: jwst`` (``recommended`` False) or ``recommended``
    (as the Snakefile and workflow/rules/common.smk compute them)."""
    import copy

    import yaml
    from snakemake.utils import validate

    from webbflow.config import DETECTOR1_EXTRA_STEPS, deep_merge, load_modes, step_parameters

    user = deep_merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                      yaml.safe_load((REPO / "config" / "demo-coron.yaml").read_text()))
    user["step_defaults"] = "recommended" if recommended else "jwst"
    config = copy.deepcopy(user)
    validate(config, str(REPO / "config" / "schema.yaml"))  # fills the defaults, as the Snakefile does
    preset = load_modes(REPO / "config" / "modes", REPO / "config" / "schema.yaml")["coronagraphy"]
    if stage == "coron3":
        # the demo's layer (workflow/rules/coron3_common.smk, demo_coron3_steps): the star's flux on the
        # simulator's PSF template's stamp, for the contrast curve and the companion fit
        from astropy.table import Table

        row = Table.read(data / "truth" / "companion.ecsv", format="ascii.ecsv")[0]
        template = data / "truth" / "psf_template.fits"
        star_flux = float(row["star_flux"]) * float(row["photmjsr"]) * float(fits.getheader(template)["FLUXFRAC"])
        preset = deep_merge(preset, {"steps": {"coron3": {"klip": {"psf_template": str(template),
                                                                   "star_flux": star_flux}}}})
    params = step_parameters(config["steps"], stage, preset, user.get("steps"),
                             (user.get("mode_steps") or {}).get("coronagraphy"), recommended=recommended,
                             extra_steps=DETECTOR1_EXTRA_STEPS if stage == "detector1" else ())
    if stage == "detector1" and params["persistence"].get("skip", True):
        del params["persistence"]  # off: as the workflow passes it
    return params, preset["exp_types"]


def _coron_jobs(data, refs, who, served=False):
    """Per exposure the (stage, command) chain detector1 -> image2, and the coron3 (stage, command),
    of one pipeline: ``jwst``, ``ours-jwst`` (``step_defaults: jwst``) or ``ours-recommended`` (also
    ``before-jwst`` / ``before-recommended``: the same jobs, run with ``--before``'s source tree).
    ``served`` (ours): each job as ``(job type, keyword arguments)`` for the warm job server."""
    from webbflow.associations import coron3_associations, write_asn
    from webbflow.exposures import exposure_table
    from webbflow.oracle import coron3_command, detector1_command, image2_command
    from webbflow.refs import select_references
    from webbflow.refs.select import CORON3_REFTYPES, IMAGE2_REFTYPES

    out = data / who
    stage1, stage2, stage3 = out / "detector1", out / "image2", out / "coron3"
    for d in (stage1, stage2, stage3):
        d.mkdir(parents=True, exist_ok=True)
    (asn,) = coron3_associations(exposure_table(data / "uncal"))
    asn_path = write_asn(asn, stage2 / "coron3_asn.json", suffix="calints")
    if who != "jwst":
        recommended = who.endswith("-recommended")
        (steps1, exp_types), (steps2, _), (steps3, _) = (_coron_steps(s, recommended, data)
                                                         for s in ("detector1", "image2", "coron3"))

    def ours(stage, *args, **kwargs):
        if served:  # the same call, by keyword (bench_job_overhead.run_served passes keywords only)
            import inspect

            from webbflow import jobs

            bound = inspect.signature(getattr(jobs, stage)).bind(*args, **kwargs)
            return (stage, json.loads(json.dumps(bound.arguments)))
        return [sys.executable, "-c", _CORON_JOB, stage, *(json.dumps(a) for a in (*args, kwargs))]

    chains = []
    for uncal in sorted((data / "uncal").glob("*_uncal.fits")):
        root = uncal.name.removesuffix("_uncal.fits")
        header = fits.getheader(uncal)
        refs1 = select_references(header, refs)
        refs2 = {t: p for t, p in select_references(header, refs, None, IMAGE2_REFTYPES).items() if p}
        rateints, calints = stage1 / f"{root}_rateints.fits", stage2 / f"{root}_calints.fits"
        if who == "jwst":
            chains.append([("detector1", detector1_command(uncal, refs1, stage1)),
                           ("image2", image2_command(rateints, refs2, stage2))])
        else:
            paths = {k: (str(v) if v else None) for k, v in refs1.items()}
            chains.append([("detector1", ours("detector1", str(uncal), str(stage1 / f"{root}_rate.fits"),
                                              str(rateints), steps1, paths, list(exp_types),
                                              one_over_f=str(stage1 / f"{root}_onef.ecsv"))),
                           ("image2", ours("image2", str(rateints), str(calints), steps2,
                                           {k: str(v) for k, v in refs2.items()}))])
    first = fits.getheader(data / "uncal" / f"{asn.members[0]}_uncal.fits")
    psfmask = {"psfmask": str(select_references(first, refs, None, CORON3_REFTYPES)["psfmask"])}
    if who == "jwst":
        return chains, ("coron3", coron3_command(asn_path, psfmask, stage3))
    klip = steps3["klip"]
    suffixes = [("psfstack", "fits"), ("i2d", "fits")] + ([("klipsub", "fits")] if klip.get("sectors") else [])
    if klip.get("contrast"):
        suffixes += [("contrast", "ecsv"), ("contrast", "png")]
    if klip.get("companions"):
        suffixes.append(("companions", "ecsv"))
    products = {f"{s}_{e}": str(stage3 / f"{asn.product}_{s}.{e}") for s, e in suffixes}
    return chains, ("coron3", ours("coron3", str(asn_path), str(stage3 / "exposures" / asn.product), products,
                                   steps3, psfmask, shifts=str(stage3 / f"{asn.product}_psfshifts.ecsv")))


def _workflow_envs(rules, config, env=None):
    """{rule: the environment the workflow gives its jobs} (``bench_job_overhead.workflow_env``: ``env``,
    default this checkout's sources first, with the thread counts of the rule's ``threads`` under
    ``config``), so that our jobs' numba, BLAS and own threads are what a workflow run uses, not every
    core of the machine."""
    return {rule: workflow_env(rule, env, config) for rule in rules}


def _run_coron_pipeline(data, refs, who, cores=2, env=None, served=False):
    """Run one pipeline's jobs: the per-exposure chains ``cores`` at a time, then coron3 (``env``: the
    jobs' environment, e.g. another source tree on PYTHONPATH; ``served``: ours through the warm job
    server, whose start is counted once in the wall and CPU)."""
    chains, coron3 = _coron_jobs(data, refs, who, served=served)
    stages = ("detector1", "image2", "coron3")
    envs = {s: env for s in stages} if who == "jwst" else _workflow_envs(stages, workflow_config(REPO / "config" / "demo-coron.yaml"), env)
    rows = []

    def run_chain(chain):
        for job, cmd in chain:
            rows.append(_run(job, cmd, data, env=envs[job]))

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    # the kinds the workflow's onstart passes for these jobs (job_kind: an image2 job writing calints is
    # image2_ints, which needs no ImageModel warm-up; a coron3 job drawing no contrast plot is
    # coron3_fits, which needs no matplotlib; a --before tree's server: the kinds it knows)
    if served:
        from webbflow.jobserver import job_kind

        kind3 = job_kind("coron3", coron3[1][1]["products"].values()) if who.startswith("ours-") else "coron3"
        start = start_server(data, jobs=("detector1", "image2_ints", kind3), env=envs["detector1"])
    else:
        start = {"wall": 0.0, "cpu": 0.0}
    try:
        with ThreadPoolExecutor(cores) as pool:
            list(pool.map(run_chain, chains))  # list(): re-raises a failed job's error
        rows.append(_run("coron3", coron3[1], data, env=envs["coron3"]))
    finally:
        if served:
            _server_life(start, stop_servers(data))
    elapsed = time.perf_counter() - t0
    per = {s: sum(r["wall_s"] for r in rows if r["job"] == s) for s in stages}
    cpu = {s: sum(r["cpu_s"] for r in rows if r["job"] == s) for s in stages}
    rss = {s: max(r["peak_rss_mib"] for r in rows if r["job"] == s) for s in stages}
    biggest = max(rows, key=lambda r: r["peak_rss_mib"])
    out = {"wall_s": elapsed, "cpu_s": start["cpu"] + sum(cpu.values()), "stage_wall_s": per, "stage_cpu_s": cpu,
           "stage_peak_rss_mib": rss, "peak_rss_mib": biggest["peak_rss_mib"], "peak_rss_job": biggest["job"],
           "load_before": load, "load_after": os.getloadavg()[0], "jobs": rows}
    if served:
        out.update(_served_summary(rows, start))
    return out


def bench_coron(args):
    """``--mode coron``: the demo-coron program, ours (jwst line and recommended) against jwst 3.0."""
    from webbflow.simulate import run_preset

    data = Path(args.workdir or REPO / "benchmarks" / ".work" / "coron-demo").resolve()
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"coronagraphy demo benchmark on {machine}, {dt.date.today()}", flush=True)
    kernels = compiled_kernels()
    print(f"compiled kernels (webbflow.aot): {kernels}", flush=True)
    if not (data / "uncal").is_dir():
        print("simulating demo-coron ...", flush=True)
        run_preset("demo-coron", data)
    refs = data / "refs"
    before = ["before-jwst", "before-recommended"] if args.before else []
    pipelines = ["ours-jwst", "ours-recommended"] + before + ([] if args.no_jwst else ["jwst"])
    envs = {w: {**os.environ, "PYTHONPATH": str(Path(args.before).resolve())} for w in before}
    # warm numba's cache and the interpreters' imports (first exposure's detector1), as production finds them
    config = workflow_config(REPO / "config" / "demo-coron.yaml")
    for who in ("ours-jwst", *pipelines[2:]):
        chains, _ = _coron_jobs(data, refs, who)
        env = envs.get(who) if who == "jwst" else workflow_env("detector1", envs.get(who), config)
        measure(chains[0][0][1], data, env=env)
        shutil.rmtree(data / who)
    totals = {}
    for who in pipelines:
        shutil.rmtree(data / who, ignore_errors=True)
        served = args.server and who != "jwst"  # --before's tree through its own server too
        t = totals[who] = _run_coron_pipeline(data, refs, who, env=envs.get(who), served=served)
        per, cpu, rss = t["stage_wall_s"], t["stage_cpu_s"], t["stage_peak_rss_mib"]
        print(f"  {who:18s}: end to end {t['wall_s']:6.1f} s, CPU {t['cpu_s']:6.1f} s (load {t['load_before']:.1f} -> "
              f"{t['load_after']:.1f}); job walls / CPU / peak RSS: "
              + ", ".join(f"{s} {per[s]:.1f} / {cpu[s]:.1f} s / {rss[s]:.0f} MiB" for s in per)
              + f"; largest job {t['peak_rss_mib']:.0f} MiB ({t['peak_rss_job']})", flush=True)
    result = {"date": str(dt.date.today()), "machine": machine, "compiled_kernels": kernels, "mode": "coron",
              "exposures": len(list((data / "uncal").glob("*_uncal.fits"))), "cores": 2, "server": args.server,
              "pipelines": totals}
    if "jwst" in totals:
        jw = totals["jwst"]
        for who in [w for w in pipelines if w != "jwst"]:
            t = totals[who]
            ratios = {s: jw["stage_wall_s"][s] / t["stage_wall_s"][s] for s in jw["stage_wall_s"]}
            ratios["end_to_end"] = jw["wall_s"] / t["wall_s"]
            ratios["cpu"] = jw["cpu_s"] / t["cpu_s"]
            ratios["coron3_cpu"] = jw["stage_cpu_s"]["coron3"] / t["stage_cpu_s"]["coron3"]
            ratios["memory"] = t["peak_rss_mib"] / jw["peak_rss_mib"]
            result.setdefault("ratios", {})[who] = ratios
            print(f"  jwst/{who} wall: detector1 {ratios['detector1']:.1f}x, image2 {ratios['image2']:.1f}x, "
                  f"coron3 {ratios['coron3']:.1f}x (CPU {ratios['coron3_cpu']:.1f}x), end to end "
                  f"{ratios['end_to_end']:.1f}x (CPU {ratios['cpu']:.1f}x); "
                  f"{who}/jwst largest-job peak memory {ratios['memory']:.2f}")
            if "peak_pss_mib" in t:
                ratios["memory_pss"] = t["peak_pss_mib"] / jw["peak_rss_mib"]
                ratios["memory_uss"] = t["peak_uss_mib"] / jw["peak_rss_mib"]
                print(f"    through the job server: {who}/jwst largest job PSS {ratios['memory_pss']:.2f}, "
                      f"USS {ratios['memory_uss']:.2f} (ours at the job's end, jwst's peak RSS)")
    return _write_result(result, args.out, "coron-demo")


if __name__ == "__main__":
    sys.exit(main())
