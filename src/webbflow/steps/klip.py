"""klip for coronagraphy, as jwst 3.0's ``coron.klip`` (reference-star differential imaging).

The Karhunen-Loeve basis of the aligned PSF planes (each mean-subtracted, float64):
``eigh(cov(R))`` sorted by decreasing eigenvalue, ``Z = V.T R``, each row normalised, the first
``truncate`` kept.  Each science integration ``t`` (float64, not mean-subtracted) gives
``psfsub = (t - mean(t)) - Z.T (Z t)``; ERR is the standard deviation over the PSF planes of their
own residuals ``R_k - Z.T (Z R_k)`` (ddof 0), the same for every integration.  With
``truncate >= npsf`` that is full-rank projection and ERR is round-off carrying no noise
information (jwst's too).  No NaN handling: jwst's median replacement runs first.

jwst rebuilds the basis for every integration; it depends on the PSF planes only, so it is built
once per science exposure here (bit-identical, most of jwst's klip time).
"""

import logging

import numpy as np

__all__ = ["KLBasis", "REFERENCE_MODES", "combine_rolls", "derotate", "footprint", "kl_basis", "klip", "klip_sectors",
           "sector_masks"]

log = logging.getLogger(__name__)


class KLBasis:
    """A truncated KL basis and the ERR image it implies.

    Attributes
    ----------
    vectors : ndarray
        (nmodes, npix) float64, unit rows.
    eigenvalues : ndarray
        All eigenvalues of the reference covariance, decreasing.
    err : ndarray
        (ny, nx) float64, std of the references' residuals.
    """

    def __init__(self, vectors, eigenvalues, err):
        self.vectors = vectors
        self.eigenvalues = eigenvalues
        self.err = err


def kl_basis(refs, truncate=50):
    """Build the KL basis of PSF reference planes (jwst's ``karhunen_loeve_transform``, normalised).

    Parameters
    ----------
    refs : ndarray
        (npsf, ny, nx) aligned PSF planes (finite).
    truncate : int
        KL modes kept (jwst's ``truncate``, default 50).

    Returns
    -------
    KLBasis
    """
    if truncate < 0:
        raise ValueError(f"klip truncate must be >= 0, not {truncate}")
    npsf, ny, nx = refs.shape
    r = refs.astype(np.float64).reshape(npsf, ny * nx)
    for k in range(npsf):  # row by row, as jwst (np.mean per row, float64)
        r[k] -= np.mean(r[k], dtype=np.float64)
    eigval, eigvect = np.linalg.eigh(np.cov(r))
    order = eigval.argsort()[::-1]
    eigval, eigvect = eigval[order], eigvect[:, order]
    z = np.dot(eigvect.T, r)
    for k in range(len(z)):
        z[k] /= np.linalg.norm(z[k])
    z = z[:truncate]
    # The residuals one reference at a time with np.dot, as jwst: with full-rank bases they are
    # round-off, which a differently ordered product (one matrix multiply) would not reproduce.
    # Each overwrites its reference's row (z is built; nothing reads r again), and their std over
    # the references goes by blocks of pixels (numpy reduces axis 0 row by row, whatever the
    # columns: the same numbers), so neither needs another (npsf, npix) float64 array.
    for k in range(npsf):
        r[k] -= np.dot(z.T, np.dot(r[k], z.T))
    err = np.empty(ny * nx)
    step = 1 << 14
    for a in range(0, ny * nx, step):
        err[a:a + step] = np.std(r[:, a:a + step], 0)
    err = err.reshape(ny, nx)
    if truncate >= npsf:
        log.info("klip: truncate %d >= %d PSF planes: full-rank projection, ERR is round-off", truncate, npsf)
    return KLBasis(z, eigval, err)


def klip(science, basis):
    """Subtract the KL projection of each science integration.

    Parameters
    ----------
    science : ndarray
        (nints, ny, nx) science cube (after bad-pixel replacement).
    basis : KLBasis
        From :func:`kl_basis`.

    Returns
    -------
    data, err : ndarray
        (nints, ny, nx) float32: PSF-subtracted integrations and jwst's ERR (the basis' ERR in every
        plane).
    """
    nints, ny, nx = science.shape
    z = basis.vectors
    out = np.empty(science.shape, np.float32)
    for i in range(nints):
        t = science[i].astype(np.float64).reshape(-1)
        model = np.dot(z.T, np.dot(t, z.T))
        sub = t - t.mean()
        sub -= model
        out[i] = sub.reshape(ny, nx)
    err = np.broadcast_to(basis.err.astype(np.float32), science.shape).copy()
    return out, err


