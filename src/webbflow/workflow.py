"""The job adapter: what every ``workflow/scripts/*.py`` does around its one library call.

A script reads ``snakemake.input/params/output`` and hands a :mod:`webbflow.jobs`
function, by name, to :func:`run_job`, which opens the job's log, runs it, and turns bad
input into one line.  Standard library only at import time, and not :mod:`logging` either (a
job that the warm server runs never logs in this process): every job pays it.
"""

import fcntl
import os
import sys
from pathlib import Path

# light: webbflow.io loads its readers on first use; webbflow.jobmode is the standard library only
from webbflow.io.errors import InputError
from webbflow.jobmode import wanted

__all__ = ["LOG_FORMAT", "lock_results_dir", "run_job"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

JOB_STATS_ENV = "WEBBFLOW_JOB_STATS"
"""Environment variable naming a file to which every job appends one JSON line of its own wall time
and peak memory (``benchmarks/bench_program.py``); unset, nothing is written."""


def run_job(snakemake, name, fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` as the Snakemake job ``name``, logging into the job's log file.

    Parameters
    ----------
    snakemake : snakemake.script.Snakemake
        The object Snakemake injects into a script; only ``snakemake.log[0]``
        (the job must declare a ``log:``), ``snakemake.config["jobs"]["warm_server"]``, and
        ``snakemake.rule`` and ``snakemake.output`` (the job's kind for the server,
        :func:`webbflow.jobserver.job_kind`; an object without them: a job of no known kind)
        are used.  With the warm server on (:func:`webbflow.jobmode.wanted`: by default for a
        local run) the job runs in a child of :mod:`webbflow.jobserver` with the same log,
        console, outcome and exit status; the server not reachable, it runs in this process.
    name : str
        The job's name in messages and the logger ``webbflow.<name>``.
    fn : callable or str
        The job, e.g. :func:`webbflow.jobs.detector1`, or its name ``"webbflow.jobs:detector1"``
        (module, function): a job that the warm server runs is not imported in this process.
    *args, **kwargs
        Passed to ``fn``.

    Returns
    -------
    object
        What ``fn`` returns (through the warm server: when it is plain data, else None).

    Raises
    ------
    SystemExit
        On :class:`~webbflow.io.errors.InputError` (bad input or references):
        its message, one line, is logged as an error and the exit message is
        ``webbflow <name> failed: <error>`` (non-zero status), with no traceback
        from deep inside the library.
    Exception
        Anything else is re-raised after its traceback is logged.
    """
    log_path = str(snakemake.log[0])
    if wanted(getattr(snakemake, "config", None)):
        from webbflow import jobserver  # standard library only

        rule = getattr(snakemake, "rule", None)
        kind = jobserver.job_kind(str(rule), getattr(snakemake, "output", ())) if rule else None
        outcome = jobserver.submit(name, log_path, fn, args, kwargs, log=_note(log_path, name), kind=kind)
        if outcome is not None:
            if os.environ.get(JOB_STATS_ENV):
                _append_job_stats(os.environ[JOB_STATS_ENV], name, log_path, outcome.result)
            return outcome.finish(name)
    if isinstance(fn, str):
        fn = _function(fn)  # before the log is set up, as a script importing the job module first
    import logging

    # The job's own log file (INFO and above); force: a library import may have set up logging already.
    logging.basicConfig(filename=log_path, level=logging.INFO, format=LOG_FORMAT, force=True)
    log = logging.getLogger(f"webbflow.{name}")
    try:
        result = fn(*args, **kwargs)
    except InputError as exc:
        log.error("%s", exc)
        sys.exit(f"webbflow {name} failed: {exc}")
    except Exception:
        log.exception("%s failed", name)
        raise
    if os.environ.get(JOB_STATS_ENV):
        _append_job_stats(os.environ[JOB_STATS_ENV], name, log_path)
    return result


def _function(name):
    """The function ``"module:qualname"`` names."""
    import importlib

    module, _, qualname = name.partition(":")
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    return fn


def _note(log_path, name):
    """``note(message)``: a warning line in the job's log."""
    def note(message):
        import logging

        logging.basicConfig(filename=log_path, level=logging.INFO, format=LOG_FORMAT, force=True)
        logging.getLogger(f"webbflow.{name}").warning("%s", message)

    return note


def _append_job_stats(path, name, log, child=None):
    """Append ``{"job", "log", "wall_s", "peak_rss_mib", "pss_mib", "uss_mib"}`` of this job to ``path``
    (one JSON line).

    The peak is the process's own ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: Snakemake starts a
    job through ``bash -c`` from its own (large) process, and Linux carries the parent's high-water
    mark into ``ru_maxrss`` across that fork and exec, whereas ``VmHWM`` belongs to the job's memory
    map alone.  PSS and USS are those at the job's end (:func:`webbflow.jobserver.memory_figures`).
    The wall time runs from the process's start (``/proc/self/stat``) to now.  ``child``: the memory
    figures of the job's child in the warm job server (then ``"server": true``, and the peak RSS
    counts the pages the child shares with the server; USS does not), with the server's anonymous
    memory the child mapped from its fork (``inherited_mib``: part of that peak, whatever the job
    did), the child's own wall and CPU seconds and the server's pid.
    """
    import json

    from webbflow.jobserver import memory_figures

    memory = memory_figures() if child is None else {
        k: child[k] for k in ("peak_rss_mib", "pss_mib", "uss_mib", "inherited_mib", "child_wall_s", "child_cpu_s",
                              "server_pid")
        if k in child}
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    wall = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    line = json.dumps({"job": name, "log": log, "wall_s": round(wall, 3), **memory,
                       **({"server": True} if child is not None else {})})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write: lines of parallel jobs do not interleave
    finally:
        os.close(fd)


RESULTS_LOCK = ".webbflow.lock"


def lock_results_dir(results_dir):
    """Hold ``<results_dir>/.webbflow.lock`` for the life of this process (the run's main process).

    snakemake locks a working folder against a second run, not a ``results_dir`` that two working
    folders share; this lock does.  It is an advisory ``flock`` on an open file, so the kernel
    drops it when the process ends, however it ends: a killed run never leaves it behind.

    Parameters
    ----------
    results_dir : str or os.PathLike

    Returns
    -------
    file object
        Keep it open: closing it releases the lock.

    Raises
    ------
    InputError
        When another live process holds it (named with its pid and working folder).
    """
    path = Path(results_dir) / RESULTS_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InputError(Path(results_dir), f"another run is writing this results_dir ({holder})",
                         "wait for it to finish, or give this run another results_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, working folder {os.getcwd()}\n")
    handle.flush()
    return handle
