#!/usr/bin/env python
"""Fixed cost of every workflow job type: import, wall and CPU of one fresh process per job.

Issue 18 part 2 (target: a SUB160 job of any stage <= 0.6 s of wall time).  A small job (a SUB64 time-series
segment, a SUB160 demo exposure) is almost all fixed cost: the interpreter, imports (gwcs,
astropy.modeling, stdatamodels, numba), ASDF extension loading on open/write.  This benchmark simulates a
few small inputs, then runs each job type as the workflow runs it (the job function in a fresh ``python``
process, after the imports Snakemake's ``script:`` preamble makes) and prints, per job:

- ``preamble``: CPU of Snakemake's script preamble (``snakemake.logging``, ``snakemake.iocontainers``);
- ``import``: CPU to import the job's stage module (what ``-X importtime`` breaks down);
- ``run``: CPU of the job itself (reading, computing, writing);
- ``wall``: the whole process, start to exit, as the benchmark sees it (interpreter start included);
- ``CPU``: ``getrusage`` user + system of the whole process (numba's warm-up thread included);
- ``RSS``: the process's peak resident memory (its own ``VmHWM``: ``ru_maxrss`` would carry the
  benchmark's own peak across the fork);
- ``/0.6 s``: the wall against the issue's 0.6 s target.

Every job runs ``--repeat`` times (default 2, the first warms numba's cache as a production run finds it)
and the run of the smallest CPU total is kept.  On a shared machine the CPU columns are the ones to
compare; the load average before and after is printed and saved.  ``--profile N`` prints each job's N
most expensive functions (cProfile, cumulative) as well.

``--server`` runs every job through the warm job server as well (:mod:`webbflow.jobserver`, a client
process as a stage rule's ``shell:`` command starts it with ``jobs.warm_server`` on: an adapter script on
its job file, :mod:`webbflow.jobclient`), once with a server started for it (``cold``:
the job waits for the server's imports) and ``--repeat`` times with it warm, and prints per job: the
client's wall (what Snakemake waits for) and CPU, the child's wall and CPU, and the child's peak RSS
(``VmHWM``, which counts the pages it shares with the server), PSS and USS (its private pages) at its end.

Usage::

    python benchmarks/bench_job_overhead.py [--repeat 2] [--profile 25] [--jobs detector1,image2] [--server]

Results: ``benchmarks/results/<date>-<host>-job-overhead.json``.
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TARGET_WALL_S = 0.6
"""Issue 18's target wall time of a small job."""

# One job in a fresh process: argv = "module:function", stage module, profile rows, the job's JSON kwargs.
_CHILD = r"""
import resource, sys, time, json
t0 = time.process_time()
from snakemake.logging import logger  # what Snakemake's script preamble imports before the script
from snakemake.iocontainers import Snakemake
t1 = time.process_time()
target, module, top, kwargs = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
import importlib
fn = getattr(importlib.import_module(target.split(":")[0]), target.split(":")[1])
importlib.import_module(module)
t2 = time.process_time()
if top:
    import cProfile, pstats
    prof = cProfile.Profile()
    prof.runcall(fn, **kwargs)
    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(top)
else:
    fn(**kwargs)
t3 = time.process_time()
ru = resource.getrusage(resource.RUSAGE_SELF)
status = open("/proc/self/status").read().splitlines()
hwm = next((int(x.split()[1]) / 1024 for x in status if x.startswith("VmHWM:")), ru.ru_maxrss / 1024)
print(json.dumps({"start": t0, "preamble": t1 - t0, "import": t2 - t1, "run": t3 - t2,
                  "total": ru.ru_utime + ru.ru_stime, "rss_mib": hwm}))
"""

