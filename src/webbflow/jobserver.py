"""A warm fork server for workflow jobs: the imports are paid once per machine, not once per job.

Every workflow job is a fresh ``python`` that imports astropy.io.fits, gwcs and astropy.modeling,
stdatamodels and asdf's extensions, photutils and numba's registries before its real work, which for a
small exposure is the smaller part of its wall time (issue 18 part 2).  With ``jobs.warm_server`` on
(:func:`webbflow.jobmode.wanted`: ``auto``, the default, is on for a local run and off inside a batch
job; ``WEBBFLOW_JOB_SERVER=1``/``0`` forces it), :func:`webbflow.workflow.run_job` hands its job to a
server process that has made those imports and the first-use set-ups once (:func:`_warm`: schema
documents, validators, converters, photutils, matplotlib, numba's cached serial kernels) and
``fork()``s one child per job:

- the client (the job's own process, started by Snakemake) sends the job function's name, the job's
  kind (:func:`job_kind` of its rule and outputs), its arguments, its working folder, umask and whole
  environment (``OMP_NUM_THREADS``: the job's ``threads``) and its stdin/stdout/stderr
  (``SCM_RIGHTS``), so the child's console output and log go where Snakemake expects; the child takes
  that environment and sets the loaded OpenBLAS libraries to the thread count a process started in it
  would have (:func:`_apply_threads`), so jobs of any ``threads`` share one server;
- the child runs the job exactly as :func:`~webbflow.workflow.run_job` does in-process (its log file,
  :class:`~webbflow.io.errors.InputError` -> one line) and reports the outcome and its own memory
  figures; the server reaps it and sends its exit status; the client returns, exits or dies by the same
  signal as the in-process job would;
- SIGINT/SIGTERM/SIGHUP to the client are forwarded to the child; a client that disappears (SIGKILL)
  closes its connection, and the server kills the child at once; a child whose server dies is killed
  by the kernel (``PR_SET_PDEATHSIG``).

Safety: the socket's name is a hash of the installed webbflow source files (paths, sizes, mtimes), the
Python executable, ``sys.path`` and the environment read at import time (``PYTHONPATH``, ``NUMBA_*``;
not the thread counts, which the child applies itself), so an edited tree or another environment gets a new server and an old server never runs
old code; the server forks only while it has one Python thread and numba's threading layer is not
launched (the parallel kernels start their threads in the child); it exits after ``idle`` seconds
without a job; it runs detached (its own session, no inherited descriptors, so Snakemake never waits
for it), is started as the run starts (the workflow's ``onstart``: :func:`start_early`) or by the
first job that needs it, under a lock; a job that finds it starting waits for it to listen (up to
:data:`START_WAIT_S`: its first kind's imports, which the job would otherwise make itself beside it), and
when it cannot be reached or started in that time the job runs in-process as before, with one log line
saying why.  The server the ``onstart``
starts warms only for the kinds of job the run has planned (:data:`WARM_KINDS`, :data:`SCOPE_ENV`: a
grism run's server imports neither image3, photutils nor matplotlib); a job of another kind still runs
in it and pays its own imports; a server a job starts warms for every kind.  The warm-up is a list of
steps (:func:`warm_steps`: imports, set-ups, datamodel classes) in the order the run's kinds first
start (:data:`STAGE_ORDER`: detector1 first); the server listens once the first kind's imports are
done and runs the other steps one at a time between its ``accept()`` polls (a stage module's import in
pieces, :data:`IMPORT_UNITS`: a job that connects meanwhile waits for the piece under way), still
single-threaded; a job whose kind needs a step not yet run waits for it (the server runs it before the
fork), so no job runs in a child less warm for its kind than before, and the first jobs start ~1-2 s
sooner.  The socket
lives in a private folder (mode 0700): ``$XDG_RUNTIME_DIR/webbflow`` or ``/tmp/webbflow-<uid>``
(``WEBBFLOW_JOB_SERVER_DIR`` overrides).

A server helps only the jobs of one machine: on a cluster each node would start its own, and a job's
child would run outside the batch system's accounting of that job (its cgroup), so it is off there
(``auto``; the SLURM profile sets ``jobs.warm_server: false``).
"""

import contextlib
import fcntl
import functools
import hashlib
import json
import marshal
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import time
import types
from pathlib import Path

# standard library only; the one on/off test, shared with webbflow.workflow
from webbflow.jobmode import (ENV, _numba_threads_launched, blas_threads, die_with_parent, fork_safe, set_blas_threads,
                              wanted)

__all__ = ["ENV", "SCOPE_ENV", "STAGE_ORDER", "WARM_KINDS", "JobOutcome", "ServerStarting", "fork_safe",
           "job_kind", "memory_figures", "serve", "server_key", "socket_dir", "start", "start_early", "submit", "wanted", "warm_plan",
           "warm_state", "warm_steps"]

DIR_ENV = "WEBBFLOW_JOB_SERVER_DIR"
IDLE_ENV = "WEBBFLOW_JOB_SERVER_IDLE"
IDLE_S = 60.0
"""Seconds a server waits for its next job before it exits."""

START_TIMEOUT_S = 120.0
"""How long a client waits for a server it started to listen (its imports, on a loaded machine)."""

_I3_RUN = ("scipy.interpolate", "webbflow.steps._drizzle_square", "spherical_geometry.graph", "astropy.io.misc.yaml",
           "webbflow.associations")
"""What image3's jobs import when they run (:data:`WARM_KINDS`' image3 entry says why)."""

_D1_RUN = ("astropy.table", "astropy.io.misc.yaml")
"""What detector1's jobs import when they run: their 1/f QA table (astropy.table, whose import registers
every reader and writer, asdf's among them: ~0.25 s of CPU) and its ECSV writer's YAML (~0.1 s)."""

_C3_RUN = ("scipy.interpolate", "astropy.stats", "webbflow.steps._drizzle_square", "astropy.io.misc.yaml")
"""What coron3's jobs import when they run: the i2d resample's pixel maps and square drizzle kernels,
outlier_detection's statistics, the psfshifts table's ECSV writer (~0.15 s of CPU)."""

PRELOAD = tuple(dict.fromkeys(("webbflow.jobs", "webbflow.workflow", "webbflow.stages.detector1", *_D1_RUN,
                                "webbflow.stages.image2", "webbflow.stages.image3", *_I3_RUN, "webbflow.stages.spec2",
                                "webbflow.stages.tso3", "webbflow.stages.coron3", *_C3_RUN)))
"""What a server warmed for every kind imports before its first fork: every stage job's module (and
what detector1's, image3's and coron3's jobs import when they run)."""

SCOPE_ENV = "WEBBFLOW_JOB_SERVER_WARM"
"""The server's warm-up scope: the comma-separated job kinds (rule names) it warms for; unset = every
kind.  Set by :func:`start_early` / :func:`start` in the environment of the server they spawn only; not
part of :func:`server_key` (one server per key still: the first starter decides its scope)."""

