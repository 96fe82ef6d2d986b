"""Exposure table, wildcard constraints, and input/param functions of the rules."""

import copy
import logging
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import IncompleteCheckpointException

from webbflow.config import (DETECTOR1_EXTRA_STEPS, SKIPPED_EXP_TYPES, STAGES, canonical_json, deep_merge, mode_for,
                             stage_reftypes, step_parameters)
from webbflow.demo import demo_problem
from webbflow.exposures import exposure_table
from webbflow.io.errors import InputError
from webbflow.io.uncal import read_uncal_headers
from webbflow.refs import DETECTOR1_REFTYPES, select_references
from webbflow.refs.identity import DigestCache, portable_path, reference_identity
from webbflow.workflow import lock_results_dir

logger = logging.getLogger("webbflow.workflow")

RESULTS = config["results_dir"]
_RESULTS_LOCK = []  # the open lock file of results_dir (references.smk's onstart), held until the run ends
UNCAL_DIR = config["inputs"]["uncal_dir"]
DEMO_DIR = config["demo"]["outdir"]
DEMO_MANIFEST = f"{DEMO_DIR}/manifest.json"
# The demo is simulated only when it is what the user asked to reduce.
USE_DEMO = Path(UNCAL_DIR) == Path(DEMO_DIR) / "uncal"
REFS_DIR = config["references"]["dir"] or (f"{DEMO_DIR}/refs" if USE_DEMO else None)
# MODES (the enabled presets, validated) is set by the Snakefile.
EXP_TYPES = sorted({t for preset in MODES.values() for t in preset.get("exp_types", [])})
OVERRIDES = {k: v for k, v in config["overrides"].items() if v}

# --- References through CRDS (issue 4) ----------------------------------------------------------------
# references.dir set: the folder mode (webbflow.refs.select); otherwise crds chooses from crds.cache
# (the demo's own local cache when reducing the demo) under crds.context, for the types that
# overrides do not give.  A job whose types the overrides all give never consults crds (issue 11):
# no cache is needed for it, and it has no lockfile input.
USE_CRDS = not config["references"]["dir"]
CRDS_CACHE = config["crds"]["cache"] or (f"{DEMO_DIR}/crds_cache" if USE_DEMO else os.environ.get("CRDS_PATH"))
CRDS_LOCK = f"{RESULTS}/crds.lock.json"
# Every reference type an enabled mode's stages read; each exposure asks crds only for those of its
# own mode's stages (exposure_reftypes: an imaging exposure has no specwcs).
CRDS_REFTYPES = stage_reftypes(s for preset in MODES.values() for s in preset["stages"])
# Root names of the exposures whose planned jobs read files chosen by crds: the onstart re-lock
# runs only when there is one (input functions run while the DAG is built, before onstart).
_LOCK_WANTED = set()


# --- Data from MAST (issue 4): a program's uncal files are downloaded into inputs.uncal_dir first.
USE_MAST = bool(config["download"]["program"]) and not USE_DEMO
DOWNLOAD_MANIFEST = f"{RESULTS}/download/manifest.json"


def _supported(table):
    """Drop (or refuse) exposures that no enabled mode reduces."""
    unsupported = [e for e in table if e.exp_type not in EXP_TYPES]
    # target-acquisition images of a coronagraphic program are not reduced by any mode: skipped with
    # their reason even where unsupported types are errors
    for e in [e for e in unsupported if e.exp_type in SKIPPED_EXP_TYPES and "coronagraphy" in config["modes"]]:
        logger.warning("skipping %s: %s", e.path, SKIPPED_EXP_TYPES[e.exp_type])
        unsupported.remove(e)
        table = [t for t in table if t is not e]
    if unsupported and config["inputs"]["on_unsupported"] == "error":
        raise InputError(unsupported[0].path, f"EXP_TYPE {unsupported[0].exp_type} is not reduced by modes "
                         f"{config['modes']} (supported: {', '.join(EXP_TYPES)})",
                         "remove it from inputs.uncal_dir or set inputs.on_unsupported: skip")
    for e in unsupported:
        logger.warning("skipping %s: EXP_TYPE %s is not supported by modes %s", e.path, e.exp_type, config["modes"])
    kept = {e.rootname: e for e in table if e.exp_type in EXP_TYPES}
    if unsupported:
        # on_unsupported: skip was asked for: a warning with the count, exit 0 (issue 12 item 8)
        logger.warning("webbflow: skipped %d of %d exposures (EXP_TYPE not reduced by modes %s; "
                       "inputs.on_unsupported: skip)%s", len(unsupported), len(table), config["modes"],
                       ": nothing to reduce" if not kept else "")
    return kept


