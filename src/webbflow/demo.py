"""The bundled demo program, written all-or-nothing (the ``demo`` job).

The simulator writes the whole demo (``uncal/``, ``refs/``, ``truth/``,
``astrometry/`` (the field's Gaia-like catalog), ``wisps/`` (wisp templates, when the preset has
wisps), ``crds_cache/``) into a fresh hidden sibling folder (``<outdir>/.demo.<random>.part``);
only when it is complete are the folders renamed into place (``uncal/`` last) and
then the manifest, the job's output, is written.  An interruption at any point
leaves either nothing of the demo, or pieces that carry marks saying they are ours
(the next run cleans and re-simulates them):

- ``<outdir>/.demo.*.part``: a simulation that did not finish (always ours);
- ``<outdir>/.webbflow-demo.installing``: the folders were being renamed into
  place; it lists them;
- ``<outdir>/uncal/.webbflow-demo.json`` (the stamp): written with the demo,
  the manifest's record plus the folders; a demo with the stamp and without the
  manifest is reused only when it is exactly the stamp's.

Files without these marks (the user's own ``*_uncal.fits`` in ``<outdir>/uncal``)
are never replaced.  :func:`demo_problem` tells the workflow, before it trusts
the uncal folder, whether the demo is complete: its manifest exists and lists
exactly the uncal files present.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from webbflow.io.errors import InputError
from webbflow.io.files import atomic_write_text

__all__ = ["ABVEGAOFFSET_NAME", "APCORR_NAME", "GAIA_CATALOG", "INSTALLING", "PAUSE_AFTER", "PIECES", "STAMP",
           "WISP_DIR", "demo_problem", "write_demo"]

log = logging.getLogger("webbflow.demo")

PIECES = ("refs", "truth", "astrometry", "wisps", "crds_cache", "uncal")
"""The demo's folders, in the order they are renamed into place (``uncal/``, with the stamp, last)."""
STAMP = ".webbflow-demo.json"
INSTALLING = ".webbflow-demo.installing"
CRDS_CONTEXT = "jwst_9000.pmap"

# Where the simulator puts what the workflow reads of a simulation, relative to its output folder.  They
# live here, not in webbflow.simulate (whose modules re-export them), so that planning (the workflow's
# rules) does not import the simulator: ~1.5 s of CPU (astropy.modeling, via the optics) per snakemake.
WISP_DIR = "wisps"
"""Folder of the wisp templates in a simulation's output folder."""
GAIA_CATALOG = "astrometry/gaia_dr3_like.ecsv"
"""The sky scene's Gaia-like astrometric catalog, in the simulation's output folder."""
APCORR_NAME = "webbflow_nircam_apcorr.fits"
"""The simulator's APCORR reference in ``<outdir>/refs`` (every filter, PUPIL CLEAR)."""
ABVEGAOFFSET_NAME = "webbflow_nircam_abvegaoffset.asdf"
"""The simulator's ABVEGAOFFSET reference in ``<outdir>/refs`` (every filter, PUPIL CLEAR)."""


def _uncal_names(folder):
    folder = Path(folder)
    return sorted(p.name for p in folder.glob("*_uncal.fits")) if folder.is_dir() else []


