"""The job adapter (webbflow.workflow.run_job, webbflow.jobs) and the shared file plumbing (webbflow.io.files)."""

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import webbflow
from webbflow import jobs
from webbflow.io.errors import InputError
from webbflow.io.files import atomic_output, atomic_write_text, file_digests
from webbflow.workflow import run_job

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A stand-in for the object Snakemake injects (``log``, and ``config`` with the warm job server
    off: these tests are of the in-process job; tests/test_jobserver.py runs the served one); logging
    restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.delenv("WEBBFLOW_JOB_SERVER", raising=False)
    yield SimpleNamespace(log=[str(tmp_path / "job.log")], config={"jobs": {"warm_server": False}})
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


def test_run_job_success_runs_the_job_and_logs_into_the_job_log(job, tmp_path):
    def work(path, text):
        logging.getLogger("webbflow.demo").info("writing %s", text)
        Path(path).write_text(text)
        return 42

    assert run_job(job, "demo", work, tmp_path / "out.txt", text="hello") == 42
    assert (tmp_path / "out.txt").read_text() == "hello"
    lines = Path(job.log[0]).read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" INFO webbflow.demo: writing hello")


def test_run_job_by_name_imports_the_job_where_it_runs(job, tmp_path):
    """A job named ``"module:function"`` (a stage rule's adapter) runs as the function itself would."""
    content = {"asn_id": "a1", "products": [{"name": "p", "members": [{"expname": "x_cal.fits"}]}]}
    run_job(job, "image3_asn", "webbflow.jobs:image3_asn", json.dumps(content), tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == content
    assert Path(job.log[0]).read_text().strip().endswith("INFO webbflow.asn: p: 1 members")


def _vm(field):
    """This process's /proc/self/status ``field`` (VmRSS, VmHWM) in MiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_run_job_appends_its_own_peak_memory_under_webbflow_job_stats(job, tmp_path, monkeypatch):
    """bench_program.py's per-job figures: the job's high-water mark (VmHWM), not its RSS at the end."""
    import numpy as np

    stats = tmp_path / "stats.jsonl"
    monkeypatch.setenv("WEBBFLOW_JOB_STATS", str(stats))
    before = _vm("VmRSS")

    def work():
        block = np.ones(96 * 2**20 // 8)  # 96 MiB touched, then freed before the job returns
        return float(block.sum())

    run_job(job, "image3", work)
    run_job(job, "image2", lambda: None)
    rows = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [r["job"] for r in rows] == ["image3", "image2"] and rows[0]["log"] == job.log[0]
    assert rows[0]["peak_rss_mib"] >= before + 0.9 * 96  # the peak, though the block is gone
    assert rows[0]["peak_rss_mib"] <= _vm("VmHWM") + 1e-6
    assert 0 < rows[0]["wall_s"] <= rows[1]["wall_s"]  # from the process's start


@pytest.mark.parametrize(("rule", "outputs", "kind"), [
    ("image2", ["a_calints.fits"], "image2_ints"), ("image2_variant", ["v/a_cal.fits"], "image2"),
    ("tso3_phot", ["p_phot.ecsv"], "tso3_phot"), (None, [], None)])
def test_run_job_hands_the_server_its_rules_kind(job, monkeypatch, rule, outputs, kind):
    """The served job's kind is its rule's and outputs' (webbflow.jobserver.job_kind), whatever the job
    function and its arguments; an object without a rule: no kind.  The server not reachable (None), the
    job runs in-process."""
    from webbflow import jobserver

    sent = []
    monkeypatch.setattr(jobserver, "submit", lambda *args, **kwargs: sent.append(kwargs.get("kind", "?")))
    served = SimpleNamespace(log=job.log, config={"jobs": {"warm_server": True}})
    if rule is not None:
        served.rule, served.output = rule, outputs
    assert run_job(served, "image2", lambda a, b: 7, "x_rateints.fits", "x_cal.fits") == 7
    assert sent == [kind]


def test_run_job_input_error_is_one_line_and_a_nonzero_exit(job):
    def bad():
        raise InputError("x_uncal.fits", "NGROUPS is 0", "give an exposure with groups")

    with pytest.raises(SystemExit) as caught:
        run_job(job, "detector1", bad)
    message = "x_uncal.fits: NGROUPS is 0. Fix: give an exposure with groups"
    assert caught.value.code == f"webbflow detector1 failed: {message}"
    text = Path(job.log[0]).read_text()
    assert text.count("\n") == 1 and "Traceback" not in text
    assert f" ERROR webbflow.detector1: {message}" in text


def test_run_job_other_errors_are_logged_with_traceback_and_reraised(job):
    def broken():
        return {}["missing"]

    with pytest.raises(KeyError, match="missing"):
        run_job(job, "image2", broken)
    text = Path(job.log[0]).read_text()
    assert " ERROR webbflow.image2: image2 failed" in text
    assert "Traceback (most recent call last)" in text and "in broken" in text and "KeyError: 'missing'" in text


def test_atomic_output_replaces_on_success(tmp_path):
    path = tmp_path / "sub" / "product.fits"
    with atomic_output(path) as tmp:
        # the temporary file keeps the final name (stdatamodels records it as FILENAME) in a hidden folder
        assert tmp.name == "product.fits" and tmp.parent.parent == path.parent and tmp.parent.name.startswith(".")
        tmp.write_bytes(b"new")
        assert not path.exists()  # nothing under the final name until the block succeeded
    assert path.read_bytes() == b"new"
    with atomic_output(path) as tmp:
        tmp.write_bytes(b"newer")
        assert path.read_bytes() == b"new"
    assert path.read_bytes() == b"newer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["product.fits"]


def test_atomic_output_failure_leaves_no_file_and_no_part(tmp_path):
    path = tmp_path / "cat.ecsv"
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half a table")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
    with pytest.raises(FileNotFoundError), atomic_output(tmp_path / "never.txt"):
        pass  # a writer that wrote nothing is an error, not an empty product
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_write_text_bytes(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "lock.json", '{"x": 1}\n')
    assert path.read_bytes() == b'{"x": 1}\n' and os.listdir(path.parent) == ["lock.json"]


def test_file_digests_match_hashlib(tmp_path):
    data = bytes(range(256)) * 9000 + b"tail"  # > 2 read blocks
    path = tmp_path / "ref.fits"
    path.write_bytes(data)
    assert file_digests(path) == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert file_digests(path, ("sha1", "sha256", "md5")) == {
        "sha1": hashlib.sha1(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(), "size": len(data)}
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_digests(empty, ("sha1",)) == {"sha1": hashlib.sha1(b"").hexdigest(), "size": 0}


def test_stage_provenance_is_what_the_scripts_recorded():
    """The digest is sha256 of the canonical JSON of steps + reference names (None-valued types left out)."""
    steps = {"jump": {"rejection_threshold": 4.0}, "dq_init": {"skip": False}}
    references = json.dumps({"gain": "/c/refs/jwst_nircam_gain_0001.fits", "dark": None})
    expected = hashlib.sha256(json.dumps({"steps": steps, "references": {"gain": "jwst_nircam_gain_0001.fits"}},
                                         sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    provenance = jobs.stage_provenance(steps, references=jobs.reference_names(json.loads(references)))
    assert provenance == {"webbflow_version": webbflow.__version__, "step_parameters": steps, "config_digest": expected}


def test_job_imports_are_light():
    """The adapter, the job module, the job client and the file plumbing load no numpy or astropy (every
    job pays them)."""
    code = ("import sys, webbflow.workflow, webbflow.jobs, webbflow.jobclient, webbflow.io.files; "
            "print(sorted(m for m in ('numpy', 'astropy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_planning_imports_no_wcs_or_datamodels(tmp_path):
    """What the Snakefile imports to plan a run, and a reference folder scan with an ASDF reference in
    it, load no gwcs, astropy.modeling, stdatamodels or asdf extensions (~1-2 s of CPU per process)."""
    from webbflow.simulate.detectors import subarray_geometry
    from webbflow.simulate.stage2_refs import write_stage2_references

    write_stage2_references(tmp_path, "NRCA1", subarray_geometry("NRCA1", "SUB160"), "F200W", "CLEAR", 1)
    code = ("import sys, webbflow.config, webbflow.exposures, webbflow.associations, webbflow.refs.identity; "
            "from webbflow.refs import scan_reference_dir; "
            "rows = scan_reference_dir(sys.argv[1]); assert any(r['REFTYPE'] == 'distortion' for r in rows); "
            "print(sorted(m for m in ('gwcs', 'astropy.modeling', 'stdatamodels', 'asdf_astropy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "refs")], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_stage_imports_leave_out_what_default_jobs_do_not_use():
    """image2, tso3 and coron3 import neither numba (~0.4 s CPU: only destripe, wisps and long time
    series use it) nor scipy.stats (coron3's beyond-jwst contrast curves); image3 no numba either."""
    code = ("import sys, webbflow.stages.image2, webbflow.stages.tso3, webbflow.stages.coron3; "
            "print(sorted(m for m in ('numba', 'scipy.stats') if m in sys.modules)); "
            "import webbflow.stages.image3; print(sorted(m for m in ('numba',) if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "[]"]


def test_lazy_njit_compiles_on_first_call_as_njit_would():
    """webbflow.steps._jit.lazy_njit: no numba dispatcher until the first call, then the same result as
    the Python function (a kernel numba compiles: integer loop)."""
    from webbflow.steps._jit import lazy_njit

    def total(n):
        s = 0
        for i in range(n):
            s += i * i
        return s

    kernel = lazy_njit(cache=False)(total)
    assert kernel.dispatcher is None and kernel.py_func is total
    assert kernel(1000) == total(1000) == 332833500
    assert type(kernel.dispatcher).__name__ == "CPUDispatcher"


def test_lazy_njit_dispatcher_made_before_the_first_call():
    """webbflow.steps._jit.dispatcher (a job server's warm-up): the dispatcher the first call would make,
    with the kernel's options, kept for every later call."""
    from webbflow.steps._jit import dispatcher, lazy_njit

    def scaled(x, k):
        return x * k + 1.0

    kernel = lazy_njit(cache=False, error_model="numpy")(scaled)
    made = dispatcher(kernel)
    assert kernel.dispatcher is made and dispatcher(kernel) is made and made.py_func is scaled
    assert made.targetoptions["error_model"] == "numpy" and not made.signatures
    assert kernel(2.5, 3.0) == scaled(2.5, 3.0) == 8.5
    assert kernel.dispatcher is made and len(made.signatures) == 1


def test_jit_kernels_of_a_module_lazy_ones_as_dispatchers():
    """webbflow.steps._jit.kernels (a job server's warm-up): a module's own kernels, plain and parallel
    ``@njit`` ones and ``@lazy_njit`` ones as their dispatchers (made, nothing compiled); a kernel it
    imports from another module and its plain functions are left out."""
    import types

    from numba import njit

    from webbflow.steps import _jit, _ramp_numba

    module = types.ModuleType("wf_kernels_test")

    def plain(x):
        return x + 1

    def parallel(x):
        return x * 2

    def lazy(x):
        return x - 1

    for fn in (plain, parallel, lazy):
        fn.__module__ = module.__name__
    module.plain, module.parallel = njit(cache=False)(plain), njit(cache=False, parallel=True)(parallel)
    module.lazy, module.helper = _jit.lazy_njit(cache=False, error_model="numpy")(lazy), plain
    module.imported = next(v for v in vars(_ramp_numba).values() if isinstance(v, _jit.Kernel))
    found = _jit.kernels(module)
    assert list(found) == ["plain", "parallel", "lazy"]
    assert found["lazy"] is module.lazy.dispatcher and found["lazy"].py_func is lazy and not found["lazy"].signatures
    assert found["lazy"].targetoptions["error_model"] == "numpy" and found["parallel"].targetoptions["parallel"]
    assert module.lazy(3) == 2 and found["plain"] is module.plain


def test_script_finds_src_without_install(tmp_path):
    """A workflow script run where webbflow is not installed (``python -S``: no site-packages) uses the clone's src/."""
    content = {"asn_id": "a3001", "products": [{"name": "p", "members": [{"expname": "x_cal.fits"}] * 3}]}
    sm = {"scriptdir": str(REPO / "workflow" / "scripts"), "log": [str(tmp_path / "asn.log")],
          "params": {"content": json.dumps(content)}, "output": {"asn": str(tmp_path / "asn" / "p_asn.json")}}
    code = ("import json, runpy, sys; from types import SimpleNamespace as N; d = json.loads(sys.argv[1]); "
            "sm = N(scriptdir=d['scriptdir'], log=d['log'], params=N(**d['params']), output=N(**d['output'])); "
            "runpy.run_path(sys.argv[2], init_globals={'snakemake': sm}); "
            "print(sys.modules['webbflow'].__file__)")
    script = REPO / "workflow" / "scripts" / "image3_asn.py"
    out = subprocess.run([sys.executable, "-S", "-c", code, json.dumps(sm), str(script)],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert Path(out.strip()) == REPO / "src" / "webbflow" / "__init__.py"
    assert (tmp_path / "asn" / "p_asn.json").read_text() == json.dumps(content, indent=2) + "\n"
    assert (tmp_path / "asn.log").read_text().strip().endswith("INFO webbflow.asn: p: 3 members")


def test_atomic_output_removes_only_stale_parts_of_its_name(tmp_path):
    """A writer killed by SIGKILL leaves ``.<name>.<host>-<pid>.<random>.part``: the next write of that
    name removes it once its pid is gone, and keeps every other writer's folder."""
    from webbflow.io.files import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists
    path = tmp_path / "x_rate.fits"

    def part(label, name=path.name, host=_HOST):
        folder = tmp_path / f".{name}.{host}-{label}.part"
        folder.mkdir()
        (folder / name).write_bytes(b"half a product")
        return folder

    stale = [part(f"{dead.pid}.k1ll3d"), part(f"{dead.pid}.s3cond")]
    kept = [part(f"{os.getpid()}.l1ve"),  # a live writer (this process) of the same name
            part(f"{dead.pid}.0th3r", name="x_rateints.fits"),  # another name's leftover: its own write's job
            part(f"{dead.pid}.n0de", host="another-node"),  # another host's pid means nothing here
            tmp_path / ".x_rate.fits.abc123.part"]  # no writer in the name (older webbflow): kept
    kept[-1].mkdir()
    with atomic_output(path) as tmp:
        tmp.write_bytes(b"product")
    assert path.read_bytes() == b"product"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name] + [p.name for p in kept])