_BASE = ("webbflow.jobs", "webbflow.workflow")
_D1, _I2, _I3 = "webbflow.stages.detector1", "webbflow.stages.image2", "webbflow.stages.image3"
_S2, _T3, _C3 = "webbflow.stages.spec2", "webbflow.stages.tso3", "webbflow.stages.coron3"
_REPORT = "webbflow.report.jobs"
_PHOT = ("photutils.aperture", "photutils.centroids", "photutils.psf")
WARM_KINDS = {
    # rule: (modules, datamodel classes, set-ups).  Set-ups: "numba" (registries; and, with the
    # detector1 module, its cached serial kernels), "gwcs" (the warmed images and slits carry a WCS:
    # its converters), "photutils" (its stage-3 submodules), "catalog" (what photutils imports as a
    # segmentation catalog is made: see _warm_catalog),
    # "matplotlib".  The classes and set-ups are those a job of the kind was seen to use (its inputs
    # and products) in bench_job_overhead.py's jobs, each run alone in a fresh process (the stage
    # jobs, qa_exposures, qa_mosaics); the other kinds' from their code.  A kind missing something
    # only pays it in its child, as without the server.
    "detector1": ((_D1, *_D1_RUN), (), ("numba",)),
    "image2": ((_I2,), ("ImageModel", "CubeModel"), ("gwcs",)),
    # the image2 rule's time-series and coronagraphic jobs (rateints -> calints, :func:`job_kind`):
    # they read and write CubeModels only; the ImageModel step (~0.1 s of the server's CPU) was seen
    # to change nothing in their child's CPU, so the first of them does not wait for it
    "image2_ints": ((_I2,), ("CubeModel",), ("gwcs",)),
    "spec2": ((_S2,), ("CubeModel", "SlitModel", "TSOMultiSpecModel"), ("gwcs",)),
    # tso3's outlier_detection loads its moving-median kernel (lazy_njit, numba's cache) once a series
    # is longer than the rolling window (25 integrations: nearly every real one): without numba's
    # registries from the server its child builds them itself (a 30-integration imaging series'
    # tso3 job: peak RSS 237 -> 176 MiB, CPU 0.74 -> 0.55 s, in a server warmed for tso3_phot alone)
    "tso3": ((_T3,), ("SlitModel", "TSOMultiSpecModel"), ("numba", "gwcs")),
    # photutils' aperture, centroid and PSF modules (the last imports matplotlib's core), not its
    # segmentation or detection (scipy.signal: ~0.3 s); it draws no figure
    "tso3_phot": ((_T3, "webbflow.steps.tso_photometry", *_PHOT), ("CubeModel",), ("numba", "gwcs")),
    # image3's module imports the photutils submodules it uses; its catalog imports matplotlib's core
    # (photutils' version metadata) but draws nothing (no font list, no canvas).  The modules its steps
    # import when they run: resample's pixel maps (scipy.interpolate, no longer imported with
    # photutils.segmentation: webbflow.steps._photutils) and square drizzle kernels, skymatch's
    # polygon intersections, the catalog's ECSV writer; and the job's association reader.
    "image3": ((_I3, *_I3_RUN), ("ImageModel", "SegmentationMapModel"), ("numba", "gwcs", "catalog")),
    "coron3": ((_C3, *_C3_RUN), ("CubeModel", "ImageModel"), ("numba", "gwcs", "matplotlib")),
    # a coron3 job without the contrast curve's plot (the jwst line, and any run without klip.contrast:
    # :func:`job_kind`) draws nothing: matplotlib (~0.45 s of the server's CPU while the stage-1/2 jobs
    # run) is only for the jobs writing ``_contrast.png``
    "coron3_fits": ((_C3, *_C3_RUN), ("CubeModel", "ImageModel"), ("numba", "gwcs")),
    "lightcurves": (("webbflow.lightcurves",), ("TSOMultiSpecModel",), ("matplotlib",)),
    "qa_exposures": ((_REPORT,), (), ("matplotlib",)),
    "qa_mosaics": ((_REPORT,), (), ("matplotlib",)),
    "qa_truth": ((_REPORT,), ("ImageModel", "CubeModel"), ("gwcs", "matplotlib")),
    "qa_timeseries": ((_REPORT,), (), ("matplotlib",)),
    "qa_photometry": ((_REPORT,), (), ("matplotlib",)),
    "qa_coron3": ((_REPORT,), ("CubeModel", "ImageModel"), ("gwcs", "matplotlib")),
    "qa_coron_jumps": ((_REPORT, _D1), (), ("numba", "matplotlib")),
    "qa_variants": ((_REPORT,), (), ("matplotlib",)),
    # jobs that only write tables or simulate data, and the target rules (no job process)
    **{rule: ((), (), ()) for rule in ("demo", "download", "bad_input", "image3_asn", "crds_prefetch", "all",
                                       "stage1", "stage2", "stage3", "variants")},
}
"""Job kind (the workflow's rule name; ``<rule>_variant`` is its rule's kind) -> what the server warms
for it; a kind not named here warms everything."""

SUBKINDS = {"image2": ("image2_ints",), "coron3": ("coron3_fits",)}
"""Rule -> the kinds of its jobs that need less than the rule's kind (:func:`job_kind` tells them
apart): a server warmed for the rule marks its steps for them too (:func:`warm_steps`)."""

_KEY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "WEBBFLOW_AOT", "WEBBFLOW_AOT_DIR")
"""Environment read at import time or by the warm-up (besides every ``NUMBA_*``; ``WEBBFLOW_AOT*``: whether
numba's kernels have compiled twins, :mod:`webbflow.aot`): a server started with other values
would run the job as a process started with them would not.  The thread counts (:data:`THREAD_ENV`)
are not part of it: the server itself runs on one thread of each (:func:`_spawn`) and each child
applies its job's own (:func:`_apply_threads`), so a coron3 job of 2 threads uses the server its
1-thread detector1 and image2 jobs warmed instead of starting a second one."""

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_HEADER = struct.Struct("!Q")


# --- shared -----------------------------------------------------------------------------------------

def memory_figures():
    """This process's memory: ``peak_rss_mib`` (``VmHWM``), and ``pss_mib`` and ``uss_mib`` now
    (``/proc/self/smaps_rollup``).

    In a forked job the peak RSS counts the server's pages the child shares (the imported modules);
    PSS charges each shared page in part, USS (private pages) not at all: USS is what the job itself
    added to the machine.  Both PSS and USS are the figures at the job's end, not peaks (the kernel
    keeps no peak of either).
    """
    status = Path("/proc/self/status").read_text()
    hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    out = {"peak_rss_mib": hwm / 1024.0}
    rollup = _smaps_rollup()
    if rollup is None:  # an old kernel: peak RSS only
        return out
    out["pss_mib"] = rollup.get("Pss", 0) / 1024.0
    out["uss_mib"] = (rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)) / 1024.0
    return out


def _smaps_rollup():
    """``/proc/self/smaps_rollup`` as {field: kB}, or None where the kernel has none."""
    try:
        return {line.split(":")[0]: int(line.split()[1])
                for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:] if line.endswith("kB")}
    except OSError:
        return None


def socket_dir():
    """The private folder of this user's servers (created 0700); refused if someone else owns it or
    others may enter it."""
    base = os.environ.get(DIR_ENV)
    if base:
        path = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR") and Path(os.environ["XDG_RUNTIME_DIR"]).is_dir():
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "webbflow"
    else:
        path = Path(f"/tmp/webbflow-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not private to this user (owner {st.st_uid}, mode {st.st_mode & 0o777:o})")
    return path


