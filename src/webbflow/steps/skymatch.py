"""skymatch: sky levels of overlapping images, as jwst's ``skymatch`` step.

Methods (``skymethod``):

- ``local``: each image's own sky statistic;
- ``global``: the minimum of the local skies, for every image;
- ``match``: relative offsets from the differences of the sky statistics of
  each pair of images *in their overlap*, solved by least squares; with
  ``match_down`` the lowest sky is 0 (levels are only ever lowered);
- ``global+match``: ``match``, then the global sky of the matched images added.

The overlap of two images is found on a common output grid (the image3
resample grid): pixels of each image are mapped into it and an output pixel
belongs to the overlap when both images reach it with usable pixels.  jwst
intersects the images' sky polygons instead; the statistic is the same.

The sky statistic (``skystat``) is computed after ``nclip`` iterations of
``lsigma``/``usigma`` clipping: ``mean``, ``median``, ``mode`` (Pearson:
3 median - 2 mean, the stsci.imagestats default fallback), or ``midpt``
(= median here).  Nothing is subtracted unless ``subtract`` is true; jwst
records the level and resample subtracts it.
"""

import logging

import numpy as np

from webbflow.steps.resample import good_pixel_mask, pixmap

__all__ = ["sky_statistic", "skymatch"]

log = logging.getLogger(__name__)


def sky_statistic(values, skystat="mode", nclip=5, lsigma=4.0, usigma=4.0, lower=None, upper=None):
    """Clipped sky statistic of a 1-D sample (NaN when empty).

    Parameters
    ----------
    values : array_like
    skystat : {'mode', 'median', 'midpt', 'mean'}
    nclip : int
    lsigma, usigma : float
        Lower and upper clipping limits in standard deviations.
    lower, upper : float, optional
        Values outside are ignored before clipping.
    """
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if lower is not None:
        v = v[v >= lower]
    if upper is not None:
        v = v[v <= upper]
    for _ in range(nclip):
        if v.size < 3:
            break
        m, s = v.mean(), v.std()
        keep = (v >= m - lsigma * s) & (v <= m + usigma * s)
        if keep.all():
            break
        v = v[keep]
    if v.size == 0:
        return np.nan
    if skystat == "mean":
        return float(v.mean())
    if skystat in ("median", "midpt"):
        return float(np.median(v))
    if skystat == "mode":
        return float(3 * np.median(v) - 2 * v.mean())
    raise ValueError(f"skystat must be one of mode, median, midpt, mean, not {skystat!r}")


def _footprint_index(image, out_wcs, out_shape, good):
    """Flat output-grid index of each usable input pixel (nearest output pixel)."""
    pmap = pixmap(image.wcs, out_wcs, image.data.shape)
    x = np.rint(pmap[..., 0])
    y = np.rint(pmap[..., 1])
    ok = good & np.isfinite(x) & np.isfinite(y) & (x >= 0) & (y >= 0) & (x < out_shape[1]) & (y < out_shape[0])
    return (y[ok] * out_shape[1] + x[ok]).astype(np.int64), ok


def skymatch(images, out_wcs, out_shape, *, skymethod="match", match_down=True, subtract=False,
             skystat="mode", dqbits=None, lower=None, upper=None, nclip=5, lsigma=4.0, usigma=4.0):
    """Measure (and optionally subtract) the sky of each image.

    Parameters
    ----------
    images : list of webbflow.steps.resample.ImageInput
        ``image.sky`` is set (and ``image.data`` lowered when ``subtract``).
    out_wcs, out_shape :
        The common grid used to find overlaps.
    skymethod : {'local', 'global', 'match', 'global+match'}
    match_down : bool
    subtract : bool
    skystat, nclip, lsigma, usigma, lower, upper :
        See :func:`sky_statistic`.
    dqbits : int, optional
        Good DQ bits (default: all but DO_NOT_USE and NON_SCIENCE).

    Returns
    -------
    list of float
        The sky level of each image (input units).
    """
    stat = dict(skystat=skystat, nclip=nclip, lsigma=lsigma, usigma=usigma, lower=lower, upper=upper)
    goods = [(good_pixel_mask(im.dq) if dqbits is None else good_pixel_mask(im.dq, dqbits)) & np.isfinite(im.data)
             for im in images]
    local = [sky_statistic(im.data[g], **stat) for im, g in zip(images, goods)]
    if skymethod == "local":
        levels = local
    elif skymethod == "global":
        levels = [float(np.nanmin(local))] * len(images)
    elif skymethod in ("match", "global+match"):
        levels = _match(images, goods, out_wcs, out_shape, stat, match_down)
        if skymethod == "global+match":
            rest = [sky_statistic(im.data[g] - lv, **stat) for im, g, lv in zip(images, goods, levels)]
            levels = [lv + float(np.nanmin(rest)) for lv in levels]
    else:
        raise ValueError(f"skymethod must be local, global, match or global+match, not {skymethod!r}")
    for im, level in zip(images, levels):
        level = 0.0 if not np.isfinite(level) else float(level)
        log.info("%s: sky %.6g", im.name, level)
        if subtract:
            im.data = im.data - np.float32(level)
            im.sky = 0.0
        else:
            im.sky = level
    return [float(lv) if np.isfinite(lv) else 0.0 for lv in levels]


def _match(images, goods, out_wcs, out_shape, stat, match_down):
    n = len(images)
    if n == 1:
        return [0.0]
    index = [_footprint_index(im, out_wcs, out_shape, g) for im, g in zip(images, goods)]
    rows, rhs = [], []
    for i in range(n):
        for j in range(i + 1, n):
            common = np.intersect1d(index[i][0], index[j][0], assume_unique=False)
            if common.size < 10:
                continue
            si = sky_statistic(images[i].data[index[i][1]][np.isin(index[i][0], common)], **stat)
            sj = sky_statistic(images[j].data[index[j][1]][np.isin(index[j][0], common)], **stat)
            if not (np.isfinite(si) and np.isfinite(sj)):
                continue
            row = np.zeros(n)
            row[i], row[j] = 1.0, -1.0
            rows.append(row)
            rhs.append(si - sj)
    if not rows:
        log.warning("no overlapping image pairs: sky levels set to 0")
        return [0.0] * n
    # The differences fix the levels up to a constant: pin it by the least-squares minimum norm
    # solution, then shift so the lowest sky is 0 (match_down) or the highest is 0.
    levels, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    levels = levels - (levels.min() if match_down else levels.max())
    return [float(v) for v in levels]
