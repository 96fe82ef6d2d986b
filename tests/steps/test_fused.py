"""The fused pass (superbias, refpix, linearity, dark_current in one pass) against the four steps in turn.

Bit for bit: the ramp, PIXELDQ, GROUPDQ, ZEROFRAME, the average dark current and refpix's 1/f QA
record after the fused pass must equal those after the steps run one after another, on simulated
exposures that take each path of the correction (one-output subarray, four-output strip with side
pixels, full frame with the running median and with SIRS, an extrapolated float64 dark, a skipped dark).
"""

import copy

import numpy as np
import pytest
from astropy.io import fits

from webbflow.io import read_uncal
from webbflow.refs import load_references, select_references
from webbflow.simulate import ExposureSpec, simulate_exposure
from webbflow.stages import detector1

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "sirskernel")
BEFORE = ("dq_init", "saturation")
STEPS = ("dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current")

CASES = {
    # one output, reference pixels on two sides, saturating stars, zero frame
    "sub256": ExposureSpec(detector="NRCA1", subarray="SUB256", size=256, corner="refpix", readpatt="BRIGHT2",
                           nints=2, ngroups=5, n_stars=20, n_saturating_stars=4, zeroframe=True, seed=3),
    # four outputs: top/bottom offsets per amplifier and the side pixels' running median (FASTAXIS +1)
    "grism64": ExposureSpec(detector="NRCALONG", subarray="SUBGRISM64", nints=2, ngroups=4, zeroframe=True,
                            exp_type="NRC_TSGRISM", filter="F444W", pupil="GRISMR", seed=4),
    # a full frame of the other readout direction (slow: ~20 s CPU to simulate)
    "full": ExposureSpec(detector="NRCB1", subarray="FULL", nints=1, ngroups=3, readpatt="RAPID", seed=5),
}


def _bits(a):
    return None if a is None else np.ascontiguousarray(a).view(np.uint8)


def _compare(a, b):
    for name in ("data", "pixeldq", "groupdq", "zeroframe", "average_dark_current"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(_bits(x), _bits(y)), f"{name} differs"


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n == "full" else n
                                        for n in sorted(CASES)])
def exposure(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    uncal = simulate_exposure(CASES[request.param], out)
    paths = select_references(fits.getheader(uncal), out / "refs")
    ramp, readout, headers = read_uncal(uncal)
    refs = load_references({t: paths.get(t) for t in REFTYPES if paths.get(t)}, readout, ramp.shape[-2:])
    for _ in detector1.iter_steps(ramp, readout, headers, refs, {}, steps=BEFORE):
        pass
    return request.param, ramp, readout, headers, refs


def _same_record(a, b):
    """refpix's 1/f QA records (:func:`webbflow.steps.refpix.run`'s ``one_over_f``), bit for bit."""
    assert a.keys() == b.keys()
    assert (a["first_integration"], a["roeba"]) == (b["first_integration"], b["roeba"])
    assert np.array_equal(a["edges"], b["edges"])
    for key in ("before", "after"):
        for x, y in zip(a[key], b[key], strict=True):
            assert x.dtype == y.dtype and np.array_equal(_bits(x), _bits(y)), key


def _both(exposure, params, refs=None, one_over_f=False):
    name, ramp, readout, headers, loaded = exposure
    refs = loaded if refs is None else refs
    separate, fused = copy.deepcopy(ramp), copy.deepcopy(ramp)
    records = ([], []) if one_over_f else (None, None)
    statuses = {s: st for s, st, _ in detector1.iter_steps(separate, readout, headers, refs, params,
                                                           one_over_f=records[0], steps=STEPS[len(BEFORE):])}
    got = detector1._run_fused(fused, readout, refs, params, STEPS, records[1])
    assert got is not None, f"{name}: not fused"
    assert got == statuses
    _compare(separate, fused)
    if one_over_f:
        assert len(records[0]) == len(records[1]) == 1
        _same_record(*(r[0] for r in records))
        assert np.isfinite(records[1][0]["before"][0]).any()  # a real measurement, not NaNs
    assert not np.array_equal(_bits(separate.data), _bits(ramp.data))  # the steps did change the ramp
    return statuses


def test_fused_equals_steps(exposure):
    statuses = _both(exposure, {})
    assert set(statuses.values()) == {"COMPLETE"}


def test_fused_sirs_and_side_options(exposure):
    name = exposure[0]
    if name == "full":
        params = {"refpix": {"refpix_algorithm": "sirs"}}
    else:
        params = {"refpix": {"odd_even_columns": False, "side_smoothing_length": 5, "side_gain": 0.5}}
    _both(exposure, params)


def test_fused_dark_extrapolated_and_skipped(exposure):
    refs = dict(exposure[4])
    dark = dict(refs["dark"])
    dark["dark_frames"] = np.asarray(dark["dark_frames"])[:2]  # a float64 extrapolation, as stcal
    _both(exposure, {}, dict(refs, dark=dark))
    dark["dark_nframes"] = 64  # more frames per group than the science: the step skips
    statuses = _both(exposure, {}, dict(refs, dark=dict(dark)))
    assert statuses["dark_current"] == "SKIPPED"


def test_not_fused_with_roeba_or_skipped_steps(exposure, monkeypatch):
    name, ramp, readout, headers, refs = exposure
    before = copy.deepcopy(ramp)
    for params in ({"refpix": {"roeba": True}}, {"dark_current": {"skip": True}}):
        assert detector1._run_fused(ramp, readout, refs, params, STEPS, None) is None
    # the 1/f table's slopes larger than the fused pass may hold: refpix measures them in turn
    from webbflow.steps import fused

    monkeypatch.setattr(fused, "QA_MAX_BYTES", ramp.data[:, 0].size * 8 - 1)
    records = []
    assert detector1._run_fused(ramp, readout, refs, {}, STEPS, records) is None and records == []
    _compare(before, ramp)  # untouched


def test_fused_one_over_f_table_equals_refpix(exposure):
    """The 1/f QA record the fused pass sums on its way equals refpix's from the ramp after it: the
    background found from the draft image, or given (a streamed exposure's chunks), and a later chunk."""
    ramp = exposure[1]
    _both(exposure, {}, one_over_f=True)
    mask = np.zeros(ramp.data.shape[-2:], bool)
    mask[8:-8:2, 8:-8] = True
    _both(exposure, {"refpix": {"roeba_mask": mask, "first_integration": 3, "roeba_min_pixels": 4}},
          one_over_f=True)
