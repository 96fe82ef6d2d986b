"""Issue #13 "Must show -> Truth": the grism time-series demo reduced in-process, against its truth.

``demo-tso-grism`` (3 segments x 20 integrations, F322W2/SUBGRISM64, 4 outputs, 1/f, cosmic rays,
drift and jitter) is simulated, every segment goes through detector1 -> spec2 -> tso3 (the mode's
recommended line, read from config/modes/tso_grism.yaml: ROEBA on, photom and tso3's
outlier_detection skipped, optimal extraction; and jwst 3.0's defaults), and the light curves of
:mod:`webbflow.lightcurves` are compared with ``truth/transit.ecsv`` and ``truth/bins.ecsv``:

* the white-light depth within 2 sigma of its fitted uncertainty (see the test for why not 1);
* per-bin depth pulls over the 15 truth bins (relative to the white light, after the common-mode
  division): mean within +-0.3, standard deviation 0.7-1.3;
* out-of-transit scatter per spectral channel (column) within 10 % of the products' photon +
  read-noise prediction (FLUX_VAR_POISSON + FLUX_VAR_RNOISE);
* white-light residual rms binned over N integrations following N^-1/2 up to N = 30: never 20 %
  above it (no red noise), never below what white noise gives in 99.5 % of draws (on a longer
  series, 4 segments x 100 integrations);
* jwst's defaults (no 1/f correction beyond the reference pixels) give more false jump flags and a
  higher white-light rms;
* the recommended line's optimal extraction against the box sum on the same calints: its white-light
  depth within 2 sigma of truth, its out-of-transit rms no higher than the box's (2 % margin).

The numbers are printed (``pytest -s``).  Run with ``-m slow``; about 8 minutes on 2 cores.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow.lightcurves import (common_mode, fit_transit, read_x1dints_spectra, replace_lost_pixels,
                                  spectroscopic_light_curves)

pytestmark = pytest.mark.slow


def _recommended():
    import yaml

    with open(Path(__file__).parents[1] / "config" / "modes" / "tso_grism.yaml") as fh:
        layer = yaml.safe_load(fh)["recommended"]
    return tuple(layer.get(stage) or {} for stage in ("detector1", "spec2", "tso3"))


LINES = {"recommended": _recommended(), "jwst": ({}, {}, {})}
"""detector1, spec2 and tso3 parameters of config/modes/tso_grism.yaml's recommended layer (read
from it: ROEBA, photom skipped, tso3's outlier_detection skipped, optimal extraction), and of
``step_defaults: jwst`` (no parameters: the library's steps default to jwst 3.0's)."""


def _reduce(data, line):
    """detector1 -> spec2 on every segment of ``data``, then tso3 on them: the tso3 x1dints path."""
    from webbflow.refs import select_references
    from webbflow.refs.select import SPEC2_REFTYPES
    from webbflow.stages import detector1, spec2

    p1, p2, p3 = LINES[line]
    out = data / line
    out.mkdir(exist_ok=True)
    uncals = sorted((data / "uncal").glob("*_uncal.fits"))
    header = fits.getheader(uncals[0])
    refs1 = select_references(header, data / "refs")
    refs2 = select_references(header, data / "refs", reftypes=SPEC2_REFTYPES)
    cals = []
    for uncal in uncals:
        root = uncal.name.removesuffix("_uncal.fits")
        rateints = out / f"{root}_rateints.fits"
        detector1.run(uncal, out / f"{root}_rate.fits", rateints, refs1, p1)
        cals.append(out / f"{root}_calints.fits")
        spec2.run(rateints, cals[-1], out / f"{root}_x1dints.fits", refs2, p2)
    return _tso3(cals, refs2["extract1d"], p3)


def _tso3(cals, extract1d, params, name="tso3"):
    """tso3 on the calints ``cals``: the x1dints path (``<name>_x1dints.fits`` beside them)."""
    from webbflow.stages import tso3

    out = Path(cals[0]).parent
    x1d = out / f"{name}_x1dints.fits"
    tso3.run(cals, [out / f"{c.name.removesuffix('_calints.fits')}_{name}_crfints.fits" for c in cals], x1d,
             out / f"{name}_whtlt.ecsv", {"extract1d": extract1d}, params)
    return x1d


def _truth(data):
    truth = {k: Table.read(data / "truth" / f"{k}.ecsv") for k in ("transit", "bins", "spectrum")}
    meta = truth["transit"].meta
    params = _params(meta)
    return truth, params


def _params(meta):
    from webbflow.transit import TransitParams

    return TransitParams(t0=meta["t0_mjd_utc"], per=meta["period_d"], a=meta["a_rs"], inc=meta["inc_deg"],
                         rp=meta["rp_ref"], rp_slope=meta["rp_slope_per_um"], wave_ref=meta["wave_ref_um"],
                         u1=meta["u1_ref"], u2=meta["u2_ref"], u1_slope=meta["u1_slope_per_um"],
                         u2_slope=meta["u2_slope_per_um"])


def _band_guess(params, spectrum, lo, hi):
    """The guess for a band: rp, u1, u2 weighted by the stellar rate over the band's columns."""
    w = np.asarray(spectrum["wavelength"].value if hasattr(spectrum["wavelength"], "value") else spectrum["wavelength"])
    rate = np.asarray(spectrum["stellar_rate"], float)
    sel = (w >= lo) & (w < hi)
    weight = rate[sel] / rate[sel].sum()
    return dataclasses.replace(params, rp=float(np.sqrt((np.asarray(spectrum["depth"])[sel] * weight).sum())),
                               u1=float((np.asarray(spectrum["u1"])[sel] * weight).sum()),
                               u2=float((np.asarray(spectrum["u2"])[sel] * weight).sum()),
                               wave_ref=float((w[sel] * weight).sum()), rp_slope=0.0, u1_slope=0.0, u2_slope=0.0)


