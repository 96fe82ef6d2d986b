"""One function per workflow job: what a rule's script runs, with plain arguments.

``workflow/scripts/<job>.py`` reads ``snakemake.input/params/output`` and passes
them to the function of the same name here through
:func:`webbflow.workflow.run_job`.  The functions hold the job glue (parsing the
rule's JSON params, the provenance products record, the CRDS lock check,
manifests); the algorithms live in :mod:`webbflow.stages` and below.  Heavy
modules are imported inside each function, so a job loads only what it uses.

Step parameters and references arrive as the canonical JSON the rules put in
their params (a changed value re-runs the job); a dict is taken as well.
"""

import json
import logging
import os
from pathlib import Path

from webbflow.io.asdf_yaml import cache_schema_documents, memoize_extension_selection, use_libyaml_manifests
from webbflow.io.fitsconf import freeze_card_config
from webbflow.provenance import reference_names, stage_provenance  # re-exported: part of the jobs API

__all__ = ["bad_input", "coron3", "crds_prefetch", "demo", "detector1", "download", "image2", "image3", "image3_asn",
           "lightcurves", "reference_names", "spec2", "stage_provenance", "tso3"]


def _fast_asdf():
    """The ASDF speed-ups every stage-2/3 job installs before its first datamodel: extension
    manifests parsed with libyaml (~0.25 s less CPU) and each schema document parsed once per
    process (opens, assignments and writes validate many times: ~2 s less in a full-frame image3),
    manifests and schema documents unpickled from the parsed-YAML cache an earlier job wrote
    (~0.1 s), the extensions that suit a file chosen once (:mod:`webbflow.io.asdf_yaml`);
    and astropy.io.fits' card settings read once (:func:`webbflow.io.fitsconf.freeze_card_config`,
    ~0.15 s of a grism tso3 job).  None changes a product (``tests/test_io.py``,
    ``tests/test_image3.py``)."""
    use_libyaml_manifests()
    cache_schema_documents()
    memoize_extension_selection()
    freeze_card_config()


def _mapping(value):
    """A dict from the canonical JSON of a rule's params (or a dict already)."""
    return json.loads(value) if isinstance(value, str) else dict(value)


def _locked(provenance, crds_lock, references):
    """Check ``references`` against the CRDS lockfile and add its context and ``crds://`` names to
    ``provenance`` (nothing without a lockfile: no reference was chosen through CRDS)."""
    if crds_lock:
        from webbflow.refs.lockfile import locked_provenance

        # This job only reads the cache, and refuses a file that differs from what the prefetch locked.
        os.environ["CRDS_READONLY_CACHE"] = "1"
        provenance.update(locked_provenance(crds_lock, references))
    return provenance


def detector1(uncal, rate, rateints, steps, references, exp_types, crds_lock=None, max_memory_mb=None,
              one_over_f=None, highpix=None, earlier_highpix=()):
    """Reduce one uncal exposure to rate and rateints (:func:`webbflow.stages.detector1.run`).

    Parameters
    ----------
    uncal, rate, rateints : path-like
        The input and the two products.
    steps, references : str or dict
        Step parameters; reftype -> reference path (None where N/A).
    exp_types : sequence of str
        EXP_TYPEs the enabled modes reduce.
    crds_lock : path-like, optional
        The run's CRDS lockfile, when the references were chosen through CRDS:
        every reference is checked against it and the products record the
        context and ``crds://`` names.
    max_memory_mb : float, optional
        Memory budget (``max_memory_mb.detector1``); a larger exposure is
        reduced in chunks with identical products.
    one_over_f : path-like, optional
        The 1/f QA table (ECSV) to write beside the products
        (:func:`webbflow.stages.detector1.one_over_f_table`).
    highpix, earlier_highpix : path-like, sequence of path-like
        The exposure's persistence summary to write, and those of the earlier exposures to
        flag from (``steps.persistence``, :func:`webbflow.stages.detector1.run`).
    """
    from webbflow.stages import detector1 as stage

    steps, references = _mapping(steps), _mapping(references)
    provenance = _locked(stage_provenance(steps, references=reference_names(references)), crds_lock, references)
    stage.run(uncal, rate, rateints, references, steps, provenance, exp_types=tuple(exp_types),
              max_memory_mb=max_memory_mb, one_over_f_path=one_over_f, highpix_path=highpix,
              earlier_highpix=list(earlier_highpix or ()))


def image2(rate, cal, steps, references):
    """Calibrate one rate product into a cal product (:func:`webbflow.stages.image2.run`).

    Parameters
    ----------
    rate, cal : path-like
    steps, references : str or dict
        Step parameters; reftype -> reference path (None where N/A).
    """
    from webbflow.stages import image2 as stage

    _fast_asdf()

    steps, references = _mapping(steps), _mapping(references)
    stage.run(rate, cal, references, steps, stage_provenance(steps, references=reference_names(references)))


