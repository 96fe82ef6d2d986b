"""A stage job's own start (webbflow.jobclient): the job file a ``shell:`` rule writes gives the adapter
script the values Snakemake's ``script:`` object would, the command stays short for any association,
and the command Snakemake records as the rule's code is constant."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webbflow import jobclient

REPO = Path(__file__).resolve().parents[1]


def _namespace(tmp_path, n_inputs=3, **extra):
    """A rule function's locals as Snakemake passes them (its own named-list types)."""
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Wildcards

    many = [f"{tmp_path}/cal/exposure_{i:06d}_nrca1_cal.fits" for i in range(n_inputs)]
    inp = InputFiles([f"{tmp_path}/a_asn.json", *many, f"{tmp_path}/crds.lock.json"])
    inp._set_name("asn", 0)
    inp._set_name("cals", 1, 1 + n_inputs)
    inp._set_name("crds_lock", 1 + n_inputs)
    out = OutputFiles([f"{tmp_path}/p_i2d.fits", f"{tmp_path}/crf"])
    out._set_name("i2d", 0)
    out._set_name("crf", 1)
    params = Params([{"tweakreg": {"skip": True}}, '{"flat": "/refs/f.fits"}', ("F200W", 2)])
    for i, name in enumerate(("steps", "reference_paths", "pair")):
        params._set_name(name, i)
    wildcards = Wildcards(["p"])
    wildcards._set_name("product", 0)
    log = Log([f"{tmp_path}/p.log"])
    resources = ResourceList([1, 1, 2000])
    for i, name in enumerate(("_cores", "_nodes", "mem_mb")):
        resources._set_name(name, i)
    return {"input": inp, "output": out, "params": params, "wildcards": wildcards, "threads": 1,
            "resources": resources, "log": log, "rule": "image3", "conda_env": None, "container_img": None,
            "env_modules": None, "cleanup_scripts": True, "__is_snakemake_rule_func": True, **extra}


def test_job_file_gives_what_snakemakes_object_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = _namespace(tmp_path)
    config = {"jobs": {"warm_server": "auto"}, "max_memory_mb": {"detector1": 4000}}
    path = jobclient.write_job(ns, config)
    assert Path(path).parent == tmp_path / jobclient.JOB_DIR
    job = jobclient.read_job(path)
    assert not Path(path).exists()  # read once, then removed (as Snakemake removes its temporary script)
    assert job.rule == "image3" and job.threads == 1 and job.config == config
    for field in ("input", "output", "params", "wildcards", "log", "resources"):
        ours, theirs = getattr(job, field), ns[field]
        assert list(ours) == list(theirs) and list(ours.keys()) == list(theirs.keys())
        for name, value in theirs.items():
            assert getattr(ours, name) == value and ours[name] == value and ours.get(name) == value
            assert type(getattr(ours, name)) in (str, list, dict, tuple, int)  # no snakemake type left
        assert ours.get("nothing") is None and ours.get("nothing", []) == [] and theirs.get("nothing") is None
        with pytest.raises(AttributeError):
            getattr(ours, "nothing")
    assert job.input.asn == str(tmp_path / "a_asn.json") and len(job.input.cals) == 3
    assert job.params.pair == ("F200W", 2) and job.log[0] == str(tmp_path / "p.log")
    assert dict(job.output.items()) == {"i2d": str(tmp_path / "p_i2d.fits"), "crf": str(tmp_path / "crf")}


def test_skip_script_cleanup_keeps_the_job_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = jobclient.write_job(_namespace(tmp_path, cleanup_scripts=False), {})
    jobclient.read_job(path)
    assert Path(path).exists()


def test_the_recorded_command_is_constant_and_a_job_command_short(tmp_path, monkeypatch):
    """Read with the rule (no rule-function marker) the command is the constant TEMPLATE (Snakemake's
    code re-run trigger compares it); a job's command names its file, short however many inputs."""
    monkeypatch.chdir(tmp_path)
    script = REPO / "workflow" / "scripts" / "image3.py"
    assert jobclient.shell_command({"config": {}}, script, {}) == jobclient.TEMPLATE.format(script="image3.py")
    assert "{" not in jobclient.TEMPLATE.format(script="x.py")  # nothing for Snakemake to fill in
    ns = _namespace(tmp_path, n_inputs=5000)
    assert sum(len(f) + 1 for f in ns["input"]) > 128 * 1024  # more than one argument may hold
    command = jobclient.shell_command(ns, script, {})
    python, called, path = command.split(" ")
    assert python == sys.executable and called == str(script) and len(command) < 1000
    assert len(jobclient.read_job(path).input.cals) == 5000
    # in a conda environment (or a container, modules) the environment's python, as for script:
    conda = jobclient.shell_command({**ns, "conda_env": "/envs/abc"}, script, {})
    assert conda.split(" ")[0] == "python"
    os.unlink(conda.split(" ")[2])


def test_adapter_runs_the_job_from_its_file_without_snakemake(tmp_path):
    """``python workflow/scripts/image3_asn.py <job file>`` (in-process: no server) writes what the
    script: rule writes, with neither snakemake nor numpy imported."""
    from snakemake.iocontainers import Log, OutputFiles, Params

    content = {"asn_id": "a3001", "products": [{"name": "p", "members": [{"expname": "x_cal.fits"}] * 3}]}
    params, output, log = Params([json.dumps(content)]), OutputFiles([str(tmp_path / "asn" / "p_asn.json")]), \
        Log([str(tmp_path / "asn.log")])
    params._set_name("content", 0)
    output._set_name("asn", 0)
    ns = {"input": Params([]), "output": output, "params": params, "wildcards": Params([]), "threads": 1,
          "resources": Params([]), "log": log, "rule": "image3_asn", "__is_snakemake_rule_func": True}
    command = jobclient.shell_command(ns, REPO / "workflow" / "scripts" / "image3_asn.py",
                                      {"jobs": {"warm_server": False}})
    probe = "; ".join([
        "import runpy, sys", "sys.argv = sys.argv[1:]", "runpy.run_path(sys.argv[0], run_name='__main__')",
        "print([m for m in ('snakemake', 'numpy', 'astropy', 'logging') if m in sys.modules])"])
    python, script, path = command.split(" ")
    out = subprocess.run([python, "-c", probe, script, path], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")}, check=True).stdout
    # logging: the in-process job logs into its log file
    assert out.strip() == "['logging']"
    assert (tmp_path / "asn" / "p_asn.json").read_text() == json.dumps(content, indent=2) + "\n"
    assert (tmp_path / "asn.log").read_text().strip().endswith("INFO webbflow.asn: p: 3 members")
    assert not Path(path).exists()
