"""skymatch: sky levels of overlapping images, as jwst's ``skymatch`` step (stcal.skymatch).

Methods (``skymethod``):

- ``local``: each image's (or exposure group's lowest) own sky statistic;
- ``global``: the minimum of the local skies, for every image;
- ``match``: relative offsets from the sky statistics of each pair of images
  (or exposure groups) *in their overlap*, solved by npix-weighted least
  squares; with ``match_down`` the lowest sky is 0 (levels are only lowered);
- ``global+match``: ``match``, then the lowest remaining sky added to all.

As in jwst, the overlap of two images is the intersection of their spherical
bounding polygons (pixel corners); the pixels of each image whose centres
fall inside it (gwcs' polygon scan) give that image's sky in the overlap.
Images of one exposure (several detectors) form a group with one sky.

The sky statistic (``skystat``) is STScI imagestats' (what stcal uses):
``nclip`` iterations of ``lsigma``/``usigma`` clipping around the float32
mean and (n-1) standard deviation, then ``mode`` (peak of a histogram of
``binwidth`` x sigma bins, parabolic interpolation), ``midpt`` (histogram
median), ``median`` or ``mean``.  Matching the statistic number for number
matters: the mode of a sky histogram is what sets the i2d's zero level, and a
Pearson-style mode differs from it by several percent of the sky noise.
Nothing is subtracted unless ``subtract`` is true; jwst records the level and
resample subtracts it.
"""

import logging

import numpy as np

from webbflow.steps._jit import lazy_njit
from webbflow.steps.resample import good_pixel_mask

__all__ = ["imagestats", "scan_polygon", "sky_statistic", "skymatch"]

log = logging.getLogger(__name__)


@lazy_njit(cache=True)  # numba loads when skymatch runs, not when image3 is imported (job start-up)
def _moments_passes(v, clipmin, clipmax):
    # Pass 1: count, sequential float64 sum, min and max of the values within the clip range.
    n, total = 0, 0.0
    gmin, gmax = np.float32(np.inf), np.float32(-np.inf)
    for x in v:
        if x >= clipmin and x <= clipmax:
            n += 1
            total += np.float64(x)
            gmin = min(gmin, x)
            gmax = max(gmax, x)
    if n == 0:
        return 0, 0.0, gmin, gmax, np.float32(0), 0.0
    # The C code starts its running min/max from the first pixel clamped to the clip range.
    vmin = min(np.float32(max(clipmin, v[0])), gmin)
    vmax = max(np.float32(min(clipmax, v[0])), gmax)
    mean = np.float32(total / n)
    # Pass 2: float32 deviations squared in float32, summed in float64 in order.
    sumdiff = 0.0
    for x in v:
        if x >= vmin and x <= vmax:
            d = np.float32(x - mean)
            sumdiff += np.float64(np.float32(d * d))
    return n, total, vmin, vmax, mean, sumdiff


def _clipped_moments(v, clipmin, clipmax):
    """imagestats' computeMean: float32 clip limits, quirky min/max initialisation, (n-1) std.

    Two compiled passes over ``v`` (float32, 1-D) in the C code's order: the numbers of the
    masked numpy version without its full-size masks and copies (36 calls per skymatch)."""
    clipmin, clipmax = np.float32(clipmin), np.float32(clipmax)
    n, _, vmin, vmax, mean, sumdiff = _moments_passes(v, clipmin, clipmax)
    if n == 0:
        return 0, np.nan, np.nan, np.nan, np.nan
    std = np.float32(np.sqrt(sumdiff / (n - 1))) if n > 1 else np.float32(np.nan)
    return n, float(mean), float(std), float(vmin), float(vmax)


