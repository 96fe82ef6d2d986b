"""Compiled kernel of the OLS ramp fit (stcal 1.20 ``OLS_C`` semantics).

The kernel restates, pixel by pixel, what ``stcal/ramp_fitting/src/slope_fitter.c``
computes: segment finding, the SNR-dependent "optimal" weights, the special
cases for one- and two-group segments, the 1/var_rnoise combination of
segments and integrations (stcal >= 1.19) and the variance bookkeeping.
Arithmetic is done in float64 like the C code (which uses ``double``), with the
single exception that the weight power is evaluated in float32 (``powf``).
Values read from float32 arrays are promoted with ``np.float64()``: numba's
``float()`` of a float32 stays float32, so ``r * r`` or ``last - first`` would
be rounded to float32 where the C code works in double (a 1-ulp rate
difference from jwst on near-zero slopes, seen on time series).

For speed, each row is processed in blocks of pixels with loops over the
pixels innermost, which LLVM vectorises: the median rate of every pixel (a
sorting network instead of a per-pixel insertion sort) and the whole fit of
"clean" pixels (no DQ flag: one segment per integration). These perform the
same float64 operations in the same order as the per-pixel code, which still
handles every other pixel, so the results are bit-identical to it.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from webbflow.steps._jit import njit, num_threads

from ._networks import sorting_network

# JWST DQ bits used here (see webbflow.dqflags); numba needs them as globals.
DNU = 1
SAT = 2
JUMP = 4
PERS = 32
CHLO = 128
NGV = 524288
INVALID = DNU | SAT
NOT_PERS = 0xFF & ~PERS

# Variances at or above this are treated as "no information" and zeroed.
LARGE_VARIANCE = 1.0e6


_POWERS = (0.0, 0.4, 1.0, 3.0, 6.0, 10.0)


@njit(cache=True, error_model="numpy")
def _power_index(snr):
    if snr < 5.0:
        return 0
    elif snr < 10.0:
        return 1
    elif snr < 20.0:
        return 2
    elif snr < 50.0:
        return 3
    elif snr < 100.0:
        return 4
    return 5


@njit(cache=True, error_model="numpy")
def weight_table(ngroups):
    """Unscaled optimal weights |(k - mid) / mid|**P for every segment length and power.

    Depends only on (power, length, k), so it is computed once instead of one
    float32 ``pow`` per group and pixel.
    """
    powers = np.array(_POWERS, np.float32)
    tab = np.zeros((6, ngroups + 1, ngroups + 1), np.float64)
    for ip in range(6):
        for length in range(3, ngroups + 1):
            mid = (length - 1) / 2.0
            invmid = 1.0 / mid
            for k in range(length):
                w = abs((float(k) - mid) * invmid)
                # stcal evaluates the power with powf: float32 on purpose
                tab[ip, length, k] = float(np.float32(w) ** powers[ip])
    return tab


def row_network(n):
    """The :func:`~webbflow.steps._networks.sorting_network` of ``n`` as out-of-place operations on ``n + 2`` buffer rows.

    Every comparator reads two rows and writes their min and max to two free
    rows (then frees the rows it read), so no loop stores to a row it loads:
    an in-place ``a[x] = min(a[x], b[x])`` becomes a masked store once
    vectorised, which is slow. Element ``j`` starts in row ``j``.

    Parameters
    ----------
    n : int
        Number of elements.

    Returns
    -------
    ops : ndarray, int64, (ncomparators, 4)
        Rows ``(src_a, src_b, dst_min, dst_max)`` per comparator, in order.
    final : ndarray, int64, (n,)
        Row holding the j-th smallest element after all operations.
    """
    slot = list(range(n))
    free = [n + 1, n]
    ops = []
    for a, b in sorting_network(n):
        lo, hi = free.pop(), free.pop()
        ops.append((slot[a], slot[b], lo, hi))
        free += [slot[b], slot[a]]
        slot[a], slot[b] = lo, hi
    return np.array(ops, dtype=np.int64).reshape(-1, 4), np.array(slot, dtype=np.int64)


@njit(cache=True, error_model="numpy")
def _segment_var_r(length, integ_t0, rn, gain, tgroup):
    """Read-noise variance of a segment's slope (stcal's ``segment_rnoise_*``)."""
    if length <= 2:
        # lengths 1 and 2 share the two-point formula; stcal does not check the gain for them
        rnum = rn / (integ_t0 if length == 1 else tgroup)
        return (12.0 * rnum * rnum) / (6.0 * gain * gain)
    if gain <= 0.0 or math.isnan(gain):
        return 0.0
    rnum = rn / tgroup
    return (12.0 * rnum * rnum) / ((length * length * length - length) * gain * gain)


@njit(cache=True, error_model="numpy")
def _len1_timing(suppress1g, is0, iszf, t1, tframe, tgroup):
    """Time of a one-group segment (stcal's ``segment_len1_timing``): the one-group time for a
    0th-group ramp, the frame time for a ZEROFRAME one, else the group time."""
    if (not suppress1g) and is0:
        return t1
    if (not suppress1g) and iszf:
        return tframe
    return tgroup


@njit(cache=True, error_model="numpy")
def _segments(q, seg_s, seg_l):
    """Segments of one integration's group DQ ``q``: runs of good groups (PERSISTENCE ignored),
    led by a JUMP-only group; one-group segments dropped when a longer one exists, only the
    first kept when none does. Fills ``seg_s`` (starts), ``seg_l`` (lengths); returns their number.
    """
    ngroups = q.shape[0]
    nseg = 0
    in_seg = False
    start = 0
    maxlen = 0
    for k in range(ngroups + 1):
        good = k < ngroups and (q[k] & NOT_PERS) == 0
        if good:
            if not in_seg:
                if k > 0 and (q[k - 1] & NOT_PERS) == JUMP:
                    start = k - 1
                else:
                    start = k
                in_seg = True
        elif in_seg:
            ln = k - start
            in_seg = False
            if ln == 1 and maxlen > 1:
                continue
            seg_s[nseg] = start
            seg_l[nseg] = ln
            nseg += 1
            if ln > maxlen:
                maxlen = ln
    if nseg >= 2:
        if maxlen < 2:
            nseg = 1
        else:
            m = 0
            for s in range(nseg):
                if seg_l[s] != 1:
                    seg_s[m] = seg_s[s]
                    seg_l[m] = seg_l[s]
                    m += 1
            nseg = m
    return nseg


@njit(cache=True, error_model="numpy")
def _chargeloss_var_r(gdq, y, x, nints, suppress1g, is0, iszf, ivr_int, t1, tframe, tgroup, rn, g,
                      oq, seg_s, seg_l, i_vr):
    """stcal's ``ramp_fit_pixel_rnoise_chargeloss`` for one pixel.

    For every integration with a CHARGELOSS group, the read-noise variance is
    recomputed from segments of the group DQ as it came in, with CHARGELOSS
    and DO_NOT_USE toggled off (stcal's XOR) on the CHARGELOSS groups, and
    written to ``i_vr``; the other integrations contribute their own
    ``ivr_int``. Returns the exposure's read-noise variance, or -1.0 when the
    pixel has no CHARGELOSS group (nothing changes then) or the sum is 0
    (stcal keeps the first value).
    """
    ngroups = gdq.shape[1]
    evar = 0.0
    any_chlo = False
    for i in range(nints):
        chlo = False
        for k in range(ngroups):
            qq = gdq[i, k, y, x]
            if qq & CHLO:
                chlo = True
                qq ^= DNU | CHLO
            oq[k] = qq
        if not chlo:
            if ivr_int[i] > 0.0:
                evar += 1.0 / ivr_int[i]
            continue
        any_chlo = True
        t0 = _len1_timing(suppress1g, is0[i], iszf[i], t1, tframe, tgroup)
        inv = 0.0
        for s in range(_segments(oq, seg_s, seg_l)):
            v = _segment_var_r(seg_l[s], t0, rn, g, tgroup)
            if v > 0.0:
                inv += 1.0 / v
        v = 1.0 / inv
        i_vr[i, y, x] = 0.0 if v >= LARGE_VARIANCE else v
        evar += inv
    if not any_chlo or not evar > 0.0:
        return -1.0
    return 1.0 / evar


@njit(cache=True, error_model="numpy")
def _fit_segment(d, start, length, integ_t0, rn, gain, prate, tgroup, wtab):
    """Fit one segment; return (slope, var_p, var_r, sigslope, yint, sigyint).

    ``d`` is the integration's data (float64, SAT groups NaN); ``integ_t0`` is the
    timing of a length-1 segment (one-group time, frame time or group time).
    ``prate`` is the Poisson rate (median rate + dark, or dark alone). The last
    three are stcal's optional-product values (DN per group and DN, 0 for a
    one-group segment; the fitted line for longer ones).
    """
    if length == 1:
        t = integ_t0
        slope = d[start] / t
        var_p = prate / (t * gain)
        return slope, var_p, _segment_var_r(1, t, rn, gain, tgroup), 0.0, 0.0, 0.0
    if length == 2:
        slope = (d[start + 1] - d[start]) / tgroup
        var_p = prate / (tgroup * gain)
        sigslope = 1.41421356 * rn  # stcal's constant for sqrt(2)
        second = float(start) + 1.0
        yint = d[start + 1] * (1.0 - second) + d[start] * second
        return slope, var_p, _segment_var_r(2, integ_t0, rn, gain, tgroup), sigslope, yint, sigslope

    # Signal-to-noise of the whole segment selects the weighting power.
    delta = d[start + length - 1] - d[start]
    den = rn * rn + delta * gain
    if den <= 0.0 or gain == 0.0:
        snr = 0.0
    else:
        s = delta * gain / math.sqrt(den)
        snr = 0.0 if s < 0.0 else s
    ip = _power_index(snr)
    invrn2 = 1.0 / (rn * rn)
    sumw = 0.0
    sumx = 0.0
    sumxx = 0.0
    sumy = 0.0
    sumxy = 0.0
    for k in range(length):
        w = wtab[ip, length, k] * invrn2
        x = float(k) + start
        y = d[start + k]
        if math.isnan(y):
            y = 0.0
        xw = x * w
        sumw += w
        sumx += xw
        sumxx += x * xw
        sumy += y * w
        sumxy += y * xw
    den = sumw * sumxx - sumx * sumx
    num = sumw * sumxy - sumx * sumy
    invden = 1.0 / den
    slope = (num * invden) / tgroup
    var_p = prate / (tgroup * gain * (length - 1.0))
    return (slope, var_p, _segment_var_r(length, integ_t0, rn, gain, tgroup), math.sqrt(sumw * invden),
            (sumxx * sumy - sumx * sumxy) * invden, math.sqrt(sumxx * invden))


# Pixels per block of a row. The block passes below run many short loops over
# the pixels of a block, each reading and writing only a few rows so that LLVM
# vectorises it (every extra written array adds run-time overlap checks); the
# scratch rows of a block stay in L1/L2 and are small enough for malloc to
# recycle (fresh pages are expensive).
BLOCK = 256

# rows of the 1-D scratch of _block_clean_fit, each BLOCK long: one allocation
# with compile-time row offsets lets LLVM prove the rows never overlap, so the
# loops vectorise without run-time overlap checks
(_INVRN2, _VPSEG, _VRSEG, _IVR, _IVP, _IVE, _IVPO, _IVRO, _IERR, _ACC, _PIDX,
 _SW, _SX, _SXX, _SY, _SXY, _NUMI, _RIVP, _RIVR, _RNUM) = range(20)
_NSCRATCH = 20


@njit(cache=True, error_model="numpy")
def _block_medians(data, gdq, i, y, x0, w, tgroup, ops, final, loc, buf, cnt, out):
    """Median first-difference rate of integration ``i`` for pixels ``x0 .. x0+w`` of row ``y``.

    Same values as the scalar definition (rates ``d / tgroup``, NaN where
    DO_NOT_USE or SATURATED; differences NaN where the later group has
    JUMP_DET; the first rate when every difference is NaN; then the median of
    the non-NaN differences), computed for a block of pixels at once: NaN
    differences become +inf with a per-pixel count ``m`` of the others, the
    block is sorted along the group axis by the comparator network
    (:func:`row_network`: ``ops``, ``final``) and the median is read at index
    m//2 (and m//2 - 1). Those are the elements an insertion sort with NaN last
    picks, combined by the same ``(a + b) / 2.0``, so the result is
    bit-identical. ``loc`` (ngroups rows), ``buf`` (ngroups + 1 rows) and
    ``cnt`` are scratch.
    """
    ngroups = data.shape[1]
    for k in range(ngroups):
        drow = data[i, k, y, x0:x0 + w]
        qrow = gdq[i, k, y, x0:x0 + w]
        lrow = loc[k]
        for x in range(w):
            v = np.float64(drow[x]) / tgroup
            lrow[x] = np.nan if qrow[x] & INVALID else v
    for x in range(w):
        cnt[x] = 0
    for k in range(ngroups - 1):
        qrow = gdq[i, k + 1, y, x0:x0 + w]
        lo = loc[k]
        hi = loc[k + 1]
        brow = buf[k]
        for x in range(w):
            dv = hi[x] - lo[x]
            bad = (qrow[x] & JUMP) != 0 or dv != dv
            brow[x] = np.inf if bad else dv
            cnt[x] += 0 if bad else 1
    # compare-exchange of whole rows, vectorised over x. Without NaN any min/max
    # gives the same sorted values (up to the sign of zero, which the caller's
    # 0.0 + median washes out); a real +inf sorts among the padding, same value.
    for c in range(ops.shape[0]):
        ra = buf[ops[c, 0]]
        rb = buf[ops[c, 1]]
        rlo = buf[ops[c, 2]]
        rhi = buf[ops[c, 3]]
        for x in range(w):
            va = ra[x]
            vb = rb[x]
            rlo[x] = va if va < vb else vb
            rhi[x] = vb if va < vb else va
    l0 = loc[0]
    for x in range(w):
        m = cnt[x]
        h = m >> 1
        if m == 0:
            out[x] = l0[x]  # every difference NaN: the first rate (NaN if unusable)
        elif m & 1:
            out[x] = buf[final[h], x]
        else:
            out[x] = (buf[final[h], x] + buf[final[h - 1], x]) / 2.0


@njit(cache=True, error_model="numpy")
def _block_clean_fit(data, y, x0, w, g, rn, dc, pdq, tgroup, wtab, med, sc,
                     r_slope, r_dq, r_vp, r_vr, r_err, i_slope, i_dq, i_vp, i_vr, i_err):
    """Fit pixels ``x0 .. x0+w`` of row ``y`` as clean ramps, vectorised over the block.

    A clean pixel (no group DQ flag anywhere, usable gain, pixel DQ without
    DO_NOT_USE or SATURATED, ngroups >= 3) has one segment of all groups in
    every integration. This restates what the scalar path of :func:`ols_fit`
    does for such a pixel with the same float64 operations in the same order
    (``_fit_segment`` with start 0 and length ngroups, then the combination),
    so results are bit-identical. Every pixel of the block is written; the
    caller refits the ones that are not clean. ``g``, ``rn``, ``dc``, ``pdq``
    are the block's gain, single-read noise, dark rate and pixel DQ, ``med``
    its median rates per integration; ``sc`` is scratch (_NSCRATCH * BLOCK).
    """
    nints, length = data.shape[0], data.shape[1]
    nfl = float(np.float32(nints))
    fl1 = length - 1.0
    cube = length * length * length - length
    B = BLOCK

    # --- per pixel, the same in every integration: Poisson rate, segment variances
    for x in range(w):
        sc[_ACC * B + x] = 0.0
    for i in range(nints):
        mrow = med[i]
        for x in range(w):
            mr = mrow[x]
            sc[_ACC * B + x] += 0.0 if mr != mr else mr
    for x in range(w):
        median_rate = sc[_ACC * B + x] / nfl
        d = np.float64(dc[x])
        prate = median_rate + d if median_rate > 0.0 else d
        sc[_VPSEG * B + x] = prate / (tgroup * np.float64(g[x]) * fl1)
    for x in range(w):
        r = np.float64(rn[x])
        gg = np.float64(g[x])
        rnum_ = r / tgroup
        sc[_VRSEG * B + x] = (12.0 * rnum_ * rnum_) / (cube * gg * gg)
        sc[_INVRN2 * B + x] = 1.0 / (r * r)
    # one segment per integration: the scalar sums start at 0.0 (so -0.0 -> 0.0)
    for x in range(w):
        vp = sc[_VPSEG * B + x]
        vr = sc[_VRSEG * B + x]
        ivr = 0.0 + 1.0 / vr
        ivp = 0.0 + 1.0 / vp if vp > 0.0 else 0.0
        ive = 0.0 + 1.0 / (vp + vr)
        sc[_IVR * B + x] = ivr
        sc[_IVP * B + x] = ivp
        v = 1.0 / ivp if ivp > 0.0 else 0.0
        sc[_IVPO * B + x] = 0.0 if v >= LARGE_VARIANCE else v
        v = 1.0 / ivr
        sc[_IVRO * B + x] = 0.0 if v >= LARGE_VARIANCE else v
        ve = 1.0 / ive
        sc[_IERR * B + x] = 0.0 if ve > LARGE_VARIANCE else math.sqrt(ve)
        sc[_RIVP * B + x] = 0.0
        sc[_RIVR * B + x] = 0.0
        sc[_RNUM * B + x] = 0.0

    for i in range(nints):
        # signal-to-noise of the whole ramp selects the weighting power
        first = data[i, 0, y, x0:x0 + w]
        last = data[i, length - 1, y, x0:x0 + w]
        for x in range(w):
            gg = np.float64(g[x])
            r = np.float64(rn[x])
            delta = np.float64(last[x]) - np.float64(first[x])
            den = r * r + delta * gg
            s = delta * gg / math.sqrt(den)
            s = 0.0 if s < 0.0 else s
            snr = 0.0 if (den <= 0.0 or gg == 0.0) else s
            p = 5.0
            p = 4.0 if snr < 100.0 else p
            p = 3.0 if snr < 50.0 else p
            p = 2.0 if snr < 20.0 else p
            p = 1.0 if snr < 10.0 else p
            p = 0.0 if snr < 5.0 else p
            sc[_PIDX * B + x] = p
            sc[_SW * B + x] = 0.0
            sc[_SX * B + x] = 0.0
            sc[_SXX * B + x] = 0.0
            sc[_SY * B + x] = 0.0
            sc[_SXY * B + x] = 0.0
        for k in range(length):
            xk = float(k)
            t0, t1, t2 = wtab[0, length, k], wtab[1, length, k], wtab[2, length, k]
            t3, t4, t5 = wtab[3, length, k], wtab[4, length, k], wtab[5, length, k]
            drow = data[i, k, y, x0:x0 + w]
            for x in range(w):
                p = sc[_PIDX * B + x]
                t = t5
                t = t4 if p == 4.0 else t
                t = t3 if p == 3.0 else t
                t = t2 if p == 2.0 else t
                t = t1 if p == 1.0 else t
                t = t0 if p == 0.0 else t
                wt = t * sc[_INVRN2 * B + x]
                xw = xk * wt
                yv = np.float64(drow[x])
                yv = 0.0 if yv != yv else yv
                sc[_SW * B + x] += wt
                sc[_SX * B + x] += xw
                sc[_SXX * B + x] += xk * xw
                sc[_SY * B + x] += yv * wt
                sc[_SXY * B + x] += yv * xw
        for x in range(w):
            sw = sc[_SW * B + x]
            sx = sc[_SX * B + x]
            den = sw * sc[_SXX * B + x] - sx * sx
            num = sw * sc[_SXY * B + x] - sx * sc[_SY * B + x]
            sl = (num * (1.0 / den)) / tgroup
            numi = 0.0 + sl / sc[_VRSEG * B + x]
            sc[_NUMI * B + x] = numi
            sc[_RNUM * B + x] += numi
            # ivp is never negative or NaN, so adding it when it is 0 changes nothing
            sc[_RIVP * B + x] += sc[_IVP * B + x]
            sc[_RIVR * B + x] += sc[_IVR * B + x]
        orow = i_slope[i, y, x0:x0 + w]
        for x in range(w):
            orow[x] = sc[_NUMI * B + x] * sc[_IVRO * B + x]
        orow = i_vp[i, y, x0:x0 + w]
        for x in range(w):
            orow[x] = sc[_IVPO * B + x]
        orow = i_vr[i, y, x0:x0 + w]
        for x in range(w):
            orow[x] = sc[_IVRO * B + x]
        orow = i_err[i, y, x0:x0 + w]
        for x in range(w):
            orow[x] = sc[_IERR * B + x]
        qrow = i_dq[i, y, x0:x0 + w]
        for x in range(w):
            qrow[x] = pdq[x]

    # --- combine the integrations
    for x in range(w):
        vp = sc[_RIVP * B + x]
        vp = 1.0 / vp if vp > 0.0 else vp
        sc[_RIVP * B + x] = 0.0 if (vp >= LARGE_VARIANCE or vp < 0.0) else vp
        vr = sc[_RIVR * B + x]
        vr = 1.0 / vr if vr > 0.0 else vr
        sc[_RIVR * B + x] = 0.0 if vr >= LARGE_VARIANCE else vr
    orow = r_vp[y, x0:x0 + w]
    for x in range(w):
        orow[x] = sc[_RIVP * B + x]
    orow = r_vr[y, x0:x0 + w]
    for x in range(w):
        orow[x] = sc[_RIVR * B + x]
    orow = r_err[y, x0:x0 + w]
    for x in range(w):
        orow[x] = math.sqrt(sc[_RIVP * B + x] + sc[_RIVR * B + x])
    orow = r_slope[y, x0:x0 + w]
    for x in range(w):
        slope = sc[_RNUM * B + x]
        orow[x] = slope if slope != slope else slope * sc[_RIVR * B + x]
    qrow = r_dq[y, x0:x0 + w]
    for x in range(w):
        qrow[x] = pdq[x]


@njit(cache=True, nogil=True, error_model="numpy")
def ols_fit(y0, y1, data, gdq, pixeldq, gain, rnoise, dark, zeroframe, has_zeroframe,
             suppress1g, tframe, tgroup, nframes, wtab, ops, final,
             r_slope, r_dq, r_vp, r_vr, r_err,
             i_slope, i_dq, i_vp, i_vr, i_err,
             save_opt, ped_tmp, o_slope, o_sigslope, o_vp, o_vr, o_yint, o_sigyint, o_weights,
             o_ped, o_crmag, o_counts):
    """Fit the ramps of rows ``y0 .. y1``; fill the rate (``r_*``) and rateints (``i_*``) arrays.

    With ``save_opt`` also stcal's optional product (``o_*``): per integration and
    segment (axis 1, zero-filled) slope, sigslope, var_poisson, var_rnoise,
    yint, sigyint and weights (1/var_rnoise); the pedestal per integration
    (first group minus the integration's slope times ``ped_tmp``, 0 where
    saturated or NaN); the jump sizes per integration (axis 1); ``o_counts``
    (2, nints, ny, nx) gets the number of segments and of jumps. Every pixel
    then takes the per-pixel path.

    ``rnoise`` is the single-read noise in electrons (``rn_cds * g / sqrt(2 nf)``),
    ``dark`` the average dark current in DN/s, ``tframe``/``tgroup`` the float32
    frame and group times already promoted to float64, ``wtab`` the
    :func:`weight_table` and ``ops``, ``final`` the :func:`row_network` of
    ngroups - 1.

    Each row is processed in blocks of pixels: the median rates of the block
    are computed vectorised over pixels, clean pixels (see
    :func:`_block_clean_fit`) are fitted vectorised too, and only the others
    go through the per-pixel code.

    The function releases the GIL: callers run disjoint row ranges in
    threads (see :func:`webbflow.steps.ramp_fit.fit_ramps`). A numba
    ``prange`` over the rows of this code made the first compilation take
    ~45 s instead of ~12 s, numba re-optimising it in every parallel layer.
    """
    nints, ngroups, ny, nx = data.shape
    t1 = (float(nframes) + 1.0) * tframe / 2.0
    fast = ngroups >= 3 and not save_opt
    med = np.empty((nints, BLOCK), np.float64)
    lbuf = np.empty((ngroups, BLOCK), np.float64)
    sbuf = np.empty((ngroups + 1, BLOCK), np.float64)
    cnt = np.empty(BLOCK, np.int64)
    sc = np.empty(_NSCRATCH * BLOCK, np.float64)
    anyq = np.empty(BLOCK, np.uint8)
    sup = np.empty(nints, np.bool_)
    d = np.empty((nints, ngroups), np.float64)
    q = np.empty((nints, ngroups), np.uint8)
    seg_s = np.empty(ngroups, np.int64)
    seg_l = np.empty(ngroups, np.int64)
    cnt_dnu_sat = np.empty(nints, np.int64)
    cnt_sat = np.empty(nints, np.int64)
    is0 = np.empty(nints, np.bool_)
    iszf = np.empty(nints, np.bool_)
    ivr_int = np.empty(nints, np.float64)
    oq = np.empty(ngroups, np.uint8)
    for y in range(y0, y1):
        for x0 in range(0, nx, BLOCK):
            w = min(BLOCK, nx - x0)
            if ngroups >= 2:
                for i in range(nints):
                    _block_medians(data, gdq, i, y, x0, w, tgroup, ops, final,
                                   lbuf, sbuf, cnt, med[i])
            if fast:
                for xb in range(w):
                    anyq[xb] = 0
                for i in range(nints):
                    for k in range(ngroups):
                        qrow = gdq[i, k, y, x0:x0 + w]
                        for xb in range(w):
                            anyq[xb] |= qrow[xb]
                _block_clean_fit(data, y, x0, w, gain[y, x0:x0 + w], rnoise[y, x0:x0 + w],
                                 dark[y, x0:x0 + w], pixeldq[y, x0:x0 + w], tgroup, wtab,
                                 med, sc, r_slope, r_dq, r_vp, r_vr, r_err,
                                 i_slope, i_dq, i_vp, i_vr, i_err)
            for xb in range(w):
                x = x0 + xb
                if (fast and anyq[xb] == 0 and (pixeldq[y, x] & INVALID) == 0
                        and gain[y, x] > 0.0):
                    continue  # clean: done by _block_clean_fit
                pdq = np.uint32(pixeldq[y, x])
                g = np.float64(gain[y, x])
                if g <= 0.0 or math.isnan(g):
                    pdq |= np.uint32(DNU | NGV)
                rn = np.float64(rnoise[y, x])
                dc = np.float64(dark[y, x])
                rate_dq = pdq
                has_chlo = False

                # --- load the pixel, DQ statistics, 0th-group / ZEROFRAME cases
                for i in range(nints):
                    i_dq[i, y, x] = pdq
                    n_good = 0
                    n_dnu = 0
                    n_ds = 0
                    n_sat = 0
                    jump_det = False
                    pers = False
                    n_good_np = 0
                    for k in range(ngroups):
                        qq = gdq[i, k, y, x]
                        if (qq & NOT_PERS) == 0:
                            n_good_np += 1
                        if qq & CHLO:
                            has_chlo = True
                        q[i, k] = qq
                    sup[i] = suppress1g and n_good_np == 1
                    if sup[i]:
                        # stcal turns one-good-group ramps into zero-group ramps
                        for k in range(ngroups):
                            q[i, k] |= DNU
                    for k in range(ngroups):
                        qq = q[i, k]
                        if qq & JUMP:
                            jump_det = True
                        if qq & PERS:
                            pers = True
                        if qq == 0:
                            n_good += 1
                        elif qq & DNU:
                            n_dnu += 1
                        if qq & INVALID:
                            n_ds += 1
                        if qq & SAT:
                            d[i, k] = np.nan
                            n_sat += 1
                        else:
                            d[i, k] = np.float64(data[i, k, y, x])
                    if save_opt:
                        # jump sizes from the groups as read (before a ZEROFRAME replaces group 0)
                        ncr = 0
                        for k in range(1, ngroups):
                            if q[i, k] & JUMP:
                                o_crmag[i, ncr, y, x] = d[i, k] - d[i, k - 1]
                                ncr += 1
                        o_counts[1, i, y, x] = ncr
                    is0[i] = False
                    iszf[i] = False
                    if not suppress1g:
                        if n_good == 1 and q[i, 0] == 0:
                            is0[i] = True
                        elif n_good == 0 and has_zeroframe:
                            zf = np.float64(zeroframe[i, y, x])
                            if zf != 0.0:
                                d[i, 0] = zf
                                q[i, 0] = 0
                                n_good = 1
                                n_ds -= 1
                                if n_sat == ngroups:
                                    n_sat -= 1
                                if n_dnu == ngroups:
                                    n_dnu -= 1
                                iszf[i] = True
                    cnt_dnu_sat[i] = n_ds
                    cnt_sat[i] = n_sat
                    if jump_det:
                        i_dq[i, y, x] |= np.uint32(JUMP)
                        rate_dq |= np.uint32(JUMP)
                    if pers:
                        i_dq[i, y, x] |= np.uint32(PERS)
                        rate_dq |= np.uint32(PERS)

                # --- median rate for the Poisson variance
                if ngroups == 1:
                    acc = 0.0
                    for i in range(nints):
                        acc += d[i, 0] / t1
                    median_rate = acc / nints
                else:
                    acc = 0.0
                    for i in range(nints):
                        if is0[i]:
                            mr = d[i, 0] / t1
                        elif iszf[i]:
                            mr = d[i, 0] / tframe
                        elif sup[i]:
                            mr = np.nan  # every group made DO_NOT_USE
                        else:
                            mr = med[i, xb]  # from the group DQ and data, like q and d here
                        if math.isnan(mr):
                            mr = 0.0
                        acc += mr
                    median_rate = acc / float(np.float32(nints))
                prate = median_rate + dc if median_rate > 0.0 else dc

                # --- per integration fits
                rate_num = 0.0
                rate_ivp = 0.0
                rate_ivr = 0.0
                dnu_cnt = 0
                sat_cnt = 0
                rate_sat = False
                for i in range(nints):
                    islope = 0.0
                    ivp_out = 0.0
                    ivr_out = 0.0
                    ierr = 0.0
                    idq = i_dq[i, y, x]
                    nseg = 0
                    if q[i, 0] & SAT:
                        idq |= np.uint32(DNU | SAT)
                        islope = np.nan
                    else:
                        nseg = _segments(q[i], seg_s, seg_l)
                    if cnt_dnu_sat[i] == ngroups:
                        idq |= np.uint32(DNU)
                        if cnt_sat[i] == ngroups:
                            idq |= np.uint32(SAT)
                    elif nseg > 0:
                        t0 = _len1_timing(suppress1g, is0[i], iszf[i], t1, tframe, tgroup)
                        ivr = 0.0
                        ivp = 0.0
                        ive = 0.0
                        num = 0.0
                        for s in range(nseg):
                            sl, vp, vr, sigsl, yint, sigyint = _fit_segment(d[i], seg_s[s], seg_l[s], t0,
                                                                            rn, g, prate, tgroup, wtab)
                            if save_opt:
                                o_slope[i, s, y, x] = sl
                                o_sigslope[i, s, y, x] = sigsl
                                o_vp[i, s, y, x] = vp
                                o_vr[i, s, y, x] = vr
                                o_yint[i, s, y, x] = yint
                                o_sigyint[i, s, y, x] = sigyint
                                o_weights[i, s, y, x] = 1.0 / vr
                            ivr += 1.0 / vr
                            if vp > 0.0:
                                ivp += 1.0 / vp
                            ive += 1.0 / (vp + vr)
                            num += sl / vr
                        if ivp > 0.0:
                            ivp_out = 1.0 / ivp
                        if ivp_out >= LARGE_VARIANCE:
                            ivp_out = 0.0
                        ivr_out = 1.0 / ivr
                        if ivr_out >= LARGE_VARIANCE:
                            ivr_out = 0.0
                        if idq & INVALID:
                            islope = np.nan
                            ivp_out = 0.0
                            ivr_out = 0.0
                            ierr = 0.0
                        else:
                            islope = num * ivr_out
                            ve = 1.0 / ive
                            ierr = 0.0 if ve > LARGE_VARIANCE else math.sqrt(ve)
                        if ivp > 0.0:
                            rate_ivp += ivp
                        rate_ivr += ivr
                        rate_num += num
                    if idq & DNU:
                        dnu_cnt += 1
                        islope = np.nan
                    if save_opt:
                        o_counts[0, i, y, x] = nseg
                        ped = 0.0
                        if not idq & SAT:  # stcal: before a partly saturated ramp gets SAT
                            ped = d[i, 0] - islope * ped_tmp
                            if math.isnan(ped):
                                ped = 0.0
                        o_ped[i, y, x] = ped
                    if idq & SAT:
                        sat_cnt += 1
                        islope = np.nan
                    if cnt_sat[i] > 0:
                        idq |= np.uint32(SAT)
                        rate_sat = True
                    i_dq[i, y, x] = idq
                    i_slope[i, y, x] = islope
                    i_vp[i, y, x] = ivp_out
                    i_vr[i, y, x] = ivr_out
                    ivr_int[i] = ivr_out
                    i_err[i, y, x] = ierr

                # --- combine the integrations
                if dnu_cnt == nints:
                    rate_dq |= np.uint32(DNU)
                if sat_cnt == nints:
                    rate_dq |= np.uint32(SAT)
                vp = rate_ivp
                if vp > 0.0:
                    vp = 1.0 / vp
                if vp >= LARGE_VARIANCE or vp < 0.0:
                    vp = 0.0
                vr = rate_ivr
                if vr > 0.0:
                    vr = 1.0 / vr
                if vr >= LARGE_VARIANCE:
                    vr = 0.0
                err = math.sqrt(vp + vr)
                slope = rate_num
                if rate_dq & INVALID:
                    slope = np.nan
                    vp = 0.0
                    vr = 0.0
                    err = 0.0
                if rate_sat:
                    rate_dq |= np.uint32(SAT)
                if not math.isnan(slope):
                    slope = slope * vr
                if has_chlo:
                    # after the slope and ERR, as stcal: only the read-noise variances change
                    v = _chargeloss_var_r(gdq, y, x, nints, suppress1g, is0, iszf, ivr_int, t1, tframe,
                                          tgroup, rn, g, oq, seg_s, seg_l, i_vr)
                    if v >= 0.0:
                        vr = 0.0 if v >= LARGE_VARIANCE else v
                r_slope[y, x] = slope
                r_dq[y, x] = rate_dq
                r_vp[y, x] = vp
                r_vr[y, x] = vr
                r_err[y, x] = err


# rows per task of fit_rows_threaded: small enough to balance two threads on
# uneven rows (saturated stars), large enough to make the dispatch negligible
ROWS_PER_TASK = 32


def fit_rows_threaded(data, *args):
    """Run :func:`ols_fit` over all rows, split across numba's threads (``numba.get_num_threads()``).

    Parameters
    ----------
    data : ndarray, float32, (nints, ngroups, ny, nx)
    *args
        The remaining arguments of :func:`ols_fit` after ``data``.
    """
    ny = data.shape[2]
    nthreads = num_threads()
    if nthreads <= 1 or ny <= ROWS_PER_TASK:
        ols_fit(0, ny, data, *args)
        return
    starts = range(0, ny, ROWS_PER_TASK)
    with ThreadPoolExecutor(max_workers=nthreads) as pool:
        # list() re-raises any error of a task
        list(pool.map(lambda y0: ols_fit(y0, min(y0 + ROWS_PER_TASK, ny), data, *args), starts))