# --- Bad inputs (issue 12 item 7) ----------------------------------------------------------------------
# A file the exposure table refuses (unreadable header, a bad keyword, a duplicate, a segment of an
# incomplete series) or, in CRDS mode, an exposure crds has no reference for, is left out of the plan
# and becomes a target of its own: rule bad_input fails with its one line.  So a run with keep-going
# (the workflow profile sets it) reduces everything else and exits non-zero naming each file; without
# it the run stops at the first such job.  (The choice is snakemake's: its execution settings do not
# exist yet while this file is parsed.)  Only when no good exposure is left does planning itself stop.
BAD_INPUTS = {}  # uncal file name -> InputError


def refuse_input(exc):
    """Leave ``exc``'s file out of the plan: log its one line once and add its bad_input target."""
    name = Path(exc.path).name
    if name not in BAD_INPUTS:
        logger.error("webbflow: skipping bad input %s", exc)
    BAD_INPUTS[name] = exc


def bad_input_targets():
    """The bad_input jobs' outputs (never written: each job fails with its file's line)."""
    return [f"{RESULTS}/bad_input/{name}" for name in sorted(BAD_INPUTS)]


def start_job_server():
    """onstart: start the warm job server(s) the planned jobs will use, so that the first jobs find it
    warm (its imports and warm-up take 3-4 s of CPU) instead of running in-process while it starts.

    Only for a run whose jobs execute on this machine (the local executor: a cluster executor's jobs
    start on other nodes) with ``jobs.warm_server`` on (:func:`webbflow.jobmode.wanted`; ``auto`` is
    on unless this process runs inside a batch job); never in a dry run (onstart does not run then).
    One server for every job to run, whatever its ``threads`` (each forked job applies its own),
    warmed for the kinds (their rules' names) of the jobs to run (every kind while a checkpoint is to
    run: the jobs after it are not planned yet).
    """
    from webbflow.jobmode import wanted

    if not workflow.local_exec or not wanted(config):
        return
    try:
        from webbflow.jobserver import job_kind, start_early

        planned = list(workflow.dag.needrun_jobs())
        jobs = [job for job in planned if not job.is_group()]
        # The server warms only for the planned kinds (their rules' names): a grism run's skips
        # image3's imports.  A checkpoint to run (the demo, a download) plans the rest after it, and
        # a group hides its jobs' rules: every kind then.  An image2 job writing a calints (a time
        # series' or coronagraphy's segment) is of kind image2_ints: no ImageModel warm-up for it.
        whole = any(job.is_group() or job.is_checkpoint for job in planned)
        kinds = None if whole else {job_kind(job.rule.name, job.output) for job in jobs}
        for line in start_early(jobs=kinds):
            logger.info("webbflow: job server: %s", line)
    except Exception as exc:  # noqa: BLE001 (the jobs start it themselves, or run in-process)
        logger.warning("webbflow: job server not started early (%s: %s)", type(exc).__name__, exc)


DEFAULT_RATE_LIMIT = (100, 1)
"""Snakemake's default ``--max-jobs-per-timespan`` (100/1s): jobs, seconds."""


def drop_default_rate_limit():
    """onstart: a local run schedules without Snakemake's default job rate limit (100 jobs a second).

    With a limiter, every scheduling pass (each job's end is one) also starts a timer that runs another
    pass a second later, which starts its own: the passes pile up (1,094 for the 83 jobs of the
    32-exposure subarray program), each one stat()ing every ready job's inputs, and cost Snakemake's
    process 2-2.5 s of CPU on two cores shared with the jobs (issue 18: 5.2-6.0 s -> 3.1-3.6 s).  A
    local run never starts 100 jobs a second, so the limit there only costs that.  A limit the user
    set (any other value: the SLURM profile's ``max-jobs-per-second``) and a cluster executor's run
    keep theirs.  The scheduler is made before onstart runs and reads ``job_rate_limiter`` on every
    pass; a Snakemake without these attributes is left as it is.
    """
    scheduler = getattr(workflow, "scheduler", None)
    limiter = getattr(scheduler, "job_rate_limiter", None)
    if not workflow.local_exec or limiter is None:
        return
    try:
        default = (limiter.max_jobs, limiter.timespan) == DEFAULT_RATE_LIMIT
    except AttributeError:
        return
    if default and getattr(scheduler, "resources", {}).get("_job_count") == sys.maxsize:
        scheduler.job_rate_limiter = None


SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


def job_command(script, namespace):
    """The command of a stage rule, ``shell: job_command("<job>.py", locals())``: the adapter script
    ``workflow/scripts/<job>.py`` started on a file describing the job, without the ``script:``
    preamble's imports (~0.1 s of CPU per job; :mod:`webbflow.jobclient`).  Read with the rule (no
    job), it is the constant text Snakemake records as the rule's code."""
    from webbflow.jobclient import shell_command

    return shell_command(namespace, SCRIPTS / script, config)


def bad_input_summary():
    """onerror: the files skipped and why, once more at the end of the run's log."""
    if BAD_INPUTS:
        logger.error("webbflow: %d bad input file(s) skipped, nothing made from them:\n%s", len(BAD_INPUTS),
                     "\n".join(f"  {exc}" for _, exc in sorted(BAD_INPUTS.items())))


