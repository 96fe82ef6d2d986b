"""Whether a workflow job goes through the warm job server (:mod:`webbflow.jobserver`), the threads
Snakemake gave it (:func:`threads`), and OpenBLAS's thread count (:func:`blas_threads`,
:func:`set_blas_threads`, :func:`blas_limit`).

Standard library only (``ctypes`` for OpenBLAS's setters, imported when used): every job's process, and the Snakefile, ask this before anything else,
and a job that runs in-process must not pay for the server's module.
"""

import contextlib
import os

__all__ = ["BATCH_ENV", "ENV", "blas_limit", "blas_threads", "cpus", "die_with_parent", "fork_safe", "run_forked",
           "set_blas_threads", "threads", "wanted"]

ENV = "WEBBFLOW_JOB_SERVER"
"""``1``: run jobs through the warm server, ``0``: in-process, ``auto``: as the config's ``auto``;
overrides ``jobs.warm_server``.  ``wait``: as ``1``, but a job waits for a starting server as long as
``jobserver.START_TIMEOUT_S`` and fails if none listens, instead of running in-process after
``jobserver.START_WAIT_S`` (tests and benchmarks that must exercise the server)."""

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
    return _first_count(environ, ("OMP_NUM_THREADS",))


def _first_count(environ, names):
    """The first of the variables ``names`` of ``environ`` (default ``os.environ``) that is a positive
    integer, or None."""
    environ = os.environ if environ is None else environ
    for name in names:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


OPENBLAS_FUNCTIONS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                      ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                      ("openblas_set_num_threads", "openblas_get_num_threads"))
"""(setter, getter) of OpenBLAS's thread count in its builds (numpy's and scipy's wheels bundle their
own, with suffixed names)."""


def blas_threads(environ=None):
    """The threads OpenBLAS takes at load in a process started with ``environ`` (default ``os.environ``):
    ``OPENBLAS_NUM_THREADS``, else ``GOTO_NUM_THREADS``, else ``OMP_NUM_THREADS`` (the first that is a
    positive integer, OpenBLAS's own order), else the CPUs this process may run on (int)."""
    n = _first_count(environ, ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"))
    return n if n is not None else cpus()


def cpus():
    """The CPUs this process may run on (its affinity where the platform tells it, else the machine's
    count; at least 1): what numba and OpenBLAS take when no variable says otherwise."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _openblas_libraries():
    """(path, setter, getter) of each OpenBLAS library mapped in this process (``/proc/self/maps``;
    none where there is no such file or the library has no known setter)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return []
    import ctypes

    paths = sorted({line.split(None, 5)[5] for line in maps.splitlines()
                    if len(line.split(None, 5)) == 6 and "openblas" in line.rsplit("/", 1)[-1].lower()})
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the mapped one, never a new load
            for set_name, get_name in OPENBLAS_FUNCTIONS:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                    setter.argtypes, setter.restype, getter.argtypes, getter.restype = [ctypes.c_int], None, [], ctypes.c_int
                    found.append((path, setter, getter))
                    break
    return found


def set_blas_threads(n):
    """Set every OpenBLAS library loaded in this process to ``n`` threads.

    Parameters
    ----------
    n : int or dict
        The count, or library path -> count (what a previous call returned: its counts restored).

    Returns
    -------
    dict
        Library path -> its count before (only libraries already loaded: one loaded later reads the
        environment as usual).
    """
    before = {}
    for path, setter, getter in _openblas_libraries():
        count = n.get(path) if isinstance(n, dict) else n
        before[path] = getter()
        if count is not None and count != before[path]:
            setter(int(count))
    return before


@contextlib.contextmanager
def blas_limit(n=1):
    """Run the block with at most ``n`` OpenBLAS threads, the counts before restored after it.

    For results that must not depend on the job's threads: OpenBLAS splits a product's sums between its
    threads, so round-off (a full-rank KL projection's residuals, coron3's psfsub ERR) differs with the
    count."""
    before = set_blas_threads({path: min(count, n) for path, count in set_blas_threads({}).items()})
    try:
        yield before
    finally:
        set_blas_threads(before)


def _numba_threads_launched():
    """Whether numba's threading layer has started its workers in this process."""
    import sys

    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(parallel and getattr(parallel, "_is_initialized", False))


def fork_safe():
    """Whether this process may fork (a job, or a job's helpers): one Python thread, no numba worker
    threads, and a system with ``fork``."""
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1 and not _numba_threads_launched()


def die_with_parent():
    """Have the kernel kill this process when its parent dies (a forked job or helper)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def run_forked(parts):
    """Run ``parts[0]()`` in this process and each of ``parts[1:]`` in a forked helper at the same time;
    return once all are done.

    For a job's CPU-bound work that holds the GIL (threads would take turns): the helpers see this
    process's memory as it was at the fork, and give back what they make through shared memory or
    files.  A helper that fails or dies has its part run here again afterwards (an error in it is
    then raised here, as without helpers); an error here kills the helpers.  Call it only where
    :func:`fork_safe`.

    Parameters
    ----------
    parts : sequence of callable
        Each called without arguments; what they return is dropped.

    Returns
    -------
    list of int
        The indices of the parts whose helper failed (run here again).
    """
    import signal
    import sys

    children = {}
    try:
        for index, part in enumerate(parts[1:], 1):
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the helper; its work is checked in the parent)
                code = 1
                try:
                    die_with_parent()
                    part()
                    code = 0
                finally:
                    os._exit(code)
            children[pid] = index
        parts[0]()
        failed = [index for pid, index in list(children.items()) if os.waitpid(pid, 0)[1] != 0]
        children = {}
        for index in failed:
            parts[index]()
        return failed
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
