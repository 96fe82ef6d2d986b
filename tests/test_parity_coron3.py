"""coron3 (coronagraphy stage 3): parity with jwst 3.0's calwebb_coron3, truth and bad input.

Synthetic calints built here (h-coronsim's simulator preset is not merged yet): a coronagraphic
PSF-like image (a ring with speckles around a dark core) at two rolls with a companion, PSF-reference
exposures of a brighter star at known sub-pixel offsets, a PSFMASK-like weight map, bad pixels
(including row 0 and column 0, and a NaN without a flag) and a cosmic ray.

- parity (marker ``parity``): jwst 3.0's Coron3Pipeline through the oracle venv against
  ``stages.coron3.run``: crfints identical DQ and SCI, psfstack, psfalign and psfsub within 1e-6
  relative of the largest value (bit-identical expected: same numpy/scipy routines), i2d within 1e-5
  relative on the same grid;
- truth: the float64 alignment recovers known sub-pixel shifts within 0.01 pixel where jwst's
  float32 fit stays near 0; klip keeps a companion's flux within 5 %;
- bad input: an association without PSF or science members, a PSFMASK of the wrong shape or with
  no weight: one InputError each and no file written.
"""

import json
import warnings

import numpy as np
import pytest
from astropy.io import fits

from webbflow import dqflags
from webbflow.io.errors import InputError, ReferenceFileError
from webbflow.stages import coron3
from webbflow.steps import align_refs, klip
from webbflow.steps.align_refs import fourier_imshift

N = 48
"""Image size (pixels): small, so jwst's 82 FFT evaluations per PSF plane stay cheap."""

SCI_ROOTS = ("jw01234001001_02101_00001_nrcalong", "jw01234002001_02101_00001_nrcalong")
PSF_ROOTS = tuple(f"jw01234003001_02101_0000{k}_nrcalong" for k in (1, 2, 3))
PSF_OFFSETS = ((0.31, -0.22), (-0.18, 0.27), (0.12, 0.41))
"""Known (dx, dy) pixel offsets of each PSF exposure (small-grid dither) from the science star."""
COMPANION = (13.0, 8.0, 0.4)
"""Companion at (dx, dy) pixels from the star at the first roll, total flux / star's peak."""
ROLLS = (0.0, 10.0)


def coron_psf(n=N, seed=3, drift=0.0):
    """A smooth coronagraphic PSF: a ring around a dark core, plus low-order speckles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    r = np.hypot(x, y)
    image = 1000.0 * np.exp(-0.5 * ((r - 6.0) / 2.0) ** 2) + 50.0 * np.exp(-r / 10.0)
    centres = rng.uniform(-12, 12, (6, 2))
    amps = rng.uniform(30, 120, 6) * (1 + drift * np.random.default_rng(seed + 1).normal(size=6))
    for (cx, cy), amp in zip(centres, amps):  # speckles (their brightness drifts a little between the stars)
        image += amp * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / 1.5 ** 2)
    return image * (1 - np.exp(-0.5 * (r / 2.5) ** 2))


def companion_image(dx, dy, flux, n=N):
    """A Gaussian companion (sigma 1.2 pixel) of total ``flux`` at ``(dx, dy)`` from the centre."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    g = np.exp(-0.5 * ((x - dx) ** 2 + (y - dy) ** 2) / 1.2 ** 2)
    return flux * g / g.sum()


def _cd(roll):
    """CD matrix (deg/pixel) of a 0.063"/pixel detector at ``roll`` degrees (x towards east at roll 0)."""
    rot = np.deg2rad(roll)
    return 0.063 / 3600 * np.array([[-np.cos(rot), np.sin(rot)], [np.sin(rot), np.cos(rot)]])


def companion_offset(roll):
    """The companion's (dx, dy) pixel offset from the star at ``roll`` (same sky position at every roll)."""
    return np.linalg.solve(_cd(roll), _cd(ROLLS[0]) @ np.array(COMPANION[:2]))


