"""extract_1d box extraction of a time series (jwst 3.0), on a synthetic grism cutout.

Truth: a trace of known flux per column on a known background (linear in rows) is recovered
by the box sum with the median and polynomial backgrounds; NPIXELS counts NaN pixels out.
Parity: jwst 3.0's ``create_extraction`` on the same cutout as a SlitModel (oracle venv) gives
identical columns (WAVELENGTH, FLUX, errors, variances, BACKGROUND, NPIXELS, DQ) for a row-box
aperture with a median background, polynomial src/bkg coefficients with a poly background, and
the photom-has-run (Jy) path.
"""

import json
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from webbflow.io.errors import ReferenceFileError
from webbflow.steps.extract_1d import (SPECTRUM_COLUMNS, aperture_from_reference, box_extract,
                                       read_extract1d_json)

NY, NX, NINTS = 48, 120, 4


def _cutout(seed=2, noise=True, gradient=0.02):
    rng = np.random.default_rng(seed)
    y = np.arange(NY)[:, None]
    x = np.arange(NX)[None]
    per_column = 400.0 + 100 * np.sin(x / 15.0)  # DN/s in the trace, per column
    profile = np.exp(-0.5 * ((y - 34.0) / 1.2) ** 2)
    profile /= profile.sum(axis=0)
    background = 3.0 + gradient * y + 0 * x
    scene = background + per_column * profile
    data = np.repeat(scene[None], NINTS, axis=0)
    var = np.maximum(scene, 1)[None] * np.ones((NINTS, 1, 1)) * 0.01
    if noise:
        data = data + rng.normal(0, 0.1, data.shape)
    data = data.astype(np.float32)
    data[1, 30, 50] = np.nan  # a flagged pixel in the aperture
    wave = (2.4 + 0.001 * x + 0 * y).astype(np.float32)
    wave[:, :3] = np.nan  # columns without a wavelength are dropped
    cube = SimpleNamespace(data=data, var_poisson=(var * 0.8).astype(np.float32),
                           var_rnoise=(var * 0.2).astype(np.float32), var_flat=np.zeros_like(data))
    return cube, wave, per_column[0]


REF_MEDIAN = {"apertures": [{"id": "ANY", "region_type": "target", "dispaxis": 1, "xstart": 2, "xstop": 115,
                             "ystart": 30, "ystop": 38, "bkg_coeff": [[4.5], [20.5], [42.5], [46.5]],
                             "bkg_fit": "median", "smoothing_length": 0}]}
REF_POLY = {"apertures": [{"id": "ANY", "dispaxis": 1, "xstart": 0, "xstop": NX - 1,
                           "src_coeff": [[29.5, 0.001], [39.5, 0.001]], "bkg_coeff": [[3.5], [22.5], [41.5], [47.5]],
                           "bkg_fit": "poly", "bkg_order": 1, "smoothing_length": 3}]}


def test_box_sum_recovers_the_trace_flux_over_the_background():
    cube, wave, truth = _cutout(noise=False, gradient=0.0)  # a median cannot follow a gradient
    cols, limits = box_extract(cube, wave, aperture_from_reference(REF_MEDIAN, cube.data.shape))
    assert cols["WAVELENGTH"].shape == (NINTS, 113)  # columns 2..115, less column 2 (no wavelength)
    want = truth[3:116]
    # rows 30..38 hold >99.9 % of the Gaussian trace; the median background is rows 5..20/43..46
    np.testing.assert_allclose(cols["FLUX"][0], want, rtol=2e-3)
    assert np.all(cols["NPIXELS"][0] == 9.0)
    # the NaN pixel lowers NPIXELS in that integration and column only
    col = 50 - 3
    assert cols["NPIXELS"][1, col] == 8.0 and cols["NPIXELS"][0, col] == 9.0
    assert limits["ystart"] == 30 and limits["ystop"] == 38 and limits["xstart"] == 3


def test_polynomial_background_removes_a_row_gradient():
    cube, wave, truth = _cutout(noise=False)
    ap = aperture_from_reference(REF_POLY, cube.data.shape)
    cols, _ = box_extract(cube, wave, ap)
    # the linear background (in rows) is fitted exactly by bkg_order 1: the trace flux remains
    np.testing.assert_allclose(cols["FLUX"][0][5:-5], truth[3:][5:-5], rtol=3e-3)
    # BACKGROUND is per pixel: 3 + 0.02 * (mean aperture row ~34.5)
    np.testing.assert_allclose(cols["BACKGROUND"][0][5:-5], 3 + 0.02 * 34.5, rtol=0.01)