def spec2(rateints, calints, x1dints, steps, references, crds_lock=None):
    """Calibrate and extract one grism time-series segment (:func:`webbflow.stages.spec2.run`).

    Parameters
    ----------
    rateints, calints, x1dints : path-like
    steps, references : str or dict
        Step parameters; reftype -> reference path (None where N/A).
    crds_lock : path-like, optional
        The run's CRDS lockfile, when references were chosen through CRDS (as for detector1).
    """
    from webbflow.stages import spec2 as stage

    _fast_asdf()

    steps, references = _mapping(steps), _mapping(references)
    stage.run(rateints, calints, x1dints, references, steps,
              _locked(stage_provenance(steps, references=reference_names(references)), crds_lock, references))


def tso3(asn, x1dints=None, whtlt=None, crfints=None, steps=None, references=None, trace=None, crds_lock=None,
         phot=None):
    """Reduce one time-series association (:func:`webbflow.stages.tso3.run`, or for an imaging time
    series :func:`webbflow.stages.tso3.run_photometry`).

    Parameters
    ----------
    asn : path-like
        tso3 association JSON (members: the segments' calints).
    x1dints, whtlt : path-like
        The association's products (grism).
    phot : path-like, optional
        ``<product>_phot.ecsv`` of an imaging time series (then ``x1dints``, ``whtlt`` and ``trace``
        are not used).
    trace : path-like, optional
        ``<product>_trace.ecsv``: the trace's row and width per integration.
    crfints : path-like
        Folder of the per-segment crfints (``<segment root>_<asn_id>_crfints.fits``).
    steps, references : str or dict
        Step parameters; ``extract1d`` (grism) or ``gain`` (imaging) -> reference path.
    crds_lock : path-like, optional
        The run's CRDS lockfile, when the references were chosen through CRDS (as for detector1).
    """
    from webbflow.associations import read_asn
    from webbflow.stages import tso3 as stage

    _fast_asdf()

    steps, references = _mapping(steps), _mapping(references)
    asn_path, asn = Path(asn), read_asn(asn)
    folder = Path(crfints)
    folder.mkdir(parents=True, exist_ok=True)
    crf = [folder / f"{Path(m).name.removesuffix('_calints.fits')}_{asn['asn_id']}_crfints.fits"
           for m in asn["members"]]
    provenance = _locked(stage_provenance(steps, members=[Path(m).name for m in asn["members"]],
                                          references=reference_names(references)), crds_lock, references)
    if phot is not None:
        stage.run_photometry(asn["members"], crf, phot, references, steps, provenance)
        return
    stage.run(asn["members"], crf, x1dints, whtlt, references, steps, provenance,
              asn={"asn_pool": asn["asn_pool"], "asn_table": asn_path.name}, trace_path=trace)


def coron3(asn, exposures, products, steps, references, crds_lock=None, shifts=None):
    """Reduce one coronagraphic association (:func:`webbflow.stages.coron3.run`).

    Parameters
    ----------
    asn : path-like
        coron3 association JSON (science and psf members: their calints).
    exposures : path-like
        Folder of the per-exposure products (``<root>_<asn_id>_crfints``, ``_psfalign``, ``_psfsub``).
    products : dict
        name -> path of the association's products that the rule names (``<product>_psfstack.fits``,
        ``_i2d.fits`` and, with the beyond-jwst klip options, ``_klipsub.fits``,
        ``_contrast.ecsv``/``.png``, ``_companions.ecsv``): each is written in ``exposures`` by the
        stage, then moved (same file system: atomic) to its path, matched by file name.
    steps, references : str or dict
        Step parameters; ``psfmask`` -> reference path.
    crds_lock : path-like, optional
        The run's CRDS lockfile, when the PSFMASK was chosen through CRDS (as for detector1).
    shifts : path-like, optional
        ``<product>_psfshifts.ecsv``: align_refs' fitted (dx, dy, beta) of every PSF-reference
        integration on each science exposure (for the QA figure; not a jwst product).

    Returns
    -------
    dict
        What :func:`webbflow.stages.coron3.run` returns.
    """
    from webbflow.io.errors import InputError
    from webbflow.stages import coron3 as stage

    _fast_asdf()
    steps, references = _mapping(steps), _mapping(references)
    info = stage.read_association(asn)
    members = [Path(m).name for m in info["psf"] + info["science"]]
    provenance = _locked(stage_provenance(steps, members=members, references=reference_names(references)),
                         crds_lock, references)
    folder = Path(exposures)
    written = stage.run(asn, references, steps, folder, provenance)
    for path in map(Path, products.values()):
        made = folder / path.name
        if not made.is_file():
            raise InputError(asn, f"coron3 wrote no {path.name}", "check steps.klip (the rule expects the "
                             "beyond-jwst products its settings ask for)")
        os.replace(made, path)
    if shifts is not None:
        _write_psfshifts(shifts, written)
    return written