def write_calints(path, data, *, is_psf, roll, seed, bad=()):
    """A CubeModel calints as image2 writes one (SCI, ERR, DQ, VAR_*, WCS keywords)."""
    from stdatamodels.jwst import datamodels

    from webbflow.steps.assign_wcs import s_region
    from webbflow.steps.resample import make_tan_wcs

    rng = np.random.default_rng(seed)
    sigma = 2.0
    sci = (data + rng.normal(0, sigma, data.shape)).astype(np.float32)
    dq = np.zeros(data.shape, np.uint32)
    for i, y, x, flag in bad:
        if flag is None:
            sci[i, y, x] = np.nan  # NaN without a flag
        else:
            dq[i, y, x] |= flag
    model = datamodels.CubeModel(data=sci, dq=dq, err=np.full(data.shape, sigma, np.float32),
                                 var_poisson=np.full(data.shape, 1.0, np.float32),
                                 var_rnoise=np.full(data.shape, sigma ** 2 - 1.0, np.float32),
                                 var_flat=np.zeros(data.shape, np.float32))
    meta = model.meta
    meta.instrument.name, meta.instrument.detector = "NIRCAM", "NRCALONG"
    meta.instrument.filter, meta.instrument.pupil = "F335M", "MASKRND"
    meta.instrument.coronagraph = "MASKA335R"
    meta.exposure.type, meta.exposure.psf_reference = "NRC_CORON", is_psf
    meta.exposure.nints, meta.exposure.integration_time = data.shape[0], 100.0
    meta.exposure.exposure_time = meta.exposure.effective_exposure_time = 100.0 * data.shape[0]
    meta.exposure.measurement_time = meta.exposure.duration = 100.0 * data.shape[0]
    meta.exposure.start_time = 61000.0 + seed / 100
    meta.exposure.end_time = meta.exposure.start_time + 100.0 * data.shape[0] / 86400
    meta.exposure.mid_time = (meta.exposure.start_time + meta.exposure.end_time) / 2
    meta.subarray.name, meta.subarray.xsize, meta.subarray.ysize = "SUB320A335R", N, N
    meta.subarray.xstart, meta.subarray.ystart = 1, 1
    meta.observation.date, meta.observation.time = "2026-01-01", "00:00:00"
    meta.bunit_data = meta.bunit_err = "MJy/sr"
    meta.wcs = make_tan_wcs((80.0, -69.5), ((N - 1) / 2, (N - 1) / 2), _cd(roll), (N, N))
    w = meta.wcsinfo
    w.ra_ref, w.dec_ref, w.roll_ref, w.v3yangle, w.vparity = 80.0, -69.5, roll, 0.0, -1
    w.s_region = s_region(meta.wcs, (N, N))
    model.save(str(path))
    model.close()
    return path


def make_inputs(folder):
    """Two science rolls (3 ints) and three PSF exposures (2 ints), the ASN and a PSFMASK; returns paths."""
    from stdatamodels.jwst import datamodels

    folder.mkdir(parents=True, exist_ok=True)
    star = coron_psf()
    members = []
    for k, (root, roll) in enumerate(zip(SCI_ROOTS, ROLLS)):
        cx, cy = companion_offset(roll)
        flux = COMPANION[2]
        cube = np.stack([star + companion_image(cx, cy, flux * star.max())] * 3)
        bad = [(0, 0, 5, dqflags.DO_NOT_USE), (1, 7, 0, dqflags.DO_NOT_USE), (0, 20, 20, dqflags.HOT),
               (2, 30, 31, dqflags.DO_NOT_USE), (1, 12, 13, None), (2, N - 1, 10, dqflags.DO_NOT_USE)]
        cube[1, 25, 26] += 5000.0  # a cosmic ray the outlier detection flags
        write_calints(folder / f"{root}_calints.fits", cube, is_psf=False, roll=roll, seed=10 + k, bad=bad)
        members.append({"expname": f"{root}_calints.fits", "exptype": "science"})
    for k, (root, offset) in enumerate(zip(PSF_ROOTS, PSF_OFFSETS)):
        cube = np.stack([fourier_imshift(coron_psf(drift=0.05) * 3.0, offset)] * 2)
        bad = [(0, 3, 0, dqflags.DO_NOT_USE), (1, 40, 41, dqflags.DO_NOT_USE), (0, 22, 23, None)]
        write_calints(folder / f"{root}_calints.fits", cube, is_psf=True, roll=0.0, seed=20 + k, bad=bad)
        members.append({"expname": f"{root}_calints.fits", "exptype": "psf"})
    asn = {"asn_type": "coron3", "asn_rule": "candidate_Asn_Lv3NRCCoron", "asn_id": "c1001",
           "asn_pool": "synthetic_pool", "program": "01234", "target": "t001",
           "products": [{"name": "jw01234-c1001_t001_nircam_f335m-maskrnd-sub320a335r", "members": members}]}
    asn_path = folder / "coron3_asn.json"
    asn_path.write_text(json.dumps(asn, indent=1))
    y, x = np.mgrid[:N, :N] - (N - 1) / 2.0
    weights = (1 - np.exp(-0.5 * (np.hypot(x, y) / 3.0) ** 2)).astype(np.float32)
    weights[-1] = 0  # as NIRCam PSFMASKs: last row 0
    mask = datamodels.PsfMaskModel(data=weights)
    mask.meta.instrument.name, mask.meta.instrument.detector = "NIRCAM", "NRCALONG"
    mask.meta.reftype, mask.meta.author, mask.meta.pedigree = "PSFMASK", "webbflow tests", "DUMMY"
    mask.meta.description, mask.meta.useafter = "synthetic PSFMASK", "2022-01-01T00:00:00"
    mask_path = folder / "psfmask.fits"
    mask.save(str(mask_path))
    return asn_path, mask_path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("coron3_inputs"))