# One job as a stage rule runs it with the warm job server on (webbflow.jobserver): the rule's shell:
# command `python workflow/scripts/<job>.py <job file>` (webbflow.jobclient), i.e. an adapter script
# with the same start (sys.path, webbflow.jobclient, webbflow.workflow), its snakemake object read from
# the job file, then run_job with the job function's name, which hands the job to a child of the
# server.  The job file (webbflow.jobclient.write_job) holds the job's name, function and keyword
# arguments as params.  A source tree without webbflow.jobclient (a --before tree of main before
# issue 14's client) ran its stage rules as script: jobs: Snakemake's preamble's imports, then the
# job module and run_job with the function, as its adapters did.
_SERVED = r"""
import os
import sys

sys.path.append(os.path.abspath(__file__ + "/../../../src"))
try:
    from webbflow.jobclient import snakemake_object
except ImportError:  # an older tree: a script: job
    import importlib, pickle
    from snakemake.logging import logger
    from snakemake.iocontainers import Snakemake
    from types import SimpleNamespace
    from webbflow.workflow import run_job
    with open(sys.argv[1], "rb") as handle:
        job = pickle.load(handle)
    name, function, kwargs = job["params"][0]
    module, _, qualname = function.partition(":")
    run_job(SimpleNamespace(log=job["log"][0], config=job["config"]), name,
            getattr(importlib.import_module(module), qualname), **kwargs)
else:
    from webbflow.workflow import run_job

    sm = snakemake_object(globals())
    run_job(sm, sm.params.name, sm.params.function, **sm.params.kwargs)
"""


_PRODUCTS = {"detector1": ("rate", "rateints"), "image2": ("cal",), "spec2": ("calints", "x1dints"),
             "tso3": ("x1dints", "phot"), "image3": ("i2d", "cat", "segm")}
"""job function -> the keyword arguments that name its products."""


def _served_job_file(work, name, function, log, kwargs):
    """The job file of one served job (:func:`webbflow.jobclient.write_job`, as a stage rule writes it):
    the job's name, function and keyword arguments as its params, and the rule and products the
    workflow's job would have (its kind for the server: :func:`webbflow.jobserver.job_kind`)."""
    from webbflow.jobclient import Names, write_job

    params = Names([name, function, kwargs], {"name": name, "function": function, "kwargs": kwargs})
    rule = "tso3_phot" if name == "tso3" and kwargs.get("phot") else name
    products = [kwargs[k] for k in _PRODUCTS.get(name, ()) if kwargs.get(k)]
    if name == "coron3":  # its products by name: a dict (the rule's outputs; coron3_fits without a plot)
        products = [str(p) for p in (kwargs.get("products") or {}).values()]
    namespace = {"rule": rule, "threads": 1, "params": params, "log": Names([str(log)]), "output": Names(products),
                 **{field: Names() for field in ("input", "wildcards", "resources")}}
    return write_job(namespace, {}, folder=Path(work) / "jobs")


# job type -> (job function, stage module it imports, input)
JOBS = {
    "detector1-tso": ("webbflow.jobs:detector1", "webbflow.stages.detector1", "SUB64P segment, 4 ints"),
    "detector1": ("webbflow.jobs:detector1", "webbflow.stages.detector1", "SUB160, 1 int"),
    "image2": ("webbflow.jobs:image2", "webbflow.stages.image2", "SUB160 rate"),
    "image2-tso": ("webbflow.jobs:image2", "webbflow.stages.image2", "SUB64P rateints"),
    "spec2": ("webbflow.jobs:spec2", "webbflow.stages.spec2", "SUBGRISM64 segment"),
    "tso3-phot": ("webbflow.jobs:tso3", "webbflow.stages.tso3", "2 SUB64P segments"),
    "tso3-grism": ("webbflow.jobs:tso3", "webbflow.stages.tso3", "2 SUBGRISM64 segments"),
    "image3": ("webbflow.jobs:image3", "webbflow.stages.image3", "4 x SUB160"),
    "coron3": ("webbflow.jobs:coron3", "webbflow.stages.coron3", "SUB320 1 sci + 1 psf, 2 ints"),
    "qa_exposures": ("webbflow.report.jobs:qa_exposures", "webbflow.report.jobs", "4 SUB160 rate + cal"),
    "qa_mosaics": ("webbflow.report.jobs:qa_mosaics", "webbflow.report.jobs", "1 SUB160 i2d + catalog"),
}
# inputs of later jobs, made once and not measured (the coronagraphic exposures' stage 1 and 2)
_HELPERS = {"detector1-coron": "detector1", "image2-coron": "image2"}


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