# --------------------------------------------------------------------------------------------
# Beyond jwst: KLIP in annular sectors with RDI + ADI references and several KL cut-offs
# (pyKLIP's klip_math / klip_dataset, coron-algorithms.md §4).  Not used by the jwst line.
# --------------------------------------------------------------------------------------------

REFERENCE_MODES = ("adi+rdi", "rdi", "adi")


def sector_masks(shape, center, iwa, owa, annuli=1, subsections=1):
    """Boolean masks of KLIP's optimisation/subtraction sectors.

    Parameters
    ----------
    shape : tuple
        (ny, nx) image shape.
    center : (float, float)
        Star position (x, y), 0-based pixels.
    iwa, owa : float
        Inner and outer radius (pixels) of the region reduced; ``owa`` None means the largest
        radius inside the image.
    annuli, subsections : int
        Equal-width annuli between ``iwa`` and ``owa``, each cut into equal angular wedges
        starting at -pi (pyKLIP's ``annuli_spacing='constant'`` and ``subsections``).

    Returns
    -------
    list of (ndarray, float)
        One (boolean mask, mean radius of its pixels) per non-empty sector.
    """
    ny, nx = shape
    y, x = np.indices(shape, dtype=np.float64)
    r = np.hypot(x - center[0], y - center[1])
    phi = np.arctan2(y - center[1], x - center[0])
    if owa is None:
        owa = min(center[0], nx - 1 - center[0], center[1], ny - 1 - center[1])
    edges = np.linspace(iwa, owa, int(annuli) + 1)
    wedges = np.linspace(-np.pi, np.pi, int(subsections) + 1)
    out = []
    for a in range(int(annuli)):
        ring = (r >= edges[a]) & ((r < edges[a + 1]) | ((a == annuli - 1) & (r <= edges[a + 1])))
        for s in range(int(subsections)):
            sector = ring & (phi >= wedges[s]) & ((phi < wedges[s + 1]) | (s == subsections - 1))
            if sector.any():
                out.append((sector, float(r[sector].mean())))
    return out


def _centred(rows, bad):
    """Rows minus their NaN-aware means, NaNs set to 0 (nanmean's copies only where there are NaNs)."""
    if not bad.any():
        return rows - rows.mean(axis=1, keepdims=True)
    filled = np.where(bad, 0.0, rows)
    n = np.maximum((~bad).sum(axis=1, keepdims=True), 1)
    return np.where(bad, 0.0, filled - filled.sum(axis=1, keepdims=True) / n)


def _klip_project(targets, refs, numbasis, keep=None):
    """pyKLIP's klip_math on one sector: every cut-off of ``numbasis`` at once.

    ``targets`` (nt, npix) and ``refs`` (nr, npix) float64 are mean-subtracted row by row
    (NaN-aware; NaNs then count as 0).  Returns (len(numbasis), nt, npix), NaN where a cut-off asks
    for more modes than the references support; with ``keep`` (indices into the sector's pixels)
    only those pixels' residuals, (len(numbasis), nt, len(keep)) -- the basis and the projection
    coefficients are still those of the whole sector.
    """
    t_nan = ~np.isfinite(targets)
    t = _centred(targets, t_nan)
    rr = _centred(refs, ~np.isfinite(refs))
    eigval, eigvect = np.linalg.eigh(rr @ rr.T)
    order = eigval.argsort()[::-1]
    eigval, eigvect = eigval[order], eigvect[:, order]
    # modes with non-positive eigenvalues carry no information (pyKLIP drops them the same way)
    good = eigval > eigval[0] * 1e-12 if eigval[0] > 0 else np.zeros(len(eigval), bool)
    kmax = min(int(good.sum()), int(max(numbasis)))
    z = eigvect[:, :kmax].T @ rr
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    coef = t @ z.T  # (nt, kmax)
    if keep is not None:
        t, t_nan, z = t[:, keep], t_nan[:, keep], z[:, keep]
    out = np.full((len(numbasis),) + t.shape, np.nan)
    for i, nb in enumerate(numbasis):
        if nb <= kmax:
            out[i] = t - coef[:, :nb] @ z[:nb]
    out[:, t_nan] = np.nan
    return out