def test_malformed_references_are_one_clear_error(tmp_path):
    bad = {"not json": "{apertures: ", "no apertures": json.dumps({"x": 1}),
           "odd coefficients": json.dumps({"apertures": [{"id": "ANY", "src_coeff": [[1]]}]}),
           "text limit": json.dumps({"apertures": [{"id": "ANY", "ystart": "low"}]})}
    for what, text in bad.items():
        path = tmp_path / f"{what.replace(' ', '_')}.json"
        path.write_text(text)
        with pytest.raises(ReferenceFileError, match=path.name):
            read_extract1d_json(path)


_ORACLE = """
import json, sys, numpy as np
from astropy.modeling import models
from gwcs import wcs as gwcs_wcs, coordinate_frames as cf
from stdatamodels.jwst import datamodels
from jwst.extract_1d.extract import create_extraction
d = np.load(sys.argv[1])
ref = json.loads(open(sys.argv[2]).read())
photom = sys.argv[4] == "yes"
m = datamodels.SlitModel(data=d["data"], dq=np.zeros(d["data"].shape, np.uint32), err=np.sqrt(d["var_poisson"] + d["var_rnoise"]),
                         var_poisson=d["var_poisson"], var_rnoise=d["var_rnoise"], var_flat=d["var_flat"], wavelength=d["wave"])
m.meta.exposure.type = "NRC_TSGRISM"
m.meta.instrument.name = "NIRCAM"; m.meta.instrument.detector = "NRCALONG"
m.meta.wcsinfo.dispersion_direction = 1
m.meta.target.source_type = "POINT"; m.source_type = "POINT"
m.meta.cal_step.photom = "COMPLETE" if photom else "SKIPPED"
m.meta.photometry.pixelarea_steradians = 9.31e-14
tr = models.Mapping((0, 1, 0)) | (models.Const1D(10.0) & models.Const1D(20.0) & models.Identity(1))
m.meta.wcs = gwcs_wcs.WCS([(cf.Frame2D(name="detector"), tr), (cf.CoordinateFrame(3, ["SPATIAL", "SPATIAL", "SPECTRAL"], (0, 1, 2), name="world", unit=("deg", "deg", "um")), None)])
out = datamodels.TSOMultiSpecModel()
create_extraction(m, None, out, ref, "ANY", 1, "NRC_TSGRISM")
t = out.spec[0].spec_table
np.savez(sys.argv[3], **{c: np.asarray(t[c]) for c in t.dtype.names if c not in ("INT_NUM", "SEGMENT", "N_ALONGDISP") and not c.startswith(("MJD", "TDB"))})
"""


@pytest.mark.parity
@pytest.mark.parametrize("ref,photom", [(REF_MEDIAN, False), (REF_POLY, False), (REF_MEDIAN, True)],
                         ids=["median-DN/s", "poly-DN/s", "median-Jy"])
def test_parity_with_jwst_box_extraction(tmp_path, ref, photom, oracle):
    python, _ = oracle
    cube, wave, _ = _cutout(seed=4)
    np.savez(tmp_path / "in.npz", wave=wave, **vars(cube))
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    (tmp_path / "o.py").write_text(_ORACLE)
    proc = subprocess.run([str(python), str(tmp_path / "o.py"), str(tmp_path / "in.npz"), str(tmp_path / "ref.json"),
                           str(tmp_path / "out.npz"), "yes" if photom else "no"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = np.load(tmp_path / "out.npz")
    ours, _ = box_extract(cube, wave, aperture_from_reference(read_extract1d_json(tmp_path / "ref.json"),
                                                              cube.data.shape),
                          pixar_sr=9.31e-14 if photom else None)
    differ = [c for c in SPECTRUM_COLUMNS if not np.array_equal(ours[c], theirs[c], equal_nan=True)]
    assert not differ, {c: float(np.nanmax(np.abs(ours[c] - theirs[c]))) for c in differ}
