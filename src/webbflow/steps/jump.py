"""Jump (cosmic-ray) detection by the two-point difference method (jwst 3.0 / stcal 1.20).

For every pixel the first differences of the ramp (in electrons, pooled over
integrations) are compared with their median; a difference more than
``rejection_threshold`` sigma away flags JUMP_DET on the later group. With few
usable differences the search is iterative and the threshold rises (4/5/6
sigma for >=4/3/2 usable differences); with many differences it is a single
pass; with many integrations it is a sigma clip across integrations. Large jumps
also flag their four neighbours. ``per_integration`` (beyond jwst) runs the search on each
integration alone, for time series whose pixels change between integrations. With ``expand_large_events`` snowballs (large
jump regions around a newly saturated core) are flagged as stcal 1.20 does,
with scikit-image's region moments and ellipse rasteriser as stcal uses them
(:func:`flag_large_events`), or with two beyond-jwst restrictions that keep
cosmic rays near the edges and saturating stars out (:class:`LargeEvents`);
MIRI's showers (``find_showers``) are not.
"""

import dataclasses
import functools
import logging
import math

import numpy as np
import scipy.ndimage

from webbflow import dqflags
from webbflow.ramp import StepStatus

from . import _jump_numba as K

__all__ = ["run", "LARGE_EVENT_KEYS", "LargeEvents", "MIN_DIFFS_SINGLE_PASS", "after_detection", "choose_regime",
           "detect", "flag_large_events", "flag_large_events_int", "gain_terms"]

log = logging.getLogger(__name__)

# stcal ``min_diffs_single_pass``: with this many usable differences the
# iterative search is replaced by a single pass.
MIN_DIFFS_SINGLE_PASS = 10


@functools.lru_cache(maxsize=16)
def _sorting_network(n):
    """``K.sorting_network(n)``, built once per n (read-only, shared)."""
    net = K.sorting_network(n)
    net.flags.writeable = False
    return net


def _choose_regime(gdq, minimum_groups, minimum_sigclip_groups):
    """Return the detection regime, or None when the step has too few groups."""
    nints, ngroups = gdq.shape[:2]
    return choose_regime(int(K.count_all_dnu_groups(gdq).max()), nints, ngroups, minimum_groups,
                         minimum_sigclip_groups)


def choose_regime(max_all_dnu, nints, ngroups, minimum_groups=3, minimum_sigclip_groups=100):
    """The detection regime from the exposure's group counts; None when there are too few groups.

    Parameters
    ----------
    max_all_dnu : int
        The most groups of one integration in which every pixel is DO_NOT_USE
        (such groups do not count as usable, as in stcal).
    nints, ngroups : int
        The exposure's (segment's) integrations and groups.
    minimum_groups, minimum_sigclip_groups : int
        As for :func:`run`.
    """
    min_usable_groups = ngroups - int(max_all_dnu)
    # jwst uses only_use_ints=True: sigma clipping compares integrations
    sigclip_ok = nints >= minimum_sigclip_groups
    if min_usable_groups < minimum_groups and not sigclip_ok:
        return None
    if sigclip_ok:
        return K.REGIME_SIGMA_CLIP
    if min_usable_groups - 1 >= MIN_DIFFS_SINGLE_PASS:
        return K.REGIME_SINGLE_PASS
    return K.REGIME_ITERATIVE


def gain_terms(gain, readnoise):
    """(gain as float32, squared CDS noise in electrons, pixels of unusable gain) for the kernels."""
    gain32 = np.ascontiguousarray(gain, dtype=np.float32)
    rn32 = np.asarray(readnoise, dtype=np.float32)
    bad_gain = (gain32 <= 0.0) | np.isnan(gain32)
    # stcal works in electrons; squared CDS noise kept in float32 as it does
    rn2 = np.ascontiguousarray((rn32 * gain32) ** 2)
    return gain32, rn2, bad_gain


