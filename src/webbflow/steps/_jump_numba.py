"""Compiled kernels of the two-point-difference jump detection (stcal 1.20 semantics).

Everything is per pixel and pooled over integrations, as in
``stcal/jump/twopoint_difference.py``: the first differences are computed in
electrons from float32 data (``data * gain``), promoted to float64, and compared
with a noise model built from the median difference and the CDS read noise.
The float32/float64 mix of stcal is reproduced on purpose so that the flags
agree exactly, including at the thresholds.

Speed: ``detect`` works on blocks of a row at once. The first differences of a
block are held as an (n, width) buffer and sorted along n with a fixed
compare-exchange network (``sorting_network``), whose min/max on whole rows
compile to branch-free vector code. Unusable values become +inf and a per-pixel
count m of the others picks the median at m//2 (and m//2 - 1): the same
elements the per-pixel insertion sort picks, combined by the same
``(a + b) / 2.0``, hence bit-identical. The iterative search is screened per
block: a median-free bound clears most pixels, the rest get their first
iteration computed exactly as the scalar code does it, and the few pixels that
flag something there (or had a JUMP already) are redone from scratch by the
unchanged scalar per-pixel code (``_detect_pixel``).
"""

import math

import numpy as np

from webbflow.steps._jit import njit, prange

from ._networks import sorting_network  # noqa: F401 (jump.py and the tests use K.sorting_network)

DNU = 1
SAT = 2
JUMP = 4
BAD = DNU | SAT

REGIME_ITERATIVE = 0
REGIME_SINGLE_PASS = 1
REGIME_SIGMA_CLIP = 2

# Target size (float64 values) of one block buffer: (n, width) stays in L1/L2.
_BLOCK_VALUES = 4096


