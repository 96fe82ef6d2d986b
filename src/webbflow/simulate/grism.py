"""The simulated NIRCam LW row grism (GRISMR, module A) and its CRDS-format references.

One dispersion model is the truth for both sides: the simulator places the trace
with it, and the SPECWCS reference written here is what the pipeline (ours and
jwst's) reads back, so the wavelength of every pixel is the same λ(x) on both.

The model is GRISMCONF's legacy 1-D form (`_NIRCAMForwardGrismDispersion` in
stdatamodels): with ``t`` the trace parameter in [0, 1] and ``dx = x − XREF_SCI``
in full-frame pixels (x 0-based, XREF_SCI as stored, 1-based),

* ``dx = DISPX0 + DISPX1·t`` (INVDISPX is its exact inverse, so jwst uses it),
* ``λ = L0 + L1·t`` in µm (INVDISPL likewise),
* ``dy = DY0 + DY1·t`` (the trace's row offset from YREF_SCI − 1).

The numbers follow the real F322W2/F444W GRISMR traces in extent and dispersion
(about 1 nm per pixel, λ≈3.95 µm at the reference column 1581 for F322W2, λ≈3.93 µm at
column 858 for F444W), not in detail.

References written (all entered with complete CRDS selection headers):
SPECWCS (NIRCAMGrismModel, ASDF), WAVELENGTHRANGE (WavelengthrangeModel, ASDF, the
5-element rows jwst 3.0's extract_2d unpacks), PHOTOM (NrcWfssPhotomModel with a
relative response curve), and EXTRACT1D (JSON, the box and background rows of the
jwst prototype around the trace row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from webbflow.io.files import atomic_output
from webbflow.simulate.detectors import DETECTORS

__all__ = ["GRISM_TRACES", "GrismTrace", "grism_reference_paths", "relative_response", "trace_wavelength",
           "trace_row", "write_extract1d_reference", "write_grism_photom", "write_grism_references",
           "write_specwcs", "write_wavelengthrange", "GRISM_PHOTMJSR", "TRACE_ROW"]

TRACE_ROW = 34
"""0-based subarray row of the trace at the reference column (YREF_SCI = 35 on SUBGRISM strips)."""

GRISM_PHOTMJSR = 0.35
"""Scalar PHOTMJSR of the simulated grism photom table (MJy/sr per DN/s, times the response)."""


@dataclass(frozen=True)
class GrismTrace:
    """One filter's first-order trace (see the module docstring for the model)."""

    l0: float
    l1: float
    dispx0: float
    dispx1: float
    dy0: float
    dy1: float

    @property
    def lmin(self):
        return self.l0

    @property
    def lmax(self):
        return self.l0 + self.l1


GRISM_TRACES = {
    "F322W2": GrismTrace(l0=2.39, l1=1.70, dispx0=-1560.0, dispx1=1700.0, dy0=-0.4, dy1=0.8),
    # λ ≈ 3.93 µm at the reference column (858), as the real solution (tso-algorithms.md §5:
    # 3.928 + 0.980 (x − 852)/1000); the trace lies on columns ~728–1978
    "F444W": GrismTrace(l0=3.80, l1=1.25, dispx0=-130.0, dispx1=1250.0, dy0=-0.3, dy1=0.6),
}


def _trace(filter_name):
    try:
        return GRISM_TRACES[filter_name.upper()]
    except KeyError:
        raise ValueError(f"no simulated GRISMR trace for FILTER={filter_name!r} "
                         f"(have {', '.join(GRISM_TRACES)})") from None


def trace_wavelength(filter_name, x_full, xref_sci):
    """Wavelength (µm) at full-frame column ``x_full`` (0-based) for a source at XREF_SCI (1-based as stored).

    The same arithmetic as jwst's forward transform with INVDISPX: t = (dx − c0)/c1, λ = L0 + L1·t.
    """
    tr = _trace(filter_name)
    t = (np.asarray(x_full, float) - xref_sci - tr.dispx0) / tr.dispx1
    return tr.l0 + tr.l1 * t