def detect(data, gdq, gain32, rn2, nframes, regime, rejection_threshold=4.0,
           three_group_rejection_threshold=6.0, four_group_rejection_threshold=5.0):
    """The primary search of :func:`run` on a cube (or a block of rows of one); returns (median, sigma).

    ``gdq`` gains JUMP_DET in place; the per-pixel median difference and its
    sigma (electrons, float64, (ny, nx)) feed the neighbour and after-jump
    flagging.  Every pixel is independent, so blocks of rows give the rows
    of the whole cube.
    """
    nints, ngroups, ny, nx = data.shape
    med = np.empty((ny, nx), np.float64)
    sig = np.empty((ny, nx), np.float64)
    ndiff = nints * (ngroups - 1)
    # the sigma clip works per pixel (scalar code) and needs no network
    net = (_sorting_network(ndiff) if regime != K.REGIME_SIGMA_CLIP else np.zeros((0, 2), np.int64))
    K.detect(data, gdq, gain32, rn2, float(nframes), regime,
             float(rejection_threshold), float(four_group_rejection_threshold),
             float(three_group_rejection_threshold), 5, net, K.block_width(ndiff), med, sig)
    return med, sig


def after_detection(data, gdq, gain32, med, sig, tgroup, gain_median=None, flag_4_neighbors=True,
                    max_jump_to_flag_neighbors=1000.0, min_jump_to_flag_neighbors=10.0,
                    after_jump_flag_dn1=0.0, after_jump_flag_time1=0.0, after_jump_flag_dn2=0.0,
                    after_jump_flag_time2=0.0):
    """Neighbour and after-jump flagging of :func:`run`, after :func:`detect` (in place on ``gdq``).

    Neighbours reach one row up and down: on a block of rows the flags are
    those of the whole cube on all but its first and last row.
    ``gain_median`` is the NaN-median of the whole gain reference (stcal
    scales the after-jump DN thresholds by it); None takes it from ``gain32``.
    """
    if flag_4_neighbors:
        K.flag_neighbors(data, gdq, gain32, med, sig, float(min_jump_to_flag_neighbors),
                         float(max_jump_to_flag_neighbors))
    n1 = int(after_jump_flag_time1 // tgroup)
    n2 = int(after_jump_flag_time2 // tgroup)
    if n1 > 0 or n2 > 0:
        # stcal scales the DN thresholds by the median gain (float32 product)
        if gain_median is None:
            gain_median = np.nanmedian(gain32)
        e1 = float(after_jump_flag_dn1 * gain_median)
        e2 = float(after_jump_flag_dn2 * gain_median)
        K.after_jump(data, gdq, gain32, med, e1, n1, e2, n2)


def _clear_jump_only_planes(gdq):
    """stcal sigma-clip rule: a group plane that is JUMP or DNU everywhere loses its JUMP-only flags."""
    jd = np.uint8(dqflags.JUMP_DET | dqflags.DO_NOT_USE)
    for i in range(gdq.shape[0]):
        for k in range(gdq.shape[1]):
            plane = gdq[i, k]
            if np.all(plane & jd):
                plane[plane == dqflags.JUMP_DET] = 0


def run(ramp, readout, gain, readnoise, rejection_threshold=4.0,
        three_group_rejection_threshold=6.0, four_group_rejection_threshold=5.0,
        flag_4_neighbors=True, max_jump_to_flag_neighbors=1000.0,
        min_jump_to_flag_neighbors=10.0, minimum_groups=3, minimum_sigclip_groups=100,
        after_jump_flag_dn1=0.0, after_jump_flag_time1=0.0, after_jump_flag_dn2=0.0,
        after_jump_flag_time2=0.0, expand_large_events=False, per_integration=False, **large_events):
    """Flag cosmic-ray jumps in ``ramp.groupdq`` (in place).

    Parameters
    ----------
    ramp : webbflow.ramp.Ramp
        ``groupdq`` gains JUMP_DET; ``pixeldq`` gains NO_GAIN_VALUE | DO_NOT_USE
        where the gain is not positive. ``data`` is not modified.
    readout : webbflow.ramp.Readout
        ``nframes`` sets the read noise of a difference, ``tgroup`` converts the
        after-jump times to groups.
    gain : ndarray, (ny, nx)
        GAIN reference (e-/DN).
    readnoise : ndarray, (ny, nx)
        READNOISE reference: CDS read noise in DN.
    rejection_threshold : float
        Sigma threshold with >= 4 usable differences (and single-pass/sigma-clip).
    three_group_rejection_threshold : float
        Threshold when 2 usable differences remain (three groups).
    four_group_rejection_threshold : float
        Threshold when 3 usable differences remain (four groups).
    flag_4_neighbors : bool
        Also flag the 4 neighbours of jumps with
        ``min_jump_to_flag_neighbors < ratio < max_jump_to_flag_neighbors``.
    max_jump_to_flag_neighbors, min_jump_to_flag_neighbors : float
        Sigma bounds for neighbour flagging.
    minimum_groups : int
        Fewest usable groups for the difference search.
    minimum_sigclip_groups : int
        Integrations needed to switch to sigma clipping across integrations.
    after_jump_flag_dn1, after_jump_flag_time1, after_jump_flag_dn2, after_jump_flag_time2 : float
        Flag the groups within ``time`` seconds after a jump larger than ``dn`` DN.
    expand_large_events : bool
        Flag snowballs (:func:`flag_large_events`) after the jumps.
    per_integration : bool
        Beyond jwst (False: jwst).  Each integration's differences are compared with their own
        median, as if it were an exposure of one integration (so the iterative or single-pass
        search by its own usable differences, never the sigma clip), instead of the median pooled
        over all integrations.  For time series whose pixels change between integrations (a
        transit, a drifting or stepping star): the pooled median flags the core's honest
        differences in the integrations that differ most, and leaving those out biases its rate.
    **large_events
        Their parameters, the fields of :class:`LargeEvents` (jwst 3.0's jump
        step names and defaults): min_jump_area, min_sat_area, expand_factor,
        sat_required_snowball, min_sat_radius_extend, sat_expand, edge_size,
        max_extended_radius, mask_snowball_core_next_int, snowball_time_masked_next_int;
        and two beyond jwst, off by default: edge_contact, sat_core_in_snowball.

    Returns
    -------
    str
        ``"COMPLETE"``, or ``"SKIPPED"`` when there are fewer than 3 groups.
    """
    nints, ngroups, ny, nx = ramp.data.shape
    if ngroups <= 2:
        log.warning("Cannot apply jump detection when NGROUPS<=2; jump step skipped")
        return StepStatus.SKIPPED

    data = ramp.data
    if data.dtype != np.float32 or not data.flags.c_contiguous:
        data = np.ascontiguousarray(data, dtype=np.float32)
    gdq = ramp.groupdq
    gain32, rn2, bad_gain = gain_terms(gain, readnoise)
    ramp.pixeldq[bad_gain] |= np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)

    if per_integration and nints > 1:
        log.info("jump: each of %d integrations against its own median difference (per_integration, "
                 "not jwst)", nints)
    # one pass over the whole cube (jwst), or one per integration (its slices are contiguous views)
    parts = [slice(i, i + 1) for i in range(nints)] if per_integration else [slice(0, nints)]
    gain_median = np.nanmedian(gain32)
    for part in parts:
        cube, q = data[part], gdq[part]
        regime = _choose_regime(q, minimum_groups, minimum_sigclip_groups)
        if regime is None:
            log.info("Too few usable groups: no jump detection")
            continue
        if regime == K.REGIME_SIGMA_CLIP:
            log.info("jump: sigma clip across %d integrations (>= minimum_sigclip_groups=%d) instead of "
                     "two-point differences, as jwst", cube.shape[0], minimum_sigclip_groups)
        med, sig = detect(cube, q, gain32, rn2, readout.nframes, regime, rejection_threshold,
                          three_group_rejection_threshold, four_group_rejection_threshold)
        if regime == K.REGIME_SIGMA_CLIP:
            _clear_jump_only_planes(q)
        after_detection(cube, q, gain32, med, sig, readout.tgroup, gain_median, flag_4_neighbors,
                        max_jump_to_flag_neighbors, min_jump_to_flag_neighbors, after_jump_flag_dn1,
                        after_jump_flag_time1, after_jump_flag_dn2, after_jump_flag_time2)
    K.clear_jump_on_bad(gdq)
    if expand_large_events:
        # after the JUMP-on-SAT/DNU clean-up, as stcal: snowball halos may flag DO_NOT_USE groups
        n = flag_large_events(gdq, LargeEvents(**large_events), readout.tgroup)
        log.info("jump: %d snowballs", n)
    return StepStatus.COMPLETE


# --------------------------------------------------------------------------------------------
# Large events (snowballs): stcal 1.20's ``flag_large_events``, on by ``expand_large_events``.

@dataclasses.dataclass(frozen=True)
class LargeEvents:
    """Snowball flagging parameters, in jwst 3.0's step units (see :func:`run`).

    ``sat_expand`` and ``max_extended_radius`` are the step's values: jwst's
    step passes twice each to stcal (pixels added to a full axis, the largest
    full axis), and so does :func:`flag_large_events_int`.

    Two fields are not jwst's, and their defaults are stcal's behaviour:
    ``edge_contact`` (int or None): a JUMP region within ``edge_size`` of an
    edge is a snowball without a saturated core only if its bounding box comes
    within this many pixels of the array's edge, where a core beyond the edge
    would leave it (None: any such region, as stcal, which expands every
    cosmic ray of ``min_jump_area`` pixels near the edges);
    ``sat_core_in_snowball`` (bool): grow and mask in the next integration only
    the saturated cores inside a snowball of this or the previous group (False:
    every newly saturated region wider than ``min_sat_radius_extend``, as stcal,
    which includes the rings by which a saturating star's saturated area grows).
    """

    min_jump_area: float = 5.0
    min_sat_area: float = 1.0
    expand_factor: float = 2.0
    sat_required_snowball: bool = True
    min_sat_radius_extend: float = 2.5
    sat_expand: int = 2
    edge_size: int = 25
    max_extended_radius: int = 200
    mask_snowball_core_next_int: bool = True
    snowball_time_masked_next_int: int = 4000
    # beyond jwst (None / False: stcal's behaviour)
    edge_contact: int | None = None
    sat_core_in_snowball: bool = False

    def persist_groups(self, tgroup):
        """Groups of the next integration whose snowball cores are flagged (0: none)."""
        if not self.mask_snowball_core_next_int:
            return 0
        return int(self.snowball_time_masked_next_int // tgroup)


LARGE_EVENT_KEYS = tuple(f.name for f in dataclasses.fields(LargeEvents))


def _skimage():
    """scikit-image's measure and draw modules (imported on first use: only snowball flagging needs them)."""
    try:
        import skimage.draw
        import skimage.measure
    except ImportError as exc:
        raise ImportError("jump: expand_large_events needs scikit-image, a webbflow dependency; install it with "
                          "pip install 'scikit-image>=0.22'") from exc
    return skimage


_BLOCK_GAP = 32
"""Empty rows or columns that :func:`_occupied_blocks` cuts a mask across."""


def _runs(occupied, gap):
    """(start, stop) of the runs of ``occupied`` indices (sorted), split where more than ``gap`` are missing."""
    cut = np.flatnonzero(np.diff(occupied) > gap + 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(occupied, cut)]


def _occupied_blocks(mask, gap=_BLOCK_GAP):
    """(row0, col0, crop) of ``mask``'s blocks that hold its True pixels, cut along empty rows and columns.

    No 8-connected region crosses a row (or, within a band of rows, a column) without a True pixel,
    so labelling each crop finds every region whole.  A sparse mask (the new saturation of a group)
    then costs its occupied rows and columns instead of the frame; cuts are made only across more
    than ``gap`` empty rows or columns, so that a mask of scattered cosmic rays stays one block
    (a block costs a call of the labeller, ~0.1 ms).
    """
    for r0, r1 in _runs(np.flatnonzero(mask.any(axis=1)), gap):
        band = mask[r0:r1]
        for c0, c1 in _runs(np.flatnonzero(band.any(axis=0)), gap):
            yield r0, c0, band[:, c0:c1]


def _regions(mask, min_area, keep=None):
    """Connected (8-neighbour) regions of ``mask`` with a hole-filled area >= ``min_area``.

    Each region is ``((x, y) centroid, (minor - 1, major - 1) axis lengths of the
    moment ellipse, orientation in degrees, bounding box (row0, col0, row1, col1))``;
    the first three are stcal's ``_sk_filter_areas`` values (scikit-image ``regionprops``),
    so that every later comparison sees the same floats.  ``keep``,
    given the regions' bounding boxes (n, 4: row0, col0, row1, col1), may rule
    regions out before their moments are computed; a region's
    properties depend on its own pixels only, so the others are unchanged.

    Only the occupied blocks of ``mask`` are labelled (:func:`_occupied_blocks`), by a numba
    labeller that also sums each region's pixel count and coordinates (:func:`_jump_numba.label8`).
    ``regionprops`` is not called: what it would compute is, from the same numbers.  The centroid
    is the mean of the frame coordinates (integers, summed exactly), so the integer sums give it;
    the hole-filled area is needed only when the region has fewer pixels than ``min_area`` and its
    box at least as many (``binary_fill_holes`` as ``regionprops`` calls it); the axes and the
    orientation come from ``skimage.measure.moments_central`` of the region's own box about the
    local centroid, the inertia tensor and its eigenvalues (``numpy.linalg.eigvalsh``, one stacked
    call) exactly as ``regionprops`` forms them.  The regions come in the whole frame's label order
    (raster order of their first pixel).
    """
    if not mask.any():
        return []
    measure = _skimage().measure
    found, mus = [], []
    for r0, c0, crop in _occupied_blocks(mask):
        labels, stats = K.label8(crop)
        boxes = stats[:, :4] + np.array([r0, c0, r0, c0], np.int64)
        kept = np.ones(len(stats), bool) if keep is None else keep(boxes)
        for k in np.flatnonzero(kept):
            y0, x0, y1, x1, n, sum_r, sum_c, first = (int(v) for v in stats[k])
            if n < min_area:
                if (y1 - y0) * (x1 - x0) < min_area:
                    continue  # the filled region lies in its box
                own = labels[y0:y1, x0:x1] == k + 1
                if np.sum(scipy.ndimage.binary_fill_holes(own, np.ones((3, 3)))) < min_area:
                    continue
            own = labels[y0:y1, x0:x1] == k + 1
            local = np.asarray((np.float64(sum_r - n * y0) / np.float64(n), np.float64(sum_c - n * x0) / np.float64(n)))
            mus.append(measure.moments_central(own.astype(np.uint8), local, order=3, spacing=np.ones(2)))
            box = tuple(int(v) for v in boxes[k])
            found.append(((box[0], first + c0), float(np.float64(sum_c + n * c0) / n),
                          float(np.float64(sum_r + n * r0) / n), box))
    if not found:
        return []
    mu = np.array(mus)
    mu0, mu20, mu02 = mu[:, 0, 0], mu[:, 2, 0], mu[:, 0, 2]
    # skimage.measure.inertia_tensor: each diagonal term is the sum of the other axes' second moments
    both = mu20 + mu02
    tensor = np.empty((len(mu), 2, 2))
    tensor[:, 0, 0] = (both - mu20) / mu0
    tensor[:, 1, 1] = (both - mu02) / mu0
    tensor[:, 0, 1] = tensor[:, 1, 0] = -mu[:, 1, 1] / mu0
    eig = np.clip(np.linalg.eigvalsh(tensor), 0, None)  # ascending, as regionprops clips them
    events = []
    for (first, x, y, box), t, (low, high) in zip(found, tensor, eig):
        a, b, c = t[0, 0], t[0, 1], t[1, 1]
        if a - c == 0:
            orientation = math.pi / 4.0 if b < 0 else -math.pi / 4.0
        else:
            orientation = 0.5 * math.atan2(-2 * b, c - a)
        events.append((first, ((x, y), (4 * math.sqrt(low) - 1, 4 * math.sqrt(high) - 1),
                               np.degrees(orientation), box)))
    events.sort(key=lambda item: item[0])
    return [event for _, event in events]


def _snowball_candidate(centres, lo, hi):
    """A bounding-box test passed by every JUMP region that can be a snowball (see :func:`_regions`).

    A region is one if its centroid (inside its box) is outside [lo, hi] on
    either axis, or if a core centre lies in its moment ellipse; the ellipse's
    semi-axes are at most 2 sqrt(trace of the covariance) <= hypot(box height,
    width), so a centre farther than that from the box cannot be inside.
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)

    def keep(boxes):
        r0, c0, r1, c1 = (boxes[:, k:k + 1] for k in range(4))
        edge = (c0 < lo) | (r0 < lo) | (c1 - 1 > hi) | (r1 - 1 > hi)
        reach = np.hypot(r1 - r0, c1 - c0) + 1.0
        near = ((c[:, 0] >= c0 - reach) & (c[:, 0] <= c1 - 1 + reach)
                & (c[:, 1] >= r0 - reach) & (c[:, 1] <= r1 - 1 + reach))
        return edge[:, 0] | near.any(axis=1)

    return keep


def _at_edge(event, contact, shape):
    """Whether a JUMP region near an edge may be a snowball whose core is beyond it (see :class:`LargeEvents`)."""
    if contact is None:
        return True
    r0, c0, r1, c1 = event[3]
    return min(r0, c0) <= contact or r1 - 1 >= shape[0] - 1 - contact or c1 - 1 >= shape[1] - 1 - contact


def _ellipse_patch(event, axis1, axis2, shape):
    """(row slice, column slice, mask) of the filled ellipse of full axes axis1/axis2 at ``event``.

    The patch and the rasterisation (``skimage.draw.ellipse`` with radii
    rounded half to even) are stcal's ``ellipse_subim``, including its
    centre rounding, so the pixel sets are the same.
    """
    xc, yc = round(event[0][0]), round(event[0][1])
    r1, r2 = round(axis1 / 2), round(axis2 / 2)
    half = max(r1, r2) + 2
    x0, x1 = max(xc - half, 0), min(xc + half + 1, shape[1])
    y0, y1 = max(yc - half, 0), min(yc + half + 1, shape[0])
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    if r1 != 0 and r2 != 0:
        rr, cc = _skimage().draw.ellipse(yc - y0, xc - x0, r2, r1, mask.shape, np.radians(event[2]))
        mask[rr, cc] = True
    return slice(y0, y1), slice(x0, x1), mask


def _centres_inside(points, event):
    """Whether any (x, y) point lies inside ``event``'s ellipse (stcal's ``point_inside_ellipse``)."""
    if not points:
        return False
    p = np.asarray(points, dtype=np.float64)
    angle = np.radians(180 - event[2])
    c, s = np.cos(angle), np.sin(angle)
    dx = p[:, 0] - event[0][0]
    dy = p[:, 1] - event[0][1]
    u = dx * c - dy * s
    v = dx * s + dy * c
    a, b = event[1][1] * 0.5, event[1][0] * 0.5
    if b > a:
        a, b = b, a
    with np.errstate(divide="ignore", invalid="ignore"):
        return bool(np.any(u**2 / a**2 + v**2 / b**2 <= 1))


def _expanded_axes(event, factor, max_width):
    """Full axes of a snowball grown by ``factor`` on its minor axis, the same length added to the major."""
    h, w = event[1]
    if w < h:
        a1, a2 = h + (factor - 1.0) * w, w * factor
    else:
        a1, a2 = h * factor, w + (factor - 1.0) * h
    return 2 * round(min(a1, max_width) / 2), 2 * round(min(a2, max_width) / 2)


def flag_large_events_int(gdq, params):
    """Flag the snowballs of one integration's group DQ (ngroups, ny, nx), in place.

    For every group after the first: regions of new saturation (``min_sat_area``)
    and of JUMP_DET (``min_jump_area``) are found; a JUMP region is a snowball
    when a new-saturation centroid of this or the next group lies in its
    ellipse, or when it lies within ``edge_size`` of an edge (its core may be
    off the detector; with ``edge_contact``, only if it reaches the edge).
    Saturated cores wider than ``min_sat_radius_extend`` (with
    ``sat_core_in_snowball``, those inside a snowball of this or the previous
    group) grow by ``sat_expand`` and become SATURATED in this and every later group;
    each snowball's ellipse, grown by ``expand_factor``, gets JUMP_DET on its
    unsaturated pixels in this group.  The group loop is sequential because
    each group's flags feed the next group's new-saturation test.

    Returns
    -------
    persist : ndarray of uint8, (ny, nx)
        JUMP_DET on the (unexpanded) snowball cores, for the next integration.
    int
        The number of snowballs.
    """
    ngroups, ny, nx = gdq.shape
    sat, jump = np.uint8(dqflags.SATURATED), np.uint8(dqflags.JUMP_DET)
    persist = np.zeros((ny, nx), np.uint8)
    width = 2 * params.max_extended_radius
    lo, hi = params.edge_size, max(0, ny - params.edge_size)  # stcal takes rows for both axes
    total, previous = 0, []
    for g in range(1, ngroups):
        is_sat = (gdq[g] & sat) != 0
        new_sat = is_sat & ((gdq[g - 1] & sat) == 0)
        next_new = ((gdq[g + 1] & sat) != 0) & ~is_sat if g < ngroups - 1 else None
        sat_events = _regions(new_sat, params.min_sat_area)
        if params.sat_required_snowball:
            centres = [e[0] for e in sat_events]
            if next_new is not None:
                centres += [e[0] for e in _regions(next_new, params.min_sat_area)]
            # most JUMP regions are cosmic rays far from any core: skip their moments
            jump_events = _regions((gdq[g] & jump) != 0, params.min_jump_area, _snowball_candidate(centres, lo, hi))
            snowballs = [e for e in jump_events
                         if (not (lo <= e[0][0] <= hi and lo <= e[0][1] <= hi)
                             and _at_edge(e, params.edge_contact, (ny, nx))) or _centres_inside(centres, e)]
            for e in sat_events:
                if params.sat_core_in_snowball and not any(_centres_inside([e[0]], s) for s in snowballs + previous):
                    continue  # not a hit's core: a saturating star's growing saturated area
                if min(e[1]) > params.min_sat_radius_extend:
                    grown = [min(a + 2 * params.sat_expand, width) for a in e[1]]
                    ys, xs, core = _ellipse_patch(e, grown[0], grown[1], (ny, nx))
                    gdq[g:, ys, xs][:, core] = sat
                    ys, xs, core = _ellipse_patch(e, e[1][0], e[1][1], (ny, nx))
                    persist[ys, xs][core] = jump
        else:
            snowballs = _regions((gdq[g] & jump) != 0, params.min_jump_area)
        total += len(snowballs)
        previous = snowballs  # a core saturating one group after its halo jumped
        for e in snowballs:
            ys, xs, halo = _ellipse_patch(e, *_expanded_axes(e, params.expand_factor, width), (ny, nx))
            plane = gdq[g, ys, xs]
            plane[halo & ((plane & sat) == 0)] |= jump
    return persist, total


def flag_large_events(cubes, params, tgroup):
    """Snowball flagging of a whole exposure's group DQ (in place); returns the number of snowballs.

    Parameters
    ----------
    cubes : iterable of ndarray
        Each integration's group DQ (ngroups, ny, nx), writable, in order: the
        4-D group DQ itself, or a generator that reads an integration from
        scratch and writes it back when asked for the next one.
    params : LargeEvents
    tgroup : float
        Group time (s), converting ``snowball_time_masked_next_int`` to groups.

    Notes
    -----
    Each integration is flagged as :func:`flag_large_events_int`; then, as stcal
    does after all integrations, the cores of integration i get JUMP_DET in
    groups 1 .. n-1 of integration i+1, n = ``snowball_time_masked_next_int //
    tgroup`` (at most NGROUPS).  Applying them after i+1's own search gives
    the same flags as stcal's later pass, and needs one integration at a time.
    """
    total, prev = 0, None
    for cube in cubes:
        n = min(params.persist_groups(tgroup), cube.shape[0])
        persist, count = flag_large_events_int(cube, params)
        total += count
        if prev is not None and n >= 1:
            cube[1:n] |= prev
        prev = persist
    return total
