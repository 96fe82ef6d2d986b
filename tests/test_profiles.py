"""The Snakemake profiles: the workflow profile, the SLURM profile and the resources they request.

A real SLURM run is `.ci/slurm-test.sh` (needs root); these tests check what can be checked without
a cluster: how the two profiles combine, and the requests a dry run plans with the SLURM profile.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from _snakemake import run_snakemake

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
DEFAULT_PROFILE = REPO / "profiles" / "default" / "config.yaml"
SLURM_PROFILE = REPO / "profiles" / "slurm" / "profile.v9+.yaml"
JOB_HEAD = re.compile(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$", re.M)


def load(path):
    return yaml.safe_load(path.read_text())


def test_slurm_profile_repeats_no_key_of_the_workflow_profile():
    # snakemake applies profiles/default after --profile, per top-level key: a key in both files
    # would silently lose its SLURM value
    shared = set(load(DEFAULT_PROFILE)) & set(load(SLURM_PROFILE))
    assert not shared, f"keys of profiles/default override these in profiles/slurm: {sorted(shared)}"


def test_workflow_profile_sets_the_workflow_defaults():
    default = load(DEFAULT_PROFILE)
    assert default["retries"] >= 1 and default["keep-going"] is True and default["latency-wait"] >= 30
    # per-rule and default resources belong to the rules and the cluster profile, not here
    assert not {"default-resources", "set-resources", "set-threads", "executor"} & set(default)


def test_slurm_profile_groups_per_exposure_rules_and_avoids_the_sacct_hang():
    slurm = load(SLURM_PROFILE)
    assert slurm["executor"] == "slurm"
    assert slurm["slurm-status-command"] == "squeue"
    groups = slurm["groups"]
    assert groups["detector1"] == "per_exposure"
    assert set(groups.values()) <= set(slurm["group-components"])
    assert slurm["group-components"]["per_exposure"] > 1
    # the site block is there, commented, for the account and the partition
    text = SLURM_PROFILE.read_text()
    assert re.search(r"^  # slurm_account: ", text, re.M) and re.search(r"^  # slurm_partition: ", text, re.M)


def test_slurm_profile_turns_the_warm_job_server_off():
    """A job's child would run outside SLURM's accounting of the job: the profile sets jobs.warm_server
    false, which the schema accepts as --config writes it and which turns the server off even where
    auto would not (the submit host, no SLURM_JOB_ID)."""
    from snakemake.cli import parse_config
    from snakemake.utils import validate

    from webbflow.jobmode import wanted

    config = parse_config(load(SLURM_PROFILE)["config"])
    validate(config, str(REPO / "config" / "schema.yaml"))
    assert config["jobs"]["warm_server"] in (False, "false")
    assert not wanted(config, environ={})
    # what the profile replaces: the default, auto, is on for a local run and off in a batch job
    default = {}
    validate(default, str(REPO / "config" / "schema.yaml"))
    assert default["jobs"]["warm_server"] == "auto"
    assert wanted(default, environ={}) and not wanted(default, environ={"SLURM_JOB_ID": "42"})


@pytest.mark.parametrize("size_mb, attempt, mem_mb, runtime", [(0, 1, 1000, 30), (250, 1, 2000, 30),
                                                               (250, 2, 4000, 60), (250, 3, 8000, 120)])
def test_default_resources_grow_with_input_and_attempt(size_mb, attempt, mem_mb, runtime):
    """Rules without resources of their own: 1000 MB + 4 x input MB, doubled per attempt."""
    defaults = load(SLURM_PROFILE)["default-resources"]
    scope = {"input": SimpleNamespace(size_mb=size_mb), "attempt": attempt, "max": max, "int": int}
    assert eval(defaults["mem_mb"], scope) == mem_mb  # noqa: S307 (our own profile's expression)
    assert eval(str(defaults["runtime"]), scope) == runtime  # noqa: S307


@pytest.fixture(scope="module")
def user_data(tmp_path_factory, make):
    """Two NRCA1 exposures of different sizes (1 and 3 integrations of 10 groups, 256 x 256)."""
    root = tmp_path_factory.mktemp("profiles")
    make.reference_set(root / "refs", detector="NRCA1", shape=(256, 256), ndark=12)
    (root / "uncal").mkdir()
    sizes = {}
    for exposure, nints in (("1", 1), ("2", 3)):
        path = make.uncal(root / "uncal" / f"e{exposure}_uncal.fits",
                          make.ramp(nints=nints, ngroups=10, ny=256, nx=256), EXPOSURE=exposure)
        sizes[f"jw01234001001_02101_0000{exposure}"] = path.stat().st_size / 1e6
    config = root / "config.yaml"
    config.write_text(f"inputs: {{uncal_dir: {root / 'uncal'}}}\nreferences: {{dir: {root / 'refs'}}}\n")
    return SimpleNamespace(root=root, config=config, sizes=sizes)


def planned_resources(workdir, *args):
    """exposure -> resources dict of the detector1 jobs a dry run with the SLURM profile plans."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    proc = run_snakemake(workdir, "-n", "--profile", str(SLURM_PROFILE.parent), *args, timeout=300, env=env,
                         cwd=workdir)
    planned = {}
    blocks = JOB_HEAD.split(proc.stdout)  # [preamble, rule, body, rule, body, ...]
    for rule, body in zip(blocks[1::2], blocks[2::2]):
        exposure = re.search(r"^\s*wildcards: .*exposure=(\w+)", body, re.M)
        resources = re.search(r"^\s*resources: (.*)$", body, re.M)
        if rule == "detector1":
            planned[exposure.group(1)] = dict(kv.split("=", 1) for kv in resources.group(1).split(", "))
    return planned


