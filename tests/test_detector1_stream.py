"""detector1 in bounded memory (webbflow.stages.detector1_stream) gives the in-memory products bit for bit.

Each case is reduced twice: whole, and with a memory budget so small that the ramp is cut into
chunks of integrations and blocks of rows (one row per block is the hardest case for the
neighbour flagging, which reaches across block edges).  Every array of both products must be
identical, NaNs in the same places, and the scratch must be gone.
"""

import logging
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from stdatamodels.jwst import datamodels
from tso_segments import TSO_SPECS

from webbflow.io import InputError
from webbflow.refs import select_references
from webbflow.simulate import simulate_exposure
from webbflow.stages import detector1, detector1_stream
from webbflow.stages.detector1_stream import BYTES_PER_INT_PIXEL, BYTES_PER_PIXEL, BYTES_PER_SAMPLE

EXTS = ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE")

CASES = {
    # iterative two-point regime, 4 outputs, ROEBA (its mask from the first integrations; the grism
    # preset's rows relative to each integration's mean frame, clipped means), a zero frame,
    # clean_flicker_noise (its draft rate by blocks of rows, one scene mask for the whole frame)
    "grism-roeba": (replace(TSO_SPECS["grism-4out"], zeroframe=True),
                    {"refpix": {"roeba": True, "roeba_relative": True, "roeba_estimator": "mean"}, "jump": {"after_jump_flag_dn1": 50.0, "after_jump_flag_time1": 30.0},
                     "clean_flicker_noise": {"skip": False}}),
    # one output, side reference columns only; ROEBA with one level per integration (the tso_imaging
    # preset's); clean_flicker_noise with one mask per integration
    "strip-1out": (TSO_SPECS["strip-1out"], {"refpix": {"roeba": True, "roeba_level": "integration",
                                                        "roeba_min_pixels": 4},
                                             "clean_flicker_noise": {"skip": False, "single_mask": False}}),
    # >= 100 integrations: sigma clipping across integrations, a saturating star (with
    # charge_migration on: its CHARGELOSS groups and ramp_fit's read-noise recomputation for them)
    "sigclip-100": (TSO_SPECS["sigclip-100"], {"charge_migration": {"skip": False}}),
    # snowball flagging: regions across row blocks, cores flagged in the next integration
    "snowballs": (replace(TSO_SPECS["strip-1out"], snowballs=4, seed=35), {"jump": {"expand_large_events": True}}),
}


def _budget_mb(shape, ints):
    """A budget (MB) for which the plan takes ``ints`` integrations per chunk."""
    nints, ngroups, ny, nx = shape
    return (BYTES_PER_PIXEL + ints * (BYTES_PER_SAMPLE * ngroups + BYTES_PER_INT_PIXEL)) * ny * nx / 2**20


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    spec, steps = CASES[request.param]
    out = tmp_path_factory.mktemp(request.param)
    sim = simulate_exposure(spec, out, return_details=True)
    refs = select_references(fits.getheader(sim.uncal), out / "refs")
    whole = out / "whole"
    detector1.run(sim.uncal, whole / "x_rate.fits", whole / "x_rateints.fits", refs, steps,
                  one_over_f_path=whole / "x_onef.ecsv")
    return request.param, spec, sim, refs, steps, whole, out


def _assert_same(a, b):
    with fits.open(a) as x, fits.open(b) as y:
        for ext in EXTS:
            np.testing.assert_array_equal(x[ext].data, y[ext].data, err_msg=f"{a.name} {ext}")
        assert [h.name for h in x] == [h.name for h in y]
        for hx, hy in zip(x, y):  # the same cards in the same order; only the creation time differs
            assert list(hx.header) == list(hy.header), hx.name
            for key in hx.header:
                if key not in ("DATE", "CHECKSUM"):  # CHECKSUM covers DATE and the cards' time stamps
                    assert hx.header[key] == hy.header[key], (hx.name, key)
        if "INT_TIMES" in x:
            np.testing.assert_array_equal(x["INT_TIMES"].data, y["INT_TIMES"].data)


