"""Write ``rate`` (ImageModel) and ``rateints`` (CubeModel) products.

The products are written with astropy in the layout stdatamodels gives these
models: the uncal's primary and SCI keywords (so every keyword the schema knows
lands in its ``meta`` path on reading and the rest in ``extra_fits``), the
S_*/R_* keywords of this run, our provenance, and SCI/ERR/DQ/VAR_POISSON/
VAR_RNOISE (+ INT_TIMES), and a minimal ASDF extension.  stdatamodels reads
the model from the FITS keywords and arrays (the ASDF tree is empty, so there
is no fits hash to trust); the extension itself must exist because jwst's
pipeline steps look it up by name.  Building the model through stdatamodels
cost more time (its ASDF extension registry) than calibrating.

Files are written under a temporary name in the destination folder and moved
into place with :func:`os.replace`, so an interrupted job never leaves a file
that looks finished.  Every HDU carries the FITS ``DATASUM``/``CHECKSUM``
cards (the streamed rateints's computed once its cubes are complete), so a
product damaged later on disk or in transfer fails ``fits.open(checksum=True)``.
"""

import datetime
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

import webbflow
from webbflow.config import config_digest
from webbflow.io.files import atomic_output, read_at, write_at

__all__ = ["CAL_STEP_KEYS", "REFTYPES", "CubeStream", "RateintsStream", "TableStream", "write_fitopt", "write_rate", "write_rateints"]

CAL_STEP_KEYS = {
    "dq_init": "dq_init",
    "saturation": "saturation",
    "superbias": "superbias",
    "refpix": "refpix",
    "linearity": "linearity",
    "dark_current": "dark_sub",
    "charge_migration": "charge_migration",
    "jump": "jump",
    "clean_flicker_noise": "clean_flicker_noise",
    "ramp_fit": "ramp_fit",
    "gain_scale": "gain_scale",
}
"""webbflow step name -> ``meta.cal_step`` attribute (``S_<STEP>`` keyword)."""

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")
"""Reference types detector1 uses; each gets an ``R_<TYPE>`` keyword."""

# Keywords describing the uncal's own layout: never copied to a product.
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BZERO", "BSCALE",
    "EXTNAME", "EXTVER", "CHECKSUM", "DATASUM", "DATAMODL", "FILENAME", "BUNIT",
    "CAL_VER", "CAL_VCS", "DATE", "TFIELDS",
}


def _carried(header, primary=True):
    """Cards of ``header`` that a product inherits (no layout or commentary cards)."""
    cards = []
    for card in header.cards:
        key = card.keyword
        if not key or key in ("COMMENT", "HISTORY") or key in _STRUCTURAL:
            continue
        if key.startswith(("NAXIS", "TTYPE", "TFORM", "TUNIT", "TDIM")):
            continue
        if primary and key.startswith(("S_", "R_", "WF_")) and key != "S_REGION":
            continue  # step status and references are set from this run only
        cards.append((key, card.value, card.comment))
    return cards


def _provenance_cards(ref_files, provenance):
    provenance = provenance or {}
    params = provenance.get("step_parameters", {})
    digest = provenance.get("config_digest") or config_digest(
        {"steps": params, "references": {k: Path(v).name for k, v in (ref_files or {}).items() if v}}
    )
    return [
        ("WF_VER", webbflow.__version__, "webbflow version"),
        ("WF_CFGD", digest, "sha256 of the product's config (canonical JSON)"),
        ("WF_PARS", json.dumps(params, sort_keys=True, separators=(",", ":")), "webbflow step parameters (JSON)"),
    ]


