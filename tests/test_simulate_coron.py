"""The coronagraphy simulator (``demo-coron``, issue #15 part 1), its associations and the stage-1 known issues.

Truth: the companion's injected position and flux come back from its noiseless image (flux-weighted
centroid within 0.1 px of the truth table's pixel position; its whole-subarray sum equals the truth
flux × the occulter's transmission within 3 %, the PSF's wings outside the 20″ subarray being < 1 %);
the star is occulted (< 1 % of its flux left) but leaves speckles at the companion's separation
between 1 % and 50 % of the companion's peak.
Headers: the uncal opens as a RampModel with the coronagraphic keywords, PSFMASK as a PsfMaskModel.
"""

import numpy as np
import pytest
from astropy.io import fits

from webbflow import dqflags
from webbflow.associations import coron3_associations
from webbflow.exposures import exposure_table
from webbflow.io.errors import InputError
from webbflow.simulate import run_specs
from webbflow.simulate.coron import coron_positions, coron_rate, coron_truth
from webbflow.simulate.presets import coron_specs


def test_companion_recovered_from_noiseless_image():
    specs = coron_specs()
    truth = coron_truth(specs)
    comp, pos = truth["companion"], truth["star_positions"]
    for k in (0, 1):  # both rolls
        star, companion = coron_rate(specs[k], components=True)
        y, x = np.mgrid[:320, :320]
        row = pos[k]
        cx, cy = row["companion_x"].value, row["companion_y"].value
        near = np.hypot(x - cx, y - cy) < 6
        w = companion * near
        assert abs((w * x).sum() / w.sum() - cx) < 0.1 and abs((w * y).sum() / w.sum() - cy) < 0.1
        expected = comp["flux"][0].value * comp["mask_transmission"][0]
        assert companion.sum() == pytest.approx(expected, rel=0.03)
        # the star is occulted: what is left of it is a small fraction of its flux ...
        assert star.sum() < 1e-2 * comp["star_flux"][0].value
        # ... but its speckles are there: at the companion's separation below its peak, not negligible
        ring = star[np.abs(np.hypot(x - row["mask_x"].value, y - row["mask_y"].value) - 1.5 / 0.063) < 2]
        assert 0.01 * companion.max() < ring.max() < 0.5 * companion.max()
    # the rolls turn the companion about the star by the roll difference (10 deg)
    a = [np.degrees(np.arctan2(pos[k]["companion_y"].value - pos[k]["star_y"].value,
                               pos[k]["companion_x"].value - pos[k]["star_x"].value)) for k in (0, 1)]
    assert abs(abs(a[1] - a[0]) - 10.0) < 0.2
    assert comp["separation"][0].value == pytest.approx(1.5)
    assert np.hypot(pos[0]["companion_x"].value - pos[0]["star_x"].value,
                    pos[0]["companion_y"].value - pos[0]["star_y"].value) * 0.063 == pytest.approx(1.5, rel=0.01)


def test_sgd_offsets_move_the_reference_star():
    specs = coron_specs()
    refs = specs[2:]
    stars = np.array([coron_positions(s)["star"] for s in refs])
    # 5-POINT-BOX: ±15 mas (≈0.24 px) around the first point, plus 2 mas FSM error
    d = np.hypot(*(stars[1:] - stars[0]).T) * 0.063
    assert np.all(np.abs(d - np.hypot(0.015, 0.015)) < 0.006)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("coron_sim")
    specs = coron_specs(nints=1, ngroups=3)
    paths = run_specs([specs[0], specs[2]], out)
    return out, paths


def test_headers_open_as_jwst_models(small_demo):
    from stdatamodels.jwst import datamodels

    out, paths = small_demo
    with datamodels.RampModel(str(paths[0])) as m:
        assert m.meta.exposure.type == "NRC_CORON" and m.meta.instrument.coronagraph == "MASKA335R"
        assert m.meta.instrument.pupil == "MASKRND" and m.meta.subarray.name == "SUB320A335R"
        assert m.meta.exposure.psf_reference is False and m.data.shape == (1, 3, 320, 320)
    with datamodels.RampModel(str(paths[1])) as m:
        assert m.meta.exposure.psf_reference is True and m.meta.dither.small_grid_pattern == "5-POINT-BOX"
    (psfmask,) = (out / "refs").glob("*psfmask*")
    with datamodels.PsfMaskModel(str(psfmask)) as m:
        assert m.data.shape == (320, 320) and m.data.min() < 1e-3 and m.data.max() > 0.99
        assert m.meta.instrument.coronagraph == "MASKA335R"
    (dark,) = (out / "refs").glob("*dark*")
    assert fits.getheader(dark)["DRKNOISE"] > 0 and fits.getheader(dark)["EXP_TYPE"] == "NRC_CORON"
    # no reference pixel anywhere on the subarray (NC-CI02)
    (mask,) = (out / "refs").glob("*_mask_*")
    assert not np.any(fits.getdata(mask, "DQ") & dqflags.REFERENCE_PIXEL)


