"""The occulted star's centre measured behind the mask (``klip.center_method: symmetry``,
:func:`webbflow.steps.star_centre.symmetry_centre`).

* A synthetic point-symmetric halo (cosine speckles under a radial envelope, about a star 0.15 px off the
  occulter's centre) times the occulter's t² fixed on the detector, with photon-like noise and a
  companion: the centre within 0.02 px of the star, where the start (the mask centre) is 0.15 px off.
* The simulator's noiseless first science exposure of the LW round mask (MASK335R, 20 nm + 30 nm
  wavefront): the centre within 1 mas of the true star, whose target-acquisition offset is 7 mas
  (0.46 mas seen when written).
* Too few usable pixels: one InputError naming the fix.
"""

import numpy as np
import pytest

from webbflow.io.errors import InputError
from webbflow.steps.star_centre import symmetry_centre


def _scene(star, mask_centre, n=128, seed=3):
    from webbflow.simulate.coron import occulter_transmission

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(float)
    dx, dy = xx - star[0], yy - star[1]
    halo = np.ones((n, n))
    for _ in range(40):  # cos(k.(p - s) ) is even about s: a point-symmetric speckle pattern
        k = rng.normal(0.0, 0.6, 2)
        halo += rng.uniform(0.2, 0.8) * np.cos(k[0] * dx + k[1] * dy)
    halo = np.clip(halo, 0.05, None) * 1e4 * np.exp(-np.hypot(dx, dy) / 15.0)
    r = np.hypot(xx - mask_centre[0], yy - mask_centre[1]) * 0.063
    t2 = occulter_transmission(r, "MASKA335R") ** 2
    image = rng.poisson(halo * t2).astype(float)
    image += 3e3 * np.exp(-((xx - star[0] - 20) ** 2 + (yy - star[1] - 8) ** 2) / 2.0)  # a companion
    return image, t2


def test_symmetry_centre_finds_the_star_not_the_mask():
    mask_centre = (63.5, 64.0)
    star = (63.62, 63.91)  # 0.15 px (9.5 mas) off the mask
    image, t2 = _scene(star, mask_centre)
    found = symmetry_centre(image, t2, mask_centre)
    print(found)
    assert np.hypot(found[0] - star[0], found[1] - star[1]) < 0.02


def test_symmetry_centre_on_the_simulated_round_mask():
    from webbflow.simulate import coron
    from webbflow.simulate.presets import coron_specs

    spec = coron_specs(nints=1, ngroups=2)[0]
    pos = coron.coron_positions(spec)
    star, companion = coron.coron_rate(spec, components=True)
    found = symmetry_centre(star + companion, coron.psfmask_array(spec), pos["mask"])
    ta = 63.0 * np.hypot(pos["star"][0] - pos["mask"][0], pos["star"][1] - pos["mask"][1])
    error = 63.0 * np.hypot(found[0] - pos["star"][0], found[1] - pos["star"][1])
    print(f"TA offset {ta:.2f} mas, centre error {error:.2f} mas")
    assert ta > 4.0 and error < 1.0


def test_symmetry_centre_needs_usable_pixels():
    image, t2 = _scene((63.5, 64.0), (63.5, 64.0))
    with pytest.raises(InputError, match="center_method: wcs"):
        symmetry_centre(image, np.zeros_like(t2), (63.5, 64.0))