# root name -> primary header (a plain dict) of every exposure read: each uncal header is read once per
# planning process, by the table; reference selection and crds take it from here.
_HEADERS = {}
# Bumped whenever the table's rows change: what is derived from the rows (the crds screening, the
# stage lists, the associations) is computed once per version, not once per job.
_TABLE_VERSION = [0]


def primary_header(exposure):
    """The primary header of ``exposure`` (read by the exposure table; read here only if it was not)."""
    if exposure.rootname not in _HEADERS:
        _HEADERS[exposure.rootname] = dict(read_uncal_headers(exposure.path).primary.items())
    return _HEADERS[exposure.rootname]


def _read_table():
    """The exposure table of inputs.uncal_dir, bad files left out (refused); planning stops only when
    no file is good."""
    errors = []
    _TABLE_VERSION[0] += 1
    table = exposure_table(UNCAL_DIR, errors=errors, headers=_HEADERS)
    if errors and not table:
        for exc in errors[1:]:
            logger.error("webbflow: %s", exc)
        raise errors[0]
    for exc in errors:
        refuse_input(exc)
    return _supported(table)


# root name -> reftype -> path crds chose for the exposure (exposure_reftypes), from the screening below.
_CRDS_CHOICE = {}


def _screen_crds(table):
    """CRDS mode: an exposure for which crds has no reference of a type the run asks it for is a bad
    input too (its one line names the type, the context and the fixes); the others are reduced.

    Every exposure needs all of its mode's types (exposure_reftypes; the lockfile locks them all), so
    this is checked once per exposure when the table is read; with no cache configured crds is never consulted.
    """
    from webbflow.refs.crds_select import MissingReferenceError

    if not USE_CRDS or not CRDS_CACHE or not crds_types(CRDS_REFTYPES) or _SCREENED[0] == _TABLE_VERSION[0]:
        return
    missing = []
    for root, exposure in list(table.items()):
        if root in _CRDS_CHOICE:
            continue
        try:
            _CRDS_CHOICE[root] = crds_references(exposure, exposure_reftypes(exposure))
        except MissingReferenceError as exc:
            missing.append(exc)
            del table[root]
    if missing and not table:
        raise missing[0]  # nothing could be reduced: planning stops with the first line
    _TABLE_VERSION[0] += len(missing) > 0
    _SCREENED[0] = _TABLE_VERSION[0]
    for exc in missing:
        refuse_input(exc)


_SCREENED = [None]  # the table version _screen_crds last screened


def _demo_checked():
    """The demo's uncal folder is trusted only when complete: its manifest lists exactly the files present.

    No manifest: the demo job writes (or finishes, or cleans and re-writes) the demo first.  A manifest
    that does not match the folder (files deleted or added by hand) is one clear error, never a
    silently smaller program.
    """
    if not Path(DEMO_MANIFEST).exists():
        return False
    problem = demo_problem(DEMO_DIR, DEMO_MANIFEST)
    if problem:
        raise InputError(DEMO_MANIFEST, f"the demo is incomplete: {problem}",
                         f"delete {DEMO_MANIFEST} to have the next run simulate the demo again "
                         "(your own uncal files in that folder are kept)")
    _DEMO_READ["manifest"] = Path(DEMO_MANIFEST).read_text()
    _DEMO_READ["stat"] = _manifest_stat()
    return True


def _manifest_stat():
    """(mtime, size) of the demo manifest: compared per call of get_exposures instead of its text."""
    stat = os.stat(DEMO_MANIFEST)
    return stat.st_mtime_ns, stat.st_size


# The demo manifest the table was read with (a demo job re-run, e.g. for a new seed, rewrites it).
_DEMO_READ = {}


def _parse_time_table():
    """The table when the inputs already exist (for tight wildcard constraints)."""
    if USE_DEMO:
        # A demo being written (or interrupted) is not read here; get_exposures reads it after the checkpoint.
        return _read_table() if _demo_checked() else {}
    if Path(UNCAL_DIR).is_dir():
        if not USE_MAST and not any(Path(UNCAL_DIR).glob("*_uncal.fits")):
            raise InputError(UNCAL_DIR, "no *_uncal.fits files in this folder, so nothing would be reduced",
                             "put the exposures there, set inputs.uncal_dir to their folder, or delete "
                             "the inputs.uncal_dir line to reduce the demo")
        return _read_table()
    if not USE_DEMO and not USE_MAST:
        raise InputError(UNCAL_DIR, "input folder not found", "set inputs.uncal_dir to the folder of *_uncal.fits files")
    return {}


_TABLE = _parse_time_table()
_KNOWN = list(_TABLE.values())


