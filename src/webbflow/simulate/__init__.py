"""Realistic synthetic NIRCam exposures, their reference files and their truth.

Public API
----------
run_preset(preset, outdir, seed=None) -> list[Path]
    ``demo-imaging`` (16 SUB160 uncal files; ``demo-imaging-2sw`` adds NRCA2, ``demo-imaging-nc102``
    is two mosaic tiles guided on different stars, 0.97" and 0.03 deg apart), ``fullframe`` (one 2048² exposure) or
    ``demo-tso-grism`` (an F322W2 grism time series in 3 SUBGRISM64 segments, its stage-2
    grism references and ``truth/{transit,spectrum,bins,drift}.ecsv``).
tso_grism_specs(seed=None, n_segments=3, ints_per_segment=20, ngroups=6) -> list[ExposureSpec]
    The grism time series at other sizes; ``run_specs(specs, outdir)`` simulates them.
tso_image_specs(seed=None, n_segments=3, ints_per_segment=30, ngroups=8, channel="SW") -> list[ExposureSpec]
    The imaging time series (``demo-tso-imaging``: F210M + WLP8 on NRCA3 SUB64P; ``tso-imaging-lw``:
    F444W on NRCALONG SUB64P), with ``truth/{transit,centroid,star}.ecsv``.
coron_specs(seed=None, nints=2, ngroups=5, ...) -> list[ExposureSpec]
    The coronagraphic program (``demo-coron``: MASK335R + F335M on NRCALONG SUB320A335R, two rolls
    with a companion, a reference star on a small-grid dither), with ``truth/{companion,star_positions}.ecsv``.
program_imaging_specs(seed=None, n_filters=2, n_dithers=4), program_subarray_specs(...) -> list[ExposureSpec]
    (``webbflow.simulate.presets``) The program-scale benchmark's presets (issue 18): ``program-imaging``,
    16 full-frame exposures (NRCA1 F150W/F200W + NRCALONG F356W/F444W, 4 dithers), and
    ``program-subarray``, 32 SUB160 and SUB64P exposures; smaller with fewer filters or dithers.
simulate_exposure(spec, outdir, rng=None) -> Path
    One exposure from an :class:`ExposureSpec` (every knob is a field).
write_references(detector, geometry, outdir, rng=None) -> dict[str, Path]
    The seven stage-1 CRDS-format references of a detector model.
write_stage2_references(outdir, detector, geometry, filter, pupil, ref_seed) -> dict[str, Path]
    FLAT, PHOTOM, AREA and DISTORTION (ASDF) of the simulated optics.
make_catalog(ra, dec, seed=...) -> Table
    The sky (``ExposureSpec(scene="sky")``): stars and galaxies with RA/Dec and
    ``flux_<filter>`` (Jy); placed through the true attitude + distortion.

Output layout (``docs/contracts.md``): ``<outdir>/uncal/<root>_uncal.fits``,
``<outdir>/refs/webbflow_<det>_<reftype>_<subarray>.fits``,
``<outdir>/truth/<root>_{truth_rate.fits,cosmic_rays.ecsv,first_saturated.fits}``;
sky scenes add ``truth/sources.ecsv`` (the catalogue), ``truth/<root>_sources.ecsv``
(pixel positions, rates, fluxes) and ``truth/pointing.ecsv`` (injected pointing errors), and
``<outdir>/astrometry/gaia_dr3_like.ecsv``: the field's stars as Gaia DR3 lists them (epoch 2016.0, proper
motions, Gaia-like errors; the image3 ``abs_refcat`` of the demo).
"""

from webbflow.simulate.detector_model import DetectorModel, delinearize, linearize
from webbflow.simulate.detectors import DETECTORS, READ_PATTERNS, Geometry, frame_time, subarray_geometry
from webbflow.simulate.exposure import (SimulatedExposure, detector_model_for, simulate_exposure,
                                        write_references)
from webbflow.simulate.coron import CoronScene
from webbflow.simulate.presets import (PRESETS, coron_specs, preset_specs, run_preset, run_specs, tso_grism_specs,
                                      tso_image_specs)
from webbflow.simulate.sky import make_catalog
from webbflow.simulate.spec import ExposureSpec, Star
from webbflow.simulate.stage2_refs import write_stage2_references
from webbflow.transit import TransitParams
from webbflow.simulate.tso_grism import TsoGrismScene
from webbflow.simulate.tso_image import TsoImageScene, TsoPsf
from webbflow.simulate.writers import REFTYPES, reference_path

__all__ = [
    "DETECTORS", "READ_PATTERNS", "PRESETS", "REFTYPES",
    "DetectorModel", "ExposureSpec", "Geometry", "SimulatedExposure", "Star",
    "delinearize", "detector_model_for", "frame_time", "linearize", "preset_specs",
    "reference_path", "run_preset", "simulate_exposure", "subarray_geometry", "write_references",
    "make_catalog", "write_stage2_references", "run_specs", "tso_grism_specs", "TransitParams",
    "TsoGrismScene", "TsoImageScene", "TsoPsf", "tso_image_specs", "CoronScene", "coron_specs",
]
