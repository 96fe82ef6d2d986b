"""Compiled per-pixel kernel of the OLS ramp fit (stcal 1.20 ``OLS_C`` semantics).

The kernel restates, pixel by pixel, what ``stcal/ramp_fitting/src/slope_fitter.c``
computes: segment finding, the SNR-dependent "optimal" weights, the special
cases for one- and two-group segments, the 1/var_rnoise combination of
segments and integrations (stcal >= 1.19) and the variance bookkeeping.
Arithmetic is done in float64 like the C code (which uses ``double``), with the
single exception that the weight power is evaluated in float32 (``powf``).
"""

import math

import numpy as np
from numba import njit, prange

# JWST DQ bits used here (see webbflow.dqflags); numba needs them as globals.
DNU = 1
SAT = 2
JUMP = 4
PERS = 32
NGV = 524288
INVALID = DNU | SAT
NOT_PERS = 0xFF & ~PERS

# Variances at or above this are treated as "no information" and zeroed.
LARGE_VARIANCE = 1.0e6


@njit(cache=True, error_model="numpy")
def _nan_median_sorted(buf, n):
    """Median of the finite values of buf[:n] (sorted in place, NaN last)."""
    # insertion sort with NaN treated as the largest value
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        if math.isnan(v):
            continue
        while j >= 0 and (math.isnan(buf[j]) or buf[j] > v):
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    m = 0
    while m < n and not math.isnan(buf[m]):
        m += 1
    if m == 0:
        return np.nan
    h = m >> 1
    if m & 1:
        return buf[h]
    return (buf[h] + buf[h - 1]) / 2.0


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


@njit(cache=True, error_model="numpy")
def _fit_segment(d, start, length, integ_t0, rn, gain, prate, tgroup, wtab):
    """Fit one segment; return (slope, var_p, var_r).

    ``d`` is the integration's data (float64, SAT groups NaN); ``integ_t0`` is the
    timing of a length-1 segment (one-group time, frame time or group time).
    ``prate`` is the Poisson rate (median rate + dark, or dark alone).
    """
    if length == 1:
        t = integ_t0
        slope = d[start] / t
        var_p = prate / (t * gain)
        rnum = rn / t
        var_r = (12.0 * rnum * rnum) / (6.0 * gain * gain)
        return slope, var_p, var_r
    if length == 2:
        slope = (d[start + 1] - d[start]) / tgroup
        var_p = prate / (tgroup * gain)
        rnum = rn / tgroup
        var_r = (12.0 * rnum * rnum) / (6.0 * gain * gain)
        return slope, var_p, var_r

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
    slope = (num * (1.0 / den)) / tgroup
    var_p = prate / (tgroup * gain * (length - 1.0))
    if gain <= 0.0 or math.isnan(gain):
        var_r = 0.0
    else:
        rnum = rn / tgroup
        var_r = (12.0 * rnum * rnum) / ((length * length * length - length) * gain * gain)
    return slope, var_p, var_r


@njit(cache=True, parallel=True, error_model="numpy")
def ols_fit(data, gdq, pixeldq, gain, rnoise, dark, zeroframe, has_zeroframe,
            suppress1g, tframe, tgroup, nframes, wtab,
            r_slope, r_dq, r_vp, r_vr, r_err,
            i_slope, i_dq, i_vp, i_vr, i_err):
    """Fit every pixel's ramp; fill the rate (``r_*``) and rateints (``i_*``) arrays.

    ``rnoise`` is the single-read noise in electrons (``rn_cds * g / sqrt(2 nf)``),
    ``dark`` the average dark current in DN/s, ``tframe``/``tgroup`` the float32
    frame and group times already promoted to float64.
    """
    nints, ngroups, ny, nx = data.shape
    t1 = (float(nframes) + 1.0) * tframe / 2.0
    for y in prange(ny):
        d = np.empty((nints, ngroups), np.float64)
        q = np.empty((nints, ngroups), np.uint8)
        loc = np.empty(max(ngroups, 1), np.float64)
        seg_s = np.empty(ngroups, np.int64)
        seg_l = np.empty(ngroups, np.int64)
        cnt_dnu_sat = np.empty(nints, np.int64)
        cnt_sat = np.empty(nints, np.int64)
        is0 = np.empty(nints, np.bool_)
        iszf = np.empty(nints, np.bool_)
        for x in range(nx):
            pdq = np.uint32(pixeldq[y, x])
            g = float(gain[y, x])
            if g <= 0.0 or math.isnan(g):
                pdq |= np.uint32(DNU | NGV)
            rn = float(rnoise[y, x])
            dc = float(dark[y, x])
            rate_dq = pdq

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
                    q[i, k] = qq
                if suppress1g and n_good_np == 1:
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
                        d[i, k] = float(data[i, k, y, x])
                is0[i] = False
                iszf[i] = False
                if not suppress1g:
                    if n_good == 1 and q[i, 0] == 0:
                        is0[i] = True
                    elif n_good == 0 and has_zeroframe:
                        zf = float(zeroframe[i, y, x])
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
                    else:
                        for k in range(ngroups):
                            if q[i, k] & DNU:
                                loc[k] = np.nan
                            else:
                                loc[k] = d[i, k] / tgroup
                        loc0 = loc[0]
                        all_nan = True
                        for k in range(ngroups - 1):
                            if q[i, k + 1] & JUMP:
                                loc[k] = np.nan
                            else:
                                loc[k] = loc[k + 1] - loc[k]
                            if not math.isnan(loc[k]):
                                all_nan = False
                        if all_nan and not math.isnan(loc0):
                            loc[0] = loc0
                        mr = _nan_median_sorted(loc, ngroups - 1)
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
                    # segments: runs of good groups, led by a JUMP-only group
                    in_seg = False
                    start = 0
                    maxlen = 0
                    for k in range(ngroups + 1):
                        good = k < ngroups and (q[i, k] & NOT_PERS) == 0
                        if good:
                            if not in_seg:
                                if k > 0 and (q[i, k - 1] & NOT_PERS) == JUMP:
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
                if cnt_dnu_sat[i] == ngroups:
                    idq |= np.uint32(DNU)
                    if cnt_sat[i] == ngroups:
                        idq |= np.uint32(SAT)
                elif nseg > 0:
                    if (not suppress1g) and is0[i]:
                        t0 = t1
                    elif (not suppress1g) and iszf[i]:
                        t0 = tframe
                    else:
                        t0 = tgroup
                    ivr = 0.0
                    ivp = 0.0
                    ive = 0.0
                    num = 0.0
                    for s in range(nseg):
                        sl, vp, vr = _fit_segment(d[i], seg_s[s], seg_l[s], t0, rn, g,
                                                  prate, tgroup, wtab)
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
            r_slope[y, x] = slope
            r_dq[y, x] = rate_dq
            r_vp[y, x] = vp
            r_vr[y, x] = vr
            r_err[y, x] = err