def _true_depth(time, flux, guess, free):
    """The truth curve fitted with the same model: the depth this fit measures on a noise-free curve.

    A band is a sum of transits with different rp and limb darkening; one quadratic-law transit fitted
    to it has a depth slightly different from the rate-weighted rp^2 (1-2 % for the white light).
    """
    return fit_transit(time, flux, np.full(len(flux), 1e-5), guess, free=free).depth


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from webbflow.simulate import run_preset

    data = tmp_path_factory.mktemp("tso-truth")
    run_preset("demo-tso-grism", data)
    return data, {line: _reduce(data, line) for line in LINES}


@pytest.fixture(scope="module")
def box_x1d(demo):
    """tso3 on the recommended line's calints with jwst's box extraction instead of the optimal one."""
    from webbflow.refs import select_references
    from webbflow.refs.select import SPEC2_REFTYPES

    data, x1d = demo
    cals = sorted(Path(x1d["recommended"]).parent.glob("*_calints.fits"))
    refs = select_references(fits.getheader(sorted((data / "uncal").glob("*_uncal.fits"))[0]), data / "refs",
                             reftypes=SPEC2_REFTYPES)
    params = {k: dict(v) for k, v in LINES["recommended"][2].items()}
    params["extract_1d"] = {**params.get("extract_1d", {}), "method": "box"}
    return _tso3(cals, refs["extract1d"], params, name="box")


@pytest.fixture(scope="module")
def long_series(tmp_path_factory):
    """400 integrations (4 segments x 100: jump's sigma-clip regime), recommended line only."""
    from webbflow.simulate import run_specs, tso_grism_specs

    data = tmp_path_factory.mktemp("tso-truth-long")
    run_specs(tso_grism_specs(n_segments=4, ints_per_segment=100), data)
    return data, _reduce(data, "recommended")


def _white_fit(data, x1d, edges=None):
    truth, params = _truth(data)
    lo, hi = truth["transit"].meta["bin_edges_um"][0], truth["transit"].meta["bin_edges_um"][-1]
    lc = spectroscopic_light_curves(x1d, edges=edges, wave_range=(lo, hi), out_of_transit=params)
    guess = _band_guess(params, truth["spectrum"], lo, hi)
    time = np.asarray(lc["MJD_UTC"].value)
    fit = fit_transit(time, np.asarray(lc["white_flux"]), np.asarray(lc["white_error"]), guess, free=("rp", "t0"))
    return lc, fit, guess, truth, params


