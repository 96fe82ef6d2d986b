"""The workflow's report: the QA numbers (unit tests on synthetic images) and, on the demo,
`snakemake --report report.html` opened in a real headless browser (Debian's chromium)."""

import csv
import json
import os
import re
import subprocess
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _snakemake import run_snakemake
from astropy.io import fits

from webbflow import dqflags
from webbflow.report import figures, qa

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
FILTERS = ("f150w", "f200w", "f356w", "f444w")


# --- QA numbers on synthetic images ---------------------------------------------------------------

def test_amplifier_slices_follow_the_full_frame_outputs():
    assert qa.amplifier_slices(2048, 4) == [slice(0, 512), slice(512, 1024), slice(1024, 1536), slice(1536, 2048)]
    assert qa.amplifier_slices(160, 1, xstart=1889) == [slice(0, 160)]  # a subarray read through one output
    # a 4-output subarray starting at detector column 401 (1-based) spans the 512 and 1024 boundaries
    assert qa.amplifier_slices(800, 4, xstart=401) == [slice(0, 112), slice(112, 624), slice(624, 800)]


def test_one_over_f_residual_recovers_injected_row_offsets_per_output():
    rng = np.random.default_rng(3)
    ny, nx = 1024, 2048
    white = 0.5
    sci = 10 + rng.normal(0, white, (ny, nx))
    stripes = (0.05, 0.2, 0.0, 0.4)  # per output: the rms of its row offsets (DN/s)
    for amp, level in enumerate(stripes):
        sci[:, amp * 512:(amp + 1) * 512] += rng.normal(0, level, (ny, 1)) if level else 0
    sci[100:110, 700:710] += 5000  # a star: masked, it must not bias its rows
    dq = np.zeros(sci.shape, np.uint32)
    dq[:, :4] = dq[:, -4:] = dqflags.REFERENCE_PIXEL | dqflags.DO_NOT_USE
    err = np.full(sci.shape, white)
    residual, expected_white = qa.one_over_f_residual(sci, dq, qa.amplifier_slices(nx, 4), err)
    floor = 1.2533 * white / np.sqrt(512)  # white noise alone, through the row median
    for got, level, w, n in zip(residual, stripes, expected_white, (508, 512, 512, 508)):
        assert w == pytest.approx(1.2533 * white / np.sqrt(n), rel=0.01)  # 4 reference columns at each edge
        assert got == pytest.approx(np.hypot(level, floor), rel=0.12)


def test_flag_fractions_leave_reference_pixels_out():
    dq = np.zeros((10, 10), np.uint32)
    dq[0, :] = dqflags.REFERENCE_PIXEL | dqflags.DO_NOT_USE  # 10 reference pixels
    dq[5, :3] = dqflags.JUMP_DET
    dq[6, 0] = dqflags.SATURATED | dqflags.DO_NOT_USE
    assert qa.flag_fraction(dq, dqflags.JUMP_DET) == pytest.approx(3 / 90)
    assert qa.flag_fraction(dq, dqflags.SATURATED) == pytest.approx(1 / 90)
    assert qa.flag_fraction(dq, dqflags.DO_NOT_USE) == pytest.approx(1 / 90)
    sci = np.arange(100, dtype=float).reshape(10, 10)
    assert qa.median_rate(sci, dq) == np.median(np.delete(sci[1:].ravel(), 50))  # [6, 0] is DO_NOT_USE