def imagestats(values, skystat="mode", nclip=5, lsigma=4.0, usigma=4.0, lower=None, upper=None, binwidth=0.1):
    """Sky statistic and pixel count, as ``stsci.imagestats.ImageStats`` computes them.

    Parameters
    ----------
    values : array_like
        Pixel values (converted to float32; non-finite values must be removed first).
    skystat : {'mode', 'midpt', 'median', 'mean'}
    nclip : int
        Clipping iterations.
    lsigma, usigma : float
        Clipping limits in standard deviations.
    lower, upper : float, optional
        Usable value range (default: the data's range).
    binwidth : float
        Histogram bin width for ``mode``/``midpt``, in standard deviations.

    Returns
    -------
    value : float
        NaN when no pixel is usable.
    npix : int
        Pixels left after clipping (jwst's weight of the value).
    """
    v = np.ascontiguousarray(values, dtype=np.float32).ravel()
    if skystat not in ("mode", "midpt", "median", "mean"):
        raise ValueError(f"skystat must be one of mode, median, midpt, mean, not {skystat!r}")
    if v.size == 0:
        return np.nan, 0
    lo = float(v.min()) if lower is None else float(lower)
    hi = float(v.max()) if upper is None else float(upper)
    if lo > float(v.max()) or hi < float(v.min()) or lo > hi:
        return np.nan, 0
    clipmin, clipmax = lo, hi
    for it in range(nclip + 1):
        n, mean, std, vmin, vmax = _clipped_moments(v, clipmin, clipmax)
        if n <= 0:
            return np.nan, 0
        if it < nclip:
            clipmin = max(lo, mean - lsigma * std)
            clipmax = min(hi, mean + usigma * std)
    if skystat == "mean":
        return mean, n
    if skystat == "median":
        keep = v[(v <= np.float32(clipmax)) & (v >= np.float32(clipmin))] if nclip > 0 else v
        return float(np.median(keep)), n
    hwidth = binwidth * std
    drange = vmax - vmin
    tiny = 10.0 * float(np.finfo(np.float32).eps)
    if not np.isfinite(hwidth) or hwidth < tiny or abs(drange) < tiny or hwidth > drange:
        nbins, dz = 1, drange
    else:
        nbins = int(drange / hwidth) + 1
        dz = drange / (nbins - 1)
    hist = _histogram(v, nbins, dz, vmin)
    if skystat == "mode":
        return _histogram_mode(hist, vmin, hwidth), n
    return _histogram_midpt(hist, vmin, hwidth), n


def _histogram(v, nbins, dz, zero):
    """imagestats' buildHistogram (float32 arithmetic, half-open range)."""
    width = np.float32(dz)
    vmin = np.float32(zero)
    vmax = np.float32(vmin + width * np.float32(nbins))
    edge = np.float32(vmin + width * np.float32(nbins))
    vmax = min(vmax, edge)
    inv = np.float32(1.0) / width if width != 0 else np.float32(np.inf)
    sel = v[(v >= vmin) & (v < vmax)]
    idx = (inv * (sel - vmin)).astype(np.float32).astype(np.int64)
    return np.bincount(idx, minlength=nbins)[:nbins].astype(np.int64)


def _histogram_mode(bins, vmin, hwidth):
    nbins = bins.size
    if nbins == 1:
        return vmin + 0.5 * hwidth
    if nbins == 2:
        if bins[0] > bins[1]:
            return vmin + 0.5 * hwidth
        return vmin + (1.5 if bins[0] < bins[1] else 1.0) * hwidth
    peak = int(np.argmax(bins))
    if peak == 0:
        return vmin + 0.5 * hwidth
    if peak == nbins - 1:
        return vmin + (nbins - 0.5) * hwidth
    dh1 = int(bins[peak] - bins[peak - 1])
    dh2 = int(bins[peak] - bins[peak + 1])
    if dh1 + dh2 == 0:
        return vmin + (peak + 0.5) * hwidth
    mode = peak + 1 + 0.5 * (dh1 - dh2) / (dh1 + dh2)
    return vmin + (mode - 0.5) * hwidth


def _histogram_midpt(bins, vmin, hwidth):
    if bins.size <= 1:
        return float(bins[0]) if bins.size else np.nan
    cum = np.cumsum(bins).astype(np.float32)
    cum = cum / cum[-1]
    lo = int(np.nonzero(cum >= 0.5)[0][0])
    h1 = vmin + lo * hwidth
    hdiff = cum[lo] if lo == 0 else cum[lo] - cum[lo - 1]
    if hdiff == 0:
        return h1
    if lo == 0:
        return h1 + 0.5 / hdiff * hwidth
    return h1 + (0.5 - cum[lo - 1]) / hdiff * hwidth


