"""drizzle's ``square`` kernel for several data planes that share one weight map, in one pass.

The final resample drizzles each input's three variance arrays (as square roots, jwst's way) with
the same pixel map and weight map as three separate ``Drizzle.add_image`` calls: the C kernel
computes every input pixel's output quadrilateral and its overlap with each output pixel (``boxer``,
most of its time) three times over.  :func:`drizzle_square_planes` computes them once and updates
every plane, with the C code's arithmetic in the C code's order (drizzle 3.0's
``do_kernel_square``, ``interpolate_four_points``, ``interpolate_point``, ``boxer``/``sgarea`` and
``update_data``: float32 where it is float, float64 where it is double), so each plane is the one
its own ``add_image`` call would have made, bit for bit.

drizzle's polygon scanner skips input pixels near the output grid's edges when the input reaches
past them; the pass takes the rows' column ranges of :func:`webbflow.steps._drizzle_scan.scan_rows`
(the scanner's computation), and the caller compares the counts of skipped pixels and of pixels
that reach no output pixel with drizzle's ``nmiss`` and ``nskip`` for the same pixel map
(:func:`webbflow.steps.resample._variances_one_pass`), drizzling with ``Drizzle`` where they disagree.
"""

import math

import numpy as np

from webbflow.steps._jit import njit

# numba is imported with this module's first kernel call (none with webbflow.aot's compiled twins, as for
# a coron3 job); resample imports the module only when it propagates variances.

__all__ = ["accumulate_variance", "drizzle_square_planes", "ivm_input_weight", "ivm_weight"]


def drizzle_square_planes(planes, weight, pmap, out_shape, pixfrac=1.0, rows=None, accumulate=None):
    """Drizzle ``planes`` (each as ``Drizzle(kernel="square", fillval=nan, disable_ctx=True)``'s
    ``add_image(plane, exptime, pixmap=pmap, weight_map=weight, pixfrac=pixfrac, in_units="cps")``
    into a fresh output would) in one pass.

    Parameters
    ----------
    planes : sequence of 2-D arrays
        Input planes (converted to float32), each of ``weight``'s shape.
    weight : 2-D array
        Weight map (float32).
    pmap : (ny, nx, 2) array
        Pixel map (float64).
    out_shape : (int, int)
    pixfrac : float
    rows : (ny, 2) int array, optional
        First and last column to take in each input row (drizzle's scan,
        :func:`webbflow.steps._drizzle_scan.scan_rows`); default every pixel.
    accumulate : tuple, optional
        ``(data, out_img, out_wht, out_ctx, bit)``: also drizzle ``data`` (float32) in the same pass
        into a running ``Drizzle``'s float32 ``out_img`` and ``out_wht`` and its int32 context plane
        ``out_ctx`` (``bit``: the image's context bit, an int32), as its ``add_image`` would, updated in
        place (without drizzle's fill of the pixels of weight 0, which is the caller's).  ``data``
        None: ``planes`` is a float32 (1 + n, ny, nx) stack whose first plane is the data, used as it
        is (no copy).

    Returns
    -------
    out : ndarray
        (number of planes, *out_shape) float32: each plane's ``out_img`` (NaN where nothing fell;
        the data's not among them).
    nomiss : int
        Input pixels taken that reached no output pixel (non-finite corners, or no overlap).
    """
    if accumulate is not None and accumulate[0] is None:  # the caller's stack, its data first
        stack = np.ascontiguousarray(planes, np.float32)
    else:
        first = [] if accumulate is None else [accumulate[0]]
        stack = np.ascontiguousarray(np.stack([np.asarray(p, np.float32) for p in first + list(planes)]))
    out = np.full((len(stack) - (accumulate is not None),) + tuple(out_shape), np.nan, np.float32)
    counts = np.zeros(tuple(out_shape), np.float32)
    if rows is None:
        rows = np.zeros((stack.shape[1], 2), np.int64)
        rows[:, 1] = stack.shape[2] - 1
    if accumulate is None:  # nothing accumulated: placeholders the kernel does not touch
        acc, acc_wht, ctx, bit = np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), np.zeros((1, 1), np.int32), 0
    else:
        acc, acc_wht, ctx, bit = accumulate[1:]
    nomiss = _square_planes(stack, np.ascontiguousarray(weight, np.float32),
                            np.ascontiguousarray(pmap, np.float64), out, counts, float(pixfrac),
                            np.ascontiguousarray(rows, np.int64), acc, acc_wht, ctx, np.int32(bit))
    out[:, counts == 0] = np.nan  # drizzle's put_fill
    return out, nomiss