# one integration per chunk and one row per block is the hardest cut; 3 per chunk runs with the slow tests
@pytest.mark.parametrize("ints", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_streamed_products_equal_whole(case, ints, caplog, make):
    name, spec, sim, refs, steps, whole, out = case
    shape = (spec.nints, spec.ngroups, *fits.getdata(whole / "x_rate.fits").shape)
    budget = _budget_mb(shape, ints)
    cut = detector1_stream.plan(shape, budget * 2**20)
    assert cut is not None and cut.ints_per_chunk == ints
    streamed = out / f"streamed{ints}"
    with caplog.at_level(logging.INFO, logger="webbflow"):
        detector1.run(sim.uncal, streamed / "x_rate.fits", streamed / "x_rateints.fits", refs, steps,
                      max_memory_mb=budget, one_over_f_path=streamed / "x_onef.ecsv")
    assert f"{ints} integrations per chunk" in caplog.text
    # no scratch left
    assert sorted(p.name for p in streamed.iterdir()) == ["x_onef.ecsv", "x_rate.fits", "x_rateints.fits"]
    for product in ("x_rate.fits", "x_rateints.fits"):
        _assert_same(whole / product, streamed / product)
    make.assert_fits_checksums([streamed / "x_rate.fits", streamed / "x_rateints.fits"])
    # the 1/f QA table, measured chunk by chunk, is the whole exposure's (ROEBA's mask from the same
    # first integrations, found in the streamed run even with ROEBA off)
    from astropy.table import Table

    a, b = Table.read(whole / "x_onef.ecsv"), Table.read(streamed / "x_onef.ecsv")
    assert len(a) == spec.nints * fits.getval(whole / "x_rateints.fits", "NOUTPUTS") and a.meta == b.meta
    for column in a.colnames:
        np.testing.assert_array_equal(a[column], b[column], err_msg=column)
    with datamodels.open(streamed / "x_rateints.fits") as model:
        assert isinstance(model, datamodels.CubeModel) and model.data.shape == (spec.nints, *shape[2:])
    if name == "grism-roeba":
        with fits.open(streamed / "x_rateints.fits") as hdul:
            assert hdul[0].header["S_REFPIX"] == "COMPLETE"
            assert np.count_nonzero(hdul["DQ"].data & 4) > 0  # jumps were found (and equal, above)
    if name == "snowballs":
        assert re.search(r"jump: [1-9]\d* snowballs in", caplog.text)
    if name == "sigclip-100":
        with fits.open(streamed / "x_rateints.fits") as hdul:
            assert hdul[0].header["S_CHGMIG"] == "COMPLETE"


def test_no_scratch_space_is_one_clear_error_and_nothing_written(case, monkeypatch):
    name, spec, sim, refs, steps, whole, out = case
    if name != "strip-1out":
        pytest.skip("one case is enough")
    real = shutil.disk_usage
    monkeypatch.setattr(detector1_stream.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))
    target = out / "full-disk"
    with pytest.raises(InputError, match="GB of scratch .* WEBBFLOW_SCRATCH"):
        detector1.run(sim.uncal, target / "x_rate.fits", target / "x_rateints.fits", refs, steps, max_memory_mb=0.01)
    assert not target.exists() or list(target.iterdir()) == []


@pytest.mark.parametrize("key, value", [("ramp_fit.save_opt", True), ("jump.per_integration", True)])
def test_whole_ramp_options_of_a_streamed_exposure_are_one_clear_error(case, key, value):
    name, spec, sim, refs, steps, whole, out = case
    if name != "strip-1out":
        pytest.skip("one case is enough")
    target = out / key
    step, param = key.split(".")
    with pytest.raises(InputError, match=f"steps.{key} .* max_memory_mb.detector1"):
        detector1.run(sim.uncal, target / "x_rate.fits", target / "x_rateints.fits", refs,
                      {**steps, step: {**(steps.get(step) or {}), param: value}}, max_memory_mb=0.01)
    assert not target.exists() or list(target.iterdir()) == []


def test_plan_keeps_the_working_set_flat_in_nints():
    """The chunk and block sizes shrink with NINTS so that the budget holds (256-row strip, 10 groups)."""
    budget = 1000 * 2**20
    for nints in (100, 1000, 5000):
        shape = (nints, 10, 256, 2048)
        cut = detector1_stream.plan(shape, budget)
        assert cut is not None
        per_row = (BYTES_PER_SAMPLE * 10 + BYTES_PER_INT_PIXEL) * nints * 2048
        assert (cut.rows_per_block + 2) * per_row <= budget or cut.rows_per_block == 1
        assert cut.ints_per_chunk * (BYTES_PER_SAMPLE * 10 + BYTES_PER_INT_PIXEL) * 256 * 2048 <= budget
    assert detector1_stream.plan((2, 6, 160, 160), budget) is None  # small exposures stay whole