def test_white_light_depth_within_its_uncertainty(demo):
    data, x1d = demo
    lc, fit, guess, truth, _ = _white_fit(data, x1d["recommended"])
    # the truth curve sums the columns of the same band (2.45-3.95 um), weighted by the stellar rate
    t_truth = np.asarray(truth["transit"]["int_mid_MJD_UTC"].value)
    np.testing.assert_allclose(np.asarray(lc["MJD_UTC"].value), t_truth, rtol=0, atol=1e-9)
    true = _true_depth(t_truth, np.asarray(truth["transit"]["white_flux"]), guess, ("rp", "t0"))
    pull = (fit.depth - true) / fit.depth_error
    print(f"\nwhite light: depth {fit.depth * 1e6:.1f} +- {fit.depth_error * 1e6:.1f} ppm, truth {true * 1e6:.1f} "
          f"(rate-weighted rp^2 {truth['transit'].meta['white_depth'] * 1e6:.1f}), pull {pull:+.2f}; "
          f"rms {fit.rms * 1e6:.0f} ppm, chi2/dof {fit.redchi2:.2f}; {lc.meta['n_replaced']} column-integrations "
          "with lost pixels filled")
    # 2 sigma, not the 1: one realisation lands within 1 sigma only 68 % of the time, so a
    # 1-sigma assertion on a single seed fails one run in three however right the pipeline is.
    assert abs(pull) < 2, (fit.depth, fit.depth_error, true)
    assert fit.success and abs(fit.values["t0"] - guess.t0) * 86400 < 3 * fit.errors["t0"] * 86400 + 0.5


def test_optimal_extraction_against_the_box(demo, box_x1d):
    """The recommended line's optimal extraction against jwst's box sum on the same calints: the
    white-light depth within 2 sigma of truth (1 sigma printed) and an out-of-transit rms no higher."""
    data, x1d = demo
    numbers = {}
    for method, path in (("optimal", x1d["recommended"]), ("box", box_x1d)):
        lc, fit, guess, truth, _ = _white_fit(data, path)
        t_truth = np.asarray(truth["transit"]["int_mid_MJD_UTC"].value)
        true = _true_depth(t_truth, np.asarray(truth["transit"]["white_flux"]), guess, ("rp", "t0"))
        oot = np.asarray(truth["transit"]["white_flux"]) == 1.0
        time = np.asarray(lc["MJD_UTC"].value)
        rms = np.std(_detrended_oot(np.asarray(lc["white_flux"]), time, oot), ddof=2)
        predicted = np.sqrt(np.mean((np.asarray(lc["white_var_poisson"]) + np.asarray(lc["white_var_rnoise"]))[oot]))
        numbers[method] = (fit.depth, fit.depth_error, (fit.depth - true) / fit.depth_error, rms, rms / predicted,
                           fit.rms)
    print(f"\nwhite light, truth {true * 1e6:.1f} ppm: " + "; ".join(
        f"{m} depth {d * 1e6:.1f} +- {e * 1e6:.1f} ppm (pull {p:+.2f}, {'within' if abs(p) < 1 else 'beyond'} "
        f"1 sigma), out-of-transit rms {r * 1e6:.0f} ppm ({q:.2f} x photon + read noise), fit rms {f * 1e6:.0f} ppm"
        for m, (d, e, p, r, q, f) in numbers.items()))
    assert abs(numbers["optimal"][2]) < 2, numbers
    assert numbers["optimal"][3] < 1.02 * numbers["box"][3], numbers


def test_per_bin_depth_pulls(demo):
    data, x1d = demo
    truth, params = _truth(data)
    edges = truth["transit"].meta["bin_edges_um"]
    lc, white, _, _, _ = _white_fit(data, x1d["recommended"], edges=edges)
    assert len(edges) - 1 >= 10
    time = np.asarray(lc["MJD_UTC"].value)
    t_truth = np.asarray(truth["transit"]["int_mid_MJD_UTC"].value)
    geometry = {k: getattr(white.params, k) for k in ("t0", "a", "inc", "per")}
    # Noise coherent along the trace's rows is common to every bin of an integration (see the scatter
    # test).  The bins are divided by the white light's residual (common_mode), which takes it out
    # of their scatter but hands every bin the white light's own depth error instead: the 15 depths
    # share one draw of it and their pulls' mean would scatter several times more than the
    # 1/sqrt(15) of independent pulls.  So, as a transmission spectrum is measured (relative to its
    # white light, whose depth the test above checks), the pulls are of depth - white depth.
    t_white = np.asarray(truth["transit"]["int_mid_MJD_UTC"].value)
    white_true = _true_depth(t_white, np.asarray(truth["transit"]["white_flux"]),
                             dataclasses.replace(white.params, t0=params.t0), ("rp",))
    cm = common_mode(lc, white)
    pulls, depths = [], []
    for k in range(len(edges) - 1):
        guess = dataclasses.replace(_band_guess(params, truth["spectrum"], edges[k], edges[k + 1]), **geometry)
        fit = fit_transit(time, np.asarray(lc["flux"][:, k]) / cm, np.asarray(lc["error"][:, k]) / cm, guess,
                          free=("rp",))
        true_guess = dataclasses.replace(guess, t0=params.t0)
        true = _true_depth(t_truth, np.asarray(truth["transit"]["bin_flux"][:, k]), true_guess, ("rp",))
        pulls.append(((fit.depth - white.depth) - (true - white_true)) / fit.depth_error)
        depths.append((fit.depth, fit.depth_error, true))
    pulls = np.array(pulls)
    print(f"\nper-bin depth pulls relative to the white light ({len(pulls)} bins; white light {white.depth * 1e6:.0f}"
          f" ppm, truth {white_true * 1e6:.0f}): mean {pulls.mean():+.2f}, std {pulls.std():.2f}: "
          + " ".join(f"{p:+.1f}" for p in pulls))
    assert abs(pulls.mean()) < 0.3 and 0.7 < pulls.std() < 1.3, pulls
    # the injected slope of rp(lambda): the reddest bins are deeper than the bluest
    d = np.array(depths)[:, 0]
    assert d[-3:].mean() > d[:3].mean()


