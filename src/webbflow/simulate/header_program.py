"""A survey-sized imaging program of header-only uncal files, for planning at scale (issue 18 part 4).

``snakemake -n`` reads only headers: the exposure table, the associations and reference selection
never touch pixels.  This writes thousands of full-frame NIRCam uncal files whose headers are the
simulator's (:mod:`webbflow.simulate.headers`: identity, timing, pointing, GROUP and INT_TIMES
tables) and whose SCI array is a *hole*: the file is sparse, its size the real one (a 1 x 10 x
2048 x 2048 ramp, ~80 MB) but its blocks unwritten, so 2,000 exposures take a few MB of disk.  The
headers pass :func:`webbflow.io.uncal.validate_headers` (the SCI shape agrees with NINTS/NGROUPS/
SUBSIZE); the ASDF extension is a minimal tree, so the files are for planning only, not for reducing.

The program: per pointing, all ten detectors (NRCA1-4 and NRCB1-4 through the SW filter, NRCALONG
and NRCBLONG through the LW one, read together as one exposure); one observation per SW/LW filter
pair, dithers as exposure numbers.  Its stage-1 and flat/photom references are tiny files with real
selection headers, cached with hand-made CRDS mappings (:func:`webbflow.refs.crds_cache.build_cache`).
"""

import io
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time, TimeDelta

from webbflow.io.files import atomic_output
from webbflow.simulate.headers import group_table, int_times_table, primary_keywords, sci_keywords
from webbflow.simulate.spec import ExposureSpec
from webbflow.simulate.writers import _header

__all__ = ["FILTER_PAIRS", "DETECTORS_SW", "DETECTORS_LW", "header_program_specs", "write_header_program",
           "write_header_references"]

DETECTORS_SW = ("NRCA1", "NRCA2", "NRCA3", "NRCA4", "NRCB1", "NRCB2", "NRCB3", "NRCB4")
DETECTORS_LW = ("NRCALONG", "NRCBLONG")
FILTER_PAIRS = (("F070W", "F277W"), ("F090W", "F356W"), ("F115W", "F410M"), ("F150W", "F444W"),
                ("F200W", "F335M"))
"""Ten filters: five SW/LW pairs, one observation each."""

_STAGE1_TYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
_ASDF_TREE = b"#ASDF 1.0.0\n#ASDF_STANDARD 1.5.0\n%YAML 1.1\n%TAG ! tag:stsci.edu:asdf/\n--- !core/asdf-1.1.0\n...\n"


def header_program_specs(n_files, program=4321, date_obs="2025-09-01T00:00:00.000", ngroups=10):
    """The specs of the first ``n_files`` uncal files of the program (ten per pointing).

    Pointings go round the filter pairs (observation = pair number), so any ``n_files`` spreads
    over all ten filters; each new pointing of an observation is its next dither (exposure number).

    Parameters
    ----------
    n_files : int
    program : int
    date_obs : str
        Start of the first exposure; one pointing every 10 minutes.
    ngroups : int
        Groups of the 1-integration BRIGHT2 full-frame ramps.

    Returns
    -------
    list of ExposureSpec
    """
    per_pointing = len(DETECTORS_SW) + len(DETECTORS_LW)
    n_pointings = math.ceil(n_files / per_pointing)
    dithers = math.ceil(n_pointings / len(FILTER_PAIRS))
    start = Time(date_obs, format="isot", scale="utc")
    base = ExposureSpec(subarray="FULL", readpatt="BRIGHT2", nints=1, ngroups=ngroups, program=program,
                        visit=1, visit_group=1, n_dither=dithers, zeroframe=False, scene="sky")
    specs = []
    for k in range(n_pointings):
        pair, dither = k % len(FILTER_PAIRS), k // len(FILTER_PAIRS)
        # a dither pattern wide enough to overlap: 3" steps on a spiral-free grid
        offset = (3.0 * (dither % 8), 3.0 * (dither // 8))
        common = dict(observation=pair + 1, exposure=dither + 1, dither_position=dither + 1, dither_offset=offset,
                      date_obs=(start + TimeDelta(600.0 * k, format="sec")).isot)
        for det in DETECTORS_SW + DETECTORS_LW:
            filt = FILTER_PAIRS[pair][det in DETECTORS_LW]
            specs.append(replace(base, detector=det, filter=filt, **common))
    return specs[:n_files]


def _tail(spec):
    """The bytes of the GROUP, INT_TIMES and ASDF extensions (the same for every detector of a pointing)."""
    asdf = fits.BinTableHDU.from_columns(
        [fits.Column(name="ASDF_METADATA", format=f"{len(_ASDF_TREE)}B",
                     array=np.frombuffer(_ASDF_TREE, np.uint8)[None, :])], name="ASDF")
    rest = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(group_table(spec), name="GROUP"),
                  fits.BinTableHDU(int_times_table(spec), name="INT_TIMES"), asdf]).writeto(rest)
    return rest.getvalue()[len(fits.PrimaryHDU().header.tostring()):]


