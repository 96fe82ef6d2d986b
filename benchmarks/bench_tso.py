#!/usr/bin/env python
"""Peak memory and wall time of detector1 on a grism time-series segment, ours and jwst 3.0's.

Simulates NRC_TSGRISM segments of the same geometry (NRCALONG SUBGRISM64, 4 outputs, RAPID,
4 groups) at 100 and 1000 integrations, and runs in fresh processes webbflow's detector1 on both
and jwst's on the 100-integration one (jwst holds the whole segment, ~7-8x the float32 cube:
the 1000-integration one would not fit this machine).  Issue 13 asks that our peak memory not
grow with NINTS: ours runs with a memory budget (``--max-memory-mb``, 1000 by default), above
which a segment is reduced in chunks of integrations and blocks of rows with identical products.

``--stage2``: then spec2 and tso3 (one fresh process each, ours) on rateints of ``--stage2-nints``
integrations (default 100 and 1000) tiled from the first detector1 run's rateints (the content does
not change the memory; INT_TIMES renumbered), beside jwst 3.0's calwebb_spec2 on that rateints
itself.  spec2 and tso3 work a chunk of integrations at a time and write the x1dints's rows in
place, so their peaks should not grow with NINTS: each process prints its own VmHWM (the peak
reported), and the ratio of each stage's peak to that at the first ``--stage2-nints``.

Usage (after ``pip install -e .`` and ``bash benchmarks/setup_oracle.sh``)::

    python benchmarks/bench_tso.py [--nints 100 1000] [--no-jwst] [--stage2 [--stage2-nints 100 1000]]

Results: ``benchmarks/results/<date>-<host>-tso.json`` and one line per run on stdout.
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

from webbflow.associations import Association, write_asn
from webbflow.oracle import detector1_command, spec2_command, tso3_command
from webbflow.refs import select_references
from webbflow.simulate import ExposureSpec, Star, simulate_exposure

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure, our_steps  # noqa: E402  (one measuring helper for every benchmark)
from bench_job_overhead import workflow_env  # noqa: E402  (our stage-2 jobs' environment)


def segment_spec(nints):
    """The benchmark segment: one file of ``nints`` integrations of a 2-segment exposure."""
    return ExposureSpec(
        detector="NRCALONG", subarray="SUBGRISM64", readpatt="RAPID", nints=nints, ngroups=4,
        filter="F322W2", pupil="GRISMR", exp_type="NRC_TSGRISM", tsovisit=True, segment=(1, 2, 1, 2 * nints),
        stars=(Star(1100.0, 33.0, 20000.0),), n_stars=0, n_galaxies=0, n_saturating_stars=0, sky=8.0,
        one_over_f=2.0, cr_rate=2e-4, seed=7)


_STAGE2 = """
import sys
from pathlib import Path
import json
stage, inp, out, refs = sys.argv[1:5]
refs = json.loads(refs)
root = Path(inp).name.rsplit("_", 1)[0]
if stage == "spec2":
    from webbflow.stages import spec2
    spec2.run(inp, f"{out}/{root}_calints.fits", f"{out}/{root}_x1dints.fits", refs, {})
else:
    from webbflow.stages import tso3
    tso3.run([inp], [f"{out}/{root}_crfints.fits"], f"{out}/{root}_tso3_x1dints.fits", f"{out}/{root}_whtlt.ecsv",
             {"extract1d": refs["extract1d"]}, {})
# the process's own peak (VmHWM): not the launcher's view of it (ru_maxrss)
with open("/proc/self/status") as status:
    print("@@vmhwm", next(line.split()[1] for line in status if line.startswith("VmHWM:")), file=sys.stderr)