def _detrended_oot(flux, time, oot):
    """Out-of-transit values minus a straight line in time (the drift's slow aperture loss)."""
    t = time[oot] - time[oot].mean()
    a = np.vstack([np.ones_like(t), t]).T
    coef, *_ = np.linalg.lstsq(a, flux[oot], rcond=None)
    return flux[oot] - a @ coef


def test_out_of_transit_scatter_per_channel_matches_photon_and_read_noise(demo):
    data, x1d = demo
    truth, _ = _truth(data)
    s = read_x1dints_spectra(x1d["recommended"])
    flux, lost = replace_lost_pixels(s["flux"], s["npixels"])
    oot = np.asarray(truth["transit"]["white_flux"]) == 1.0
    predicted = np.sqrt(s["flux_var_poisson"] + s["flux_var_rnoise"])
    wave = np.nanmedian(s["wavelength"], axis=0)
    lo, hi = truth["transit"].meta["bin_edges_um"][0], truth["transit"].meta["bin_edges_um"][-1]
    cols = np.flatnonzero(np.isfinite(flux).all(0) & (wave >= lo) & (wave <= hi))
    ratio = np.array([np.std(_detrended_oot(flux[:, c], s["mjd_utc"], oot), ddof=2)
                      / np.sqrt(np.mean(predicted[oot, c] ** 2)) for c in cols])
    # the 15 bins (sums of ~100 columns) for the report: row-coherent noise (1/f left on the trace's
    # rows, see below) adds in step over a bin's columns, so bins exceed the prediction more
    lc = spectroscopic_light_curves(x1d["recommended"], edges=truth["transit"].meta["bin_edges_um"],
                                    out_of_transit=oot)
    time = np.asarray(lc["MJD_UTC"].value)
    bins = [np.std(_detrended_oot(np.asarray(lc["flux"][:, k]), time, oot), ddof=2)
            / np.sqrt(np.mean((np.asarray(lc["var_poisson"][:, k]) + np.asarray(lc["var_rnoise"][:, k]))[oot]))
            for k in range(lc["flux"].shape[1])]
    _, fit, _, _, _ = _white_fit(data, x1d["recommended"], edges=truth["transit"].meta["bin_edges_um"])
    cm = common_mode(lc, fit)
    bins_cm = [np.std(_detrended_oot(np.asarray(lc["flux"][:, k]) / cm, time, oot), ddof=2)
               / np.sqrt(np.mean((np.asarray(lc["var_poisson"][:, k]) + np.asarray(lc["var_rnoise"][:, k]))[oot]))
               for k in range(lc["flux"].shape[1])]
    white = np.std(_detrended_oot(np.asarray(lc["white_flux"]), time, oot), ddof=2) / np.sqrt(
        np.mean((np.asarray(lc["white_var_poisson"]) + np.asarray(lc["white_var_rnoise"]))[oot]))
    print(f"\nout-of-transit scatter / (photon + read noise): per column median {np.median(ratio):.3f} "
          f"(16-84 %: {np.percentile(ratio, 16):.2f}-{np.percentile(ratio, 84):.2f}, {cols.size} columns, "
          f"{int(oot.sum())} integrations); per bin " + " ".join(f"{b:.2f}" for b in bins)
          + "; per bin after the common-mode division " + " ".join(f"{b:.2f}" for b in bins_cm)
          + f"; white light {white:.2f}")
    assert abs(np.median(ratio) - 1) < 0.10, np.median(ratio)


