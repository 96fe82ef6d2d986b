"""image3's memory-saving paths give the numbers of the straightforward ones.

The pixel map computed in row blocks against drizzle's ``calc_pixmap`` (which evaluates the
whole grid at once), the interpolated map of large grids against the exact one, the kept map
against a fresh one and its release, the outlier median in row blocks against ``np.nanmedian``,
and the variances accumulated one at a time against jwst's formula evaluated directly.
"""

import dataclasses

import numpy as np
import pytest
from drizzle.resample import Drizzle
from drizzle.utils import calc_pixmap

from webbflow import dqflags
from webbflow.steps import outlier_detection, resample

from test_image3_synth import DEC0, RA0, SW_SCALE, _cd


def _input(shape, crpix, pa, seed):
    rng = np.random.default_rng(seed)
    wcs = resample.make_tan_wcs((RA0, DEC0), crpix, _cd(SW_SCALE, pa), shape=shape)
    data = rng.normal(1.0, 0.1, shape).astype(np.float32)
    var = rng.uniform(0.5, 2.0, (3,) + shape).astype(np.float32) * 1e-3
    var[0, 3, 4] = np.nan  # a variance drizzle cannot use
    dq = np.zeros(shape, np.uint32)
    dq[5, 6] = 1  # DO_NOT_USE
    return resample.ImageInput(data=data, err=np.sqrt(var.sum(0)), dq=dq, wcs=wcs, var_rnoise=var[0],
                               var_poisson=var[1], var_flat=var[2], exptime=100.0, name=f"im{seed}",
                               group=f"g{seed}")


@pytest.fixture(scope="module")
def grid():
    shape = (70, 60)
    images = [_input(shape, (29.5, 34.5), 0.0, 1), _input(shape, (31.7, 33.2), 7.0, 2)]
    out_wcs, out_shape, scale = resample.make_output_wcs([im.wcs for im in images], [shape] * 2)
    return images, out_wcs, out_shape, scale


@pytest.mark.parametrize("rows", [1, 16, 256])
def test_blocked_pixmap_is_calc_pixmap(grid, rows):
    images, out_wcs, _, _ = grid
    im = images[1]
    box = im.wcs.bounding_box
    got = resample.pixmap(im.wcs, out_wcs, im.data.shape, rows=rows)
    want = calc_pixmap(im.wcs, out_wcs, shape=im.data.shape, disable_bbox="both")
    assert got.shape == want.shape == im.data.shape + (2,)
    assert np.array_equal(got, want)  # bit for bit
    assert im.wcs.bounding_box == box  # restored


def test_interpolated_pixmap_against_exact():
    """On a grid of full-frame kind (sides >= PIXMAP_MIN_SIDE) the spline through the coarse map
    equals the exact map to far below drizzle's needs; a tolerance it cannot meet, or a small grid,
    gives the exact map bit for bit."""
    shape = (600, 530)
    src = resample.make_tan_wcs((RA0, DEC0), (264.5, 299.5), _cd(SW_SCALE, 23.0), shape=shape)
    dst = resample.make_tan_wcs((RA0 + 2e-3, DEC0 - 1e-3), (400.0, 380.0), _cd(SW_SCALE * 1.3, -4.0),
                                shape=(800, 800))
    exact = resample.pixmap(src, dst, shape)
    got = resample.interpolated_pixmap(src, dst, shape, step=64)
    assert got.shape == exact.shape
    assert np.abs(got - exact).max() < 1e-6
    assert not np.array_equal(got, exact)  # it did interpolate
    assert np.array_equal(resample.interpolated_pixmap(src, dst, shape, tol=0.0), exact)
    assert np.array_equal(resample.interpolated_pixmap(src, dst, (300, 530)), resample.pixmap(src, dst, (300, 530)))


def test_kept_pixmap_is_reused_then_released(grid):
    images, out_wcs, out_shape, scale = grid
    im = _input((70, 60), (29.5, 34.5), 0.0, 1)
    first = resample.image_pixmap(im, out_wcs)
    assert resample.image_pixmap(im, out_wcs) is first
    assert not first.flags.writeable
    other = resample.make_tan_wcs((RA0, DEC0), (40.0, 40.0), _cd(SW_SCALE), shape=out_shape)
    assert not np.array_equal(resample.image_pixmap(im, other), first)  # another grid: a new map
    resample.drizzle_images([im], out_wcs, out_shape, scale, with_variance=False, release_pixmaps=False)
    assert len(im.pixmaps) == 1
    resample.drizzle_images([im], out_wcs, out_shape, scale)
    assert im.pixmaps == {}


