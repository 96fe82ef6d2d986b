"""SIRS reference-pixel correction (``steps.refpix.refpix_algorithm: sirs``, issue #16 part 3).

* The simulator's SIRSKERNEL reference opens as jwst's ``SIRSKernelModel`` and holds the detector's
  kernels; jwst's ``make_kernels`` arithmetic gives back the least-squares kernels it was built from.
* Truth: on a full frame with 1/f noise (80 % common to the amplifiers, as the simulator models it)
  and no sources, the row-correlated noise left after refpix (per amplifier, the rms of the row
  medians of the last-minus-first group difference, in quadrature above the floor: the same detector
  simulated without 1/f and corrected without side pixels, i.e. white noise only) is smaller with
  SIRS than with the running median by the factor asserted.  That counts both the 1/f left and
  the noise the side-pixel estimate itself adds, which is what SIRS improves.  The bias is not
  judged here (stcal-algorithms.md §6: one realization's 1/f moves whole rows).
* SIRS is full-frame only in jwst: a subarray with the option on is corrected exactly as with the
  running median.
"""

import numpy as np
import pytest
from astropy.io import fits

from webbflow.config import DETECTOR1_STEPS
from webbflow.io import read_uncal
from webbflow.refs import load_references, select_references
from webbflow.refs.select import DETECTOR1_REFTYPES
from webbflow.simulate import ExposureSpec, simulate_exposure
from webbflow.simulate.noise import sirs_kernel_coefficients
from webbflow.stages import detector1
from webbflow.steps.refpix import sirs_kernels

REFTYPES = (*DETECTOR1_REFTYPES, "sirskernel")
FULL = dict(detector="NRCB1", subarray="FULL", readpatt="RAPID", nints=1, ngroups=3, n_stars=0,
            n_galaxies=0, n_saturating_stars=0, cr_rate=0.0, snowballs=0, one_over_f=6.0, seed=7)

# SIRS must leave at most this fraction of the running median's row-correlated noise (rms above the floor).
# Measured: 0.925 (6 DN of 1/f; 0.947 with 3 DN), in line with Rauscher's 5-10 % less noise than the median.
MAX_SIRS_OVER_MEDIAN = 0.95


def _reduce(uncal, refs, algorithm, steps=DETECTOR1_STEPS[:4], **refpix):
    ramp, readout, headers = read_uncal(uncal)
    loaded = load_references({t: refs[t] for t in REFTYPES if refs.get(t)}, readout, ramp.shape[-2:])
    params = {"refpix": {"refpix_algorithm": algorithm, **refpix}}
    for _ in detector1.iter_steps(ramp, readout, headers, loaded, params, steps=steps):
        pass
    return ramp, readout


def _row_noise(ramp, readout):
    """Per amplifier (detector columns), rms of the row medians of the last-minus-first group, DN."""
    from webbflow.steps.refpix import to_detector_frame

    diff = to_detector_frame(ramp.data[0, -1] - ramp.data[0, 0], readout.fastaxis, readout.slowaxis)
    inner = diff[4:-4]  # science rows; the side reference columns are left out below
    amps = [inner[:, a * 512 + (4 if a == 0 else 0): (a + 1) * 512 - (4 if a == 3 else 0)] for a in range(4)]
    return np.array([np.std(np.median(a, axis=1) - np.median(a)) for a in amps])


@pytest.fixture(scope="module")
def full_frames(tmp_path_factory):
    out = {}
    for name, rms in (("onef", FULL["one_over_f"]), ("floor", 0.0)):
        d = tmp_path_factory.mktemp(name)
        uncal = simulate_exposure(ExposureSpec(**{**FULL, "one_over_f": rms}), d)
        refs = select_references(fits.getheader(uncal), d / "refs", reftypes=REFTYPES)
        out[name] = (uncal, refs)
    return out


@pytest.mark.slow
def test_simulated_kernel_reference_is_jwst_format(full_frames):
    from stdatamodels.jwst import datamodels

    uncal, refs = full_frames["onef"]
    assert refs["sirskernel"] is not None
    with datamodels.SIRSKernelModel(refs["sirskernel"]) as model:
        assert model.meta.reftype.lower() == "sirskernel"
        gamma, zeta = np.asarray(model.nrcb1.gamma), np.asarray(model.nrcb1.zeta)
    assert gamma.shape == zeta.shape == (4, 1025)
    # jwst's make_kernels (no smoothing: gaussmooth -> 0 is a delta) returns the designed 61-row kernels:
    # the left kernel of amplifier A sums to ~1 (its own pixels), of D to ~0; B and C share the sides
    kl, kr = sirs_kernels(gamma, zeta, gaussmooth=1e-3, halfwidth=30)
    sums_l = np.array([k.sum() for k in kl])
    sums_r = np.array([k.sum() for k in kr])
    assert sums_l[0] > 0.9 and sums_r[3] > 0.9 and abs(sums_l[3]) < 0.05 and abs(sums_r[0]) < 0.05
    np.testing.assert_allclose(sums_l[1:3], sums_r[1:3], rtol=1e-9)
    assert 0.6 < sums_l[1] + sums_r[1] < 1.0  # only the common part of the 1/f is seen by both sides


@pytest.mark.slow
def test_sirs_reduces_row_noise_below_running_median(full_frames):
    uncal, refs = full_frames["onef"]
    floor = _row_noise(*_reduce(*full_frames["floor"], "median", use_side_ref_pixels=False))
    median = _row_noise(*_reduce(uncal, refs, "median"))
    sirs = _row_noise(*_reduce(uncal, refs, "sirs"))
    excess_median = np.sqrt(np.maximum(median**2 - floor**2, 0.0))
    excess_sirs = np.sqrt(np.maximum(sirs**2 - floor**2, 0.0))
    ratio = np.sqrt(np.sum(excess_sirs**2) / np.sum(excess_median**2))
    print(f"row-median rms per amplifier (DN): floor {np.round(floor, 3)}, median {np.round(median, 3)}, "
          f"SIRS {np.round(sirs, 3)}; 1/f left, SIRS/median {ratio:.3f}")
    assert ratio <= MAX_SIRS_OVER_MEDIAN


@pytest.mark.slow
def test_sirs_is_full_frame_only(tmp_path):
    """A 4-output subarray (side pixels used) with SIRS asked for and a kernel given: jwst applies SIRS to
    full frames only, so the result is the running median's, bit for bit."""
    import dataclasses

    from tso_segments import TSO_SPECS

    from webbflow.steps import refpix

    spec = dataclasses.replace(TSO_SPECS["grism-4out"], nints=1, ngroups=3)
    uncal = simulate_exposure(spec, tmp_path)
    refs = select_references(fits.getheader(uncal), tmp_path / "refs")
    ramp, readout = _reduce(uncal, refs, "median", steps=DETECTOR1_STEPS[:3])
    assert readout.noutputs == 4
    gamma, zeta = sirs_kernel_coefficients(2.0, 0.8, 10.0)
    a, b = ramp, dataclasses.replace(ramp, data=ramp.data.copy())
    refpix.run(a, readout)
    refpix.run(b, readout, refpix_algorithm="sirs", sirs_kernel={"gamma": gamma, "zeta": zeta})
    assert np.array_equal(a.data, b.data)
