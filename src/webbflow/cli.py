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

    args = parser.parse_args(argv)
    if args.command == "simulate":
        from webbflow.simulate import run_preset

        paths = run_preset(args.preset, args.outdir, seed=args.seed)
        print(f"wrote {len(paths)} exposures to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