def _write_psfshifts(path, written):
    """align_refs' shifts of every PSF integration on each science exposure, one row each (ECSV)."""
    import numpy as np
    from astropy.table import Table

    from webbflow.io.files import write_ecsv

    rows = [(Path(aligned).name.removesuffix("_psfalign.fits"), k, *map(float, fit))
            for aligned, fits in zip(written["psfalign"], written["shifts"])
            for k, fit in enumerate(np.asarray(fits).reshape(-1, 3))]
    table = Table(rows=rows or None, names=("science", "psf_integration", "dx", "dy", "beta"),
                  dtype=(str, int, float, float, float))
    table["dx"].unit = table["dy"].unit = "pix"
    table.meta["comments"] = ["webbflow coron3 align_refs: shift (dx, dy, pixels) and scale (beta) fitted for each "
                              "PSF-reference integration (psfstack order) on each science exposure's first integration"]
    write_ecsv(path, table)


def lightcurves(x1dints, curves, fits, png, nbins=10, wave_range=None, transit=None, truth=None):
    """Spectroscopic light curves and their transit fits from a tso3 x1dints (:mod:`webbflow.lightcurves`).

    Parameters
    ----------
    x1dints : path-like
        tso3's ``<product>_x1dints.fits``.
    curves, fits, png : path-like
        ``<product>_lc.ecsv`` (white light and ``nbins`` wavelength bins per integration),
        ``<product>_lcfit.ecsv`` (depth and errors per curve; no rows without a transit guess)
        and the QA figure.
    nbins : int
        Wavelength bins.
    wave_range : (float, float), optional
        µm; default the band (columns with >= 5 % of the brightest column's flux).
    transit : dict, optional
        Transit guess (``t0`` MJD UTC, ``per`` d, ``a`` R*, ``inc`` deg, ``rp``, ``u1``, ``u2``):
        the fit starts there with rp and t0 free.
    truth : path-like, optional
        The simulator's ``transit.ecsv``: its parameters are the guess when ``transit`` is None.
    """
    from astropy.table import Table

    from webbflow import lightcurves as lc
    from webbflow.io.files import write_ecsv

    if transit is None and truth is not None and Path(truth).exists():
        m = Table.read(truth).meta
        transit = {"t0": m["t0_mjd_utc"], "per": m["period_d"], "a": m["a_rs"], "inc": m["inc_deg"],
                   "rp": m["rp_ref"], "u1": m["u1_ref"], "u2": m["u2_ref"]}
    if transit:
        transit = {"u1": 0.1, "u2": 0.1, **transit}
    kwargs = dict(wave_range=tuple(wave_range) if wave_range else None, transit=transit)
    try:
        written = lc.light_curve_products(x1dints, curves, fits if transit else None, png, nbins=int(nbins), **kwargs)
    except ValueError as exc:
        if not nbins:
            raise
        # a bin without light (a faint end of the band) must not cost the white light
        logging.getLogger("webbflow.lightcurves").warning("%s: %s; writing the white light only",
                                                          Path(x1dints).name, exc)
        written = lc.light_curve_products(x1dints, curves, fits if transit else None, png, nbins=0, **kwargs)
    if "fits" not in written:
        empty = Table(names=("curve", "depth", "depth_err"), dtype=(str, float, float))
        empty.meta["comments"] = ["no transit guess: set lightcurves.transit (t0, per, a, inc, rp, u1, u2) to fit"]
        write_ecsv(fits, empty)
    return written


