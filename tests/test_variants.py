"""Parameter variants side by side (config ``variants``, issue 16 part 5): each variant's config, the
numbers the report compares, and the workflow's plan and products on the demo."""

import json
import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _snakemake import assert_ok as _ok
from _snakemake import run_snakemake
from astropy.io import fits

from webbflow import dqflags
from webbflow.config import ConfigError, config_schema, variant_configs
from webbflow.report.variants import qa_variants, variant_metrics

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
MODES = ["imaging", "tso_grism", "tso_imaging", "coronagraphy"]


def test_a_variant_is_the_config_deep_merged_with_its_overrides():
    user = {"steps": {"jump": {"rejection_threshold": 5.0, "minimum_groups": 3}}, "modes": ["imaging"],
            "variants": {"low": {"steps": {"jump": {"rejection_threshold": 3.0}}},
                         "jwst": {"step_defaults": "jwst", "mode_steps": {"imaging": {"refpix": {"skip": True}}}}}}
    out = variant_configs(user, config_schema(SCHEMA, MODES))
    assert list(out) == ["low", "jwst"]
    # the variant's value wins, the rest of the section is kept, and the variants section is not copied
    assert out["low"]["steps"]["jump"] == {"rejection_threshold": 3.0, "minimum_groups": 3}
    assert out["low"]["modes"] == ["imaging"] and "variants" not in out["low"]
    assert out["jwst"]["step_defaults"] == "jwst" and out["jwst"]["steps"]["jump"]["rejection_threshold"] == 5.0
    assert out["jwst"]["mode_steps"] == {"imaging": {"refpix": {"skip": True}}}
    assert user["steps"]["jump"]["rejection_threshold"] == 5.0  # the user's config is not changed


@pytest.mark.parametrize("variants, message", [
    ({"low": {"steps": {"jump": {"rejection_threshhold": 3.0}}}},
     r"^variants\.low: config key steps\.jump\.rejection_threshhold: Additional properties are not allowed.*"
     r"Fix: correct it under variants\.low"),
    ({"low": {"steps": {"jump": {"rejection_threshold": "low"}}}},
     r"^variants\.low: config key steps\.jump\.rejection_threshold: 'low' is not of type 'number'"),
    ({"b": {"mode_steps": {"imagin": {"jump": {"skip": True}}}}}, r"^variants\.b: config key mode_steps"),
    ({"moved": {"results_dir": "elsewhere"}},
     r"^config key variants\.moved\.results_dir: a variant may change only steps, mode_steps, step_defaults"),
    ({"main": {"steps": {}}}, r"^config key variants\.main: 'main' names the main config"),
])
def test_a_bad_variant_is_one_error_naming_the_variant_and_key(variants, message):
    with pytest.raises(ConfigError, match=message):
        variant_configs({"variants": variants}, config_schema(SCHEMA, MODES))


def _rate(path, sci, err, dq=None, noutputs=1):
    primary = fits.PrimaryHDU()
    primary.header.update(NOUTPUTS=noutputs, SUBSTRT1=1)
    dq = np.zeros(sci.shape, np.uint32) if dq is None else dq
    fits.HDUList([primary, fits.ImageHDU(sci.astype(np.float32), name="SCI"),
                  fits.ImageHDU(err.astype(np.float32), name="ERR"), fits.ImageHDU(dq, name="DQ")]).writeto(path)
    return path


