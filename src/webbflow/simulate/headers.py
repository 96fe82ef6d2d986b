"""Keywords and timing tables of a simulated uncal file.

Values are plausible, schema-valid NIRCam values.  Pointing keywords come
from the simulated optics and commanded attitude (:func:`pointing_keywords`).
"""

from __future__ import annotations

import numpy as np
from astropy.time import Time, TimeDelta

from webbflow.simulate.detectors import DETECTORS, frame_time
from webbflow.simulate.events import frames_read

__all__ = ["exposure_timing", "primary_keywords", "sci_keywords", "group_table",
           "int_times_table", "pointing_keywords"]


def _base36(n, width=2):
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(width, "0")


def exposure_timing(spec):
    """Timing of ``spec``.

    Returns
    -------
    dict
        tframe, tgroup, effinttm, effexptm, duration (s) of the whole
        exposure; int_start (MJD per integration of this file, reset frame
        included; a segment's start where its first integration does);
        start, end (MJD of the exposure); frames_read.
    """
    tframe = round(frame_time(spec.geometry), 5)
    tgroup = (spec.nframes + spec.groupgap) * tframe
    nread = frames_read(spec.ngroups, spec.nframes, spec.groupgap)
    t_int = (nread + 1) * tframe  # one reset frame per integration
    start = Time(spec.date_obs, format="isot", scale="utc")
    int_start = start.mjd + (spec.first_int + np.arange(spec.nints)) * t_int / 86400.0
    effinttm = (spec.ngroups - 1) * tgroup + spec.nframes * tframe
    total = spec.nints_total
    return dict(tframe=tframe, tgroup=tgroup, effinttm=effinttm,
                effexptm=total * effinttm, duration=total * t_int,
                int_start=int_start, start=start.mjd,
                end=start.mjd + total * t_int / 86400.0, frames_read=nread, t_int=t_int)


def pointing_keywords(spec):
    """SCI-header pointing/WCS keywords from the *commanded* attitude (see ``optics``).

    V2_REF/V3_REF are the V2/V3 of the subarray centre (XREF_SCI/YREF_SCI)
    through the simulated distortion; RA_REF/DEC_REF/ROLL_REF are its sky
    position and local V3 angle; the FITS WCS is the linear TAN approximation
    at that point (assign_wcs replaces it).
    """
    from webbflow.simulate.optics import SIAF, aperture_pointing

    p = aperture_pointing(spec)
    _, _, _, sx, sy = SIAF[spec.detector]
    # jwst's calc_rotation_matrix(roll_ref, v3i_yang, vparity)
    rel = np.radians(p["roll_ref"] - p["vparity"] * p["v3i_yang"])
    return {
        "RA_REF": p["ra_ref"], "DEC_REF": p["dec_ref"], "ROLL_REF": p["roll_ref"],
        "V2_REF": p["v2_ref"], "V3_REF": p["v3_ref"], "VPARITY": p["vparity"],
        "V3I_YANG": p["v3i_yang"], "XREF_SCI": p["xref_sci"], "YREF_SCI": p["yref_sci"],
        "RA_V1": p["ra_v1"], "DEC_V1": p["dec_v1"], "PA_V3": p["pa_v3"], "PA_APER": p["roll_ref"],
        "VA_SCALE": 1.0, "RADESYS": "ICRS",
        "WCSAXES": 2, "CRPIX1": p["xref_sci"], "CRPIX2": p["yref_sci"],
        "CRVAL1": p["ra_ref"], "CRVAL2": p["dec_ref"], "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg", "CUNIT2": "deg", "CDELT1": sx / 3600.0, "CDELT2": sy / 3600.0,
        "PC1_1": p["vparity"] * np.cos(rel), "PC1_2": np.sin(rel),
        "PC2_1": -p["vparity"] * np.sin(rel), "PC2_2": np.cos(rel),
    }


