"""assign_wcs: the gwcs chain, its SIP approximation and S_REGION on a hand-made distortion."""

import numpy as np
import pytest

from webbflow.steps import assign_wcs
from webbflow.wcs import polynomial_distortion, sky_to_v23, v23_to_sky

SCALE = 0.031
XC = {(1, 0): SCALE, (2, 0): SCALE * 1.0 / 1024**2, (3, 0): SCALE * 3 / 1024**3, (1, 2): SCALE * 3 / 1024**3}
YC = {(0, 1): SCALE, (1, 1): SCALE * 0.5 / 1024**2, (0, 3): SCALE * 3 / 1024**3, (2, 1): SCALE * 3 / 1024**3}


@pytest.fixture(scope="module")
def distortion():
    return polynomial_distortion(1023.5, 1023.5, XC, YC, 120.0, -527.0, -0.5, -1, fit_size=2048)


POINTING = {"v2_ref": 90.0, "v3_ref": -500.0, "roll_ref": 75.0, "ra_ref": 53.16, "dec_ref": -27.79}


def test_reference_point_maps_to_ra_ref(distortion):
    # a pixel whose V2/V3 is exactly (V2_REF, V3_REF) must land on (RA_REF, DEC_REF)
    x, y = distortion.inverse(POINTING["v2_ref"], POINTING["v3_ref"])
    wcs = assign_wcs.build_wcs(distortion, POINTING, (1, 1), (2048, 2048))
    ra, dec = wcs(x, y)
    assert abs(ra - 53.16) * 3600 * np.cos(np.radians(27.79)) < 1e-6
    assert abs(dec + 27.79) * 3600 < 1e-6


def test_roll_orients_v3_to_position_angle():
    ra0, dec0 = v23_to_sky(90.0, -500.0, POINTING)
    ra1, dec1 = v23_to_sky(90.0, -499.0, POINTING)  # +1 arcsec along V3
    pa = np.degrees(np.arctan2((ra1 - ra0) * np.cos(np.radians(dec0)), dec1 - dec0))
    assert pa == pytest.approx(75.0, abs=1e-4)
    v2, v3 = sky_to_v23(ra1, dec1, POINTING)
    assert v2 == pytest.approx(90.0, abs=1e-8) and v3 == pytest.approx(-499.0, abs=1e-8)


def test_subarray_shift_and_sip(distortion):
    # a 160x160 subarray at SUBSTRT (1889, 1889): pixel (0, 0) is full-frame (1888, 1888)
    status, wcs, info = assign_wcs.run(distortion, {**POINTING, "crpix1": 80.5, "crpix2": 80.5},
                                       (1889, 1889), (160, 160))
    full = assign_wcs.build_wcs(distortion, POINTING, (1, 1), (2048, 2048))
    assert status == "COMPLETE"
    np.testing.assert_allclose(wcs(0.0, 0.0), full(1888.0, 1888.0), rtol=0, atol=1e-12)
    assert info["ctype1"] == "RA---TAN-SIP" and info["crpix1"] == 80.5
    assert info["s_region"].startswith("POLYGON ICRS  ") and len(info["s_region"].split()) == 10
    from astropy.io import fits
    from astropy.wcs import WCS

    sip = WCS(fits.Header({k.upper(): v for k, v in info.items() if k != "s_region"}))
    yy, xx = np.mgrid[0:159:15j, 0:159:15j]
    ra, dec = wcs(xx, yy)
    px, py = sip.all_world2pix(ra, dec, 0)
    assert np.hypot(px - xx, py - yy).max() < 0.01


def test_missing_pointing_is_an_error(distortion):
    with pytest.raises(ValueError, match="ROLL_REF"):
        assign_wcs.build_wcs(distortion, {**POINTING, "roll_ref": None}, (1, 1), (10, 10))