def get_exposures():
    """Reducible exposures by root name (after the demo is written, when reducing the demo)."""
    if USE_DEMO:
        checkpoints.demo.get()
        # the text is read again only when the file changed (a stat per call, not a read per job)
        stat = _manifest_stat()
        if _DEMO_READ.get("stat") != stat:
            if _DEMO_READ.get("manifest") != Path(DEMO_MANIFEST).read_text() and _demo_checked():
                # the demo was just written: read its headers now
                _TABLE.clear()
                _TABLE.update(_read_table())
            else:
                _DEMO_READ["stat"] = stat
    if USE_MAST and not _DOWNLOAD_READ:
        checkpoints.download.get()  # the table is built after the download
        # once per process, after the checkpoint: the folder no longer changes while this plans
        if not _TABLE or len(_TABLE) + len(BAD_INPUTS) < len(list(Path(UNCAL_DIR).glob("*_uncal.fits"))):
            _TABLE.update(_read_table())
        _DOWNLOAD_READ.append(True)
    _screen_crds(_TABLE)
    return _TABLE


_DOWNLOAD_READ = []  # set once the downloaded folder's table is read


def _constraint(values, fallback):
    """Alternation of the table's values, so that no product path is ambiguous."""
    return "|".join(re.escape(v) for v in sorted(values)) if values else fallback


wildcard_constraints:
    filter=_constraint({e.filter.lower() for e in _KNOWN}, r"f\d{3}[wmn]2?|[a-z0-9]+"),
    detector=_constraint({e.detector.lower() for e in _KNOWN}, r"nrc(?:a[1-4]|b[1-4]|along|blong)"),
    exposure=_constraint({e.exposure_id for e in _KNOWN}, r"jw\d{11}_\d{3}[0-9a-z]{2}_\d{5}(?:-seg\d{3})?"),


def product_path(exposure, suffix, variant=None):
    """Path of an exposure's product: <results>/detector1/<filter>/<rootname>_<suffix>.fits.

    ``variant`` (a name of config ``variants``): the variant's own product, under
    <results>/variants/<variant>/, when its detector1 parameters differ from the main config's; else
    the main tree's, which the variant shares (it is not computed again).
    """
    root = RESULTS
    if variant and exposure_detector1_steps(exposure, variant) != exposure_detector1_steps(exposure):
        root = variant_dir(variant)
    return f"{root}/detector1/{exposure.filter.lower()}/{exposure.rootname}_{suffix}.fits"


def variant_dir(variant):
    """<results>/variants/<variant>: the products a variant computes itself."""
    return f"{RESULTS}/variants/{variant}"


# Stage name -> function(exposures) -> its product paths; each stage's rules register theirs.
STAGE_PRODUCTS = {"detector1": lambda exposures: [product_path(e, s) for e in exposures for s in ("rate", "rateints")]}


def mode_of(exposure):
    """The enabled mode (preset name) that reduces ``exposure``."""
    return mode_for(exposure.exp_type, MODES)


def stage_exposures(stage):
    """The reducible exposures whose mode runs ``stage`` (computed once per version of the table)."""
    exposures = get_exposures()
    key = (stage, _TABLE_VERSION[0], len(exposures))
    if key not in _STAGE_EXPOSURES:
        _STAGE_EXPOSURES[key] = [e for e in exposures.values() if stage in MODES[mode_of(e)]["stages"]]
    return _STAGE_EXPOSURES[key]


_STAGE_EXPOSURES = {}


def products_of(target):
    """Input function of a target rule: the products of every stage (of the enabled modes) that
    belongs to ``target`` (``stage1``..``stage3``; None: every stage, rule ``all``)."""

    def products(wildcards):
        paths = [path for stage, paths in STAGE_PRODUCTS.items()
                 if target is None or STAGES[stage].target == target
                 for path in paths(stage_exposures(stage))]
        return paths + bad_input_targets()  # known once the table is read

    return products


def exposure_step_parameters(exposure, stage, preset_layer=None, extra_steps=(), variant=None):
    """Effective step parameters of ``stage`` for ``exposure``: schema defaults < its mode's preset
    (then its ``recommended`` layer unless ``step_defaults: jwst``, then ``preset_layer``, e.g. the
    demo's own tweaks) < the user's ``steps`` < ``mode_steps.<mode>``.  ``extra_steps``: further
    steps read from the same layers (``persistence``).  ``variant``: a name of config ``variants``,
    whose overrides are merged into the config first (None: the main config)."""
    return _mode_step_parameters(mode_of(exposure), stage, preset_layer, extra_steps, variant)