@pytest.fixture(scope="module")
def ours(inputs, tmp_path_factory):
    asn, mask = inputs
    return coron3.run(asn, {"psfmask": mask}, {}, tmp_path_factory.mktemp("coron3_ours"))


@pytest.fixture(scope="module")
def theirs(inputs, tmp_path_factory, oracle):
    from webbflow.oracle import run_coron3

    asn, mask = inputs
    products, wall = run_coron3(asn, {"psfmask": mask}, tmp_path_factory.mktemp("coron3_jwst"))
    print(f"jwst coron3 {wall:.1f} s")
    return products


def _arrays(path, names=("SCI", "ERR", "DQ")):
    with fits.open(path) as hdul:
        return {n: hdul[n].data for n in names if n in hdul}


def _rel(a, b):
    """Largest |a - b| over the largest |b| (NaN = NaN; NaN against a number is inf)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return np.inf
    ok = np.isfinite(b)
    scale = np.max(np.abs(b[ok])) if ok.any() else 1.0
    return float(np.max(np.abs(a[ok] - b[ok])) / scale) if ok.any() else 0.0


def _assert_products_match(ours, theirs, full_rank=True):
    names = {p.name for p in theirs["all"]}
    for kind in ("crfints", "psfalign", "psfsub"):
        mine = sorted(p.name for p in ours[kind])
        assert mine == sorted(p.name for p in theirs[kind]), kind
        assert set(mine) <= names
    assert ours["psfstack"].name == theirs["psfstack"].name
    pairs = [("psfstack", ours["psfstack"], theirs["psfstack"])]
    for kind in ("crfints", "psfalign", "psfsub"):
        pairs += [(kind, a, b) for a, b in zip(sorted(ours[kind]), sorted(theirs[kind]))]
    for kind, a, b in pairs:
        mine, jw = _arrays(a), _arrays(b)
        rel = {n: _rel(mine[n], jw[n]) for n in ("SCI", "ERR")}
        identical = {n: bool(np.array_equal(mine[n], jw[n], equal_nan=True)) for n in ("SCI", "ERR")}
        print(f"{kind:9s} {a.name}: max rel SCI {rel['SCI']:.3g} ERR {rel['ERR']:.3g}, bit-identical {identical}, "
              f"DQ same {np.array_equal(mine['DQ'], jw['DQ'])}")
        assert np.array_equal(mine["DQ"], jw["DQ"]), (kind, a.name)
        assert rel["SCI"] <= 1e-6, (kind, a.name)
        if kind != "psfsub" or not full_rank:
            assert rel["ERR"] <= 1e-6, (kind, a.name)
        else:  # psfsub ERR is round-off (full-rank KL projection): compare its size instead
            assert np.nanmax(np.abs(mine["ERR"])) < 1e-6 * np.nanmax(np.abs(mine["SCI"]))
            assert np.nanmax(np.abs(jw["ERR"])) < 1e-6 * np.nanmax(np.abs(jw["SCI"]))


@pytest.mark.parity
def test_products_match_jwst(ours, theirs):
    _assert_products_match(ours, theirs)
    pairs = [(ours[k], theirs[k]) for k in ("psfstack", "i2d")]
    pairs += [(a, b) for k in ("crfints", "psfalign", "psfsub") for a, b in zip(sorted(ours[k]), sorted(theirs[k]))]
    for a, b in pairs:  # the same model, step statuses and association keywords as jwst's
        ha, hb = fits.getheader(a), fits.getheader(b)
        keys = {k for h in (ha, hb) for k in h if k.startswith("S_") or k in ("DATAMODL", "IS_PSF", "ASNPOOL",
                                                                             "ASNTABLE", "EXP_TYPE")}
        assert {k: ha.get(k) for k in keys} == {k: hb.get(k) for k in keys}, a.name


@pytest.mark.parity
def test_products_match_jwst_with_options(inputs, tmp_path_factory, oracle):
    """klip truncated below the PSF planes (ERR then carries the references' residuals), a wider median box
    and HOT pixels replaced too: the parameters mean what jwst's mean."""
    from webbflow.oracle import run_coron3

    asn, mask = inputs
    params = {"klip": {"truncate": 3}, "align_refs": {"median_box_length": 5, "bad_bits": "DO_NOT_USE, HOT"},
              "resample": {"skip": True}}
    settings = {"klip.truncate": 3, "align_refs.median_box_length": 5, "align_refs.bad_bits": "DO_NOT_USE, HOT"}
    theirs, _ = run_coron3(asn, {"psfmask": mask}, tmp_path_factory.mktemp("coron3_jwst_options"),
                           skip=("resample",), settings=settings)
    ours = coron3.run(asn, {"psfmask": mask}, params, tmp_path_factory.mktemp("coron3_ours_options"))
    assert "i2d" not in ours
    _assert_products_match(ours, theirs, full_rank=False)
    with fits.open(ours["psfsub"][0]) as hdul:
        assert np.nanmedian(hdul["ERR"].data) > 0.1  # a real residual spread, not round-off


@pytest.mark.parity
def test_i2d_matches_jwst(ours, theirs):
    """Both rolls' psfsub integrations drizzled: the grid and every array as jwst's (1e-5 relative)."""
    assert ours["i2d"].name == theirs["i2d"].name
    names = ("SCI", "ERR", "WHT", "CON", "VAR_RNOISE", "VAR_POISSON")
    mine, jw = _arrays(ours["i2d"], names), _arrays(theirs["i2d"], names)
    for name in names:
        assert mine[name].shape == jw[name].shape, name
        rel = _rel(mine[name], jw[name])
        print(f"i2d {name}: max rel {rel:.3g}, bit-identical {np.array_equal(mine[name], jw[name], equal_nan=True)}")
        assert rel <= 1e-5, name
    with fits.open(ours["i2d"]) as a, fits.open(theirs["i2d"]) as b:
        from astropy.wcs import WCS

        ny, nx = mine["SCI"].shape
        corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], float)
        sky_a = WCS(a["SCI"].header).all_pix2world(corners, 0)
        sky_b = WCS(b["SCI"].header).all_pix2world(corners, 0)
        assert np.max(np.abs(sky_a - sky_b)) * 3600 < 1e-4  # the same grid to 0.1 mas


