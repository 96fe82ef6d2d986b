"""Two runs from different working folders may not write one results_dir (issue 12 item 10).

snakemake locks a working folder; webbflow.workflow.lock_results_dir locks the results_dir itself
(an flock the kernel drops when the run ends, so a killed run leaves nothing to unlock).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _snakemake import run_snakemake

from webbflow.io.errors import InputError
from webbflow.workflow import lock_results_dir

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]


def test_second_holder_is_refused_until_the_first_lets_go(tmp_path):
    first = lock_results_dir(tmp_path / "results")
    with pytest.raises(InputError, match=r"results: another run is writing this results_dir \(pid \d+, working "
                       r"folder .*\)\. Fix: wait for it to finish, or give this run another results_dir"):
        lock_results_dir(tmp_path / "results")
    first.close()
    lock_results_dir(tmp_path / "results").close()


@pytest.mark.workflow
def test_run_from_another_folder_is_refused_in_one_line(tmp_path, make):
    data = tmp_path / "data"
    make.reference_set(data / "refs", detector="NRCA1", shape=(32, 32))
    (data / "uncal").mkdir()
    make.uncal(data / "uncal" / "e1_uncal.fits", make.ramp(nints=1, ngroups=5))
    results = tmp_path / "shared_results"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"inputs": {"uncal_dir": str(data / "uncal")}, "results_dir": str(results),
                                      "references": {"dir": str(data / "refs")}}))
    # another run (another working folder) holds the results_dir
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from webbflow.workflow import "
                               "lock_results_dir as l; h = l(sys.argv[1]); print('held', flush=True); time.sleep(600)",
                               str(results)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "held"
        work = tmp_path / "work"
        work.mkdir()
        proc = run_snakemake(work, "--cores", "1", "stage1", "--configfile", str(config), timeout=600, check=False)
    finally:
        holder.kill()
        holder.wait()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output, output[-3000:]
    lines = {line for line in output.splitlines() if "another run is writing this results_dir" in line}
    assert len(lines) == 1, output[-3000:]
    assert f"pid {holder.pid}, working folder {tmp_path}" in lines.pop()
    assert not list(results.rglob("*.fits"))
