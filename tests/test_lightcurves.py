"""Spectroscopic light curves and the transit fit (webbflow.lightcurves) on synthetic arrays.

* binning sums FLUX over exactly the columns of each bin, errors in quadrature, normalised by the
  out-of-transit median; columns that are NaN in some integration are left out of every integration;
* the least-squares fit recovers a known transit + baseline within its uncertainties (pulls over
  many noise draws have mean ~0 and width ~1), and scales them by √χ²ᵣ when the errors are too small.

The truth run on simulated detector data is tests/test_tso_truth.py (slow).
"""

import dataclasses
import importlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow.lightcurves import (common_mode, fit_light_curves, fit_transit, light_curve_products, plot_light_curves,
                                  read_x1dints_spectra, replace_lost_pixels, spectroscopic_light_curves)
from webbflow.transit import TransitParams, relative_flux

T0 = 60827.125
TRUE = TransitParams(t0=T0, per=0.0165, a=7.0, inc=88.0, rp=0.10, u1=0.12, u2=0.10)


def _times(n=240, span=170.0):
    return T0 + (np.arange(n) - n / 2) * span / n / 86400.0


def _white(t, params=TRUE, norm=1.0, slope=0.0):
    return norm * (1 + slope * (t - t.mean())) * relative_flux(t, [params.wave_ref], params)[:, 0]


