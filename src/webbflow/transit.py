"""Transit light curves with quadratic limb darkening, computed by integrating the stellar disk.

No batman here: the blocked flux is a 1-D integral over the stellar radius r of the limb-darkened
intensity times the arc of the circle of radius r that the planet's disk covers,

    blocked(z, p) = ∫ I(r) · 2 α(r) · r dr,   cos α = (r² + z² − p²) / (2 r z),

with I(μ) = 1 − u1 (1 − μ) − u2 (1 − μ)², μ = √(1 − r²), over r ∈ [max(0, z − p), min(1, z + p)]
(split where α or I has a square-root edge).  Each piece is integrated with Gauss–Legendre nodes
after the substitution r = a + (b − a)(1 − cos θ)/2, which removes the square-root behaviour at
both ends, so a few hundred nodes give ~1e-10 relative accuracy (tests compare with the exact
uniform-disk overlap and with Mandel & Agol's small-planet limit).  The unocculted flux is
π (1 − u1/3 − u2/6).  This is the Mandel & Agol (2002) quadratic model evaluated numerically.

The library's transit model: the simulator (:mod:`webbflow.simulate.tso_grism`) injects it and
:func:`webbflow.lightcurves.fit_transit` fits it, so a truth test compares like with like.

Orbits are circular: z(t) = a/R* · √(sin²φ + cos²i · cos²φ), φ = 2π (t − t0)/P, and the planet
only occults while in front of the star (cos φ > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TransitParams", "occulted_flux", "projected_separation", "relative_flux", "uniform_overlap"]

_NODES = 96
_X, _W = np.polynomial.legendre.leggauss(_NODES)
# θ ∈ [0, π]: r = a + (b − a)(1 − cos θ)/2, dr = (b − a)/2 · sin θ dθ
_THETA = 0.5 * np.pi * (_X + 1.0)
_WTHETA = 0.5 * np.pi * _W
_S = 0.5 * (1.0 - np.cos(_THETA))
_DS = 0.5 * np.sin(_THETA) * _WTHETA


@dataclass(frozen=True)
class TransitParams:
    """A circular-orbit transit (batman's parameter names).

    Attributes
    ----------
    t0 : float
        Mid-transit time, MJD (the same time scale as the times it is evaluated at).
    per : float
        Orbital period, days.
    a : float
        Semi-major axis in stellar radii.
    inc : float
        Inclination, degrees.
    rp : float
        Planet-to-star radius ratio at ``wave_ref``.
    rp_slope : float
        d(rp)/dλ per µm: rp(λ) = rp + rp_slope · (λ − wave_ref).
    wave_ref : float
        Reference wavelength, µm.
    u1, u2 : float
        Quadratic limb-darkening coefficients at ``wave_ref``.
    u1_slope, u2_slope : float
        Their slopes per µm (limb darkening weakens to the red).
    """

    t0: float
    per: float
    a: float
    inc: float
    rp: float
    rp_slope: float = 0.0
    wave_ref: float = 3.2
    u1: float = 0.1
    u2: float = 0.1
    u1_slope: float = 0.0
    u2_slope: float = 0.0

    def rp_at(self, wave):
        """Radius ratio at wavelength ``wave`` (µm)."""
        return self.rp + self.rp_slope * (np.asarray(wave, float) - self.wave_ref)

    def depth_at(self, wave):
        """Transit depth truth rp(λ)² at ``wave`` (µm)."""
        return self.rp_at(wave) ** 2

    def ld_at(self, wave):
        """Quadratic limb-darkening coefficients (u1, u2) at ``wave`` (µm)."""
        d = np.asarray(wave, float) - self.wave_ref
        return self.u1 + self.u1_slope * d, self.u2 + self.u2_slope * d


def projected_separation(t, params):
    """Centre-to-centre distance in stellar radii at times ``t``; +inf while the planet is behind the star."""
    phase = 2.0 * np.pi * (np.asarray(t, float) - params.t0) / params.per
    cosi = np.cos(np.radians(params.inc))
    z = params.a * np.sqrt(np.sin(phase) ** 2 + (cosi * np.cos(phase)) ** 2)
    return np.where(np.cos(phase) > 0, z, np.inf)


def uniform_overlap(z, p):
    """Area of overlap of the unit disk with a disk of radius ``p`` at distance ``z`` (exact)."""
    z, p = np.broadcast_arrays(np.asarray(z, float), np.asarray(p, float))
    out = np.zeros(z.shape)
    inside = z <= np.abs(1 - p)
    out[inside] = np.pi * np.minimum(p[inside], 1.0) ** 2
    part = (~inside) & (z < 1 + p)
    zz, pp = z[part], p[part]
    k0 = np.arccos(np.clip((pp ** 2 + zz ** 2 - 1) / (2 * pp * zz), -1, 1))
    k1 = np.arccos(np.clip((1 - pp ** 2 + zz ** 2) / (2 * zz), -1, 1))
    out[part] = pp ** 2 * k0 + k1 - 0.5 * np.sqrt(np.maximum(4 * zz ** 2 - (1 + zz ** 2 - pp ** 2) ** 2, 0))
    return out


def _arc_integral(a, b, z, p, u1, u2):
    """∫_a^b I(r) 2α(r) r dr on one piece (arrays broadcast; pieces with b <= a give 0)."""
    width = np.maximum(b - a, 0.0)
    r = a[..., None] + width[..., None] * _S
    zz, pp = z[..., None], p[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (r ** 2 + zz ** 2 - pp ** 2) / (2 * r * zz)
    alpha = np.where(r <= pp - zz, np.pi, np.arccos(np.clip(np.nan_to_num(c, nan=-1.0), -1, 1)))
    mu = np.sqrt(np.clip(1 - r ** 2, 0, None))
    one = 1 - mu
    inten = 1 - u1[..., None] * one - u2[..., None] * one ** 2
    return (inten * 2 * alpha * r * _DS).sum(-1) * width


def occulted_flux(z, p, u1, u2):
    """Relative stellar flux (1 out of transit) for separations ``z`` and radius ratios ``p``.

    Parameters
    ----------
    z, p, u1, u2 : array_like
        Broadcast together: separation (stellar radii), radius ratio and the quadratic
        limb-darkening coefficients.

    Returns
    -------
    ndarray
        F/F0 = 1 − blocked / (π (1 − u1/3 − u2/6)).
    """
    z, p, u1, u2 = (np.asarray(v, float) for v in np.broadcast_arrays(z, p, u1, u2))
    out = np.ones(z.shape)
    hit = np.isfinite(z) & (z < 1 + p) & (p > 0)
    if not hit.any():
        return out
    zz, pp, a1, a2 = z[hit], p[hit], u1[hit], u2[hit]
    zs = np.maximum(zz, 1e-12)  # z = 0 exactly: α is π inside the planet, the formula needs z > 0
    lo = np.maximum(zz - pp, 0.0)
    hi = np.minimum(zz + pp, 1.0)
    # break at |z − p| (α switches between π and arccos) so each piece is smooth inside
    mid = np.clip(np.abs(zz - pp), lo, hi)
    blocked = _arc_integral(lo, mid, zs, pp, a1, a2) + _arc_integral(mid, hi, zs, pp, a1, a2)
    out[hit] = 1.0 - blocked / (np.pi * (1 - a1 / 3 - a2 / 6))
    return out


def relative_flux(t, wave, params):
    """Relative flux at times ``t`` (MJD) and wavelengths ``wave`` (µm), shape (len(t), len(wave))."""
    t = np.atleast_1d(np.asarray(t, float))
    wave = np.atleast_1d(np.asarray(wave, float))
    z = projected_separation(t, params)[:, None]
    u1, u2 = params.ld_at(wave)
    return occulted_flux(z, params.rp_at(wave)[None, :], u1[None, :], u2[None, :])