def _binned_rms(resid, n):
    """rms of means of n consecutive points, averaged over the n possible starting offsets."""
    var = []
    for start in range(n):
        m = (resid.size - start) // n
        if m < 2:
            continue
        blocks = resid[start:start + m * n].reshape(m, n).mean(1)
        var.append(np.mean(blocks ** 2))
    return float(np.sqrt(np.mean(var)))


def test_white_light_rms_bins_down_as_n_to_the_minus_half(long_series):
    data, x1d = long_series
    lc, fit, _, _, _ = _white_fit(data, x1d)
    resid = np.asarray(lc["white_flux"]) / fit.model - 1
    resid = resid - resid.mean()
    sigma1 = np.sqrt(np.mean(resid ** 2))
    rows = []
    for n in (1, 2, 3, 5, 8, 10, 15, 20, 25, 30):
        m = resid.size // n
        # expected rms of m block means of white noise, with the (m - 1)/m of a mean taken out
        expected = sigma1 / np.sqrt(n) * np.sqrt((m - 1) / m) / np.sqrt((resid.size - 1) / resid.size)
        rows.append((n, _binned_rms(resid, n), expected))
    ratios = np.array([r / e for _, r, e in rows])
    slope = np.polyfit(np.log([n for n, _, _ in rows]), np.log([r for _, r, _ in rows]), 1)[0]
    # How far white noise itself strays: the same statistic on 400 Gaussian series of this length.
    # At N = 30 there are only 13 block means (26 with the offsets averaged), so the ratio of pure
    # white noise has a ~12 % spread and leaves +-20 % one time in five: "within 20 %" is asserted on
    # the side red noise would show (binned rms above N^-1/2), and below only beyond what white noise
    # does in 99 % of draws.
    rng = np.random.default_rng(13)
    sims = []
    for _ in range(400):
        w = rng.normal(size=resid.size)
        w -= w.mean()
        s1 = np.sqrt(np.mean(w ** 2))
        sims.append([_binned_rms(w, n) / (s1 * e / sigma1) for (n, _, e) in rows])
    low = np.percentile(np.array(sims), 0.5, axis=0)
    print(f"\nwhite-light rms {sigma1 * 1e6:.0f} ppm over {resid.size} integrations (chi2/dof {fit.redchi2:.2f}); "
          f"binned / N^-1/2: " + " ".join(f"N={n}:{q:.2f}" for (n, _, _), q in zip(rows, ratios))
          + f"; log-log slope {slope:.3f}; white noise's 0.5 % quantile at N=30: {low[-1]:.2f}")
    assert np.all(ratios < 1.2), ratios  # no red noise up to N = 30
    # N = 1 is 1 by construction in both (equal up to rounding): compared from N = 2
    assert np.all(ratios[1:] > low[1:]), (ratios, low)
    assert -0.65 < slope < -0.4, slope


def _false_jump_fraction(line_dir, data):
    """JUMP_DET pixels of the rateints away (> 1 pixel) from every injected cosmic ray, per pixel."""
    flagged = total = 0
    for path in sorted(line_dir.glob("*_rateints.fits")):
        root = path.name.removesuffix("_rateints.fits")
        dq = fits.getdata(path, "DQ")
        jump = (dq & 4) != 0
        cr = Table.read(data / "truth" / f"{root}_cosmic_rays.ecsv")
        near = np.zeros(jump.shape, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y = np.clip(np.asarray(cr["y"]) + dy, 0, dq.shape[1] - 1)
                x = np.clip(np.asarray(cr["x"]) + dx, 0, dq.shape[2] - 1)
                near[np.asarray(cr["integration"]), y, x] = True
        flagged += int((jump & ~near).sum())
        total += jump.size
    return flagged / total


def test_jwst_defaults_show_the_1f_problem(demo):
    data, x1d = demo
    numbers = {}
    for line in LINES:
        _, fit, _, _, _ = _white_fit(data, x1d[line])
        numbers[line] = (_false_jump_fraction(Path(x1d[line]).parent, data), fit.rms, fit.depth, fit.depth_error)
    print("\n" + "; ".join(f"{line}: false jump fraction {j:.2e}, white-light rms {r * 1e6:.0f} ppm, depth "
                           f"{d * 1e6:.0f} +- {e * 1e6:.0f} ppm" for line, (j, r, d, e) in numbers.items()))
    rec, jw = numbers["recommended"], numbers["jwst"]
    assert jw[0] > 1.1 * rec[0], numbers
    assert jw[1] > 1.3 * rec[1], numbers