def klip_sectors(rolls, angles, psf_refs, center, numbasis=(1, 2, 5, 10, 20, 50), iwa=0.0, owa=None,
                 annuli=1, subsections=1, references="adi+rdi", minmove=1.0, windows=None):
    """KLIP every integration of every roll in sectors, with RDI and ADI reference selection.

    For roll ``k`` the reference library of each sector is the aligned PSF-reference planes
    (``rdi``) and the integrations of the other rolls (``adi``) whose rotation moves a source at
    the sector's mean radius ``r`` by ``2 r |sin(dtheta / 2)| >= minmove`` pixels (pyKLIP's
    ``movement`` criterion); ``adi+rdi`` uses both.  Each science integration is projected on the
    first ``n`` KL modes of its sector's library for every ``n`` in ``numbasis`` at once.

    Parameters
    ----------
    rolls : list of ndarray
        Per roll, the (nints, ny, nx) science cube, the star at ``center`` in every roll (register
        the rolls first, e.g. with :func:`webbflow.steps.align_refs.align_refs`).
    angles : sequence of float
        Per roll, the angle (degrees, counter-clockwise) from the detector +y axis to north.
    psf_refs : list of ndarray
        Per roll, the (npsf, ny, nx) PSF-reference planes aligned on that roll.
    center : (float, float)
        Star position (x, y), 0-based pixels.
    numbasis : sequence of int
        KL cut-offs.
    iwa, owa, annuli, subsections
        The sectors (:func:`sector_masks`).
    references : {"adi+rdi", "rdi", "adi"}
        Reference library.
    minmove : float
        ADI exclusion criterion (pixels of rotation at the sector's mean radius).
    windows : sequence of (y0, y1, x0, x1), optional
        North-up boxes that :func:`combine_rolls` will be asked for (an injection-recovery run):
        residuals only at the detector pixels those boxes read in each roll (:func:`footprint`),
        NaN elsewhere; the KL bases and projections are the whole sectors'.

    Returns
    -------
    list of ndarray
        Per roll, (len(numbasis), nints, ny, nx) float64 residuals; NaN outside the sectors and
        where a sector's library has fewer modes than the cut-off.
    """
    if references not in REFERENCE_MODES:
        raise ValueError(f"klip references must be one of {REFERENCE_MODES}, not {references!r}")
    numbasis = [int(n) for n in np.atleast_1d(numbasis)]
    if min(numbasis) < 1:
        raise ValueError(f"klip numbasis must be >= 1, not {numbasis}")
    shape = rolls[0].shape[-2:]
    sectors = sector_masks(shape, center, iwa, owa, annuli, subsections)
    out = [np.full((len(numbasis),) + r.shape, np.nan) for r in rolls]
    flat = [np.asarray(r, np.float64).reshape(r.shape[0], -1) for r in rolls]
    rdi = [np.asarray(p, np.float64).reshape(p.shape[0], -1) for p in psf_refs]
    needed = None
    if windows is not None:
        needed = []
        for angle in angles:
            need = np.zeros(shape, bool)
            y0, y1, x0, x1 = footprint(windows, angle, center, shape)
            need[y0:y1, x0:x1] = True
            needed.append(need.ravel())
    for mask, radius in sectors:
        idx = np.flatnonzero(mask)
        for k in range(len(rolls)):
            keep = None if needed is None else np.flatnonzero(needed[k][idx])
            if keep is not None and not len(keep):
                continue
            library = [rdi[k][:, idx]] if references != "adi" else []
            if references != "rdi":
                for j in range(len(rolls)):
                    move = 2.0 * radius * abs(np.sin(np.radians(angles[j] - angles[k]) / 2.0))
                    if j != k and move >= minmove:
                        library.append(flat[j][:, idx])
            if not library:
                continue
            sub = _klip_project(flat[k][:, idx], np.concatenate(library), numbasis, keep)
            out[k].reshape(len(numbasis), rolls[k].shape[0], -1)[:, :, idx if keep is None else idx[keep]] = sub
    return out


