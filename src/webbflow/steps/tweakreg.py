"""tweakreg: relative (and optional absolute) astrometric alignment of images.

Follows jwst's ``tweakreg`` step: sources are found in each image with
photutils (background-subtracted, ``snr_threshold`` x background RMS, the
``brightest`` kept), their sky positions from the image's WCS are projected
onto one tangent plane (arcsec), and tweakwcs matches them
(:class:`tweakwcs.matchutils.XYXYMatch`: 2-D histogram pre-shift, search
radius, tolerance) and fits a linear correction with iterative sigma clipping
(:func:`tweakwcs.linearfit.iter_linear_fit`, geometry ``shift``, ``rshift``,
``rscale`` or ``general``).  With jwst's defaults (``expand_refcat`` false)
the first image is the reference and every other image, in input order, is
aligned to its sources, as tweakwcs' ``align_wcs`` does then.  With
``expand_refcat`` the reference is the image with the most sources and the
reference catalog grows with every aligned image (tweakwcs picks the pair of
largest overlap instead).  Images that share a group id (jwst's
``group_id``: the detectors of one exposure) are aligned as one rigid group:
their sources are pooled and one correction moves them all.  With a reference
catalog (RA/Dec; jwst's ``abs_refcat``) the relative alignment expands its
reference catalog, as jwst forces, and all images are then fitted to the
catalog as one unit.

The correction is appended to each gwcs as a sky -> sky transform (project to
the tangent plane, affine, de-project), so it works for any gwcs, the full
JWST distortion pipelines included, and is stored with the product.
"""

import logging
from dataclasses import dataclass

import numpy as np
from astropy.modeling import models
from astropy.stats import SigmaClip, sigma_clipped_stats
from astropy.table import Table
from tweakwcs.linearfit import iter_linear_fit
from tweakwcs.matchutils import XYXYMatch

from webbflow import dqflags
from webbflow.steps._bkgzoom import use_separable_zoom
from webbflow.steps._peaks import fast_ring_verification
from webbflow.steps._photutils import import_photutils
from webbflow.steps.resample import native_pixel_scale

import_photutils()  # first: without its distribution scan
from photutils.background import Background2D, MedianBackground
from photutils.detection import IRAFStarFinder

__all__ = ["Alignment", "align", "apply_correction", "find_sources", "merge_detections", "tangent_plane"]

log = logging.getLogger(__name__)


@dataclass
class Alignment:
    """The fit applied to one image (tangent plane about ``tp_center``, arcsec)."""

    name: str
    status: str  # "aligned", "reference", "skipped: <why>"
    matrix: np.ndarray
    shift: np.ndarray  # arcsec
    nmatch: int
    rmse: float  # arcsec
    center: np.ndarray = None  # arcsec: the fit is p' = matrix (p - center) + shift + center


def find_sources(data, dq=None, *, snr_threshold=10.0, kernel_fwhm=2.5, bkg_boxsize=400, brightest=200,
                 peakmax=None):
    """Point-like sources in one image (jwst tweakreg's finder, IRAF algorithm).

    Parameters
    ----------
    data : ndarray
        Image (any units).
    dq : ndarray, optional
        DQ; DO_NOT_USE pixels are masked.
    snr_threshold : float
        Detection threshold in units of the background RMS.
    kernel_fwhm : float
        FWHM (pixels) of the detection kernel.
    bkg_boxsize : int
        Background mesh size (pixels); clipped to the image size.
    brightest : int
        Keep the brightest N sources.
    peakmax : float, optional
        Ignore sources with a peak above this (saturated stars).

    Returns
    -------
    astropy.table.Table
        ``x``, ``y`` (0-based), ``flux``.
    """
    mask = ~np.isfinite(data)
    if dq is not None:
        mask |= (np.asarray(dq) & dqflags.DO_NOT_USE) > 0
    box = int(min(bkg_boxsize, *data.shape))
    try:
        bkg = Background2D(data, box, mask=mask, sigma_clip=SigmaClip(3.0), bkg_estimator=MedianBackground(),
                           filter_size=1)
        use_separable_zoom(bkg)  # the same level and rms, ~10x cheaper than photutils' ndimage.zoom
        level, rms = bkg.background, bkg.background_rms
    except ValueError:  # too few unmasked pixels in a mesh: one global level
        _, med, std = sigma_clipped_stats(data, mask=mask)
        level, rms = med, std
    sub = np.where(mask, 0.0, data - level)
    threshold = snr_threshold * float(np.nanmedian(rms))
    finder = IRAFStarFinder(threshold, kernel_fwhm, n_brightest=brightest, peak_max=peakmax, exclude_border=True)
    with fast_ring_verification():  # the same peaks, the candidates' check compiled
        found = finder(sub, mask=mask)
    if found is None:
        return Table({"x": np.zeros(0), "y": np.zeros(0), "flux": np.zeros(0)})
    return Table({"x": np.asarray(found["x_centroid"], float), "y": np.asarray(found["y_centroid"], float),
                  "flux": np.asarray(found["flux"], float)})


