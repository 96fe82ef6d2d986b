"""The exposure table: one row per uncal file, built from headers, not file names.

The table drives the workflow's wildcards (filter, detector, exposure id) and,
later, the associations.  Identity comes from the primary header keywords
PROGRAM, OBSERVTN, VISIT, VISITGRP, SEQ_ID, ACT_ID, EXPOSURE and DETECTOR,
from which the JWST root name ``jw<ppppp><ooo><vvv>_<gg><s><aa>_<eeeee>_<det>``
is rebuilt.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from webbflow.io.errors import InputError
from webbflow.io.uncal import read_uncal_header_values

__all__ = ["Exposure", "exposure_from_header", "exposure_table", "rootname"]

_KEYS = ("PROGRAM", "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE", "DETECTOR")


@dataclass(frozen=True)
class Exposure:
    """One uncal exposure as described by its primary header.

    ``exposure_id`` is the root name without the detector
    (``jw<ppppp><ooo><vvv>_<gg><s><aa>_<eeeee>``, plus ``-seg<NNN>`` for a segment of a
    time series), ``rootname`` adds the lower-case detector; ``path`` is the uncal file;
    ``segment`` is EXSEGNUM and ``segments`` EXSEGTOT (0: not segmented); ``is_psf`` is IS_PSF (a
    coronagraphic PSF reference) and ``targname`` TARGPROP (else TARGNAME); ``expstart`` and ``expend``
    are EXPSTART and EXPEND (MJD, 0 when absent; persistence planning).
    """

    path: str
    rootname: str
    exposure_id: str
    program: str
    observtn: str
    visit: str
    visitgrp: str
    seq_id: str
    act_id: str
    exposure: str
    detector: str
    filter: str
    pupil: str
    exp_type: str
    subarray: str
    readpatt: str
    nints: int
    ngroups: int
    segment: int = 0
    segments: int = 0
    is_psf: bool = False
    targname: str = ""
    expstart: float = 0.0
    expend: float = 0.0

    def as_dict(self):
        """The row as a plain dict (e.g. for a pandas DataFrame)."""
        return asdict(self)


def _digits(value, width, key, path):
    text = str(value).strip()
    if not text.isdigit():
        raise InputError(path, f"{key}={value!r} is not a number", "fix the header or remove the file")
    if len(text) > width:
        raise InputError(path, f"{key}={value!r} has more than {width} digits", "fix the header or remove the file")
    return text.zfill(width)


def rootname(header, path="<header>"):
    """JWST exposure root name from a primary header.

    Parameters
    ----------
    header : Mapping
        Primary header with PROGRAM, OBSERVTN, VISIT, VISITGRP, SEQ_ID,
        ACT_ID, EXPOSURE, DETECTOR.
    path : str
        Used in error messages.

    Returns
    -------
    str
        e.g. ``jw01075001001_03105_00009_nrca2``; a segment of a time series (EXSEGNUM) is
        ``jw01366002001_04103_00001-seg001_nrcalong``.
    """
    missing = [k for k in _KEYS if header.get(k) in (None, "")]
    if missing:
        raise InputError(path, f"header lacks {', '.join(missing)}",
                         "give uncal files with full JWST headers")
    act = str(header["ACT_ID"]).strip().lower()
    if len(act) > 2 or not act.isalnum():
        raise InputError(path, f"ACT_ID={header['ACT_ID']!r} is not a base-36 activity id",
                         "fix the header or remove the file")
    return (
        f"jw{_digits(header['PROGRAM'], 5, 'PROGRAM', path)}"
        f"{_digits(header['OBSERVTN'], 3, 'OBSERVTN', path)}"
        f"{_digits(header['VISIT'], 3, 'VISIT', path)}"
        f"_{_digits(header['VISITGRP'], 2, 'VISITGRP', path)}"
        f"{_digits(header['SEQ_ID'], 1, 'SEQ_ID', path)}{act.zfill(2)}"
        f"_{_digits(header['EXPOSURE'], 5, 'EXPOSURE', path)}"
        f"{_segment(header, path)}"
        f"_{str(header['DETECTOR']).strip().lower()}"
    )


def _segment(header, path):
    """``-seg<NNN>`` of a segmented exposure (EXSEGNUM present, as jwst names its files), else ``""``."""
    if header.get("EXSEGNUM") in (None, ""):
        return ""
    return f"-seg{_digits(header['EXSEGNUM'], 3, 'EXSEGNUM', path)}"


def exposure_from_header(header, path):
    """Build an :class:`Exposure` from a primary header."""
    root = rootname(header, path)
    return Exposure(
        path=str(path),
        rootname=root,
        exposure_id=root.rsplit("_", 1)[0],
        program=root[2:7],
        observtn=root[7:10],
        visit=root[10:13],
        visitgrp=root[14:16],
        seq_id=root[16],
        act_id=root[17:19],
        exposure=root[20:25],
        detector=str(header["DETECTOR"]).strip().upper(),
        filter=str(header.get("FILTER", "N/A")).strip().upper(),
        pupil=str(header.get("PUPIL", "N/A")).strip().upper(),
        exp_type=str(header.get("EXP_TYPE", "N/A")).strip().upper(),
        subarray=str(header.get("SUBARRAY", "FULL")).strip().upper(),
        readpatt=str(header.get("READPATT", "N/A")).strip().upper(),
        nints=int(header.get("NINTS", 0)),
        ngroups=int(header.get("NGROUPS", 0)),
        segment=int(root.rsplit("-seg", 1)[1][:3]) if "-seg" in root else 0,
        segments=int(header.get("EXSEGTOT") or 0) if "-seg" in root else 0,
        is_psf=header.get("IS_PSF") is True or str(header.get("IS_PSF", "")).strip().upper() in ("T", "TRUE"),
        targname=str(header.get("TARGPROP") or header.get("TARGNAME") or "").strip(),
        expstart=float(header.get("EXPSTART") or 0.0),
        expend=float(header.get("EXPEND") or 0.0),
    )


def exposure_table(uncal_dir, pattern="*_uncal.fits", errors=None, headers=None):
    """Exposure table of every uncal file in a folder.

    Parameters
    ----------
    uncal_dir : str or os.PathLike
        Folder of ``*_uncal.fits`` files (not searched recursively).
    pattern : str
        Glob for the files.
    errors : list, optional
        When given, a file that would raise :class:`InputError` (below) is left
        out of the table and its error appended here instead, one per file
        (the later file of a duplicate pair; every present segment of an
        incomplete time series), so that the rest of a program can be reduced.
        A missing folder still raises.
    headers : dict, optional
        When given, filled with root name -> the primary header as a plain dict (keyword ->
        value) of every exposure in the table, so that a planner never reads a file twice.

    Returns
    -------
    list of Exposure
        Sorted by root name.

    Raises
    ------
    InputError
        If the folder does not exist, a file's header cannot be read, a
        keyword a step depends on is missing, invalid or inconsistent with
        the data (:func:`webbflow.io.uncal.validate_headers`), or two files
        describe the same exposure and detector, or a segmented exposure lacks
        some of its EXSEGTOT segments (unless ``errors`` is given).  The
        message names the file, the keyword and the fix.
    """
    folder = Path(uncal_dir)
    if not folder.is_dir():
        raise InputError(folder, "input folder not found", "set inputs.uncal_dir to the folder of *_uncal.fits files")

    def refuse(exc):
        if errors is None:
            raise exc
        errors.append(exc)

    rows = {}
    for path in sorted(folder.glob(pattern)):
        try:
            # every keyword a step depends on, before any job is planned for the exposure
            headers_of_file = read_uncal_header_values(path, validate=True)
            exposure = exposure_from_header(headers_of_file.primary, path)
            if exposure.rootname in rows:
                raise InputError(path, f"same exposure ({exposure.rootname}) as {rows[exposure.rootname].path}",
                                 "keep only one copy in inputs.uncal_dir")
        except InputError as exc:
            refuse(exc)
            continue
        rows[exposure.rootname] = exposure
        if headers is not None:
            headers[exposure.rootname] = headers_of_file.primary
    for exc, series in _incomplete_series(rows.values()):
        for segment in series:
            # a light curve with a gap is not reduced: none of the series' segments
            del rows[segment.rootname]
            if headers is not None:
                headers.pop(segment.rootname, None)
            refuse(exc if segment.path == exc.path else InputError(segment.path, exc.problem, exc.fix))
    return [rows[k] for k in sorted(rows)]


def _incomplete_series(exposures):
    """Every segment 1..EXSEGTOT of a time series is present: a gap would pass unnoticed into tso3.

    Yields ``(InputError naming the first present segment, the present segments)`` per incomplete series.
    """
    series = {}
    for e in exposures:
        if e.segment:
            key = e.rootname.replace(f"-seg{e.segment:03d}", "")
            series.setdefault(key, []).append(e)
    for key, segs in series.items():
        total = max(s.segments for s in segs)
        missing = sorted(set(range(1, total + 1)) - {s.segment for s in segs})
        if missing:
            first = min(segs, key=lambda s: s.segment)
            names = ", ".join(f"{first.rootname.replace(f'-seg{first.segment:03d}', f'-seg{n:03d}')}_uncal.fits"
                              for n in missing[:3])
            yield (InputError(first.path, f"segment(s) {missing} of {total} of the time series {key} are missing "
                              "(EXSEGTOT): its light curve would have a gap",
                              f"put {names} into inputs.uncal_dir (download from MAST) or remove the "
                              "other segments"),
                   sorted(segs, key=lambda s: s.segment))