SPLINE_MARGIN = 32
"""Pixels of input around a box's footprint whose spline coefficients are computed for it: the cubic
B-spline prefilter's influence falls as 0.268**d (1e-18 at 32 px), so a box's rotated pixels are
those of the whole image's rotation to round-off."""


def footprint(windows, angle, center, shape, order=3):
    """The input box that :func:`derotate` reads for north-up ``windows``: (y0, y1, x0, x1) around
    every window's rotated corners (each window clipped to ``shape`` first), the spline's reach and
    :data:`SPLINE_MARGIN` included, clipped to ``shape``; (0, 0, 0, 0) when no window is on the image."""
    a = np.radians(angle)
    matrix = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    c = np.array([center[1], center[0]])
    offset = c - matrix @ c
    reach = (order + 1) // 2 + 1 + (SPLINE_MARGIN if order > 1 else 0)
    corners = []
    for y0, y1, x0, x1 in windows:
        y0, y1, x0, x1 = max(int(y0), 0), min(int(y1), shape[0]), max(int(x0), 0), min(int(x1), shape[1])
        if y0 < y1 and x0 < x1:  # a box off the image reads nothing
            corners += [[y, x] for y in (y0, y1 - 1) for x in (x0, x1 - 1)]
    if not corners:
        return 0, 0, 0, 0
    src = np.array(corners, np.float64) @ matrix.T + offset
    lo, hi = np.floor(src.min(axis=0)).astype(int) - reach, np.ceil(src.max(axis=0)).astype(int) + reach + 1
    return max(lo[0], 0), min(hi[0], shape[0]), max(lo[1], 0), min(hi[1], shape[1])


def derotate(image, angle, center, order=3, windows=None):
    """Rotate a detector image about the star to north up, east left.

    A plain spline rotation (``scipy.ndimage.affine_transform``), not a resample: the output keeps
    the detector's pixel scale and grid, the star at ``center``; an offset (u, v) from the star in
    the output (+v north, +u west) is read at ``center + R(angle) (u, v)`` in the input.  NaNs stay
    NaN (their neighbourhood within the spline's reach too).

    Parameters
    ----------
    image : ndarray
        (..., ny, nx); leading axes are rotated plane by plane.
    angle : float
        Degrees counter-clockwise from the detector +y axis to north.
    center : (float, float)
        Star position (x, y).
    order : int
        Spline order.
    windows : sequence of (y0, y1, x0, x1), optional
        Output boxes to compute (each clipped to the image); the rest of the output is NaN.  They
        read only their input footprint (:func:`footprint`), whose spline coefficients are
        computed on it alone: the pixels inside are those of the full rotation to round-off
        (~1e-15 relative).  An injection-recovery run measures its fakes in boxes around them and
        needs no more.

    Returns
    -------
    ndarray
        Same shape, float64.
    """
    a = np.radians(angle)
    cos, sin = np.cos(a), np.sin(a)
    matrix = np.array([[cos, sin], [-sin, cos]])  # (iy, ix) from (oy, ox)
    c = np.array([center[1], center[0]])
    offset = c - matrix @ c
    from scipy.ndimage import affine_transform, spline_filter

    ny, nx = image.shape[-2:]
    planes = np.asarray(image, np.float64).reshape(-1, ny, nx)
    out = np.full_like(planes, np.nan)
    boxes = [(0, ny, 0, nx)] if windows is None else [
        (max(int(y0), 0), min(int(y1), ny), max(int(x0), 0), min(int(x1), nx)) for y0, y1, x0, x1 in windows]
    boxes = [b for b in boxes if b[0] < b[1] and b[2] < b[3]]
    rotated_masks = {}  # the planes of one call (KL cut-offs) mostly share their NaNs: rotate each mask once
    cy0, cy1, cx0, cx1 = (0, ny, 0, nx) if windows is None else footprint(boxes, angle, center, (ny, nx), order)
    for i, plane in enumerate(planes[:, cy0:cy1, cx0:cx1]):
        bad = ~np.isfinite(plane)
        if bad.all():  # a cut-off beyond the library's modes: NaN it stays
            continue
        key = bad.tobytes()
        # the spline coefficients of the boxes' footprint (the whole plane without windows) once
        filled = spline_filter(np.where(bad, 0.0, plane), order, output=np.float64, mode="constant") if order > 1 \
            else np.where(bad, 0.0, plane)
        for y0, y1, x0, x1 in boxes:
            # output pixel (y0 + i, x0 + j) is read at matrix @ (y0 + i, x0 + j) + offset, in the crop's frame
            shift = offset + matrix @ np.array([y0, x0], np.float64) - np.array([cy0, cx0], np.float64)
            if (key, y0, y1, x0, x1) not in rotated_masks:
                rotated_masks[key, y0, y1, x0, x1] = affine_transform(bad.astype(np.float64), matrix, shift, order=1,
                                                                      cval=1.0, output_shape=(y1 - y0, x1 - x0)) > 1e-3
            rot = affine_transform(filled, matrix, shift, order=order, cval=np.nan, output_shape=(y1 - y0, x1 - x0),
                                   prefilter=False)
            rot[rotated_masks[key, y0, y1, x0, x1]] = np.nan
            out[i, y0:y1, x0:x1] = rot
    return out.reshape(image.shape)