"""


def vmhwm_mib(text):
    """The peak resident memory (VmHWM, MiB) the measured process printed of itself (:data:`_STAGE2`)."""
    return int([line for line in text.splitlines() if line.startswith("@@vmhwm ")][-1].split()[1]) / 1024.0


def tiled_rateints(src, nints, dest):
    """A rateints of ``nints`` integrations: ``src``'s repeated (headers and INT_TIMES renumbered)."""
    import numpy as np

    with fits.open(src) as hdul:
        n = hdul["SCI"].header["NAXIS3"]
        take = np.arange(nints) % n
        out = fits.HDUList()
        for hdu in hdul:
            if hdu.name == "INT_TIMES":
                table = np.array(hdu.data)[take]
                period = table["int_mid_MJD_UTC"][-1] - table["int_mid_MJD_UTC"][0] if n > 1 else 0.0
                shift = (np.arange(nints) // n) * (period + (period / max(n - 1, 1)))
                for name in table.dtype.names:
                    if name != "integration_number":
                        table[name] = table[name] + shift
                table["integration_number"] = np.arange(1, nints + 1)
                new = fits.BinTableHDU(table, hdu.header, name="INT_TIMES")
            elif hdu.header.get("NAXIS") == 3:
                new = fits.ImageHDU(hdu.data[take], hdu.header, name=hdu.name)
            else:
                new = hdu.copy()
            out.append(new)
        out[0].header.update(NINTS=nints, INTSTART=1, INTEND=nints, EXSEGNUM=1, EXSEGTOT=1)
        out.writeto(dest, overwrite=True)
    return dest


def stage2_rows(data, rateints, stage2_nints, no_jwst):
    """spec2 and tso3 peak RSS and wall on tiled rateints (ours), jwst's spec2 on ``rateints``."""
    from webbflow.simulate import optics
    from webbflow.simulate.grism import write_grism_references
    from webbflow.simulate.stage2_refs import write_stage2_references

    spec = segment_spec(100)
    grism = write_grism_references(data, spec.detector, spec.filter, optics.pixar_sr(spec.detector),
                                   optics.pixar_a2(spec.detector))
    flats = write_stage2_references(data, spec.detector, spec.geometry, spec.filter, spec.pupil, 0)
    refs = {**{k: str(v) for k, v in grism.items()}, "flat": str(flats["flat"]), "distortion": str(flats["distortion"])}
    rows = []
    for nints in stage2_nints:
        work = data / f"stage2-n{nints}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        src = tiled_rateints(rateints, nints, work / rateints.name.replace("_rateints", f"-n{nints}_rateints"))
        for stage, inp in (("spec2", src), ("tso3", None)):
            if stage == "tso3":
                inp = next(work.glob("*_calints.fits"))
            wall, rss, text, cpu = measure([sys.executable, "-c", _STAGE2, stage, str(inp), str(work),
                                            json.dumps(refs)], data, env=workflow_env(stage), cpu=True)
            hwm = vmhwm_mib(text)
            rows.append({"pipeline": "ours", "stage": stage, "nints": nints, "wall_s": wall, "cpu_s": cpu,
                         "peak_rss_mib": hwm, "ru_maxrss_mib": rss})
            print(f"  ours {stage:5s} {nints:5d} ints: wall {wall:7.2f} s, CPU {cpu:6.2f} s, peak RSS (VmHWM) "
                  f"{hwm:6.0f} MiB (rateints {src.stat().st_size / 2**20:.0f} MiB)", flush=True)
        peaks = {r["stage"]: r["peak_rss_mib"] for r in rows if r["nints"] == stage2_nints[0]}
        for r in rows[-2:]:
            if r["nints"] != stage2_nints[0] and peaks.get(r["stage"]):
                r["over_first_nints"] = r["peak_rss_mib"] / peaks[r["stage"]]
                print(f"  ours {r['stage']:5s} peak at {nints} / at {stage2_nints[0]} integrations: "
                      f"{r['over_first_nints']:.2f}", flush=True)
        for f in work.glob("*.fits"):
            f.unlink()  # GB each at 1000 integrations
    if not no_jwst:
        out = data / "stage2-jwst"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        nints = fits.getheader(rateints, "SCI")["NAXIS3"]
        asn = out / "tso3_asn.json"
        (out / "tso3").mkdir()
        write_asn(Association(asn_id="o001", product="bench_tso3", program="01234", observation="001",
                              filter=spec.filter, pupil=spec.pupil, members=[rateints.name.removesuffix("_rateints.fits")],
                              asn_type="tso3", subarray=spec.subarray), asn, suffix="calints")
        # jwst's peak is the launcher's view of it (ru_maxrss: its own, the launcher being small)
        for stage, cmd in (("spec2", spec2_command(rateints, refs, out)),
                           ("tso3", tso3_command(asn, refs, out / "tso3"))):
            wall, rss, _, cpu = measure(cmd, data, cpu=True)
            rows.append({"pipeline": "jwst", "stage": stage, "nints": nints, "wall_s": wall, "cpu_s": cpu,
                         "peak_rss_mib": rss})
            print(f"  jwst {stage:5s} {nints:5d} ints: wall {wall:7.2f} s, CPU {cpu:6.2f} s, peak RSS {rss:6.0f} MiB",
                  flush=True)
        shutil.rmtree(out)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nints", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--no-jwst", action="store_true", help="skip the oracle run")
    parser.add_argument("--max-memory-mb", type=float, default=1000,
                        help="our detector1's memory budget (larger segments are reduced in chunks)")
    parser.add_argument("--stage2", action="store_true", help="also spec2 and tso3 (see above)")
    parser.add_argument("--stage2-nints", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--stage2-only", action="store_true",
                        help="only the spec2/tso3 lines, from an earlier run's rateints of the first --nints")
    parser.add_argument("--workdir", default=str(REPO / "benchmarks" / ".work" / "tso"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    machine = f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"TSO benchmark on {machine}, {dt.date.today()}", flush=True)
    results = []
    for nints in [] if args.stage2_only else args.nints:
        data = workdir / f"n{nints}"
        spec = segment_spec(nints)
        uncal = data / "uncal" / f"{spec.rootname}_uncal.fits"
        if not uncal.exists():
            print(f"simulating {nints} integrations ...", flush=True)
            simulate_exposure(spec, data)
        refs = select_references(fits.getheader(uncal), data / "refs")
        cube_mib = nints * spec.ngroups * 64 * 2048 * 4 / 2**20
        runs = [("ours", [sys.executable, "-m", "webbflow.cli", "detector1", str(uncal), str(data / "ours"),
                          "--refs-dir", str(data / "refs"), "--max-memory-mb", str(args.max_memory_mb), "-v"])]
        if not args.no_jwst and nints <= 100:
            runs.append(("jwst", detector1_command(uncal, refs, data / "jwst")))
        measure(runs[0][1], data)  # numba's cache warm, as in production
        for name, cmd in runs:
            shutil.rmtree(data / name, ignore_errors=True)
            (data / name).mkdir(parents=True)
            wall, rss, text = measure(cmd, data)
            row = {"pipeline": name, "nints": nints, "wall_s": wall, "peak_rss_mib": rss,
                   "float32_cube_mib": cube_mib, "rss_over_cube": rss / cube_mib}
            if name == "ours":
                row["steps_s"] = our_steps(text)
            results.append(row)
            print(f"  {name:4s} {nints:5d} ints: wall {wall:7.2f} s, peak RSS {rss:7.0f} MiB "
                  f"({rss / cube_mib:.2f} x the {cube_mib:.0f} MiB float32 cube)", flush=True)
    if args.stage2 or args.stage2_only:
        first = workdir / f"n{args.nints[0]}" / "ours"
        rateints = next(first.glob("*_rateints.fits"))
        results += stage2_rows(workdir / f"n{args.nints[0]}", rateints, args.stage2_nints, args.no_jwst)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{dt.date.today()}-{platform.node()}-tso.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": str(dt.date.today()), "machine": machine,
                               "max_memory_mb": args.max_memory_mb, "runs": results}, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