def image3(asn, i2d, cat, segm, crf, steps, references=None, crds_lock=None):
    """Combine one association's cal files (:func:`webbflow.stages.image3.run`).

    Parameters
    ----------
    asn : path-like
        Level-3 association JSON.
    i2d, cat, segm : path-like
        The mosaic, its catalog and segmentation map.
    crf : path-like
        Folder of the per-exposure crf products.
    steps : str or dict
        Step parameters.
    references : str or dict, optional
        ``apcorr`` / ``abvegaoffset`` -> path chosen by CRDS with the association's first member
        (source_catalog's references; by-path step parameters still win).
    crds_lock : path-like, optional
        The run's CRDS lockfile: the references are checked against it and the catalog records
        their ``crds://`` names and the context.
    """
    from webbflow.associations import read_asn
    from webbflow.stages import image3 as stage

    _fast_asdf()

    steps, references = _mapping(steps), _mapping(references or {})
    asn = read_asn(asn)
    # CRDS's references join the config digest (as other stages'); without them it is as before
    chosen = {"references": reference_names(references)} if references else {}
    provenance = _locked(stage_provenance(steps, members=[Path(m).name for m in asn["members"]], **chosen),
                         crds_lock, references)
    stage.run(asn["members"], i2d=i2d, cat=cat, segm=segm, crf_dir=crf, asn_id=asn["asn_id"],
              product=asn["product"], params=steps, provenance=provenance, pool=asn["asn_pool"],
              references=references)


def image3_asn(content, asn):
    """Write one image3 association (``content``: str or dict) as association JSON, atomically."""
    from webbflow.io.files import atomic_write_text

    content = _mapping(content)
    atomic_write_text(asn, json.dumps(content, indent=2) + "\n")
    product = content["products"][0]
    logging.getLogger("webbflow.asn").info("%s: %d members", product["name"], len(product["members"]))


def demo(outdir, preset, seed, manifest):
    """Write the demo program, its local CRDS cache and the manifest, all-or-nothing
    (:func:`webbflow.demo.write_demo`, whose parameters these are)."""
    from webbflow.demo import write_demo

    write_demo(outdir, preset, seed, manifest)


def download(settings, uncal_dir, manifest):
    """Download the configured MAST program's uncal files, then write the manifest.

    Parameters
    ----------
    settings : dict
        The ``download`` section of the config.
    uncal_dir : path-like
        Where the files go (``inputs.uncal_dir``).
    manifest : path-like
        JSON: program and the downloaded products.

    Raises
    ------
    InputError
        When MAST lists nothing for the selection, or a download fails.
    """
    from webbflow.download import download as fetch
    from webbflow.download import download_url, list_products, products_from_table
    from webbflow.io.errors import InputError
    from webbflow.io.files import atomic_write_text

    log = logging.getLogger("webbflow.download")
    cfg, outdir = settings, Path(uncal_dir)
    if cfg["product_list"]:
        from astropy.table import Table

        products = products_from_table(Table.read(cfg["product_list"]), cfg["program"], cfg["observations"],
                                       cfg["detectors"])
    else:
        products = list_products(cfg["program"], cfg["observations"], cfg["filters"], cfg["detectors"],
                                 cfg["exp_types"])
    if not products:
        raise InputError(f"program {cfg['program']}", "MAST lists no NIRCam uncal files for this selection",
                         "check download.program, observations, filters and detectors")
    for i, product in enumerate(products, 1):
        log.info("[%d/%d] %s (%s bytes)", i, len(products), product.filename, product.size)
        fetch(download_url(product.uri, cfg["mast_url"]), outdir / product.filename, size=product.size,
              sha256=product.sha256, retries=cfg["retries"])
    atomic_write_text(manifest, json.dumps({"program": str(cfg["program"]),
                                            "files": [p.as_dict() for p in products]}, indent=1))
    log.info("downloaded %d files into %s", len(products), outdir)


def bad_input(path, problem, fix):
    """The job of a file the planning refused: fail with its one line (the rest of the run goes on
    under keep-going).

    Raises
    ------
    InputError
        Always: ``<path>: <problem>. Fix: <fix>``.
    """
    from webbflow.io.errors import InputError

    raise InputError(path, problem, fix)


def crds_prefetch(uncals, reftypes, cache, context, server_url, lock, overrides=None):
    """Fetch every reference of the run into the CRDS cache and write the lockfile.

    Parameters
    ----------
    uncals : sequence of path-like
        The run's ``*_uncal.fits``.
    reftypes : sequence of str or dict
        Reference types chosen for every exposure, or root name -> those of the exposure's mode.
    cache : path-like
        The CRDS cache; this job is its only writer in the run (not read-only).
    context : str
        ``crds.context`` (``latest`` or a pinned ``jwst_NNNN.pmap``).
    server_url : str or None
        ``crds.server_url`` (None: serverless).
    lock : path-like
        The lockfile to write.
    overrides : dict, optional
        reftype -> path given by the user (win over CRDS).
    """
    from webbflow.refs.crds_select import CrdsSetup
    from webbflow.refs.prefetch import prefetch

    setup = CrdsSetup(cache, context, server_url, readonly=False)
    roots = {Path(p).name.removesuffix("_uncal.fits"): p for p in uncals}
    prefetch(roots, reftypes, setup, setup.context, lock, overrides=overrides)
