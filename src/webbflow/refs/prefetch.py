"""Select and fetch every reference of a run once, then lock the choice.

This is the step that runs before any per-exposure job: for each exposure
it asks crds for the best references (``crds.getreferences``: from the
server into the cache when one is configured, from the local cache
otherwise), applies the user's overrides, and writes the lockfile.  The
per-exposure jobs afterwards only read files that are complete in the cache.
"""

import logging
from pathlib import Path

from astropy.io import fits

from webbflow.io.errors import ReferenceFileError
from webbflow.refs import crds_select
from webbflow.refs.lockfile import build_lockfile, write_lockfile

__all__ = ["context_mappings", "prefetch", "select_exposure"]

log = logging.getLogger(__name__)


def select_exposure(uncal, reftypes, setup, context, overrides=None, fetch=False, primary=None):
    """Reference paths for one exposure: overrides first, then crds.

    Parameters
    ----------
    uncal : path-like
        The exposure (its primary header gives the crds parameters).
    reftypes : sequence of str
    setup : crds_select.CrdsSetup
        Already applied with :func:`crds_select.configure`.
    context : str
        Resolved ``.pmap``.
    overrides : dict, optional
        reftype -> path; wins over crds.
    fetch : bool
        Fetch into the cache (``crds.getreferences``) rather than only name
        the files (``crds.getrecommendations``).
    primary : Mapping, optional
        The exposure's primary header, already read (planning): its crds parameters then come from
        :func:`~webbflow.refs.crds_select.planning_parameters`, not a datamodel per exposure.

    Returns
    -------
    dict
        reftype -> path (None where the rules say N/A).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    for reftype, path in overrides.items():
        if reftype in reftypes and not Path(path).is_file():
            raise ReferenceFileError(path, f"overrides.{reftype} names a file that does not exist",
                                     f"correct overrides.{reftype} in the config")
    asked = [t for t in reftypes if t not in overrides]
    chosen = {}
    if asked:
        params = (crds_select.crds_parameters(fits.getheader(uncal, 0)) if primary is None
                  else crds_select.planning_parameters(primary))
        names = crds_select.best_references(params, asked, setup, context, fetch=fetch, source=str(uncal))
        chosen = {t: (crds_select.locate(n, setup) if n else None) for t, n in names.items()}
    chosen.update({t: str(Path(p).resolve()) for t, p in overrides.items() if t in reftypes})
    return {t: chosen[t] for t in reftypes}


def context_mappings(context):
    """Names of the pmap, imaps and rmaps of ``context`` (loaded through crds)."""
    import crds

    return sorted(crds.get_cached_mapping(context).mapping_names())


def prefetch(uncals, reftypes, setup, context, lock_path, overrides=None, expected=None, previous=None):
    """Fetch every reference of ``uncals`` into the cache and write the lockfile.

    Parameters
    ----------
    uncals : dict
        Exposure root name -> uncal path.
    reftypes : sequence of str or dict
        The types to choose for every exposure, or root name -> the types of that exposure (those
        of its mode's stages, :func:`webbflow.config.stage_reftypes`); the lockfile records, per
        exposure, exactly the types it was asked for.
    setup : crds_select.CrdsSetup
        Writable (not read-only): this is the one process that fills the cache.
    context : str
        ``.pmap`` name or ``latest`` (resolved here).
    lock_path : path-like
        Where the lockfile goes (``results/crds.lock.json``).
    overrides : dict, optional
    expected : dict, optional
        root -> {reftype: path} the workflow planned with; a different
        choice now (the cache changed in between) is an error.
    previous : dict, optional
        The lockfile being replaced: a CRDS file it locked whose bytes
        changed since is refused (never re-locked silently); deleting the
        lockfile re-locks on purpose.

    Returns
    -------
    dict
        The lockfile content.
    """
    crds_select.configure(setup)
    context = crds_select.resolve_context(setup) if context == "latest" else context
    selections = {}
    for i, (root, uncal) in enumerate(sorted(uncals.items()), 1):
        types = reftypes[root] if isinstance(reftypes, dict) else reftypes
        # crds parameters from the header's keyword map, not a datamodel per exposure (minutes at survey scale)
        selections[root] = select_exposure(uncal, types, setup, context, overrides, fetch=True,
                                           primary=fits.getheader(uncal, 0))
        if expected and root in expected and expected[root] != selections[root]:
            raise ReferenceFileError(uncal, f"crds now selects {selections[root]}, not the planned "
                                     f"{expected[root]}", "the CRDS cache changed during the run: run again")
        log.info("[%d/%d] %s: %s", i, len(uncals), root,
                 ", ".join(f"{t}={Path(p).name if p else 'N/A'}" for t, p in selections[root].items()))
    lock = build_lockfile(selections, context, setup.cache, crds_select.crds_version(),
                          mappings=context_mappings(context))
    _refuse_changed(lock, previous, setup, lock_path)
    write_lockfile(lock_path, lock)
    log.info("locked %d references of %d exposures under %s in %s", len(lock["references"]), len(selections),
             context, lock_path)
    return lock


def _refuse_changed(lock, previous, setup, lock_path):
    """Raise for a CRDS file of ``lock`` that ``previous`` locked with other bytes."""
    if not previous:
        return
    for name, entry in lock["references"].items():
        before = previous.get("references", {}).get(name)
        if entry.get("override") or not before or before.get("override") or before["sha256"] == entry["sha256"]:
            continue
        raise ReferenceFileError(crds_select.locate(name, setup),
                                 f"sha256 {entry['sha256'][:12]}… differs from the {before['sha256'][:12]}… locked in "
                                 f"{lock_path}: the file changed inside the CRDS cache",
                                 f"restore the original file, or re-lock on purpose: delete {lock_path} and run again")
