"""Planning at survey scale (issue 18 part 4): each exposure's work once, with the same results.

The time of ``snakemake -n`` over 2,000 exposures is a benchmark line (benchmarks/bench_planning.py),
not a test; these check what makes it fast gives what the slow paths give, and that the planner
opens every uncal file once.
"""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from webbflow.io.errors import InputError
from webbflow.io.uncal import read_uncal_header_values, read_uncal_headers
from webbflow.refs.crds_select import crds_parameters, planning_parameters
from webbflow.simulate.header_program import (DETECTORS_LW, header_program_specs, write_header_program,
                                              write_header_references)

REPO = Path(__file__).resolve().parents[1]
_COMMENTARY = {"", "COMMENT", "HISTORY"}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """One pointing of the header-only program (ten detectors, one SW and one LW filter) and its CRDS cache."""
    root = tmp_path_factory.mktemp("header_program")
    paths = write_header_program(root, 10)
    write_header_references(root, root / "crds")
    return root, paths


def _values(header):
    return {k: v for k, v in header.items() if k not in _COMMENTARY}


def _variants(make, folder):
    """Hand-built uncal files with the header forms of every mode (imaging, time series, coronagraphy)."""
    sci = make.ramp(nints=2, ngroups=3, ny=16, nx=16).astype(np.uint16)
    return [make.uncal(folder / "imaging_uncal.fits", sci),
            make.uncal(folder / "tso_uncal.fits", sci, EXP_TYPE="NRC_TSIMAGE", TSOVISIT=True, EXSEGNUM=1,
                       EXSEGTOT=1, INTSTART=1, INTEND=2, COMMENT="a comment", HISTORY="a history"),
            make.uncal(folder / "coron_uncal.fits", sci, EXP_TYPE="NRC_CORON", CORONMSK="MASKA335R", IS_PSF=False,
                       TARGPROP="HD 1 'b'", PUPIL="MASKRND", FILTER="F335M", DETECTOR="NRCALONG"),
            make.uncal(folder / "odd_values_uncal.fits", sci, EXP_TYPE="NOT_A_TYPE", GROUPGAP=0.0, DRPFRMS1=2)]


def test_raw_header_values_equal_astropy(program, make, tmp_path):
    """read_uncal_header_values parses the same values astropy reads, on the program's sparse files
    and on hand-built ones (quotes, logicals, reals, commentary cards)."""
    files = program[1][:3] + _variants(make, tmp_path)
    for path in files:
        fast, full = read_uncal_header_values(path), read_uncal_headers(path)
        assert fast.primary == _values(full.primary), path
        assert fast.sci == _values(full.sci), path
        assert {k: _values(v) for k, v in full.extensions.items()} == fast.extensions, path


def test_raw_header_values_refuse_a_truncated_file_as_astropy_does(program, tmp_path):
    """A file cut inside its data is left to astropy's reader: the same one-line InputError."""
    cut = tmp_path / "cut_uncal.fits"
    data = Path(program[1][0]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as fast:
        read_uncal_header_values(cut)
    with pytest.raises(InputError) as full:
        read_uncal_headers(cut)
    assert str(fast.value) == str(full.value)


def test_planning_parameters_equal_the_datamodels(program, make, tmp_path):
    """The crds parameters planning computes from the keyword map are get_crds_parameters() of the
    datamodel's ``meta.*`` (what CRDS rules select on), for every header form (an invalid EXP_TYPE
    dropped by both)."""
    files = program[1][:2] + [program[1][-1]] + _variants(make, tmp_path)
    for path in files:
        primary = read_uncal_headers(path).primary
        slow, fast = crds_parameters(primary), planning_parameters(primary)
        slow.pop("meta.date"), fast.pop("meta.date")  # the time each was made
        assert len(fast) > 30
        assert fast == {k: v for k, v in slow.items() if k.startswith("meta.")}, path


_COUNT_OPENS = """
import json, runpy, sys
from collections import Counter
opens = Counter()
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].endswith("_uncal.fits"):
        opens[args[0].rsplit("/", 1)[-1]] += 1
sys.addaudithook(hook)
out = sys.argv.pop(1)
sys.argv[0] = "snakemake"
try:
    runpy.run_module("snakemake", run_name="__main__")
finally:
    open(out, "w").write(json.dumps(opens))
"""


def test_dry_run_opens_each_uncal_once_and_plans_the_program(program, tmp_path):
    """``snakemake -n`` over the program (CRDS references, every stage and the report) opens each
    uncal file once, and plans one detector1 and image2 job per file and one image3 job per filter."""
    root, paths = program
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"inputs": {"uncal_dir": str(root / "uncal")},
                                      "results_dir": str(tmp_path / "results"),
                                      "crds": {"cache": str(root / "crds"), "context": "latest"}}))
    counts = tmp_path / "opens.json"
    cmd = [sys.executable, "-c", _COUNT_OPENS, str(counts), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(config), "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    opens = json.loads(counts.read_text())
    assert opens == {p.name: 1 for p in paths}
    jobs = Counter()
    for line in (proc.stdout + proc.stderr).splitlines():
        head = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if head:
            jobs[head.group(1)] += 1
    specs = header_program_specs(len(paths))
    assert jobs["detector1"] == jobs["image2"] == len(paths)
    assert jobs["image3"] == len({s.filter for s in specs}) == 2
    assert {s.detector for s in specs} >= set(DETECTORS_LW)