# webbflow step -> (FITS keyword, comment) of meta.cal_step.<attr>
_S_KEYWORDS = {
    "dq_init": ("S_DQINIT", "Data Quality Initialization"),
    "saturation": ("S_SATURA", "Saturation Checking"),
    "superbias": ("S_SUPERB", "Superbias Subtraction"),
    "refpix": ("S_REFPIX", "Reference Pixel Correction"),
    "linearity": ("S_LINEAR", "Linearity Correction"),
    "dark_current": ("S_DARK", "Dark Subtraction"),
    "charge_migration": ("S_CHGMIG", "Charge Migration"),
    "persistence": ("S_PERSIS", "Persistence Correction"),
    "jump": ("S_JUMP", "Jump Detection"),
    "clean_flicker_noise": ("S_CLNFNS", "Clean Flicker Noise"),
    "ramp_fit": ("S_RAMP", "Ramp Fitting"),
    "gain_scale": ("S_GANSCL", "Gain Scale Correction"),
}
# reftype -> (FITS keyword, comment) of meta.ref_file.<reftype>.name
_R_KEYWORDS = {
    "mask": ("R_MASK", "Mask reference file name"),
    "saturation": ("R_SATURA", "Saturation reference file name"),
    "superbias": ("R_SUPERB", "Superbias reference file name"),
    "linearity": ("R_LINEAR", "Linearity reference file name"),
    "dark": ("R_DARK", "Dark reference file name"),
    "gain": ("R_GAIN", "Gain reference file name"),
    "readnoise": ("R_READNO", "Read noise reference file name"),
}