def _mode_step_parameters(mode, stage, preset_layer=None, extra_steps=(), variant=None, recommended=None):
    """As :func:`exposure_step_parameters` for ``mode``; ``recommended`` (default: the config's or the
    variant's ``step_defaults``) picks the preset's recommended line or jwst's (the report compares the two)."""
    # The layers are the same for every exposure of a mode: merged once per (mode, stage, layer,
    # variant, line), and each caller gets its own copy (detector1_steps edits its dict).  VARIANTS
    # (the Snakefile): name -> (its config as written, the same with every default filled).
    key = (mode, stage, canonical_json(preset_layer), tuple(extra_steps), variant, recommended)
    if key not in _STEP_PARAMETERS:
        user, full = VARIANTS[variant] if variant else (USER_CONFIG, config)
        preset = MODES[mode]
        if preset_layer:
            preset = deep_merge(preset, {"steps": {stage: preset_layer}})
        line = full["step_defaults"] == "recommended" if recommended is None else recommended
        _STEP_PARAMETERS[key] = step_parameters(full["steps"], stage, preset, user.get("steps"),
                                                (user.get("mode_steps") or {}).get(mode),
                                                recommended=line, extra_steps=extra_steps)
    return copy.deepcopy(_STEP_PARAMETERS[key])


_STEP_PARAMETERS = {}


def _persistence_of_mode(mode):
    return _mode_step_parameters(mode, "detector1", extra_steps=DETECTOR1_EXTRA_STEPS)["persistence"]


# steps.persistence (beyond jwst, off by default): when some enabled mode turns it on, every detector1 job
# writes its _highpix summary, and a job of such a mode waits for the summaries of the earlier exposures of
# its detector within the window.  Off, neither exists, so nothing links the jobs.
PERSISTENCE = any(not _persistence_of_mode(m).get("skip", True) for m in MODES)


def highpix_path(exposure):
    """The persistence summary of an exposure (``steps.persistence``), beside its rate product."""
    return f"{RESULTS}/detector1/{exposure.filter.lower()}/{exposure.rootname}_highpix.ecsv"


def persistence_inputs(exposure):
    """The summaries of the exposures of ``exposure``'s detector that ended less than
    ``steps.persistence.window`` s before it started (none when the option is off for its mode).
    Exposures without EXPSTART/EXPEND are never linked, and only strictly earlier starts count, so
    the links cannot form a cycle."""
    params = _persistence_of_mode(mode_of(exposure))
    if params.get("skip", True) or exposure.expstart <= 0:
        return []
    window = float(params["window"])
    return sorted(highpix_path(e) for e in _detector1_by_detector().get(exposure.detector, ())
                  if 0 < e.expstart < exposure.expstart and 0 <= (exposure.expstart - e.expend) * 86400.0 < window)


def _detector1_by_detector():
    """DETECTOR -> the detector1 exposures of that detector (once per version of the table, so that a
    job's persistence links look at its own detector's exposures only)."""
    exposures = stage_exposures("detector1")
    if _BY_DETECTOR.get("of") is not exposures:
        by = {}
        for e in exposures:
            by.setdefault(e.detector, []).append(e)
        _BY_DETECTOR.update(of=exposures, by=by)
    return _BY_DETECTOR["by"]


_BY_DETECTOR = {}


def exposure_of(wildcards):
    """The table row of the job's exposure."""
    return get_exposures()[f"{wildcards.exposure}_{wildcards.detector}"]


_REFS = {}


def chosen_references(wildcards):
    """reftype -> reference path chosen for the job's exposure (None when none matches)."""
    return exposure_references(exposure_of(wildcards), getattr(wildcards, "variant", None))


def exposure_references(exposure, variant=None):
    """reftype -> detector1 reference path chosen for ``exposure`` (None when none matches); under a
    ``variant`` it may add the SIRS kernel the main config's does not read."""
    key = (exposure.rootname, variant)
    if key not in _REFS:
        if USE_CRDS:
            refs = crds_references(exposure, DETECTOR1_REFTYPES, stage="detector1")
        else:
            refs = select_references(primary_header(exposure), REFS_DIR, OVERRIDES, DETECTOR1_REFTYPES)
        if uses_sirs(exposure, key[1]):
            refs["sirskernel"] = sirs_reference(exposure)
        # Paths relative to the project where they lie in it: a moved project keeps its inputs.
        _REFS[key] = {t: portable_path(p) for t, p in refs.items()}
    return _REFS[key]


def uses_sirs(exposure, variant=None):
    """Whether the exposure's refpix runs jwst's SIRS algorithm (``steps.refpix.refpix_algorithm: sirs``)."""
    refpix = exposure_step_parameters(exposure, "detector1", variant=variant).get("refpix") or {}
    return not refpix.get("skip") and refpix.get("refpix_algorithm") == "sirs"


def sirs_reference(exposure):
    """The SIRSKERNEL reference of a SIRS exposure: ``overrides.sirskernel``, else the reference folder's
    (``references.dir``, or the demo's ``refs/`` with the simulator's kernels); None (refpix then keeps
    the running median, as jwst without a kernel).  It is optional, so crds is not asked for it: the
    lockfile and its screening stay those of the stage-1 types."""
    if OVERRIDES.get("sirskernel"):
        return OVERRIDES["sirskernel"]
    if not REFS_DIR:
        return None
    return select_references(primary_header(exposure), REFS_DIR, None, ("sirskernel",))["sirskernel"]