def _x1d_tables(nints=12, ncols=40, nseg=2, seed=1):
    """EXTRACT1D-like tables: column c has flux (c + 1) · 10 · (1 + 0.01 i), error √flux."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(2.5, 3.9, ncols)
    tables, k = [], 0
    per = nints // nseg
    for s in range(nseg):
        n = per
        i = np.arange(k, k + n)
        flux = (np.arange(ncols) + 1.0)[None, :] * 10.0 * (1 + 0.01 * i[:, None])
        err = np.sqrt(flux) * rng.uniform(0.5, 1.5, flux.shape)
        t = Table()
        t["INT_NUM"] = (i + 1).astype(np.int32)
        t["WAVELENGTH"] = np.broadcast_to(wave, flux.shape).copy()
        t["FLUX"] = flux
        t["FLUX_ERROR"] = err
        t["FLUX_VAR_POISSON"] = 0.6 * err ** 2
        t["FLUX_VAR_RNOISE"] = 0.4 * err ** 2
        t["NPIXELS"] = np.full(flux.shape, 7.0)
        t["SEGMENT"] = np.full(n, s + 1, np.int32)
        t["MJD-AVG"] = T0 + i * 1e-4
        t["TDB-MID"] = T0 + 8e-4 + i * 1e-4
        tables.append(t)
        k += n
    return wave, tables


def test_transit_model_lives_in_the_library_not_the_simulator():
    import webbflow.simulate as simulate
    import webbflow.transit as transit

    assert simulate.TransitParams is transit.TransitParams
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("webbflow.simulate.transit")


def test_bins_sum_the_columns_with_errors_in_quadrature():
    wave, tables = _x1d_tables()
    edges = [2.5, 3.0, 3.5, 3.95]
    lc = spectroscopic_light_curves(list(reversed(tables)), edges=edges)  # segments in any order
    assert list(lc["integration"]) == list(range(1, 13)) and list(lc["segment"]) == [1] * 6 + [2] * 6
    np.testing.assert_allclose(lc["MJD_UTC"].value, T0 + np.arange(12) * 1e-4)
    np.testing.assert_allclose(lc["BJD_TDB"].value, T0 + 8e-4 + np.arange(12) * 1e-4)
    flux = np.concatenate([np.asarray(t["FLUX"]) for t in tables])
    err = np.concatenate([np.asarray(t["FLUX_ERROR"]) for t in tables])
    assert lc.meta["bin_edges_um"] == edges
    for k in range(3):
        cols = (wave >= edges[k]) & (wave < edges[k + 1])
        raw = flux[:, cols].sum(1)
        norm = np.median(raw)
        np.testing.assert_allclose(lc["flux"][:, k], raw / norm, rtol=1e-12)
        np.testing.assert_allclose(lc["error"][:, k], np.sqrt((err[:, cols] ** 2).sum(1)) / norm, rtol=1e-12)
        np.testing.assert_allclose(lc["var_poisson"][:, k] + lc["var_rnoise"][:, k], lc["error"][:, k] ** 2,
                                   rtol=1e-12)
        assert lc.meta["bin_n_columns"][k] == cols.sum() and lc.meta["norm"][k + 1] == pytest.approx(norm)
        w = flux[:, cols].mean(0)
        assert lc.meta["bin_wave_um"][k] == pytest.approx((wave[cols] * w).sum() / w.sum(), rel=1e-3)
    white = flux.sum(1)
    np.testing.assert_allclose(lc["white_flux"], white / np.median(white), rtol=1e-12)
    assert np.median(lc["white_flux"]) == pytest.approx(1.0)


def test_normalisation_by_the_out_of_transit_median_and_nbins():
    wave, tables = _x1d_tables()
    oot = np.zeros(12, bool)
    oot[:3] = True
    lc = spectroscopic_light_curves(tables, nbins=4, out_of_transit=oot)
    # the default range is the band: columns 0 and 1 hold under 5 % of the brightest column's flux
    assert len(lc.meta["bin_edges_um"]) == 5 and sum(lc.meta["bin_n_columns"]) == 38
    assert lc.meta["wave_range_um"][0] == pytest.approx(np.linspace(2.5, 3.9, 40)[2])
    np.testing.assert_allclose(np.median(np.asarray(lc["flux"])[:3], axis=0), 1.0)
    assert lc["white_flux"][-1] == pytest.approx(1.11 / 1.01)  # flux grows 1 % per integration
    # a TransitParams marks the out-of-transit integrations itself
    times = np.asarray(lc["MJD_UTC"].value)
    params = dataclasses.replace(TRUE, t0=times[-1] + 1e-5, per=0.02)
    lc2 = spectroscopic_light_curves(tables, out_of_transit=params)
    assert 0 < lc2.meta["n_out_of_transit"] < 12


def test_columns_with_a_nan_are_left_out_of_every_integration():
    wave, tables = _x1d_tables()
    tables[1]["FLUX"][2, 5] = np.nan  # one column, one integration
    lc = spectroscopic_light_curves(tables, edges=[2.5, 3.95])
    assert lc.meta["bin_n_columns"] == [39] and lc.meta["n_columns_dropped"] == 1
    assert np.all(np.isfinite(lc["flux"])) and np.all(np.isfinite(lc["white_flux"]))
    flux = np.concatenate([np.asarray(t["FLUX"]) for t in tables])
    raw = np.delete(flux, 5, axis=1).sum(1)
    np.testing.assert_allclose(lc["flux"][:, 0], raw / np.median(raw))
    with pytest.raises(ValueError, match="no usable column"):
        spectroscopic_light_curves(tables, edges=[2.0, 2.4, 3.9])


def test_reads_an_x1dints_file(tmp_path):
    wave, tables = _x1d_tables()
    hdus = [fits.PrimaryHDU()]
    for t in tables:
        h = fits.BinTableHDU(t, name="EXTRACT1D")
        h.columns["FLUX"].unit = "DN/s"
        hdus.append(h)
    path = tmp_path / "x_x1dints.fits"
    fits.HDUList(hdus).writeto(path)
    s = read_x1dints_spectra(path)
    assert s["flux"].shape == (12, 40) and s["flux_unit"] == "DN/s"
    lc = spectroscopic_light_curves(path, nbins=3)
    assert lc["flux"].shape == (12, 3) and lc.meta["flux_unit"] == "DN/s"


def test_fit_recovers_a_known_transit_and_baseline():
    t = _times()
    sigma = 3e-4
    rng = np.random.default_rng(7)
    flux = _white(t, norm=1.002, slope=0.5) + rng.normal(0, sigma, t.size)
    guess = dataclasses.replace(TRUE, rp=0.09, t0=T0 + 3 / 86400)
    fit = fit_transit(t, flux, np.full(t.size, sigma), guess, free=("rp", "t0"))
    assert fit.success and fit.free == ("rp", "t0", "norm", "slope")
    assert abs(fit.values["rp"] - 0.10) < 4 * fit.errors["rp"]
    assert abs(fit.values["t0"] - T0) < 4 * fit.errors["t0"]
    assert abs(fit.values["norm"] - 1.002) < 4 * fit.errors["norm"]
    assert abs(fit.values["slope"] - 0.5) < 4 * fit.errors["slope"]
    assert fit.depth == pytest.approx(fit.values["rp"] ** 2) and fit.depth_error > 0
    assert 0.7 < fit.redchi2 < 1.3 and fit.error_scale == pytest.approx(max(1.0, np.sqrt(fit.redchi2)))
    assert fit.rms == pytest.approx(sigma, rel=0.2)
    assert fit.params.t0 == pytest.approx(fit.values["t0"]) and fit.params.rp == fit.values["rp"]


def test_fit_uncertainties_match_the_scatter_of_repeated_draws():
    """Pulls (fit − truth)/σ over 40 noise draws: mean within ±0.4, std 0.7–1.35 (depth and t0)."""
    t = _times(160)
    sigma = 5e-4
    rng = np.random.default_rng(11)
    clean = _white(t)
    pulls = {"depth": [], "t0": []}
    for _ in range(40):
        fit = fit_transit(t, clean + rng.normal(0, sigma, t.size), np.full(t.size, sigma), TRUE, free=("rp", "t0"))
        pulls["depth"].append((fit.depth - TRUE.rp ** 2) / fit.depth_error)
        pulls["t0"].append((fit.values["t0"] - T0) / fit.errors["t0"])
    for name, p in pulls.items():
        assert abs(np.mean(p)) < 0.4 and 0.7 < np.std(p) < 1.35, (name, np.mean(p), np.std(p))


def test_errors_scaled_by_reduced_chi2_when_underestimated():
    t = _times()
    rng = np.random.default_rng(3)
    flux = _white(t) + rng.normal(0, 4e-4, t.size)
    right = fit_transit(t, flux, np.full(t.size, 4e-4), TRUE)
    small = fit_transit(t, flux, np.full(t.size, 2e-4), TRUE)
    assert small.redchi2 == pytest.approx(4 * right.redchi2, rel=1e-3)
    assert small.error_scale == pytest.approx(np.sqrt(small.redchi2))
    assert small.errors["rp"] == pytest.approx(right.errors["rp"] * (1 if right.redchi2 <= 1 else 1 / right.error_scale)
                                               * small.error_scale / 2, rel=0.02)


def test_fit_more_parameters_and_bad_requests():
    t = _times(300)
    rng = np.random.default_rng(5)
    flux = _white(t) + rng.normal(0, 1e-4, t.size)
    guess = dataclasses.replace(TRUE, a=6.5, inc=87.0, rp=0.105)
    fit = fit_transit(t, flux, np.full(t.size, 1e-4), guess, free=("rp", "t0", "a", "inc"))
    for name, true in (("rp", 0.10), ("a", 7.0), ("inc", 88.0)):
        assert abs(fit.values[name] - true) < 5 * fit.errors[name], (name, fit.values[name], fit.errors[name])
    with pytest.raises(ValueError, match="cannot fit"):
        fit_transit(t, flux, np.full(t.size, 1e-4), TRUE, free=("rp", "depth"))
    with pytest.raises(ValueError, match="usable points"):
        fit_transit(t[:3], flux[:3], np.full(3, 1e-4), TRUE)


def _transit_tables(nints=120, ncols=60, seed=2):
    """x1dints tables holding a transit whose depth rises with λ, with photon-like noise."""
    rng = np.random.default_rng(seed)
    t = _times(nints)
    wave = np.linspace(2.5, 3.9, ncols)
    params = dataclasses.replace(TRUE, rp_slope=0.01, wave_ref=3.2)
    level = 2e5 * np.ones(ncols)
    clean = level * relative_flux(t, wave, params)
    err = np.sqrt(level)[None, :] * np.ones((nints, 1))
    tab = Table()
    tab["INT_NUM"] = np.arange(1, nints + 1, dtype=np.int32)
    tab["WAVELENGTH"] = np.broadcast_to(wave, clean.shape).copy()
    tab["FLUX"] = clean + rng.normal(0, 1, clean.shape) * err
    tab["FLUX_ERROR"] = err
    tab["FLUX_VAR_POISSON"] = err ** 2
    tab["FLUX_VAR_RNOISE"] = 0 * err
    tab["NPIXELS"] = np.full(clean.shape, 7.0)
    tab["SEGMENT"] = np.ones(nints, np.int32)
    tab["MJD-AVG"] = t
    tab["TDB-MID"] = t + 8e-4
    return params, [tab]


def test_fit_light_curves_recovers_the_depth_per_bin():
    params, tables = _transit_tables()
    edges = np.linspace(2.5, 3.9 + 1e-6, 6)
    lc = spectroscopic_light_curves(tables, edges=edges, out_of_transit=params)
    white, bins, table = fit_light_curves(lc, params, free=("rp", "t0"))
    assert len(bins) == 5 and list(table["band"]) == ["white"] + [f"bin_{k}" for k in range(5)]
    true = np.array([params.depth_at(w) for w in lc.meta["bin_wave_um"]])
    pulls = (np.asarray(table["depth"][1:]) - true) / np.asarray(table["depth_error"][1:])
    assert np.all(np.abs(pulls) < 4), pulls
    assert np.all(np.diff(table["depth"][1:]) > 0)  # the injected slope in rp(λ)


def test_qa_figure_and_products(tmp_path):
    params, tables = _transit_tables()
    hdus = [fits.PrimaryHDU()] + [fits.BinTableHDU(t, name="EXTRACT1D") for t in tables]
    x1d = tmp_path / "jw_x1dints.fits"
    fits.HDUList(hdus).writeto(x1d)
    out = light_curve_products(x1d, tmp_path / "lc.ecsv", tmp_path / "fit.ecsv", tmp_path / "lc.png", nbins=4,
                               transit=dataclasses.asdict(params))
    assert set(out) == {"curves", "fits", "png"}
    lc = Table.read(out["curves"])
    assert lc["flux"].shape == (120, 4) and len(lc.meta["bin_edges_um"]) == 5
    assert len(Table.read(out["fits"])) == 5
    png = out["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # without fits too
    lc2 = spectroscopic_light_curves(x1d)
    path = plot_light_curves(lc2, tmp_path / "white.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_column_integrations_that_lost_box_pixels_are_filled_from_their_neighbours():
    """tso3's outlier_detection NaNs a pixel; jwst's box sum then skips it and that column's FLUX dips."""
    wave, tables = _x1d_tables()
    flux = np.concatenate([np.asarray(t["FLUX"]) for t in tables])
    tables[0]["NPIXELS"][:, 7] = 6.0  # a dead pixel in every integration: nothing to fill
    tables[0]["FLUX"][3, 5] *= 0.7  # one pixel of column 5 lost in integration 4 ...
    tables[0]["NPIXELS"][3, 5] = 6.0
    tables[1]["FLUX"][5, 9] *= 0.8  # ... and one of column 9 in the last integration
    tables[1]["NPIXELS"][5, 9] = 6.0
    s = read_x1dints_spectra(tables)
    filled, lost = replace_lost_pixels(s["flux"], s["npixels"])
    assert lost.sum() == 2 and lost[3, 5] and lost[11, 9]
    assert filled[3, 5] == pytest.approx(0.5 * (flux[2, 5] + flux[4, 5]))
    assert filled[11, 9] == pytest.approx(flux[10, 9])  # no later integration: the one before
    np.testing.assert_array_equal(np.delete(filled.ravel(), [3 * 40 + 5, 11 * 40 + 9]),
                                  np.delete(s["flux"].ravel(), [3 * 40 + 5, 11 * 40 + 9]))
    lc = spectroscopic_light_curves(tables)
    raw = spectroscopic_light_curves(tables, replace_lost=False)
    assert lc.meta["n_replaced"] == 2 and raw.meta["n_replaced"] == 0
    assert raw["white_flux"][3] < lc["white_flux"][3]


def test_common_mode_division_takes_out_noise_shared_by_every_bin():
    """Row-coherent noise lands in every column of an integration alike: dividing the bins by the white
    light's residual removes it from their scatter, not from their depths."""
    params, tables = _transit_tables(nints=160, ncols=60, seed=4)
    rng = np.random.default_rng(9)
    common = 1 + rng.normal(0, 1e-3, 160)  # 1e-3 per integration, common to all columns
    tables[0]["FLUX"] = np.asarray(tables[0]["FLUX"]) * common[:, None]
    edges = np.linspace(2.5, 3.9 + 1e-6, 4)
    lc = spectroscopic_light_curves(tables, edges=edges, out_of_transit=params)
    white, with_cm, _ = fit_light_curves(lc, params)
    _, without, _ = fit_light_curves(lc, params, common_mode_correction=False)
    for a, b in zip(with_cm, without):
        assert a.rms < 0.6 * b.rms and a.depth_error < 0.6 * b.depth_error
    np.testing.assert_allclose(common_mode(lc, white), np.asarray(lc["white_flux"]) / white.model)