def test_coron3_association_from_headers(small_demo):
    out, paths = small_demo
    rows = exposure_table(out / "uncal")
    (asn,) = coron3_associations(rows)
    d = asn.as_dict("calints")
    members = d["products"][0]["members"]
    assert [m["exptype"] for m in members] == ["science", "psf"]
    assert members[0]["expname"] == paths[0].name.replace("_uncal", "_calints")
    assert d["asn_type"] == "coron3" and d["asn_id"] == "c1001"
    assert d["products"][0]["name"] == "jw01412-c1001_t001_nircam_f335m-maskrnd-sub320a335r"
    with pytest.raises(InputError, match="no PSF reference"):
        coron3_associations([r for r in rows if not r.is_psf])


def test_companion_where_truth_says_in_the_noiseless_uncal(tmp_path):
    # the written ramps, not the in-memory rate: roll 1 with and without the companion, every random
    # ingredient and the non-linearity off; the difference of the two last-minus-first slopes is the
    # companion alone (times the pixel response), its centroid the truth table's pixel
    from dataclasses import replace

    spec = replace(coron_specs(nints=1, ngroups=3)[0].noiseless(), nonlinearity=False, dark_ref_noise=0.0)
    alone = replace(spec, coron=replace(spec.coron, contrast=0.0))
    slopes = []
    for s, folder in ((spec, tmp_path / "with"), (alone, tmp_path / "without")):
        (path,) = run_specs([s], folder)
        ramp = fits.getdata(path, "SCI").astype(float)
        slopes.append(ramp[0, -1] - ramp[0, 0])
    diff = slopes[0] - slopes[1]
    row = coron_truth([spec])["star_positions"][0]
    cx, cy = row["companion_x"].value, row["companion_y"].value
    y, x = np.mgrid[:320, :320]
    w = np.where(np.hypot(x - cx, y - cy) < 6, diff, 0.0)
    assert abs((w * x).sum() / w.sum() - cx) < 0.1 and abs((w * y).sum() / w.sum() - cy) < 0.1
    assert diff[round(cy), round(cx)] > 100  # DN: the companion is bright in the ramp


def test_coron3_members_in_pool_order_with_the_reference_observed_first():
    # jwst's generator adds members in pool order: a reference observed before the target comes first
    from webbflow.exposures import Exposure

    def row(obs, exp, is_psf, target):
        root = f"jw01412{obs:03d}001_02101_{exp:05d}_nrcalong"
        return Exposure(f"{root}_uncal.fits", root, root[:-9], "01412", f"{obs:03d}", "001", "02", "1", "01",
                        f"{exp:05d}", "NRCALONG", "F335M", "MASKRND", "NRC_CORON", "SUB320A335R", "MEDIUM2", 2, 5,
                        is_psf=is_psf, targname=target)

    rows = [row(3, 1, False, "T"), row(1, 1, True, "REF"), row(1, 2, True, "REF"), row(2, 1, False, "T"),
            row(4, 1, False, "OTHER")]
    asns = coron3_associations(rows)
    # one association per science target (numbered t001, t002 in target-name order), c1001... in name order
    assert [a.asn_id for a in asns] == ["c1001", "c1002"]
    assert [a.product.split("_", 1)[1] for a in asns] == ["t001_nircam_f335m-maskrnd-sub320a335r",
                                                          "t002_nircam_f335m-maskrnd-sub320a335r"]
    other, target = asns
    members = target.as_dict("calints")["products"][0]["members"]
    assert [m["exptype"] for m in members] == ["psf", "psf", "science", "science"]
    assert [m["expname"][7:10] for m in members] == ["001", "001", "002", "003"]
    # the other target shares the reference star
    assert [m["exptype"] for m in other.as_dict()["products"][0]["members"]] == ["psf", "psf", "science"]