def test_metrics_against_the_truth_measure_noise_outliers_and_row_stripes(tmp_path):
    rng = np.random.default_rng(7)
    shape, sigma = (200, 200), 2.0
    truth = 50.0 + 400.0 * (rng.random(shape) < 0.01)  # sky plus a few bright pixels (the "scene")
    fits.PrimaryHDU(truth.astype(np.float32)).writeto(tmp_path / "truth.fits")
    noise = rng.normal(0.0, sigma, shape)
    stripes = rng.normal(0.0, 1.5, (shape[0], 1))  # 1/f: one offset per row
    dq = np.zeros(shape, np.uint32)
    dq[:20, :] = dqflags.JUMP_DET  # 10 % of the pixels
    hits = np.zeros(shape, bool)
    hits[100:104, :] = True  # 2 % of the pixels keep a cosmic ray's 100 DN/s
    clean = _rate(tmp_path / "clean.fits", truth + noise, np.full(shape, sigma), dq)
    dirty = _rate(tmp_path / "dirty.fits", truth + noise + stripes + 100.0 * hits, np.full(shape, sigma))
    a = variant_metrics(clean, tmp_path / "truth.fits")
    b = variant_metrics(dirty, tmp_path / "truth.fits")
    assert a["jump_fraction"] == pytest.approx(0.10) and b["jump_fraction"] == 0.0
    assert a["rate_noise_truth"] == pytest.approx(sigma, rel=0.03)  # 40000 samples: ~0.6 % on a MAD sigma
    assert a["err_median"] == pytest.approx(sigma) and abs(a["rate_bias_truth"]) < 0.03
    assert a["outlier_fraction_truth"] < 1e-4 and b["outlier_fraction_truth"] == pytest.approx(0.02, abs=0.002)
    # row medians of 200 pixels of sigma 2: 1.2533 * 2 / sqrt(200) = 0.18 white; the stripes add 1.5
    assert a["one_over_f_truth"] == pytest.approx(0.18, rel=0.2)
    assert b["one_over_f_truth"] == pytest.approx(1.5, rel=0.2)
    summary = qa_variants([clean, dirty], [["main", "x", True], ["striped", "x", True]], tmp_path / "t.html",
                          tmp_path / "t.csv", tmp_path / "t.json", tmp_path / "t.png", truths=[tmp_path / "truth.fits"],
                          overrides={"striped": {"steps": {"jump": {"skip": True}}}})
    assert [s["variant"] for s in summary] == ["main", "striped"]
    assert summary[1]["one_over_f_truth"] == b["one_over_f_truth"]
    assert "rejection" not in (tmp_path / "t.html").read_text() and "skip" in (tmp_path / "t.html").read_text()
    assert (tmp_path / "t.png").stat().st_size > 5000
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 3


# --- The workflow on the demo -------------------------------------------------------------------------

VARIANTS_CONFIG = """variants:
  thr3:
    steps: {jump: {rejection_threshold: 3.0}}
  thr8:
    steps: {jump: {rejection_threshold: 8.0}}
  destripe:
    steps: {destripe: {skip: false}}
  mosaic:
    steps: {resample: {pixfrac: 0.5}}
"""


snakemake = partial(run_snakemake, timeout=600, check=False)



def _demo_roots(workdir):
    return sorted(p.name.removesuffix("_uncal.fits") for p in (workdir / "demo" / "uncal").glob("*_uncal.fits"))


@pytest.mark.parametrize("steps, message", [
    ("{jump: {rejection_threshhold: 3.0}}",
     "variants.thr3: config key steps.jump.rejection_threshhold: Additional properties are not allowed"),
    ("{persistence: {skip: false}}", "variants.thr3: steps.persistence is on in this variant but off in the main config"),
])
def test_a_bad_variant_stops_the_workflow_before_anything_runs(tmp_path, steps, message):
    (tmp_path / "bad.yaml").write_text(f"variants:\n  thr3:\n    steps: {steps}\n")
    proc = snakemake(tmp_path, "--configfile", str(tmp_path / "bad.yaml"), "-n", timeout=300)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "demo").exists() and not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def variants_config(demo_workdir, tmp_path_factory):
    path = tmp_path_factory.mktemp("variants") / "variants.yaml"
    path.write_text(VARIANTS_CONFIG)
    return path