def test_thumbnail_is_a_small_png(tmp_path):
    rng = np.random.default_rng(1)
    sci = rng.normal(1, 0.1, (64, 64))
    dq = np.zeros(sci.shape, np.uint32)
    dq[10, 10] = dqflags.JUMP_DET
    figures.product_thumbnail(tmp_path / "t.png", sci, dq, "test", "DN/s")
    data = (tmp_path / "t.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000


# --- The demo's report ----------------------------------------------------------------------------

_snakemake = partial(run_snakemake, timeout=600)


def test_coron3_figure_records_its_panels(tmp_path):
    """coron3_panels draws the PSFMASK (t² of a bar-like occulter, the star off-centre at its point along
    the bar) as the first panel and records what every panel shows in the PNG (panels_of): the
    mask's pixels and the star's point and value there, each psfsub image's sum, the combined panel's
    marks and zoom, the contrast curve and the number of shift rows -- the numbers passed in."""
    rng = np.random.default_rng(3)
    y = np.mgrid[:64, :80][0]
    mask = (1 - np.sinc(0.15 * (y - 30.0)) ** 2).astype(float)  # a bar along x through row 30
    rolls = [("roll 75.0°", rng.normal(size=(64, 80))), ("roll 85.0°", rng.normal(size=(64, 80)))]
    rolls[1][1][5, 7] = np.nan
    combined = {"image": rng.normal(size=(50, 50)), "label": "sector KLIP, north up (KL 5)",
                "measured": [(30.2, 20.1)], "truth": [(30.0, 20.0)], "zoom": (25.0, 25.0, 20.0)}
    contrast = {"separation": np.array([0.3, 0.6, 0.9]), "curves": {"KL 5": np.array([1e-4, 2e-5, np.nan])},
                "companions": [(1.5, 1e-4)]}
    shifts = {"science": ["a_x"] * 3, "psf_integration": np.arange(3), "dx": np.array([0.1, -0.3, 0.2]),
              "dy": np.zeros(3)}
    png = tmp_path / "coron3.png"
    figures.coron3_panels(png, rolls, combined, contrast, shifts, "title",
                          psfmask={"image": mask, "label": "MASKALWB F335M", "star": (61.5, 30.0)})
    panels = figures.panels_of(png)
    assert panels["psfmask"]["star"] == [61.5, 30.0] and panels["psfmask"]["t2_at_star"] == mask[30, 62]
    assert panels["psfmask"]["sum"] == pytest.approx(mask.sum()) and panels["psfmask"]["label"] == "MASKALWB F335M"
    assert panels["psfmask"]["occulted_fraction"] == pytest.approx(np.mean(mask < 0.5))
    assert [p["label"] for p in panels["psfsub"]] == ["roll 75.0°", "roll 85.0°"]
    assert panels["psfsub"][1]["finite"] == 64 * 80 - 1
    assert panels["psfsub"][1]["sum"] == pytest.approx(np.nansum(rolls[1][1]))
    assert panels["combined"]["measured"] == [[30.2, 20.1]] and panels["combined"]["zoom"] == [25.0, 25.0, 20.0]
    assert panels["contrast"]["curves"]["KL 5"] == [1e-4, 2e-5, None]
    assert panels["shifts"] == {"rows": 3, "max_abs": 0.3}
    # without a PSFMASK: no such panel, the rest as before
    figures.coron3_panels(png, rolls, combined, None, shifts, "title")
    panels = figures.panels_of(png)
    assert "psfmask" not in panels and panels["contrast"] is None and len(panels["psfsub"]) == 2


@pytest.fixture(scope="module")
def report(demo_workdir):
    """The session's demo run and its report (`snakemake --report report.html`)."""
    _snakemake(demo_workdir, "--report", "report.html")
    return demo_workdir, demo_workdir / "report.html"


QA = Path("results") / "qa" / "imaging"


@pytest.mark.workflow
def test_qa_rows_are_the_products_numbers(report):
    workdir, _ = report
    rows = json.loads((workdir / QA / "qa_rows.json").read_text())
    assert len(rows) == 16 and {r["mode"] for r in rows} == {"imaging"}
    for row in rows:
        filt, root = row["filter"].lower(), row["exposure"]
        with fits.open(workdir / "results" / "detector1" / filt / f"{root}_rate.fits") as hdul:
            dq, sci = hdul["DQ"].data, hdul["SCI"].data.astype(np.float64)
        # by hand: science pixels (not reference pixels) with the flag, over all science pixels
        science = (dq & dqflags.REFERENCE_PIXEL) == 0
        assert row["jump_fraction"] == np.mean((dq[science] & dqflags.JUMP_DET) != 0)
        assert row["saturated_fraction"] == np.mean((dq[science] & dqflags.SATURATED) != 0)
        # the demo's cosmic rays flag ~2 % of the pixels; the imaging preset's snowball flagging
        # (expand_large_events) adds the snowballs' halos; jwst's own rule would also grow every
        # cosmic ray near the SUB160 edges (edge_size 25 px, no saturated core needed: up to ~6 %
        # seen), which the preset's edge_contact keeps out
        assert 0.01 < row["jump_fraction"] < 0.10
        good = ((dq & dqflags.DO_NOT_USE) == 0) & np.isfinite(sci)
        assert row["median_rate"] == pytest.approx(float(np.median(sci[good])), rel=1e-12)
        # the simulator's noiseless rate; the demo's dark current (not in it) is a few per cent
        truth = fits.getdata(workdir / "demo" / "truth" / f"{root}_truth_rate.fits")
        assert row["median_rate"] == pytest.approx(float(np.median(truth)), rel=0.08)
        # SUB160 is read through one output: one 1/f value, near the white-noise level
        assert row["noutputs"] == 1 and len(row["one_over_f"]) == 1
        assert 0.8 < row["one_over_f"][0] / row["one_over_f_white"][0] < 2.5
        assert row["steps"]["S_JUMP"] == row["steps"]["S_PHOTOM"] == "COMPLETE"
        for suffix, stage in (("rate", "detector1"), ("cal", "image2")):
            png = workdir / QA / stage / filt / f"{root}_{suffix}.png"
            assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 150_000
    with open(workdir / QA / "qa_table.csv") as fh:
        table = list(csv.DictReader(fh))
    assert sorted(r["exposure"] for r in table) == sorted(r["exposure"] for r in rows)
    assert (workdir / QA / "qa_table.html").read_text().count("<tr>") == 17  # header + 16 exposures


@pytest.mark.workflow
@pytest.mark.parametrize("filt", FILTERS)
def test_truth_residuals(report, filt):
    workdir, _ = report
    product = f"jw01234-o001_t001_nircam_clear-{filt}"
    summary = json.loads((workdir / QA / "image3" / "truth" / f"{product}_truth.json").read_text())
    assert summary["n"] >= 10
    # aligned to the demo's Gaia-like catalog (step_defaults recommended): no common offset left (relative
    # alignment alone leaves the reference exposure's pointing error, ~60 mas), a small scatter
    assert np.hypot(*summary["offset_mas"]) < 10
    # each exposure's aligned WCS at its stars' true pixels (the crf files): on the truth too
    exposures = summary["exposures"]
    assert len(exposures) == 4 and all(e["n"] >= 5 for e in exposures)
    assert max(np.hypot(*e["offset_mas"]) for e in exposures) < 10
    assert summary["scatter_mas"] < 6
    assert abs(summary["median_flux_ratio"] - 1) < 0.03
    for kind in ("preview/{p}_preview.png", "truth/{p}_truth.png"):
        assert (workdir / QA / "image3" / kind.format(p=product)).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.workflow
def test_report_lists_the_figures_by_mode_and_stage(report):
    _, html = report
    text = html.read_text()
    match = re.search(r"categories = (\{.*?\});?\n", text)
    assert match, "no categories in the report"
    categories = json.loads(match.group(1))
    assert set(categories) == {"imaging"}
    imaging = categories["imaging"]
    assert set(imaging) == {"detector1", "image2", "image3", "QA per exposure"}
    assert len(imaging["detector1"]) == len(imaging["image2"]) == 16
    assert len(imaging["image3"]) == 8  # preview + truth residuals of 4 mosaics


# --- In a real browser ----------------------------------------------------------------------------

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000", "--window-size=1400,1000"]

# Records every uncaught error and, once the app has rendered, opens the imaging/image3 results
# and the first truth figure as a reader's clicks would (the report app keeps no state in its URL),
# then writes what it saw into the page for --dump-dom.
_ERRORS = ("<script>window.__errors=[];window.addEventListener('error',"
           "function(e){window.__errors.push(String(e.message))});</script>")
_PROBE = """<script>
setTimeout(function () {
  var out = {errors: window.__errors};
  try {
    var path = categories["imaging"]["image3"].filter(function (p) { return p.endsWith("_truth.png"); })[0];
    app.setView({navbarMode: "subcategory", category: "imaging", subcategory: "image3",
                 content: "img", contentPath: results[path].data_uri, resultPath: path});
    out.shown = path;
  } catch (err) { out.errors.push("probe: " + err); }
  setTimeout(function () {
    var pre = document.createElement("pre");
    pre.id = "webbflow-probe"; pre.style.display = "none"; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 500);
}, 1000);
</script>"""


def _chromium(tmp_path, url, *args):
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found (Debian: apt-get install chromium); .ci/run installs it"
        if os.environ.get("WEBBFLOW_REQUIRE_CHROMIUM"):  # set by .ci/run: there the test must run
            pytest.fail(message)
        pytest.skip(message)
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _png_stats(path):
    from matplotlib.image import imread

    rgb = imread(path)[..., :3]
    white = np.all(rgb > 0.97, axis=-1).mean()
    colours = len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    return white, colours


@pytest.mark.workflow
def test_report_opens_in_headless_chromium(report, tmp_path):
    workdir, html = report
    # The report as written: it loads, its scripts run without an error, the app renders.
    shot = tmp_path / "report.png"
    proc = _chromium(tmp_path, html.as_uri(), f"--screenshot={shot}", "--enable-logging=stderr", "--v=0")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "error" in line.lower()], console
    white, colours = _png_stats(shot)
    assert colours > 50 and white < 0.99, (white, colours)  # the navbar, the workflow graph, its text
    dom = _chromium(tmp_path, html.as_uri(), "--dump-dom").stdout
    assert "Loading Snakemake Report" not in re.sub(r'<div id="loading-screen".*?</div>', "", dom, flags=re.S)
    for text in ("Results", "webbflow reduces JWST NIRCam", "qa_exposures"):
        assert text in dom, text

    # Navigated to the image3 figures (a copy with the probe script): the figure is shown.
    probe_html = workdir / "report_probe.html"
    page = html.read_text().replace("<head>", "<head>" + _ERRORS, 1)
    end = page.rindex("</body>")
    probe_html.write_text(page[:end] + _PROBE + page[end:])
    dom = _chromium(tmp_path, probe_html.as_uri(), "--dump-dom").stdout
    found = re.search(r'<pre id="webbflow-probe"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: the report app did not render"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == [] and probe["shown"].endswith("_truth.png"), probe
    shown = re.search(r'<img src="data:image/png;[^"]*filename=([^;"]+);base64,', dom)
    assert shown and probe["shown"].endswith(shown.group(1)), "the figure is not in the page"
    # the navbar lists the subcategory's results by their labels, with a toggle between the figures
    for text in [f"jw01234-o001_t001_nircam_clear-{f}" for f in FILTERS] + ["residuals against the truth"]:
        assert f">{text}<" in dom, text
    shot = tmp_path / "figure.png"
    proc = _chromium(tmp_path, probe_html.as_uri(), f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-3000:]
    white, colours = _png_stats(shot)
    assert colours > 50 and white < 0.95, (white, colours)
