"""Named simulation presets (``webbflow simulate PRESET OUTDIR``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.time import Time, TimeDelta

from webbflow.simulate.exposure import pointing_truth, simulate_exposure
from webbflow.simulate.headers import exposure_timing
from webbflow.simulate.spec import ExposureSpec
from webbflow.transit import TransitParams
from webbflow.simulate.writers import write_pointing_truth

__all__ = ["CORON_CONFIGS", "PRESETS", "preset_specs", "run_preset", "run_specs", "tso_grism_specs", "tso_image_specs",
           "coron_specs", "program_imaging_specs", "program_subarray_specs"]

DEMO_SEED = 20250314
FULLFRAME_SEED = 424242
TSO_GRISM_SEED = 20250601

# INTRAMODULEBOX-like 4-point dither offsets, arcsec.
_DITHERS = ((0.0, 0.0), (1.5, 0.6), (-0.6, 1.5), (0.9, -1.2))
# (visit group, SW filter, LW filter): one observation, two filter pairs.
_FILTER_PAIRS = ((2, "F150W", "F356W"), (3, "F200W", "F444W"))


def _demo_specs(seed):
    base = ExposureSpec(
        subarray="SUB160", readpatt="SHALLOW4", nints=2, ngroups=6, program=1234,
        observation=1, visit=1, n_dither=len(_DITHERS), sky=2.0, n_stars=25, n_galaxies=6,
        star_rate_range=(20.0, 3000.0), n_saturating_stars=3, one_over_f=1.0,
        cr_rate=2e-4, snowballs=1, zeroframe=True, ref_seed=seed + 1, scene_seed=seed + 2,
        date_obs="2025-03-14T10:00:00.000", scene="sky",
    )
    # Pointing error per dither (both channels share the attitude): 0.05-0.2 arcsec, random angle.
    rng = np.random.default_rng([seed, 99])
    size = rng.uniform(0.05, 0.2, len(_DITHERS) * len(_FILTER_PAIRS))
    angle = rng.uniform(0, 2 * np.pi, size.size)
    errors = np.column_stack([size * np.cos(angle), size * np.sin(angle)])
    start = Time(base.date_obs, format="isot", scale="utc")
    specs = []
    n = 0
    for vg, sw, lw in _FILTER_PAIRS:
        for d, offset in enumerate(_DITHERS):
            # SW and LW detectors are read simultaneously: same times, same exposure number.
            t = (start + TimeDelta(n * 60.0, format="sec")).isot
            common = dict(visit_group=vg, exposure=d + 1, dither_position=d + 1,
                          dither_offset=offset, date_obs=t,
                          pointing_error=(float(errors[n, 0]), float(errors[n, 1])))
            specs.append(replace(base, detector="NRCA1", filter=sw, seed=seed + 10 * n + 3,
                                 **common))
            specs.append(replace(base, detector="NRCALONG", filter=lw, seed=seed + 10 * n + 4,
                                 **common))
            n += 1
    return specs


def _demo_two_sw_specs(seed):
    """The demo with a second SW detector of module A in every exposure (issue 17 part 2).

    NRCA2's 160-pixel subarray sits at its bottom-right corner (xstart 1889, ystart 1: the row
    next to the A1/A2 gap), about 2" from NRCA1's SUB160 on the sky and inside the LW field, so
    both SW detectors of one exposure see the same stars as the LW one.  The sky is a little
    larger (11" half side) so that the dithers keep NRCA2 inside it.
    """
    specs = []
    for spec in _demo_specs(seed):
        spec = replace(spec, field_half_size=11.0)
        specs.append(spec)
        if spec.detector == "NRCA1":
            specs.append(replace(spec, detector="NRCA2", size=160, corner=(1889, 1), seed=spec.seed + 5))
    return specs

# NC-102 (JDox NIRCam known issues): tiles of one mosaic guided on different guide stars.  Tile
# centres (arcsec, RA cos Dec and Dec) and the two dithers inside each tile; the tiles overlap by
# about half a SW SUB160 field.
NC102_TILES = ((0.0, 0.0), (0.0, 2.6))
NC102_DITHERS = ((0.0, 0.0), (0.6, -0.5))
NC102_TILE_ERROR = ((0.06, -0.04, 0.0), (0.8, 0.55, 0.03))
"""True minus commanded attitude of each tile: RA cos Dec and Dec (arcsec), roll (deg).  The
second tile's guide star sits 0.97" (and 0.03 deg of roll) from where its guide-star catalog put it."""


def _nc102_specs(seed):
    """Two mosaic tiles of one observation whose guide stars disagree by 0.7" (NC-102, issue 17 part 5).

    Each tile is a visit of two dithers of the demo's F150W + F356W SUB160 exposures (8 files).  The
    first tile's pointing is off by 0.07" (as the demo's), the second's by 0.97" and 0.03 deg of
    roll (:data:`NC102_TILE_ERROR`): beyond the demo's 0.5" search radius, so relative alignment
    cannot tie the tiles and the second keeps its error.  The sky is larger (12" half side).
    """
    base = replace(_demo_specs(seed)[0], field_half_size=12.0, n_dither=len(NC102_DITHERS))
    start = Time(base.date_obs, format="isot", scale="utc")
    _, sw, lw = _FILTER_PAIRS[0]
    specs = []
    n = 0
    for tile, ((tx, ty), (ex, ey, roll)) in enumerate(zip(NC102_TILES, NC102_TILE_ERROR)):
        for d, (dx, dy) in enumerate(NC102_DITHERS):
            t = (start + TimeDelta(n * 60.0 + tile * 1800.0, format="sec")).isot
            common = dict(visit=tile + 1, exposure=d + 1, dither_position=d + 1, dither_offset=(tx + dx, ty + dy),
                          date_obs=t, pointing_error=(ex, ey), roll_error=roll)
            specs.append(replace(base, detector="NRCA1", filter=sw, seed=seed + 10 * n + 3, **common))
            specs.append(replace(base, detector="NRCALONG", filter=lw, seed=seed + 10 * n + 4, **common))
            n += 1
    return specs


def _demo_wisps_specs(seed):
    """NRCA3 exposures with wisps (issue 17 part 6, NC-103): F150W and F200W, two dithers each.

    A 320-pixel subarray in NRCA3's top-left corner (xstart 1, ystart 1729: next to the module's
    pointing reference, so that the sky field covers it; the field is a little larger, 14" half
    side) sees the wisp's arc and blob (:mod:`webbflow.simulate.wisps`).  Each exposure's wisp has
    its own brightness, 4-8 % of the 2 DN/s sky at its peak; the templates go to ``wisps/`` and
    the injected amplitudes to ``truth/wisps.ecsv``.
    """
    rng = np.random.default_rng([seed, 17])
    specs = []
    for spec in _demo_specs(seed):
        if spec.detector != "NRCA1" or spec.dither_position > 2:
            continue
        specs.append(replace(spec, detector="NRCA3", subarray="SUB320", size=320, corner=(1, 1729),
                             observation=4, n_dither=2, field_half_size=14.0,
                             wisp=float(rng.uniform(0.04, 0.08) * spec.sky), seed=spec.seed + 7))
    return specs


def _fullframe_specs(seed):
    return [ExposureSpec(
        detector="NRCA1", subarray="FULL", readpatt="BRIGHT2", nints=1, ngroups=10,
        filter="F200W", program=1234, observation=2, visit=1, sky=0.5, n_stars=400,
        n_galaxies=150, star_rate_range=(2.0, 500.0), n_saturating_stars=20, one_over_f=2.0,
        cr_rate=2e-5, snowballs=3, zeroframe=True, seed=seed, ref_seed=seed + 1,
        scene_seed=seed + 2,
    )]


PROGRAM_SEED = 20251118


def _program_specs(seed, base, detectors, filter_pairs=_FILTER_PAIRS, dithers=_DITHERS):
    """A dithered imaging program (issue 18): every filter pair x dither x detector of ``base``.

    ``detectors`` are (detector, channel, subarray) rows: an SW detector takes the pair's
    SW filter and an LW one its LW filter; all detectors of one dither are read at the same time (one
    exposure number).  The pointing error per dither is drawn as in the demo (0.05-0.2 arcsec).
    """
    rng = np.random.default_rng([seed, 18])
    n_exp = len(filter_pairs) * len(dithers)
    size, angle = rng.uniform(0.05, 0.2, n_exp), rng.uniform(0, 2 * np.pi, n_exp)
    start = Time(base.date_obs, format="isot", scale="utc")
    specs = []
    n = 0
    for vg, sw, lw in filter_pairs:
        for d, offset in enumerate(dithers):
            common = dict(visit_group=vg, exposure=d + 1, dither_position=d + 1, n_dither=len(dithers),
                          dither_offset=offset, date_obs=(start + TimeDelta(n * 300.0, format="sec")).isot,
                          pointing_error=(float(size[n] * np.cos(angle[n])), float(size[n] * np.sin(angle[n]))))
            for k, (detector, channel, subarray) in enumerate(detectors):
                specs.append(replace(base, detector=detector, subarray=subarray, filter=sw if channel == "SW" else lw,
                                     seed=seed + 10 * n + 3 + k, **common))
            n += 1
    return specs


def program_imaging_specs(seed=None, n_filters=2, n_dithers=4):
    """``program-imaging``: a full-frame imaging program, the benchmark of issue 18.

    NRCA1 (SW: F150W, F200W) and NRCALONG (LW: F356W, F444W) read together, ``n_filters`` filter
    pairs x ``n_dithers`` dithers (default 2 x 4: 16 full-frame exposures, 1 x 10 x 2048 x 2048,
    BRIGHT2 as the ``fullframe`` preset) with their stage-1 and stage-2 references (``refs/``).  The
    sky is a 60" half-side field of 600 stars and 200 galaxies.

    Parameters
    ----------
    seed : int, optional
        Master seed (default :data:`PROGRAM_SEED`).
    n_filters : int
        Filter pairs (1 or 2; the benchmark's ``--quick`` program takes 1).
    n_dithers : int
        Dither positions (1-4).

    Returns
    -------
    list of ExposureSpec
    """
    seed = PROGRAM_SEED if seed is None else int(seed)
    base = ExposureSpec(
        detector="NRCA1", subarray="FULL", readpatt="BRIGHT2", nints=1, ngroups=10, program=1180,
        observation=1, visit=1, sky=0.5, n_stars=600, n_galaxies=200, star_rate_range=(2.0, 500.0),
        n_saturating_stars=10, one_over_f=2.0, cr_rate=2e-5, snowballs=2, zeroframe=True,
        ref_seed=seed + 1, scene_seed=seed + 2, field_half_size=60.0,
        date_obs="2025-11-18T06:00:00.000", scene="sky")
    return _program_specs(seed, base, (("NRCA1", "SW", "FULL"), ("NRCALONG", "LW", "FULL")),
                          _FILTER_PAIRS[:n_filters], _DITHERS[:n_dithers])


def program_subarray_specs(seed=None, n_filters=2, n_dithers=4):
    """``program-subarray``: many small-subarray exposures (issue 18's second case).

    Each dither reads NRCA1 and NRCALONG in SUB160 (the demo's SHALLOW4, 2 x 6) and NRCA1 and
    NRCALONG again in SUB64P (1 x 6 groups): 2 filter pairs x 4 dithers x 4 = 32 exposures by
    default, whose cost is almost all the fixed cost of a job.

    Parameters
    ----------
    seed : int, optional
        Master seed (default :data:`PROGRAM_SEED` + 1).
    n_filters, n_dithers : int
        As :func:`program_imaging_specs`.

    Returns
    -------
    list of ExposureSpec
    """
    seed = PROGRAM_SEED + 1 if seed is None else int(seed)
    base = replace(_demo_specs(DEMO_SEED)[0], program=1181, ref_seed=seed + 1, scene_seed=seed + 2,
                   date_obs="2025-11-19T06:00:00.000")
    sub160 = _program_specs(seed, base, (("NRCA1", "SW", "SUB160"), ("NRCALONG", "LW", "SUB160")),
                            _FILTER_PAIRS[:n_filters], _DITHERS[:n_dithers])
    sub64 = _program_specs(seed + 1000, replace(base, observation=2, nints=1, n_saturating_stars=0),
                           (("NRCA1", "SW", "SUB64P"), ("NRCALONG", "LW", "SUB64P")),
                           _FILTER_PAIRS[:n_filters], _DITHERS[:n_dithers])
    return sub160 + sub64


def _time_series_base(seed, n_segments, ints_per_segment, **fields):
    """Segment 1 of a time series of program 1366 (one star, RAPID, TSOVISIT), without its scene."""
    common = dict(readpatt="RAPID", nints=ints_per_segment, tsovisit=True, program=1366, visit=1,
                  visit_group=3, sequence=1, activity=1, exposure=1, target="WEBBFLOW-TRANSIT",
                  ra=110.2, dec=-45.1, date_obs="2025-06-01T03:00:00.000", sky=1.0, n_stars=0,
                  n_galaxies=0, n_saturating_stars=0, one_over_f=2.0, snowballs=0, zeroframe=True,
                  ref_seed=seed + 1, scene_seed=seed + 2,
                  segment=(1, n_segments, 1, n_segments * ints_per_segment))
    return ExposureSpec(**{**common, **fields})


def _segments(base, scene_name, scene, seed):
    """The segment files of ``base``'s exposure (its ``segment`` gives how many), each with its noise seed."""
    n_segments, nints = base.segment[1], base.segment[3]
    per = base.nints
    return [replace(base, scene=scene_name, tso=scene, seed=seed + 10 * k + 3,
                    segment=(k + 1, n_segments, 1 + k * per, nints))
            for k in range(n_segments)]


def tso_grism_specs(seed=None, n_segments=3, ints_per_segment=20, ngroups=6, filter="F322W2",
                    subarray="SUBGRISM64"):
    """One LW grism time series (GRISMR, 4 outputs) in ``n_segments`` files.

    The ``demo-tso-grism`` preset with its defaults; tests and benchmarks take other sizes
    (e.g. ``ints_per_segment=100`` for jump's sigma-clip regime).

    Parameters
    ----------
    seed : int, optional
        Master seed (default :data:`TSO_GRISM_SEED`).
    n_segments, ints_per_segment, ngroups : int
        Segment files, integrations per file, groups per integration (RAPID).
    filter : {"F322W2", "F444W"}
        The filter (sets XREF_SCI/YREF_SCI, the band and the truth bins).
    subarray : {"SUBGRISM64", "SUBGRISM128", "SUBGRISM256"}
        The strip (all start at row 1: the trace sits at row ~34 of each).

    Returns
    -------
    list of ExposureSpec
        One per segment, in order.

    Notes
    -----
    The transit is time-compressed: a 0.0165-day orbit at a/R* = 7 puts the whole transit
    (~70 s, ingress ~8 s) in the middle of the ~2.4-minute exposure, with ~15 integrations of
    baseline on each side.  rp = 0.10 at 3.2 µm rising by 0.01 per µm gives depths from 0.0085
    (2.45 µm) to 0.0118 (3.95 µm); limb darkening weakens to the red.
    """
    from webbflow.simulate.tso_grism import TSGRISM_FILTERS, TsoGrismScene

    seed = TSO_GRISM_SEED if seed is None else int(seed)
    siaf = TSGRISM_FILTERS[filter]
    base = _time_series_base(
        seed, n_segments, ints_per_segment, detector="NRCALONG", subarray=subarray, noutputs=4,
        ngroups=ngroups, filter=filter, pupil="GRISMR", exp_type="NRC_TSGRISM", observation=2,
        xref_sci=siaf["xref_sci"], yref_sci=siaf["yref_sci"], cr_rate=2e-4)
    tm = exposure_timing(base)
    mid = tm["start"] + 0.5 * tm["duration"] / 86400.0
    transit = TransitParams(t0=mid + 2.0 / 86400.0, per=0.0165, a=7.0, inc=88.0, rp=0.10, rp_slope=0.01,
                            wave_ref=3.2, u1=0.12, u2=0.10, u1_slope=-0.02, u2_slope=-0.01)
    scene = TsoGrismScene(transit=transit, peak_rate=20000.0, teff=4500.0, sigma_ref=1.2,
                          drift_rate=0.05 / tm["duration"], jitter_rms=0.01, jitter_seed=seed + 5)
    return _segments(base, "tso_grism", scene, seed)


TSO_IMAGE_SEED = 20250602

# Per channel: detector, subarray, filter, pupil, XREF_SCI/YREF_SCI (1-based; None: the centre),
# PSF, total rate (DN/s), limb darkening at the filter's pivot, observation number.
_TSO_IMAGE_SETUPS = {
    # weak lens +8 waves on the SW time-series aperture NRCA3_SUB64P (reference columns 1-4 on the
    # left): the donut is centred on the light-sensitive 60 columns
    "SW": dict(detector="NRCA3", subarray="SUB64P", filter="F210M", pupil="WLP8", xref_sci=35.0, yref_sci=32.5,
               psf=dict(r_outer=20.0, r_inner=8.0, sigma=1.5), total_rate=3.0e6, u=(0.22, 0.16), observation=3),
    # an in-focus LW imaging time series (NRCA5_SUB64P, no reference pixels)
    "LW": dict(detector="NRCALONG", subarray="SUB64P", filter="F444W", pupil="CLEAR", xref_sci=None, yref_sci=None,
               psf=dict(sigma=1.0), total_rate=2.0e5, u=(0.10, 0.08), observation=4),
}


def tso_image_specs(seed=None, n_segments=3, ints_per_segment=30, ngroups=8, channel="SW"):
    """One imaging time series (NRC_TSIMAGE, SUB64P, 1 output) in ``n_segments`` files.

    The ``demo-tso-imaging`` preset with its defaults (SW: F210M + WLP8 on NRCA3); ``channel="LW"``
    is the ``tso-imaging-lw`` preset's in-focus F444W star on NRCALONG.

    Parameters
    ----------
    seed : int, optional
        Master seed (default :data:`TSO_IMAGE_SEED`).
    n_segments, ints_per_segment, ngroups : int
        Segment files, integrations per file, groups per integration (RAPID).
    channel : {"SW", "LW"}

    Returns
    -------
    list of ExposureSpec
        One per segment, in order.

    Notes
    -----
    As in the grism demo the transit is time-compressed: the period is 10 × the exposure's duration
    at a/R* = 7, which puts a transit lasting about half the exposure just after its middle, with
    baseline on both sides; rp = 0.10 (depth 1 %).  The pointing drifts by (0.04, 0.03) px over the
    exposure, jitters by 0.01 px rms per axis and steps by (0.08, −0.06) px (0.1 px) at 85 % of
    the exposure, in the post-transit baseline.
    """
    from webbflow.simulate.tso_image import TsoImageScene, TsoPsf

    seed = TSO_IMAGE_SEED if seed is None else int(seed)
    setup = _TSO_IMAGE_SETUPS[channel]
    nints = n_segments * ints_per_segment
    base = _time_series_base(
        seed, n_segments, ints_per_segment, detector=setup["detector"], subarray=setup["subarray"],
        ngroups=ngroups, filter=setup["filter"], pupil=setup["pupil"], exp_type="NRC_TSIMAGE",
        observation=setup["observation"], xref_sci=setup["xref_sci"], yref_sci=setup["yref_sci"], cr_rate=5e-4)
    tm = exposure_timing(base)
    duration_d = tm["duration"] / 86400.0
    from webbflow.simulate.optics import FILTERS

    u1, u2 = setup["u"]
    transit = TransitParams(t0=tm["start"] + 0.52 * duration_d, per=10.0 * duration_d, a=7.0, inc=88.0,
                            rp=0.10, wave_ref=FILTERS[setup["filter"]][0], u1=u1, u2=u2)
    scene = TsoImageScene(transit=transit, total_rate=setup["total_rate"], psf=TsoPsf(**setup["psf"]),
                          drift_rate=(0.04 / tm["duration"], 0.03 / tm["duration"]), jitter_rms=0.01,
                          jitter_seed=seed + 5, step_integration=int(round(0.85 * nints)) + 1,
                          step=(0.08, -0.06))
    return _segments(base, "tso_image", scene, seed)


CORON_SEED = 20250720

# Small-grid-dither offsets (arcsec; pancake's create_SGD, coron-algorithms.md §1).
SGD_PATTERNS = {
    "5-POINT-BOX": ((0.0, 0.0), (0.015, 0.015), (-0.015, 0.015), (-0.015, -0.015), (0.015, -0.015)),
    "5-POINT-DIAMOND": ((0.0, 0.0), (0.0, 0.02), (0.02, 0.0), (0.0, -0.02), (-0.02, 0.0)),
    "9-POINT-CIRCLE": ((0.0, 0.0), (0.015, 0.015), (-0.015, 0.015), (-0.015, -0.015), (0.015, -0.015),
                       (0.0, 0.02), (0.02, 0.0), (0.0, -0.02), (-0.02, 0.0)),
}
"""SMGRDPAT -> offsets (arcsec on the sky, RA·cos Dec and Dec) of each dither point."""


CORON_CONFIGS = {
    # CORONMSK -> (detector, subarray, filter): the round masks of module A
    "MASKA335R": ("NRCALONG", "SUB320A335R", "F335M"),
    "MASKA430R": ("NRCALONG", "SUB320A430R", "F430M"),
    "MASKA210R": ("NRCA2", "SUB640A210R", "F210M"),
    # the LW bar: F335M's point 3.875" from the bar centre (HWHM ~0.43")
    "MASKALWB": ("NRCALONG", "SUB320ALWB", "F335M"),
}
"""Coronagraph configurations :func:`coron_specs` draws (coron-algorithms.md §1)."""


def coron_specs(seed=None, nints=2, ngroups=5, readpatt="MEDIUM2", sgd_pattern="5-POINT-BOX", rolls=(75.0, 85.0),
                contrast=1.0e-4, separation=1.5, position_angle=60.0, dark_ref_noise=6.0, one_over_f=3.0,
                mask="MASKA335R"):
    """A coronagraphic program (NRC_CORON): MASK335R + F335M on NRCALONG's SUB320A335R, or another round mask.

    The ``demo-coron`` preset with its defaults: the target at two rolls (observations 1 and 2, one
    target acquisition each), a companion of ``contrast`` at ``separation``/``position_angle``, and a
    brighter reference star (IS_PSF = T, observation 3) on a small-grid dither.

    Parameters
    ----------
    seed : int, optional
        Master seed (default :data:`CORON_SEED`).
    nints, ngroups, readpatt
        Ramp shape of every exposure.
    sgd_pattern : str
        :data:`SGD_PATTERNS` key of the reference star's dither.
    rolls : (float, float)
        V3 position angles (deg) of the two science observations.
    contrast, separation, position_angle : float
        The companion (flux ratio, arcsec, deg east of north).
    dark_ref_noise : float
        DN rms per frame of the DARK reference (NC-CI01: subtracting it adds noise).
    one_over_f : float
        1/f rms (DN), which no reference pixel of the subarray can remove.
    mask : str
        :data:`CORON_CONFIGS` key: the occulter, and with it the detector, subarray and filter
        (``MASKA210R``: the SW case, F210M on NRCA2's SUB640A210R; ``MASKALWB``: the LW bar, F335M on
        NRCALONG's SUB320ALWB with the star at F335M's point along the bar).

    Returns
    -------
    list of ExposureSpec
        Science roll 1, science roll 2, then the reference's dither points.

    Notes
    -----
    Target acquisition leaves each observation off the occulter by a draw of 5 mas per axis; each SGD
    point adds a 2 mas fine-steering error (pancake's ``get_ta_error``/``get_fsm_error``).  The
    wavefront (20 nm rms low order, 30 nm rms of mid-spatial-frequency speckle screen shared by all
    exposures) drifts by 2 nm between the rolls and by 4 nm on the reference (low order).  The star
    leaks 0.24 % of its flux past the mask; the speckles at the companion's separation reach ~1/10
    of its peak.
    """
    from webbflow.simulate.coron import CORON_MASKS, CoronScene, bar_offset
    from webbflow.simulate.detectors import subarray_geometry
    from webbflow.simulate.optics import SIAF

    seed = CORON_SEED if seed is None else int(seed)
    rng = np.random.default_rng([seed, 15])
    detector, subarray, filter_name = CORON_CONFIGS[mask]
    # the target is pointed at the filter's point along a bar (XREF_SCI; the subarray centre for round masks)
    xref = ((subarray_geometry(detector, subarray).xsize + 1) / 2.0 + bar_offset(mask, filter_name) / SIAF[detector][3]
            if CORON_MASKS[mask][1] == "MASKBAR" else None)
    scene = CoronScene(star_rate=5.0e6, contrast=contrast, separation=separation, position_angle=position_angle,
                       wfe_nm=20.0, speckle_nm=30.0, wfe_seed=seed + 3, mask=mask)
    base = ExposureSpec(
        detector=detector, subarray=subarray, readpatt=readpatt, nints=nints, ngroups=ngroups,
        filter=filter_name, pupil=CORON_MASKS[mask][1], exp_type="NRC_CORON", program=1412, visit=1, visit_group=2,
        xref_sci=xref,
        sequence=1, activity=1, exposure=1, sky=0.3, n_stars=0, n_galaxies=0, n_saturating_stars=0,
        one_over_f=one_over_f, one_over_f_common=1.0, amp_offsets=20.0, cr_rate=3e-4, snowballs=0, zeroframe=True,
        ref_seed=seed + 1, scene_seed=seed + 2, scene="coron", dark_ref_noise=dark_ref_noise,
        target="WEBBFLOW-CORON", ra=201.15, dec=-51.50, date_obs="2025-07-20T02:00:00.000", coron=scene)
    specs = []
    t0 = Time(base.date_obs, format="isot", scale="utc")
    for k, roll in enumerate(rolls):
        ta = tuple(float(v) for v in rng.normal(0.0, 0.005, 2))
        specs.append(replace(base, observation=k + 1, roll=float(roll), pointing_error=ta, seed=seed + 10 * k + 5,
                             date_obs=(t0 + TimeDelta(3600.0 * k, format="sec")).isot,
                             coron=replace(scene, drift_nm=2.0 * k, drift_seed=k + 1)))
    offsets = SGD_PATTERNS[sgd_pattern]
    ta = rng.normal(0.0, 0.005, 2)
    ref = replace(scene, star_rate=2.0 * scene.star_rate, contrast=0.0, is_psf=True, drift_nm=4.0, drift_seed=9,
                  sgd_pattern=sgd_pattern)
    for d, offset in enumerate(offsets):
        fsm = rng.normal(0.0, 0.002, 2)
        specs.append(replace(base, observation=3, exposure=d + 1, dither_position=d + 1, n_dither=len(offsets),
                             dither_offset=offset, pointing_error=(float(ta[0] + fsm[0]), float(ta[1] + fsm[1])),
                             roll=float(rolls[0]) + 2.0, target="WEBBFLOW-CORON-REF", ra=203.4, dec=-50.9,
                             date_obs=(t0 + TimeDelta(7200.0 + 300.0 * d, format="sec")).isot,
                             seed=seed + 100 + 10 * d, coron=ref))
    return specs


PRESETS = {
    "demo-imaging": _demo_specs,
    # the demo with two SW detectors per exposure (NRCA1 + NRCA2): detector groups in tweakreg
    "demo-imaging-2sw": _demo_two_sw_specs,
    # two mosaic tiles guided on different stars (NIRCam known issue NC-102)
    "demo-imaging-nc102": _nc102_specs,
    # NRCA3 with wisps and their templates (NC-103): image2's wisps step
    "demo-imaging-wisps": _demo_wisps_specs,
    "fullframe": _fullframe_specs,
    "demo-tso-grism": tso_grism_specs,
    # larger time series for tests and benchmarks (issue #13): jump's sigma-clip regime (>= 100
    # integrations in one file), and the F444W trace
    "tso-grism-sigclip": lambda seed: tso_grism_specs(seed, n_segments=2, ints_per_segment=100),
    "tso-grism-f444w": lambda seed: tso_grism_specs(seed, filter="F444W"),
    "demo-tso-imaging": tso_image_specs,
    # the LW imaging time series (in focus, F444W), smaller: for tests
    "tso-imaging-lw": lambda seed: tso_image_specs(seed, n_segments=2, ints_per_segment=15, channel="LW"),
    "demo-coron": coron_specs,
    # the same program behind the LW bar (MASKALWB, F335M at its point along the bar, SUB320ALWB)
    "demo-coron-bar": lambda seed: coron_specs(seed, mask="MASKALWB"),
    # issue 18's program-scale benchmark: 16 full-frame exposures, and 32 SUB160/SUB64P ones
    "program-imaging": program_imaging_specs,
    "program-subarray": program_subarray_specs,
}
"""Preset name -> function(seed) -> list of ExposureSpec."""

_DEFAULT_SEEDS = {"demo-imaging": DEMO_SEED, "demo-imaging-2sw": DEMO_SEED,
                  "demo-imaging-nc102": DEMO_SEED, "demo-imaging-wisps": DEMO_SEED,
                  "fullframe": FULLFRAME_SEED, "demo-tso-grism": TSO_GRISM_SEED,
                  "tso-grism-sigclip": TSO_GRISM_SEED, "tso-grism-f444w": TSO_GRISM_SEED,
                  "demo-tso-imaging": TSO_IMAGE_SEED, "tso-imaging-lw": TSO_IMAGE_SEED, "demo-coron": CORON_SEED,
                  "demo-coron-bar": CORON_SEED,
                  "program-imaging": PROGRAM_SEED, "program-subarray": PROGRAM_SEED + 1}


def preset_specs(preset, seed=None):
    """The exposure specs of ``preset`` (``seed`` None: the preset's default)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    default = _DEFAULT_SEEDS[preset]
    return PRESETS[preset](default if seed is None else int(seed))


def run_preset(preset, outdir, seed=None, after_each=None):
    """Simulate every exposure of ``preset`` into ``outdir``.

    Parameters
    ----------
    preset : {"demo-imaging", "demo-imaging-2sw", "demo-imaging-nc102", "demo-imaging-wisps", "fullframe", "demo-tso-grism", "tso-grism-sigclip", "tso-grism-f444w",
              "demo-tso-imaging", "tso-imaging-lw", "demo-coron", "demo-coron-bar", "program-imaging",
              "program-subarray"}
    outdir : path-like
    seed : int, optional
        Master seed (default: the preset's own, so runs are reproducible).
    after_each : callable, optional
        Called with the list of uncal files written so far after each exposure (see
        :func:`run_specs`).

    Returns
    -------
    list of pathlib.Path
        The uncal files written, in simulation order.

    Notes
    -----
    The grism time series (``demo-tso-grism``, ``tso-grism-*``) also write the stage-2 grism references into ``refs/``
    (:func:`webbflow.simulate.grism_refs.write_tso_grism_references`) and the
    time-series truth ``truth/{transit,spectrum,bins,drift}.ecsv``; the imaging time series
    (``demo-tso-imaging``, ``tso-imaging-lw``) their stage-2 imaging references for NRC_TSIMAGE
    (:func:`webbflow.simulate.tso_image.write_tso_image_references`) and ``truth/{transit,centroid,star}.ecsv``;
    ``demo-imaging-wisps`` its wisp templates (``wisps/WISP_<DET>_<FILTER>_<PUPIL>.fits``,
    :mod:`webbflow.simulate.wisps`) and ``truth/wisps.ecsv``;
    the coronagraphic ``demo-coron`` its stage-2 references and PSFMASK for NRC_CORON
    (:func:`webbflow.simulate.coron.write_coron_references`) and ``truth/{companion,star_positions}.ecsv``.
    """
    return run_specs(preset_specs(preset, seed), outdir, after_each=after_each)


def run_specs(specs, outdir, after_each=None):
    """Simulate ``specs`` (a preset's exposures) into ``outdir``, with the preset's extra products.

    Parameters
    ----------
    specs : list of ExposureSpec
    outdir : path-like
    after_each : callable, optional
        ``after_each(paths)`` with the uncal files written so far, after each exposure (the demo's
        progress hook; tests interrupt the simulation there).

    Returns
    -------
    list of pathlib.Path
        The uncal files written, in order.
    """
    tso_image = [s for s in specs if s.scene == "tso_image"]
    if tso_image and (len({s.rootname.split("-seg")[0] for s in tso_image}) != 1
                      or any(s.scene == "tso_grism" for s in specs)):
        raise ValueError("a preset holds one time series (its truth/ tables describe one exposure)")
    # Dark references long enough for the longest exposure of each detector.
    need = max(exposure_timing(s)["frames_read"] for s in specs)
    paths = []
    for spec in specs:
        paths.append(simulate_exposure(spec, Path(outdir), n_dark_frames=need))
        if after_each is not None:
            after_each(list(paths))
    sky = [s for s in specs if s.scene == "sky"]
    if sky:
        write_pointing_truth(outdir, [pointing_truth(s) for s in sky])
    if any(s.wisp for s in sky):
        from webbflow.simulate.wisps import write_wisp_truth

        write_wisp_truth(outdir, [s for s in sky if s.wisp])
    tso = [s for s in specs if s.scene == "tso_grism"]
    if tso:
        from webbflow.simulate.grism_refs import write_tso_grism_references
        from webbflow.simulate.tso_grism import write_tso_truth

        exposures = {(s.rootname.split("-seg")[0]) for s in tso}
        if len(exposures) != 1:  # truth/transit.ecsv etc. describe one exposure
            raise ValueError(f"a preset holds one grism time series, not {len(exposures)}")
        write_tso_grism_references(outdir, tso[0])
        write_tso_truth(outdir, tso)
    if tso_image:
        from webbflow.simulate.tso_image import write_tso_image_references, write_tso_image_truth

        write_tso_image_references(outdir, tso_image[0])
        write_tso_image_truth(outdir, tso_image)
    coron = [s for s in specs if s.scene == "coron"]
    if coron:
        from webbflow.simulate.coron import write_coron_references, write_coron_truth

        write_coron_references(outdir, coron[0])
        write_coron_truth(outdir, coron)
    return paths