def _simulate_coron(work):
    """One science roll and one PSF-reference dither of ``demo-coron`` (2 integrations x 3 groups,
    SUB320A335R), with their stage-2 references and PSFMASK (simulated once)."""
    from webbflow.simulate.presets import coron_specs, run_specs

    coron = work / "coron"
    if not (coron / "uncal").is_dir():
        specs = coron_specs(nints=2, ngroups=3)
        run_specs([specs[0], specs[2]], coron)
    return coron


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
            # the report's jobs on this association: QA of its exposures, preview of its mosaic
            roots = [u.name.removesuffix("_uncal.fits") for u in uncals]
            out.append(("qa_exposures", True, {
                "rates": [str(prod / f"{r}_rate.fits") for r in roots],
                "cals": [str(prod / f"{r}_cal.fits") for r in roots], "rate_dir": str(prod / "qa" / "detector1"),
                "cal_dir": str(prod / "qa" / "image2"), "rows_json": str(prod / "qa" / "qa_rows.json"),
                "out_html": str(prod / "qa" / "qa_table.html"), "out_csv": str(prod / "qa" / "qa_table.csv")}))
            out.append(("qa_mosaics", True, {"i2ds": [str(prod / f"{p}_i2d.fits")],
                                             "cats": [str(prod / f"{p}_cat.ecsv")],
                                             "out_dir": str(prod / "qa" / "preview")}))
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
    out += _coron_jobs(_simulate_coron(work))
    return out


def _coron_jobs(data):
    """detector1 and image2 of the coronagraphic exposures (inputs), then their coron3 job."""
    from astropy.io import fits

    from webbflow.associations import coron3_associations, write_asn
    from webbflow.exposures import exposure_table
    from webbflow.refs.select import CORON3_REFTYPES, IMAGE2_REFTYPES

    prod = data / "products"
    prod.mkdir(exist_ok=True)
    out = []
    for uncal in sorted((data / "uncal").glob("*_uncal.fits")):
        root = uncal.name.removesuffix("_uncal.fits")
        rate, rateints = prod / f"{root}_rate.fits", prod / f"{root}_rateints.fits"
        out.append(("detector1-coron", False, {
            "uncal": str(uncal), "rate": str(rate), "rateints": str(rateints), "steps": {},
            "exp_types": [fits.getval(uncal, "EXP_TYPE")], "references": _refs(uncal, data / "refs")}))
        out.append(("image2-coron", False, {
            "rate": str(rateints), "cal": str(prod / f"{root}_calints.fits"), "steps": {},
            "references": {k: v for k, v in _refs(uncal, data / "refs", IMAGE2_REFTYPES).items() if v}}))
    (asn,) = coron3_associations(exposure_table(data / "uncal"))
    asn_path = prod / "coron3_asn.json"
    write_asn(asn, asn_path, suffix="calints")
    uncal = min((data / "uncal").glob("*_uncal.fits"))
    out.append(("coron3", True, {"asn": str(asn_path), "exposures": str(prod), "products": {}, "steps": {},
                                 "references": _refs(uncal, data / "refs", CORON3_REFTYPES)}))
    return out


def _grism_refs(data):
    from webbflow.simulate import optics
    from webbflow.simulate.grism import write_grism_references
    from webbflow.simulate.presets import tso_grism_specs

    spec = tso_grism_specs(n_segments=2, ints_per_segment=4)[0]
    return write_grism_references(data, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                                  optics.pixar_a2(spec.detector))