def server_key(environ=None):
    """16 hex digits naming the server that may run this process's jobs (see the module notes).

    ``environ``: the environment the jobs will have (default ``os.environ``), e.g. Snakemake's for a
    job of N threads (:func:`start_early`)."""
    import webbflow

    package = Path(webbflow.__file__).resolve().parent
    h = hashlib.sha256()
    h.update(f"{sys.executable}\0{sys.version}\0{package}\0".encode())
    # A package installed or removed changes its folder's mtime.  The folders as a set: Snakemake's
    # script preamble puts its own site-packages on sys.path a second time.
    for entry in sorted({os.path.realpath(e) for e in sys.path if e.rstrip("/").endswith(("site-packages",
                                                                                           "dist-packages"))}):
        with contextlib.suppress(OSError):
            h.update(f"{entry}\0{os.stat(entry).st_mtime_ns}\0".encode())
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".yaml", ".json") and "__pycache__" not in path.parts:
            st = path.stat()
            h.update(f"{path.relative_to(package)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    environ = os.environ if environ is None else environ
    for name in sorted(environ):
        if name in _KEY_ENV or name.startswith("NUMBA_"):
            h.update(f"{name}={environ[name]}\0".encode())
    return h.hexdigest()[:16]


def _recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send_line(sock, record):
    sock.sendall((json.dumps(record) + "\n").encode())


# --- the client -------------------------------------------------------------------------------------

class JobOutcome:
    """What the server reported of one job: the child's result record and its exit status."""

    def __init__(self, result, status):
        self.result = result or {}
        self.status = status

    def finish(self, name):
        """Return, exit or die as the in-process job would have.

        Returns
        -------
        object
            The job function's return value when it is plain data (``marshal``: numbers, strings,
            and lists, tuples, dicts and sets of them), else None.

        Raises
        ------
        SystemExit
            ``webbflow <name> failed: <error>`` on an InputError (the child logged it); the child's exit
            code on any other failure (the child wrote the traceback to the log and to stderr).
        """
        code = os.waitstatus_to_exitcode(self.status)
        if code < 0:  # the child died by a signal: so does this process (e.g. SIGINT -> 130 for the shell)
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
            time.sleep(1)
            sys.exit(128 - code)
        kind = self.result.get("kind")
        if kind == "input_error":
            sys.exit(f"webbflow {name} failed: {self.result['message']}")
        if code or kind != "ok":
            sys.exit(code or 1)
        value = self.result.get("value")
        return marshal.loads(bytes.fromhex(value)) if value else None


def submit(name, log_path, fn, args, kwargs, log=None, wait=None, kind=None):
    """Run ``fn(*args, **kwargs)`` as job ``name`` in a child of the warm server (started if needed).

    Parameters
    ----------
    name, log_path : str
        The job's name and its log file.
    fn : callable or str
        A module-level function, or its name ``"module:qualname"`` (not imported here): the child
        imports the module and finds the function by name.
    args, kwargs : tuple, dict
        Picklable arguments.
    log : callable, optional
        ``log(message)`` for the one line saying why the server was not used.
    wait : bool, optional
        Wait for a server that is starting (default: ``WEBBFLOW_JOB_SERVER=wait``); else the job runs
        in-process while it starts.
    kind : str, optional
        The job's kind (:func:`job_kind` of its rule and outputs): the server runs the warm-up steps of
        that kind before the fork.  None: a job of no known kind (it waits for every step of a server
        warmed for every kind, for none of a server warmed for some).

    Returns
    -------
    JobOutcome or None
        None when the server could not be used: the caller runs the job in-process.
    """
    try:
        if isinstance(fn, str):
            module, _, qualname = fn.partition(":")
        else:
            module, qualname = fn.__module__, fn.__qualname__
            if module == "__main__" or getattr(sys.modules.get(module), qualname, None) is not fn:
                raise TypeError(f"{fn!r} is not a module-level function")
        payload = pickle.dumps({"name": name, "kind": kind, "log": str(log_path), "module": module,
                                "qualname": qualname, "args": tuple(args), "kwargs": dict(kwargs), "cwd": os.getcwd(),
                                "env": dict(os.environ), "umask": _umask(), "path": list(sys.path)})
        if wait is None:
            wait = os.environ.get(ENV, "").strip() == "wait"
        sock = _connect_or_start(socket_dir(), server_key(), wait=wait)
    except Exception as exc:  # noqa: BLE001 (any failure: the job runs in-process, as without the server)
        if log:
            log(f"job server not used ({type(exc).__name__}: {exc}); running in-process")
        return None
    for stream in (sys.stdout, sys.stderr):  # what this process printed comes before the child's output
        with contextlib.suppress(Exception):
            stream.flush()
    with sock:
        try:
            socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
            sock.sendall(payload)
            return _wait(sock)
        except _NotStarted as exc:  # e.g. the server was just leaving (idle): nothing ran
            if log:
                log(f"job server not used ({exc}); running in-process")
            return None


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


START_WAIT_S = 15.0
"""How long a job waits, by default, for a server that is starting (the run's ``onstart`` started it,
another job, or this job) before it runs in-process instead.  The server listens once its first kind's
imports are done (~0.5 s on a quiet 2-core machine), imports an in-process job would make too, and more
slowly beside the server: the first two SUB160 detector1 jobs of a run took 3.7-4.0 s each in-process
while the server started, against ~0.5 s served (issue 18)."""


class ServerStarting(RuntimeError):
    """No server listens yet: one is starting (this job runs in-process meanwhile)."""


def _lock_free(folder, key):
    """Whether nobody holds ``<key>.lock``: no server runs or is starting (its starter died)."""
    with open(folder / f"{key}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True


def _connect_or_start(folder, key, wait=False, env=None, patience=None):
    """A connection to server ``key``; when none listens, start it (unless one is starting already).

    The lock ``<key>.lock`` is held by a server for its whole life (the starting client hands its
    locked descriptor over), so exactly one server per key starts however many jobs ask at once.
    A server that is starting (started here or by someone else) is waited for: up to ``patience``
    seconds (default :data:`START_WAIT_S`; :data:`START_TIMEOUT_S` with ``wait``).  Past it, or at once
    with ``patience=0`` (:func:`start_early`), or when the server or its starter dies, a job not told to
    ``wait`` gets :class:`ServerStarting` and runs in-process, as it would have without the server.
    """
    if patience is None:
        patience = START_TIMEOUT_S if wait else START_WAIT_S
    path = folder / f"{key}.sock"
    with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
        return _connect(path)
    with open(folder / f"{key}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not patience:
                raise ServerStarting("the job server is starting; this job runs in-process meanwhile") from None
            server = None
        else:
            server = _spawn(folder, key, lock.fileno(), env)
            if not patience:
                raise ServerStarting("started the job server; this job runs in-process meanwhile")
    deadline = time.monotonic() + patience
    polls = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
            return _connect(path)
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} (see {folder / key}.log)")
        polls += 1
        # another's server: its lock is held until it exits (every 0.2 s: a flock is cheap, but not free)
        if server is None and polls % 10 == 0 and _lock_free(folder, key):
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
                return _connect(path)  # it was just listening (then left: the job finds out and runs here)
            if wait:
                raise RuntimeError(f"the job server starting for this key exited (see {folder / key}.log)")
            raise ServerStarting("the job server that was starting exited; this job runs in-process")
        time.sleep(0.02)
    if wait:
        raise TimeoutError(f"the server did not listen within {patience:.0f} s")
    raise ServerStarting(f"the job server did not listen within {patience:.0f} s; this job runs in-process")


def _spawn(folder, key, lock_fd, env=None):
    """Start server ``key`` detached (own session, no inherited descriptors but the lock), in ``env``
    (default: this process's environment less :data:`SCOPE_ENV`: a server a job starts warms for every
    kind)."""
    import subprocess

    import webbflow

    path = folder / f"{key}.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead server's socket (its lock is free)
    # the server imports this webbflow (a script may have put its clone on sys.path itself)
    src = str(Path(webbflow.__file__).resolve().parents[1])
    idle = os.environ.get(IDLE_ENV, str(IDLE_S))
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != SCOPE_ENV}
    # one thread of each library in the server, whoever starts it: its imports start no BLAS threads
    # (fork safety) and each child sets its job's count (_apply_threads)
    env = {**env, **{name: "1" for name in THREAD_ENV}}
    code = f"import sys; sys.path.insert(0, {src!r}); from webbflow.jobserver import main; sys.exit(main())"
    with open(folder / f"{key}.log", "ab") as errors:
        return subprocess.Popen([sys.executable, "-c", code, str(path), key, idle, str(lock_fd)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                pass_fds=(lock_fd,), start_new_session=True, cwd="/", env=env)


def start(wait=True, jobs=None):
    """Make sure this environment's server runs (tests, benchmarks); its socket path.

    Parameters
    ----------
    wait : bool
        Wait until it listens.
    jobs : iterable of str, optional
        The job kinds (rule names) a server started now warms for (:func:`warm_plan`); None: every
        kind.  A server already running keeps its own.

    Returns
    -------
    pathlib.Path
    """
    folder, key = socket_dir(), server_key()
    _connect_or_start(folder, key, wait=wait, env=_scoped_env(os.environ, jobs)).close()
    return folder / f"{key}.sock"


def _scoped_env(environ, jobs):
    """``environ`` with :data:`SCOPE_ENV` naming ``jobs`` (None: without it, every kind)."""
    env = {k: v for k, v in environ.items() if k != SCOPE_ENV}
    if jobs is not None:
        env[SCOPE_ENV] = ",".join(sorted(set(jobs)))
    return env


THREAD_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
"""What Snakemake sets to a job's ``threads`` in the job's environment (``snakemake.shell``)."""


def start_early(jobs=None):
    """Start, without waiting, the server the jobs of a run about to start will ask for.

    One server for every job of the run, whatever its ``threads`` (the thread counts are not part of
    :func:`server_key`); one already running or starting is left alone.  Called from the workflow's
    ``onstart`` (never in a dry run), so that the server has made its imports by the time the first
    job asks instead of that job running in-process.

    Parameters
    ----------
    jobs : iterable of str, optional
        The kinds (rule names, or :func:`job_kind`'s) of the jobs that will run: the server warms for these only
        (:func:`warm_plan`; a job of another kind it serves pays its own imports).  None: every kind.

    Returns
    -------
    list of str
        One line: the server's key and whether it was started or already there.
    """
    env = _scoped_env(os.environ, jobs)
    key = server_key(env)
    if jobs is None or any(str(j).startswith("detector1") for j in jobs):
        from webbflow import aot

        aot.build_in_background()  # for the next run's detector1 jobs, when missing (this run: numba's JIT)
    try:
        _connect_or_start(socket_dir(), key, env=env, patience=0).close()
        return [f"server {key} already running"]
    except ServerStarting as exc:
        return [f"server {key}: {exc.args[0].split(';')[0]}"]


class _NotStarted(ConnectionError):
    """The server went away before it forked the job."""


def _wait(sock):
    """Forward signals to the child until the server reports its exit; the outcome."""
    def forward(signum, frame):
        with contextlib.suppress(OSError):
            _send_line(sock, {"signal": signum})

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        result, buffer, started = None, b"", False
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                if not started:
                    raise _NotStarted("the server closed the connection before starting the job")
                raise ConnectionError("the job server closed the connection without the job's exit status")
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                record = json.loads(line)
                if "exit" in record:
                    return JobOutcome(result, record["exit"])
                if "pid" in record:
                    started = True
                else:
                    result = record
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- the server -------------------------------------------------------------------------------------

def warm_plan(kinds=None):
    """What a server warms for the job kinds ``kinds`` (:data:`WARM_KINDS`).

    Parameters
    ----------
    kinds : iterable of str, optional
        Rule names (``<rule>_variant`` counts as ``<rule>``); None, or any name :data:`WARM_KINDS` does
        not know, warms every kind.

    Returns
    -------
    tuple
        ``(modules, models, setups)``: the modules imported, the datamodel classes built once (in
        :data:`WARM_MODELS`' order) and the set-ups run (a set of ``"numba"``, ``"gwcs"``,
        ``"photutils"``, ``"catalog"``, ``"matplotlib"``).
    """
    kinds = None if kinds is None else {k.removesuffix("_variant") for k in kinds}
    if kinds is None or not kinds <= WARM_KINDS.keys():
        return PRELOAD, WARM_MODELS, {"numba", "gwcs", "photutils", "catalog", "matplotlib"}
    modules, models, setups = list(_BASE), set(), set()
    for kind in sorted(kinds):
        mods, classes, extra = WARM_KINDS[kind]
        modules += [m for m in mods if m not in modules]
        models.update(classes)
        setups.update(extra)
    return tuple(modules), tuple(m for m in WARM_MODELS if m in models), setups


def _scope_from_env(environ=None):
    """The job kinds of :data:`SCOPE_ENV` (a set), or None (unset: every kind)."""
    value = (os.environ if environ is None else environ).get(SCOPE_ENV)
    return None if value is None else {k for k in value.split(",") if k}


_WARMED_FOR = None
"""The kinds this process (a server, and so its children) was warmed for; None: every kind."""

_PENDING = []
"""The labels of the warm-up steps this server has still to run (:func:`warm_steps`; a child inherits
the list as it was at its fork)."""

STAGE_ORDER = ("detector1", "image2_ints", "image2", "spec2", "tso3", "tso3_phot", "image3", "coron3_fits", "coron3",
               "lightcurves")
"""The order in which a run's first jobs of these kinds start (the workflow's DAG): the server warms for
the kinds in this order (any others after them, by name) and listens as soon as the first's imports
are done (``image2_ints`` before ``image2``: the ImageModel step, which only the latter needs, comes
after the steps both need)."""


def warm_state():
    """What this process was warmed for and has imported (for tests and diagnostics: run as a job, the
    server's child answers for its server).

    Returns
    -------
    dict
        ``scope``: the sorted job kinds, or None (every kind); ``modules``: the sorted names in
        ``sys.modules``; ``frozen``: how many objects ``gc.freeze`` put beyond the collector's reach
        (the server's, in its child); ``pending``: the warm-up steps the server had not run yet
        (:func:`warm_steps`' labels).
    """
    import gc

    return {"scope": None if _WARMED_FOR is None else sorted(_WARMED_FOR), "modules": sorted(sys.modules),
            "frozen": gc.get_freeze_count(), "pending": list(_PENDING)}


def _freeze_heap():
    """Move every object the warm-up made out of the garbage collector's reach (``gc.freeze``, after
    one collection so that no garbage is kept).

    A child's full collection would otherwise walk all of the server's objects and write to each
    one's GC header, copying every page that holds one: with the persistent parsed-YAML cache in the
    warm-up, the children's private memory (USS) went from ~35 to ~95 MiB and their CPU up by
    ~0.1 s (``bench_job_overhead.py --server``, SUB160 detector1/image2 and imaging tso3: back to
    31-36 MiB and the earlier CPU with this).  The frozen objects live as long as the server, as
    they would anyway.  Called after each warm-up step: a collection then walks only that step's
    objects.
    """
    import gc

    gc.collect()
    gc.freeze()


def _every_kind(kinds):
    """Whether a server for ``kinds`` warms for every kind (:func:`warm_plan`: None, or a kind it does
    not know)."""
    return kinds is None or not {k.removesuffix("_variant") for k in kinds} <= WARM_KINDS.keys()


def _kind_order(kinds):
    """``kinds`` in :data:`STAGE_ORDER`, then the others by name."""
    return sorted(kinds, key=lambda k: (STAGE_ORDER.index(k) if k in STAGE_ORDER else len(STAGE_ORDER), k))


def warm_steps(kinds=None):
    """The warm-up of :func:`warm_plan` (``kinds``: the same) as ordered steps, each with the kinds whose
    jobs need it: a module's import, the ASDF set-up, numba's registries, its cached stage-1 kernels,
    one datamodel class, photutils, matplotlib.

    The steps come kind by kind in :data:`STAGE_ORDER` (a step two kinds need comes with the first):
    the server listens once the first kind's imports are done and runs the others between jobs, or
    before forking a job whose kind needs them (:func:`serve`).  Together they are exactly
    :func:`warm_plan`'s modules, classes and set-ups.

    Returns
    -------
    list of (str, frozenset, callable)
        ``(label, kinds, run)``.  Warmed for every kind, the steps come for the stage kinds whose
        modules :data:`PRELOAD` names, then the rest of :data:`WARM_MODELS`; the jobs of the other
        kinds (those that need anything: lightcurves, the QA jobs) need every step.
    """
    modules, models, setups = warm_plan(kinds)
    wcs = "gwcs" in setups
    everything = _every_kind(kinds)
    if everything:  # the stage kinds whose modules PRELOAD names; the others wait for all of it
        per_kind = [k for k in STAGE_ORDER if set(WARM_KINDS[k][0]) <= set(PRELOAD)]
    else:
        per_kind = {k.removesuffix("_variant") for k in kinds}
        per_kind = _kind_order(per_kind.union(*(SUBKINDS.get(k, ()) for k in per_kind)))
    steps, where = [], {}

    def add(label, run, kind):
        if label not in where:
            where[label] = len(steps)
            steps.append((label, set(), run))
        if kind is not None:
            steps[where[label]][1].add(kind)

    # kinds whose kernels all have compiled twins (webbflow.aot): numba is not loaded for them
    aot_kinds = set() if everything else {k for k in per_kind if _aot_covers(k)}
    numba_for_none = everything or any("numba" in warm_plan([k])[2] for k in set(per_kind) - aot_kinds)
    for kind in [*per_kind, None]:
        if kind is None:  # every kind: what no single kind named
            k_modules, k_models, k_setups = modules, models, setups
        else:
            k_modules, k_models, k_setups = warm_plan([kind])
        for module in k_modules:
            add(f"import {module}", functools.partial(_import, module), kind)
        if k_models:
            add("asdf", _warm_asdf, kind)
        if "numba" in k_setups and (kind not in aot_kinds if kind is not None else numba_for_none):
            add("numba", _warm_numba, kind)
            # the stage-1 kernels: those of detector1's jobs only (none when their compiled twins run them;
            # the step for every kind would otherwise load them for nobody, ~0.25 s of CPU beside the first jobs)
            if _D1 in k_modules and (kind is not None or "detector1" not in aot_kinds):
                add("numba cache", _warm_numba_cache, kind)
            if _I3 in k_modules:
                add("numba cache image3", functools.partial(_warm_numba_cache, IMAGE3_NUMBA_MODULES), kind)
        for name in k_models:
            add(f"datamodel {name}", functools.partial(_warm_datamodels, (name,), wcs=wcs), kind)
        for name, run in (("photutils", _warm_photutils), ("catalog", _warm_catalog), ("matplotlib", _warm_matplotlib)):
            if name in k_setups:
                add(name, run, kind)
    if everything:
        others = {k for k, plan in WARM_KINDS.items() if any(plan) and k not in per_kind}
        for _, needed, _ in steps:
            needed.update(others)
    return [(label, frozenset(needed), run) for label, needed, run in steps]


_WCS_STACK = ("astropy.io.votable", "astropy.table", "scipy.optimize", "astropy.modeling", "gwcs")
"""The third-party packages under the stage-2/3 modules' imports (assign_wcs: gwcs, astropy.coordinates
and astropy.table's readers, astropy.modeling's fitters), ~0.04-0.17 s of CPU each."""

IMPORT_UNITS = {module: _WCS_STACK for module in (_I2, _S2, _I3, _C3)}
"""module -> modules it imports, imported one at a time before it when the server warms up between jobs
(:func:`_smaller_unit`): an import cannot be interrupted, so a job that connects meanwhile waits for
the one under way; in these pieces it waits ~0.15 s at most instead of ~0.6 s for a whole stage
module (the first detector1 job of a TSO imaging run, which connects while image2's module loads)."""

_UNITS_TRIED = set()
"""The :data:`IMPORT_UNITS` pieces this server has imported or tried (one that fails is not retried:
the stage module's own import step meets the error and reports it)."""


def _smaller_unit(step):
    """The next piece of warm-up ``step`` (:func:`warm_steps`) to run on its own, or None (run the step).

    Returns
    -------
    callable or None
        For an ``import`` step of :data:`IMPORT_UNITS` whose module is not imported yet, the import of
        its first piece not imported yet; None otherwise.
    """
    label = step[0]
    module = label.removeprefix("import ")
    if module == label or module in sys.modules:
        return None
    for piece in IMPORT_UNITS.get(module, ()):
        if piece not in sys.modules and piece not in _UNITS_TRIED:
            _UNITS_TRIED.add(piece)
            return functools.partial(_import, piece)
    return None


def _import(module):
    """Import ``module`` (photutils' as webbflow imports it: :func:`webbflow.steps._photutils.import_photutils`;
    webbflow's modules that import photutils do so themselves)."""
    import importlib

    if module.split(".")[0] == "photutils":
        from webbflow.steps._photutils import import_photutils

        import_photutils(module)
    else:
        importlib.import_module(module)


def _warm_asdf():
    """The ASDF and FITS set-ups every stage-2/3 job installs (``webbflow.jobs._fast_asdf``: done once
    here, a no-op in the child) and asdf's extension list (built once, on first use)."""
    import asdf

    from webbflow import jobs

    jobs._fast_asdf()
    asdf.get_config().extensions  # noqa: B018


AOT_KINDS = ("detector1", "tso3", "tso3_phot", "coron3", "coron3_fits")
"""The kinds whose kernels :mod:`webbflow.aot` compiles (detector1's steps, tso3's rolling median, coron3's
align_refs and square drizzle)."""


def _aot_covers(kind):
    """Whether the jobs of ``kind`` run compiled twins of all their kernels (:mod:`webbflow.aot`, built
    for these sources): they never load numba, so the server does not load it for them either."""
    from webbflow import aot

    return kind in AOT_KINDS and bool(aot.load())


def _warm_numba():
    """numba's typing and lowering registries (a serial kernel: no threads)."""
    from webbflow.steps import _warmup

    _warmup.init_numba()


def _run_steps(steps):
    """Run warm-up ``steps`` (:func:`warm_steps`), each followed by :func:`_freeze_heap`; a step that
    fails is skipped with one line on the server's stderr (its child then pays it, or meets the same
    error, in the job's own log)."""
    for label, _, run in steps:
        try:
            run()
        except Exception as exc:  # noqa: BLE001 (a warm-up only saves time: its child pays it instead)
            print(f"webbflow job server: warm-up step {label} skipped ({type(exc).__name__}: {exc})",
                  file=sys.stderr, flush=True)
        _freeze_heap()
        with contextlib.suppress(ValueError):
            _PENDING.remove(label)


def _warm(kinds=None):
    """The imports and one-off set-ups the jobs of ``kinds`` (:func:`warm_plan`; None: every kind) would
    pay (none of them starts a thread), all at once (:func:`warm_steps`, :func:`_run_steps`)."""
    global _WARMED_FOR
    _WARMED_FOR = None if kinds is None else set(kinds)
    steps = warm_steps(kinds)
    _PENDING[:] = [label for label, _, _ in steps]
    _run_steps(steps)


NUMBA_MODULES = ("webbflow.io._decode", "webbflow.steps._jit", "webbflow.steps._jump_numba",
                 "webbflow.steps._ramp_numba", "webbflow.steps.charge_migration",
                 "webbflow.steps.clean_flicker_noise", "webbflow.steps.fused", "webbflow.steps.linearity",
                 "webbflow.steps.refpix", "webbflow.steps.roeba", "webbflow.steps.saturation")
"""webbflow's modules with numba kernels (the steps import some of them only when they run)."""

IMAGE3_NUMBA_MODULES = ("webbflow.steps._drizzle_square", "webbflow.steps._peaks", "webbflow.steps.outlier_detection",
                        "webbflow.steps.skymatch")
"""The modules of image3's kernels (square drizzle, tweakreg's peak check, outlier_detection's median,
skymatch's statistics); all but the drizzle's are :func:`webbflow.steps._jit.lazy_njit` kernels."""


def _warm_numba_cache(modules=NUMBA_MODULES):
    """Load every serial kernel of webbflow's ``modules`` that numba's on-disk cache holds (each signature
    cached by earlier runs: ``dispatcher.compile(sig)`` finds it in the cache, a few ms each) so that a
    child does not; a :func:`~webbflow.steps._jit.lazy_njit` kernel gets its dispatcher first (the one
    its first call would make).  Kernels compiled with ``parallel=True`` are left to the child: loading
    one from the cache already launches numba's threading layer (its workers), after which the server
    could no longer fork safely.  A kernel without cached signatures (a new tree, edited source) is not
    compiled here: the child compiles it as before.

    Two kinds of work a child would never use are left out (~0.35 s of the server's CPU before it
    listens, with a TSO imaging run's cache): the kernels that only other kernels of their module
    call (:func:`_inner_kernels`: a caller loaded from the cache carries their code, so a job does
    not load them), and the import of a module that is not imported yet and has nothing in numba's
    cache (:func:`_has_numba_cache`: e.g. ``roeba``, whose import takes scipy.ndimage, ~0.17 s).

    Returns
    -------
    int
        The number of signatures loaded.
    """
    import importlib

    from webbflow.steps import _jit

    loaded = 0
    for name in modules:
        if name not in sys.modules and not _has_numba_cache(name):
            continue
        module = importlib.import_module(name)
        kernels = _jit.kernels(module)
        inner = _inner_kernels(module, kernels)
        for key, value in kernels.items():
            if key in inner or value.targetoptions.get("parallel") or getattr(value, "_cache", None) is None:
                continue
            try:
                index = value._cache._cache_file._load_index()  # {} when the source changed since
            except (AttributeError, OSError):
                continue
            for sig in index:
                value.compile(sig[0])
                loaded += 1
                if _numba_threads_launched():  # not expected for a serial kernel: stop loading
                    return loaded
    return loaded


def _code_names(code):
    """The global names ``code`` and the code objects nested in it (functions, comprehensions) use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _inner_kernels(module, kernels):
    """The names of ``kernels`` (name -> numba dispatcher of ``module``) that another of them calls and
    no plain function or class of ``module`` names: helpers that only run inside other kernels.  A
    kernel loaded from numba's cache carries the code of the kernels it calls, so a job never loads
    these on their own (one that does, from another module's Python code, pays a few ms, as it would
    without the server)."""
    called, plain = set(), set()
    for value in kernels.values():
        called |= _code_names(value.py_func.__code__)
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(value, type):
            members = [m for m in vars(value).values() if isinstance(m, types.FunctionType)]
        else:  # a plain function (a kernel is a dispatcher, not one)
            members = [value] if isinstance(value, types.FunctionType) else []
        for member in members:
            plain |= _code_names(member.__code__)
    return (called & kernels.keys()) - plain


def _has_numba_cache(name):
    """Whether module ``name`` (not imported) may have kernels in numba's cache: True unless numba would
    keep them in the module's own ``__pycache__`` (writable, no ``NUMBA_CACHE_DIR``) and that holds no
    index file of the module's."""
    import importlib.util

    from numba.core import config

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return True
    if config.CACHE_DIR or spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return True
    source = Path(spec.origin)
    cache = source.parent / "__pycache__"
    if not cache.is_dir() or not os.access(cache, os.W_OK):
        return True  # numba's user-wide cache, or none yet
    return any(cache.glob(f"{source.stem}.*.nbi"))


WARM_MODELS = ("ImageModel", "CubeModel", "SlitModel", "MultiSlitModel", "TSOMultiSpecModel", "QuadModel",
               "RampModel", "MultiSpecModel", "SegmentationMapModel")
"""The datamodel classes the stage jobs read and write (coronagraphy's: CubeModel, QuadModel,
ImageModel), each built, validated, written and read once by the server before its first fork."""


def _tiny_gwcs():
    """A small imaging + spectral gwcs made of the transforms and frames our products' WCSs use."""
    import astropy.units as u
    from astropy import coordinates
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf
    from gwcs import wcs

    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3", axes_order=(0, 1), unit=(u.arcsec, u.arcsec))
    sky = cf.CelestialFrame(reference_frame=coordinates.ICRS(), name="world", unit=(u.deg, u.deg))
    spectral = cf.SpectralFrame(name="spectral", axes_order=(2,), unit=(u.micron,), axes_names=("wavelength",))
    world = cf.CompositeFrame([sky, spectral], name="world3")
    distortion = ((models.Shift(-1) & models.Shift(-1)) | models.Mapping((0, 1, 0, 1))
                  | (models.Polynomial2D(2, c1_0=0.03) & models.Polynomial2D(2, c0_1=0.03))
                  | models.AffineTransformation2D(matrix=[[1.0, 0.0], [0.0, 1.0]], translation=[0.0, 0.0]))
    to_sky = (models.Scale(1 / 3600) & models.Scale(1 / 3600)) | models.Pix2Sky_TAN() | models.RotateNative2Celestial(
        10.0, 20.0, 180.0)
    imaging = wcs.WCS([(detector, distortion), (v2v3, to_sky), (sky, None)])
    wavelength = models.Tabular1D(points=[0.0, 1.0], lookup_table=[1.0, 2.0], bounds_error=False)
    spec = models.Mapping((0, 1, 0)) | (models.Shift(-1) & models.Shift(-1) | to_sky) & wavelength
    return imaging, wcs.WCS([(detector, spec), (world, None)])


def _warm_datamodels(models=WARM_MODELS, wcs=True):
    """What a child pays on its first open, assignment, validation and write of a datamodel: schema
    documents parsed and resolved (:func:`webbflow.io.asdf_yaml.cache_schema_documents` keeps them for
    every later job), validators built, the gwcs/astropy.modeling converters loaded.  Each class of
    ``models`` (names of :data:`WARM_MODELS`) is built with a tiny array, with ``wcs`` a gwcs on the
    images and slits, validated, written and read back in a private temporary folder (removed)."""
    import tempfile
    import warnings

    import numpy as np
    from stdatamodels.jwst import datamodels

    from webbflow.io.asdf_yaml import cache_schema_documents

    cache_schema_documents()
    imaging, spec = _tiny_gwcs() if wcs and {"ImageModel", "SlitModel"} & set(models) else (None, None)
    shapes = {"CubeModel": (2, 2, 2), "QuadModel": (2, 2, 2, 2), "RampModel": (1, 2, 2, 2)}
    with tempfile.TemporaryDirectory(prefix="webbflow-warm-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in models:
            cls = getattr(datamodels, name)
            with cls() as model:
                shape = shapes.get(name, (2, 2))
                if "data" in model.schema.get("properties", {}):
                    model.data = np.zeros(shape, np.float32)
                if name == "ImageModel" and wcs:
                    model.meta.wcs = imaging
                elif name == "SlitModel" and wcs:
                    model.meta.wcs = spec
                elif name == "MultiSlitModel":
                    model.slits.append(datamodels.SlitModel(np.zeros((2, 2), np.float32)))
                elif name in ("TSOMultiSpecModel", "MultiSpecModel"):
                    model.spec.append({})
                model.meta.exposure.type = "NRC_IMAGE"
                model.validate()
                path = Path(folder) / f"{name}.fits"
                model.to_fits(path, overwrite=True, checksum=True)
            with datamodels.open(path) as back:
                back.validate()
                if name == "ImageModel" and wcs:
                    back.meta.wcs(0.5, 0.5)  # the deserialised transform evaluated once


def _warm_photutils():
    """photutils' submodules the stage-3 and photometry steps import lazily (as webbflow imports them:
    :func:`_import`)."""
    for module in ("photutils.aperture", "photutils.background", "photutils.centroids", "photutils.detection",
                   "photutils.psf", "photutils.segmentation", "photutils.utils"):
        _import(module)


def _warm_catalog():
    """What photutils imports while it makes a segmentation catalog (image3's source_catalog), in
    each job otherwise: its version metadata, which imports every optional dependency it names
    (skimage, matplotlib's core, bottleneck: ``photutils.utils._misc._get_version_info``), and
    skimage's watershed (deblending)."""
    from photutils.utils._misc import _get_version_info

    _get_version_info()
    from skimage.segmentation import watershed  # noqa: F401


def _warm_matplotlib():
    """The QA jobs' figures: matplotlib's font list (its cache file), a font's glyphs and the Agg canvas,
    drawn once into memory (no pyplot: its backend is the job's to choose)."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=20)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(np.zeros((2, 2)), cmap="viridis")
    ax.plot([0, 1], [0, 1], label="warm")
    ax.set_title("warm")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")


def serve(path, key, idle=IDLE_S, lock_fd=None):
    """Listen on ``path`` and fork one child per job until ``idle`` seconds pass without one.

    The server listens once the imports of the first of its kinds are done (:func:`warm_steps`); it
    runs the other steps between jobs, and those a job's kind needs before its fork.

    Parameters
    ----------
    path : str or os.PathLike
        The unix socket.
    key : str
        The :func:`server_key` the socket is named for; the server exits at once if its own differs
        (the sources changed while it started).
    idle : float
        Seconds without a job (and no job running) after which the server exits.
    lock_fd : int, optional
        The descriptor of ``<key>.lock``, locked by the client that started this server: held open
        (so locked) for the server's life, closed in every child.
    """
    # SIGTERM (a benchmark stopping its server, a shutdown): leave through the finally below, which
    # removes the socket; the children set SIGTERM back to its default
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if server_key() != key:  # before the imports too: a client that names another key costs nothing
        raise SystemExit(f"webbflow job server: not the client's environment ({key} != {server_key()})")
    global _WARMED_FOR
    scope = _scope_from_env()
    _WARMED_FOR = None if scope is None else set(scope)
    steps, every = warm_steps(scope), _every_kind(scope)
    _PENDING[:] = [label for label, _, _ in steps]
    by_label = {step[0]: step for step in steps}

    def pending():
        """The warm-up steps not run yet, in order (:data:`_PENDING` is their one record)."""
        return [by_label[label] for label in _PENDING]

    # the first kind's imports before listening (detector1's in a run of stage 1: the first jobs); its
    # set-ups (numba's registries and cached kernels, ~0.5 s) right after, while its first client
    # starts and connects (a job the onstart's server would not take yet runs in-process, imports and
    # all); the others between jobs (select() with no wait while any remain); and before the fork of
    # a job whose kind needs them, whatever of them is left: a job never runs in a child that lacks
    # what its kind is warmed for
    first = next((kinds for _, kinds, _ in steps if kinds), frozenset())
    first = _kind_order(first)[:1]
    _run_steps([step for step in steps if set(first) & step[1] and step[0].startswith("import ")]
               if first else steps)
    if server_key() != key:
        raise SystemExit(f"webbflow job server: sources changed while starting ({key} != {server_key()})")
    path = Path(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.replace(tmp, path)  # clients connect only to a server that has warmed up for the first kind
    inode = path.stat().st_ino
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, ("listen", None))
    jobs = {}  # pid -> [connection, pidfd, result received]
    last = time.monotonic()

    def warm(needed):
        """Run the pending ``needed`` steps; False if the sources changed meanwhile (stop listening)."""
        if not needed:
            return True
        _run_steps(needed)
        if any(label.startswith("import ") for label, _, _ in needed) and server_key() != key:
            print(f"webbflow job server: sources changed while warming up ({key} != {server_key()}); "
                  "no new jobs", file=sys.stderr, flush=True)
            return False
        return True

    def stop_listening():
        _PENDING.clear()  # no job will need them
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(listener)
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:
                path.unlink()
        listener.close()

    try:
        while jobs or (listener.fileno() >= 0 and (_PENDING or time.monotonic() - last < idle)):
            timeout = 0 if _PENDING else None if jobs else max(0.05, idle - (time.monotonic() - last))
            events = sel.select(timeout=timeout)
            # between jobs the warm-up goes on in its smallest pieces, so that a job that connects
            # meanwhile waits for little more than the piece under way
            step = pending()[0] if not events and _PENDING else None
            piece = _smaller_unit(step) if step else None
            if piece is not None:
                _run_steps([(f"piece of {step[0]}", step[1], piece)])
            elif step and not warm([step]):
                stop_listening()
            for sk, _ in events:
                what, pid = sk.data
                if what == "listen":
                    if listener.fileno() < 0:
                        continue
                    conn, _ = listener.accept()

                    def before_fork(request):
                        ok = warm([step for step in pending() if _needs(request, every, step[1])])
                        if not ok:
                            stop_listening()
                        return ok

                    child = _start_job(conn, listener, sel, lock_fd, before_fork)
                    if child is None:
                        conn.close()
                        continue
                    with contextlib.suppress(OSError):
                        _send_line(conn, {"pid": child})
                    pidfd = os.pidfd_open(child)
                    jobs[child] = [conn, pidfd]
                    sel.register(conn, selectors.EVENT_READ, ("client", child))
                    sel.register(pidfd, selectors.EVENT_READ, ("exit", child))
                elif what == "client":
                    conn = jobs[pid][0]
                    data = b""
                    with contextlib.suppress(OSError):
                        data = conn.recv(4096)
                    if not data:  # the client is gone (killed): its job must not go on alone
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        sel.unregister(conn)
                        continue
                    for line in data.splitlines():
                        with contextlib.suppress(ValueError, KeyError, ProcessLookupError):
                            os.kill(pid, int(json.loads(line)["signal"]))
                else:  # the child exited: reap it, tell its client
                    conn, pidfd = jobs.pop(pid)
                    _, status = os.waitpid(pid, 0)
                    sel.unregister(pidfd)
                    os.close(pidfd)
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(conn)
                    with contextlib.suppress(OSError):
                        _send_line(conn, {"exit": status})
                    conn.close()
                    last = time.monotonic()
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:  # ours, not a successor's
                path.unlink()
        listener.close()  # a client that connected in the meantime sees EOF and runs its job in-process


def _request_kind(request):
    """The job kind of a request, as its client classified it (:func:`job_kind`, in
    :func:`webbflow.workflow.run_job`); None when it did not (a caller without a rule)."""
    return request.get("kind")


def job_kind(rule, outputs=()):
    """The kind (:data:`WARM_KINDS`) a server warms for a job of ``rule`` writing ``outputs``.

    Parameters
    ----------
    rule : str
        The job's rule name.
    outputs : iterable of path-like
        Its products.

    Returns
    -------
    str
        ``image2_ints`` for an image2 job (or its variant) whose products are calints (an imaging time
        series' or coronagraphy's segment: CubeModels only); ``coron3_fits`` for a coron3 job whose
        products include no ``_contrast.png`` (no plot: no matplotlib); else ``rule`` less a
        ``_variant`` suffix (a variant's job is of its rule's kind).
    """
    rule = rule.removesuffix("_variant")
    outputs = [str(path) for path in outputs]
    if rule == "image2" and outputs and all(p.endswith("_calints.fits") for p in outputs):
        return "image2_ints"
    if rule == "coron3" and outputs and not any(p.endswith("_contrast.png") for p in outputs):
        return "coron3_fits"
    return rule


def _needs(request, every, kinds):
    """Whether the job of ``request`` needs a warm-up step that the jobs of ``kinds`` need: yes if its
    kind is one of them; a job of no known kind needs every step of a server warmed for every kind
    (``every``: as if it listened only once warm) and none of a server warmed for some kinds (its child
    pays its own imports, as it would anyway)."""
    kind = _request_kind(request)
    if kind in WARM_KINDS:
        return kind in kinds
    return every


def _start_job(conn, listener, sel, lock_fd=None, before_fork=None):
    """Read one request from ``conn`` and fork its child; the child's pid, or None if refused.

    ``before_fork(request)``: called with the request before the fork (the server's warm-up steps the
    job needs); a false answer refuses the job (its client runs it in-process)."""
    conn.settimeout(10.0)
    fds = []
    try:
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        if not header:  # a connection that only checked the server listens (start())
            return None
        if len(header) != _HEADER.size or len(fds) != 3:
            raise ConnectionError("bad request header")
        request = pickle.loads(_recv_exact(conn, _HEADER.unpack(header)[0]))
    except (OSError, pickle.UnpicklingError, EOFError, ConnectionError) as exc:
        print(f"webbflow job server: bad request ({exc})", file=sys.stderr, flush=True)
        for fd in fds:
            os.close(fd)
        return None
    conn.settimeout(None)
    if before_fork is not None and not before_fork(request):
        for fd in fds:
            os.close(fd)
        return None
    if not fork_safe():
        print("webbflow job server: not single-threaded, refusing to fork", file=sys.stderr, flush=True)
        for fd in fds:
            os.close(fd)
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sel.close()
            listener.close()
            if lock_fd is not None:
                os.close(lock_fd)
            code = _child(conn, request, fds)
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    return pid


def _apply_threads(environ=None):
    """Give the forked job the BLAS threads a process started in its environment would have.

    The server loaded OpenBLAS with one thread (:func:`_spawn`); OpenBLAS reads its thread count only
    at load, so each library the server loaded is set through its own setter here
    (:func:`webbflow.jobmode.set_blas_threads`).  numba's count needs nothing: ``NUMBA_NUM_THREADS`` is
    part of :func:`server_key`, and the stages that limit numba to the job's ``threads`` do it
    themselves (``OMP_NUM_THREADS``, now the job's).

    Returns
    -------
    dict
        Library path -> its thread count before (those found with a setter).
    """
    return set_blas_threads(blas_threads(environ))


def _child(conn, request, fds):
    """Run one job in the forked child as :func:`webbflow.workflow.run_job` does; its exit code."""
    import importlib
    import logging
    import traceback

    from webbflow.io.errors import InputError
    from webbflow.workflow import LOG_FORMAT

    die_with_parent()  # the server's death kills the job
    # the server's anonymous memory this child maps from the fork (its imports' objects, numba's and
    # LLVM's heaps): counted in full in its peak RSS, whatever the job does (issues 13-15's figures)
    rollup = _smaps_rollup()
    inherited = None if rollup is None else rollup.get("Anonymous", 0) / 1024.0
    for sig in _FORWARDED + (signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh python: KeyboardInterrupt
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    _apply_threads()
    sys.path[:] = request["path"]  # modules the job imports now are found as in its own process
    name = request["name"]
    started = time.perf_counter()
    logging.basicConfig(filename=request["log"], level=logging.INFO, format=LOG_FORMAT, force=True)
    log = logging.getLogger(f"webbflow.{name}")
    result, code = {"kind": "ok"}, 0
    try:
        fn = getattr(importlib.import_module(request["module"]), request["qualname"])
        value = fn(*request["args"], **request["kwargs"])
        # plain data only (marshal: a value holding arrays or paths is not sent), so that the client
        # imports nothing to read it (no numpy in a coron3 job's client)
        with contextlib.suppress(Exception):
            result["value"] = marshal.dumps(value, 4).hex() if value is not None else None
    except InputError as exc:
        log.error("%s", exc)
        result, code = {"kind": "input_error", "message": str(exc)}, 1
    except KeyboardInterrupt:
        # die by SIGINT as an interrupted python does (its status says so to the client and the shell)
        traceback.print_exc()
        sys.stderr.flush()
        logging.shutdown()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        result = {"kind": "ok" if code == 0 else "exit"}
    except BaseException:
        log.exception("%s failed", name)
        traceback.print_exc()  # the console shows it, as an uncaught exception in the job's process would
        result, code = {"kind": "error"}, 1
    result.update(memory_figures())
    if inherited is not None:
        result["inherited_mib"] = inherited
    import resource

    # a forked child's own, counted from the fork, and its helpers' (coron3's align_refs forks some)
    cpu = sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN)))
    result.update(child_wall_s=round(time.perf_counter() - started, 4), child_cpu_s=round(cpu, 4),
                  server_pid=os.getppid())
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
    with contextlib.suppress(OSError):
        _send_line(conn, result)
    return code


def main(argv=None):
    """``python -m webbflow.jobserver SOCKET KEY [IDLE_S [LOCK_FD]]``: what a client runs, detached."""
    argv = sys.argv[1:] if argv is None else argv
    serve(argv[0], argv[1], float(argv[2]) if len(argv) > 2 else IDLE_S, int(argv[3]) if len(argv) > 3 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