@pytest.mark.parity
def test_products_open_as_jwst_models(ours, theirs):
    from stdatamodels.jwst import datamodels

    for kind in ("crfints", "psfalign", "psfsub"):
        for path in ours[kind]:
            with datamodels.open(str(path)) as m:
                assert isinstance(m, datamodels.CubeModel) and m.data.ndim == 3, (kind, path)
    with datamodels.open(str(ours["psfstack"])) as m, datamodels.open(str(theirs["psfstack"])) as j:
        assert isinstance(m, datamodels.CubeModel) and m.data.shape == j.data.shape == (6, N, N)
    with datamodels.open(str(ours["psfalign"][0])) as m:
        assert m.meta.cal_step.align_psfs == "COMPLETE" and m.meta.exposure.psf_reference
        assert not np.any(m.dq)
    with datamodels.open(str(ours["psfsub"][0])) as m:
        assert m.meta.cal_step.klip == "COMPLETE" and np.all(np.isfinite(m.data))
    with datamodels.open(str(ours["i2d"])) as m:
        assert isinstance(m, datamodels.ImageModel)
        assert m.meta.cal_step.resample == "COMPLETE" and np.isfinite(m.data).mean() > 0.5


@pytest.fixture(scope="module")
def fixed(inputs, tmp_path_factory):
    """coron3 with the float64 alignment (``align_refs.precision: float64``)."""
    asn, mask = inputs
    return coron3.run(asn, {"psfmask": mask}, {"align_refs": {"precision": "float64"}},
                      tmp_path_factory.mktemp("coron3_float64"))


def _companion_flux(i2d, calints):
    """Aperture (r = 4 px) flux less the 6-9 px annulus median at the companion's true sky position."""
    from stdatamodels.jwst import datamodels

    with datamodels.open(str(calints)) as sci:
        ra, dec = sci.meta.wcs((N - 1) / 2 + COMPANION[0], (N - 1) / 2 + COMPANION[1])
    with datamodels.open(str(i2d)) as m:
        data = np.array(m.data, np.float64)
        x, y = m.meta.wcs.invert(ra, dec)
    yy, xx = np.mgrid[:data.shape[0], :data.shape[1]]
    r = np.hypot(xx - x, yy - y)
    background = np.median(data[(r > 6) & (r < 9) & np.isfinite(data)])
    far = np.hypot(xx - data.shape[1] / 2, yy - data.shape[0] / 2) > 5
    return float(np.sum(data[r <= 4] - background)), float(np.nanstd(data[far & (r > 6)]))


