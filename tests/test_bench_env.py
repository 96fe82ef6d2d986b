"""The environment the benchmarks run our jobs in outside Snakemake (benchmarks/bench_job_overhead.py's
``workflow_env``): each rule's ``threads:`` as the workflow's rule files give it, read on the config."""

import importlib.util
from pathlib import Path

import pytest

from webbflow.jobserver import THREAD_ENV

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_job_overhead", REPO / "benchmarks" / "bench_job_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rule_threads_follow_the_config(bench):
    """The rules whose ``threads:`` name the config take its values (each its own key), the others
    Snakemake's 1; the shipped config gives coron3 2 (align_refs and the contrast curve use them) and 1 elsewhere."""
    config = bench.workflow_config(REPO / "config" / "demo-coron.yaml")
    rules = ("detector1", "image2", "spec2", "tso3", "tso3_phot", "image3", "coron3", "qa_exposures")
    assert {rule: bench.rule_threads(rule, config) for rule in rules} == {**dict.fromkeys(rules, 1), "coron3": 2}
    config["threads"] = {"detector1": 3, "image3": 2, "coron3": 5}
    got = {rule: bench.rule_threads(rule, config) for rule in rules}
    assert got == {**dict.fromkeys(rules, 1), "detector1": 3, "image3": 2, "coron3": 5}
    with pytest.raises(KeyError, match="no rule 'detector2'"):
        bench.rule_threads("detector2", config)


def test_workflow_env_sets_every_thread_variable(bench):
    config = bench.workflow_config()
    config["threads"]["coron3"] = 4
    base = {"PYTHONPATH": "/elsewhere/src", "OMP_NUM_THREADS": "16", "HOME": "/home/x"}
    env = bench.workflow_env("coron3", base, config)
    assert {name: env[name] for name in THREAD_ENV} == dict.fromkeys(THREAD_ENV, "4")
    assert env["PYTHONPATH"] == "/elsewhere/src" and env["HOME"] == "/home/x" and base["OMP_NUM_THREADS"] == "16"
    # by default: this checkout's sources first, the shipped config's threads
    env = bench.workflow_env("spec2")
    assert env["PYTHONPATH"].split(":")[0] == str(REPO / "src") and env["OMP_NUM_THREADS"] == "1"
    assert bench.job_rule("tso3-phot") == "tso3_phot" and bench.job_rule("detector1-coron") == "detector1"