def trace_row(filter_name, x_full, xref_sci, yref_sci):
    """Row (0-based, full frame) of the trace centre at full-frame column ``x_full``."""
    tr = _trace(filter_name)
    t = (np.asarray(x_full, float) - xref_sci - tr.dispx0) / tr.dispx1
    return yref_sci - 1 + tr.dy0 + tr.dy1 * t


def relative_response(wavelength):
    """Relative throughput of the simulated grism+filter, a smooth bump (1 at 3.6 µm)."""
    w = np.asarray(wavelength, float)
    return np.exp(-0.5 * ((w - 3.6) / 0.9) ** 2)


def grism_reference_paths(outdir, detector, filter_name):
    """File names of the grism references for one detector and filter."""
    refs = Path(outdir) / "refs"
    det, f = detector.lower(), filter_name.lower()
    return {
        "specwcs": refs / f"webbflow_{det}_specwcs_{f}_grismr.asdf",
        "wavelengthrange": refs / "webbflow_nircam_wavelengthrange_tsgrism.asdf",
        "photom": refs / f"webbflow_{det}_photom_tsgrism.fits",
        "extract1d": refs / "webbflow_nircam_extract1d_tsgrism.json",
    }


def _ref_meta(meta, reftype, detector, description):
    info = DETECTORS[detector]
    meta.reftype = reftype
    meta.telescope = "JWST"
    meta.instrument.name = "NIRCAM"
    meta.instrument.detector = detector
    meta.instrument.module = info.module
    meta.instrument.channel = info.channel
    meta.exposure.type = "NRC_TSGRISM"
    meta.useafter = "2022-01-01T00:00:00"
    meta.author = "webbflow simulator"
    meta.pedigree = "SIMULATION"
    meta.description = description


def write_specwcs(path, detector, filter_name):
    """Write the SPECWCS reference (NIRCAMGrismModel, ASDF) of one filter's GRISMR trace."""
    from astropy.modeling.models import Polynomial1D
    from stdatamodels.jwst.datamodels import NIRCAMGrismModel

    tr = _trace(filter_name)
    model = NIRCAMGrismModel()
    _ref_meta(model.meta, "specwcs", detector, f"webbflow synthetic GRISMR trace {filter_name}")
    model.meta.instrument.filter = filter_name.upper()
    model.meta.instrument.pupil = "GRISMR"
    model.meta.input_units = "pixel"
    model.meta.output_units = "micron"
    model.orders = [1]
    model.displ = [Polynomial1D(1, c0=tr.l0, c1=tr.l1)]
    model.invdispl = [Polynomial1D(1, c0=-tr.l0 / tr.l1, c1=1.0 / tr.l1)]
    model.dispx = [Polynomial1D(1, c0=tr.dispx0, c1=tr.dispx1)]
    model.invdispx = [Polynomial1D(1, c0=-tr.dispx0 / tr.dispx1, c1=1.0 / tr.dispx1)]
    model.dispy = [Polynomial1D(1, c0=tr.dy0, c1=tr.dy1)]
    model.invdispy = [Polynomial1D(1, c0=-tr.dy0 / tr.dy1, c1=1.0 / tr.dy1)]
    with atomic_output(path) as tmp:
        model.save(tmp)
    model.close()


def write_wavelengthrange(path, detector):
    """Write the WAVELENGTHRANGE reference (every simulated filter, order 1)."""
    from stdatamodels.jwst.datamodels import WavelengthrangeModel

    model = WavelengthrangeModel()
    _ref_meta(model.meta, "wavelengthrange", detector, "webbflow synthetic TSGRISM wavelength ranges")
    model.meta.instrument.detector = "ANY"
    filters = sorted(GRISM_TRACES)
    # jwst 3.0 unpacks five values per row (order, pupil, filter, lmin, lmax)
    model.wavelengthrange = [[1, "GRISMR", f, GRISM_TRACES[f].lmin, GRISM_TRACES[f].lmax] for f in filters]
    model.extract_orders = [[f, [1]] for f in filters]
    model.waverange_selector = filters
    model.order = [1]
    model.meta.wavelength_units = "micron"
    with atomic_output(path) as tmp:
        model.save(tmp)
    model.close()