def _remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def demo_problem(outdir, manifest):
    """Why the demo under ``outdir`` is not complete, or None when it is.

    Complete: ``manifest`` exists, is readable, and lists exactly the
    ``*_uncal.fits`` files present in ``<outdir>/uncal``.
    """
    manifest = Path(manifest)
    if not manifest.exists():
        return f"{manifest} does not exist"
    try:
        listed = sorted(json.loads(manifest.read_text())["uncal"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{manifest} is unreadable ({exc})"
    present = _uncal_names(Path(outdir) / "uncal")
    missing = sorted(set(listed) - set(present))
    extra = sorted(set(present) - set(listed))
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} listed file(s) missing ({missing[0]}{', ...' if len(missing) > 1 else ''})")
    if extra:
        parts.append(f"{len(extra)} unlisted file(s) ({extra[0]}{', ...' if len(extra) > 1 else ''})")
    return f"{Path(outdir) / 'uncal'} does not match {manifest}: " + "; ".join(parts)


def _clean_ours(outdir):
    """Remove what an interrupted demo job of ours left: temporary folders, half-installed pieces."""
    for tmp in outdir.glob(".demo.*.part"):
        log.info("removing %s (an interrupted simulation)", tmp)
        _remove(tmp)
    installing = outdir / INSTALLING
    if installing.exists():
        try:
            pieces = [p for p in json.loads(installing.read_text()) if p in PIECES]
        except (OSError, ValueError, TypeError):
            pieces = list(PIECES)  # the marker itself is ours, and names only our folders
        for piece in pieces:
            if (outdir / piece).exists():
                log.info("removing %s (an interrupted installation of the demo)", outdir / piece)
                _remove(outdir / piece)
        installing.unlink()


def _read_stamp(uncal_dir):
    try:
        stamp = json.loads((uncal_dir / STAMP).read_text())
        return stamp if isinstance(stamp, dict) else {}
    except (OSError, ValueError):
        return {}


PAUSE_AFTER = "WEBBFLOW_DEMO_PAUSE_AFTER"
"""Fault injection: with this environment variable set to N, the demo simulation stops after N uncal
files, writes ``<tmp>/.paused`` and waits (at most 10 min) for a signal, so that a test's interruption
always lands mid-simulation however loaded the machine is."""


def _pause_hook(tmp):
    """The ``after_each`` hook of the simulation: the :data:`PAUSE_AFTER` pause, or None when unset."""
    after = os.environ.get(PAUSE_AFTER)
    if not after:
        return None

    def pause(paths):
        if len(paths) == int(after):
            log.warning("%s=%s: paused after %d uncal files until interrupted", PAUSE_AFTER, after, len(paths))
            (tmp / ".paused").write_text(f"{len(paths)}\n")
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                time.sleep(0.2)  # a signal interrupts this (SIGINT: KeyboardInterrupt)

    return pause


def _simulate(tmp, preset, seed):
    """Write the demo into ``tmp``; return its record (the manifest's content)."""
    from webbflow.simulate import run_preset

    paths = run_preset(preset, tmp, seed=seed, after_each=_pause_hook(tmp))
    # The demo's references are selected through crds from a local cache (no server): build it from the
    # reference files' headers (a new type written into refs/ is picked up automatically).
    crds_context = None
    if (tmp / "refs").is_dir() and any((tmp / "refs").glob("*.fits")):
        from webbflow.refs.crds_cache import build_cache

        crds_context = build_cache(tmp / "refs", tmp / "crds_cache", context=CRDS_CONTEXT)
    return {"preset": preset, "seed": seed, "uncal": sorted(Path(p).name for p in paths),
            "crds_context": crds_context}


def write_demo(outdir, preset, seed, manifest, simulate=_simulate):
    """Write the demo program under ``outdir`` all-or-nothing, then ``manifest`` (written last).

    Parameters
    ----------
    outdir : path-like
        Demo folder: ``uncal/``, ``refs/``, ``truth/``, ``crds_cache/`` are written below it.
    preset : str
        :func:`webbflow.simulate.run_preset` preset.
    seed : int
    manifest : path-like
        JSON: preset, seed, uncal file names, CRDS context.
    simulate : callable, optional
        ``simulate(tmpdir, preset, seed) -> record`` (tests inject failures here).

    Returns
    -------
    dict
        The manifest's record.

    Raises
    ------
    InputError
        If a demo folder (``refs/``...) exists that is not ours and no uncal files say what it is.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    uncal_dir = outdir / "uncal"
    _clean_ours(outdir)

    stamp = _read_stamp(uncal_dir)
    if stamp:
        pieces = [p for p in stamp.get("pieces", PIECES) if p in PIECES]
        if (stamp.get("preset") == preset and stamp.get("seed") == seed
                and stamp.get("uncal") == _uncal_names(uncal_dir)
                and all((outdir / p).is_dir() for p in pieces)):
            log.info("%s holds the complete demo (preset %s, seed %s); reusing it", uncal_dir, preset, seed)
            record = {k: stamp.get(k) for k in ("preset", "seed", "uncal", "crds_context")}
            atomic_write_text(manifest, json.dumps(record, indent=1))
            return record
        log.info("%s holds another or an incomplete demo of ours; simulating it again", uncal_dir)
        for piece in pieces:
            _remove(outdir / piece)
    elif _uncal_names(uncal_dir):
        return _user_uncal(outdir, preset, seed, manifest)

    if uncal_dir.is_dir() and not any(uncal_dir.iterdir()):
        uncal_dir.rmdir()
    for piece in PIECES:
        if (outdir / piece).exists():
            raise InputError(outdir / piece, "exists, but holds no demo of ours (no uncal files, no demo manifest)",
                             f"remove it (the demo writes {', '.join(PIECES)} itself) or set demo.outdir "
                             "to another folder")

    log.info("writing demo preset %s to %s (via a temporary folder)", preset, outdir)
    tmp = Path(tempfile.mkdtemp(prefix=".demo.", suffix=".part", dir=outdir))
    try:
        record = simulate(tmp, preset, seed)
        pieces = [p for p in PIECES if (tmp / p).is_dir()]
        (tmp / "uncal").mkdir(exist_ok=True)
        if "uncal" not in pieces:
            pieces.append("uncal")
        (tmp / "uncal" / STAMP).write_text(json.dumps({**record, "pieces": pieces}, indent=1))
        # Renamed into place on one file system; the marker says, until the last rename, that they are ours.
        atomic_write_text(outdir / INSTALLING, json.dumps(pieces))
        for piece in pieces:
            os.rename(tmp / piece, outdir / piece)
        (outdir / INSTALLING).unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d exposures", len(record["uncal"]))
    atomic_write_text(manifest, json.dumps(record, indent=1))
    return record


def _user_uncal(outdir, preset, seed, manifest):
    """The uncal folder holds someone's own files: never overwritten; the manifest lists them."""
    uncal_dir = outdir / "uncal"
    names = _uncal_names(uncal_dir)
    log.info("%s already holds %d uncal files (not a demo of ours); not simulating", uncal_dir, len(names))
    refs_dir = outdir / "refs"
    crds_context = None
    if refs_dir.is_dir() and any(refs_dir.glob("*.fits")):
        from webbflow.refs.crds_cache import build_cache

        crds_context = build_cache(refs_dir, outdir / "crds_cache", context=CRDS_CONTEXT)
        log.info("CRDS cache %s written with context %s", outdir / "crds_cache", crds_context)
    record = {"preset": preset, "seed": seed, "uncal": names, "crds_context": crds_context}
    atomic_write_text(manifest, json.dumps(record, indent=1))
    return record
