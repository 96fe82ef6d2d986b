"""The fast stage-1 I/O paths give exactly what the straightforward ones gave.

References are read row-window by row-window (and the dark lazily, plane by plane), uncal
ramps group by group, and products written with astropy instead of stdatamodels; each test
compares the fast path with astropy's/stdatamodels' own decoding of the same file.
"""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits

from webbflow import dqflags
from webbflow.io import read_uncal, write_rateints
from webbflow.ramp import Ramp, Readout
from webbflow.refs import PlaneStack, load_reference
from webbflow.steps import dark_current


def _full_frame_cube(nplanes, ny=40, nx=48, seed=3):
    rng = np.random.default_rng(seed)
    return rng.normal(5.0, 2.0, (nplanes, ny, nx)).astype(np.float32)


def test_subarray_cut_reads_only_the_window_and_matches_astropy(tmp_path, make):
    coeffs = _full_frame_cube(4)
    dq = np.zeros(coeffs.shape[1:], np.uint32)
    dq[10, 12] = 2  # HOT in the file's bits
    dq[11, 13] = 0xFFFFFFFF & ~np.uint32(16)  # every defined bit, stored through BZERO = 2**31
    path = make.reference(tmp_path / "lin.fits", "linearity", {"COEFFS": coeffs, "DQ": dq})
    readout = Readout(nints=1, ngroups=3, substrt1=9, substrt2=7, subarray="SUB")
    lin = load_reference("linearity", path, readout, (16, 20))
    expected = fits.getdata(path, "COEFFS")[:, 6:22, 8:28]
    np.testing.assert_array_equal(lin["coeffs"], expected)
    assert lin["coeffs"].dtype == np.float32 and lin["coeffs"].dtype.isnative
    # DQ stored as int32 + BZERO: the sign-bit flip must give the same unsigned values astropy gives
    assert lin["lin_dq"][4, 4] == dqflags.HOT
    assert lin["lin_dq"][5, 5] == dqflags.DO_NOT_USE | dqflags.HOT | dqflags.DEAD | dqflags.REFERENCE_PIXEL


@pytest.mark.parametrize("nframes, groupgap, ngroups, expected_planes", [
    (1, 0, 3, 3),     # RAPID: one dark plane per group
    (2, 0, 3, 6),     # BRIGHT2: two frames averaged per group
    (4, 1, 2, 9),     # frames dropped between groups still count
    (1, 0, 30, 12),   # the ramp outruns the dark: all planes (to extrapolate)
])
def test_dark_reads_only_the_planes_the_ramp_reaches(tmp_path, make, nframes, groupgap, ngroups, expected_planes):
    frames = _full_frame_cube(12, ny=16, nx=16)
    path = make.reference(tmp_path / "dark.fits", "dark", {"SCI": frames, "DQ": np.zeros((16, 16), np.uint32)},
                          NFRAMES=1, GROUPGAP=0)
    readout = Readout(nints=1, ngroups=ngroups, nframes=nframes, groupgap=groupgap)
    dark = load_reference("dark", path, readout, (16, 16))["dark_frames"]
    assert isinstance(dark, PlaneStack)
    assert dark.shape == (expected_planes, 16, 16) and len(dark) == expected_planes
    np.testing.assert_array_equal(np.asarray(dark), frames[:expected_planes])
    np.testing.assert_array_equal(dark[2], frames[2])
    np.testing.assert_array_equal(dark[1:3], frames[1:3])
    np.testing.assert_array_equal(dark[-1], frames[expected_planes - 1])
    dark[0][:] = -1.0  # a read is a fresh array: the cached stack cannot be modified
    np.testing.assert_array_equal(dark[0], frames[0])