def block_width(n):
    """Pixels per block for ``n`` differences per pixel (a multiple of 8)."""
    return max(8, min(512, (_BLOCK_VALUES // max(n, 1)) // 8 * 8))


@njit(cache=True, error_model="numpy")
def _sort_nan_last(buf, n):
    """Sort buf[:n] with NaN last; return the number of finite values.

    Insertion sort for the few differences of an ordinary ramp; a library
    sort (n log n) for the thousands a long time series pools per pixel,
    where insertion sort cost minutes per segment.  The median of sorted
    values does not depend on the algorithm.
    """
    if n > 64:
        m = 0
        for i in range(n):
            v = buf[i]
            if not math.isnan(v):
                buf[m] = v
                m += 1
        buf[:m].sort()
        for i in range(m, n):
            buf[i] = np.nan
        return m
    m = 0
    for i in range(n):
        v = buf[i]
        if math.isnan(v):
            continue
        j = m - 1
        # move finite values to the front while keeping them sorted
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
        m += 1
    for i in range(m, n):
        buf[i] = np.nan
    return m


@njit(cache=True, error_model="numpy")
def _median_of_sorted(buf, m):
    if m == 0:
        return np.nan
    h = m >> 1
    if m & 1:
        return buf[h]
    return (buf[h - 1] + buf[h]) / 2.0


@njit(cache=True, error_model="numpy")
def _nanmedian(vals, n, work):
    for k in range(n):
        work[k] = vals[k]
    m = _sort_nan_last(work, n)
    return _median_of_sorted(work, m)


@njit(cache=True, error_model="numpy")
def _iter_median(a, n, work):
    """stcal ``calc_med_first_diffs`` for one pixel (a: |first differences|, NaN = unusable)."""
    nuse = 0
    vmax = -np.inf
    vmin = np.inf
    for k in range(n):
        v = a[k]
        if not math.isnan(v):
            nuse += 1
            if v > vmax:
                vmax = v
            if v < vmin:
                vmin = v
    if nuse < 2:
        return np.nan
    if nuse == 2:
        return vmin
    m = 0
    for k in range(n):
        v = a[k]
        if math.isnan(v):
            continue
        if nuse >= 4 and v == vmax:
            # every difference equal to the maximum is dropped, ties included
            continue
        work[m] = v
        m += 1
    m = _sort_nan_last(work, m)
    return _median_of_sorted(work, m)


@njit(cache=True, error_model="numpy")
def _load_diffs(data, gdq, gain, y, x, fd):
    """First differences in electrons (float32 arithmetic, float64 result)."""
    nints, ngroups = data.shape[0], data.shape[1]
    g32 = gain[y, x]
    nd = ngroups - 1
    for i in range(nints):
        if gdq[i, 0, y, x] & BAD:
            prev = np.float32(np.nan)
        else:
            prev = data[i, 0, y, x] * g32
        for k in range(1, ngroups):
            if gdq[i, k, y, x] & BAD:
                cur = np.float32(np.nan)
            else:
                cur = data[i, k, y, x] * g32
            fd[i * nd + k - 1] = float(cur - prev)
            prev = cur


@njit(cache=True, error_model="numpy")
def _sigma(med, rn2, nframes):
    s = math.sqrt(abs(med) * 1.0 + rn2 / (0.5 * (2.0 * nframes)))
    if s == 0.0:
        return np.nan
    return s


@njit(cache=True, error_model="numpy")
def _has_jump(gdq, y, x):
    for i in range(gdq.shape[0]):
        for k in range(gdq.shape[1]):
            if gdq[i, k, y, x] & JUMP:
                return True
    return False


@njit(cache=True, error_model="numpy")
def _iterative(fd, a, ratio, work, n, nd, r2, nframes, rej, thr3diff, thr2diff, gdq, y, x):
    """stcal's iterative search for one pixel: flag the worst outlier until none remains."""
    for k in range(n):
        a[k] = abs(fd[k])
    it = 0
    while True:
        medi = _iter_median(a, n, work)
        if it > 0:
            # stcal keeps the re-computed medians in a float32 array
            medi = float(np.float32(medi))
        sigi = _sigma(medi, r2, nframes)
        nuse = 0
        rmax = np.nan
        for k in range(n):
            if math.isnan(a[k]):
                ratio[k] = np.nan
                continue
            nuse += 1
            e = np.float32(a[k] - medi)
            r = abs(float(e)) / sigi
            ratio[k] = r
            if not math.isnan(r) and (math.isnan(rmax) or r > rmax):
                rmax = r
        if nuse >= 4:
            thr = rej
        elif nuse == 3:
            thr = thr3diff
        elif nuse == 2:
            thr = thr2diff
        else:
            break
        if not (rmax > thr):
            break
        for k in range(n):
            if ratio[k] == rmax:
                i = k // nd
                gdq[i, k % nd + 1, y, x] |= JUMP
                a[k] = np.nan
        it += 1


@njit(cache=True, error_model="numpy")
def _sort_columns(buf, w, net):
    """Sort every column buf[:, x] (x < w) ascending; buf holds no NaN."""
    for c in range(net.shape[0]):
        lo = buf[net[c, 0]]
        hi = buf[net[c, 1]]
        for x in range(w):
            a = lo[x]
            b = hi[x]
            lo[x] = b if b < a else a
            hi[x] = a if b < a else b


@njit(cache=True, error_model="numpy")
def _median_columns(srt, cnt, w, lo, med):
    """Median of the first cnt[x] values of each sorted column, NaN when empty."""
    n = srt.shape[0]
    # pick srt[h - 1, x] and srt[h, x] by selects, which vectorise (a gather does not)
    for k in range(n):
        row = srt[k]
        for x in range(w):
            h = cnt[x] >> 1
            v = row[x]
            lo[x] = v if k + 1 == h else lo[x]
            med[x] = v if k == h else med[x]
    for x in range(w):
        c = cnt[x]
        if c == 0:
            med[x] = np.nan
        elif (c & 1) == 0:
            med[x] = (lo[x] + med[x]) / 2.0


@njit(cache=True, error_model="numpy")
def _load_block(data, gdq, gain, y, x0, w, nd, fd, prev, anyq):
    """First differences of pixels x0..x0+w of row y into fd[k, x - x0] (as _load_diffs).

    anyq[x] gets the OR of the pixel's group DQ; prev is float32 scratch.
    """
    nints, ngroups = data.shape[0], data.shape[1]
    g32 = gain[y, x0:x0 + w]
    for x in range(w):
        anyq[x] = 0
    for i in range(nints):
        d0 = data[i, 0, y, x0:x0 + w]
        q0 = gdq[i, 0, y, x0:x0 + w]
        for x in range(w):
            q = q0[x]
            anyq[x] |= q
            prev[x] = np.float32(np.nan) if q & BAD else d0[x] * g32[x]
        for k in range(1, ngroups):
            dk = data[i, k, y, x0:x0 + w]
            qk = gdq[i, k, y, x0:x0 + w]
            row = fd[i * nd + k - 1]
            for x in range(w):
                q = qk[x]
                anyq[x] |= q
                cur = np.float32(np.nan) if q & BAD else dk[x] * g32[x]
                row[x] = float(cur - prev[x])
                prev[x] = cur


@njit(cache=True, error_model="numpy")
def _abs_stats(fd, w, nuse, vmax, vmin):
    """fd[:, :w] -> |fd| in place; per column the count of usable (non-NaN) values, max and min."""
    n = fd.shape[0]
    for x in range(w):
        nuse[x] = 0
        vmax[x] = -np.inf
        vmin[x] = np.inf
    for k in range(n):
        row = fd[k]
        for x in range(w):
            v = abs(row[x])
            row[x] = v
            nuse[x] += v == v
            vmax[x] = v if v > vmax[x] else vmax[x]
            vmin[x] = v if v < vmin[x] else vmin[x]


@njit(cache=True, error_model="numpy")
def _exact_first_iteration(fd, srt, w, r2v, nframes, rej, thr3diff, thr2diff, net,
                           nuse, cnt, vmax, vmin, med, sig, rmax, todo):
    """First iteration of ``_iterative`` for a block; todo[x] = it flags something.

    fd holds the first differences (NaN = unusable) and is turned into their
    absolute values. Every operation and promotion is that of ``_iter_median``,
    ``_sigma`` and the ratio loop of ``_iterative``, so the decision is exact.
    """
    n = fd.shape[0]
    _abs_stats(fd, w, nuse, vmax, vmin)
    for x in range(w):
        cnt[x] = 0
    # bitwise & and | on booleans below: short-circuit and/or would add
    # branches that keep LLVM from vectorising; NaN compares false throughout
    # with >= 4 usable differences every one equal to the maximum is dropped
    for k in range(n):
        row = fd[k]
        srow = srt[k]
        for x in range(w):
            v = row[x]
            keep = (v == v) & ((nuse[x] < 4) | (v != vmax[x]))
            srow[x] = v if keep else np.inf
            cnt[x] += keep
    _sort_columns(srt, w, net)
    _median_columns(srt, cnt, w, vmax, med)     # vmax is free again: scratch
    for x in range(w):
        if nuse[x] < 2:
            med[x] = np.nan
        elif nuse[x] == 2:
            med[x] = vmin[x]
        s = math.sqrt(abs(med[x]) * 1.0 + r2v[x] / (0.5 * (2.0 * nframes)))
        sig[x] = s if s != 0.0 else np.nan
        rmax[x] = -np.inf
    # the largest ratio is the largest |e| over sigma: the correctly rounded
    # division by a positive sigma is monotonic, so one division per pixel
    # gives exactly the scalar code's maximum of the per-difference ratios
    for k in range(n):
        row = fd[k]
        for x in range(w):
            e = abs(float(np.float32(row[x] - med[x])))
            rmax[x] = e if e > rmax[x] else rmax[x]
    for x in range(w):
        u = nuse[x]
        thr = rej if u >= 4 else (thr3diff if u == 3 else thr2diff)
        sg = sig[x]
        # an infinite sigma makes finite ratios 0 and infinite ones NaN, which
        # the quotient below would not reproduce: leave it to the scalar code
        todo[x] = (u >= 2) & ((rmax[x] / sg > thr) | (sg == np.inf))


@njit(cache=True, error_model="numpy")
def _screen_iterative(fd, srt, cfd, cr2, idx, w, r2v, nframes, rej, thr3diff, thr2diff, net,
                      nuse, cnt, vmax, vmin, med, sig, rmax, ctodo, todo):
    """todo[x] = the first iteration of ``_iterative`` flags something in pixel x.

    Most pixels are cleared by a bound that needs no median: the median lies in
    [min, max] of the usable |differences|, so no ratio can exceed
    (max - min) / sigma(min), evaluated with the very operations of the scalar
    code. Every rounding involved is monotonic, so the computed bound is >= every
    computed ratio and ``bound <= threshold`` proves that nothing is flagged
    (NaN or infinite bounds prove nothing). The other pixels are gathered into
    cfd and screened exactly by ``_exact_first_iteration``.
    """
    n = fd.shape[0]
    _abs_stats(fd, w, nuse, vmax, vmin)
    nc = 0
    for x in range(w):
        u = nuse[x]
        thr = rej if u >= 4 else (thr3diff if u == 3 else thr2diff)
        s = math.sqrt(vmin[x] * 1.0 + r2v[x] / (0.5 * (2.0 * nframes)))
        e = float(np.float32(vmax[x] - vmin[x]))
        todo[x] = False
        # fewer than 2 usable differences: the scalar code flags nothing
        if u >= 2 and not (s > 0.0 and e / s <= thr):
            idx[nc] = x
            nc += 1
    if nc == 0:
        return
    for k in range(n):
        row = fd[k]
        crow = cfd[k]
        for j in range(nc):
            crow[j] = row[idx[j]]
    for j in range(nc):
        cr2[j] = r2v[idx[j]]
    _exact_first_iteration(cfd, srt, nc, cr2, nframes, rej, thr3diff, thr2diff, net,
                           nuse, cnt, vmax, vmin, med, sig, rmax, ctodo)
    for j in range(nc):
        todo[idx[j]] = ctodo[j]


@njit(cache=True, error_model="numpy")
def _detect_pixel(data, gdq, gain, rn2, nframes, regime, rej, thr3diff, thr2diff,
                  maxiter_clip, y, x, n, nd, fd, a, work, ratio, col, med_out, sig_out):
    """The per-pixel detection of stcal for pixel (y, x), any regime."""
    nints = data.shape[0]
    _load_diffs(data, gdq, gain, y, x, fd)
    r2 = float(rn2[y, x])
    if regime == REGIME_ITERATIVE:
        _iterative(fd, a, ratio, work, n, nd, r2, nframes, rej, thr3diff, thr2diff, gdq, y, x)
        # The median difference and its sigma serve only the neighbour and
        # after-jump passes, which read them where a JUMP is flagged: the
        # sort is skipped for the other pixels (most of them).
        med = np.nan
        sig = np.nan
        if _has_jump(gdq, y, x):
            med = _nanmedian(fd, n, work)
            sig = _sigma(med, r2, nframes)
        med_out[y, x] = med
        sig_out[y, x] = sig
        return
    med = _nanmedian(fd, n, work)
    sig = _sigma(med, r2, nframes)
    med_out[y, x] = med
    sig_out[y, x] = sig
    if regime == REGIME_SINGLE_PASS:
        for k in range(n):
            v = fd[k]
            if math.isfinite(v) and abs(v - med) / sig > rej:
                i = k // nd
                gdq[i, k % nd + 1, y, x] |= JUMP
    elif regime == REGIME_SIGMA_CLIP:
        # astropy sigma_clip along integrations, one group difference at a time
        for j in range(nd):
            for i in range(nints):
                col[i] = fd[i * nd + j]
            for it in range(maxiter_clip):
                cnt = 0
                s = 0.0
                for i in range(nints):
                    if not math.isnan(col[i]):
                        cnt += 1
                        s += col[i]
                if cnt == 0:
                    break
                cen = _nanmedian(col, nints, work)
                mean = s / cnt
                ss = 0.0
                for i in range(nints):
                    if not math.isnan(col[i]):
                        ss += (col[i] - mean) ** 2
                std = math.sqrt(ss / cnt)
                lo = cen - rej * std
                hi = cen + rej * std
                changed = 0
                for i in range(nints):
                    v = col[i]
                    if v < lo or v > hi:
                        col[i] = np.nan
                        changed += 1
                if changed == 0:
                    break
            for i in range(nints):
                if math.isnan(col[i]) and math.isfinite(fd[i * nd + j]):
                    if (gdq[i, j + 1, y, x] & BAD) == 0:
                        gdq[i, j + 1, y, x] |= JUMP


@njit(cache=True, error_model="numpy")
def _single_pass_block(fd, srt, w, y, x0, nd, r2v, nframes, rej, net, cnt, lo, med,
                       col, work, gdq, med_out, sig_out):
    """Single-pass regime for a block: median, sigma and flags as the scalar code."""
    n = fd.shape[0]
    for x in range(w):
        cnt[x] = 0
    for k in range(n):
        row = fd[k]
        srow = srt[k]
        for x in range(w):
            v = row[x]
            fin = v == v
            srow[x] = v if fin else np.inf
            cnt[x] += 1 if fin else 0
    _sort_columns(srt, w, net)
    _median_columns(srt, cnt, w, lo, med)
    for x in range(w):
        if med[x] == 0.0:
            # +0.0 and -0.0 compare equal, and the network does not keep their
            # order as the insertion sort does: let the scalar code pick the sign
            for k in range(n):
                col[k] = fd[k, x]
            med[x] = _nanmedian(col, n, work)
        m = med[x]
        sig = _sigma(m, float(r2v[x]), nframes)
        lo[x] = sig
        med_out[y, x0 + x] = m
        sig_out[y, x0 + x] = sig
    for k in range(n):
        row = fd[k]
        q = gdq[k // nd, k % nd + 1, y, x0:x0 + w]
        for x in range(w):
            v = row[x]
            if math.isfinite(v) and abs(v - med[x]) / lo[x] > rej:
                q[x] |= JUMP


@njit(cache=True, parallel=True, error_model="numpy")
def detect(data, gdq, gain, rn2, nframes, regime, rej, thr3diff, thr2diff,
           maxiter_clip, net, width, med_out, sig_out):
    """Flag JUMP_DET in ``gdq`` (in place) and return per-pixel median/sigma.

    ``rn2`` is the squared CDS read noise in electrons (float32), ``thr3diff``
    and ``thr2diff`` the thresholds used when 3 or 2 usable differences remain.
    ``net`` is ``sorting_network(n)`` for the n = nints * (ngroups - 1)
    differences of a pixel and ``width`` the pixels per block
    (``block_width(n)``).
    """
    nints, ngroups, ny, nx = data.shape
    nd = ngroups - 1
    n = nints * nd
    nb = max(n, 1)
    for y in prange(ny):
        fd = np.empty(nb, np.float64)
        a = np.empty(nb, np.float64)
        work = np.empty(max(n, nints, 1), np.float64)
        ratio = np.empty(nb, np.float64)
        col = np.empty(max(n, nints, 1), np.float64)
        if regime == REGIME_SIGMA_CLIP:
            for x in range(nx):
                _detect_pixel(data, gdq, gain, rn2, nframes, regime, rej, thr3diff, thr2diff,
                              maxiter_clip, y, x, n, nd, fd, a, work, ratio, col, med_out, sig_out)
            continue
        blk = np.empty((nb, width), np.float64)
        srt = np.empty((nb, width), np.float64)
        anyq = np.empty(width, np.uint8)
        prev = np.empty(width, np.float32)
        nuse = np.empty(width, np.int64)
        cnt = np.empty(width, np.int64)
        vmax = np.empty(width, np.float64)
        vmin = np.empty(width, np.float64)
        med = np.empty(width, np.float64)
        sig = np.empty(width, np.float64)
        rmax = np.empty(width, np.float64)
        todo = np.empty(width, np.bool_)
        ctodo = np.empty(width, np.bool_)
        cfd = np.empty((nb, width), np.float64)
        cr2 = np.empty(width, np.float32)
        idx = np.empty(width, np.int64)
        for x0 in range(0, nx, width):
            w = min(width, nx - x0)
            _load_block(data, gdq, gain, y, x0, w, nd, blk, prev, anyq)
            r2v = rn2[y, x0:x0 + w]
            if regime == REGIME_SINGLE_PASS:
                _single_pass_block(blk, srt, w, y, x0, nd, r2v, nframes, rej, net, cnt, vmin,
                                   med, col, work, gdq, med_out, sig_out)
                continue
            _screen_iterative(blk, srt, cfd, cr2, idx, w, r2v, nframes, rej, thr3diff, thr2diff,
                              net, nuse, cnt, vmax, vmin, med, sig, rmax, ctodo, todo)
            for x in range(w):
                if todo[x] or (anyq[x] & JUMP):
                    # a flag now or from before: the scalar code redoes the pixel
                    _detect_pixel(data, gdq, gain, rn2, nframes, regime, rej, thr3diff,
                                  thr2diff, maxiter_clip, y, x0 + x, n, nd, fd, a, work,
                                  ratio, col, med_out, sig_out)
                else:
                    # nothing flagged: the scalar code would skip the median too
                    med_out[y, x0 + x] = np.nan
                    sig_out[y, x0 + x] = np.nan


@njit(cache=True, error_model="numpy")
def _is_core(data, gdq, gain, med, sig, i, k, y, x, lo, hi):
    """Whether the JUMP on group k of integration i at (y, x) has lo < ratio < hi."""
    q = gdq[i, k, y, x]
    if (q & JUMP) == 0 or (q & BAD) or (gdq[i, k - 1, y, x] & BAD):
        return False
    g32 = gain[y, x]
    d = float(data[i, k, y, x] * g32 - data[i, k - 1, y, x] * g32)
    r = abs(d - med[y, x]) / sig[y, x]
    return r < hi and r > lo


@njit(cache=True, parallel=True, error_model="numpy")
def _find_cores(data, gdq, gain, med, sig, lo, hi, ends, cores):
    """Count the neighbour-flagging cores of each row, or list them.

    With ``cores`` of length 0 the count of row y goes to ends[y]; otherwise
    ``ends`` holds the cumulative counts and row y's cores (i, k, y, x) are
    written to cores[ends[y - 1]:ends[y]].
    """
    nints, ngroups, ny, nx = data.shape
    listing = cores.shape[0] > 0
    for y in prange(ny):
        c = 0
        if listing and y > 0:
            c = ends[y - 1]
        for i in range(nints):
            for k in range(1, ngroups):
                q = gdq[i, k, y]
                for x0 in range(0, nx, 64):
                    x1 = min(x0 + 64, nx)
                    # JUMP is rare: a vectorised OR over 64 pixels skips most of them
                    acc = np.uint8(0)
                    for x in range(x0, x1):
                        acc |= q[x]
                    if (acc & JUMP) == 0:
                        continue
                    for x in range(x0, x1):
                        if (q[x] & JUMP) and _is_core(data, gdq, gain, med, sig, i, k, y, x, lo, hi):
                            if listing:
                                cores[c, 0] = i
                                cores[c, 1] = k
                                cores[c, 2] = y
                                cores[c, 3] = x
                            c += 1
        if not listing:
            ends[y] = c


@njit(cache=True, error_model="numpy")
def _flag_around_cores(gdq, cores):
    """Set JUMP on the cores and their 4-neighbours (never on SAT or DNU groups)."""
    ny, nx = gdq.shape[2], gdq.shape[3]
    for c in range(cores.shape[0]):
        i, k, y, x = cores[c, 0], cores[c, 1], cores[c, 2], cores[c, 3]
        for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            yy = y + dy
            xx = x + dx
            if 0 <= yy < ny and 0 <= xx < nx and (gdq[i, k, yy, xx] & BAD) == 0:
                gdq[i, k, yy, xx] |= JUMP


def flag_neighbors(data, gdq, gain, med, sig, lo, hi):
    """Flag JUMP on the 4-neighbours of jumps with ``lo < ratio < hi`` (in place).

    The cores of group k are decided on the JUMP flags that detection left in
    group k; flagging neighbours only adds JUMP to the same group and its
    condition (not SAT/DNU) ignores JUMP. So all cores can be found first, in
    one pass over the cube, and flagged afterwards, which equals doing it one
    group after another.
    """
    ny = data.shape[2]
    ends = np.zeros(ny, np.int64)
    none = np.zeros((0, 4), np.int32)
    _find_cores(data, gdq, gain, med, sig, lo, hi, ends, none)
    ends = np.cumsum(ends)
    total = int(ends[-1]) if ny else 0
    if total == 0:
        return 0
    cores = np.empty((total, 4), np.int32)
    _find_cores(data, gdq, gain, med, sig, lo, hi, ends, cores)
    _flag_around_cores(gdq, cores)
    return total


@njit(cache=True, parallel=True, error_model="numpy")
def after_jump(data, gdq, gain, med, e1, n1, e2, n2):
    """Flag the n1 (n2) groups after a jump bigger than e1 (e2) electrons."""
    nints, ngroups, ny, nx = data.shape
    j1 = min(n1, ngroups - 2)
    j2 = min(n2, ngroups - 2)
    for y in prange(ny):
        big1 = np.zeros(ngroups, np.bool_)
        big2 = np.zeros(ngroups, np.bool_)
        for x in range(nx):
            g32 = gain[y, x]
            for i in range(nints):
                # decide on the jumps present before this pass, then propagate
                for k in range(ngroups):
                    big1[k] = False
                    big2[k] = False
                    if k == 0:
                        continue
                    q = gdq[i, k, y, x]
                    if (q & JUMP) == 0 or (q & BAD) or (gdq[i, k - 1, y, x] & BAD):
                        continue
                    d = float(data[i, k, y, x] * g32 - data[i, k - 1, y, x] * g32)
                    ej = (d - med[y, x]) * 1.0
                    big1[k] = ej >= e1
                    big2[k] = ej >= e2
                last1 = -(1 << 30)
                last2 = -(1 << 30)
                for k in range(1, ngroups):
                    if big1[k]:
                        last1 = k
                    if big2[k]:
                        last2 = k
                    if k - last1 <= j1 or k - last2 <= j2:
                        q = gdq[i, k, y, x]
                        if (q & BAD) == 0:
                            gdq[i, k, y, x] = q | JUMP


@njit(cache=True, parallel=True, error_model="numpy")
def clear_jump_on_bad(gdq):
    """Remove JUMP_DET from groups already flagged SATURATED or DO_NOT_USE."""
    nints, ngroups, ny, nx = gdq.shape
    for y in prange(ny):
        for i in range(nints):
            for k in range(ngroups):
                row = gdq[i, k, y]
                for x in range(nx):
                    q = row[x]
                    # branch-free, so that it vectorises: drop JUMP where BAD is set
                    row[x] = q & ~(np.uint8(JUMP) * np.uint8((q & BAD) != 0))


@njit(cache=True, error_model="numpy")
def count_all_dnu_groups(gdq):
    """Per integration, the number of groups in which every pixel is DO_NOT_USE."""
    nints, ngroups, ny, nx = gdq.shape
    out = np.zeros(nints, np.int64)
    for i in range(nints):
        for k in range(ngroups):
            alldnu = True
            for y in range(ny):
                for x in range(nx):
                    if (gdq[i, k, y, x] & DNU) == 0:
                        alldnu = False
                        break
                if not alldnu:
                    break
            if alldnu:
                out[i] += 1
    return out


@njit(cache=True)
def _find_root(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]  # path halving
        a = parent[a]
    return a


@njit(cache=True)
def label8(mask):
    """8-connected regions of a 2-D boolean mask, numbered in raster order of their first pixel.

    The regions and their numbering are scikit-image's ``measure.label(mask)`` (full connectivity in
    2-D); with each region's bounding box and integer moments, gathered in the same two passes.

    Returns
    -------
    labels : ndarray of int32, mask's shape
        0 outside the regions, k + 1 on region k.
    stats : ndarray of int64, (nregions, 8)
        Per region: row0, col0, row1, col1 (bounding box, ends exclusive), pixel count, sum of the
        row indices, sum of the column indices, column of the first pixel (in row0).
    """
    ny, nx = mask.shape
    labels = np.zeros((ny, nx), np.int32)
    parent = np.empty(ny * nx // 2 + 2, np.int32)  # a new provisional label needs a free pixel before it
    nprov = 0
    for i in range(ny):
        for j in range(nx):
            if not mask[i, j]:
                continue
            best = 0
            # the four neighbours already visited: left, upper-left, up, upper-right
            for di, dj in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
                y, x = i + di, j + dj
                if y < 0 or x < 0 or x >= nx:
                    continue
                lab = labels[y, x]
                if lab == 0:
                    continue
                root = _find_root(parent, lab)
                if best == 0:
                    best = root
                elif root != best:
                    if root < best:
                        parent[best] = root
                        best = root
                    else:
                        parent[root] = best
            if best == 0:
                nprov += 1
                if nprov >= parent.shape[0]:
                    grown = np.empty(2 * parent.shape[0], np.int32)
                    grown[:parent.shape[0]] = parent
                    parent = grown
                parent[nprov] = nprov
                best = nprov
            labels[i, j] = best
    final = np.zeros(nprov + 1, np.int32)
    stats = np.zeros((nprov, 8), np.int64)
    count = 0
    for i in range(ny):
        for j in range(nx):
            lab = labels[i, j]
            if lab == 0:
                continue
            root = _find_root(parent, lab)
            k = final[root]
            if k == 0:
                count += 1
                k = count
                final[root] = k
                s = stats[k - 1]
                s[0], s[1], s[2], s[3], s[7] = i, j, i + 1, j + 1, j
            labels[i, j] = k
            s = stats[k - 1]
            if j < s[1]:
                s[1] = j
            if j + 1 > s[3]:
                s[3] = j + 1
            s[2] = i + 1
            s[4] += 1
            s[5] += i
            s[6] += j
    return labels, stats[:count]