def test_pipeline_truth_float64(inputs, ours, fixed):
    """The float64 alignment recovers the PSF exposures' dithers (0.02 px, PSF drift and companion in the
    way), jwst's stays near 0; the i2d of both rolls keeps the companion's flux within 5 % and the
    star's residual is lower than with jwst's alignment."""
    truth = np.repeat(np.array(PSF_OFFSETS), 2, axis=0)
    for shifts_fixed, shifts_jwst in zip(fixed["shifts"], ours["shifts"]):
        print("float64", shifts_fixed[:, :2].round(3).tolist(), "jwst", shifts_jwst[:, :2].round(3).tolist())
        assert np.max(np.abs(shifts_fixed[:, :2] - truth)) < 0.02
        assert np.max(np.abs(shifts_jwst[:, :2])) < 0.05
    with fits.open(fixed["crfints"][len(PSF_ROOTS)]) as crf:  # the first science exposure's
        outliers = np.argwhere(crf["DQ"].data & dqflags.OUTLIER)
    # the cosmic ray, and at most a couple of 5-sigma noise pixels (|d - median of 3| with 13824 pixels)
    assert [1, 25, 26] in outliers.tolist() and len(outliers) <= 3
    calints = inputs[0].parent / f"{SCI_ROOTS[0]}_calints.fits"
    injected = COMPANION[2] * coron_psf().max()
    flux, rms = _companion_flux(fixed["i2d"], calints)
    flux_jwst, rms_jwst = _companion_flux(ours["i2d"], calints)
    print(f"i2d companion flux {flux:.1f} (jwst alignment {flux_jwst:.1f}) vs injected {injected:.1f}; "
          f"residual rms {rms:.2f} (jwst alignment {rms_jwst:.2f})")
    assert flux == pytest.approx(injected, rel=0.05)
    assert rms < 0.9 * rms_jwst


def test_float64_alignment_recovers_subpixel_shifts():
    """precision float64 finds the PSF offsets (0.01 px); jwst's float32 fit stays near 0 (its quirk)."""
    ref = coron_psf().astype(np.float32)
    truth = np.array([(0.37, -0.21), (-0.12, 0.44), (0.05, 0.3)])
    psf = np.stack([fourier_imshift(ref.astype(np.float64), s) * 2.5 for s in truth]).astype(np.float32)
    mask = np.ones(ref.shape, np.float32)
    _, _, fixed = align_refs.align_refs(ref, psf, None, mask, precision="float64")
    _, _, quirk = align_refs.align_refs(ref, psf, None, mask, precision="jwst")
    print("float64", fixed[:, :2].round(4).tolist(), "jwst", quirk[:, :2].round(4).tolist())
    assert np.max(np.abs(fixed[:, :2] - truth)) < 0.01
    assert np.allclose(fixed[:, 2], 2.5, rtol=1e-3)
    assert np.max(np.abs(quirk[:, :2])) < 0.05  # nowhere near the true offsets
    assert np.min(np.abs(quirk[:, :2] - truth).max(axis=1)) > 0.1


@pytest.mark.parametrize("forked", [True, False])
@pytest.mark.parametrize("precision", ["jwst", "float64"])
def test_threaded_alignment_is_the_serial_one(precision, forked, monkeypatch):
    """align_refs' planes fitted by several workers (forked helpers, or threads where the process may
    not fork): the same shifts and aligned planes, byte for byte, as one worker's (a plane with NaNs
    included), and the process's warning filters left as they were."""
    import warnings

    if forked and not align_refs._fork_safe():
        pytest.skip("this process runs numba's workers (an earlier test's parallel kernels): no fork")
    if not forked:
        monkeypatch.setattr(align_refs, "_fork_safe", lambda: False)

    rng = np.random.default_rng(23)
    ref = (coron_psf() + rng.normal(0, 0.5, coron_psf().shape)).astype(np.float32)
    shifts = [(0.37, -0.21), (-0.12, 0.44), (0.05, 0.3), (0.2, 0.1), (-0.3, -0.25)]
    psf = np.stack([fourier_imshift(ref.astype(np.float64), s) * 1.7 + rng.normal(0, 0.5, ref.shape)
                    for s in shifts]).astype(np.float32)
    psf[3, 5, 7] = np.nan
    err = np.abs(rng.normal(1.0, 0.1, psf.shape)).astype(np.float32)
    mask = np.ones(ref.shape, np.float32)
    mask[20:28, 20:28] = 0
    filters = list(warnings.filters)
    serial = align_refs.align_refs(ref, psf, err, mask, precision=precision, workers=1)
    threaded = align_refs.align_refs(ref, psf, err, mask, precision=precision, workers=3)
    assert warnings.filters == filters
    for a, b in zip(serial, threaded):
        assert a.tobytes() == b.tobytes()
        assert b.base is None  # the process's own arrays, not the helpers' shared memory
    assert np.isnan(threaded[0][3]).all() and np.isfinite(threaded[0][[0, 1, 2, 4]]).all()