def ours_env():
    """This process's environment with this checkout's sources first on PYTHONPATH: where our jobs
    import webbflow from (this tree, whatever the venv installed)."""
    # no empty entry when PYTHONPATH is unset: Python would read it as the current directory
    paths = [str(REPO / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


_AOT_CHECK = """
import sys
from webbflow import aot
if not aot.load():
    aot.build()
sys.exit(0 if aot.load() else 3)
"""


def compiled_kernels(env=None):
    """Make sure :mod:`webbflow.aot`'s compiled kernels exist for this tree before our jobs are timed
    (built now when missing, as the workflow's first run builds them for the next), so that a benchmark
    measures what a run after the first runs.

    Parameters
    ----------
    env : dict, optional
        Our jobs' environment (default :func:`ours_env`).

    Returns
    -------
    str
        ``"on"``, ``"off"`` (``WEBBFLOW_AOT=0``: numba's JIT) or ``"unavailable (<reason>)"``.
    """
    env = env or ours_env()
    if env.get("WEBBFLOW_AOT", "1") == "0":
        return "off"
    done = subprocess.run([sys.executable, "-c", _AOT_CHECK], env=env, capture_output=True, text=True)
    if done.returncode == 0:
        return "on"
    reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
    return f"unavailable ({reason[0]})"


def workflow_config(*configfiles):
    """The workflow's config as a run with ``--configfile CONFIGFILES`` sees it.

    Parameters
    ----------
    *configfiles : path-like
        Config files merged over ``config/config.yaml`` (which the Snakefile loads first), in order.

    Returns
    -------
    dict
        The merged config with every default filled from ``config/schema.yaml``, as the Snakefile's
        ``validate`` fills them.
    """
    import yaml
    from snakemake.utils import validate

    from webbflow.config import deep_merge

    config = {}
    for path in (REPO / "config" / "config.yaml", *configfiles):
        config = deep_merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


def rule_threads(rule, config=None):
    """The ``threads`` the workflow gives a job of ``rule``.

    Parameters
    ----------
    rule : str
        A rule of ``workflow/rules/*.smk`` (defined at the file's top level).
    config : dict, optional
        The run's config (:func:`workflow_config`; default: the shipped one's).

    Returns
    -------
    int
        The rule's ``threads:`` directive evaluated on ``config`` as Snakemake evaluates it (e.g.
        ``config["threads"]["detector1"]``), or Snakemake's default 1 where the rule has none.

    Raises
    ------
    KeyError
        If no rule file defines ``rule``.
    """
    import re

    block = re.compile(rf"^rule {re.escape(rule)}:\n((?:[ \t].*\n|[ \t]*\n)*)", re.M)
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        found = block.search(path.read_text())
        if found:
            threads = re.search(r"^[ \t]+threads:(.*)$", found.group(1), re.M)
            if threads is None:
                return 1
            # the workflow's own expression, as Snakemake evaluates it (with the config in scope)
            config = workflow_config() if config is None else config
            return int(eval(threads.group(1), {"__builtins__": {}}, {"config": config}))
    raise KeyError(f"no rule {rule!r} in workflow/rules/*.smk")


def workflow_env(rule, env=None, config=None):
    """The environment the workflow gives a job of ``rule``: the one every benchmark runs our jobs in
    outside Snakemake.

    Snakemake exports a job's ``threads`` as ``OMP_NUM_THREADS`` and the like
    (:data:`webbflow.jobserver.THREAD_ENV`), which bound numba's, BLAS's and our own thread pools; a job
    run without them would take every core of the machine, which no workflow job does.

    Parameters
    ----------
    rule : str
        The job's rule (:func:`rule_threads`).
    env : dict, optional
        The environment to add them to (e.g. another source tree's on PYTHONPATH); default
        :func:`ours_env`.
    config : dict, optional
        The run's config (:func:`workflow_config`; default: the shipped one's).

    Returns
    -------
    dict
        ``env`` with every thread variable set to the rule's threads.
    """
    from webbflow.jobserver import THREAD_ENV

    threads = str(rule_threads(rule, config))
    return {**(ours_env() if env is None else env), **{name: threads for name in THREAD_ENV}}


def job_rule(job):
    """The workflow rule of one of this benchmark's job types (``tso3-phot`` -> ``tso3_phot``,
    ``detector1-tso`` -> ``detector1``)."""
    return {"tso3-phot": "tso3_phot", "tso3-grism": "tso3"}.get(job, job.split("-")[0])


def run_one(job, kwargs, top=0):
    """Run one job in a fresh process, in the environment the workflow gives its rule's jobs; its CPU
    figures, peak memory and wall time (dict)."""
    func, module = JOBS[job][:2] if job in JOBS else JOBS[_HELPERS[job]][:2]
    env = workflow_env(job_rule(job))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, func, module, str(top), json.dumps(kwargs)],
                          capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{job} failed:\n{proc.stderr[-3000:]}")
    if top:
        print(proc.stderr[proc.stderr.find("   ncalls"):][:6000])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": wall}


def served_env(work, stats, env=None):
    """The environment of a job run as a client of the benchmark's own warm job server: ``env`` as it
    is (e.g. another checkout's sources on its PYTHONPATH) or by default this process's with this
    checkout's sources first; ``WEBBFLOW_JOB_SERVER=wait``, the job's figures appended to ``stats`` and
    the private server folder of ``work``."""
    if env is None:
        env = ours_env()
    return {**env, "WEBBFLOW_JOB_SERVER": "wait", "WEBBFLOW_JOB_STATS": str(stats),
            "WEBBFLOW_JOB_SERVER_DIR": str(_server_dir(work)), "WEBBFLOW_JOB_SERVER_IDLE": "300"}


def _wait_rusage(proc):
    """Wait for ``proc`` (a Popen); its exit status and CPU seconds (user + system) alone (``wait4``:
    right when other threads run jobs at the same time, unlike ``RUSAGE_CHILDREN`` differences)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def start_server(work, jobs=None, env=None):
    """Start the benchmark's job server (none running before: those of this benchmark are stopped) and
    wait until it listens, as the first job of a run waits for it: its wall time (the client's start
    included), its CPU seconds (the starting client's and the server's own, at the point it listens) and
    the server's resident memory then (dict).

    ``jobs``: the job kinds (the workflow's rule names) the server warms for, as the workflow's onstart
    passes the planned ones (:func:`webbflow.jobserver.start`; None: every kind).  ``env``: the
    environment the jobs run in (default this process's; :func:`served_env` adds the server's settings).
    """
    import tempfile

    from bench_detector1 import compile_ours

    compile_ours()  # as measure() does before our first timed process
    stop_servers(work)
    Path(work).mkdir(parents=True, exist_ok=True)
    # an older checkout's start() (a --before tree) takes no scope: it warms for every kind
    code = ("import json, sys; from webbflow import jobserver; jobs = json.loads(sys.argv[1])\n"
            "try:\n    print(jobserver.start(jobs=jobs))\nexcept TypeError:\n    print(jobserver.start())")
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(None if jobs is None else sorted(jobs))],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=served_env(work, os.devnull, env))
        sock = proc.stdout.read().strip()
        code, client_cpu = _wait_rusage(proc)
        wall = time.perf_counter() - t0
        if code:
            err.seek(0)
            raise RuntimeError(f"the job server did not start:\n{err.read()[-3000:]}")
    pid = next(int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _cmdline_has(d, sock))
    _SERVERS.setdefault(str(work), set()).add(pid)
    server_cpu = _process_cpu(pid)
    status = (Path("/proc") / str(pid) / "status").read_text().splitlines()
    rss = next(int(x.split()[1]) / 1024 for x in status if x.startswith("VmRSS:"))
    return {"wall": wall, "cpu": client_cpu + server_cpu, "client_cpu": client_cpu, "server_cpu": server_cpu,
            "rss_mib": rss, "pid": pid}


def _process_cpu(pid):
    """The CPU seconds (user + system) process ``pid`` has used itself (not its children); 0 if gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline_has(proc_dir, text):
    """Whether the process of ``/proc/<pid>`` has ``text`` as one of its arguments (gone: no)."""
    try:
        return text in (proc_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False


def run_served(job, kwargs, work, cold=False, env=None):
    """Run one job as a client of the warm job server (``WEBBFLOW_JOB_SERVER=wait``): the client's wall
    and CPU (``wait4`` of the client process: the server is not its child), and the child's wall,
    CPU and memory figures (from the ``WEBBFLOW_JOB_STATS`` line the client appends).  ``cold``: the
    server is stopped first, so the job waits for a new one to import and warm up.  Safe to call from
    several threads at once (each call has its own stats file and log).  ``env``: as for
    :func:`served_env`, by default the environment the workflow gives the job's rule
    (:func:`workflow_env`)."""
    import threading

    from bench_detector1 import compile_ours

    compile_ours()  # as measure() does before our first timed process (a cold run starts the server)
    func = JOBS[job][0] if job in JOBS else JOBS[_HELPERS[job]][0]
    if env is None:
        env = workflow_env(job_rule(job))
    tag = threading.get_ident()
    stats, log = work / f"served-stats-{tag}.jsonl", work / f"served-{tag}.log"
    stats.unlink(missing_ok=True)
    if cold:
        stop_servers(work)
    t0 = time.perf_counter()
    script = Path(work) / "served_job.py"  # as a rule's adapter script: run as a file, not with -c
    if not script.exists() or script.read_text() != _SERVED:
        script.write_text(_SERVED)
    job_file = _served_job_file(work, job.split("-")[0], func, log, kwargs)
    with subprocess.Popen([sys.executable, str(script), job_file],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=served_env(work, stats, env)) as proc:
        output = proc.stdout.read()
        code, client_cpu = _wait_rusage(proc)
    wall = time.perf_counter() - t0
    if code:
        raise RuntimeError(f"{job} (served) failed:\n{output[-3000:]}")
    line = json.loads(stats.read_text().splitlines()[-1])
    stats.unlink()
    if not line.get("server"):
        raise RuntimeError(f"{job} did not run in the job server: {log.read_text()[-2000:]}")
    _SERVERS.setdefault(str(work), set()).add(line["server_pid"])
    return {"wall": wall, "client_cpu": client_cpu,
            "child_wall": line["child_wall_s"], "child_cpu": line["child_cpu_s"],
            "rss_mib": line["peak_rss_mib"], "pss_mib": line.get("pss_mib"), "uss_mib": line.get("uss_mib"),
            "inherited_mib": line.get("inherited_mib")}


_SERVERS = {}
"""str(work) -> the pids of the job servers started for ``work`` (its own folder)."""


def _server_dir(work):
    """A short private folder for the benchmark's servers (a socket path has ~100 characters at most)."""
    import hashlib
    import tempfile

    return Path(tempfile.gettempdir()) / f"wf-bench-{os.getuid()}-{hashlib.sha1(str(work).encode()).hexdigest()[:8]}"


def _exited(pid):
    """Whether process ``pid`` has ended: gone, or a zombie.  The server is detached (its starter has
    exited), so its parent is the machine's init, which may reap it seconds later (this project's
    sandbox: ~2 s): a zombie holds nothing, and waiting for the reaping put those seconds in our wall
    time (``bench_tso_demo --server`` stops the server inside the timed run)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop_servers(work):
    """Stop the job servers this benchmark started (their pids, as the jobs reported them); the CPU
    seconds they used themselves over their lives (start and forks; their children's are counted per
    job)."""
    import signal

    cpu, pids = 0.0, _SERVERS.pop(str(work), set())
    for pid in pids:
        cpu += _process_cpu(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for _ in range(100):  # wait until it is gone (its socket with it): the next job starts a new one
            if _exited(pid):
                break
            time.sleep(0.05)
    import shutil

    shutil.rmtree(_server_dir(work), ignore_errors=True)
    return cpu


def _row(job, r):
    """One line of the table."""
    return (f"{job:13s} {JOBS[job][2]:30s} {r['preamble']:5.2f} {r['import']:6.2f} {r['run']:5.2f} "
            f"{r['total']:6.2f} {r['wall']:6.2f}  {r['wall'] / TARGET_WALL_S:5.1f}x {r['rss_mib']:5.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per job; the smallest total is kept")
    parser.add_argument("--profile", type=int, default=0, help="print each job's N costliest functions")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job types to measure")
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work" / "job-overhead"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--server", action="store_true",
                        help="also run each job through the warm job server (webbflow.jobserver): cold and warm")
    args = parser.parse_args(argv)
    wanted = set(args.jobs.split(","))
    unknown = wanted - set(JOBS)
    if unknown:
        parser.error(f"unknown job types {sorted(unknown)}; known: {', '.join(JOBS)}")
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    load_before = os.getloadavg()
    print(f"job overhead benchmark on {machine}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
          f"load average {load_before[0]:.2f} (best of {args.repeat} by CPU; wall target {TARGET_WALL_S} s)",
          flush=True)
    rows, served = {}, {}
    for job, measured, kwargs in _job_list(Path(args.workdir)):
        if not measured or job not in wanted:  # an input of a later job: made once, not measured
            made = [kwargs[k] for k in ("rateints", "cal", "calints", "x1dints", "i2d", "phot") if k in kwargs]
            if not all(Path(p).exists() for p in made):
                run_one(job, kwargs)
            continue
        runs = [run_one(job, kwargs) for _ in range(args.repeat)]
        rows[job] = min(runs, key=lambda r: r["total"])
        if args.profile:
            run_one(job, kwargs, args.profile)
        if args.server:
            try:
                cold = run_served(job, kwargs, Path(args.workdir), cold=True)
                warm = min((run_served(job, kwargs, Path(args.workdir)) for _ in range(args.repeat)),
                           key=lambda r: r["client_cpu"] + r["child_cpu"])
            except BaseException:
                stop_servers(Path(args.workdir))  # no server of ours left behind
                raise
            served[job] = {"cold": cold, "warm": warm}
    load_after = os.getloadavg()
    header = (f"{'job':13s} {'input':30s} {'pre':>5s} {'import':>6s} {'run':>5s} {'CPU':>6s} {'wall':>6s}  "
              f"{'/0.6s':>6s} {'RSS':>5s}\n{'':44s}{'(CPU s: snakemake preamble, stage import, job)':s}  (s)"
              f"{'':9s}(MiB)")
    print(header)
    for job, r in rows.items():
        print(_row(job, r))
    if served:
        stop_servers(Path(args.workdir))
        print(f"\nthrough the warm job server (--server; wall target {TARGET_WALL_S} s): the client process (what "
              "Snakemake runs) and the job's child of the server, wall and CPU s; peak RSS / PSS / USS (MiB) of "
              "the child")
        print(f"{'job':13s} {'':5s} {'wall':>6s} {'/0.6s':>6s} {'cliCPU':>6s} {'chWall':>6s} {'chCPU':>6s}  "
              f"{'RSS':>5s} {'PSS':>5s} {'USS':>5s}   (in-process wall, CPU)")
        for job, r in served.items():
            for kind in ("cold", "warm"):
                x = r[kind]
                print(f"{job:13s} {kind:5s} {x['wall']:6.2f} {x['wall'] / TARGET_WALL_S:5.1f}x {x['client_cpu']:6.2f} "
                      f"{x['child_wall']:6.2f} {x['child_cpu']:6.2f}  {x['rss_mib']:5.0f} {x['pss_mib'] or 0:5.0f} "
                      f"{x['uss_mib'] or 0:5.0f}   ({rows[job]['wall']:.2f}, {rows[job]['total']:.2f})")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    result = {"date": str(dt.date.today()), "utc": f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M}",
              "machine": machine, "load_before": load_before, "load_after": load_after,
              "target_wall_s": TARGET_WALL_S, "repeat": args.repeat,
              "units": "CPU seconds (preamble, import, run, total), wall seconds, MiB",
              "jobs": {job: {**r, "input": JOBS[job][2]} for job, r in rows.items()},
              "served": served}
    out = Path(args.out) if args.out else (REPO / "benchmarks" / "results"
                                           / f"{dt.date.today()}-{platform.node()}-job-overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