@njit(cache=True, error_model="numpy")
def ivm_input_weight(var_rnoise, dq, bad, data):
    """:func:`webbflow.steps.resample.build_weight`'s ``ivm`` map in one pass: ``1 / var_rnoise`` in
    float64 (0 where not finite), times 1 where no ``bad`` DQ bit is set and ``data`` is finite, else
    0, as float32 (the numbers of its numpy operations, the sign of a zero included).

    Parameters
    ----------
    var_rnoise : 2-D float32 array
    dq : 2-D uint32 array
    bad : uint32
        The DQ bits that exclude a pixel.
    data : 2-D float array

    Returns
    -------
    ndarray
        float32, the same shape.
    """
    ny, nx = var_rnoise.shape
    out = np.empty((ny, nx), np.float32)
    for j in range(ny):
        for i in range(nx):
            w = 1.0 / np.float64(var_rnoise[j, i])
            if not np.isfinite(w):
                w = 0.0
            good = (dq[j, i] & bad) == 0 and np.isfinite(data[j, i])
            out[j, i] = np.float32(w * (1.0 if good else 0.0))
    return out


@njit(cache=True)
def ivm_weight(rnoise_root):
    """jwst's weight of an image on the output grid, ``1 / var_rnoise`` (0 where that is not finite and
    positive), from the drizzled square root of VAR_RNOISE (float32): the numbers of
    ``w[ok] = 1.0 / rnoise[ok]`` on ``rnoise = rnoise_root.astype(float64) ** 2``.

    Parameters
    ----------
    rnoise_root : 2-D float32 array

    Returns
    -------
    ndarray
        float64, the same shape.
    """
    root = rnoise_root.ravel()
    w = np.zeros(root.size, np.float64)
    for k in range(root.size):
        r = np.float64(root[k]) * np.float64(root[k])
        if np.isfinite(r) and r > 0.0:
            w[k] = 1.0 / r
    return w.reshape(rnoise_root.shape)


@njit(cache=True)
def accumulate_variance(root, w, wsum, wtot):
    """Add one drizzled variance to jwst's sums in place: with ``var = root.astype(float64) ** 2``,
    ``wsum += var * w**2`` and ``wtot += w`` where ``var`` is finite and >= 0 and ``w > 0`` (the
    numbers of the same numpy operations, float64 throughout).

    Parameters
    ----------
    root : 2-D float32 array
        The variance's drizzled square root.
    w : 2-D float64 array
        The image's weight on the output grid.
    wsum, wtot : 2-D float64 arrays
        Updated in place.
    """
    ny, nx = root.shape
    for j in range(ny):
        for i in range(nx):
            v = np.float64(root[j, i])
            v = v * v
            wp = w[j, i]
            if np.isfinite(v) and v >= 0.0 and wp > 0.0:
                wsum[j, i] += v * (wp * wp)
                wtot[j, i] += wp