def test_variances_match_jwst_formula(grid):
    images, out_wcs, out_shape, scale = grid
    result = resample.drizzle_images(images, out_wcs, out_shape, scale)
    wsum = {n: np.zeros(out_shape) for n in resample.VARIANCES}
    wtot = {n: np.zeros(out_shape) for n in resample.VARIANCES}
    for im in images:
        pmap = calc_pixmap(im.wcs, out_wcs, shape=im.data.shape, disable_bbox="both")
        weight = resample.build_weight(im)
        drizzled = {}
        for n in resample.VARIANCES:
            one = Drizzle(fillval=np.nan, out_shape=out_shape, disable_ctx=True)
            one.add_image(np.sqrt(np.clip(getattr(im, n), 0, None)), exptime=im.exptime, pixmap=pmap,
                          weight_map=weight, in_units="cps")
            drizzled[n] = one.out_img.astype(np.float64) ** 2
        w = np.zeros(out_shape)
        ok = np.isfinite(drizzled["var_rnoise"]) & (drizzled["var_rnoise"] > 0)
        w[ok] = 1.0 / drizzled["var_rnoise"][ok]
        for n, var in drizzled.items():
            ok = np.isfinite(var) & (var >= 0) & (w > 0)
            wsum[n][ok] += var[ok] * w[ok] ** 2
            wtot[n][ok] += w[ok]
    for n in resample.VARIANCES:
        with np.errstate(divide="ignore", invalid="ignore"):
            want = (wsum[n] / wtot[n] ** 2).astype(np.float32)
        want[wtot[n] == 0] = np.nan
        assert np.isfinite(want).sum() > 0.5 * want.size
        assert np.array_equal(result.variances[n], want, equal_nan=True), n


def test_blocked_median_is_nanmedian(grid):
    images, out_wcs, out_shape, _ = grid
    images = images + [_input((70, 60), (30.2, 33.9), 3.0, 3)]
    stack = np.full((3,) + tuple(out_shape), np.nan, np.float32)
    for k, im in enumerate(images):
        single = resample.drizzle_images([im], out_wcs, out_shape, 0.0, with_variance=False)
        data = single.data
        data[single.wht < outlier_detection.compute_weight_threshold(single.wht, 0.7)] = np.nan
        stack[k] = data
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmedian(stack, axis=0)
    got = outlier_detection.median_image(images, out_wcs, out_shape)
    assert np.isfinite(got).sum() > 0.5 * got.size
    assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("pixfrac", [1.0, 0.7])
def test_one_pass_planes_are_drizzles_bit_for_bit(grid, pixfrac):
    """The variances' one-pass drizzle against one ``Drizzle.add_image`` per plane: where drizzle's
    (nmiss, nskip) say its scanner took every input pixel (its no-hit count less one per row), the
    same bits; where not (the second input reaches past the grid's edge), they differ."""
    from webbflow.steps._drizzle_square import drizzle_square_planes

    images, out_wcs, out_shape, _ = grid
    full_scans = 0
    for im in images:
        pmap = resample.image_pixmap(im, out_wcs)
        weight = resample.build_weight(im)
        planes = [np.sqrt(np.clip(getattr(im, n), 0, None)) for n in resample.VARIANCES]
        got, nomiss = drizzle_square_planes(planes, weight, pmap, out_shape, pixfrac)
        for plane, mine in zip(planes, got):
            one = Drizzle(kernel="square", fillval=np.nan, out_shape=out_shape, disable_ctx=True)
            nmiss, nskip = one.add_image(plane, exptime=im.exptime, pixmap=pmap, weight_map=weight,
                                         pixfrac=pixfrac, in_units="cps")
            assert np.isfinite(one.out_img).sum() > 0.3 * one.out_img.size
            full = (nmiss, nskip) == (nomiss - im.data.shape[0], 0)
            assert np.array_equal(one.out_img.view(np.uint32), mine.view(np.uint32)) == full
            full_scans += full
    assert full_scans == len(planes)  # the first input, whole on the grid


@pytest.mark.parametrize("cut", [(0, 0), (6, 6), (3, 11), (25, 0), (0, 40)])
def test_one_pass_takes_drizzles_scan(grid, cut):
    """An input hanging off the output grid (the grid cut by ``cut`` pixels): drizzle's scanner skips
    pixels near the edges, the one pass skips the same ones (its counts are drizzle's nmiss and nskip)
    and every plane is its own ``add_image``'s, bit for bit; a forged count is refused."""
    from webbflow.steps._drizzle_scan import scan_rows

    images, out_wcs, out_shape, _ = grid
    small = (out_shape[0] - cut[0], out_shape[1] - cut[1])
    clipped = 0
    for im in images:
        pmap = resample.image_pixmap(im, out_wcs)
        weight = resample.build_weight(im)
        driz = Drizzle(kernel="square", fillval=np.nan, out_shape=small)
        scanned = driz.add_image(im.data, exptime=im.exptime, pixmap=pmap, weight_map=weight, in_units="cps")
        rows, nmiss, nskip = scan_rows(pmap, small)
        assert rows is not None and nskip == scanned[1] and nmiss <= scanned[0]
        clipped += int((rows[:, 1] - rows[:, 0] + 1 < im.data.shape[1]).sum())
        planes = resample._variances_one_pass(im, pmap, weight, small, "square", 1.0, scanned)
        assert planes is not None and sorted(planes) == sorted(resample.VARIANCES)
        for n, plane in planes.items():
            one = Drizzle(kernel="square", fillval=np.nan, out_shape=small, disable_ctx=True)
            one.add_image(np.sqrt(np.clip(getattr(im, n), 0, None)), exptime=im.exptime, pixmap=pmap,
                          weight_map=weight, in_units="cps")
            assert np.isfinite(one.out_img).sum() > 0.2 * one.out_img.size
            assert np.array_equal(one.out_img.view(np.uint32), plane.view(np.uint32)), n
        # a count that is not drizzle's is caught
        assert resample._variances_one_pass(im, pmap, weight, small, "square", 1.0, (scanned[0] + 1, 0)) is None
    if cut != (0, 0):
        assert clipped > 0  # the scanner did cut rows short


