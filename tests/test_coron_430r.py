"""The other LW round mask of the coronagraphy mode (issue #15 part 1): MASK430R + F430M on NRCALONG's
SUB320A430R (320 × 320, SUBSTRT 814/1502, one output, no reference pixels).

The simulator's MASKA430R configuration (``coron_specs(mask="MASKA430R")``: stpsf's band-limited round
occulter with σ = 2.58832 /″, both rolls and two of the reference star's small-grid-dither points, 2
integrations × 3 groups) goes through the library as the workflow runs it under the preset's
recommended line: detector1 (dark skipped, pseudo reference rows), image2 (calints), the coron3
association from the headers and coron3 with its PSFMASK (sector KLIP, ADI + RDI, the star measured
behind the mask, the companion fit; the contrast curve off for time).  Against the simulator's truth,
with the thresholds of the MASK335R demo's test (tests/test_coron_workflow.py):

* the subarray is SUB320A430R at SIAF's NRCA5_MASK430R corner (SUBSTRT 814/1502, coron-algorithms.md §1)
  and its PSFMASK reference MASKA430R's for F430M: t² of the occulter, 0 at the mask centre, 1 far out,
  and 0.5 at the radius where stpsf's profile ``1 − (2 J1(σr)/(σr))²`` squared is 0.5 (wider than
  MASK335R's: σ is smaller);
* the 1e-4 companion at 1.5″ is found within 0.1 px of its true pixel in the first roll with S/N > 20
  and its flux within 5 % of truth × PHOTMJSR × the occulter's transmission at 1.5″ × FLUXFRAC;
* its RA/Dec within 5 mas of truth and closer than the first roll's target-acquisition offset, which
  the WCS does not know (``klip.center_method: symmetry``).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def r430_run(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_coron_workflow import reduce_coron_case

    return reduce_coron_case(tmp_path_factory.mktemp("coron_430r"), "MASKA430R", contrast=False)


def test_430r_subarray_and_psfmask(r430_run):
    from scipy.optimize import brentq
    from stdatamodels.jwst import datamodels

    from webbflow.simulate.coron import occulter_transmission
    from webbflow.simulate.optics import SIAF

    out, asn, psfmask, _ = r430_run
    header = fits.getheader(out / "uncal" / f"{asn.members[0]}_uncal.fits")
    assert (header["SUBARRAY"], header["SUBSTRT1"], header["SUBSTRT2"]) == ("SUB320A430R", 814, 1502)
    assert header["CORONMSK"] == "MASKA430R" and header["PUPIL"] == "MASKRND" and header["DETECTOR"] == "NRCALONG"
    with datamodels.PsfMaskModel(str(psfmask)) as m:
        assert m.data.shape == (320, 320) and m.meta.subarray.name == "SUB320A430R"
        assert m.meta.instrument.coronagraph == "MASKA430R" and m.meta.instrument.filter == "F430M"
        t = np.asarray(m.data, float)
    sci = fits.getheader(out / "stage1" / f"{asn.members[0]}_calints.fits", "SCI")
    xc, yc = sci["XREF_SCI"] - 1, sci["YREF_SCI"] - 1
    assert t[round(yc), round(xc)] < 1e-3 and t[0, 0] > 0.99 and t[319, 319] > 0.99
    # the half-power radius along +x from the mask centre against stpsf's profile with MASK430R's sigma,
    # and wider than MASK335R's
    half = brentq(lambda r: occulter_transmission(r, "MASKA430R") ** 2 - 0.5, 0.05, 2.0)
    half335 = brentq(lambda r: occulter_transmission(r, "MASKA335R") ** 2 - 0.5, 0.05, 2.0)
    # the first pixel right of the centre with t² > 0.5, linearly interpolated with the one before
    x0, y0 = int(np.floor(xc)) + 1, round(yc)
    row = t[y0, x0:]
    i = int(np.argmax(row > 0.5))
    crossing = x0 + i - 1 + (0.5 - row[i - 1]) / (row[i] - row[i - 1])
    measured = np.hypot((crossing - xc) * SIAF["NRCALONG"][3], (y0 - yc) * SIAF["NRCALONG"][4])  # arcsec
    print(f"half-power radius {measured:.3f}\" (stpsf profile {half:.3f}\", MASK335R {half335:.3f}\")")
    assert abs(measured - half) < 0.02 and half > 1.2 * half335


def test_430r_coron3_recovers_the_companion(r430_run):
    from test_coron_workflow import assert_companion_recovered, companion_against_truth

    out, asn, _, products = r430_run
    assert asn.product == "jw01412-c1001_t001_nircam_f430m-maskrnd-sub320a430r"
    assert len(products["psfsub"]) == 2 and len(products["crfints"]) == 4
    assert_companion_recovered(*companion_against_truth(out, asn, products, 63.0))
