"""The program presets of issue 18's benchmark write what they claim (from headers only)."""

from collections import Counter
from pathlib import Path

import pytest
from astropy.io import fits

from webbflow.associations import image3_associations
from webbflow.exposures import exposure_from_header
from webbflow.refs import select_references
from webbflow.refs.select import IMAGE2_REFTYPES
from webbflow.simulate.headers import primary_keywords
from webbflow.simulate.presets import preset_specs, program_subarray_specs, run_specs

SW, LW = {"F150W", "F200W"}, {"F356W", "F444W"}


def _header_only_program(specs, outdir):
    """Each spec's uncal primary header (the simulator's own keywords) as a data-less file: 16 full
    frames would take minutes to simulate, and the exposure table reads primary headers only."""
    uncal = outdir / "uncal"
    uncal.mkdir(parents=True)
    for spec in specs:
        name = f"{spec.rootname}_uncal.fits"
        fits.PrimaryHDU(header=fits.Header(list(primary_keywords(spec, name).items()))).writeto(uncal / name)
    return uncal


def test_program_imaging_is_a_full_frame_program(tmp_path):
    """16 full-frame exposures: NRCA1 in F150W/F200W and NRCALONG in F356W/F444W, 4 dithers each."""
    uncal = _header_only_program(preset_specs("program-imaging"), tmp_path)
    table = [exposure_from_header(fits.getheader(p), p) for p in sorted(uncal.iterdir())]
    assert len(table) == 16 and len({e.rootname for e in table}) == 16
    assert Counter((e.detector, e.filter) for e in table) == {
        ("NRCA1", "F150W"): 4, ("NRCA1", "F200W"): 4, ("NRCALONG", "F356W"): 4, ("NRCALONG", "F444W"): 4}
    for path in uncal.iterdir():
        h = fits.getheader(path)
        assert (h["SUBARRAY"], h["SUBSIZE1"], h["SUBSIZE2"], h["NOUTPUTS"]) == ("FULL", 2048, 2048, 4), path.name
        assert (h["EXP_TYPE"], h["NINTS"], h["NGROUPS"], h["NUMDTHPT"]) == ("NRC_IMAGE", 1, 10, 4), path.name
    # what the workflow's stage 3 makes of it: one association per filter, its four dithers
    asns = image3_associations(table)
    assert sorted(len(a.members) for a in asns) == [4, 4, 4, 4]
    # SW and LW of one dither are read together: same exposure number and start time
    starts = Counter((e.exposure_id, e.expstart) for e in table)
    assert set(starts.values()) == {2}


def test_program_subarray_counts():
    specs = preset_specs("program-subarray")
    assert Counter((s.subarray, s.detector) for s in specs) == {
        ("SUB160", "NRCA1"): 8, ("SUB160", "NRCALONG"): 8, ("SUB64P", "NRCA1"): 8, ("SUB64P", "NRCALONG"): 8}
    assert {s.filter for s in specs if s.detector == "NRCA1"} == SW
    assert {s.filter for s in specs if s.detector == "NRCALONG"} == LW
    assert len({s.rootname for s in specs}) == 32


@pytest.fixture(scope="module")
def sub64(tmp_path_factory):
    """The reduced subarray program's SUB64P pair (one dither, one filter pair), simulated."""
    out = tmp_path_factory.mktemp("program-sub64")
    specs = [s for s in program_subarray_specs(n_filters=1, n_dithers=1) if s.subarray == "SUB64P"]
    return specs, run_specs(specs, out), out


def test_program_subarray_writes_its_shapes_and_stage2_references(sub64):
    specs, paths, out = sub64
    assert sorted(p.name for p in paths) == sorted(f"{s.rootname}_uncal.fits" for s in specs)
    for spec, path in zip(specs, paths):
        primary, sci = fits.getheader(path), fits.getheader(path, "SCI")
        assert (primary["DETECTOR"], primary["FILTER"], primary["SUBARRAY"]) == (spec.detector, spec.filter, "SUB64P")
        assert (sci["NAXIS1"], sci["NAXIS2"], sci["NAXIS3"], sci["NAXIS4"]) == (64, 64, spec.ngroups, spec.nints)
        refs = select_references(primary, out / "refs", None, IMAGE2_REFTYPES)
        assert all(refs[t] and Path(refs[t]).is_file() for t in ("flat", "distortion", "photom", "area")), refs
