"""The job adapter: what every ``workflow/scripts/*.py`` does around its one library call.

A script reads ``snakemake.input/params/output`` and hands a :mod:`webbflow.jobs`
function to :func:`run_job`, which opens the job's log, runs it, and turns bad
input into one line.  Standard library only at import time: every job pays it.
"""

import fcntl
import logging
import os
import sys
from pathlib import Path

from webbflow.io.errors import InputError  # light: webbflow.io loads its readers on first use

__all__ = ["LOG_FORMAT", "lock_results_dir", "run_job"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_job(snakemake, name, fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` as the Snakemake job ``name``, logging into the job's log file.

    Parameters
    ----------
    snakemake : snakemake.script.Snakemake
        The object Snakemake injects into a script; only ``snakemake.log[0]``
        is used (the job must declare a ``log:``).
    name : str
        The job's name in messages and the logger ``webbflow.<name>``.
    fn : callable
        The job, e.g. :func:`webbflow.jobs.detector1`.
    *args, **kwargs
        Passed to ``fn``.

    Returns
    -------
    object
        What ``fn`` returns.

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
    # The job's own log file (INFO and above); force: a library import may have set up logging already.
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format=LOG_FORMAT, force=True)
    log = logging.getLogger(f"webbflow.{name}")
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        log.error("%s", exc)
        sys.exit(f"webbflow {name} failed: {exc}")
    except Exception:
        log.exception("%s failed", name)
        raise


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