def tangent_plane(ra0, dec0):
    """Sky (deg) -> tangent-plane (deg) model about (ra0, dec0); ``.inverse`` goes back."""
    return models.RotateCelestial2Native(ra0, dec0, 180.0) | models.Sky2Pix_TAN()


def _to_tp(tp, ra, dec):
    x, y = tp(ra, dec)
    return np.c_[x, y] * 3600.0


def apply_correction(wcs, matrix, shift_arcsec, center_arcsec, tp_center):
    """Append a sky->sky correction ``p' = M (p - c) + s + c`` (tangent plane, arcsec) to a gwcs.

    Parameters
    ----------
    wcs : gwcs.wcs.WCS
        Modified in place: the transform into its output frame gains the correction.
    matrix : (2, 2) array
    shift_arcsec, center_arcsec : (2,) arrays
    tp_center : (float, float)
        RA, Dec (deg) of the tangent point.
    """
    matrix = np.asarray(matrix, float)
    c = np.asarray(center_arcsec, float) / 3600.0
    translation = np.asarray(shift_arcsec, float) / 3600.0 + c - matrix @ c
    tp = tangent_plane(*tp_center)
    affine = models.AffineTransformation2D(matrix=matrix, translation=translation)
    correction = tp | affine | tp.inverse
    correction.name = "tweakreg_correction"
    frames = wcs.available_frames
    step = wcs.get_transform(frames[-2], frames[-1])
    wcs.set_transform(frames[-2], frames[-1], step | correction)
    return wcs


def _fit(ref_xy, img_xy, fitgeometry, searchrad, separation, tolerance, use2dhist, nclip, sigma, minobj, name,
         pscale):
    refcat = Table({"TPx": ref_xy[:, 0], "TPy": ref_xy[:, 1]})
    imcat = Table({"TPx": img_xy[:, 0], "TPy": img_xy[:, 1]})
    matcher = XYXYMatch(searchrad=searchrad, separation=separation, tolerance=tolerance, use2dhist=use2dhist)
    try:
        ridx, iidx = matcher(refcat, imcat, tp_pscale=pscale, tp_units="arcsec")
    except Exception as exc:  # tweakwcs raises on degenerate inputs; the image is left as it is
        return None, f"skipped: matching failed ({exc})"
    if len(ridx) < minobj:
        return None, f"skipped: {len(ridx)} matches < minobj={minobj}"
    fit = iter_linear_fit(ref_xy[ridx], img_xy[iidx], fitgeom=fitgeometry, nclip=nclip, sigma=(sigma, "rmse"))
    fit["nmatch"] = int(np.count_nonzero(fit["fitmask"]))
    fit["img_idx"] = np.asarray(iidx, int)
    log.info("%s: %d matches, shift %.4f %.4f arcsec, rmse %.4f arcsec", name, fit["nmatch"],
             fit["shift"][0], fit["shift"][1], fit["rmse"])
    return fit, "aligned"


