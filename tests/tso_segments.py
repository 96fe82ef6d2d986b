"""Simulated time-series segments for the TSO stage-1 tests (parity with jwst and truth).

Each spec is one segment file of a segmented exposure (EXSEGNUM/EXSEGTOT/INTSTART/INTEND,
NINTS of the whole exposure, INT_TIMES of the segment's integrations), as jwst's stage 1 sees it.
"""

from webbflow.simulate import ExposureSpec, Star

TSO_SPECS = {
    # LW grism strip, 4 outputs (the recommended readout): bottom and side reference pixels,
    # per-amplifier offsets and 1/f; the 2nd of 3 segments (integrations 9-16 of 24).
    "grism-4out": ExposureSpec(
        detector="NRCALONG", subarray="SUBGRISM64", readpatt="RAPID", nints=8, ngroups=6,
        filter="F322W2", pupil="GRISMR", exp_type="NRC_TSGRISM", tsovisit=True, segment=(2, 3, 9, 24),
        # the random field is square, so most of it misses a 64-row strip: stars are placed on it
        stars=(Star(300.0, 31.2, 4000.0), Star(1100.0, 33.7, 20000.0), Star(1700.0, 30.4, 1500.0)),
        n_stars=0, n_galaxies=0, n_saturating_stars=0, sky=8.0, one_over_f=2.0, cr_rate=5e-4, seed=31),
    # SW strip read by one output, above the bottom reference rows: side columns only
    # (tso-algorithms.md §1.3); the last of 2 segments.
    "strip-1out": ExposureSpec(
        detector="NRCA1", subarray="SUBGRISM64", noutputs=1, readpatt="RAPID", nints=5, ngroups=5,
        filter="F210M", exp_type="NRC_TSIMAGE", tsovisit=True, segment=(2, 2, 6, 10),
        stars=(Star(500.0, 30.0, 3000.0), Star(1500.0, 35.5, 60000.0)),
        n_stars=0, n_galaxies=0, n_saturating_stars=0, sky=3.0, cr_rate=5e-4, seed=32),
    # >= 100 integrations in one file: jump sigma-clips across integrations (§1.4).
    "sigclip-100": ExposureSpec(
        detector="NRCA1", subarray="SUB160", readpatt="RAPID", nints=100, ngroups=4,
        filter="F210M", exp_type="NRC_TSIMAGE", tsovisit=True, segment=(1, 2, 1, 180),
        n_stars=4, n_galaxies=0, n_saturating_stars=1, cr_rate=2e-3, seed=33),
}
"""Case name -> ExposureSpec of one segment."""


def check_segment_files(paths, per_segment, t_int):
    """Assert that ``paths`` are the consecutive segments of one exposure, as jwst reads them.

    Each opens in stdatamodels with EXSEGNUM k of len(paths), INTSTART/INTEND and INT_TIMES rows for
    its ``per_segment`` integrations (start < mid < end); over the files the integration numbers run
    1..N and the mid-times step by ``t_int`` seconds (no duplicates: white_light drops those).
    """
    import numpy as np
    from stdatamodels.jwst import datamodels

    mids, numbers = [], []
    for k, path in enumerate(paths, start=1):
        with datamodels.open(path) as m:
            e, times = m.meta.exposure, m.int_times
            assert (e.segment_number, e.segment_total) == (k, len(paths))
            assert (e.integration_start, e.integration_end) == (per_segment * (k - 1) + 1, per_segment * k)
            assert list(times["integration_number"]) == list(range(per_segment * (k - 1) + 1, per_segment * k + 1))
            assert np.all(times["int_start_MJD_UTC"] < times["int_mid_MJD_UTC"])
            assert np.all(times["int_mid_MJD_UTC"] < times["int_end_MJD_UTC"])
            mids.extend(times["int_mid_MJD_UTC"])
            numbers.extend(times["integration_number"])
    assert numbers == list(range(1, per_segment * len(paths) + 1))
    assert np.allclose(np.diff(mids) * 86400.0, t_int, rtol=0, atol=1e-4)


def star_only(spec, sim, rate):
    """The source's rate in a simulated time series: undo the pixel response, remove the sky.

    ``sim`` is :func:`webbflow.simulate.simulate_exposure`'s SimulatedExposure; pixels without
    response (reference and dead pixels) are 0.
    """
    import numpy as np

    from webbflow.simulate import optics
    from webbflow.simulate.stage2_refs import flat_response

    response = flat_response(spec.detector, spec.geometry, spec.filter, spec.pupil, spec.ref_seed) * sim.model.qe
    sky = spec.sky * optics.pixel_area_map(spec.detector, spec.geometry)
    good = response > 0
    return np.where(good, rate / np.where(good, response, 1.0) - sky, 0.0)