@pytest.mark.parametrize("nframes, groupgap, ngroups", [(1, 0, 4), (2, 0, 4), (2, 1, 3), (1, 0, 9)])
def test_dark_step_streaming_from_disk_is_bit_identical(tmp_path, make, nframes, groupgap, ngroups):
    frames = _full_frame_cube(8, ny=16, nx=16, seed=7)
    frames[1, 3, 4] = np.nan  # NaN dark values count as 0
    path = make.reference(tmp_path / "dark.fits", "dark", {"SCI": frames, "DQ": np.zeros((16, 16), np.uint32)},
                          NFRAMES=1, GROUPGAP=0)
    readout = Readout(nints=2, ngroups=ngroups, nframes=nframes, groupgap=groupgap)
    lazy = load_reference("dark", path, readout, (16, 16))["dark_frames"]
    rng = np.random.default_rng(1)
    data = rng.uniform(1000, 2000, (2, ngroups, 16, 16)).astype(np.float32)
    out = []
    for dark in (lazy, frames):  # the lazy stack and the whole cube in memory
        ramp = Ramp(data=data.copy(), pixeldq=np.zeros((16, 16), np.uint32),
                    groupdq=np.zeros(data.shape, np.uint8))
        assert dark_current.run(ramp, readout, dark, np.zeros((16, 16), np.uint32)) == "COMPLETE"
        out.append(ramp.data)
    np.testing.assert_array_equal(out[0], out[1])
    # and the numbers are the group averages of the frames, NaN as 0 (pixel (3, 4) of frame 1)
    clean = np.nan_to_num(frames)
    if ngroups <= 4:
        first = clean[:nframes].mean(axis=0, dtype=np.float32)
        np.testing.assert_array_equal(out[0][:, 0], data[:, 0] - first)


def test_uncal_ramps_decode_the_full_uint16_range(tmp_path, make):
    cube = np.array([0, 1, 32767, 32768, 32769, 65534, 65535, 1234], np.uint16).reshape(1, 2, 2, 2)
    path = make.uncal(tmp_path / "u_uncal.fits", cube)
    ramp, _, _ = read_uncal(path)
    assert ramp.data.dtype == np.float32
    np.testing.assert_array_equal(ramp.data, cube.astype(np.float32))
    np.testing.assert_array_equal(ramp.data, fits.getdata(path, "SCI").astype(np.float32))


def test_product_is_what_stdatamodels_itself_would_write(uncal_file, tmp_path):
    """Our astropy-written rateints opens as a CubeModel whose metadata survives a save by
    stdatamodels' own writer unchanged."""
    from stdatamodels.jwst import datamodels

    _, _, headers = read_uncal(uncal_file)
    rng = np.random.default_rng(0)
    shape = (2, 16, 16)
    arrays = SimpleNamespace(data=rng.normal(size=shape).astype(np.float32), dq=np.full(shape, 2**31 + 5, np.uint32),
                             err=np.ones(shape, np.float32), var_poisson=np.ones(shape, np.float32),
                             var_rnoise=np.ones(shape, np.float32))
    ours = write_rateints(tmp_path / "a_rateints.fits", arrays, headers, cal_steps={"jump": "COMPLETE"},
                          ref_files={"gain": "/x/g.fits"}, provenance={"crds_context": "jwst_1413.pmap",
                                                                       "crds_version": "14.0.3"})
    with fits.open(ours) as hdul:  # an ASDF extension (jwst's steps need it) with an empty tree
        assert hdul["ASDF"].data["ASDF_METADATA"][0].tobytes().startswith(b"#ASDF 1.0.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with datamodels.open(ours) as model:
            assert type(model).__name__ == "CubeModel"
            assert model.meta.cal_step.jump == "COMPLETE" and model.meta.ref_file.gain.name == "g.fits"
            assert model.meta.ref_file.crds.context_used == "jwst_1413.pmap"
            assert model.meta.ref_file.crds.sw_version == "14.0.3"
            np.testing.assert_array_equal(model.dq, arrays.dq)  # uint32 above 2**31 survives
            np.testing.assert_array_equal(model.data, arrays.data)
            meta = {k: v for k, v in model.to_flat_dict().items() if k.startswith("meta.")}
            model.save(tmp_path / "b_rateints.fits")
        with datamodels.open(tmp_path / "b_rateints.fits") as again:
            resaved = {k: v for k, v in again.to_flat_dict().items() if k.startswith("meta.")}
    differing = {k for k in set(meta) | set(resaved) if meta.get(k) != resaved.get(k)}
    assert differing <= {"meta.date", "meta.filename"}, differing


def test_numba_threads_follow_the_job_threads(monkeypatch):
    import numba

    from webbflow.stages.detector1 import _limit_threads

    before = numba.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        _limit_threads()
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_truncated_dark_is_refused_when_loaded_not_mid_run(tmp_path, make):
    from webbflow.io.errors import ReferenceFileError

    frames = _full_frame_cube(6, ny=16, nx=16)
    path = make.reference(tmp_path / "dark.fits", "dark", {"SCI": frames, "DQ": np.zeros((16, 16), np.uint32)})
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])  # the SCI cube is cut short
    with pytest.raises(ReferenceFileError, match="truncated|cannot be read") as err:
        load_reference("dark", path, Readout(nints=1, ngroups=2), (16, 16))
    assert str(path) in str(err.value)
