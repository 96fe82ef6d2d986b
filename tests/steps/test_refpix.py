import numpy as np
import pytest

from webbflow import dqflags as F
from webbflow.ramp import Ramp, Readout
from webbflow.steps import refpix
from webbflow.steps.refpix import _running_median, to_detector_frame

REF = F.REFERENCE_PIXEL


def _full_ramp(zeroframe=False):
    data = np.zeros((1, 1, 2048, 2048), np.float32)
    pdq = np.zeros((2048, 2048), np.uint32)
    pdq[:4] = pdq[-4:] = pdq[:, :4] = pdq[:, -4:] = REF
    zf = np.zeros((1, 2048, 2048), np.float32) if zeroframe else None
    return Ramp(data=data, pixeldq=pdq, groupdq=np.zeros(data.shape, np.uint8), zeroframe=zf)


# NRCA1 reads with FASTAXIS=-1, SLOWAXIS=2: the detector frame is the science
# frame flipped left-right (science column x is detector column 2047 - x).
A1 = dict(fastaxis=-1, slowaxis=2)


def test_amp_odd_even_offsets_recovered_in_detector_frame():
    ramp = _full_ramp()
    det = to_detector_frame(ramp.data, **A1)[0, 0]
    offsets = np.array([[12.0, 27.0], [-5.0, 3.5], [100.0, 90.0], [0.25, -0.75]], np.float32)
    for amp in range(4):
        for par in range(2):
            det[:, amp * 512 + par:(amp + 1) * 512:2] = offsets[amp, par]
    det[4:-4, 4:-4] += 50.0  # the "sky", absent from the reference pixels
    assert refpix.run(ramp, Readout(nints=1, ngroups=1, **A1)) == "COMPLETE"
    np.testing.assert_array_equal(ramp.data[0, 0, 4:-4, 4:-4], 50.0)
    np.testing.assert_array_equal(ramp.data[0, 0, :4], 0.0)
    # one deviant column among amp D's 256 odd-index reference columns is
    # sigma-clipped away: nothing is subtracted and the column keeps its value
    ramp2 = _full_ramp()
    det2 = to_detector_frame(ramp2.data, **A1)[0, 0]
    det2[:, 2047] = 7.0  # detector column 2047 is science column 0
    refpix.run(ramp2, Readout(nints=1, ngroups=1, **A1), use_side_ref_pixels=False)
    np.testing.assert_array_equal(ramp2.data[0, 0, 100, :3], [7.0, 0.0, 0.0])


def test_single_mean_per_amp_without_odd_even():
    ramp = _full_ramp()
    det = to_detector_frame(ramp.data, **A1)[0, 0]
    det[:, 512:1024:2] = 10.0
    det[:, 513:1024:2] = 20.0
    refpix.run(ramp, Readout(nints=1, ngroups=1, **A1), odd_even_columns=False,
               use_side_ref_pixels=False)
    np.testing.assert_array_equal(det[500, 512:516], [-5.0, 5.0, -5.0, 5.0])
    assert not det[:, :512].any() and not det[:, 1024:].any()


def test_side_correction_running_median_of_row_pattern():
    ramp = _full_ramp(zeroframe=True)
    det = to_detector_frame(ramp.data, **A1)[0, 0]
    rows = np.arange(2048, dtype=np.float32)
    # row pattern on the side reference pixels only, rows 4..2043, so that the
    # top/bottom means stay exactly 0
    det[4:-4, :4] = rows[4:-4, None]
    det[4:-4, -4:] = 3 * rows[4:-4, None]
    ramp.zeroframe[0] = ramp.data[0, 0] + 5.0  # +5 everywhere: removed by top/bottom
    ramp.zeroframe[0, 1000, 1000] = 0.0  # unusable, must stay 0
    refpix.run(ramp, Readout(nints=1, ngroups=1, **A1))
    # interior row: left median 1000, right 3000 -> 2000 subtracted
    np.testing.assert_array_equal(det[1000, 100:103], -2000.0)
    # row 4: window rows -1..9 reflected -> 20 zeros and 24 values 4..9:
    # medians 4 (left) and 12 (right) -> 8 subtracted
    np.testing.assert_array_equal(det[4, 1000], -8.0)
    np.testing.assert_array_equal(to_detector_frame(ramp.zeroframe, **A1)[0, 1000, 100], -2000.0)
    assert ramp.zeroframe[0, 1000, 1000] == 0.0