def test_dry_run_requests_memory_and_runtime_predicted_from_the_uncal_size(user_data, tmp_path):
    planned = planned_resources(tmp_path, "--configfile", str(user_data.config))
    assert sorted(planned) == sorted(user_data.sizes)
    for exposure, size in user_data.sizes.items():
        # detector1: 500 MB + 8 MB per uncal MB; 5 min + 0.05 min per uncal MB (workflow/rules/common.smk)
        assert int(planned[exposure]["mem_mb"]) == int(500 + 8 * size), (exposure, size)
        assert int(planned[exposure]["runtime"]) == int(5 + 0.05 * size)
    small, large = (int(planned[e]["mem_mb"]) for e in sorted(user_data.sizes))
    assert large - small == pytest.approx(8 * (max(user_data.sizes.values()) - min(user_data.sizes.values())),
                                          abs=1)


def test_site_profile_overrides_a_rule_with_set_resources(user_data, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "config.yaml").write_text(
        "set-resources:\n  detector1:\n    mem_mb: 4321\n"
        "default-resources:\n  slurm_account: survey\n  slurm_partition: long\n  mem_mb: 1000\n  runtime: 30\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    planned = planned_resources(workdir, "--configfile", str(user_data.config), "--profile", str(site))
    for exposure, size in user_data.sizes.items():
        assert planned[exposure]["mem_mb"] == "4321"
        assert int(planned[exposure]["runtime"]) == int(5 + 0.05 * size)  # the rule's own, not overridden
        assert planned[exposure]["slurm_account"] == "survey" and planned[exposure]["slurm_partition"] == "long"


LOCAL_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path(sys.argv[1]),
                            workdir=Path(sys.argv[2]))._workflow
    # what workflow.is_local() decides under a cluster executor (under the local one, all are local)
    print(json.dumps({r.name: r.group is None and (r.name in workflow._localrules or r.norun)
                      for r in workflow.rules}))
"""


def test_rules_that_need_the_submit_host_are_local(tmp_path):
    """The demo simulation, downloads and CRDS prefetch (network, shared cache) and `all` stay on the
    submit host: compute nodes often have no network."""
    proc = subprocess.run([sys.executable, "-c", LOCAL_RULES, str(SNAKEFILE), str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = json.loads(proc.stdout.strip().splitlines()[-1])
    must_be_local = {"all", "demo"} | {name for name in local
                                       if any(word in name for word in ("crds", "prefetch", "download"))}
    assert {name for name in must_be_local if not local[name]} == set()
    assert local["detector1"] is False  # the per-exposure work is what goes to the cluster
    # a rule grouped by the SLURM profile stops being local: no local rule may be in a group
    assert not set(load(SLURM_PROFILE)["groups"]) & must_be_local


def test_detector1_request_is_capped_by_its_memory_budget(make, tmp_path):
    """Above max_memory_mb.detector1 the job streams the exposure, so it asks for the budget + 500 MB."""
    root = tmp_path / "data"
    make.reference_set(root / "refs", detector="NRCA1", shape=(256, 256), ndark=12)
    (root / "uncal").mkdir()
    path = make.uncal(root / "uncal" / "e1_uncal.fits", make.ramp(nints=10, ngroups=10, ny=256, nx=256),
                      EXPOSURE="1")
    size = path.stat().st_size / 1e6
    config = root / "config.yaml"
    config.write_text(f"inputs: {{uncal_dir: {root / 'uncal'}}}\nreferences: {{dir: {root / 'refs'}}}\n"
                      "max_memory_mb: {detector1: 50}\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (planned,) = planned_resources(workdir, "--configfile", str(config)).values()
    assert 500 + 8 * size > 550  # the prediction alone would ask for more
    assert int(planned["mem_mb"]) == 550
