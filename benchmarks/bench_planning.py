"""Planning at survey scale (issue 18 part 4): ``snakemake -n`` over a program of N exposures.

Writes a header-only imaging program (:mod:`webbflow.simulate.header_program`: full-frame uncal
files whose ramps are sparse holes, ten detectors per pointing, ten filters, their stage-1, flat
and photom references in a CRDS cache) once into ``benchmarks/.work/planning/``, then for each N
(default 200, 1000, 2000) times ``snakemake -n`` of the whole workflow (every stage, the
associations and the report targets) on the first N files, each a fresh process, and prints its
wall time, CPU time (user + system: the figure to compare on a shared machine) and peak RSS
(``os.wait4`` rusage of the snakemake process, which includes any child it
waited for, from a small launcher: nothing of this benchmark's own memory is counted)::

    python benchmarks/bench_planning.py              # N = 200 1000 2000
    python benchmarks/bench_planning.py --n 2000 --profile plan.prof

``--profile`` runs the largest N once more under cProfile (``python -m cProfile -o``) for where the
time goes.  Goal (issue 18): ``planning N=2000 wall`` <= 60 s and ``peak RSS`` <= 1024 MiB.
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector1 import measure  # noqa: E402  (one measuring helper for every benchmark)

_GENERATE = """
import sys
from webbflow.simulate.header_program import write_header_program, write_header_references
from pathlib import Path
out, n = sys.argv[1], int(sys.argv[2])
paths = write_header_program(out, n)
(Path(out) / "program.txt").write_text(" ".join(p.name for p in paths))
if not (Path(out) / "crds" / "config").exists():
    write_header_references(out, Path(out) / "crds")
"""


def _program(work, n_max):
    """The program's files (written in a child process: this one stays small), and a folder of the
    first ``n`` per N (links)."""
    subprocess.run([sys.executable, "-c", _GENERATE, str(work), str(n_max)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    # in program order (pointings round the filters), so that the first N span every filter
    return [work / "uncal" / name for name in (work / "program.txt").read_text().split()]


def _config(work, n, files):
    """A folder of the first ``n`` files (symbolic links) and the config that plans them."""
    case = work / f"n{n}"
    uncal = case / "uncal"
    uncal.mkdir(parents=True, exist_ok=True)
    wanted = {f.name: f for f in files[:n]}
    for link in uncal.iterdir():
        if link.name not in wanted:
            link.unlink()
    for name, target in wanted.items():
        if not (uncal / name).exists():
            (uncal / name).symlink_to(target)
    config = case / "config.yaml"
    config.write_text(json.dumps({"inputs": {"uncal_dir": str(uncal)}, "results_dir": str(case / "results"),
                                  "crds": {"cache": str(work / "crds"), "context": "latest"}}))
    (case / "run").mkdir(exist_ok=True)
    return case, config


def _dry_run(case, config, profile=None):
    cmd = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "-m", "snakemake",
           "-s", str(REPO / "Snakefile"), "-d", str(case / "run"), "--configfile", str(config), "-n", "--quiet",
           "rules"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    wall, rss, _, seconds = measure(cmd, case / "run", env=env, cpu=True)
    return wall, rss, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200, 1000, 2000], help="program sizes (uncal files)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work" / "planning")
    parser.add_argument("--profile", type=Path, help="also profile the largest N into this file")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    files = _program(args.work.resolve(), max(args.n))
    figures = []
    for n in sorted(args.n):
        case, config = _config(args.work.resolve(), n, files)
        wall, rss, seconds = _dry_run(case, config)
        figures.append({"n": n, "wall_s": round(wall, 2), "cpu_s": round(seconds, 2), "peak_rss_mib": round(rss)})
        print(f"planning N={n} wall = {wall:.1f} s (CPU {seconds:.1f} s), peak RSS = {rss:.0f} MiB"
              + ("    # goal <= 60 s, <= 1024 MiB" if n == 2000 else ""), flush=True)
    if args.profile:
        case, config = _config(args.work.resolve(), max(args.n), files)
        _dry_run(case, config, profile=args.profile.resolve())
        print(f"profile of N={max(args.n)}: {args.profile}")
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"{dt.date.today()}-{platform.node()}-planning.json"
    out.write_text(json.dumps({"date": str(dt.datetime.now(dt.timezone.utc)), "machine": platform.node(),
                               "cpus": os.cpu_count(), "figures": figures}, indent=1))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
