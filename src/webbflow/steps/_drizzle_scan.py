"""drizzle's image scanner: which input pixels its ``square`` kernel takes, row by row.

drizzle's C kernels do not visit every input pixel: ``init_image_scanner`` maps the input's
bounding box onto the output grid (interpolating the pixel map), clips it to the output's box,
maps the clipped polygon back (a golden-section inversion of the pixel map) and
``get_scanline_limits`` then gives each input row the range of columns whose pixels lie inside
it.  Pixels outside are skipped even where they would overlap an edge pixel of the output.  This
module repeats that computation with the C code's arithmetic in its order (drizzle's
``cdrizzlemap.c``: Python floats are the C doubles) so that
:mod:`webbflow.steps._drizzle_square` can visit the same pixels.  The caller checks the result
against drizzle's own counts (``nmiss``, ``nskip``) of the same pixel map and keeps drizzle's
output where they differ, so a case this does not model costs time, never numbers.
"""

import math

import numpy as np

__all__ = ["scan_rows"]

VERTEX_ATOL = 1.0e-12
APPROX_ZERO = 1.0e3 * np.finfo(np.float64).tiny
MAX_INV_ERR = 0.03
_MAX_VERTICES = 8  # 2 * IMAGE_OUTLINE_NPTS


class _Unmodelled(Exception):
    """A case the port leaves to drizzle (its error paths, non-finite numbers)."""


def _div(a, b):
    # C's IEEE division (a zero divisor gives inf or NaN instead of raising)
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def _c_round(x):
    # C's round(): halves away from zero, then (int)
    if not math.isfinite(x):
        raise _Unmodelled("non-finite scan limit")
    r = math.trunc(x)
    if abs(x - r) >= 0.5:
        r += 1 if x > 0 else -1
    return int(r)


def _interpolate_point(pmap, xin, yin):
    ny, nx = pmap.shape[0], pmap.shape[1]
    i0, j0 = int(xin), int(yin)  # C's (int): toward zero
    i0 = 0 if i0 < 0 else min(i0, nx - 2)
    j0 = 0 if j0 < 0 else min(j0, ny - 2)
    x = xin - i0
    y = yin - j0
    x1 = 1.0 - x
    y1 = 1.0 - y
    f00, g00 = float(pmap[j0, i0, 0]), float(pmap[j0, i0, 1])
    f10, g10 = float(pmap[j0, i0 + 1, 0]), float(pmap[j0, i0 + 1, 1])
    f01, g01 = float(pmap[j0 + 1, i0, 0]), float(pmap[j0 + 1, i0, 1])
    f11, g11 = float(pmap[j0 + 1, i0 + 1, 0]), float(pmap[j0 + 1, i0 + 1, 1])
    xo = f00 * x1 * y1 + f10 * x * y1 + f01 * x1 * y + f11 * x * y
    yo = g00 * x1 * y1 + g10 * x * y1 + g01 * x1 * y + g11 * x * y
    if math.isnan(xo) or math.isnan(yo):
        raise _Unmodelled("pixel map interpolation failed")
    return xo, yo


def _area(a, b):
    return a[0] * b[1] - a[1] * b[0]


def _in_hp(pt, v_, v):
    # is_point_strictly_in_hp
    return (_area(v, pt) - _area(v_, pt) - _area(v, v_)) > 0.0


def _equal(a, b):
    return abs(a[0] - b[0]) < VERTEX_ATOL and abs(a[1] - b[1]) < VERTEX_ATOL


def _append(p, v):
    if p and (_equal(p[-1], v) or _equal(p[0], v)):
        return
    if len(p) >= _MAX_VERTICES:
        return
    p.append(v)


def _orient_ccw(p):
    n = len(p)
    if n < 3:
        return p
    cx = cy = 0.0
    for x, y in p:
        cx += x
        cy += y
    cx /= n
    cy /= n
    v1 = (p[0][0] - cx, p[0][1] - cy)
    v2 = (p[1][0] - cx, p[1][1] - cy)
    if _area(v1, v2) >= 0.0:
        return p
    return p[::-1]


def _simplify(p):
    n = len(p)
    if n < 3:
        return p
    out = []
    pv_, pv, pvnxt = p[n - 1], p[0], p[1]
    for k in range(n):
        dp = (pvnxt[0] - pv_[0], pvnxt[1] - pv_[1])
        dq = (pv[0] - pv_[0], pv[1] - pv_[1])
        if abs(_area(dp, dq)) > APPROX_ZERO and math.sqrt(dp[0] * dp[0] + dp[1] * dp[1]) > VERTEX_ATOL:
            out.append(pv)
        pv_, pv, pvnxt = pv, pvnxt, p[(2 + k) % n]
    return out