def sky_statistic(values, skystat="mode", nclip=5, lsigma=4.0, usigma=4.0, lower=None, upper=None, binwidth=0.1):
    """Clipped sky statistic of a sample (NaN when empty); see :func:`imagestats`."""
    v = np.asarray(values, np.float32).ravel()
    return imagestats(v[np.isfinite(v)], skystat, nclip, lsigma, usigma, lower, upper, binwidth)[0]


_ON_ARC_TOL = 1e-10
"""spherical_geometry's ``intersects_point``: C is on arc AB when |AC + CB - AB| < 1e-10 rad."""


def _intersects_point(A, B, C, exact):
    """``exact(A, B, C)`` (spherical_geometry's ``math_util.intersects_point``), the same booleans
    at a fraction of the CPU.

    That ufunc computes the three arc lengths in quad-double precision, ~0.3 ms a point: the
    polygon intersections of a skymatch (each pair of images, both ways) ask it of every graph node
    against every edge, ~0.25 s of a 4-exposure SUB160 image3.  Here the excess AC + CB - AB is
    first computed in double precision from ``atan2(|P x Q|, P . Q)`` lengths (absolute error a few
    1e-15 rad for normalised inputs); a point whose excess is above 10 x the tolerance is off the
    arc beyond doubt, and only the others (the nodes on or near the arc, NaN) go to ``exact``.
    Inputs other than one arc and an (N, 3) array of finite non-zero points go to ``exact`` whole.
    """
    a, b, c = np.asarray(A, float), np.asarray(B, float), np.asarray(C, float)
    if a.shape != (3,) or b.shape != (3,) or c.ndim != 2 or c.shape[1] != 3 or not (
            np.isfinite(a).all() and np.isfinite(b).all() and np.isfinite(c).all()):
        return exact(A, B, C)
    norms = np.linalg.norm(c, axis=1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0 or not norms.all():
        return exact(A, B, C)
    a, b, c = a / na, b / nb, c / norms[:, None]

    def length(p, q):
        return np.arctan2(np.linalg.norm(np.cross(p, q), axis=-1), np.sum(p * q, axis=-1))

    excess = length(a, c) + length(c, b) - length(a, b)
    out = np.zeros(len(c), bool)
    near = ~(excess > 10 * _ON_ARC_TOL)
    # The arc's own end points (every call has them among the graph's nodes) are on it: the exact
    # excess of C = A is length(A, B) - length(A, B) = 0, of C = B the same (20000 random arcs,
    # tiny, near-antipodal and null ones among them, all True); ~0.3 ms of quad precision each.
    raw = np.asarray(C, float)
    ends = near & ((raw == np.asarray(A, float)).all(axis=1) | (raw == np.asarray(B, float)).all(axis=1))
    out[ends] = True
    near &= ~ends
    if near.any():
        out[near] = exact(A, B, np.asarray(C)[near])
    return out


class _fast_on_arc:
    """Within: spherical_geometry's graph calls :func:`_intersects_point` (a context manager that
    restores ``great_circle_arc.intersects_point`` on leaving; a no-op where that function is not
    the C ufunc's wrapper it expects)."""

    def __enter__(self):
        from spherical_geometry import great_circle_arc as gca

        self._gca, self._saved = gca, gca.__dict__.get("intersects_point")
        exact = getattr(getattr(gca, "math_util", None), "intersects_point", None)
        if getattr(gca, "HAS_C_UFUNCS", False) and exact is not None and self._saved is not None:
            gca.intersects_point = lambda A, B, C: _intersects_point(A, B, C, exact)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            self._gca.intersects_point = self._saved
        return False


def scan_polygon(mask, vertices, polygon=None):
    """``gwcs.region.Polygon(True, vertices).scan(mask)``: the same pixels set, a row at a time.

    gwcs' scan-line fill walks an active edge table in Python, each edge's crossing of each scan
    line a small numpy call (~2.5 ms a SUB160 overlap, 12 overlaps a 4-exposure skymatch).  Here
    the same integer polygon (vertices shifted to non-negative coordinates and rounded half to
    even, as gwcs does) has its crossings computed for every scan line at once, with gwcs'
    arithmetic step for step (``t = det / D``, ``x = t * u + x0`` in float64, then ``ceil``), and
    its rules kept: the edges active on line ``y`` are the non-horizontal ones with
    ``ymin <= y < ymax``, on the last line those that end there; crossings sorted and filled in
    pairs with the same (Python) slices of the row.

    Parameters
    ----------
    mask : numpy.ndarray
        2-D boolean array, set in place where the polygon covers a pixel.
    vertices : list of (float, float)
        Closed polygon (last vertex = first), pixel coordinates.
    polygon : type, optional
        ``gwcs.region.Polygon``, used as it is for fewer than 4 vertices (its error).

    Returns
    -------
    numpy.ndarray
        ``mask``.
    """
    if len(vertices) < 4:
        return polygon(True, vertices).scan(mask)
    shiftx = min(0, *(v[0] for v in vertices))
    shifty = min(0, *(v[1] for v in vertices))
    v = np.asarray([(round(x - shiftx), round(y - shifty)) for x, y in vertices])
    shiftx, shifty = round(shiftx), round(shifty)
    x0, y0 = int(v[:, 0].min()), int(v[:, 1].min())
    width, top = int(v[:, 0].max()) - x0, int(v[:, 1].max())
    if width <= 0:
        return mask
    start, stop = v[:-1], v[1:]
    keep = start[:, 1] != stop[:, 1]
    start, stop = start[keep], stop[keep]
    lo, hi = np.minimum(start[:, 1], stop[:, 1]), np.maximum(start[:, 1], stop[:, 1])
    ny, nx = mask.shape
    lines = np.arange(y0, top + 1)
    active = (lo[None, :] <= lines[:, None]) & (lines[:, None] < hi[None, :])
    active[-1] = (lo < top) & (hi == top)  # gwcs does not update its edge table on the last line
    u = stop - start
    det = np.int64(width) * (start[None, :, 1] - lines[:, None])
    d = -u[:, 1] * np.int64(width)
    with np.errstate(all="ignore"):
        cross = np.ceil(det / d[None, :] * u[None, :, 0] + start[None, :, 0])
    for k, y in enumerate(lines.tolist()):
        ysh = y + shifty
        if ysh < 0 or ysh >= ny or not active[k].any():
            continue
        xs = np.sort(cross[k, active[k]].astype(np.int64)).tolist()
        row = mask[ysh]
        for i, j in zip(xs[::2], xs[1::2]):
            row[max(0, i + shiftx):min(j + shiftx, nx - 1) + 1] = True
    return mask


class _Footprint:
    """One image's data, usable-pixel mask, WCS and spherical bounding polygon."""

    def __init__(self, image, good, stepsize=None):
        from spherical_geometry.polygon import SphericalPolygon

        self.image, self.good = image, good
        ny, nx = image.data.shape
        n = 2 if stepsize is None else None
        nxs = n or max(2, int(np.ceil((nx + 1.0) / stepsize)))
        nys = n or max(2, int(np.ceil((ny + 1.0) / stepsize)))
        xs = np.linspace(-0.5, nx - 0.5, nxs)
        ys = np.linspace(-0.5, ny - 0.5, nys)[1:-1]
        # Pixel corners, counter-clockwise from the lower left, closed.
        bx = np.concatenate([xs, np.full(ys.size, nx - 0.5), xs[::-1], np.full(ys.size, -0.5), xs[:1]])
        by = np.concatenate([np.full(xs.size, -0.5), ys, np.full(xs.size, ny - 0.5), ys[::-1], [-0.5]])
        ra, dec = image.wcs(bx, by, with_bounding_box=False)
        ra[-1], dec[-1] = ra[0], dec[0]
        self.polygon = SphericalPolygon.from_radec(ra, dec)
        self._inverse = False  # not built yet

    def invert(self, ra, dec):
        """Detector pixels of sky points: ``image.wcs.invert(ra, dec, with_bounding_box=False)``.

        gwcs builds the inverse of the whole pipeline (a new compound model, a few ms) on every
        ``invert``; an image is inverted once per overlapping image, so the model is built once
        here and evaluated as ``invert`` evaluates it (plain float coordinates, a transform without
        units: the same call, the same values).  A WCS with units or no analytic inverse goes
        through ``invert`` itself.
        """
        if self._inverse is False:
            try:
                inverse = self.image.wcs.backward_transform
            except NotImplementedError:
                inverse = None
            self._inverse = inverse if inverse is not None and not inverse.uses_quantity else None
        if self._inverse is None:
            return self.image.wcs.invert(ra, dec, with_bounding_box=False)
        return self._inverse(ra, dec, with_bounding_box=False, fill_value=np.nan)

    def overlap(self, other, shared=None):
        """(intersection polygon, its area) of this footprint with ``other``.

        ``shared``: a dict of the intersections already made, by pair of footprints.  The other
        image's side of a pair (jwst intersects each pair both ways) takes the same polygon: the
        intersection of two polygons is one region, and spherical_geometry gives its vertices bit
        for bit either way (the demo's 24 pairs; its area in the last bits, used only to tell an empty
        overlap), so each image's pixels inside it are the same, at half the polygon CPU.  A pair
        whose intersection failed is not shared: each side keeps its own polygon, as jwst does.
        """
        hit = None if shared is None else shared.get((id(other), id(self)))
        if hit is not None:
            return hit
        try:
            with _fast_on_arc():
                inter = self.polygon.intersection(other.polygon)
        except Exception:  # nearly identical polygons can defeat spherical_geometry; jwst keeps its own
            return self.polygon.copy(), None
        found = (inter, abs(inter.area()))
        if shared is not None:
            shared[(id(self), id(other))] = found
        return found

    def overlap_sky(self, others, stat, shared=None):
        """(sky, npix, area) of this image inside its intersection with ``others`` (footprints);
        ``shared``: as for :meth:`overlap`."""
        from gwcs import region

        fill = np.zeros(self.image.data.shape, bool)
        area, pieces = 0.0, []
        for other in others:
            inter, a = self.overlap(other, shared)
            if a is None:
                a = abs(inter.area())
            if a == 0.0:
                continue
            area += a
            pieces += list(inter.to_radec())
        if area == 0.0:
            return None, 0, 0.0
        for ra, dec in pieces:
            if len(ra) < 4:
                continue
            x, y = self.invert(ra, dec)
            fill = scan_polygon(fill, list(zip(x, y)), region.Polygon)
        fill &= self.good
        if not fill.any():
            return None, 0, 0.0
        sky, npix = imagestats(self.image.data[fill], **stat)
        if not np.isfinite(sky):
            return None, 0, 0.0
        return sky, npix, area


def _group_overlap_sky(group, other, stat, shared=None):
    """npix-weighted sky of a group's members in their overlap with the other group (``shared``: the
    intersections made so far, :meth:`_Footprint.overlap`)."""
    wsky, weight, area = 0.0, 0, 0.0
    for member in group:
        sky, npix, a = member.overlap_sky(other, stat, shared)
        area += a
        if sky is not None and npix > 0:
            wsky += sky * npix
            weight += npix
    if weight == 0 or area == 0.0:
        return None, weight, area
    return wsky / weight, weight, area


def _match(groups, stat):
    """Sky deltas of exposure groups (NaN where a group overlaps nothing), before match_down/up."""
    ns = len(groups)
    a = np.zeros((ns, ns))
    w = np.zeros((ns, ns))
    shared = {}
    for i in range(ns):
        for j in range(i + 1, ns):
            s1, w1, area1 = _group_overlap_sky(groups[i], groups[j], stat, shared)
            s2, w2, area2 = _group_overlap_sky(groups[j], groups[i], stat, shared)
            if area1 == 0.0 or area2 == 0.0 or s1 is None or s2 is None:
                continue
            a[j, i], w[j, i], a[i, j], w[i, j] = s1, w1, s2, w2
    wm = 0.5 * (w + w.T)
    rows, rhs, used = [], [], np.zeros(ns, bool)
    for i in range(ns):
        for j in range(i + 1, ns):
            if w[i, j] > 0 and w[j, i] > 0:
                row = np.zeros(ns)
                row[i], row[j] = wm[i, j], -wm[i, j]
                rows.append(row)
                rhs.append(wm[i, j] * (a[j, i] - a[i, j]))
                used[[i, j]] = True
    if not rows:
        log.warning("no overlapping image pairs: sky levels set to 0")
        return np.full(ns, np.nan)
    k = np.array(rows)
    if np.linalg.matrix_rank(k, 1.0e-12) < ns - 1:
        log.warning("fewer independent overlaps than images: sky matched within connected subsets only")
    deltas = np.linalg.pinv(k, rcond=1.0e-12) @ np.array(rhs)
    deltas[~used] = np.nan
    return deltas


def skymatch(images, out_wcs=None, out_shape=None, *, skymethod="match", match_down=True, subtract=False,
             skystat="mode", dqbits=None, lower=None, upper=None, nclip=5, lsigma=4.0, usigma=4.0, binwidth=0.1,
             stepsize=None):
    """Measure (and optionally subtract) the sky of each image.

    Parameters
    ----------
    images : list of webbflow.steps.resample.ImageInput
        ``image.sky`` is set (and ``image.data`` lowered when ``subtract``).
        Images with the same ``group`` (one exposure) share one sky.
    out_wcs, out_shape :
        Unused (overlaps come from the images' own footprints, as in jwst);
        kept so callers that pass the resample grid still work.
    skymethod : {'local', 'global', 'match', 'global+match'}
    match_down : bool
    subtract : bool
    skystat, nclip, lsigma, usigma, lower, upper, binwidth :
        See :func:`imagestats`.
    dqbits : int, optional
        Good DQ bits (default: all but DO_NOT_USE and NON_SCIENCE).
    stepsize : int, optional
        Spacing of bounding-polygon vertices along the edges (default: corners only).

    Returns
    -------
    list of float
        The sky level of each image (input units).
    """
    if skymethod not in ("local", "global", "match", "global+match"):
        raise ValueError(f"skymethod must be local, global, match or global+match, not {skymethod!r}")
    stat = dict(skystat=skystat, nclip=nclip, lsigma=lsigma, usigma=usigma, lower=lower, upper=upper,
                binwidth=binwidth)
    feet = []
    for im in images:
        good = (good_pixel_mask(im.dq) if dqbits is None else good_pixel_mask(im.dq, dqbits)) & np.isfinite(im.data)
        feet.append(_Footprint(im, good, stepsize))
    order, members = [], {}
    for k, im in enumerate(images):
        key = getattr(im, "group", None) or f"#{k}"
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(k)
    groups = [[feet[k] for k in members[key]] for key in order]
    levels = np.zeros(len(groups))

    def own_sky(group):
        # A group's own sky is its lowest member's (jwst's SkyGroup without overlap).
        skies = [imagestats(f.image.data[f.good], **stat)[0] for f in group]
        skies = [s for s in skies if np.isfinite(s)]
        return min(skies) if skies else np.nan

    if skymethod in ("match", "global+match"):
        deltas = _match(groups, stat)
        good = np.isfinite(deltas)
        if good.any():
            deltas[good] -= deltas[good].min() if match_down else deltas[good].max()
        levels = np.where(good, deltas, 0.0)
    if skymethod in ("global", "global+match"):
        rest = [own_sky(g) - lv for g, lv in zip(groups, levels)]
        rest = [r for r in rest if np.isfinite(r)]
        levels = levels + (min(rest) if rest else 0.0)
    elif skymethod == "local":
        levels = np.array([own_sky(g) for g in groups])
        levels = np.where(np.isfinite(levels), levels, 0.0)
    out = [0.0] * len(images)
    for key, level in zip(order, levels):
        for k in members[key]:
            out[k] = float(level)
    for im, level in zip(images, out):
        log.info("%s: sky %.6g", im.name, level)
        if subtract:
            im.data = im.data - np.float32(level)
            im.sky = 0.0
        else:
            im.sky = level
    return out
