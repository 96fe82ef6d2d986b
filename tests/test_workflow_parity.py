"""detector1 end to end against STScI's jwst 3.0 on demo exposures (needs the oracle environment).

The oracle runs in its own virtual environment (``.oracle/``, ``pip install jwst==3.0.0``) through
``shared/oracle/jwst_offline.py`` with our simulated reference files as overrides; the test skips
when either is absent.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from webbflow.refs import select_references
from webbflow.stages import detector1

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

pytestmark = [pytest.mark.parity, pytest.mark.slow]

ORACLE_PYTHON = REPO / ".oracle" / "bin" / "python"
ORACLE_SCRIPT = SHARED / "oracle" / "jwst_offline.py"
# jwst step name -> (reftype, ...) it is given
OVERRIDES = {
    "dq_init": ("mask",), "saturation": ("saturation", "superbias"), "superbias": ("superbias",),
    "linearity": ("linearity",), "dark_current": ("dark",), "jump": ("gain", "readnoise"),
    "ramp_fit": ("gain", "readnoise"), "gain_scale": ("gain",),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if not ORACLE_PYTHON.exists() or not ORACLE_SCRIPT.exists():
        pytest.skip("oracle environment (.oracle with jwst 3.0) or shared/oracle/jwst_offline.py not present")
    from webbflow.simulate import preset_specs, simulate_exposure

    outdir = tmp_path_factory.mktemp("parity")
    for spec in preset_specs("demo-imaging"):
        if spec.rootname in ROOTS:  # two of the sixteen demo exposures: one SW, one LW
            simulate_exposure(spec, outdir)
    return outdir


ROOTS = ("jw01234001001_02101_00001_nrca1", "jw01234001001_03101_00002_nrcalong")


@pytest.mark.parametrize("root", ROOTS)
def test_detector1_matches_jwst(demo, tmp_path, root):
    uncal = demo / "uncal" / f"{root}_uncal.fits"
    refs = select_references(fits.getheader(uncal), demo / "refs")
    args = [str(ORACLE_PYTHON), str(ORACLE_SCRIPT), "detector1", str(uncal), str(tmp_path / "jwst")]
    for step, reftypes in OVERRIDES.items():
        args += [f"--override={step}.{t}={refs[t]}" for t in reftypes]
    args += ["--skip=ipc", "--skip=persistence", "--skip=charge_migration", "--skip=clean_flicker_noise"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ours = tmp_path / "ours"
    detector1.run(uncal, ours / f"{root}_rate.fits", ours / f"{root}_rateints.fits", refs, {})
    for suffix in ("rate", "rateints"):
        with fits.open(ours / f"{root}_{suffix}.fits") as a, fits.open(tmp_path / "jwst" / f"{root}_{suffix}.fits") as b:
            for ext in ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"):
                np.testing.assert_allclose(a[ext].data, b[ext].data, rtol=1e-5, atol=0, equal_nan=True,
                                           err_msg=f"{root} {suffix} {ext}")
            for key in ("S_DQINIT", "S_SATURA", "S_SUPERB", "S_LINEAR", "S_DARK", "S_JUMP", "S_RAMP"):
                assert a[0].header[key] == b[0].header[key], key
            for key in ("R_MASK", "R_SATURA", "R_SUPERB", "R_LINEAR", "R_DARK", "R_GAIN", "R_READNO"):
                assert a[0].header[key] == b[0].header[key].split("/")[-1], key
