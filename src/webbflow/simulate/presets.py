"""Named simulation presets (``webbflow simulate PRESET OUTDIR``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.time import Time, TimeDelta

from webbflow.simulate.exposure import pointing_truth, simulate_exposure
from webbflow.simulate.headers import exposure_timing
from webbflow.simulate.spec import ExposureSpec
from webbflow.simulate.writers import write_pointing_truth

__all__ = ["PRESETS", "preset_specs", "run_preset"]

DEMO_SEED = 20250314
FULLFRAME_SEED = 424242

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


def _fullframe_specs(seed):
    return [ExposureSpec(
        detector="NRCA1", subarray="FULL", readpatt="BRIGHT2", nints=1, ngroups=10,
        filter="F200W", program=1234, observation=2, visit=1, sky=0.5, n_stars=400,
        n_galaxies=150, star_rate_range=(2.0, 500.0), n_saturating_stars=20, one_over_f=2.0,
        cr_rate=2e-5, snowballs=3, zeroframe=True, seed=seed, ref_seed=seed + 1,
        scene_seed=seed + 2,
    )]


PRESETS = {"demo-imaging": _demo_specs, "fullframe": _fullframe_specs}
"""Preset name -> function(seed) -> list of ExposureSpec."""


def preset_specs(preset, seed=None):
    """The exposure specs of ``preset`` (``seed`` None: the preset's default)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    default = DEMO_SEED if preset == "demo-imaging" else FULLFRAME_SEED
    return PRESETS[preset](default if seed is None else int(seed))


def run_preset(preset, outdir, seed=None):
    """Simulate every exposure of ``preset`` into ``outdir``.

    Parameters
    ----------
    preset : {"demo-imaging", "fullframe"}
    outdir : path-like
    seed : int, optional
        Master seed (default: the preset's own, so runs are reproducible).

    Returns
    -------
    list of pathlib.Path
        The uncal files written, in simulation order.
    """
    specs = preset_specs(preset, seed)
    # Dark references long enough for the longest exposure of each detector.
    need = max(exposure_timing(s)["frames_read"] for s in specs)
    paths = [simulate_exposure(s, Path(outdir), n_dark_frames=need) for s in specs]
    sky = [s for s in specs if s.scene == "sky"]
    if sky:
        write_pointing_truth(outdir, [pointing_truth(s) for s in sky])
    return paths