def align(wcslist, catalogs, names=None, *, groups=None, fitgeometry="rshift", searchrad=2.0, separation=1.0,
          tolerance=0.7, use2dhist=True, nclip=3, sigma=3.0, minobj=15, abs_refcat=None,
          abs_fitgeometry="rshift", abs_searchrad=6.0, abs_separation=1.0, abs_tolerance=0.7,
          abs_nclip=3, abs_sigma=3.0, abs_minobj=15, expand_refcat=False, enforce_user_order=False,
          abs_fallback=False, abs_fallback_searchrad=2.0, abs_fallback_offset=0.02,
          abs_merge_sources=False):
    """Align the WCSs of a group of images to each other (and to a reference catalog).

    Parameters
    ----------
    wcslist : list of gwcs.wcs.WCS
        Modified in place (corrections appended).
    catalogs : list of astropy.table.Table
        Sources per image with ``x``, ``y`` (0-based pixels).
    names : list of str, optional
    groups : list of hashable, optional
        Group id per image (jwst's ``group_id``: one per exposure).  The images
        of one group (the detectors of one exposure, whose relative positions
        the distortion model knows) are fitted as one rigid unit: their
        sources are pooled and one correction is applied to all of them, as
        tweakwcs' ``WCSGroupCatalog`` does.  Default: every image its own group.
    fitgeometry : {'shift', 'rshift', 'rscale', 'general'}
    searchrad, separation, tolerance : float
        arcsec, as jwst's tweakreg parameters.
    use2dhist : bool
    nclip : int
    sigma : float
    minobj : int
        Minimum matched sources for a fit; fewer leaves the group unchanged.
    abs_refcat : astropy.table.Table, optional
        Reference catalog with ``ra``/``dec`` (deg) columns at the epoch of the
        observation (e.g. Gaia, see :func:`webbflow.stages.image3.read_refcat`);
        when given, the aligned groups are fitted to it as one unit and, as in
        jwst, the relative alignment expands its reference catalog.
    abs_* :
        The same parameters for the absolute fit.
    abs_merge_sources : bool
        Beyond jwst: fit the reference catalog with one position per source, the mean of its
        detections in the relatively aligned images (:func:`merge_detections`), instead of the
        concatenated catalogs (jwst, tweakwcs' group catalog).  With the duplicates the matcher
        keeps one detection of each star, not at random: on the demo's LW mosaics that choice
        shifted the absolute fit by 2-4 mas; the mean also has half the centroid noise of one
        detection with four dithers.
    expand_refcat : bool
        Add each aligned group's unmatched sources to the reference catalog (jwst default false).
    enforce_user_order : bool
        Reference and alignment order as given even with ``expand_refcat``.
    abs_fallback : bool
        Beyond jwst (a JHAT-like fallback for mosaic tiles guided on different
        stars, NIRCam known issue NC-102): with ``abs_refcat``, a group whose
        relative fit failed is left out of the joint absolute fit and fitted
        to the catalog on its own (search radius ``abs_fallback_searchrad``);
        every other group is then fitted on its own too, and takes that fit
        when it moves its sources by more than ``abs_fallback_offset``.
    abs_fallback_searchrad : float
        Search radius (arcsec) of a failed group's own fit to the catalog.
    abs_fallback_offset : float
        Displacement (arcsec, at the group's matched sources) above which a
        group's own fit replaces the joint one.

    Returns
    -------
    list of Alignment
        One per image (images of one group share their fit), plus (last) the
        absolute fit when ``abs_refcat`` is given.  A group aligned by the
        fallback has status ``"aligned to abs_refcat alone (...)"`` and its own
        fit.
    """
    names = names or [f"image{i}" for i in range(len(wcslist))]
    groups = list(range(len(wcslist))) if groups is None else list(groups)
    if len(groups) != len(wcslist):
        raise ValueError(f"{len(groups)} group ids for {len(wcslist)} images")
    if abs_refcat is not None:
        # jwst: "eliminate possibility of duplicate entries when aligning to [the] absolute catalog"
        expand_refcat = True
    members = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    members = list(members.values())  # in order of first appearance (jwst's input order)
    sky = [w(np.asarray(c["x"]), np.asarray(c["y"]), with_bounding_box=False) for w, c in zip(wcslist, catalogs)]

    def nsrc(group):
        return sum(len(catalogs[i]) for i in group)

    def pooled(group):
        return np.vstack([_to_tp(tp, *sky[i]) for i in group])

    if expand_refcat and not enforce_user_order:
        order = sorted(range(len(members)), key=lambda k: -nsrc(members[k]))
    else:
        order = list(range(len(members)))  # jwst: the first group is the (fixed) reference
    ref_group = members[order[0]]
    ref = ref_group[0]
    if nsrc(ref_group):
        ra = np.concatenate([sky[i][0] for i in ref_group])
        dec = np.concatenate([sky[i][1] for i in ref_group])
        tp_center = (float(np.nanmedian(ra)), float(np.nanmedian(dec)))
    else:
        tp_center = tuple(float(v) for v in wcslist[ref](0, 0, with_bounding_box=False))
    tp = tangent_plane(*tp_center)
    # The 2-D histogram pre-match bins in pixels of this size, as tweakwcs does with the image scale.
    pscale = native_pixel_scale(wcslist[ref], _shape_of(wcslist[ref], catalogs[ref]))
    results = {i: Alignment(names[i], "reference", np.eye(2), np.zeros(2), nsrc(ref_group), 0.0)
               for i in ref_group}
    ref_xy = pooled(ref_group)
    for k in order[1:]:
        group = members[k]
        label = names[group[0]] if len(group) == 1 else f"{names[group[0]]} (+{len(group) - 1} in its group)"
        img_xy = pooled(group)
        fit, status = _fit(ref_xy, img_xy, fitgeometry, searchrad, separation, tolerance, use2dhist,
                           nclip, sigma, minobj, label, pscale) if len(img_xy) and len(ref_xy) else \
            (None, "skipped: no sources")
        if fit is None:
            log.warning("%s: %s; WCS left unchanged", label, status)
            results.update({i: Alignment(names[i], status, np.eye(2), np.zeros(2), 0, np.nan) for i in group})
            continue
        for i in group:
            apply_correction(wcslist[i], fit["matrix"], fit["shift"], fit["center"], tp_center)
            sky[i] = wcslist[i](np.asarray(catalogs[i]["x"]), np.asarray(catalogs[i]["y"]), with_bounding_box=False)
            results[i] = Alignment(names[i], status, fit["matrix"], fit["shift"], fit["nmatch"], fit["rmse"],
                                   fit["center"])
        if expand_refcat:
            # tweakwcs adds only the sources the match left unmatched (no duplicates of reference stars)
            new_xy = pooled(group)
            unmatched = np.ones(len(new_xy), bool)
            unmatched[fit["img_idx"]] = False
            ref_xy = np.vstack([ref_xy, new_xy[unmatched]])
    out = [results[i] for i in range(len(wcslist))]
    untied = [names[g[0]] for g in members if out[g[0]].status.startswith("skipped")]
    if untied and not (abs_fallback and abs_refcat is not None):
        # NIRCam known issue NC-102: tiles guided on different stars can be offset by ~1" and not match
        log.warning("%d of %d exposure groups not tied by the relative alignment (%s): they keep their own "
                    "pointing error; widen steps.tweakreg.searchrad (and abs_searchrad), or set abs_refcat "
                    "with abs_fallback: true", len(untied), len(members), ", ".join(untied))
    if abs_refcat is None:
        return out
    abs_args = (abs_fitgeometry, abs_searchrad, abs_separation, abs_tolerance, abs_nclip, abs_sigma, abs_minobj,
                pscale)
    if not abs_fallback:
        out.append(_align_absolute(wcslist, sky, abs_refcat, tp_center, *abs_args, merge=abs_merge_sources))
        return out
    failed = [g for g in members if out[g[0]].status.startswith("skipped")]
    tied = [i for g in members if g not in failed for i in g]
    joint = _align_absolute(wcslist, sky, abs_refcat, tp_center, *abs_args, only=tied,
                            merge=abs_merge_sources)
    if joint.status != "aligned" and tied and abs_fallback_searchrad > abs_searchrad:
        # the tied groups may share a guide-star error beyond abs_searchrad: widen the search, still as one unit
        log.warning("abs_fallback: joint absolute fit %s; again with abs_fallback_searchrad %.2f\"", joint.status,
                    abs_fallback_searchrad)
        joint = _align_absolute(wcslist, sky, abs_refcat, tp_center, abs_fitgeometry, abs_fallback_searchrad,
                                *abs_args[2:], only=tied, merge=abs_merge_sources)
    ref_cat = _to_tp(tp, np.asarray(abs_refcat["ra"], float), np.asarray(abs_refcat["dec"], float))
    for group in members:
        alone = group in failed
        searchrad = abs_fallback_searchrad if alone or joint.status != "aligned" else abs_searchrad
        _fallback_group(wcslist, catalogs, names, group, out, ref_cat, tp, tp_center, alone,
                        abs_args, searchrad, abs_fallback_offset, joint)
    out.append(joint)
    return out


