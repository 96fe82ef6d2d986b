"""The ``webbflow`` command line."""

import argparse
import signal
import sys


def main(argv=None):
    """Entry point of the ``webbflow`` command."""
    parser = argparse.ArgumentParser(prog="webbflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write simulated NIRCam exposures, references and truth")
    sim.add_argument("args", nargs="+", metavar="[PRESET] OUTDIR",
                     help="preset name (e.g. demo-imaging, demo-tso-imaging) and output folder")
    sim.add_argument("--preset", dest="preset_option", metavar="PRESET",
                     help="the preset, as an option (then OUTDIR alone follows)")
    sim.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")

    d1 = sub.add_parser("detector1", help="reduce one uncal exposure to rate + rateints (no Snakemake)")
    d1.add_argument("uncal", help="*_uncal.fits exposure")
    d1.add_argument("outdir", help="folder for <root>_rate.fits and <root>_rateints.fits")
    d1.add_argument("--refs-dir", help="folder of reference files (REFTYPE/DETECTOR headers)")
    d1.add_argument("--override", action="append", default=[], metavar="REFTYPE=PATH",
                    help="reference file for one type (repeatable); wins over --refs-dir")
    d1.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                    help="step parameter (repeatable), e.g. jump.rejection_threshold=5")
    d1.add_argument("--max-memory-mb", type=float, default=None,
                    help="memory budget; a larger exposure is reduced in chunks (default 4000)")
    d1.add_argument("-v", "--verbose", action="store_true", help="log each step and its time")

    crds = sub.add_parser("crds", help="local CRDS cache: build it, select from it, export a locked copy")
    crds_sub = crds.add_subparsers(dest="crds_command", required=True)
    build = crds_sub.add_parser("build", help="write reference files into a CRDS cache with new mappings")
    build.add_argument("refs", help="folder of CRDS-format reference files (REFTYPE etc. in their headers)")
    build.add_argument("cache", help="cache root (CRDS_PATH)")
    build.add_argument("--context", help="context to write, e.g. jwst_9001.pmap (default: next number)")
    build.add_argument("--not-latest", action="store_true", help="do not make it the cache's latest context")
    select = crds_sub.add_parser("select", help="best references of an uncal exposure, through crds")
    select.add_argument("uncal")
    select.add_argument("--cache", required=True, help="CRDS cache (CRDS_PATH)")
    select.add_argument("--context", default="latest", help="jwst_NNNN.pmap or latest")
    select.add_argument("--types", default="mask,saturation,superbias,linearity,dark,gain,readnoise")
    export = crds_sub.add_parser("export", help="copy exactly the files of a lockfile into a new CRDS cache")
    export.add_argument("lockfile", help="results/crds.lock.json")
    export.add_argument("outdir", help="new cache root; use it as CRDS_PATH")
    export.add_argument("--cache", help="cache to copy from (default: the one the lockfile names)")

    dl = sub.add_parser("download", help="download a program's NIRCam uncal files from MAST")
    dl.add_argument("program", help="proposal id, e.g. 1234")
    dl.add_argument("outdir", help="folder for the *_uncal.fits files")
    dl.add_argument("--observation", action="append", default=[], help="observation number (repeatable)")
    dl.add_argument("--detector", action="append", default=[], help="detector, e.g. nrca1 (repeatable)")
    dl.add_argument("--filter", action="append", default=[], help="filter, e.g. F200W (repeatable)")
    dl.add_argument("--exp-type", action="append", default=[], help="EXP_TYPE, e.g. NRC_IMAGE (repeatable)")
    dl.add_argument("--mast-url", default=None, help="MAST base URL (default https://mast.stsci.edu)")
    dl.add_argument("--retries", type=int, default=3)

    args = parser.parse_args(argv)
    # SIGTERM/SIGHUP (kill, a closed terminal, a batch system's time limit) unwind like Ctrl-C does,
    # so the writers remove their temporary files and a finished half of a pair (rateints without
    # its rate); by default they end the process on the spot.  Only SIGKILL cannot be caught.
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _command(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminate(signum, frame):
    """Signal handler: exit by raising SystemExit (status 128 + signal), running every cleanup."""
    raise SystemExit(128 + signum)


def _command(args):
    """Run the parsed command."""
    if args.command == "detector1":
        return _detector1(args)
    if args.command == "crds":
        return _crds(args)
    if args.command == "download":
        return _download(args)
    if args.command == "simulate":
        from webbflow.simulate import PRESETS, run_preset

        given = ([args.preset_option] if args.preset_option else []) + args.args
        if len(given) != 2:
            return _error("simulate", f"{' '.join(args.args)}: give one preset and one output folder",
                          "webbflow simulate PRESET OUTDIR (or --preset PRESET OUTDIR)")
        args.preset, args.outdir = given
        if args.preset not in PRESETS:
            return _error("simulate", f"preset {args.preset}: unknown preset",
                          f"use one of {', '.join(sorted(PRESETS))}")
        paths = run_preset(args.preset, args.outdir, seed=args.seed)
        print(f"wrote {len(paths)} exposures to {args.outdir}")
    return 0


def _error(command, message, fix=None):
    """Print one error line ``webbflow <command>: <file/key>: <problem>. Fix: <fix>``; exit status 1."""
    print(f"webbflow {command}: {message}" + (f". Fix: {fix}" if fix else ""), file=sys.stderr)
    return 1


def _schema_path():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def _overrides(items):
    """``REFTYPE=PATH`` items -> dict; an unknown type or a malformed item is a ConfigError."""
    from webbflow.config import ConfigError
    from webbflow.refs import DETECTOR1_REFTYPES

    out = {}
    for item in items:
        reftype, sep, path = item.partition("=")
        if not sep or not reftype or not path:
            raise ConfigError(f"--override {item}: not REFTYPE=PATH. Fix: write e.g. --override dark=my_dark.fits")
        if reftype not in DETECTOR1_REFTYPES:
            raise ConfigError(f"--override {item}: unknown reference type {reftype} (detector1 reads "
                              f"{', '.join(DETECTOR1_REFTYPES)}). Fix: use one of those types")
        out[reftype] = path
    return out


def _step_params(items):
    """``STEP.PARAM=VALUE`` items -> {step: {param: value}}, checked against config/schema.yaml."""
    from webbflow.config import STAGES, ConfigError, validate_config

    steps = STAGES["detector1"].steps
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        step, dot, name = key.partition(".")
        if not sep or not dot or not step or not name:
            raise ConfigError(f"--set {item}: not STEP.PARAM=VALUE. Fix: write e.g. --set jump.rejection_threshold=5")
        if step not in steps:
            raise ConfigError(f"--set {item}: detector1 has no step {step}. Fix: use one of {', '.join(steps)}")
        params.setdefault(step, {})[name] = _parse_value(value)
    if params:
        try:
            validate_config({"steps": params}, _schema_path())
        except ConfigError as exc:
            raise ConfigError(f"--set: {exc}") from None
    return params


def _parse_value(text):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _detector1(args):
    import logging
    from pathlib import Path

    from webbflow.io.errors import InputError
    from webbflow.io.uncal import read_uncal_headers
    from webbflow.refs import select_references
    from webbflow.stages import detector1

    import warnings

    from astropy.io.fits.verify import VerifyWarning

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    # For the whole process: the references are opened in threads, where catch_warnings() does not
    # hold; a damaged file's multi-line VerifyWarning would precede its one-line ReferenceFileError.
    warnings.filterwarnings("ignore", category=VerifyWarning)
    # astropy's "File may have been truncated" warning, from the same threads, is not a VerifyWarning
    warnings.filterwarnings("ignore", message=".*truncated.*")
    from webbflow.config import ConfigError

    try:
        overrides = _overrides(args.override)
        params = _step_params(args.set)
    except ConfigError as exc:
        return _error("detector1", str(exc))
    root = Path(args.uncal).name.removesuffix("_uncal.fits")
    out = Path(args.outdir)
    try:
        # the header is checked before the references are chosen from it
        primary = read_uncal_headers(args.uncal, validate=True).primary
        refs = select_references(primary, args.refs_dir, overrides)
        detector1.run(args.uncal, out / f"{root}_rate.fits", out / f"{root}_rateints.fits", refs, params,
                      max_memory_mb=args.max_memory_mb)
    except (InputError, OSError) as exc:
        print(f"webbflow detector1: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out / (root + '_rate.fits')} and {out / (root + '_rateints.fits')}")
    return 0


def _crds(args):
    from pathlib import Path

    from astropy.io import fits

    from webbflow.io.errors import InputError

    try:
        if args.crds_command == "build":
            from webbflow.refs.crds_cache import build_cache

            context = build_cache(args.refs, args.cache, context=args.context, make_latest=not args.not_latest)
            print(f"wrote context {context} into {args.cache}")
        elif args.crds_command == "select":
            from webbflow.refs import crds_select

            import warnings

            try:  # the exposure first: a truncated file is named, whatever the cache
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # astropy's multi-line VerifyWarning: the error says it
                    header = fits.getheader(args.uncal)
            except (OSError, ValueError) as exc:
                raise InputError(args.uncal, f"not a readable FITS file ({exc})",
                                 "give a complete *_uncal.fits file (re-download or re-simulate it)") from None
            setup = crds_select.CrdsSetup(args.cache, args.context)
            context = crds_select.resolve_context(setup)
            params = crds_select.crds_parameters(header)
            names = crds_select.best_references(params, args.types.split(","), setup, context,
                                                source=args.uncal)
            print(f"context {context}")
            for reftype, name in names.items():
                print(f"{reftype:12s} {'crds://' + name if name else 'N/A'}")
        elif args.crds_command == "export":
            from webbflow.refs.lockfile import export_cache

            out = export_cache(args.lockfile, args.outdir, args.cache)
            print(f"exported the locked cache to {out} (use CRDS_PATH={Path(out).resolve()})")
    except InputError as exc:
        print(f"webbflow crds: {exc}", file=sys.stderr)
        return 1
    return 0


def _download(args):
    import logging

    from webbflow.download import MAST_URL, download, download_url, list_products
    from webbflow.io.errors import InputError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        products = list_products(args.program, args.observation, args.filter, args.detector, args.exp_type)
        for i, product in enumerate(products, 1):
            print(f"[{i}/{len(products)}] {product.filename}")
            download(download_url(product.uri, args.mast_url or MAST_URL), f"{args.outdir}/{product.filename}",
                     size=product.size, sha256=product.sha256, retries=args.retries)
    except InputError as exc:
        print(f"webbflow download: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # offline, DNS failure, refused connection, full disk
        url = args.mast_url or MAST_URL
        return _error("download", f"{url}: {exc}",
                      "check the network connection (or --mast-url), then run the same command again")
    print(f"{len(products)} files in {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
