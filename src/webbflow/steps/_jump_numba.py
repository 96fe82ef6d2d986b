"""Compiled kernels of the two-point-difference jump detection (stcal 1.20 semantics).

Everything is per pixel and pooled over integrations, as in
``stcal/jump/twopoint_difference.py``: the first differences are computed in
electrons from float32 data (``data * gain``), promoted to float64, and compared
with a noise model built from the median difference and the CDS read noise.
The float32/float64 mix of stcal is reproduced on purpose so that the flags
agree exactly, including at the thresholds.
"""

import math

import numpy as np
from numba import njit, prange

DNU = 1
SAT = 2
JUMP = 4
BAD = DNU | SAT

REGIME_ITERATIVE = 0
REGIME_SINGLE_PASS = 1
REGIME_SIGMA_CLIP = 2


@njit(cache=True, error_model="numpy")
def _sort_nan_last(buf, n):
    """Insertion sort of buf[:n] with NaN last; return the number of finite values."""
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


@njit(cache=True, parallel=True, error_model="numpy")
def detect(data, gdq, gain, rn2, nframes, regime, rej, thr3diff, thr2diff,
           maxiter_clip, med_out, sig_out):
    """Flag JUMP_DET in ``gdq`` (in place) and return per-pixel median/sigma.

    ``rn2`` is the squared CDS read noise in electrons (float32), ``thr3diff``
    and ``thr2diff`` the thresholds used when 3 or 2 usable differences remain.
    """
    nints, ngroups, ny, nx = data.shape
    nd = ngroups - 1
    n = nints * nd
    for y in prange(ny):
        fd = np.empty(max(n, 1), np.float64)
        a = np.empty(max(n, 1), np.float64)
        work = np.empty(max(n, nints, 1), np.float64)
        ratio = np.empty(max(n, 1), np.float64)
        col = np.empty(max(nints, 1), np.float64)
        for x in range(nx):
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
                continue
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


@njit(cache=True, parallel=True, error_model="numpy")
def neighbor_cores(data, gdq, gain, med, sig, i, k, lo, hi, core):
    """Mark pixels whose JUMP on group k of integration i has lo < ratio < hi."""
    ny, nx = med.shape
    for y in prange(ny):
        for x in range(nx):
            core[y, x] = 0
            if (gdq[i, k, y, x] & JUMP) == 0:
                continue
            if (gdq[i, k, y, x] & BAD) or (gdq[i, k - 1, y, x] & BAD):
                continue
            g32 = gain[y, x]
            d = float(data[i, k, y, x] * g32 - data[i, k - 1, y, x] * g32)
            r = abs(d - med[y, x]) / sig[y, x]
            if r < hi and r > lo:
                core[y, x] = 1


@njit(cache=True, parallel=True, error_model="numpy")
def neighbor_flag(gdq, i, k, core):
    """Set JUMP on the 4-neighbours of the cores (never on SAT or DNU groups)."""
    ny, nx = core.shape
    for y in prange(ny):
        for x in range(nx):
            f = core[y, x] != 0
            if not f and x > 0:
                f = core[y, x - 1] != 0
            if not f and x < nx - 1:
                f = core[y, x + 1] != 0
            if not f and y > 0:
                f = core[y - 1, x] != 0
            if not f and y < ny - 1:
                f = core[y + 1, x] != 0
            if f and (gdq[i, k, y, x] & BAD) == 0:
                gdq[i, k, y, x] |= JUMP


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
                for x in range(nx):
                    q = gdq[i, k, y, x]
                    if (q & JUMP) and (q & BAD):
                        gdq[i, k, y, x] = q & ~np.uint8(JUMP)


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