def _fallback_group(wcslist, catalogs, names, group, out, ref_cat, tp, tp_center, alone, abs_args,
                    searchrad, max_offset, joint):
    """Fit one group to the reference catalog on its own (``abs_fallback``) and apply it when needed.

    ``alone``: the group's relative fit failed, so the joint absolute fit left it out; its own fit
    is applied if it succeeds (else, as jwst would, the joint correction).  Otherwise the own fit
    replaces the joint one (already applied) only when it moves the group's matched sources by more
    than ``max_offset`` arcsec.
    """
    fitgeometry, _, separation, tolerance, nclip, sigma, minobj, pscale = abs_args
    label = names[group[0]] if len(group) == 1 else f"{names[group[0]]} (+{len(group) - 1} in its group)"
    img_xy = np.vstack([_to_tp(tp, *wcslist[i](np.asarray(catalogs[i]["x"]), np.asarray(catalogs[i]["y"]),
                                                 with_bounding_box=False)) for i in group])
    fit, status = (_fit(ref_cat, img_xy, fitgeometry, searchrad, separation, tolerance, True, nclip, sigma, minobj,
                        f"{label} to abs_refcat alone", pscale) if len(img_xy) else (None, "skipped: no sources"))
    if fit is None:
        if alone and joint.status == "aligned":
            for i in group:
                apply_correction(wcslist[i], joint.matrix, joint.shift, joint.center, tp_center)
        log.warning("abs_fallback: %s: its own fit to abs_refcat %s; %s", label, status,
                    "it takes the joint correction" if alone else "it keeps its correction")
        return
    used = img_xy[fit["img_idx"]][fit["fitmask"]]
    moved = (used - fit["center"]) @ fit["matrix"].T + fit["shift"] + fit["center"] - used
    offset = float(np.hypot(*np.mean(moved, axis=0)))
    if not alone and offset <= max_offset:
        log.info("abs_fallback: %s sits %.1f mas from abs_refcat after the joint fit; kept", label, 1e3 * offset)
        return
    why = out[group[0]].status if alone else f"{1e3 * offset:.0f} mas from abs_refcat after the joint fit"
    log.warning("abs_fallback: %s aligned to abs_refcat on its own (%s)", label, why)
    for i in group:
        apply_correction(wcslist[i], fit["matrix"], fit["shift"], fit["center"], tp_center)
        out[i] = Alignment(names[i], f"aligned to abs_refcat alone ({why})", fit["matrix"], fit["shift"],
                           fit["nmatch"], fit["rmse"], fit["center"])


