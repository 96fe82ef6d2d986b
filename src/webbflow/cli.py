"""The ``webbflow`` command line."""

import argparse
import sys


def main(argv=None):
    """Entry point of the ``webbflow`` command."""
    parser = argparse.ArgumentParser(prog="webbflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write simulated NIRCam exposures, references and truth")
    sim.add_argument("preset", help="preset name, e.g. demo-imaging or fullframe")
    sim.add_argument("outdir", help="output folder")
    sim.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")

    d1 = sub.add_parser("detector1", help="reduce one uncal exposure to rate + rateints (no Snakemake)")
    d1.add_argument("uncal", help="*_uncal.fits exposure")
    d1.add_argument("outdir", help="folder for <root>_rate.fits and <root>_rateints.fits")
    d1.add_argument("--refs-dir", help="folder of reference files (REFTYPE/DETECTOR headers)")
    d1.add_argument("--override", action="append", default=[], metavar="REFTYPE=PATH",
                    help="reference file for one type (repeatable); wins over --refs-dir")
    d1.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                    help="step parameter (repeatable), e.g. jump.rejection_threshold=5")
    d1.add_argument("-v", "--verbose", action="store_true", help="log each step and its time")

    args = parser.parse_args(argv)
    if args.command == "detector1":
        return _detector1(args)
    if args.command == "simulate":
        from webbflow.simulate import run_preset

        paths = run_preset(args.preset, args.outdir, seed=args.seed)
        print(f"wrote {len(paths)} exposures to {args.outdir}")
    return 0


def _parse_value(text):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _detector1(args):
    import logging
    from pathlib import Path

    from astropy.io import fits

    from webbflow.io.errors import InputError
    from webbflow.refs import select_references
    from webbflow.stages import detector1

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    overrides = dict(item.split("=", 1) for item in args.override)
    params = {}
    for item in args.set:
        key, value = item.split("=", 1)
        step, name = key.split(".", 1)
        params.setdefault(step, {})[name] = _parse_value(value)
    root = Path(args.uncal).name.removesuffix("_uncal.fits")
    out = Path(args.outdir)
    try:
        refs = select_references(fits.getheader(args.uncal), args.refs_dir, overrides)
        detector1.run(args.uncal, out / f"{root}_rate.fits", out / f"{root}_rateints.fits", refs, params)
    except (InputError, OSError) as exc:
        print(f"webbflow detector1: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out / (root + '_rate.fits')} and {out / (root + '_rateints.fits')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