@njit(cache=True)
def _square_planes(data, weight, pmap, out, counts, pixfrac, rows, acc, acc_wht, ctx, bit):
    # planes data[nacc:] into fresh outputs (out, counts); data[0] too, when nacc is 1, into a
    # running drizzle's acc, acc_wht and context plane ctx
    nplanes, ny, nx = data.shape
    nacc = nplanes - out.shape[0]
    ony, onx = counts.shape
    dh = 0.5 * pixfrac
    fc, fe, fm = dh * dh, (1 - dh) * dh, (1 - dh) * (1 - dh)  # corner, edge and centre factors
    d = np.empty(nplanes, np.float32)
    one = np.float32(1.0)
    nomiss = 0  # input pixels that reach no output pixel (drizzle's nmiss without its scanner's terms)
    for j in range(ny):
        for i in range(rows[j, 0], rows[j, 1] + 1):
            if i > 0 and i < nx - 2 and j > 0 and j < ny - 2:
                # interpolate_four_points: the 3 x 3 neighbourhood pre-multiplied by its factors
                x0, x1, x2, x3 = _four_points(pmap, j, i, 0, fc, fe, fm)
                y0, y1, y2, y3 = _four_points(pmap, j, i, 1, fc, fe, fm)
            else:
                x0, y0 = _interpolate_point(pmap, i - dh, j + dh)
                x1, y1 = _interpolate_point(pmap, i + dh, j + dh)
                x2, y2 = _interpolate_point(pmap, i + dh, j - dh)
                x3, y3 = _interpolate_point(pmap, i - dh, j - dh)
            if (math.isnan(x0) or math.isnan(y0) or math.isnan(x1) or math.isnan(y1) or math.isnan(x2)
                    or math.isnan(y2) or math.isnan(x3) or math.isnan(y3)):
                nomiss += 1
                continue
            jaco = 0.5 * ((x1 - x3) * (y0 - y2) - (x0 - x2) * (y1 - y3))
            for k in range(nplanes):
                d[k] = data[k, j, i] * one  # iscale 1 (in_units "cps")
            w = np.float64(weight[j, i] * one) / jaco  # weight_scale 1
            min_jj = max(_c_round(min(min(y0, y1), min(y2, y3))), 0)
            max_jj = min(_c_round(max(max(y0, y1), max(y2, y3))), ony - 1)
            min_ii = max(_c_round(min(min(x0, x1), min(x2, x3))), 0)
            max_ii = min(_c_round(max(max(x0, x1), max(x2, x3))), onx - 1)
            nhit = 0
            for jj in range(min_jj, max_jj + 1):
                js = jj - 0.5
                for ii in range(min_ii, max_ii + 1):
                    # boxer: the quadrilateral relative to the unit square of output pixel (ii, jj)
                    is_ = ii - 0.5
                    px0, py0 = x0 - is_, y0 - js
                    px1, py1 = x1 - is_, y1 - js
                    px2, py2 = x2 - is_, y2 - js
                    px3, py3 = x3 - is_, y3 - js
                    dover = 0.0
                    dover += _sgarea(px0, py0, px1, py1)
                    dover += _sgarea(px1, py1, px2, py2)
                    dover += _sgarea(px2, py2, px3, py3)
                    dover += _sgarea(px3, py3, px0, py0)
                    if dover != 0.0:
                        nhit += 1
                        dow = np.float32(dover * w)
                        if dow == np.float32(0.0):
                            continue
                        if nacc:
                            if dow > np.float32(0.0):
                                ctx[jj, ii] |= bit
                            va = acc_wht[jj, ii]
                            va_plus_dow = va + dow
                            if va == np.float32(0.0):
                                acc[jj, ii] = d[0]
                            else:
                                num = acc[jj, ii] * va + dow * d[0]
                                acc[jj, ii] = np.float32(np.float64(num) / np.float64(va_plus_dow))
                            acc_wht[jj, ii] = va_plus_dow
                        vc = counts[jj, ii]
                        vc_plus_dow = vc + dow  # float32 sum, as in C
                        for k in range(nacc, nplanes):
                            if vc == np.float32(0.0):
                                out[k - nacc, jj, ii] = d[k]
                            else:
                                num = out[k - nacc, jj, ii] * vc + dow * d[k]  # float32
                                out[k - nacc, jj, ii] = np.float32(np.float64(num) / np.float64(vc_plus_dow))
                        counts[jj, ii] = vc_plus_dow
            if nhit == 0:
                nomiss += 1
    return nomiss