def _shape_of(wcs, catalog):
    if wcs.array_shape is not None:
        return wcs.array_shape
    return (float(np.max(catalog["y"], initial=0)) * 2 + 1, float(np.max(catalog["x"], initial=0)) * 2 + 1)


def merge_detections(xy_list, radius):
    """One position per source: the mean of its detections in several aligned images.

    Detections in different images closer than ``radius`` are linked (friends of friends); a
    linked set with at most one detection per image is one source, replaced by its mean.  A set
    holding two detections of one image (a close pair, or a blend split differently) is left as
    it is.

    Parameters
    ----------
    xy_list : list of (n_i, 2) arrays
        Tangent-plane positions (arcsec) of each image's sources, after the relative alignment.
    radius : float
        Linking length (arcsec), well below the separation of distinct sources.

    Returns
    -------
    (m, 2) ndarray
        The merged positions, then the unmerged ones.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xy = np.vstack([np.asarray(a, float).reshape(-1, 2) for a in xy_list])
    image = np.concatenate([np.full(len(a), k) for k, a in enumerate(xy_list)])
    if len(xy) < 2:
        return xy
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    pairs = pairs[image[pairs[:, 0]] != image[pairs[:, 1]]]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(xy), len(xy)))
    _, label = connected_components(graph, directed=False)
    size = np.bincount(label)
    # distinct images per set: one detection per image or the set is not one source
    distinct = np.bincount(np.unique(label * (image.max() + 1) + image) // (image.max() + 1), minlength=len(size))
    clean = distinct[label] == size[label]
    mean = np.c_[np.bincount(label, xy[:, 0]), np.bincount(label, xy[:, 1])] / size[:, None]
    keep = np.unique(label[clean])
    return np.vstack([mean[keep], xy[~clean]])


def _align_absolute(wcslist, sky, refcat, tp_center, fitgeometry, searchrad, separation, tolerance, nclip,
                    sigma, minobj, pscale, only=None, merge=False):
    """Fit all images (or the images ``only``) to ``refcat`` as one unit and correct their WCSs."""
    only = range(len(wcslist)) if only is None else only
    wcslist = [wcslist[i] for i in only]
    sky = [sky[i] for i in only]
    if not wcslist:
        return Alignment("absolute", "skipped: no image tied by the relative alignment", np.eye(2), np.zeros(2),
                         0, np.nan)
    if len(refcat) < minobj:
        status = f"skipped: {len(refcat)} reference-catalog sources < abs_minobj={minobj}"
        log.warning("absolute alignment %s; WCSs keep the relative alignment", status)
        return Alignment("absolute", status, np.eye(2), np.zeros(2), 0, np.nan)
    tp = tangent_plane(*tp_center)
    ref_xy = _to_tp(tp, np.asarray(refcat["ra"], float), np.asarray(refcat["dec"], float))
    per_image = [_to_tp(tp, *s) for s in sky if len(s[0])]
    if merge:
        # half a native pixel: a star's aligned detections agree to a few mas, distinct sources
        # are farther apart than the matcher's separation
        img_xy = merge_detections(per_image, 0.5 * pscale)
        log.info("absolute: %d detections merged into %d sources", sum(map(len, per_image)), len(img_xy))
    else:
        img_xy = np.vstack(per_image)
    fit, status = _fit(ref_xy, img_xy, fitgeometry, searchrad, separation, tolerance, True, nclip, sigma,
                       minobj, "absolute", pscale)
    if fit is None:
        log.warning("absolute alignment %s; WCSs keep the relative alignment", status)
        return Alignment("absolute", status, np.eye(2), np.zeros(2), 0, np.nan)
    for wcs in wcslist:
        apply_correction(wcs, fit["matrix"], fit["shift"], fit["center"], tp_center)
    return Alignment("absolute", status, fit["matrix"], fit["shift"], fit["nmatch"], fit["rmse"], fit["center"])