def test_running_median_reflects_at_the_edges_and_skips_bad_pixels():
    vals = np.arange(12, dtype=np.float64)[:, None]
    good = np.ones((12, 1), bool)
    med = _running_median(vals, good, 0, 12, 5, True)
    # row 0: rows 2,1,0,1,2 -> 1 ; row 11: rows 9,10,11,10,9 -> 10 ; row 5 -> 5
    assert med[0] == 1.0 and med[11] == 10.0 and med[5] == 5.0
    good[4] = False  # row 3's window 1..5 without 4 -> {1,2,3,5}: (2+3)/2
    assert _running_median(vals, good, 0, 12, 5, True)[3] == 2.5
    good[:] = False
    assert np.isnan(_running_median(vals, good, 0, 12, 5, True)).all()


def _sub_ramp(with_refpix=True):
    # 32x32 subarray at the science-frame corner (SUBSTRT 1,1) read by one output
    data = np.zeros((1, 2, 32, 32), np.float32)
    pdq = np.zeros((32, 32), np.uint32)
    if with_refpix:
        pdq[:4] |= REF
        pdq[:, :4] |= REF
    return Ramp(data=data, pixeldq=pdq, groupdq=np.zeros(data.shape, np.uint8),
                zeroframe=np.zeros((1, 32, 32), np.float32))


def test_one_output_subarray_uses_flagged_refpix_per_detector_parity():
    ramp = _sub_ramp()
    # with FASTAXIS=-1 the subarray occupies detector columns 2016..2047, so
    # science column x is detector column 2047 - x: even x <-> odd detector column
    x = np.arange(32)
    ramp.data[:, :] = np.where(x % 2 == 0, 13.0, 4.0).astype(np.float32)
    ramp.data[0, 1] += 1.0  # second group drifts by 1
    ramp.data[:, :, 4:, 4:] += 6.0
    ramp.pixeldq[0, 0] |= F.DO_NOT_USE
    ramp.data[0, :, 0, 0] = 1e6  # a DO_NOT_USE reference pixel must be ignored
    ramp.zeroframe[0] = ramp.data[0, 0]
    ramp.zeroframe[0, 10, 10] = 0.0
    ro = Readout(nints=1, ngroups=2, fastaxis=-1, slowaxis=2, noutputs=1, subarray="SUB32")
    assert refpix.run(ramp, ro) == "COMPLETE"
    np.testing.assert_array_equal(ramp.data[0, :, 4:, 4:], 6.0)
    np.testing.assert_array_equal(ramp.data[0, :, 1:4, :], 0.0)
    np.testing.assert_array_equal(ramp.zeroframe[0, 4:, 4:][ramp.zeroframe[0, 4:, 4:] != 0], 6.0)
    assert ramp.zeroframe[0, 10, 10] == 0.0


def test_subarray_without_reference_pixels_is_skipped_unchanged():
    ramp = _sub_ramp(with_refpix=False)
    ramp.data[:] = np.random.default_rng(3).normal(size=ramp.data.shape).astype(np.float32)
    before = ramp.data.copy()
    ro = Readout(nints=1, ngroups=2, noutputs=1, substrt1=500, substrt2=500, subarray="SUB32")
    assert refpix.run(ramp, ro) == "SKIPPED"
    np.testing.assert_array_equal(ramp.data, before)
    ro4 = Readout(nints=1, ngroups=2, noutputs=4, substrt1=500, substrt2=500, subarray="SUB32")
    assert refpix.run(ramp, ro4) == "SKIPPED"
    np.testing.assert_array_equal(ramp.data, before)


