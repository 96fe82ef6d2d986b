#!/usr/bin/env python
"""A time-series demo through stages 1-3, ours against jwst 3.0, in one run.

``--mode grism`` (default): simulates ``demo-tso-grism`` (3 segments of 20 integrations; or another
size with ``--ints-per-segment``), then runs, one fresh process per job as the workflow does, our
detector1 and spec2 on every segment and tso3 on the exposure, and jwst's calwebb_detector1,
calwebb_spec2 and calwebb_tso3 on the same inputs with the same references (jwst's tso3 on jwst's
calints).  ``--mode imaging``: ``demo-tso-imaging`` (3 segments of 30 integrations, F210M + WLP8
SUB64P) through detector1, image2 (→ calints) and tso3 (outlier_detection, tso_photometry), both
pipelines at jwst's defaults.  Prints total wall time, the largest peak RSS of any job, and the
ratios (issues 13 and 14: >= 10x faster, <= 1/5 of jwst's peak memory).  Numba's cache is warmed
first, as in production.

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_tso_demo.py [--mode grism|imaging] [--ints-per-segment 20] [--no-jwst]

Results: ``benchmarks/results/<date>-<host>-tso-demo.json`` (``-tso-imaging-demo.json``).
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure  # noqa: E402  (one measuring helper for every benchmark)

_JOB = """
import sys
from pathlib import Path
stage, args = sys.argv[1], sys.argv[2:]
if stage == "detector1":
    import json
    from webbflow.stages import detector1
    uncal, out, refs = args
    root = Path(uncal).name.removesuffix("_uncal.fits")
    detector1.run(uncal, f"{out}/{root}_rate.fits", f"{out}/{root}_rateints.fits", json.loads(refs), {})
elif stage == "image2":
    import json
    from webbflow.stages import image2
    rateints, out, refs = args
    root = Path(rateints).name.removesuffix("_rateints.fits")
    image2.run(rateints, f"{out}/{root}_calints.fits", json.loads(refs), {})
elif stage == "tso3_phot":
    import json
    from webbflow.associations import read_asn
    from webbflow.stages import tso3
    asn_path, out, gain = args
    asn = read_asn(asn_path)
    crf = [f"{out}/{Path(m).name.removesuffix('_calints.fits')}_{asn['asn_id']}_crfints.fits" for m in asn["members"]]
    tso3.run_photometry(asn["members"], crf, f"{out}/{asn['product']}_phot.ecsv", {"gain": gain}, {})
elif stage == "spec2":
    import json
    from webbflow.stages import spec2
    rateints, out, refs = args
    root = Path(rateints).name.removesuffix("_rateints.fits")
    spec2.run(rateints, f"{out}/{root}_calints.fits", f"{out}/{root}_x1dints.fits", json.loads(refs), {})
else:
    import json
    from webbflow.associations import read_asn
    from webbflow.stages import tso3
    asn_path, out, extract1d = args
    asn = read_asn(asn_path)
    crf = [f"{out}/{Path(m).name.removesuffix('_calints.fits')}_{asn['asn_id']}_crfints.fits" for m in asn["members"]]
    tso3.run(asn["members"], crf, f"{out}/{asn['product']}_x1dints.fits", f"{out}/{asn['product']}_whtlt.ecsv",
             {"extract1d": extract1d}, {})