# sha256 of the references that are not from the CRDS cache (overrides, folders), remembered by
# (path, size, mtime) so that planning does not re-read big files.
_DIGESTS = DigestCache(".snakemake/webbflow/digests.json")


def references_identity(references):
    """Canonical JSON of the portable identity of ``references`` (reftype -> path): a job's params.

    ``crds://<name>`` for CRDS files, name + sha256 for others (webbflow.refs.identity): another
    file re-runs the job, a moved or copied project re-runs nothing.
    """
    return canonical_json(reference_identity(references, crds_setup().cache if USE_CRDS and CRDS_CACHE else None,
                                             _DIGESTS))


_CRDS = {}


def crds_types(reftypes):
    """The types of ``reftypes`` crds must choose: those the overrides do not give."""
    return [t for t in reftypes if t not in OVERRIDES]


def crds_setup(exposure=None, reftypes=(), stage=None):
    """The run's CRDS setup, applied to this (the planning) process once.

    ``exposure``, ``reftypes`` and ``stage`` name, in the error for a missing cache, the job that
    needed crds and the types it lacks.
    """
    if "setup" not in _CRDS:
        from webbflow.refs.crds_select import CrdsSetup, configure

        if not CRDS_CACHE:
            if exposure is None:
                raise InputError("crds.cache", "no CRDS cache is configured (crds.cache unset, no $CRDS_PATH)",
                                 "set crds.cache to a CRDS cache folder, or references.dir to a folder of references")
            given = sorted(t for t in OVERRIDES if t in CRDS_REFTYPES)
            raise InputError(
                exposure.path,
                f"{stage or 'this exposure'} needs the {', '.join(reftypes)} reference(s), which no override gives "
                f"(overrides: {', '.join(given) or 'none'}), and no CRDS cache is configured to choose them "
                "(crds.cache unset, no $CRDS_PATH)",
                f"set crds.cache (or $CRDS_PATH) to a CRDS cache, references.dir to a folder of references, "
                f"or {', '.join(f'overrides.{t}' for t in reftypes)} to reference files")
        if USE_DEMO:
            checkpoints.demo.get()  # the demo writes its own cache
        server = config["crds"]["server_url"]
        # Planning only names files; with no server nothing may be written into the cache here.
        setup = CrdsSetup(CRDS_CACHE, config["crds"]["context"], server, readonly=not server)
        configure(setup)
        _CRDS["setup"] = setup
    return _CRDS["setup"]


def crds_context():
    """The pinned context (``latest`` resolved once per run, then recorded in the lockfile)."""
    if "context" not in _CRDS:
        from webbflow.refs.crds_select import resolve_context

        _CRDS["context"] = resolve_context(crds_setup())
        logger.info("CRDS context %s (crds.context: %s, cache %s)", _CRDS["context"],
                    config["crds"]["context"], crds_setup().cache)
    return _CRDS["context"]


def crds_references(exposure, reftypes, stage=None):
    """reftype -> path chosen by crds for ``exposure`` (overrides win; None where N/A).

    crds is consulted only for the types the overrides do not give: none left, no cache is needed.
    """
    from webbflow.refs.prefetch import select_exposure

    asked = crds_types(reftypes)
    if not asked:
        return select_exposure(exposure.path, reftypes, None, None, OVERRIDES)
    screened = _CRDS_CHOICE.get(exposure.rootname) or {}
    if all(t in screened for t in reftypes):
        return {t: screened[t] for t in reftypes}  # chosen once per exposure, when the table was screened
    return select_exposure(exposure.path, reftypes, crds_setup(exposure, asked, stage), crds_context(), OVERRIDES,
                           primary=primary_header(exposure))


def exposure_reftypes(exposure):
    """The reference types crds chooses and the lockfile records for ``exposure``: its mode's stages'."""
    return stage_reftypes(MODES[mode_of(exposure)]["stages"], exposure.exp_type)