def test_pseudo_refpix_uses_edge_rows_per_group_and_parity():
    # an interior one-output subarray (coronagraphy: no reference pixel on any side) with per-group
    # odd/even offsets and a source in the middle: the 4 bottom and top rows stand in for reference rows
    ramp = _sub_ramp(with_refpix=False)
    x = np.arange(32)
    offsets = np.array([[13.0, 4.0], [15.5, 2.0]], np.float32)  # (group, detector-column parity)
    # SUBSTRT1 501 with FASTAXIS -1: science column x is detector column 2047 - 500 - x
    parity = (2047 - 500 - x) % 2
    for g in range(2):
        ramp.data[0, g] = offsets[g, parity]
    ramp.data[0, :, 10:20, 10:20] += 100.0  # the star, away from the edge rows
    ramp.data[0, :, 2, 3] += 500.0  # one hot pseudo reference pixel: clipped away
    ro = Readout(nints=1, ngroups=2, fastaxis=-1, slowaxis=2, noutputs=1, substrt1=501, substrt2=500,
                 subarray="SUB32")
    before = ramp.pixeldq.copy()
    assert refpix.run(ramp, ro, pseudo_refpix=True) == "COMPLETE"
    np.testing.assert_array_equal(ramp.data[0, :, 10:20, 10:20], 100.0)
    inner = np.ones((32, 32), bool)
    inner[10:20, 10:20] = inner[2, 3] = False
    np.testing.assert_array_equal(ramp.data[0][:, inner], 0.0)
    np.testing.assert_array_equal(ramp.pixeldq, before)  # the pseudo flags are not kept
    # a subarray that has reference pixels keeps using them (the option changes nothing there)
    real, plain = _sub_ramp(), _sub_ramp()
    for r in (real, plain):
        r.data[:] = np.random.default_rng(5).normal(size=r.data.shape).astype(np.float32)
    ro1 = Readout(nints=1, ngroups=2, fastaxis=-1, slowaxis=2, noutputs=1, subarray="SUB32")
    refpix.run(real, ro1, pseudo_refpix=True)
    refpix.run(plain, ro1)
    np.testing.assert_array_equal(real.data, plain.data)


def test_clipped_mean_matches_scipy_sigmaclip_semantics():
    vals = np.array([10.0] * 20 + [10.5] * 20 + [1000.0], np.float32)
    # first pass: mean 33.9, std 151 -> 1000 clipped; second pass keeps the rest
    assert refpix.clipped_mean(vals) == np.float32(10.25)
    assert refpix.clipped_mean(np.full(5, 3.0, np.float32)) == 3.0
    assert refpix.clipped_mean(vals, np.full(vals.size, F.DO_NOT_USE, np.uint32)) is None


def _same_scalar(a, b):
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, on the NaN and inf sections
def test_compiled_section_clipped_mean_is_numpys_bit_for_bit():
    # the per-group statistics of refpix run compiled (_section_clipped_mean): the same numpy scalar,
    # value bits and dtype, as clipped_mean of the raveled section, in float32 and float64 (mode64)
    rng = np.random.default_rng(7)
    kinds = ("normal", "outliers", "constant", "nan", "integers", "one_off", "inf", "few")
    for trial in range(400):
        kind = kinds[trial % len(kinds)]
        shape = (int(rng.integers(1, 5)), 3 if kind == "few" else int(rng.integers(1, 600)))
        v = rng.standard_normal(shape) * 10 ** rng.uniform(-3, 4) + rng.uniform(-1e4, 1e4)
        if kind == "outliers":
            v[rng.random(shape) < 0.05] += rng.uniform(-1e5, 1e5)
        elif kind == "constant":
            v[:] = rng.uniform(-100, 100)
        elif kind == "nan":
            v[rng.random(shape) < 0.01] = np.nan
        elif kind == "integers":
            v = np.round(v)
        elif kind == "one_off":
            v[:] = 5.0
            v.flat[0] = 6.0
        elif kind == "inf":
            v[rng.random(shape) < 0.02] = np.inf
        # a column-strided section of a flipped frame, as refpix reads its parities
        frame = np.zeros((shape[0], 2 * shape[1]), np.float32)
        frame[:, ::2] = v.astype(np.float32)
        dq = np.zeros(frame.shape, np.uint32)
        dq[:, ::2] = np.where(rng.random(shape) < (0.9 if trial % 13 == 0 else 0.1), F.DO_NOT_USE, 0)
        vals, vdq = (a[::-1, ::2][::-1] if trial % 2 else a[:, ::2] for a in (frame, dq))
        for mode64 in (False, True):
            expected = refpix.clipped_mean((vals.astype(np.float64) if mode64 else vals).ravel(), vdq.ravel())
            got = refpix._section_clipped_mean(vals, vdq, mode64)
            assert _same_scalar(expected, got), (trial, kind, mode64, expected, got)
    assert refpix._section_clipped_mean(np.ones((2, 2), np.float32), np.full((2, 2), F.DO_NOT_USE, np.uint32),
                                        False) is None


def test_compiled_pairwise_sum_is_numpys():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for n in (0, 1, 7, 8, 9, 127, 128, 129, 130, 255, 1000, 4097, 20011):
            a = (rng.standard_normal(n) * 100 + 1e3).astype(dtype)
            got = dtype(dtype(0) + refpix._pairwise_sum(a, n, dtype(0), np.zeros(64, dtype)))
            assert got.tobytes() == a.sum().tobytes(), (dtype, n)
