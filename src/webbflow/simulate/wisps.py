"""Wisps (NIRCam known issue NC-103): scattered-light arcs on NRCA3, NRCB3 and NRCB4, and their templates.

A wisp is light of bright sources outside the field scattered by the NIRCam optics onto
a few SW detectors: a smooth, diffuse arc (plus a blob) a few per cent of the sky, whose
shape is fixed for a detector and filter while its brightness changes from exposure to
exposure.  The simulator draws it as a ring segment and an elliptical blob on the full
frame (a shape per detector; widths grow slowly with wavelength), normalised to 1 at the
peak, and adds ``ExposureSpec.wisp`` (DN/s at the peak) times that shape to the sky of
a ``scene="sky"`` exposure, through the pixel area and the flat like the sky: the cal
product then holds ``WISPMJSR × template`` on top of the sky.

The templates are written as the NIRCam team distributes theirs (jwst-formats.md §3.8):
one FITS file per detector, filter and pupil, ``WISP_<DET>_<FILTER>_<PUPIL>.fits``, a
full-frame (2048 × 2048) float32 image in the primary HDU (what ``fits.getdata`` reads),
science-frame orientation, peak 1, with DETECTOR/FILTER/PUPIL in the header; under
``<outdir>/wisps/``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from webbflow.demo import WISP_DIR
from webbflow.simulate import optics
from webbflow.simulate.detectors import FULL_SIZE

__all__ = ["WISP_DETECTORS", "WISP_DIR", "wisp_template", "wisp_cut", "write_wisp_template", "write_wisp_truth"]


# Per detector (full-frame science pixels, 0-based): arc centre, radius, width, angular
# span (deg), and the blob's centre, sigmas (x, y) and relative height.  Placed near each
# detector's corner by the module's pointing reference, so that the sky scene sees them.
_SHAPES = {
    "NRCA3": dict(arc=(-120.0, 2230.0, 330.0, 30.0, (-90.0, 20.0)), blob=(200.0, 1860.0, 70.0, 40.0, 0.7)),
    "NRCB3": dict(arc=(2170.0, 2230.0, 330.0, 30.0, (160.0, 270.0)), blob=(1850.0, 1860.0, 70.0, 40.0, 0.7)),
    "NRCB4": dict(arc=(2170.0, -180.0, 330.0, 30.0, (90.0, 200.0)), blob=(1850.0, 190.0, 70.0, 40.0, 0.7)),
}
WISP_DETECTORS = tuple(_SHAPES)
"""Detectors the simulator puts wisps on (issue 17: A3, B3, B4)."""


@lru_cache(maxsize=4)
def wisp_template(detector, filter_name):
    """The full-frame wisp shape of ``detector`` in ``filter_name`` (float32, peak 1; read-only).

    Raises
    ------
    ValueError
        For a detector without wisps (:data:`WISP_DETECTORS`).
    """
    if detector not in _SHAPES:
        raise ValueError(f"no wisps on {detector}: they appear on {', '.join(WISP_DETECTORS)}")
    # scattered light spreads a little more at longer wavelength
    widen = np.sqrt(optics.FILTERS.get(filter_name.upper(), (2.0,))[0] / 2.0)
    shape = _SHAPES[detector]
    y, x = np.mgrid[0:FULL_SIZE, 0:FULL_SIZE].astype(np.float32)
    xc, yc, radius, width, (a0, a1) = shape["arc"]
    r = np.hypot(x - xc, y - yc)
    angle = np.degrees(np.arctan2(y - yc, x - xc))
    mid, half = np.radians((a0 + a1) / 2.0), np.radians((a1 - a0) / 2.0)
    # a smooth taper along the arc: cos^2 of the angle from the arc's middle, zero beyond its span
    dphi = np.angle(np.exp(1j * (np.radians(angle) - mid)))
    taper = np.where(np.abs(dphi) < half, np.cos(0.5 * np.pi * dphi / half) ** 2, 0.0)
    arc = np.exp(-0.5 * ((r - radius) / (width * widen)) ** 2) * taper
    bx, by, sx, sy, height = shape["blob"]
    blob = height * np.exp(-0.5 * (((x - bx) / (sx * widen)) ** 2 + ((y - by) / (sy * widen)) ** 2))
    image = (arc + blob).astype(np.float32)
    image /= image.max()
    image.setflags(write=False)
    return image


def wisp_cut(detector, filter_name, geometry):
    """The wisp shape on ``geometry``'s subarray (a copy)."""
    full = wisp_template(detector, filter_name)
    y0, x0 = geometry.ystart - 1, geometry.xstart - 1
    return np.array(full[y0:y0 + geometry.ysize, x0:x0 + geometry.xsize])


def write_wisp_template(outdir, detector, filter_name, pupil="CLEAR"):
    """Write ``<outdir>/wisps/WISP_<DET>_<FILTER>_<PUPIL>.fits`` (atomically) unless it exists.

    Returns
    -------
    pathlib.Path
    """
    from astropy.io import fits

    from webbflow.io.files import atomic_output
    from webbflow.steps.wisps import template_name

    path = Path(outdir) / WISP_DIR / template_name(detector, filter_name, pupil)
    if path.exists():
        return path
    header = fits.Header()
    header["TELESCOP"] = "JWST"
    header["INSTRUME"] = "NIRCAM"
    header["DETECTOR"] = detector.upper()
    header["FILTER"] = filter_name.upper()
    header["PUPIL"] = (pupil or "CLEAR").upper()
    header["BUNIT"] = ("", "normalised: 1 at the wisp's peak")
    header["ORIGIN"] = ("webbflow simulator", "the shape injected by webbflow.simulate.wisps")
    with atomic_output(path) as tmp:
        fits.PrimaryHDU(np.asarray(wisp_template(detector, filter_name)), header).writeto(tmp)
    return path


def write_wisp_truth(outdir, specs):
    """``<outdir>/truth/wisps.ecsv``: the wisp injected in each exposure of ``specs``.

    Columns: ``rootname``, ``detector``, ``filter``, ``template`` (its file name under
    ``wisps/``), ``amplitude_dn_s`` (the peak rate, DN/s, before the flat) and
    ``amplitude_mjysr`` (the peak in the cal product, MJy/sr: the scale of the template).
    """
    from astropy.table import Table

    from webbflow.simulate.writers import write_table
    from webbflow.steps.wisps import template_name

    table = Table(rows=[(s.rootname, s.detector, s.filter, template_name(s.detector, s.filter, s.pupil),
                         float(s.wisp), float(s.wisp * optics.photmjsr(s.filter, s.pupil))) for s in specs],
                  names=("rootname", "detector", "filter", "template", "amplitude_dn_s", "amplitude_mjysr"))
    table["amplitude_dn_s"].unit = "DN/s"
    table["amplitude_mjysr"].unit = "MJy/sr"
    table.meta["comments"] = ["wisp injected per exposure: amplitude x the template (peak 1) on top of the sky"]
    return write_table(Path(outdir) / "truth" / "wisps.ecsv", table)
