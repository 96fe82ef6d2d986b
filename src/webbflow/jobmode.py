"""Whether a workflow job goes through the warm job server (:mod:`webbflow.jobserver`), and the threads
Snakemake gave it (:func:`threads`).

Standard library (``os``) only: every job's process, and the Snakefile, ask this before anything else,
and a job that runs in-process must not pay for the server's module.
"""

import os

__all__ = ["BATCH_ENV", "ENV", "threads", "wanted"]

ENV = "WEBBFLOW_JOB_SERVER"
"""``1``: run jobs through the warm server, ``0``: in-process, ``auto``: as the config's ``auto``;
overrides ``jobs.warm_server``.  ``wait``: as ``1``, but a job that finds no server waits for the one
it starts instead of running in-process meanwhile (tests and benchmarks that must exercise the server)."""

BATCH_ENV = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
"""Set in a job of SLURM, PBS/Torque and LSF: there a forked child would run outside the batch system's
accounting of the job (its cgroup), so ``auto`` is off."""

_OFF = ("0", "false", "no", "off")


def wanted(config, environ=None):
    """Whether jobs go through the warm server.

    Parameters
    ----------
    config : dict or None
        The workflow config; its ``jobs.warm_server``: ``true``, ``false`` or ``auto`` (the default;
        also when the key or the whole config is missing).
    environ : mapping, optional
        The environment (default ``os.environ``): ``WEBBFLOW_JOB_SERVER`` (``0``/``1``/``wait``/
        ``auto``), when set, wins over the config.

    Returns
    -------
    bool
        ``auto``: True for a local run on Linux (the server needs ``os.pidfd_open``), False inside a
        batch job (any of :data:`BATCH_ENV` set).
    """
    environ = os.environ if environ is None else environ
    setting = environ.get(ENV, "").strip().lower()
    if not setting:
        setting = ((config or {}).get("jobs") or {}).get("warm_server", "auto")
        if isinstance(setting, bool):
            return setting
        setting = str(setting).strip().lower()
    if setting in _OFF:
        return False
    if setting != "auto":
        return True
    return hasattr(os, "pidfd_open") and not any(environ.get(name) for name in BATCH_ENV)


def threads(environ=None):
    """The threads a workflow job was given: Snakemake exports a rule's ``threads`` as ``OMP_NUM_THREADS``.

    Parameters
    ----------
    environ : mapping, optional
        The environment (default ``os.environ``).

    Returns
    -------
    int or None
        ``OMP_NUM_THREADS`` when it is a positive integer; None otherwise (not a workflow job, or
        unset): the caller's own default then.
    """
    n = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    return int(n) if n.isdigit() and int(n) > 0 else None