def write_grism_photom(path, detector, pixar_sr, pixar_a2, nelem=200):
    """Write the grism PHOTOM reference (NrcWfssPhotomModel): PHOTMJSR and a relative response per filter."""
    from astropy.io import fits

    rows = []
    for f in sorted(GRISM_TRACES):
        tr = GRISM_TRACES[f]
        # a little wider than the trace, so every extracted column has a response
        wave = np.zeros(3000, np.float32)
        resp = np.zeros(3000, np.float32)
        wave[:nelem] = np.linspace(tr.lmin - 0.3, tr.lmax + 0.3, nelem)
        resp[:nelem] = relative_response(wave[:nelem])
        rows.append((f, "GRISMR", 1, GRISM_PHOTMJSR, 0.01 * GRISM_PHOTMJSR, nelem, wave, resp,
                     np.full(3000, 0.01, np.float32)))
    table = np.array(rows, dtype=[("filter", "S12"), ("pupil", "S15"), ("order", "i2"), ("photmjsr", "f4"),
                                  ("uncertainty", "f4"), ("nelem", "i2"), ("wavelength", "f4", (3000,)),
                                  ("relresponse", "f4", (3000,)), ("reluncertainty", "f4", (3000,))])
    info = DETECTORS[detector]
    header = fits.Header()
    for k, v in {"DATAMODL": "NrcWfssPhotomModel", "REFTYPE": "PHOTOM", "TELESCOP": "JWST", "INSTRUME": "NIRCAM",
                 "DETECTOR": detector, "CHANNEL": info.channel, "MODULE": info.module, "EXP_TYPE": "NRC_TSGRISM",
                 "P_EXP_TY": "NRC_TSGRISM|NRC_WFSS|", "PUPIL": "GRISMR", "SUBARRAY": "GENERIC",
                 "PIXAR_SR": pixar_sr, "PIXAR_A2": pixar_a2, "USEAFTER": "2022-01-01T00:00:00",
                 "AUTHOR": "webbflow simulator", "PEDIGREE": "SIMULATION", "ORIGIN": "webbflow",
                 "DESCRIP": f"webbflow synthetic grism photometric calibration {detector}",
                 "FILENAME": Path(path).name}.items():
        header[k] = v
    with atomic_output(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(header=header), fits.BinTableHDU(table, name="PHOTOM")]).writeto(tmp)


def write_extract1d_reference(path, trace_row_0based=TRACE_ROW, half_width=3, xstart=4, xstop=2043):
    """Write the EXTRACT1D reference (JSON): a box of 2·half_width+1 rows on the trace, background above/below.

    Rows are those of the extract_2d cutout, which starts at subarray row 0 in jwst 3.0, so the
    trace row of the subarray is the trace row of the cutout.
    """
    c = trace_row_0based
    # top-level keywords as CRDS's JSON references spell them
    ref = {"reftype": "EXTRACT1D", "instrument": "NIRCAM", "telescope": "JWST", "exp_type": "NRC_TSGRISM",
           "pedigree": "SIMULATION", "useafter": "2022-01-01T00:00:00", "author": "webbflow simulator",
           "apertures": [{"id": "ANY", "region_type": "target", "dispaxis": 1, "xstart": xstart, "xstop": xstop,
                          "ystart": c - half_width, "ystop": c + half_width,
                          "bkg_coeff": [[c - 21.5], [c - 10.5], [c + 8.5], [c + 19.5]],
                          "bkg_fit": "median", "smoothing_length": 0}]}
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(ref, indent=1) + "\n")


def write_grism_references(outdir, detector, filter_name, pixar_sr, pixar_a2, overwrite=False):
    """Write (if missing) SPECWCS, WAVELENGTHRANGE, PHOTOM and EXTRACT1D for one detector and filter.

    Returns
    -------
    dict
        reftype -> Path.
    """
    paths = grism_reference_paths(outdir, detector, filter_name)
    writers = {
        "specwcs": lambda p: write_specwcs(p, detector, filter_name),
        "wavelengthrange": lambda p: write_wavelengthrange(p, detector),
        "photom": lambda p: write_grism_photom(p, detector, pixar_sr, pixar_a2),
        "extract1d": lambda p: write_extract1d_reference(p),
    }
    for reftype, path in paths.items():
        if overwrite or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[reftype](path)
    return paths
