"""The knobs of one simulated exposure."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from webbflow.simulate.detectors import DETECTORS, READ_PATTERNS, Geometry, subarray_geometry

__all__ = ["ExposureSpec", "Star"]


@dataclass(frozen=True)
class Star:
    """A point source: science-frame pixel position (0-based) and total rate in DN/s."""

    x: float
    y: float
    rate: float


@dataclass(frozen=True)
class ExposureSpec:
    """Everything that defines one simulated NIRCam exposure.

    Defaults give a small, clean-but-realistic SW exposure; tests override what
    they need, e.g. ``ExposureSpec(subarray="SUB64", size=64, one_over_f=0)``.

    Attributes
    ----------
    detector : str
        DETECTOR (``NRCA1`` ... ``NRCBLONG``).
    subarray : str
        SUBARRAY name; ``FULL``/``SUB640``/``SUB320``/``SUB160``/``SUB64P`` use
        SIAF corners, other schema-valid names need ``size``.
    size : int or None
        Side of a custom square subarray (``subarray`` not in the SIAF table).
    corner : "refpix", "interior", (xstart, ystart) or None
        Placement of a custom subarray (see :func:`subarray_geometry`).
    readpatt, nints, ngroups : str, int, int
        Readout pattern and ramp shape.
    filter, pupil, exp_type : str
        Optical elements and EXP_TYPE (values must be schema-valid).
    program, observation, visit, visit_group, sequence, activity, exposure : int
        Parts of the JWST exposure name ``jw<ppppp><ooo><vvv>_<gg><s><aa>_<eeeee>``.
    dither_position, n_dither : int
        PATT_NUM (1-based) and NUMDTHPT.
    dither_offset : (float, float)
        Pointing offset of this exposure in arcsec (scene moves by
        ``-offset / pixel_scale`` pixels).
    sky : float
        Uniform sky rate, DN/s.
    n_stars, n_galaxies : int
        Random point sources and exponential-disk galaxies in the scene.
    star_rate_range : (float, float)
        Range (log-uniform) of total star rates, DN/s.
    n_saturating_stars : int
        Extra stars bright enough that their peak pixel saturates around group 3.
    stars : tuple of Star
        Explicit point sources added to the random scene.
    scene_seed : int
        Seed of the scene (shared by dithers so sources stay put on the sky).
    read_noise : bool
        Per-frame white read noise on/off.
    one_over_f : float
        RMS (DN) of the 1/f time series per amplifier; 0 turns it off.
    one_over_f_common : float
        Fraction of the 1/f variance common to all amplifiers.
    ktc : bool
        Per-integration reset (kTC) noise on/off.
    amp_offsets : float
        RMS (DN) of per-integration per-amplifier (odd/even column) offsets; 0 off.
    poisson : bool
        Photon/dark shot noise on/off (off: signal = rate × time exactly).
    cr_rate : float
        Cosmic-ray hits per light-sensitive pixel per second.
    snowballs : int
        Snowballs per exposure (spread at random over integrations).
    bad_pixel_fraction : float
        Fraction of dead + hot pixels in the detector model (mask reference).
    nonlinearity : bool
        Apply the inverse of the linearity reference (off: response is linear).
    zeroframe : bool
        Write a ZEROFRAME extension (ZEROFRAM keyword).
    seed : int
        Seed of the exposure noise (read noise, Poisson, 1/f, cosmic rays).
    ref_seed : int
        Seed of the detector model (references); exposures sharing it share refs.
    date_obs : str
        ISO start time, ``YYYY-MM-DDThh:mm:ss.sss``.
    target : str, ra, dec : float
        TARGNAME and target coordinates (deg).
    roll : float
        V3 position angle (deg) at the module's pointing reference point.
    scene : {"local", "sky", "tso_grism", "tso_image", "coron"}
        ``local``: sources on a tangent plane in pixels (``scene_seed``);
        ``sky``: a catalogue with RA/Dec and flux per filter seen through the
        WCS, the distortion, the flat and the photometry (stage-2 truth);
        ``tso_grism``: one star's spectrum dispersed along the rows and
        transited by a planet (``tso``; a rate per integration, see
        :mod:`webbflow.simulate.tso_grism`); ``tso_image``: one star's
        (weak-lens or in-focus) PSF on a small subarray, transited, with
        drift, jitter and a step (:mod:`webbflow.simulate.tso_image`);
        ``coron``: a star behind a Lyot occulter with a companion
        (:mod:`webbflow.simulate.coron`).
    pointing_error : (float, float)
        True minus commanded pointing, arcsec (RA·cos Dec, Dec); the header
        WCS does not know it (``scene="sky"`` only).
    roll_error : float
        True minus commanded V3 position angle, deg, about the module's
        pointing reference (a guide-star error rolls the attitude a little);
        the header WCS does not know it either.
    field_half_size : float
        Half side (arcsec) of the square sky field (``scene="sky"``).
    n_bright_stars : int or None
        Cap on the bright, isolated grid stars of the sky (None: fill the
        field; 0: none, e.g. for a star-free flat-sky test).
    noutputs : {1, 4} or None
        Amplifiers of a full-width subarray (``SUBGRISM*``; None: 4).
    tsovisit : bool
        TSOVISIT (a time-series visit).
    segment : (int, int, int, int) or None
        One segment of a segmented exposure: (EXSEGNUM, EXSEGTOT, INTSTART,
        NINTS of the whole exposure); ``nints`` is then the integrations in
        this file (INTEND = INTSTART + nints - 1), and the file is named
        ``…_<eeeee>-seg<NNN>_<detector>`` as jwst names segments.
    tso : TsoGrismScene, TsoImageScene or None
        The star, transit and drift of ``scene="tso_grism"`` / ``"tso_image"``.
    coron : CoronScene or None
        The star behind the occulter, its companion and the wavefront of
        ``scene="coron"`` (:mod:`webbflow.simulate.coron`; EXP_TYPE NRC_CORON).
    wisp : float
        Peak rate (DN/s, before the flat like ``sky``) of the detector's wisp
        (:mod:`webbflow.simulate.wisps`; NRCA3, NRCB3, NRCB4, ``scene="sky"``
        only); 0 adds none.
    dark_ref_noise : float
        White noise (DN rms per frame) of the DARK reference: a dark measured
        from few subarray exposures is noisy, and subtracting it adds that
        noise to every group (the coronagraphic known issue NC-CI01).
    xref_sci, yref_sci : float or None
        XREF_SCI/YREF_SCI (1-based, as stored) of the aperture's reference
        point; None: the subarray centre.  Grism time series put the source
        at the SIAF value (F322W2: 1581, 35), which fixes λ(x).
    """

    detector: str = "NRCA1"
    subarray: str = "SUB160"
    size: int | None = None
    corner: object = None
    readpatt: str = "BRIGHT2"
    nints: int = 1
    ngroups: int = 5
    filter: str = "F200W"
    pupil: str = "CLEAR"
    exp_type: str = "NRC_IMAGE"
    program: int = 1234
    observation: int = 1
    visit: int = 1
    visit_group: int = 2
    sequence: int = 1
    activity: int = 1
    exposure: int = 1
    dither_position: int = 1
    n_dither: int = 1
    dither_offset: tuple = (0.0, 0.0)
    sky: float = 0.5
    n_stars: int = 20
    n_galaxies: int = 5
    star_rate_range: tuple = (20.0, 2000.0)
    n_saturating_stars: int = 2
    stars: tuple = field(default_factory=tuple)
    scene_seed: int = 7
    read_noise: bool = True
    one_over_f: float = 1.0
    one_over_f_common: float = 0.8
    ktc: bool = True
    amp_offsets: float = 20.0
    poisson: bool = True
    cr_rate: float = 2e-4
    snowballs: int = 0
    bad_pixel_fraction: float = 0.002
    nonlinearity: bool = True
    zeroframe: bool = True
    seed: int = 1
    ref_seed: int = 2024
    date_obs: str = "2025-03-14T10:00:00.000"
    target: str = "WEBBFLOW-FIELD"
    ra: float = 53.1625
    dec: float = -27.7914
    roll: float = 75.0
    scene: str = "local"
    pointing_error: tuple = (0.0, 0.0)
    roll_error: float = 0.0
    field_half_size: float = 9.0
    n_bright_stars: int | None = None
    noutputs: int | None = None
    tsovisit: bool = False
    segment: tuple | None = None
    tso: object = None
    xref_sci: float | None = None
    yref_sci: float | None = None
    coron: object = None
    dark_ref_noise: float = 0.0
    wisp: float = 0.0

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}")
        if self.readpatt not in READ_PATTERNS:
            raise ValueError(f"unknown readout pattern {self.readpatt!r}")
        if self.nints < 1 or self.ngroups < 1:
            raise ValueError("nints and ngroups must be >= 1")
        if self.scene not in ("local", "sky", "tso_grism", "tso_image", "coron"):
            raise ValueError(f"scene must be 'local', 'sky', 'tso_grism', 'tso_image' or 'coron', not {self.scene!r}")
        if self.scene == "coron" and self.coron is None:
            raise ValueError("scene='coron' needs coron= (a webbflow.simulate.coron.CoronScene)")
        if self.scene == "tso_grism" and self.tso is None:
            raise ValueError("scene='tso_grism' needs tso= (a webbflow.simulate.tso_grism.TsoGrismScene)")
        if self.scene == "tso_image" and self.tso is None:
            raise ValueError("scene='tso_image' needs tso= (a webbflow.simulate.tso_image.TsoImageScene)")
        if self.wisp:
            from webbflow.simulate.wisps import WISP_DETECTORS

            if self.scene != "sky" or self.detector not in WISP_DETECTORS:
                raise ValueError(f"wisp= needs scene='sky' on {', '.join(WISP_DETECTORS)} "
                                 f"(not {self.scene!r} on {self.detector})")
        if self.segment is not None:
            num, total, intstart, nints_total = self.segment
            if not (1 <= num <= total and intstart >= 1 and intstart + self.nints - 1 <= nints_total):
                raise ValueError(f"segment {self.segment} does not hold integrations "
                                 f"{intstart}..{intstart + self.nints - 1} of the exposure")

    @property
    def geometry(self) -> Geometry:
        """The array geometry."""
        return subarray_geometry(self.detector, self.subarray, size=self.size, corner=self.corner,
                                 noutputs=self.noutputs)

    @property
    def nframes(self):
        return READ_PATTERNS[self.readpatt][0]

    @property
    def groupgap(self):
        return READ_PATTERNS[self.readpatt][1]

    @property
    def first_int(self):
        """Index (0-based) of this file's first integration in the exposure."""
        return 0 if self.segment is None else self.segment[2] - 1

    @property
    def nints_total(self):
        """NINTS: integrations of the whole exposure (all segments)."""
        return self.nints if self.segment is None else self.segment[3]

    @property
    def rootname(self):
        """JWST exposure root name, e.g. ``jw01234001001_02101_00001_nrca1`` (``…_00001-seg002_…``)."""
        seg = "" if self.segment is None else f"-seg{self.segment[0]:03d}"
        return (f"jw{self.program:05d}{self.observation:03d}{self.visit:03d}_"
                f"{self.visit_group:02d}{self.sequence:1d}{self.activity:02d}_"
                f"{self.exposure:05d}{seg}_{self.detector.lower()}")

    def noiseless(self):
        """A copy with every random ingredient off (for truth-recovery tests)."""
        return replace(self, read_noise=False, one_over_f=0.0, ktc=False, amp_offsets=0.0,
                       poisson=False, cr_rate=0.0, snowballs=0)