def _nanmean(a, axis):
    """``numpy.nanmean(a, axis)`` without its "Mean of empty slice" warning: numpy's own steps (NaNs
    zeroed in a copy, its sum over their count, divided in place), so the same numbers."""
    mask = np.isnan(a)
    values = np.array(a, copy=True)
    np.copyto(values, 0, where=mask)
    count = np.sum(~mask, axis=axis, dtype=np.intp)
    total = np.sum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(total, count, out=total, casting="unsafe")


def combine_rolls(residuals, angles, center, windows=None):
    """Derotate every roll's residuals to north up and average them (pyKLIP's ``time_collapse='mean'``).

    Parameters
    ----------
    residuals : list of ndarray
        Per roll, (nkl, nints, ny, nx) from :func:`klip_sectors`.
    angles : sequence of float
        Per roll, degrees from detector +y to north (counter-clockwise).
    center : (float, float)
        Star position (x, y).
    windows : sequence of (y0, y1, x0, x1), optional
        Only these north-up boxes (:func:`derotate`); NaN elsewhere.

    Returns
    -------
    ndarray
        (nkl, ny, nx) north-up mean over every integration of every roll (NaN-aware).
    """
    def collapse(res, ang):
        if windows is None:
            return _nanmean(res, 1)
        mean = np.full(res.shape[:1] + res.shape[2:], np.nan)  # only where derotate reads for the boxes
        y0, y1, x0, x1 = footprint(windows, ang, center, res.shape[-2:])
        mean[:, y0:y1, x0:x1] = _nanmean(res[:, :, y0:y1, x0:x1], 1)
        return mean

    # all-NaN pixels (outside the sectors) stay NaN, quietly: numpy's error state is per thread (the
    # contrast curve's injections run this in several), the warning filters are the process's
    with np.errstate(invalid="ignore", divide="ignore"):
        rotated = [derotate(collapse(res, ang), ang, center, windows=windows) for res, ang in zip(residuals, angles)]
    weights = np.array([res.shape[1] for res in residuals], np.float64)
    stack = np.stack(rotated)  # (nroll, nkl, ny, nx)
    ny, nx = stack.shape[-2:]
    boxes = [(0, ny, 0, nx)] if windows is None else [
        (max(int(y0), 0), min(int(y1), ny), max(int(x0), 0), min(int(x1), nx)) for y0, y1, x0, x1 in windows]
    out = np.full(stack.shape[1:], np.nan)
    for y0, y1, x0, x1 in boxes:  # the mean over rolls where there are pixels (everywhere without windows)
        part = stack[..., y0:y1, x0:x1]
        w = np.where(np.isfinite(part), weights[:, None, None, None], 0.0)
        with np.errstate(invalid="ignore"):
            out[..., y0:y1, x0:x1] = (np.nansum(np.where(np.isfinite(part), part, 0.0) * w, axis=0)
                                      / np.where(w.sum(0) > 0, w.sum(0), np.nan))
    return out