def primary_keywords(spec, filename):
    """PRIMARY-header keywords of the uncal file of ``spec``."""
    info = DETECTORS[spec.detector]
    geom = spec.geometry
    tm = exposure_timing(spec)
    start = Time(tm["start"], format="mjd", scale="utc")
    end = Time(tm["end"], format="mjd", scale="utc")
    act = _base36(spec.activity)
    out = {
        "DATAMODL": "Level1bModel", "FILENAME": filename, "TELESCOP": "JWST",
        "ORIGIN": "webbflow", "TIMESYS": "UTC",
        "INSTRUME": "NIRCAM", "DETECTOR": spec.detector, "MODULE": info.module,
        "CHANNEL": info.channel, "FILTER": spec.filter, "PUPIL": spec.pupil,
        "EXP_TYPE": spec.exp_type, "READPATT": spec.readpatt,
        "NINTS": spec.nints_total, "NGROUPS": spec.ngroups, "NFRAMES": spec.nframes,
        "GROUPGAP": spec.groupgap, "NOUTPUTS": geom.noutputs, "NRSTSTRT": 1, "NRESETS": 1,
        "FRMDIVSR": spec.nframes, "DRPFRMS1": 0, "DRPFRMS3": 0, "TSAMPLE": 10.0,
        "TFRAME": tm["tframe"], "TGROUP": tm["tgroup"], "EFFINTTM": tm["effinttm"],
        "EFFEXPTM": tm["effexptm"], "DURATION": tm["duration"], "ZEROFRAM": bool(spec.zeroframe),
        "EXPSTART": tm["start"], "EXPMID": 0.5 * (tm["start"] + tm["end"]), "EXPEND": tm["end"],
        "SUBARRAY": geom.name, "SUBSTRT1": geom.xstart, "SUBSTRT2": geom.ystart,
        "SUBSIZE1": geom.xsize, "SUBSIZE2": geom.ysize,
        "FASTAXIS": info.fastaxis, "SLOWAXIS": info.slowaxis, "SCA_NUM": info.sca,
        "PROGRAM": f"{spec.program:05d}", "OBSERVTN": f"{spec.observation:03d}",
        "VISIT": f"{spec.visit:03d}", "VISITGRP": f"{spec.visit_group:02d}",
        "SEQ_ID": f"{spec.sequence:d}", "ACT_ID": act, "EXPOSURE": f"{spec.exposure:d}",
        "OBS_ID": (f"V{spec.program:05d}{spec.observation:03d}{spec.visit:03d}P00000000"
                   f"{spec.visit_group:02d}{spec.sequence:d}{act}"),
        "VISIT_ID": f"{spec.program:05d}{spec.observation:03d}{spec.visit:03d}",
        "DATE-OBS": start.isot[:10], "TIME-OBS": start.isot[11:23],
        "DATE-BEG": start.isot, "DATE-END": end.isot,
        "TARGNAME": spec.target, "TARGPROP": spec.target,
        "TARG_RA": spec.ra, "TARG_DEC": spec.dec,
        "PATTTYPE": "INTRAMODULEBOX" if spec.n_dither > 1 else "NONE",
        "PATT_NUM": spec.dither_position, "NUMDTHPT": spec.n_dither,
        "PRIDTPTS": spec.n_dither, "SUBPXPTS": 1, "TSOVISIT": bool(spec.tsovisit),
    }
    coron = getattr(spec, "coron", None)
    if coron is not None:
        # small-grid dithers are a subpixel pattern of their own; XOFFSET/YOFFSET: the commanded offset
        out.update({"CORONMSK": coron.mask, "IS_PSF": bool(coron.is_psf), "PATTTYPE": "NONE",
                    "PRIDTPTS": 1, "SUBPXPTS": spec.n_dither, "SMGRDPAT": coron.sgd_pattern or "NONE",
                    "XOFFSET": float(spec.dither_offset[0]), "YOFFSET": float(spec.dither_offset[1])})
    if spec.tsovisit:
        # no offset special requirement: jwst's TSGRISM extract_2d places the source with these
        out.update({"XOFFSET": 0.0, "YOFFSET": 0.0})
    if spec.segment is not None:
        num, total, intstart, _ = spec.segment
        out.update({"EXSEGNUM": num, "EXSEGTOT": total, "INTSTART": intstart,
                    "INTEND": intstart + spec.nints - 1})
    return out


def sci_keywords(spec):
    """SCI-header keywords: units, exposure times and pointing."""
    tm = exposure_timing(spec)
    out = {"BUNIT": "DN", "XPOSURE": tm["effexptm"], "TELAPSE": tm["duration"],
           "MJD-BEG": tm["start"], "MJD-AVG": 0.5 * (tm["start"] + tm["end"]),
           "MJD-END": tm["end"]}
    out.update(pointing_keywords(spec))
    return out


def group_table(spec):
    """The GROUP binary table (one row per integration and group)."""
    tm = exposure_timing(spec)
    per = spec.nframes + spec.groupgap
    dtype = [("integration_number", "i4"), ("group_number", "i2"), ("end_day", "i2"),
             ("end_milliseconds", "i4"), ("end_submilliseconds", "i2"),
             ("group_end_time", "S26"), ("number_of_columns", "i2"), ("number_of_rows", "i2"),
             ("number_of_gaps", "i2"), ("completion_code_number", "i2"),
             ("completion_code_text", "S36"), ("bary_end_time", "f8"),
             ("helio_end_time", "f8")]
    rows = []
    for i in range(spec.nints):  # integration_number counts from the exposure's first
        for g in range(spec.ngroups):
            # reset frame, then g groups, then this group's frames
            seconds = (1 + g * per + spec.nframes) * tm["tframe"]
            end = Time(tm["int_start"][i], format="mjd", scale="utc") + TimeDelta(seconds, format="sec")
            day_sec = (end.mjd % 1.0) * 86400.0
            doy = int(end.datetime.timetuple().tm_yday)
            rows.append((spec.first_int + i + 1, g + 1, doy, int(day_sec * 1000), int(day_sec * 1e6) % 1000,
                         end.isot[:26].encode(), spec.geometry.xsize, spec.geometry.ysize, 0, 0,
                         b"COMPLETE", end.mjd, end.mjd))
    return np.array(rows, dtype=dtype)


def int_times_table(spec):
    """The INT_TIMES binary table (BJD_TDB approximated by UTC + 69.184 s)."""
    tm = exposure_timing(spec)
    tdb = 69.184 / 86400.0
    start = tm["int_start"]
    end = start + tm["frames_read"] * tm["tframe"] / 86400.0 + tm["tframe"] / 86400.0
    mid = 0.5 * (start + end)
    dtype = [("integration_number", "i4"), ("int_start_MJD_UTC", "f8"),
             ("int_mid_MJD_UTC", "f8"), ("int_end_MJD_UTC", "f8"), ("int_start_BJD_TDB", "f8"),
             ("int_mid_BJD_TDB", "f8"), ("int_end_BJD_TDB", "f8")]
    return np.array([(spec.first_int + i + 1, start[i], mid[i], end[i], start[i] + tdb, mid[i] + tdb, end[i] + tdb)
                     for i in range(spec.nints)], dtype=dtype)