def test_align_many_is_align_refs_of_each():
    """Several references aligned together (coron3's science exposures, one set of workers): each
    one's planes, shifts and errors byte for byte those of its own align_refs call."""
    rng = np.random.default_rng(8)
    base = coron_psf()
    refs = [(base + rng.normal(0, 0.5, base.shape)).astype(np.float32) for _ in range(2)]
    stacks = [np.stack([fourier_imshift(base, (0.1 * k, 0.2 - 0.1 * k)) * (1 + j) + rng.normal(0, 0.5, base.shape)
                        for k in range(3)]).astype(np.float32) for j in range(2)]
    err = np.abs(rng.normal(1.0, 0.1, stacks[0].shape)).astype(np.float32)
    mask = np.ones(base.shape, np.float32)
    together = align_refs.align_many([(r, s, err) for r, s in zip(refs, stacks)], mask, workers=2)
    for (r, s), many in zip(zip(refs, stacks), together):
        alone = align_refs.align_refs(r, s, err, mask, workers=1)
        for a, b in zip(alone, many):
            assert a.tobytes() == b.tobytes()


def test_forked_alignment_refits_a_failed_helpers_planes(monkeypatch):
    """A forked helper that dies: its planes are fitted by the job's process, the same numbers."""
    import os

    rng = np.random.default_rng(5)
    ref = (coron_psf() + rng.normal(0, 0.5, coron_psf().shape)).astype(np.float32)
    psf = np.stack([fourier_imshift(ref.astype(np.float64), (0.1 * k, -0.05 * k)) + rng.normal(0, 0.5, ref.shape)
                    for k in range(4)]).astype(np.float32)
    mask = np.ones(ref.shape, np.float32)
    if not align_refs._fork_safe():
        pytest.skip("this process runs numba's workers (an earlier test's parallel kernels): no fork")
    serial = align_refs.align_refs(ref, psf, None, mask, workers=1)
    parent = os.getpid()
    real = align_refs.fit_shift

    def dies_in_helper(*args, **kwargs):
        if os.getpid() != parent:
            os._exit(3)
        return real(*args, **kwargs)

    monkeypatch.setattr(align_refs, "fit_shift", dies_in_helper)
    forked = align_refs.align_refs(ref, psf, None, mask, workers=2)
    assert forked[1] is None
    for a, b in zip((serial[0], serial[2]), (forked[0], forked[2])):
        assert a.tobytes() == b.tobytes()


def test_job_threads_follow_snakemakes_threads(monkeypatch):
    """coron3's threads: the rule's (Snakemake's OMP_NUM_THREADS), else the CPUs the job may use."""
    import os

    from webbflow.stages.coron3 import job_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert job_threads() == 3
    for value in ("", "0", "two"):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert job_threads() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("shape", [(48, 48), (48, 47), (45, 46)])