def test_scan_rows_unmodelled_cases():
    """A pixel map with NaN (drizzle shrinks the input's box) or one entirely off the grid is left to
    drizzle."""
    from webbflow.steps._drizzle_scan import scan_rows

    y, x = np.indices((20, 30), dtype=np.float64)
    pmap = np.dstack([x + 2.0, y + 3.0])
    assert scan_rows(pmap, (40, 40))[0] is not None
    nan = pmap.copy()
    nan[5, 7] = np.nan
    assert scan_rows(nan, (40, 40))[0] is None
    assert scan_rows(pmap + 1000.0, (40, 40))[0] is None


@pytest.mark.parametrize("good_bits", [None, ~np.uint32(dqflags.DO_NOT_USE)])
def test_compiled_ivm_weight_is_numpys(good_bits):
    """build_weight's compiled ivm map against its numpy operations: zero, negative, NaN and infinite
    variances, bad DQ bits and NaN data; the same float32 bits (signed zeros included)."""
    from webbflow.steps._drizzle_square import ivm_input_weight

    rng = np.random.default_rng(5)
    shape = (40, 50)
    var = rng.uniform(0.5, 3.0, shape).astype(np.float32)
    var.flat[::7] = 0.0
    var.flat[::11] = -1.5
    var.flat[::13] = np.nan
    var.flat[::17] = np.inf
    var.flat[::19] = 1e-45  # a subnormal: 1/var overflows float32
    dq = rng.choice(np.array([0, 1, 4, 512, 2**31], np.uint32), shape)
    data = rng.normal(size=shape).astype(np.float32)
    data.flat[::9] = np.nan
    good = dqflags.good_pixel_mask(dq) if good_bits is None else dqflags.good_pixel_mask(dq, good_bits)
    good &= np.isfinite(data)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        weight = 1.0 / var.astype(np.float64)
        weight[~np.isfinite(weight)] = 0.0
        want = (weight * good).astype(np.float32)
    bad = ~np.uint32(~np.uint32(dqflags.DO_NOT_USE | dqflags.NON_SCIENCE) if good_bits is None else good_bits)
    got = ivm_input_weight(var, dq, bad, data)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert (want > 0).sum() > 0.3 * want.size and (want < 0).sum() > 0
    im = resample.ImageInput(data=data, err=np.ones(shape, np.float32), dq=dq, wcs=None, var_rnoise=var)
    with np.errstate(over="ignore"):
        assert np.array_equal(resample.build_weight(im, "ivm", good_bits).view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("cut", [(0, 0), (6, 6), (0, 40)])
@pytest.mark.parametrize("weight_type", ["ivm", "exptime"])
def test_fused_resample_is_drizzles(grid, cut, weight_type):
    """The final resample's one pass per image (data, context and variances together, after drizzle
    counted the same pixel maps once) against the same call through ``Drizzle``: every array the same
    bits, inputs hanging off a cut grid included; without drizzle's counts, or with forged ones, the
    C path is taken."""
    _, out_wcs, _, scale = grid
    out_shape = (grid[2][0] - cut[0], grid[2][1] - cut[1])
    images = [dataclasses.replace(im, sky=0.25, pixmaps={}, scans={}) for im in grid[0]]  # the fixture's untouched
    assert resample._fused_drizzle(images, out_wcs, out_shape, 1.0, weight_type, None, True) is None  # no counts
    kw = dict(weight_type=weight_type, release_pixmaps=False)
    want = resample.drizzle_images(images, out_wcs, out_shape, scale, **kw)  # through Drizzle: counts kept
    assert all(im.scans for im in images)
    fused = resample._fused_drizzle(images, out_wcs, out_shape, 1.0, weight_type, None, True)
    assert fused is not None
    got = resample.drizzle_images(images, out_wcs, out_shape, scale, **kw)
    assert np.isfinite(want.data).sum() > 0.3 * want.data.size and want.con.max() == 3
    for name in ("data", "wht", "con", "err"):
        a, b = getattr(want, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32)), name
    for name in resample.VARIANCES:
        assert np.array_equal(want.variances[name].view(np.uint32), got.variances[name].view(np.uint32)), name
    key = (tuple(out_shape), "square", 1.0)
    pmap, (nmiss, nskip) = images[1].scans[key]
    images[1].scans[key] = (pmap, (nmiss + 1, nskip))  # a count that is not drizzle's
    assert resample._fused_drizzle(images, out_wcs, out_shape, 1.0, weight_type, None, True) is None