def _clip(p, wnd):
    # clip_polygon_to_window (Sutherland-Hodgman)
    if len(p) < 3 or len(wnd) < 3:
        raise _Unmodelled("degenerate polygon")
    p, wnd = _orient_ccw(p), _orient_ccw(wnd)
    cur = list(p)
    wv_ = wnd[-1]
    for wv in wnd:
        dw = (wv[0] - wv_[0], wv[1] - wv_[1])
        out = []
        if cur:
            pv_ = cur[-1]
            for pv in cur:
                dp = (pv[0] - pv_[0], pv[1] - pv_[1])
                v1_inside = _in_hp(wv_, wv, pv_)
                v2_inside = _in_hp(wv_, wv, pv)
                if v2_inside != v1_inside:
                    d = _area(dp, dw)
                    app_ = _area(pv, pv_)
                    aww_ = _area(wv, wv_)
                    vi = (_div(app_ * dw[0] - aww_ * dp[0], d), _div(app_ * dw[1] - aww_ * dp[1], d))
                    if math.isfinite(vi[0]) and math.isfinite(vi[1]):
                        _append(out, vi)
                    if v2_inside:
                        _append(out, pv)
                elif v1_inside:
                    _append(out, pv)
                pv_ = pv
        cur = out
        wv_ = wv
    return _simplify(_orient_ccw(cur))


def _invert(pmap, box, xout, yout):
    # invert_pixmap: golden-section search over the input's box
    gr = 0.6180339887498948482
    xmin, xmax = box[0] - 0.5, box[1] + 0.5
    ymin, ymax = box[2] - 0.5, box[3] + 0.5
    dx, dy = xmax - xmin, ymax - ymin

    def dist2(x, y):
        xo, yo = _interpolate_point(pmap, x, y)
        ex, ey = xo - xout, yo - yout
        return ex * ex + ey * ey

    niter = 0
    while (dx > MAX_INV_ERR or dy > MAX_INV_ERR) and niter < 50:
        niter += 1
        x1 = xmax - gr * dx
        x2 = xmin + gr * dx
        y1 = ymax - gr * dy
        y2 = ymin + gr * dy
        d11, d12, d21, d22 = dist2(x1, y1), dist2(x1, y2), dist2(x2, y1), dist2(x2, y2)
        if d11 < d12 and d11 < d21 and d11 < d22:
            xmax, ymax = x2, y2
        elif d12 < d11 and d12 < d21 and d12 < d22:
            xmax, ymin = x2, y1
        elif d21 < d11 and d21 < d12 and d21 < d22:
            xmin, ymax = x1, y2
        else:
            xmin, ymin = x1, y1
        dx, dy = xmax - xmin, ymax - ymin
    if niter == 50:
        raise _Unmodelled("pixel map inversion did not converge")
    return 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)


def _edge(v1, v2, position):
    m = _div(v2[0] - v1[0], v2[1] - v1[1])
    b = _div(v1[0] * v2[1] - v1[1] * v2[0], v2[1] - v1[1])
    c = b - math.copysign(0.5 + 0.5 * abs(m), float(position))
    return v1, v2, m, c


def _scanner(p):
    # init_scanner: the polygon's left and right chains of edges, bottom to top
    n = len(p)
    if n < 3:
        raise _Unmodelled("no overlap polygon")
    min_y, min_left = p[0][1], 0
    for k in range(1, n):
        if p[k][1] < min_y:
            min_left, min_y = k, p[k][1]
    i1, i2 = (min_left - 1 + n) % n, (min_left + 1) % n
    min_right = i1 if p[i1][1] < p[i2][1] else i2
    if p[min_right][1] <= min_y * (1.0 + math.copysign(VERTEX_ATOL, min_y)):
        if p[min_left][0] > p[min_right][0]:
            min_left, min_right = min_right, min_left
    else:
        min_right = min_left
    max_y, max_right = p[0][1], 0
    for k in range(1, n):
        if p[k][1] > max_y:
            max_right, max_y = k, p[k][1]
    i1, i2 = (max_right - 1 + n) % n, (max_right + 1) % n
    max_left = i1 if p[i1][1] > p[i2][1] else i2
    if p[max_left][1] >= max_y * (1.0 - math.copysign(VERTEX_ATOL, max_y)):
        if p[max_left][0] > p[max_right][0]:
            max_left, max_right = max_right, max_left
    else:
        max_left = max_right
    if max_left > min_left:
        min_left += n
    left = []
    for k in range(min_left - max_left):
        i1 = (min_left - k + n) % n
        left.append(_edge(p[i1], p[(i1 - 1 + n) % n], -1))
    if max_right < min_right:
        max_right += n
    right = []
    for k in range(max_right - min_right):
        i1 = (min_right + k + n) % n
        right.append(_edge(p[i1], p[(i1 + 1) % n], 1))
    if not left or not right:
        raise _Unmodelled("a polygon chain without edges")
    return left, right, min_y, max_y