def _utc_now():
    """ISO time with milliseconds, as stdatamodels writes ``DATE``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def _build_hdulist(model_type, filename, arrays, headers, int_times, cal_steps, ref_files, provenance,
                   images=None, consume=False):
    """The product as an HDUList in the layout stdatamodels gives an ImageModel/CubeModel.

    ``images`` (extension name -> float32 array) replaces the SCI ... VAR_RNOISE extensions
    of ``arrays`` (a RampFitOutputModel has only its own arrays).

    The keywords are those stdatamodels would write for the model built from
    the uncal's keywords (every schema keyword at its schema HDU, the rest
    where they came from), so ``datamodels.open`` rebuilds the same ``meta``
    from them.  The ASDF extension holds an empty tree (:func:`_asdf_hdu`):
    loading the ASDF machinery to serialise the full model cost 1.5-2 s per
    job, more than the whole calibration.
    """
    provenance = provenance or {}
    primary = fits.Header()
    primary["DATE"] = (_utc_now(), "UTC date file created")
    primary["FILENAME"] = (filename, "Name of the file")
    primary["CAL_VER"] = (webbflow.__version__, "Calibration Software Version")
    primary["DATAMODL"] = (model_type, "Type of data model")
    for key, value, comment in _carried(headers.primary):
        primary.append((key, value, comment))
    # Names chosen through CRDS are recorded as jwst does (crds://<file>); the rest by file name.
    names = provenance.get("reference_names") or {}
    for reftype in REFTYPES:
        ref = (ref_files or {}).get(reftype)
        key, comment = _R_KEYWORDS[reftype]
        primary[key] = (names.get(reftype) or (Path(ref).name if ref else "N/A"), comment)
    if (ref_files or {}).get("sirskernel"):  # only when refpix read it, as jwst (SIRS on a full frame)
        primary["R_SIRSKL"] = (names.get("sirskernel") or Path(ref_files["sirskernel"]).name,
                               "SIRS kernel reference file name")
    if provenance.get("crds_context"):
        primary["CRDS_VER"] = (provenance.get("crds_version") or "unknown", "Version of CRDS file selection software used")
        primary["CRDS_CTX"] = (provenance["crds_context"], "CRDS context (.pmap) used to select ref files")
    for step, (key, comment) in _S_KEYWORDS.items():
        status = (cal_steps or {}).get(step)
        if status is not None:
            primary[key] = (status, comment)
    for key, value, comment in _provenance_cards(ref_files, provenance):
        primary[key] = (value, comment)

    sci_header = fits.Header()
    for key, value, comment in _carried(headers.sci, primary=False):
        sci_header.append((key, value, comment))
    sci_header["BUNIT"] = ("DN/s", "physical units of the array values")
    err_header = fits.Header([("BUNIT", "DN/s", "physical units of the array values")])

    def image(name, array, dtype, header=None):
        if isinstance(array, Blank):  # zeros that take no memory, filled in later (RateintsStream)
            return fits.ImageHDU(np.broadcast_to(np.zeros((), np.dtype(dtype).newbyteorder(">")), array.shape),
                                 header, name=name, ver=1)
        if consume and dtype is np.float32 and isinstance(array, np.ndarray) and array.dtype == np.float32:
            # given up by the caller: swapped in place once (astropy would swap each image in place,
            # write it, swap it back and swap it twice more for the checksum; the bytes are the same)
            from webbflow.io.cal import fits_order

            if (swapped := fits_order(array)) is not array:
                return fits.ImageHDU(swapped, header, name=name, ver=1)
        return fits.ImageHDU(np.ascontiguousarray(array, dtype), header, name=name, ver=1)

    if images is not None:
        hdus = [fits.PrimaryHDU(header=primary)] + [image(name, a, np.float32) for name, a in images.items()]
    else:
        hdus = [fits.PrimaryHDU(header=primary),
                image("SCI", arrays.data, np.float32, sci_header),
                image("ERR", arrays.err, np.float32, err_header),
                image("DQ", arrays.dq, np.uint32),
                image("VAR_POISSON", arrays.var_poisson, np.float32),
                image("VAR_RNOISE", arrays.var_rnoise, np.float32)]
    if int_times is not None:
        # Set .data after construction: BinTableHDU(data) imports astropy.table (~0.5 s).
        table = fits.BinTableHDU(name="INT_TIMES")
        table.data = fits.FITS_rec.from_columns(fits.ColDefs(np.asarray(int_times)))
        hdus.append(table)
    hdus.append(_asdf_hdu())
    return fits.HDUList(hdus)


# An ASDF document with an empty tree, as ``asdf.AsdfFile({}).write_to`` writes
# it (standard 1.6.0), spelled out so that writing it needs no asdf import.
_EMPTY_ASDF = (
    "#ASDF 1.0.0\n"
    "#ASDF_STANDARD 1.6.0\n"
    "%YAML 1.1\n"
    "%TAG ! tag:stsci.edu:asdf/\n"
    "--- !core/asdf-1.1.0\n"
    f"asdf_library: !core/software-1.0.0 {{author: webbflow, name: webbflow, version: {webbflow.__version__}}}\n"
    "...\n"
).encode("ascii")


def _asdf_hdu():
    """The ``ASDF`` BINTABLE extension (one row, column ASDF_METADATA) with an empty tree.

    jwst's pipeline steps fail on a product without this extension
    (``KeyError: "Extension 'ASDF' not found."``); with an empty tree,
    stdatamodels takes every keyword and array from the FITS HDUs.
    """
    raw = np.frombuffer(_EMPTY_ASDF, np.uint8)[None, :]
    hdu = fits.BinTableHDU(name="ASDF")
    hdu.data = fits.FITS_rec.from_columns(
        fits.ColDefs([fits.Column(name="ASDF_METADATA", format=f"{raw.shape[1]}B", array=raw)]))
    return hdu


def _save_to(hdulist, tmp):
    with warnings.catch_warnings():
        # the WF_CFGD comment does not fit beside its 64-character digest; cut, as before
        warnings.filterwarnings("ignore", "Card is too long, comment will be truncated")
        # No output verification: its card-by-card pass cost ~0.05 s a product (a third of writing a
        # grism segment's rateints), and astropy's default ("exception") only reports, never fixes, so
        # a product it lets through is written byte for byte the same without it.  The cards are the
        # uncal's, as astropy parsed them, and ours.
        hdulist.writeto(tmp, overwrite=True, checksum=True, output_verify="ignore")


def _save(hdulist, path):
    path = Path(path)
    with atomic_output(path) as tmp:
        _save_to(hdulist, tmp)
    return path


def write_rate(path, rate, headers, *, cal_steps=None, ref_files=None, provenance=None, consume=False):
    """Write a ``rate`` product (ImageModel) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, e.g. ``..._nrca1_rate.fits``.
    rate : object
        2-D arrays ``data``, ``dq``, ``err``, ``var_poisson``, ``var_rnoise``
        (``RampFitResult.rate``), in DN/s.
    headers : UncalHeaders
        Headers of the uncal exposure; all its primary and SCI keywords are
        carried over except those describing the uncal's layout.
    cal_steps : dict, optional
        webbflow step name -> ``"COMPLETE"``/``"SKIPPED"``, written as ``S_<STEP>``.
    ref_files : dict, optional
        Reference type -> path (or None); written as ``R_<TYPE>`` (``N/A`` when unused).
    provenance : dict, optional
        ``step_parameters`` (dict) and ``config_digest`` (str), written as
        ``WF_PARS`` (JSON) and ``WF_CFGD``; ``WF_VER`` is the webbflow version.
        Optional ``reference_names`` (reftype -> ``crds://<file>``) replaces the
        ``R_<TYPE>`` values; ``crds_context``/``crds_version`` become
        ``CRDS_CTX``/``CRDS_VER``.
    consume : bool
        ``rate``'s float32 arrays are the caller's to give up: they are written byte-swapped in place
        (their values are garbage afterwards), which saves astropy three passes over each.  The file
        is the same.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    hdulist = _build_hdulist("ImageModel", Path(path).name, rate, headers, None, cal_steps, ref_files,
                             provenance, consume=consume)
    return _save(hdulist, path)


def write_rateints(path, rateints, headers, *, cal_steps=None, ref_files=None, provenance=None, consume=False):
    """Write a ``rateints`` product (CubeModel, with INT_TIMES) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, e.g. ``..._nrca1_rateints.fits``.
    rateints : object
        3-D (nints, ny, nx) arrays ``data``, ``dq``, ``err``, ``var_poisson``,
        ``var_rnoise`` (``RampFitResult.rateints``), in DN/s.
    headers, cal_steps, ref_files, provenance, consume
        As for :func:`write_rate`; ``headers.int_times`` becomes INT_TIMES.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    hdulist = _build_hdulist("CubeModel", Path(path).name, rateints, headers, headers.int_times, cal_steps,
                             ref_files, provenance, consume=consume)
    return _save(hdulist, path)


def write_fitopt(path, opt, headers, *, cal_steps=None, ref_files=None, provenance=None):
    """Write the optional ramp-fit product (jwst's ``RampFitOutputModel``, ``_fitopt.fits``) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, e.g. ``..._nrca1_fitopt.fits``.
    opt : dict
        ``RampFitResult.opt``: slope, sigslope, var_poisson, var_rnoise, yint, sigyint,
        weights (nints, nsegments, ny, nx), pedestal (nints, ny, nx), crmag (nints, njumps, ny, nx).
    headers, cal_steps, ref_files, provenance
        As for :func:`write_rate`.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    names = ("slope", "sigslope", "var_poisson", "var_rnoise", "yint", "sigyint", "pedestal", "weights", "crmag")
    hdulist = _build_hdulist("RampFitOutputModel", Path(path).name, None, headers, None, cal_steps, ref_files,
                             provenance, images={n.upper(): opt[n] for n in names})
    return _save(hdulist, path)


def _single_hdu(hdu):
    """The bytes astropy writes for ``hdu`` (checksums included) in a file of its own, less the
    minimal primary header an extension needs there."""
    buf = io.BytesIO()
    single = [hdu] if isinstance(hdu, fits.PrimaryHDU) else [fits.PrimaryHDU(), hdu]
    fits.HDUList(single).writeto(buf, checksum=True)
    raw = buf.getvalue()
    return raw if isinstance(hdu, fits.PrimaryHDU) else raw[2880:]


def _table_header(hdu, nrows):
    """The header astropy writes for binary table ``hdu`` (laid out with a row or a few) once it has
    ``nrows`` rows: its cards in astropy's order, CHECKSUM/DATASUM placeholders to fill."""
    raw = _single_hdu(hdu)
    end = next(i for i in range(0, len(raw), 80) if raw[i:i + 80].rstrip() == b"END")
    header = fits.Header.fromstring(raw[:end + 80].decode("ascii"))
    if header.get("PCOUNT", 0) != 0:
        raise ValueError(f"{hdu.name} has a heap (variable-length columns): its rows cannot be laid out ahead")
    header["NAXIS2"] = nrows
    return header


def _write_skeleton(hdulist, path, table_rows=None):
    """Write ``hdulist`` with its Blank cubes as holes in the file (zeros that cost no writing).

    astropy would write the zeros element by element (the placeholders are broadcast views):
    seconds per GB, for bytes that are all overwritten.  ``table_rows`` (HDU index -> number of
    rows): binary tables laid out with a row or a few whose rows are a hole as well, of that length.
    """
    table_rows = table_rows or {}
    with open(path, "wb") as f, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Card is too long, comment will be truncated")
        for index, hdu in enumerate(hdulist):
            if index in table_rows:
                header = _table_header(hdu, table_rows[index])
                f.write(header.tostring().encode("ascii"))
                size = header["NAXIS1"] * header["NAXIS2"]
                f.seek(size + (-size % 2880), os.SEEK_CUR)
                continue
            data = hdu.data if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) else None
            if data is not None and data.ndim and all(st == 0 for st in data.strides):
                header = hdu.header.copy()
                # the cards' place, in astropy's order; their values once the cube is written (_fill_checksums)
                when = datetime.datetime.now().isoformat()[:19]
                header["CHECKSUM"] = ("0" * 16, f"HDU checksum updated {when}")
                header["DATASUM"] = ("0", f"data unit checksum updated {when}")
                f.write(header.tostring().encode("ascii"))
                size = data.size * data.dtype.itemsize
                f.seek(size + (-size % 2880), os.SEEK_CUR)
            else:
                # one HDU alone: written after a minimal primary header, whose 2880 bytes are dropped
                f.write(_single_hdu(hdu))
        f.truncate()


# astropy's ones'-complement sum and its ASCII encoding of the FITS checksum convention (private
# methods of every HDU; the public API computes them only from data held in memory or memory-mapped)
_SUM = fits.ImageHDU()


def _fill_checksums(file, layout):
    """Set the DATASUM and CHECKSUM cards of HDUs whose data were written in place.

    Parameters
    ----------
    file : binary file object
        The FITS file, open ``r+b``; each listed header already holds both cards (placeholders).
    layout : list of (astropy.io.fits.Header, int, int, int)
        Header, header offset, data offset and data size (bytes, padding included) of each HDU to fill.

    Notes
    -----
    The data are summed from the file in blocks, so the memory used stays at one block whatever the
    cube's size (a memory map's pages would count in the job's resident memory).  The sum is of
    big-endian 32-bit words, so it needs only each HDU's data start (a multiple of 2880) and size.
    """
    block = np.empty(_BLOCK_WORDS, ">u4")
    for header, header_at, data_at, size in layout:
        datasum = 0
        for offset in range(0, size, block.nbytes):
            words = block[:min(block.size, (size - offset) // 4)]
            next(read_at(file, [(data_at + offset, words)]))
            datasum = _SUM._compute_checksum(words.view(np.uint8), datasum)
        header = header.copy()
        header["DATASUM"] = str(datasum)
        header["CHECKSUM"] = "0" * 16
        raw = header.tostring().encode("ascii")
        header["CHECKSUM"] = _SUM._char_encode(~_SUM._compute_checksum(np.frombuffer(raw, np.uint8), datasum))
        raw = header.tostring().encode("ascii")
        assert len(raw) == data_at - header_at, "a checksum card changed the header's length"
        write_at(file, [(header_at, raw)])


_BLOCK_WORDS = 1 << 22
"""32-bit words summed per read in :func:`_fill_checksums` (16 MiB)."""


class Blank:
    """An array of ``shape`` not yet computed: written as zeros, to be filled in place."""

    def __init__(self, shape):
        self.shape = tuple(shape)


_CUBES = (("SCI", "data", ">f4"), ("ERR", "err", ">f4"), ("DQ", "dq", ">u4"),
          ("VAR_POISSON", "var_poisson", ">f4"), ("VAR_RNOISE", "var_rnoise", ">f4"))


class _FilledInPlace:
    """A FITS product laid out whole, some HDUs' data filled in place later (:class:`CubeStream`,
    :class:`TableStream`).

    On entry ``hdulist`` is written under a temporary name next to ``path`` (:func:`_write_skeleton`:
    zero-stride cubes and the tables of ``table_rows`` as holes); a clean exit computes the filled
    HDUs' DATASUM/CHECKSUM from the file and moves it onto ``path``, an exception removes it.
    Subclasses name the ``filled`` HDUs (extension names or indices) and read what they need of the
    file's layout in :meth:`_opened`.
    """

    def __init__(self, path, hdulist, filled, table_rows=None):
        self.path, self._hdulist, self._filled, self._table_rows = Path(path), hdulist, list(filled), table_rows

    def _opened(self, hdul):
        """Note where the filled HDUs lie in the file laid out (``hdul``, open)."""

    def __enter__(self):
        self._atomic = atomic_output(self.path)
        tmp = self.tmp = self._atomic.__enter__()  # readable once filled (not yet checksummed)
        try:
            _write_skeleton(self._hdulist, tmp, self._table_rows)
            self._hdulist = None
            with fits.open(tmp) as hdul:
                self._layout = [(hdul[key].header.copy(), *(hdul.fileinfo(hdul.index_of(key))[k]
                                                             for k in ("hdrLoc", "datLoc", "datSpan")))
                                for key in self._filled]
                self._opened(hdul)
            self._file = open(tmp, "r+b")
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, kind, value, tb):
        try:
            if kind is None:  # complete: the filled HDUs' checksums can be computed now
                _fill_checksums(self._file, self._layout)
        except BaseException:
            kind, value, tb = sys.exc_info()
            raise
        finally:
            self._file.close()
            self._atomic.__exit__(kind, value, tb)


class CubeStream(_FilledInPlace):
    """A FITS product whose cubes are filled in place after the whole file is laid out.

    Use as a context manager: on entry ``hdulist`` is written under a temporary name next to
    ``path``, its cubes (:class:`Blank`-like zero-stride arrays) as zeros that cost no writing;
    :meth:`write_rows` and :meth:`write_ints` fill parts of every cube in place; a clean exit computes
    the cubes' DATASUM/CHECKSUM from the file and moves it onto ``path``, an exception removes it.

    Parameters
    ----------
    path : str or os.PathLike
        Destination.
    hdulist : astropy.io.fits.HDUList
        The product, each cube a zero-stride big-endian placeholder of its full shape.
    shape : tuple
        (nints, ny, nx) of the cubes.
    cubes : sequence of (str, str, str)
        Extension name, attribute of the arrays handed to the writes, big-endian dtype.
    """

    def __init__(self, path, hdulist, shape, cubes):
        super().__init__(path, hdulist, [ext for ext, _, _ in cubes])
        self.shape, self._cubes = tuple(shape), tuple(cubes)

    def _opened(self, hdul):
        self._offsets = {ext: hdul.fileinfo(hdul.index_of(ext))["datLoc"] for ext, _, _ in self._cubes}
        # astropy stores uint32 as int32 with BZERO = 2**31: the bits with the sign bit flipped
        self._flip = {ext: hdul[ext].header.get("BZERO") == 2**31 for ext, _, _ in self._cubes}

    def _big_endian(self, ext, name, dtype, arrays):
        block = np.asarray(getattr(arrays, name))
        if self._flip[ext]:
            block = block ^ np.uint32(0x80000000)
        return block.astype(dtype, copy=False)  # big-endian, as FITS stores it

    def write_rows(self, r0, arrays):
        """Write rows ``r0 .. r0+n-1`` of every cube from ``arrays`` (ImageArrays of (nints, n, nx))."""
        nints, ny, nx = self.shape
        for ext, name, dtype in self._cubes:
            block = self._big_endian(ext, name, dtype, arrays)
            n = block.shape[1]
            write_at(self._file, ((self._offsets[ext] + (i * ny + r0) * nx * 4, np.ascontiguousarray(block[i]).data)
                                  for i in range(nints)))
        return n

    def write_ints(self, i0, arrays):
        """Write integrations ``i0 .. i0+n-1`` of every cube from ``arrays`` (attributes of (n, ny, nx))."""
        nints, ny, nx = self.shape
        for ext, name, dtype in self._cubes:
            block = np.ascontiguousarray(self._big_endian(ext, name, dtype, arrays))
            write_at(self._file, [(self._offsets[ext] + i0 * ny * nx * 4, block.data)])
        return block.shape[0]


class RateintsStream(CubeStream):
    """A ``rateints`` product written a block of rows at a time (detector1 in bounded memory).

    A :class:`CubeStream` of the layout :func:`write_rateints` writes.

    Parameters
    ----------
    path : str or os.PathLike
        Destination.
    shape : tuple
        (nints, ny, nx) of the cubes.
    headers, cal_steps, ref_files, provenance
        As for :func:`write_rateints`.
    """

    def __init__(self, path, shape, headers, *, cal_steps=None, ref_files=None, provenance=None):
        blank = Blank(shape)
        arrays = type("Arrays", (), {name: blank for _, name, _ in _CUBES})()
        hdulist = _build_hdulist("CubeModel", Path(path).name, arrays, headers, headers.int_times,
                                 cal_steps, ref_files, provenance)
        super().__init__(path, hdulist, shape, _CUBES)


class TableStream(_FilledInPlace):
    """A FITS product whose binary tables' rows are filled in place after the whole file is laid out.

    As :class:`CubeStream`, for tables: on entry ``hdulist`` is written under a temporary name next
    to ``path``, each streamed table's header for its full number of rows and its rows a hole of
    zeros; :meth:`write_rows` fills rows in place; a clean exit computes those tables'
    DATASUM/CHECKSUM from the file and moves it onto ``path``, an exception removes it.

    Parameters
    ----------
    path : str or os.PathLike
        Destination.
    hdulist : astropy.io.fits.HDUList
        The product, each streamed table holding a row or a few (its columns: formats, units).
    tables : sequence of (int, int)
        HDU index and number of rows of each streamed table.
    """

    def __init__(self, path, hdulist, tables):
        tables = [tuple(t) for t in tables]
        super().__init__(path, hdulist, [index for index, _ in tables], dict(tables))
        self._tables = tables

    def _opened(self, hdul):
        self.row_bytes = [hdul[index].header["NAXIS1"] for index, _ in self._tables]
        self._offsets = [hdul.fileinfo(index)["datLoc"] for index, _ in self._tables]

    def write_rows(self, table, row0, rows):
        """Write rows ``row0 ..`` of streamed table number ``table`` from ``rows``: their FITS bytes
        (big-endian, ``row_bytes[table]`` a row)."""
        raw = memoryview(np.ascontiguousarray(rows)).cast("B")
        n, size = divmod(raw.nbytes, self.row_bytes[table])
        if size or row0 < 0 or row0 + n > self._tables[table][1]:
            raise ValueError(f"rows {row0}..{row0 + n} do not fit table {table} "
                             f"({self._tables[table][1]} rows of {self.row_bytes[table]} bytes)")
        write_at(self._file, [(self._offsets[table] + row0 * self.row_bytes[table], raw)])
        return n