@pytest.mark.workflow
def test_variants_plan_only_the_affected_products(demo_workdir, variants_config, make):
    """On the reduced demo, the variants' dry run plans detector1, image2 and image3 again for the two
    jump thresholds, image2 and image3 for the image2-only variant (from the main tree's rates), image3
    alone for the image3-only one (from the main cals), nothing of the main tree, and the comparison."""
    roots = _demo_roots(demo_workdir)
    # the default target: the variants come with it, and the main tree (up to date) plans nothing
    planned = make.planned_outputs(_ok(snakemake(demo_workdir, "--configfile", str(variants_config), "-n")).stdout)
    assert set(planned) == {"detector1_variant", "image2_variant", "image3_asn_variant", "image3_variant",
                            "qa_variants"}, planned.keys()
    rates = sorted(p for p in planned["detector1_variant"] if p.endswith("_rate.fits"))
    expected = sorted(f"results/variants/{v}/detector1/{p.parent.name}/{p.name}" for v in ("thr3", "thr8")
                      for p in (demo_workdir / "results" / "detector1").rglob("*_rate.fits"))
    assert len(expected) == 2 * len(roots) == 32 and rates == expected
    cals = planned["image2_variant"]
    assert sorted(c for c in cals if "/destripe/" in c) == sorted(
        f"results/variants/destripe/image2/{p.parent.name}/{p.name}"
        for p in (demo_workdir / "results" / "image2").rglob("*_cal.fits"))
    assert len(cals) == 3 * len(roots)  # each variant's cal of every exposure; none for mosaic
    mosaics = sorted(p.name for p in (demo_workdir / "results" / "image3").glob("*_i2d.fits"))
    assert mosaics and sorted(p for p in planned["image3_variant"] if p.endswith("_i2d.fits")) == sorted(
        f"results/variants/{v}/image3/{m}" for v in ("thr3", "thr8", "destripe", "mosaic") for m in mosaics)
    assert planned["qa_variants"][0] == "results/qa/variants/variants.html"


@pytest.mark.slow
@pytest.mark.workflow
def test_variants_run_two_thresholds_and_the_report_compares_them(demo_workdir, variants_config, tmp_path):
    """Run the two jump thresholds' trees (rates and the comparison) in a copy of the reduced demo: a lower threshold flags more jumps on every exposure, leaves fewer cosmic rays
    in the rates (pixels > 5 ERR off the truth) and the noise against the truth matches the stated ERR."""
    work = tmp_path / "work"
    shutil.copytree(demo_workdir, work, symlinks=True)  # mtimes kept: the main tree stays up to date
    config = tmp_path / "two.yaml"
    config.write_text(VARIANTS_CONFIG.split("  destripe:")[0])
    # the variants' rates and the comparison only (--until: not their cal products)
    proc = _ok(snakemake(work, "--configfile", str(config), "--cores", "2", "variants", "--until", "qa_variants",
                         timeout=1200))
    ran = {m for m in re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M)}
    assert ran == {"detector1_variant", "qa_variants"}, ran  # nothing of the main tree, no cal (--until)
    roots = _demo_roots(work)
    for variant in ("thr3", "thr8"):
        tree = work / "results" / "variants" / variant
        assert len(list(tree.rglob("*_rate.fits"))) == len(roots) == 16
        with fits.open(next(tree.rglob("*_rate.fits"))) as hdul:
            assert json.loads(hdul[0].header["WF_PARS"])["jump"]["rejection_threshold"] == float(variant[3:])
    table = json.loads((work / "results" / "qa" / "variants" / "variants.json").read_text())
    summary = {s["variant"]: s for s in table["summary"]}
    assert list(summary) == ["main", "thr3", "thr8"] and summary["thr3"]["own"] == summary["thr8"]["own"] == 16
    rows = {(r["variant"], r["exposure"]): r for r in table["rows"]}
    for root in roots:
        # the demo's threshold (4) lies between: a lower threshold flags more jumps on every exposure
        assert rows["thr3", root]["jump_fraction"] > rows["main", root]["jump_fraction"] > rows["thr8", root]["jump_fraction"]
        # and cuts more ramps at noise: the rate scatters more about the truth (seen 0.2-1.0 % on every exposure)
        assert rows["thr3", root]["rate_noise_truth"] > rows["thr8", root]["rate_noise_truth"]
    for name, s in summary.items():
        # the scatter about the truth is what the pipeline's ERR says (seen 1.03-1.09), and cosmic rays
        # are caught at every threshold: few pixels stay > 5 ERR off the truth (seen <= 1.2e-4)
        assert 0.9 < s["rate_noise_truth"] / s["err_median"] < 1.2, (name, s)
        assert s["outlier_fraction_truth"] < 1e-3 and abs(s["rate_bias_truth"]) < 0.05, (name, s)
    html = (work / "results" / "qa" / "variants" / "variants.html").read_text()
    assert "thr3" in html and "rejection_threshold" in html