def crds_relock():
    """Before any job starts (onstart): fetch and re-lock when the plan differs from the lockfile.

    The lockfile is an ancient() input of the per-exposure jobs, so re-locking re-runs only the
    products whose references (their params: portable names and digests) changed.  It is done
    here, in the one planning process, and not by a crds_prefetch job (that rule exists only
    while there is no lockfile, see references.smk).  A CRDS file whose bytes changed since it
    was locked is refused (webbflow.refs.prefetch); deleting the lockfile re-locks on purpose.
    """
    if not USE_CRDS or not _LOCK_WANTED:
        return  # no planned job reads a file chosen by crds: nothing to fetch or lock
    if (USE_DEMO and not Path(DEMO_MANIFEST).exists()) or (USE_MAST and not Path(DOWNLOAD_MANIFEST).exists()):
        return  # the crds_prefetch rule locks once the exposures exist
    try:
        if USE_DEMO:
            checkpoints.demo.get()
        if USE_MAST:
            checkpoints.download.get()
    except IncompleteCheckpointException:
        return  # the checkpoint re-runs in this run (e.g. after an interruption); crds_prefetch locks after it
    from webbflow.refs.crds_select import CrdsSetup
    from webbflow.refs.lockfile import read_lockfile
    from webbflow.refs.prefetch import prefetch

    exposures = get_exposures()
    reftypes = {root: exposure_reftypes(e) for root, e in exposures.items()}
    planned = {root: {t: (Path(p).name if p else None)
                      for t, p in (_CRDS_CHOICE.get(root) or crds_references(e, reftypes[root])).items()}
               for root, e in exposures.items()}
    if Path(CRDS_LOCK).exists():
        lock = read_lockfile(CRDS_LOCK)
        locked = {root: {t: (v or {}).get("file") for t, v in entry["references"].items()}
                  for root, entry in lock["exposures"].items()}
        # An override replaced by another file of the same name is re-locked too (the user's own file).
        overrides_same = all(lock["references"].get(Path(p).name, {}).get("sha256") == _DIGESTS.sha256(p)
                             for t, p in OVERRIDES.items() if t in CRDS_REFTYPES)
        if (lock["context"] == crds_context() and locked == planned and overrides_same
                and lock.get("cache") == crds_setup().cache):
            return
    else:
        lock = None
    setup = crds_setup()
    writer = CrdsSetup(setup.cache, crds_context(), config["crds"]["server_url"], readonly=False)
    logger.info("CRDS: fetching and locking the references of %d exposures (%s)", len(exposures), crds_context())
    prefetch({root: e.path for root, e in exposures.items()}, reftypes, writer, crds_context(), CRDS_LOCK,
             overrides=OVERRIDES, previous=lock)


def crds_prefetch_uncals(wildcards, input):
    """The uncal files whose references are prefetched (a derived param: not compared between runs)."""
    return sorted(e.path for e in get_exposures().values())


def crds_prefetch_reftypes(wildcards, input):
    """Root name -> the reference types of the exposure's mode (a derived param, as the uncals)."""
    return {root: list(exposure_reftypes(e)) for root, e in get_exposures().items()}


def crds_lock_input(wildcards, exposure=None):
    """The lockfile as an input of the job's exposure (and the note that a re-lock is wanted)."""
    _LOCK_WANTED.add((exposure or exposure_of(wildcards)).rootname)
    return ancient(CRDS_LOCK)


def crds_prefetch_inputs(wildcards):
    """What the prefetch waits for: the demo (which writes the cache) or the download.

    Not the uncal files: a new or touched uncal would re-run the prefetch, and snakemake does not
    re-check the jobs downstream of it (their link is ancient()); crds_relock() re-locks instead.
    """
    inputs = {}
    if USE_DEMO:
        inputs["demo"] = DEMO_MANIFEST
    if USE_MAST:
        inputs["download"] = DOWNLOAD_MANIFEST
    return inputs


def detector1_inputs(wildcards):
    """The uncal file and the reference files it is reduced with."""
    inputs = {"uncal": exposure_of(wildcards).path,
              "references": sorted({p for p in chosen_references(wildcards).values() if p})}
    if USE_CRDS and crds_types(DETECTOR1_REFTYPES):
        # CRDS files are immutable and fetched by crds_prefetch (they may not exist before it runs);
        # the lockfile orders the jobs after the prefetch, and ancient() keeps a re-lock from re-running
        # products whose references did not change.
        inputs["references"] = sorted(p for t, p in chosen_references(wildcards).items() if p and t in OVERRIDES)
        inputs["crds_lock"] = crds_lock_input(wildcards)
    if USE_DEMO:
        inputs["demo"] = DEMO_MANIFEST
    if USE_MAST:
        inputs["download"] = DOWNLOAD_MANIFEST
    if PERSISTENCE:
        inputs["persistence"] = persistence_inputs(exposure_of(wildcards))
    return inputs


def crds_stage_inputs(exposure, references, reftypes, checked=False):
    """The reference inputs of a later stage's job (image2, spec2, tso3) of ``exposure``.

    Files chosen by crds are fetched by the prefetch (they may not exist before it runs): the
    stage's input product orders the job after it, unless the overrides give every stage-1 type;
    then the lockfile does, and the cache's files are left out of the inputs, as detector1 does.
    ``checked``: the job checks its files against the lockfile and records crds://<file> (spec2,
    tso3): the lockfile is always its input then.
    """
    inputs = {"references": sorted({p for p in references.values() if p})}
    if USE_CRDS and crds_types(reftypes) and (checked or not crds_types(DETECTOR1_REFTYPES)):
        cache = Path(crds_setup().cache)
        inputs["references"] = [p for p in inputs["references"] if cache not in Path(p).resolve().parents]
        inputs["crds_lock"] = crds_lock_input(None, exposure)
    return inputs