def scan_rows(pmap, out_shape):
    """The input pixels drizzle's ``square`` kernel visits for ``pmap`` onto an ``out_shape`` grid.

    Parameters
    ----------
    pmap : (ny, nx, 2) ndarray
        Pixel map (finite everywhere: drizzle shrinks the input's box around NaN, which this
        does not model).
    out_shape : (int, int)

    Returns
    -------
    rows : (ny, 2) int64 ndarray or None
        First and last column visited in each input row (last < first: the row is skipped);
        None where drizzle would stop with an error or the map is not finite.
    nmiss, nskip : int
        drizzle's counts from the scan alone: the kernel adds one to ``nmiss`` for each visited
        pixel that reaches no output pixel.
    """
    ny, nx = pmap.shape[0], pmap.shape[1]
    if ny < 2 or nx < 2 or not np.isfinite(pmap).all():
        return None, 0, 0
    try:
        return _scan_rows(pmap, out_shape)
    except _Unmodelled:
        return None, 0, 0


def _scan_rows(pmap, out_shape):
    ny, nx = pmap.shape[0], pmap.shape[1]
    box = (0, nx - 1, 0, ny - 1)  # xmin, xmax, ymin, ymax: a finite map is not shrunk
    inpq = [(box[0] - 0.5, box[2] - 0.5), (box[1] + 0.5, box[2] - 0.5), (box[1] + 0.5, box[3] + 0.5),
            (box[0] - 0.5, box[3] + 0.5)]
    p = [_interpolate_point(pmap, x, y) for x, y in inpq]  # half-integers: never a map point itself
    oy, ox = (float(n) for n in out_shape)
    q = [(-0.5, -0.5), (ox - 0.5, -0.5), (ox - 0.5, oy - 0.5), (-0.5, oy - 0.5)]
    pq = _clip(p, q)
    inpq = _orient_ccw([_invert(pmap, box, x, y) for x, y in pq])
    left, right, min_y, max_y = _scanner(inpq)
    ymin = max(0, int(min_y + 0.5 + 2.0 * MAX_INV_ERR))
    ymax = min(box[3], int(max_y + 2.0 * MAX_INV_ERR))
    width = box[1] - box[0]
    nskip = (box[3] - box[2]) - (ymax - ymin)
    nmiss = nskip * width
    rows = np.zeros((ny, 2), np.int64)
    rows[:, 0] = 1  # skipped unless scanned
    li, ri = 0, 0
    for j in range(ymin, ymax + 1):
        (n, li, ri), x1, x2 = _limits(left, right, li, ri, j, min_y, max_y, box)
        if n == 1:  # the scan ended: the rows above are skipped
            nskip += ymax + 1 - j
            nmiss += (ymax + 1 - j) * width
            break
        if n in (2, 3):
            nmiss += width
            nskip += 1
            continue
        nmiss += width - (x2 + 1 - x1)
        rows[j] = (x1, x2)
    return rows, nmiss, nskip


def _limits(left, right, li, ri, y, min_y, max_y, box):
    """get_scanline_limits: ((code, left edge, right edge), x1, x2) for row ``y``."""
    if box[3] >= box[2] and (y < 0 or y > box[3]):
        return (2, li, ri), 0, 0
    pyb, pyt = y - 0.5, y + 0.5
    if pyt <= min_y or pyb >= max_y + 1:
        return (2, li, ri), 0, 0
    while pyb > left[li][1][1]:
        if li == len(left) - 1:
            return (1, li, ri), 0, 0
        li += 1
    while pyb > right[ri][1][1]:
        if ri == len(right) - 1:
            return (1, li, ri), 0, 0
        ri += 1
    xlb = left[li][2] * y + left[li][3] - MAX_INV_ERR
    xrb = right[ri][2] * y + right[ri][3] + MAX_INV_ERR
    while pyt > left[li][1][1] + 0.5 + MAX_INV_ERR:
        if li == len(left) - 1:
            return (1, li, ri), 0, 0
        li += 1
    while pyt > right[ri][1][1] + 0.5 + MAX_INV_ERR:
        if ri == len(right) - 1:
            return (1, li, ri), 0, 0
        ri += 1
    xlt = left[li][2] * y + left[li][3] - MAX_INV_ERR
    xrt = right[ri][2] * y + right[ri][3] + MAX_INV_ERR
    xmin, xmax = float(box[0]), float(box[1])
    if box[1] >= box[0]:
        xlb = xmin if xlb < xmin else xlb
        xlt = xmin if xlt < xmin else xlt
        xrb = xmax if xrb > xmax else xrb
        xrt = xmax if xrt > xmax else xrt
    if xlt >= xrt:
        x1, x2 = _c_round(xlb), _c_round(xrb)
        if xlb >= xrb:
            return (3, li, ri), x1, x2
    elif xlb >= xrb:
        x1, x2 = _c_round(xlt), _c_round(xrt)
    else:
        x1 = _c_round(xlb if xlb > xlt else xlt)
        x2 = _c_round(xrb if xrb < xrt else xrt)
    return (0, li, ri), x1, x2
