"""The one way the tests run the workflow: ``snakemake`` in a subprocess, on this repository's Snakefile.

Each module passes its own timeout (and environment, Snakefile) as arguments; ``check`` asserts a
zero exit status and shows the end of the output when it is not.
"""

import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "SNAKEFILE", "assert_ok", "run_snakemake"]

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"


def assert_ok(proc):
    """Assert that a finished snakemake run succeeded (the end of its stdout and stderr otherwise)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_snakemake(workdir, *args, timeout=None, check=True, env=None, snakefile=SNAKEFILE, cwd=None):
    """Run ``python -m snakemake -s <snakefile> -d <workdir> <args>``; return the completed process.

    Parameters
    ----------
    workdir : path-like
        Snakemake's working folder (``-d``).
    *args : str
        Further command-line arguments (targets, ``--configfile``, ``--cores``, ``-n``, ...).
    timeout : float, optional
        Seconds before the run is killed (``subprocess.TimeoutExpired``); None: no limit.
    check : bool
        Assert a zero exit status (:func:`assert_ok`).
    env : dict, optional
        The subprocess's environment (None: this process's).
    snakefile : path-like
        The workflow (default the repository's; a test may run a copy of it).
    cwd : path-like, optional
        The subprocess's working folder (None: this process's; a relative ``--profile`` is found there).

    Returns
    -------
    subprocess.CompletedProcess
        With ``stdout`` and ``stderr`` as text.
    """
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
    return assert_ok(proc) if check else proc
