"""Compare two runs' products: every array (sha256) and every header card but dates.

Usage::

    python benchmarks/compare_products.py RESULTS_A RESULTS_B [--verbose]

Both arguments are ``results_dir`` folders (or whole run folders). Every product under A must exist
under B with the same relative path, and the other way round (logs, Snakemake's timestamps and the
QA/report figures are left out: they record when and where a run happened, not what it produced).

- FITS: per HDU, the sha256 of the data bytes and every header card except the write time (``DATE``)
  and the checksums that cover it (``CHECKSUM``, ``DATASUM``), and in HDRTAB tables (the member
  headers of x1dints) the ISO timestamps; the ASDF extension is compared with its
  tree read without its ``history``, ``_fits_hash``, timestamps and the checksum cards of the input's
  headers it carries (``extra_fits``, e.g. a crfints's copy of its calints' cards) (asdf records when and with what it
  wrote the tree, in set order).
- JSON, ECSV and other text: the text with ISO timestamps and each run's own folder blanked.

Exit status 0 when everything is identical, 1 otherwise; one line per difference.
"""

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import yaml
from astropy.io import fits

SKIPPED_PARTS = {"logs", "qa", "report"}
SKIPPED_NAMES = {".snakemake_timestamp", ".webbflow.lock"}
VOLATILE_CARDS = {"DATE", "CHECKSUM", "DATASUM"}
TIMESTAMP = re.compile(rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?")


def products(root):
    """Relative paths of the products under ``root`` (logs, timestamps and figures left out)."""
    root = Path(root)
    found = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and path.name not in SKIPPED_NAMES and not SKIPPED_PARTS & set(rel.parts) \
                and not path.suffix == ".png":
            found.add(rel)
    return found


def _sha(data):
    return hashlib.sha256(data).hexdigest()


class _AnyTagLoader(yaml.SafeLoader):
    """A YAML loader that reads every ASDF tag as the plain mapping or sequence under it."""


def _untagged(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_AnyTagLoader.add_multi_constructor("!", _untagged)
_AnyTagLoader.add_multi_constructor("tag:", _untagged)


def asdf_digest(raw):
    """sha256 of an ASDF extension: its tree without ``history`` (the software that wrote it, listed in
    set order), ``_fits_hash`` (a hash of the FITS part, DATE included), timestamps and the volatile
    cards (checksums) of the input's headers that ``extra_fits`` carries, then its blocks."""
    head, sep, blocks = raw.partition(b"\n...\n")
    tree = yaml.load(TIMESTAMP.sub(b"<DATE>", head), Loader=_AnyTagLoader) or {}
    for key in ("history", "_fits_hash", "asdf_library"):
        tree.pop(key, None)
    for hdu in (tree.get("extra_fits") or {}).values():  # header cards carried from the input product
        if isinstance(hdu, dict) and isinstance(hdu.get("header"), list):
            hdu["header"] = [card for card in hdu["header"] if not (card and card[0] in VOLATILE_CARDS)]
    return _sha(json.dumps(tree, sort_keys=True, default=str).encode() + sep + blocks)


def fits_digest(path):
    """HDU name -> (data sha256, {card: value}) of a FITS file, volatile cards left out."""
    digest = {}
    with fits.open(path, memmap=False) as hdul:
        for index, hdu in enumerate(hdul):
            name = f"{index}:{hdu.name}"
            raw = b"" if hdu.data is None else bytes(memoryview(hdu.data).cast("B")) \
                if not isinstance(hdu, fits.BinTableHDU) else bytes(hdu.data.tobytes())
            if hdu.name == "ASDF":
                raw = asdf_digest(raw).encode()
            elif hdu.name == "HDRTAB":  # x1dints' table of member headers: their DATE column is write times
                raw = TIMESTAMP.sub(b"<DATE>", raw)
            cards = {c.keyword: str(c.value) for c in hdu.header.cards
                     if c.keyword not in VOLATILE_CARDS}
            digest[name] = (_sha(raw), cards)
    return digest


CHECKSUM_FIELD = re.compile(rb'"(sha1|sha256)": "[0-9a-f]+"')


def text_digest(path, root):
    """sha256 of a text product with timestamps and the run's own folder blanked.

    In the CRDS lockfile the references' checksums are blanked too: the demo's simulator writes its
    ASDF distortion references anew in each run, with asdf's date inside.
    """
    data = Path(path).read_bytes()
    if path.name.endswith(".lock.json"):
        data = CHECKSUM_FIELD.sub(rb'"\1": "<SUM>"', data)
    root = Path(root).resolve()
    for folder in (root, root.parent):  # the results folder, then the run folder around it
        data = data.replace(str(folder).encode(), b"<RUN>")
    return _sha(TIMESTAMP.sub(b"<DATE>", data))


def compare(a, b, verbose=False):
    """Lines describing every difference between the products of runs ``a`` and ``b``."""
    pa, pb = products(a), products(b)
    problems = [f"only in {a}: {p}" for p in sorted(pa - pb)] + [f"only in {b}: {p}" for p in sorted(pb - pa)]
    for rel in sorted(pa & pb):
        fa, fb = Path(a) / rel, Path(b) / rel
        if rel.suffix == ".fits":
            da, db = fits_digest(fa), fits_digest(fb)
            if list(da) != list(db):
                problems.append(f"{rel}: HDUs differ: {list(da)} vs {list(db)}")
                continue
            for hdu in da:
                if da[hdu][0] != db[hdu][0]:
                    problems.append(f"{rel} [{hdu}]: data differ")
                ca, cb = da[hdu][1], db[hdu][1]
                for key in sorted(set(ca) | set(cb)):
                    if ca.get(key) != cb.get(key):
                        problems.append(f"{rel} [{hdu}] {key}: {ca.get(key)!r} vs {cb.get(key)!r}")
        elif text_digest(fa, a) != text_digest(fb, b):
            problems.append(f"{rel}: content differs")
        if verbose:
            print(f"compared {rel}")
    return problems, len(pa & pb)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    problems, n = compare(args.a, args.b, args.verbose)
    for line in problems:
        print(line)
    print(f"{n} products compared: {'identical' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
