"""Run STScI's jwst pipeline (the oracle) in its own virtual environment.

webbflow never imports jwst: it pins older libraries.  The oracle lives in a
separate venv (``.oracle/`` at the repository root, made by
``benchmarks/setup_oracle.sh``, or ``$WEBBFLOW_ORACLE``) and is driven through
``jwst_offline.py`` (``../shared/oracle/`` beside the clone, or
``$WEBBFLOW_ORACLE_SCRIPT``), which runs a pipeline with no CRDS server and
every reference file given explicitly.  Parity tests and benchmarks use this.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DETECTOR1_OVERRIDES", "DETECTOR1_SKIPS", "OracleUnavailable", "oracle_paths",
           "detector1_command", "run_detector1"]

REPO = Path(__file__).resolve().parents[2]

DETECTOR1_OVERRIDES = {
    "dq_init": ("mask",), "saturation": ("saturation", "superbias"), "superbias": ("superbias",),
    "linearity": ("linearity",), "dark_current": ("dark",), "jump": ("gain", "readnoise"),
    "ramp_fit": ("gain", "readnoise"), "gain_scale": ("gain",),
}
"""jwst step -> reference types it is given (as ``--override step.reftype=path``)."""

DETECTOR1_SKIPS = ("ipc", "persistence", "charge_migration", "clean_flicker_noise")
"""jwst detector1 steps webbflow does not run (no reference files for them offline)."""

INTERMEDIATE_STEPS = ("dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current", "jump")
"""Steps whose intermediate RampModel jwst saves as ``<root>_<step>.fits``."""


class OracleUnavailable(RuntimeError):
    """The oracle environment or its driver script is missing."""


def oracle_paths():
    """(python, script) of the oracle; raise :class:`OracleUnavailable` with the fix if absent."""
    python = Path(os.environ.get("WEBBFLOW_ORACLE", REPO / ".oracle")) / "bin" / "python"
    script = Path(os.environ.get("WEBBFLOW_ORACLE_SCRIPT",
                                 REPO.parent / "shared" / "oracle" / "jwst_offline.py"))
    if not python.exists():
        raise OracleUnavailable(f"no oracle environment at {python.parent.parent}: "
                                "run benchmarks/setup_oracle.sh (makes .oracle with jwst==3.0.0)")
    if not script.exists():
        raise OracleUnavailable(f"oracle driver {script} not found: set WEBBFLOW_ORACLE_SCRIPT")
    return python, script


def detector1_command(uncal, references, outdir, save_steps=False, skip=(), settings=None):
    """The command line that runs jwst's detector1 on ``uncal`` with our references.

    Parameters
    ----------
    uncal : path-like
    references : dict
        reftype -> path (mask, saturation, superbias, linearity, dark, gain, readnoise).
    outdir : path-like
    save_steps : bool
        Also save every stage-1 step's intermediate ramp.
    skip : iterable of str
        jwst steps to skip besides :data:`DETECTOR1_SKIPS`.
    settings : dict, optional
        ``{"jump.rejection_threshold": 5.0, ...}`` step parameters.
    """
    python, script = oracle_paths()
    cmd = [str(python), str(script), "detector1", str(uncal), str(outdir)]
    for step, reftypes in DETECTOR1_OVERRIDES.items():
        cmd += [f"--override={step}.{t}={references[t]}" for t in reftypes if references.get(t)]
    cmd += [f"--skip={s}" for s in (*DETECTOR1_SKIPS, *skip)]
    if save_steps:
        cmd += [f"--set={s}.save_results=true" for s in INTERMEDIATE_STEPS]
    cmd += [f"--set={k}={v}" for k, v in (settings or {}).items()]
    return cmd


def run_detector1(uncal, references, outdir, save_steps=False, skip=(), settings=None, timeout=900):
    """Run jwst detector1; return ``{suffix: path}`` of what it wrote and its wall time.

    Returns
    -------
    products : dict
        ``rate``, ``rateints`` and, with ``save_steps``, one entry per step in
        :data:`INTERMEDIATE_STEPS`.
    wall : float
        Wall time of the whole oracle process, seconds.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = detector1_command(uncal, references, outdir, save_steps, skip, settings)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=outdir)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"jwst detector1 failed on {uncal} (exit {proc.returncode})")
    root = Path(uncal).name.removesuffix("_uncal.fits")
    products = {p.stem.removeprefix(root + "_"): p for p in outdir.glob(f"{root}_*.fits")}
    return products, wall