@njit(cache=True)
def _four_points(pmap, j, i, c, fc, fe, fm):
    # drizzle's interpolate_four_points for coordinate c of the pixel map: corners (-h, +h), (+h, +h),
    # (+h, -h), (-h, -h) of pixel (i, j), each the sum of four pre-multiplied neighbours in C's order
    f00 = pmap[j - 1, i - 1, c] * fc
    f10 = pmap[j - 1, i, c] * fe
    f20 = pmap[j - 1, i + 1, c] * fc
    f01 = pmap[j, i - 1, c] * fe
    f11 = pmap[j, i, c] * fm
    f21 = pmap[j, i + 1, c] * fe
    f02 = pmap[j + 1, i - 1, c] * fc
    f12 = pmap[j + 1, i, c] * fe
    f22 = pmap[j + 1, i + 1, c] * fc
    return (f01 + f11 + f02 + f12, f11 + f21 + f12 + f22, f10 + f20 + f11 + f21, f00 + f10 + f01 + f11)


@njit(cache=True)
def _c_round(x):
    # C's round(): halves away from zero
    r = math.trunc(x)
    if abs(x - r) >= 0.5:
        r += 1.0 if x > 0 else -1.0
    return int(r)


@njit(cache=True)
def _interpolate_point(pmap, xin, yin):
    # drizzle's interpolate_point: bilinear from the four nearest pixel-map points, extrapolated
    # from the last cell beyond the map's edges
    ny, nx = pmap.shape[0], pmap.shape[1]
    i0 = int(xin)  # C's (int): truncation toward zero
    j0 = int(yin)
    if i0 < 0:
        i0 = 0
    elif i0 > nx - 2:
        i0 = nx - 2
    if j0 < 0:
        j0 = 0
    elif j0 > ny - 2:
        j0 = ny - 2
    x = xin - i0
    y = yin - j0
    x1 = 1.0 - x
    y1 = 1.0 - y
    xo = pmap[j0, i0, 0] * x1 * y1 + pmap[j0, i0 + 1, 0] * x * y1 + pmap[j0 + 1, i0, 0] * x1 * y \
        + pmap[j0 + 1, i0 + 1, 0] * x * y
    yo = pmap[j0, i0, 1] * x1 * y1 + pmap[j0, i0 + 1, 1] * x * y1 + pmap[j0 + 1, i0, 1] * x1 * y \
        + pmap[j0 + 1, i0 + 1, 1] * x * y
    return xo, yo


@njit(cache=True)
def _sgarea(x1, y1, x2, y2):
    # drizzle's sgarea: signed area under segment (x1, y1)-(x2, y2) within the unit square
    dx = x2 - x1
    dy = y2 - y1
    if dx == 0:
        return 0.0
    if dx < 0:
        sgn_dx = -1.0
        xlo = x2
        xhi = x1
    else:
        sgn_dx = 1.0
        xlo = x1
        xhi = x2
    if xlo >= 1.0 or xhi <= 0.0:
        return 0.0
    xlo = xlo if xlo > 0.0 else 0.0  # C's MAX / MIN macros
    xhi = xhi if xhi < 1.0 else 1.0
    slope = dy / dx
    ylo = y1 + slope * (xlo - x1)
    yhi = y1 + slope * (xhi - x1)
    if ylo <= 0.0 and yhi <= 0.0:
        return 0.0
    if ylo >= 1.0 and yhi >= 1.0:
        return sgn_dx * (xhi - xlo)
    det = x1 * y2 - y1 * x2
    if ylo < 0.0:
        ylo = 0.0
        xlo = det / dy
    if yhi < 0.0:
        yhi = 0.0
        xhi = det / dy
    if ylo <= 1.0:
        if yhi <= 1.0:
            return sgn_dx * 0.5 * (xhi - xlo) * (yhi + ylo)
        xtop = (dx + det) / dy
        return sgn_dx * (0.5 * (xtop - xlo) * (1.0 + ylo) + xhi - xtop)
    xtop = (dx + det) / dy
    return sgn_dx * (0.5 * (xhi - xtop) * (1.0 + yhi) + xtop - xlo)