def detector1_steps(wildcards):
    """Effective step parameters of the exposure (of its variant's config, for a variant's job) as
    canonical JSON (a params change reruns the job)."""
    return exposure_detector1_steps(exposure_of(wildcards), getattr(wildcards, "variant", None))


def exposure_detector1_steps(exposure, variant=None):
    """:func:`detector1_steps` of ``exposure`` under the main config or ``variant``'s."""
    params = exposure_step_parameters(exposure, "detector1", extra_steps=DETECTOR1_EXTRA_STEPS, variant=variant)
    if params["persistence"].get("skip", True):
        del params["persistence"]  # off: the parameters (and the products' digest) are as before the option
    return canonical_json(params)


def detector1_exp_types(wildcards):
    """EXP_TYPEs of the exposure's mode (per exposure: enabling another mode re-runs nothing here)."""
    return MODES[mode_of(exposure_of(wildcards))]["exp_types"]


def detector1_references(wildcards):
    """Portable identity of the chosen references (tracked params: a change re-runs the job)."""
    return references_identity(chosen_references(wildcards))


def detector1_reference_paths(wildcards, input):
    """reftype -> path the job reads.  Taking ``input`` makes this a derived param, which snakemake
    does not compare between runs: the identity above is what decides a re-run."""
    return chosen_references(wildcards)


# --- Resources per step (cluster requests) ---------------------------------------------------------
# A request is predicted from the size of the job's inputs: base + per_mb * input MB, doubled on each
# retry (a job killed for memory or time comes back with twice the request). Measured peak RSS of
# detector1: 236 MiB for a SUB160 exposure (1.2 MB uncal) and 1256 MiB for a full frame with 10
# groups (151 MB uncal), i.e. about 240 MiB + 6.8 MiB per uncal MB; the request keeps ~35 % headroom.
# Runtimes are generous (full frame: 9 s here) because queue-time limits are cheap and kills are not.
# A rule without a row uses "default" (sized on all its inputs). Override per site with
# `set-resources` in a profile (see profiles/slurm).
RESOURCE_MODEL = {
    # step: mem base MB, mem MB per input MB, runtime base min, runtime min per input MB, input sized on
    "detector1": dict(mem_base=500, mem_per_mb=8.0, runtime_base=5, runtime_per_mb=0.05, sized_on="uncal"),
    # a segment's rateints and its cutout copies: ~6x the float32 cube
    "spec2": dict(mem_base=600, mem_per_mb=6.0, runtime_base=5, runtime_per_mb=0.05, sized_on="rateints"),
    "default": dict(mem_base=1000, mem_per_mb=4.0, runtime_base=10, runtime_per_mb=0.1, sized_on=None),
}


def input_size_mb(input, sized_on=None):
    """Size in MB (1e6 bytes) of the input ``sized_on`` (None: all inputs); files not written yet count 0.

    Snakemake evaluates resources again once a job's inputs exist, so 0 only shows in dry runs.
    """
    paths = [getattr(input, sized_on)] if sized_on else list(input)
    return sum(os.path.getsize(p) for p in paths if os.path.exists(p)) / 1e6


def predicted_mem_mb(step):
    """Resource function for ``mem_mb`` of ``step``: predicted from input size, doubled per attempt."""
    model = RESOURCE_MODEL.get(step, RESOURCE_MODEL["default"])

    def mem_mb(wildcards, input, attempt):
        size = input_size_mb(input, model["sized_on"])
        return int(model["mem_base"] + model["mem_per_mb"] * size) * 2 ** (attempt - 1)

    return mem_mb


def predicted_runtime(step):
    """Resource function for ``runtime`` (minutes) of ``step``: from input size, doubled per attempt."""
    model = RESOURCE_MODEL.get(step, RESOURCE_MODEL["default"])

    def runtime(wildcards, input, attempt):
        size = input_size_mb(input, model["sized_on"])
        return int(model["runtime_base"] + model["runtime_per_mb"] * size) * 2 ** (attempt - 1)

    return runtime


def _detector1_mem_mb():
    """detector1's request: the prediction from the uncal's size, but no more than its budget allows.

    Above ``max_memory_mb.detector1`` the job streams the exposure within that budget (see
    webbflow.stages.detector1_stream), so the request is the budget plus the interpreter's ~500 MB.
    """
    predicted = predicted_mem_mb("detector1")
    cap = int(config["max_memory_mb"]["detector1"]) + RESOURCE_MODEL["detector1"]["mem_base"]

    def mem_mb(wildcards, input, attempt):
        return min(predicted(wildcards, input, attempt), cap * 2 ** (attempt - 1))

    return mem_mb


detector1_mem_mb = _detector1_mem_mb()
detector1_runtime = predicted_runtime("detector1")