def _write_sparse_uncal(path, spec, tail):
    """The uncal file of ``spec`` with its SCI data left as a hole (see the module's docstring);
    ``tail``: :func:`_tail` of its pointing."""
    name = f"{spec.rootname}_uncal.fits"
    primary = fits.PrimaryHDU(header=_header(primary_keywords(spec, name)))
    primary.header["EXTEND"] = True
    nints, ngroups, (ny, nx) = spec.nints, spec.ngroups, spec.geometry.shape
    sci = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", 16), ("NAXIS", 4), ("NAXIS1", nx), ("NAXIS2", ny),
                       ("NAXIS3", ngroups), ("NAXIS4", nints), ("PCOUNT", 0), ("GCOUNT", 1),
                       ("EXTNAME", "SCI"), ("BSCALE", 1), ("BZERO", 32768)])
    sci.extend(_header(sci_keywords(spec)))
    data_bytes = nints * ngroups * ny * nx * 2
    padded = -(-data_bytes // 2880) * 2880
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        out.write(primary.header.tostring().encode("ascii"))
        out.write(sci.tostring().encode("ascii"))
        out.seek(padded, os.SEEK_CUR)  # the hole: no blocks are written for the ramps
        out.write(tail)
    return path


def write_header_program(outdir, n_files, **kwargs):
    """Write the program's ``n_files`` header-only uncal files into ``<outdir>/uncal``.

    Parameters
    ----------
    outdir : path-like
    n_files : int
    **kwargs
        Passed to :func:`header_program_specs`.

    Returns
    -------
    list of pathlib.Path
        The uncal files, in spec order (files already there are kept).
    """
    folder = Path(outdir) / "uncal"
    folder.mkdir(parents=True, exist_ok=True)
    paths, tails = [], {}
    for spec in header_program_specs(n_files, **kwargs):
        path = folder / f"{spec.rootname}_uncal.fits"
        if not path.exists():
            if spec.date_obs not in tails:
                tails = {spec.date_obs: _tail(spec)}  # one pointing at a time
            _write_sparse_uncal(path, spec, tails[spec.date_obs])
        paths.append(path)
    return paths


def _reference(path, keywords):
    hdul = fits.HDUList([fits.PrimaryHDU(header=_header(keywords)),
                         fits.ImageHDU(np.zeros((1, 1), np.float32), name="SCI")])
    with atomic_output(path) as tmp:
        hdul.writeto(tmp)


def write_header_references(outdir, cache):
    """Tiny stage-1 (per detector), flat (per detector and filter) and photom references with real
    selection headers, cached as a CRDS context in ``cache``.

    Their data are 1 x 1 placeholders: planning reads only their headers.

    Returns
    -------
    str
        The context written (``jwst_NNNN.pmap``).
    """
    from webbflow.refs.crds_cache import build_cache

    folder = Path(outdir) / "refs"
    folder.mkdir(parents=True, exist_ok=True)
    common = {"TELESCOP": "JWST", "INSTRUME": "NIRCAM", "USEAFTER": "2022-01-01T00:00:00", "SUBARRAY": "FULL",
              "SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 2048, "SUBSIZE2": 2048, "EXP_TYPE": "ANY",
              "READPATT": "ANY", "NOUTPUTS": 4, "PEDIGREE": "SIMULATION", "AUTHOR": "webbflow header program"}
    for det in DETECTORS_SW + DETECTORS_LW:
        for reftype in (*_STAGE1_TYPES, "photom"):
            _reference(folder / f"hp_{det}_{reftype}.fits".lower(), {**common, "REFTYPE": reftype.upper(),
                                                                     "DETECTOR": det})
        for filt in {pair[det in DETECTORS_LW] for pair in FILTER_PAIRS}:
            _reference(folder / f"hp_{det}_flat_{filt}.fits".lower(),
                       {**common, "REFTYPE": "FLAT", "DETECTOR": det, "FILTER": filt, "PUPIL": "CLEAR"})
    return build_cache(folder, cache)