def test_float64_fit_is_the_fourier_shift_fit(shape):
    """The float64 fit (real FFTs, analytic Jacobian) minimises the same model as jwst's forward-difference
    fit run in float64: its model is fourier_imshift's real part to round-off (Nyquist row, column and
    corner included, even and odd sizes) and the fitted (dx, dy, beta) agree within 1e-5 pixel."""
    rng = np.random.default_rng(11)
    ref = coron_psf(n=max(shape))[: shape[0], : shape[1]] + rng.normal(0, 0.01, shape)
    rfft = np.fft.rfft2(ref)
    for shift in [(0.37, -0.21), (-0.45, 0.5), (0.5, 0.5)]:
        ex, _ = align_refs._shift_phases(shape[1], shift[0], True)
        ey, _ = align_refs._shift_phases(shape[0], shift[1], False)
        phase = ey[:, None] * ex[None, :]
        if shape[0] % 2 == 0 and shape[1] % 2 == 0:
            phase[shape[0] // 2, -1] = np.cos(np.pi * (shift[0] + shift[1]))
        mine = np.fft.irfft2(rfft * phase, s=shape)
        np.testing.assert_allclose(mine, fourier_imshift(ref, shift), rtol=0, atol=1e-12 * np.abs(ref).max())
    mask = np.ones(shape)
    mask[shape[0] // 2 - 3: shape[0] // 2 + 3, shape[1] // 2 - 3: shape[1] // 2 + 3] = 0
    for truth in [(0.31, -0.17), (-0.08, 0.42)]:
        target = 1.7 * fourier_imshift(ref, truth) + rng.normal(0, 0.01, shape)
        slow = align_refs.fit_shift(np.fft.fftn(ref), target, mask)
        fast = align_refs.fit_shift_float64(rfft, target, mask)
        print("forward differences", slow.round(6), "analytic", fast.round(6))
        assert np.max(np.abs(fast - slow)) < 1e-5
        assert np.max(np.abs(fast[:2] - truth)) < 0.01


@pytest.mark.parametrize("shape", [(48, 48), (48, 47), (45, 46), (45, 45)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_model_is_jwsts_bit_for_bit(shape, dtype):
    """align_refs' model evaluation (half-plane cos/sin kernel, scipy.fft's in-place 1-D inverse
    transforms, one-pass residuals) gives jwst's numbers to the last bit: the shifted spectrum is
    ``scipy.ndimage.fourier_shift``'s, the image ``numpy.fft.ifftn``'s (even and odd sizes, the
    Nyquist row and column), the fitted (dx, dy, beta) those of the numpy/ndimage residuals, and a
    plane with NaNs shifts to the same bytes (NaN signs included)."""
    from scipy import optimize
    from scipy.ndimage import fourier_shift

    rng = np.random.default_rng(17)
    ref = (coron_psf(n=max(shape))[: shape[0], : shape[1]] + rng.normal(0, 0.5, shape)).astype(dtype)
    spectrum = np.fft.fftn(ref)
    for shift in [(1.5e-8, 0.0), (0.0, -1.5e-8), (3e-4, -7e-4), (0.37, -0.21), (-5.3, 2.6)]:
        theirs = fourier_shift(spectrum, shift[::-1])
        mine = align_refs._shift_spectrum(spectrum, *align_refs._angles(shape, shift), np.empty_like(spectrum))
        assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), shift
        assert align_refs._ifft2(mine).tobytes() == np.fft.ifftn(theirs).tobytes(), shift
        assert fourier_imshift(ref, shift).tobytes() == np.fft.ifftn(theirs).real.tobytes(), shift
    target = (1.3 * fourier_imshift(ref.astype(np.float64), (0.21, -0.34)) + rng.normal(0, 0.5, shape)).astype(dtype)
    mask = np.ones(shape, np.float32)
    mask[shape[0] // 2 - 3: shape[0] // 2 + 3, shape[1] // 2 - 3: shape[1] // 2 + 3] = 0

    def jwst_residuals(params):  # jwst 3.0's shift_subtract
        offset = np.fft.ifftn(fourier_shift(spectrum, params[:2][::-1])).real
        return ((target - params[2] * offset) * mask).ravel()

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, _ = optimize.leastsq(jwst_residuals, [0.0, 0.0, 1.0], xtol=1e-15, ftol=1e-15)
    assert align_refs.fit_shift(spectrum, target, mask).tobytes() == theirs.tobytes()
    nans = ref.copy()
    nans[rng.random(shape) < 0.02] = np.nan
    theirs = np.fft.ifftn(fourier_shift(np.fft.fftn(nans), (-1.7, 0.3))).real
    assert fourier_imshift(nans, (0.3, -1.7)).tobytes() == theirs.tobytes()


def test_klip_keeps_companion_flux():
    """RDI klip on a science image with a companion keeps its flux within 5 % (aperture r = 4 px)."""
    rng = np.random.default_rng(5)
    star = coron_psf()
    refs = np.stack([coron_psf(drift=0.05, seed=3) * s + rng.normal(0, 1.0, star.shape)
                     for s in (2.0, 2.5, 3.0, 3.5, 1.5, 2.2)])
    flux = 2000.0
    dx, dy = 9.0, -6.0
    sci = np.stack([star + companion_image(dx, dy, flux) + rng.normal(0, 1.0, star.shape) for _ in range(2)])
    sub, err = klip.klip(sci.astype(np.float32), klip.kl_basis(refs.astype(np.float32), truncate=50))
    y, x = np.mgrid[:N, :N] - (N - 1) / 2.0
    r = np.hypot(x - dx, y - dy)
    measured = [np.sum(s[r <= 4] - np.median(s[(r > 6) & (r < 9)])) for s in sub]
    print(f"klip companion flux {measured} vs {flux}")
    assert np.allclose(measured, flux, rtol=0.05)
    assert err.shape == sci.shape


@pytest.mark.parametrize("drop", ["psf", "science"])
def test_association_without_members_refused(inputs, tmp_path, drop):
    asn, mask = inputs
    table = json.loads(asn.read_text())
    table["products"][0]["members"] = [m for m in table["products"][0]["members"] if m["exptype"] != drop]
    bad = asn.parent / f"no_{drop}_asn.json"
    bad.write_text(json.dumps(table))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=f"no .* members \\(exptype '{drop}'\\)"):
        coron3.run(bad, {"psfmask": mask}, {}, out)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("problem", ["shape", "empty"])
def test_bad_psfmask_refused(inputs, tmp_path, problem):
    from stdatamodels.jwst import datamodels

    asn, _ = inputs
    weights = np.ones((N, N + 8), np.float32) if problem == "shape" else np.zeros((N, N), np.float32)
    path = tmp_path / "psfmask.fits"
    datamodels.PsfMaskModel(data=weights).save(str(path))
    out = tmp_path / "out"
    with pytest.raises(ReferenceFileError, match="PSFMASK"):
        coron3.run(asn, {"psfmask": path}, {}, out)
    assert not out.exists() or not any(out.iterdir())


def test_member_that_is_not_a_calints_cube_refused(inputs, tmp_path):
    from stdatamodels.jwst import datamodels

    asn, mask = inputs
    table = json.loads(asn.read_text())
    image = tmp_path / "jw01234001001_02101_00001_nrcalong_cal.fits"
    datamodels.ImageModel(data=np.zeros((N, N), np.float32)).save(str(image))
    members = table["products"][0]["members"]
    for m in members:
        m["expname"] = str(asn.parent / m["expname"])
    members[0]["expname"] = str(image)
    bad = tmp_path / "image_member_asn.json"
    bad.write_text(json.dumps(table))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="not a 3-D CubeModel calints"):
        coron3.run(bad, {"psfmask": mask}, {}, out)
    assert not out.exists()


BEYOND = {"sectors": True, "contrast": True, "companions": True, "star_flux": 1.0e5, "fwhm": 2.826,
          "numbasis": [2, 4, 6], "references": "adi+rdi"}
"""Beyond-jwst klip options (the companion is a Gaussian of sigma 1.2 px: FWHM 2.826 px)."""


def test_beyond_jwst_companion_and_contrast_products(inputs, tmp_path):
    """ADI+RDI KLIP in sectors through coron3.run: the companion (and nothing else) found within 0.1 px of its true pixel
    (first roll) and RA/Dec, its throughput-corrected contrast within 5 % of truth (S/N > 20), the
    contrast curve finite, deeper outwards and above the companion's noise; the klipsub cube opens as a
    CubeModel with one north-up plane per KL cut-off; jwst's products are still written."""
    from astropy.table import QTable
    from stdatamodels.jwst import datamodels

    asn, mask = inputs
    params = {"align_refs": {"precision": "float64"}, "resample": {"skip": True}, "klip": BEYOND}
    out = coron3.run(asn, {"psfmask": mask}, params, tmp_path)
    assert len(out["psfsub"]) == 2 and out["contrast_plot"].stat().st_size > 0
    truth_x, truth_y = (N - 1) / 2 + COMPANION[0], (N - 1) / 2 + COMPANION[1]
    truth_contrast = COMPANION[2] * coron_psf().max() / BEYOND["star_flux"]
    comp = QTable.read(out["companions"])
    best = comp[np.argmax(comp["snr"])]
    print(comp["x_det", "y_det", "snr", "throughput", "contrast"], truth_x, truth_y, truth_contrast)
    assert len(comp) == 1 and best["snr"] > 20  # no residual speckle passes the Student-t 5-sigma threshold
    assert np.hypot(best["x_det"].value - truth_x, best["y_det"].value - truth_y) < 0.1
    with datamodels.open(str(inputs[0].parent / f"{SCI_ROOTS[0]}_calints.fits")) as model:
        ra, dec = model.meta.wcs.pixel_to_world_values(truth_x, truth_y)
    assert np.hypot((best["ra"].value - ra) * np.cos(np.radians(dec)), best["dec"].value - dec) * 3600 < 0.1 * 0.063
    assert best["contrast"] == pytest.approx(truth_contrast, rel=0.05)
    assert best["separation"].value == pytest.approx(np.hypot(*COMPANION[:2]) * 0.063, abs=0.1 * 0.063)
    curve = QTable.read(out["contrast"])
    c6 = np.asarray(curve["contrast_kl6"])
    assert np.all(np.isfinite(c6)) and np.all((curve["throughput_kl6"] > 0.3) & (curve["throughput_kl6"] < 1.1))
    assert c6[-1] < c6[0] and truth_contrast > 5 * np.interp(best["separation"].value, curve["separation"].value, c6)
    with datamodels.open(str(out["klipsub"])) as cube:
        assert isinstance(cube, datamodels.CubeModel) and cube.data.shape == (3, N, N)


def test_beyond_jwst_contrast_needs_star_flux(inputs, tmp_path):
    asn, mask = inputs
    out = tmp_path / "out"
    with pytest.raises(InputError, match="star_flux"):
        coron3.run(asn, {"psfmask": mask}, {"klip": {"contrast": True}, "resample": {"skip": True}}, out)
    assert not out.exists() or not any(out.iterdir())