"""


def _selected(uncal, refs):
    from webbflow.refs import select_references

    return select_references(fits.getheader(uncal), refs)


def _detector1_refs(uncal, refs):
    """The references of one segment as the JSON a job receives: chosen once by the driver, as
    Snakemake does when it plans the run (and as jwst's commands receive them)."""
    return json.dumps({k: (str(v) if v else None) for k, v in _selected(uncal, refs).items()})


def _jobs(data, uncals, refs, stage2_refs, who, imaging=False):
    """(name, command) of every job of one pipeline, in order; and the association it writes.

    ``stage2_refs``: spec2's references (grism) or image2's plus ``gain`` (imaging)."""
    from webbflow.associations import tso3_associations, write_asn
    from webbflow.exposures import exposure_table
    from webbflow.oracle import detector1_command, oracle_paths, spec2_command

    stage2 = "image2" if imaging else "spec2"
    out = data / who
    stage1, stage2_dir, stage3 = out / "detector1", out / stage2, out / "tso3"
    for d in (stage1, stage2_dir, stage3):
        d.mkdir(parents=True, exist_ok=True)
    (asn,) = tso3_associations(exposure_table(data / "uncal"))
    asn_path = stage2_dir / "tso3_asn.json"
    write_asn(asn, asn_path, suffix="calints")
    refs2 = {k: v for k, v in stage2_refs.items() if k != "gain"}
    python, script = oracle_paths() if who == "jwst" else (None, None)
    jobs = []
    for uncal in uncals:
        root = uncal.name.removesuffix("_uncal.fits")
        rateints = stage1 / f"{root}_rateints.fits"
        if who == "ours":
            jobs.append(("detector1", [sys.executable, "-c", _JOB, "detector1", str(uncal), str(stage1),
                                       _detector1_refs(uncal, refs)]))
            jobs.append((stage2, [sys.executable, "-c", _JOB, stage2, str(rateints), str(stage2_dir),
                                  json.dumps({k: str(v) for k, v in refs2.items()})]))
        else:
            jobs.append(("detector1", detector1_command(uncal, _selected(uncal, refs), stage1)))
            if imaging:  # jwst's image2 with the same references (as tests/test_parity_tso_imaging.py)
                steps = {"distortion": "assign_wcs", "flat": "flat_field", "photom": "photom", "area": "photom"}
                jobs.append(("image2", [str(python), str(script), "image2", str(rateints), str(stage2_dir)]
                             + [f"--override={steps[t]}.{t}={p}" for t, p in refs2.items() if p]))
            else:
                jobs.append(("spec2", spec2_command(rateints, refs2, stage2_dir)))
    if who == "ours":
        arg = stage2_refs["gain"] if imaging else stage2_refs["extract1d"]
        jobs.append(("tso3", [sys.executable, "-c", _JOB, "tso3_phot" if imaging else "tso3", str(asn_path),
                              str(stage3), str(arg)]))
    else:
        override = (f"--override=tso_photometry.gain={stage2_refs['gain']}" if imaging
                    else f"--override=extract_1d.extract1d={stage2_refs['extract1d']}")
        jobs.append(("tso3", [str(python), str(script), "tso3", str(asn_path), str(stage3), override]))
    return jobs


def main(argv=None):
    from webbflow.simulate import optics
    from webbflow.simulate.grism import write_grism_references
    from webbflow.simulate.presets import run_specs, tso_grism_specs, tso_image_specs
    from webbflow.simulate.stage2_refs import write_stage2_references

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("grism", "imaging"), default="grism")
    parser.add_argument("--ints-per-segment", type=int, default=None,
                        help="integrations per segment (default: the demo's, 20 grism / 30 imaging)")
    parser.add_argument("--no-jwst", action="store_true", help="skip the oracle run")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    imaging = args.mode == "imaging"
    name = "tso-imaging-demo" if imaging else "tso-demo"
    nint = args.ints_per_segment or (30 if imaging else 20)
    data = Path(args.workdir or REPO / "benchmarks" / ".work" / name) / f"n{nint}"
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"TSO demo benchmark ({args.mode}) on {machine}, {dt.date.today()}", flush=True)
    specs = (tso_image_specs if imaging else tso_grism_specs)(ints_per_segment=nint)
    if not (data / "uncal").is_dir():
        print(f"simulating {len(specs)} segments x {nint} integrations ...", flush=True)
        run_specs(specs, data)
    uncals = sorted((data / "uncal").glob("*_uncal.fits"))
    refs = data / "refs"
    if imaging:
        from webbflow.refs import select_references
        from webbflow.refs.select import IMAGE2_REFTYPES

        header = fits.getheader(uncals[0])
        stage2_refs = {**{k: str(v) for k, v in select_references(header, refs, None, IMAGE2_REFTYPES).items() if v},
                       "gain": str(_selected(uncals[0], refs)["gain"])}
    else:
        spec = specs[0]
        grism = write_grism_references(data, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                                       optics.pixar_a2(spec.detector))
        flats = write_stage2_references(data, spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
        stage2_refs = {**grism, "flat": flats["flat"], "distortion": flats["distortion"]}
    pipelines = ["ours"] + ([] if args.no_jwst else ["jwst"])
    # warm numba's cache (first segment's detector1), as a production run finds it
    warm = data / "warm"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir()
    measure([sys.executable, "-c", _JOB, "detector1", str(uncals[0]), str(warm), _detector1_refs(uncals[0], refs)],
            data)
    totals = {}
    for who in pipelines:
        shutil.rmtree(data / who, ignore_errors=True)
        rows = []
        for job, cmd in _jobs(data, uncals, refs, stage2_refs, who, imaging):
            wall, rss, _ = measure(cmd, data)
            rows.append({"job": job, "wall_s": wall, "peak_rss_mib": rss})
        totals[who] = {"wall_s": sum(r["wall_s"] for r in rows), "peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
                       "jobs": rows}
        t = totals[who]
        stage2 = "image2" if imaging else "spec2"
        per = {s: sum(r["wall_s"] for r in rows if r["job"] == s) for s in ("detector1", stage2, "tso3")}
        print(f"  {who:4s}: wall {t['wall_s']:7.1f} s (detector1 {per['detector1']:.1f}, {stage2} {per[stage2]:.1f}, "
              f"tso3 {per['tso3']:.1f}), largest job peak RSS {t['peak_rss_mib']:.0f} MiB", flush=True)
    result = {"date": str(dt.date.today()), "machine": machine, "mode": args.mode, "segments": len(uncals),
              "ints_per_segment": nint, "pipelines": totals}
    if "jwst" in totals:
        result["speedup"] = totals["jwst"]["wall_s"] / totals["ours"]["wall_s"]
        result["memory_ratio"] = totals["ours"]["peak_rss_mib"] / totals["jwst"]["peak_rss_mib"]
        print(f"  jwst/ours wall = {result['speedup']:.1f}x; ours/jwst peak memory = {result['memory_ratio']:.2f}")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{dt.date.today()}-{platform.node()}-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
