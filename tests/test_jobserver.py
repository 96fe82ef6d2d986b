"""The warm job server (webbflow.jobserver): same products, messages, exit statuses and signals as a job
run in its own process, and no server that runs old code, outlives its idle time or forks with threads.

Every job here is a client process started as Snakemake starts a job script (``python -c`` calling
:func:`webbflow.workflow.run_job`); its servers live in a private folder of the test's own, and every
server the tests started is killed at the end.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from webbflow import jobmode, jobserver

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open") or not Path("/proc/self/status").exists(),
                                reason="Linux only (pidfd_open, /proc)")

REPO = Path(__file__).resolve().parents[1]

# A job script as Snakemake runs it: ``snakemake.log``/``config`` stand-ins, then run_job.
_CLIENT = r"""
import json, sys
from types import SimpleNamespace
sys.path.insert(0, sys.argv[1])  # the test's helper jobs (found by the child through the client's sys.path)
import importlib
from webbflow.workflow import run_job
module, name, log, kwargs = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
fn = getattr(importlib.import_module(module), name)
run_job(SimpleNamespace(log=[log], config={}), name, fn, **kwargs)
"""

_HELPERS = '''
import os, time
from pathlib import Path

def write_pid_and_sleep(pid_file, seconds=120):
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)

def report(out):
    import threading
    from webbflow import jobserver
    Path(out).write_text(f"{os.getpid()} {os.getppid()} {threading.active_count()}")

def warm_state(out):
    import json
    from webbflow import jobserver
    Path(out).write_text(json.dumps(jobserver.warm_state()))

def thread_counts(out):
    import ctypes, json
    import numpy, scipy.linalg  # both OpenBLAS libraries loaded (in the server already, if warm)
    blas = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split(None, 5)[-1]
        if "openblas" in path.rsplit("/", 1)[-1].lower() and path not in blas:
            lib = ctypes.CDLL(path)
            for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads"):
                if hasattr(lib, name):
                    blas[path] = getattr(lib, name)()
    Path(out).write_text(json.dumps({"server": os.getppid(), "omp": os.environ.get("OMP_NUM_THREADS"),
                                     "blas": blas}))
'''


def _servers(folder):
    """pids of the servers listening in ``folder`` (by their command lines)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(str(folder).encode() in part for part in cmd) and b"webbflow.jobserver" in b" ".join(cmd):
                found.append(int(proc.name))
    return found


def _gone(pid, timeout=60.0):
    """Whether process ``pid`` has ended (or is a zombie) within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def server_env():
    """A private server folder (short: a socket path has ~100 characters at most) and an environment
    whose jobs use it, shared by the module's tests (one warm server); every server started in it is
    killed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="wfjs-", dir="/tmp"))
    helpers = folder / "helpers"
    helpers.mkdir()
    (helpers / "wfjs_helpers.py").write_text(_HELPERS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(jobserver.DIR_ENV, str(folder / "sock"))
        mp.setenv(jobserver.IDLE_ENV, "120")
        mp.setenv("OMP_NUM_THREADS", "1")  # as Snakemake sets it for a one-thread job
        mp.delenv("WEBBFLOW_JOB_STATS", raising=False)
        try:
            yield folder
        finally:
            for pid in _servers(folder):
                os.kill(pid, signal.SIGKILL)
                _gone(pid, 10)
            shutil.rmtree(folder, ignore_errors=True)


def _client(folder, module, name, log, mode, popen=False, **kwargs):
    """Run one job as its own process, ``WEBBFLOW_JOB_SERVER=mode``."""
    env = {**os.environ, jobserver.ENV: mode}
    cmd = [sys.executable, "-c", _CLIENT, str(folder / "helpers"), module, name, str(log), json.dumps(kwargs)]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


# --- products and messages --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sub160(tmp_path_factory):
    """One demo SUB160 F200W exposure (1 integration) with its stage-1 and stage-2 references."""
    from webbflow.simulate.presets import preset_specs, run_specs

    data = tmp_path_factory.mktemp("jobserver_sub160")
    specs = [s for s in preset_specs("demo-imaging") if s.filter == "F200W" and s.detector == "NRCA1"]
    run_specs([replace(specs[0], nints=1)], data)
    return data


def _references(uncal, refs, reftypes):
    from astropy.io import fits

    from webbflow.refs import select_references

    chosen = select_references(fits.getheader(uncal), refs, None, reftypes)
    return {k: (str(v) if v else None) for k, v in chosen.items()}


GRISM = ("detector1", "spec2", "tso3")


@pytest.mark.parametrize("scope", [None, GRISM], ids=["every-kind", "grism-scope"])
def test_detector1_and_image2_products_are_the_same_through_the_server(server_env, sub160, tmp_path, make,
                                                                       monkeypatch, scope):
    """Products, logs and figures of jobs through the server as in their own processes; with a server
    warmed for a grism run only, its image2 job (another kind) too, in a server that has not imported
    image3, photutils or matplotlib."""
    from webbflow.refs.select import DETECTOR1_REFTYPES, IMAGE2_REFTYPES

    server = None
    if scope is not None:  # a server of its own, warmed for the grism kinds (as the onstart starts it)
        monkeypatch.setenv(jobserver.DIR_ENV, str(server_env / "grism"))
        jobserver.start(jobs=scope)
        (server,) = _servers(server_env / "grism")
        # it listens once detector1's imports are done and warms for the rest between jobs: a job
        # of no planned kind (this one) is not kept waiting for them
        states, end = [], time.monotonic() + 300
        while not states or states[-1]["pending"] and time.monotonic() < end:
            run = _client(server_env, "wfjs_helpers", "warm_state", tmp_path / "w.log", "wait",
                          out=str(tmp_path / "w"))
            assert run.returncode == 0, run.stderr[-3000:]
            states.append(json.loads((tmp_path / "w").read_text()))
        state = states[-1]
        assert not state["pending"] and "webbflow.stages.detector1" in states[0]["modules"]
        assert "import webbflow.stages.detector1" not in states[0]["pending"]
        assert state["scope"] == sorted(scope)
        # the warm-up's objects frozen before the fork: a child's collections leave their pages shared
        assert state["frozen"] > 100_000, state["frozen"]
        assert {"webbflow.stages.detector1", "webbflow.stages.spec2", "webbflow.stages.tso3"} <= set(state["modules"])
        skipped = {"webbflow.stages.image3", "webbflow.stages.image2", "photutils", "matplotlib"}
        assert not skipped & set(state["modules"])
    monkeypatch.setenv("WEBBFLOW_JOB_STATS", str(tmp_path / "stats.jsonl"))
    (uncal,) = sorted((sub160 / "uncal").glob("*_uncal.fits"))
    root = uncal.name.removesuffix("_uncal.fits")
    refs1 = _references(uncal, sub160 / "refs", DETECTOR1_REFTYPES)
    refs2 = {k: v for k, v in _references(uncal, sub160 / "refs", IMAGE2_REFTYPES).items() if v}
    from astropy.io import fits

    exp_type = fits.getval(uncal, "EXP_TYPE")
    for mode in ("0", "wait"):
        out = tmp_path / mode
        (out / "logs").mkdir(parents=True)
        rate = out / f"{root}_rate.fits"
        d1 = _client(server_env, "webbflow.jobs", "detector1", out / "logs" / "d1.log", mode, uncal=str(uncal),
                     rate=str(rate), rateints=str(out / f"{root}_rateints.fits"), steps={}, references=refs1,
                     exp_types=[exp_type])
        assert d1.returncode == 0, d1.stderr[-3000:]
        i2 = _client(server_env, "webbflow.jobs", "image2", out / "logs" / "i2.log", mode, rate=str(rate),
                     cal=str(out / f"{root}_cal.fits"), steps={}, references=refs2)
        assert i2.returncode == 0, i2.stderr[-3000:]
        for log in ("d1.log", "i2.log"):
            assert "job server not used" not in (out / "logs" / log).read_text()
    differences, compared = make.compare_products(tmp_path / "0", tmp_path / "wait")
    assert compared == 3 and not differences, differences  # rate, rateints, cal
    stats = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [s.get("server", False) for s in stats] == [False, False, True, True]
    if server is not None:
        assert [s["server_pid"] for s in stats[2:]] == [server, server]
    for s in stats:  # both memory figures of every job; a child's private pages are below its peak RSS
        assert 0 < s["uss_mib"] <= s["pss_mib"] <= s["peak_rss_mib"] + 1e-6
    # a child maps the warm server's anonymous memory (its imports' objects: tens of MiB) from its fork,
    # all of it part of its peak RSS; an in-process job has no server to inherit from
    assert [("inherited_mib" in s) for s in stats] == [False, False, True, True]
    for s in stats[2:]:
        assert 10 < s["inherited_mib"] <= s["peak_rss_mib"] + 1e-6, s


def test_input_error_same_message_log_and_exit(server_env, tmp_path):
    missing = tmp_path / "nowhere_rate.fits"
    runs = {}
    for mode in ("0", "wait"):
        log = tmp_path / f"{mode}.log"
        runs[mode] = (_client(server_env, "webbflow.jobs", "image2", log, mode, rate=str(missing),
                              cal=str(tmp_path / f"{mode}_cal.fits"), steps={}, references={}),
                      [line.split(" ", 2)[2] for line in log.read_text().splitlines()])  # without the time
    (off, off_log), (on, on_log) = runs["0"], runs["wait"]
    assert off.returncode == on.returncode == 1
    assert off.stderr.strip().startswith("webbflow image2 failed:") and "nowhere_rate.fits" in off.stderr
    assert on.stderr == off.stderr and on.stdout == off.stdout
    assert on_log == off_log and any(" ERROR " in f" {line}" for line in on_log)


# --- stale code, idle exit, threads, signals --------------------------------------------------------

def test_edited_sources_start_a_new_server_that_runs_the_new_code(server_env, tmp_path, monkeypatch):
    """A copy of the package with a probe job: its edit must be seen by the next job, by a new server."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "webbflow", src / "webbflow", ignore=shutil.ignore_patterns("__pycache__"))
    probe = src / "webbflow" / "wfjs_probe.py"
    monkeypatch.setenv("PYTHONPATH", str(src))
    monkeypatch.setenv(jobserver.DIR_ENV, str(server_env / "stale"))
    outs = []
    for version in ("one", "two"):
        probe.write_text(f"from pathlib import Path\n\ndef probe(out):\n    Path(out).write_text({version!r})\n")
        out = tmp_path / f"{version}.txt"
        run = _client(server_env, "webbflow.wfjs_probe", "probe", tmp_path / "probe.log", "wait", out=str(out))
        assert run.returncode == 0, run.stderr[-3000:]
        outs.append(out.read_text())
        time.sleep(0.05)  # the edit gets another mtime even on a coarse clock
    assert outs == ["one", "two"]
    assert "job server not used" not in (tmp_path / "probe.log").read_text()
    assert len(list((server_env / "stale").glob("*.sock"))) == 2
    assert len(_servers(server_env / "stale")) == 2


def test_server_exits_after_its_idle_time(server_env, tmp_path, monkeypatch):
    monkeypatch.setenv(jobserver.DIR_ENV, str(server_env / "idle"))  # a server of its own
    monkeypatch.setenv(jobserver.IDLE_ENV, "1")
    run = _client(server_env, "wfjs_helpers", "report", tmp_path / "r.log", "wait", out=str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr[-3000:]
    servers = _servers(server_env / "idle")
    _, parent, _ = map(int, (tmp_path / "r").read_text().split())
    assert len(servers) <= 1 and (not servers or parent == servers[0])  # the job ran in a child of the server
    assert all(_gone(p) for p in servers)
    assert not list((server_env / "idle").glob("*.sock"))  # the socket went with it


def test_server_forks_only_single_threaded(server_env, tmp_path):
    """The warm server has one thread (no numba or BLAS workers) when it forks; a thread refuses forks."""
    run = _client(server_env, "wfjs_helpers", "report", tmp_path / "r.log", "wait", out=str(tmp_path / "r"))
    assert run.returncode == 0, run.stderr[-3000:]
    (server,) = _servers(server_env / "sock")
    assert len(os.listdir(f"/proc/{server}/task")) == 1
    _, parent, threads = map(int, (tmp_path / "r").read_text().split())
    assert parent == server and threads == 1
    # fork_safe itself, in a fresh interpreter: this pytest process may already run numba's workers
    # (earlier tests' parallel kernels), which is exactly what fork_safe must refuse.
    check = (
        "import threading\n"
        "from webbflow import jobserver\n"
        "assert jobserver.fork_safe()\n"
        "stop = threading.Event(); worker = threading.Thread(target=stop.wait); worker.start()\n"
        "safe = jobserver.fork_safe(); stop.set(); worker.join()\n"
        "assert not safe\n"
    )
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_client_stops_the_child_as_in_process(server_env, tmp_path, sig):
    codes = {}
    for mode in ("0", "wait"):
        pid_file = tmp_path / f"{mode}.pid"
        client = _client(server_env, "wfjs_helpers", "write_pid_and_sleep", tmp_path / f"{mode}.log", mode,
                         popen=True, pid_file=str(pid_file))
        end = time.monotonic() + 300
        while not pid_file.exists() and client.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert pid_file.exists(), client.communicate()[1][-3000:]
        job = int(pid_file.read_text())
        assert (job == client.pid) == (mode == "0")
        client.send_signal(sig)
        client.communicate(timeout=60)
        codes[mode] = client.returncode
        assert _gone(job, 30)
    assert codes["wait"] == codes["0"] == -sig


def test_killed_client_leaves_no_child(server_env, tmp_path):
    pid_file = tmp_path / "job.pid"
    client = _client(server_env, "wfjs_helpers", "write_pid_and_sleep", tmp_path / "job.log", "wait", popen=True,
                     pid_file=str(pid_file))
    end = time.monotonic() + 300
    while not pid_file.exists() and client.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    assert pid_file.exists(), client.communicate()[1][-3000:]
    job = int(pid_file.read_text())
    assert job != client.pid
    client.kill()
    client.communicate()
    assert _gone(job, 30)


_SNAKEFILE = """
rule all:
    input: "a.json"

rule asn:
    output: "a.json"
    log: "a.log"
    params: content={"asn_id": "a1", "products": [{"name": "p", "members": [{"expname": "x"}]}]}
    script: "job.py"
"""

_SCRIPT = """
import sys
sys.path.append(SRC)
from webbflow import jobs
from webbflow.workflow import run_job

run_job(snakemake, "image3_asn", jobs.image3_asn, snakemake.params.content, snakemake.output[0])
"""


def test_snakemake_script_job_runs_in_the_server(server_env, tmp_path, monkeypatch):
    """A job as Snakemake's ``script:`` runs it (its preamble changes sys.path) reaches the server."""
    stats = tmp_path / "stats.jsonl"
    (tmp_path / "Snakefile").write_text(_SNAKEFILE)
    (tmp_path / "job.py").write_text(_SCRIPT.replace("SRC", repr(str(REPO / "src"))))
    env = {**os.environ, jobserver.ENV: "wait", "WEBBFLOW_JOB_STATS": str(stats)}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "-d", str(tmp_path),
                           "--cores", "1"], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "a.json").read_text())["asn_id"] == "a1"
    assert "job server not used" not in (tmp_path / "a.log").read_text()
    (line,) = stats.read_text().splitlines()
    assert json.loads(line)["server"] is True


_SHELL_SNAKEFILE = """
import sys
sys.path.insert(0, SRC)
from webbflow.jobclient import shell_command

rule all:
    input: "a.json"

rule asn:
    input: expand("in/x_{i:05d}_with_a_long_name_cal.fits", i=range(N))
    output: asn="a.json"
    log: "a.log"
    params: content={"asn_id": "a1", "products": [{"name": "p", "members": [{"expname": "x"}]}]}
DIRECTIVE
"""


def test_snakemake_shell_job_runs_in_the_server(server_env, tmp_path, monkeypatch):
    """A stage rule's job as ``shell:`` runs it (webbflow.jobclient: the adapter script on its job file)
    reaches the server, with an input list longer than a command-line argument may be; results the
    rule made as a ``script:`` rule, and its own, are not made again."""
    stats, n = tmp_path / "stats.jsonl", 3000
    (tmp_path / "in").mkdir()
    for i in range(n):
        (tmp_path / "in" / f"x_{i:05d}_with_a_long_name_cal.fits").touch()
    assert n * len(str(tmp_path / "in" / "x_00000_with_a_long_name_cal.fits")) > 128 * 1024
    rules, scripts = tmp_path / "workflow" / "rules", tmp_path / "workflow" / "scripts"
    rules.mkdir(parents=True)
    scripts.mkdir()
    shutil.copy(REPO / "workflow" / "scripts" / "image3_asn.py", scripts)
    text = _SHELL_SNAKEFILE.replace("SRC", repr(str(REPO / "src"))).replace("N)", f"{n})")
    directives = {"script": '    script:\n        "../scripts/image3_asn.py"\n',
                  "shell": f"    shell:\n        shell_command(locals(), {str(scripts / 'image3_asn.py')!r}, config)\n"}
    env = {**os.environ, jobserver.ENV: "wait", "WEBBFLOW_JOB_STATS": str(stats)}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(rules / "Snakefile"), "-d", str(tmp_path), "--cores", "1"]

    def run(directive):
        (rules / "Snakefile").write_text(text.replace("DIRECTIVE", directives[directive]))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    run("script")  # the rule as it was
    assert "Nothing to be done" in run("shell")
    (tmp_path / "a.json").unlink()
    stats.unlink()
    run("shell")
    assert json.loads((tmp_path / "a.json").read_text())["asn_id"] == "a1"
    assert "job server not used" not in (tmp_path / "a.log").read_text()
    (line,) = stats.read_text().splitlines()
    assert json.loads(line)["server"] is True
    assert not list((tmp_path / ".snakemake" / "webbflow" / "jobs").iterdir())  # the job file was removed
    assert "Nothing to be done" in run("shell")


def test_served_client_imports_no_numpy_astropy_or_snakemake(server_env, tmp_path, monkeypatch):
    """``python workflow/scripts/<job>.py <job file>`` with the server up: the client process imports
    the standard library and webbflow's light modules only (``-X importtime``)."""
    from webbflow.jobclient import Names, write_job

    monkeypatch.chdir(tmp_path)
    content = {"asn_id": "a1", "products": [{"name": "p", "members": [{"expname": "x"}]}]}
    namespace = {"rule": "image3_asn", "threads": 1, "log": Names([str(tmp_path / "a.log")]),
                 "params": Names([content], {"content": content}),
                 "output": Names([str(tmp_path / "a.json")], {"asn": str(tmp_path / "a.json")}),
                 **{field: Names() for field in ("input", "wildcards", "resources")}}
    stats = tmp_path / "stats.jsonl"
    env = {**os.environ, jobserver.ENV: "wait", "WEBBFLOW_JOB_STATS": str(stats)}
    script = REPO / "workflow" / "scripts" / "image3_asn.py"
    for _ in range(2):  # the first may start the server
        proc = subprocess.run([sys.executable, "-X", "importtime", str(script), write_job(namespace, {})],
                              capture_output=True, text=True, env=env, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(stats.read_text().splitlines()[-1])["server"] is True
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "webbflow.jobclient" in imported and "webbflow.jobserver" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("numpy", "astropy", "snakemake", "webbflow_jobs")}
    assert not heavy and "webbflow.jobs" not in imported and "logging" not in imported


def test_no_server_means_in_process(tmp_path, monkeypatch):
    """A folder the server may not use (not private): the job runs in-process, one log line says why."""
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    monkeypatch.setenv(jobserver.DIR_ENV, str(folder))
    run = _client(tmp_path, "webbflow.jobs", "image3_asn", tmp_path / "j.log", "wait",
                  content={"asn_id": "a1", "products": [{"name": "p", "members": [{"expname": "x"}]}]},
                  asn=str(tmp_path / "a.json"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "a.json").read_text())["asn_id"] == "a1"
    log = (tmp_path / "j.log").read_text()
    assert "job server not used (PermissionError" in log and "running in-process" in log


def test_config_key_and_environment(monkeypatch):
    """true/false force, auto (the default) is on for a local run and off in a batch job; the
    environment variable wins; webbflow.workflow asks the same function."""
    from webbflow import jobmode, workflow

    assert jobserver.wanted is jobmode.wanted is workflow.wanted
    local, slurm = {}, {"SLURM_JOB_ID": "42"}
    for environ in (local, slurm, {"PBS_JOBID": "7.pbs"}, {"LSB_JOBID": "9"}):
        assert jobserver.wanted({"jobs": {"warm_server": True}}, environ)
        assert jobserver.wanted({"jobs": {"warm_server": "true"}}, environ)  # as --config gives it
        assert not jobserver.wanted({"jobs": {"warm_server": False}}, environ)
        assert not jobserver.wanted({"jobs": {"warm_server": "false"}}, environ)
        assert not jobserver.wanted({}, {**environ, jobmode.ENV: "0"})
        assert jobserver.wanted({"jobs": {"warm_server": False}}, {**environ, jobmode.ENV: "1"})
    for config in (None, {}, {"jobs": {}}, {"jobs": {"warm_server": "auto"}}):
        assert jobserver.wanted(config, local) is hasattr(os, "pidfd_open")
        for batch in ({"SLURM_JOB_ID": "42"}, {"PBS_JOBID": "7.pbs"}, {"LSB_JOBID": "9"}):
            assert not jobserver.wanted(config, batch)
        assert not jobserver.wanted({"jobs": {"warm_server": True}}, {jobmode.ENV: "auto", **slurm})
    monkeypatch.setenv(jobserver.ENV, "0")
    assert not jobserver.wanted({"jobs": {"warm_server": True}})
    monkeypatch.setenv(jobserver.ENV, "1")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert jobserver.wanted({})

def test_run_forked_parts_and_a_failed_helper(tmp_path):
    """jobmode.run_forked: every part runs once, the helpers' in other processes (their files written
    there); a helper that fails has its part run again in the caller, whose index it returns."""
    import os

    if not jobmode.fork_safe():
        pytest.skip("this process runs numba's workers (an earlier test's parallel kernels): no fork")
    me = os.getpid()

    def write(name, fail_in_helper=False):
        def part():
            if fail_in_helper and os.getpid() != me:
                raise RuntimeError("helper fails")
            (tmp_path / name).write_text(str(os.getpid()))
        return part

    assert jobmode.run_forked([write("a"), write("b"), write("c", fail_in_helper=True)]) == [2]
    pids = {name: int((tmp_path / name).read_text()) for name in "abc"}
    assert pids["a"] == me and pids["c"] == me and pids["b"] != me


def test_start_early_starts_the_server_every_job_uses(server_env, tmp_path, monkeypatch):
    """The workflow's onstart starts the server before the first job, under the key a job computes in
    the environment Snakemake gives it, whatever its thread counts (not part of the key)."""
    for name in jobserver.THREAD_ENV:  # this process plans; its jobs get these from Snakemake
        monkeypatch.delenv(name, raising=False)
    said = jobserver.start_early()
    key = jobserver.server_key()
    assert len(said) == 1 and key in said[0]
    for n in ("1", "2", "16"):
        assert jobserver.server_key({**os.environ, **{name: n for name in jobserver.THREAD_ENV}}) == key
    assert key != jobserver.server_key({**os.environ, "NUMBA_NUM_THREADS": "1"})
    path = Path(os.environ[jobserver.DIR_ENV]) / f"{key}.sock"
    end = time.monotonic() + jobserver.START_TIMEOUT_S
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert path.exists()
    # a job of one thread, in the environment Snakemake gives it, finds it listening and runs in it
    # without waiting for a start
    for name in jobserver.THREAD_ENV:
        monkeypatch.setenv(name, "1")
    run = _client(server_env, "wfjs_helpers", "report", tmp_path / "r.log", "1", out=str(tmp_path / "r.txt"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "job server not used" not in (tmp_path / "r.log").read_text()
    _, parent, threads = map(int, (tmp_path / "r.txt").read_text().split())
    assert path.exists() and parent in _servers(server_env) and threads == 1
    assert "already running" in jobserver.start_early()[0]


def test_jobs_of_other_thread_counts_share_the_server_with_their_own_counts(server_env, tmp_path, monkeypatch):
    """A 2-thread job (coron3's default) runs in the server its 1-thread jobs use, and sees its own
    thread count: in its environment and in every OpenBLAS library loaded (numpy's, scipy's), as a
    process started with it would; the next 1-thread job is back to 1."""
    seen = []
    for n in ("1", "2", "1"):
        for name in jobserver.THREAD_ENV:
            monkeypatch.setenv(name, n)
        out = tmp_path / f"threads{len(seen)}.json"
        run = _client(server_env, "wfjs_helpers", "thread_counts", tmp_path / f"t{len(seen)}.log", "wait", out=str(out))
        assert run.returncode == 0, run.stderr[-3000:]
        assert "job server not used" not in (tmp_path / f"t{len(seen)}.log").read_text()
        seen.append(json.loads(out.read_text()))
    assert len({s["server"] for s in seen}) == 1 and seen[0]["server"] in _servers(server_env)
    assert [s["omp"] for s in seen] == ["1", "2", "1"]
    for s, n in zip(seen, (1, 2, 1)):
        assert len(s["blas"]) >= 2 and set(s["blas"].values()) == {n}, s  # numpy's and scipy's OpenBLAS


def test_blas_threads_as_openblas_reads_them():
    """OpenBLAS's own order: OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS, OMP_NUM_THREADS, else the CPUs."""
    assert jobmode.blas_threads({"OMP_NUM_THREADS": "3", "GOTO_NUM_THREADS": "4"}) == 4
    assert jobmode.blas_threads({"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "2", "GOTO_NUM_THREADS": "4"}) == 2
    assert jobmode.blas_threads({"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "0"}) == 3
    assert jobmode.blas_threads({}) == len(os.sched_getaffinity(0))


def test_warm_plan_of_each_kind():
    """Every rule of the workflow has its warm-up in the table (a new rule must say what it needs); a
    grism run's plan leaves out image3, photutils and matplotlib; an unknown kind, or none, warms all."""
    import re

    rules = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        rules |= set(re.findall(r"^\s*(?:rule|checkpoint) (\w+):", text, re.M))
        rules |= set(re.findall(r"^use rule \w+ as (\w+)", text, re.M))
    assert {"detector1", "spec2", "tso3", "tso3_phot", "image3", "coron3", "image2_variant"} <= rules
    assert {r.removesuffix("_variant") for r in rules} <= set(jobserver.WARM_KINDS)
    everything = jobserver.warm_plan(None)
    assert everything == (jobserver.PRELOAD, jobserver.WARM_MODELS,
                          {"numba", "gwcs", "photutils", "catalog", "matplotlib"})
    assert jobserver.warm_plan(["detector1", "not_a_rule"]) == everything
    modules, models, setups = jobserver.warm_plan(["all", "detector1", "spec2", "tso3", "lightcurves"])
    assert "webbflow.stages.image3" not in modules and "photutils" not in setups
    assert {"webbflow.stages.detector1", "webbflow.stages.spec2", "webbflow.stages.tso3"} <= set(modules)
    assert set(models) == {"CubeModel", "SlitModel", "TSOMultiSpecModel"} and "matplotlib" in setups
    assert jobserver.warm_plan(["image3_variant"]) == jobserver.warm_plan(["image3"])
    assert jobserver.warm_plan([]) == (("webbflow.jobs", "webbflow.workflow"), (), set())


def _covered(steps):
    """The modules, classes and set-ups of :func:`jobserver.warm_steps`' labels."""
    labels = [label for label, _, _ in steps]
    modules = {label.removeprefix("import ") for label in labels if label.startswith("import ")}
    models = {label.removeprefix("datamodel ") for label in labels if label.startswith("datamodel ")}
    return modules, models, {label for label in labels if " " not in label}


@pytest.mark.parametrize("kinds", [None, ["detector1", "spec2", "tso3"], ["detector1", "image2", "tso3_phot"],
                                   ["detector1", "image2_ints", "tso3_phot"],
                                   ["detector1", "image2", "coron3"], ["detector1", "image2_ints", "coron3_fits"],
                                   ["image2_variant", "image3"], ["qa_exposures"]])
def test_warm_steps_are_the_plan_kind_by_kind(kinds):
    """The server's warm-up steps are exactly its plan's imports, classes and set-ups, the first kind's
    (the server listens once their imports are done) first, each step marked with the kinds that need it; a job
    waits only for its own kind's steps (a job of no known kind: for all of an every-kind server's)."""
    steps = jobserver.warm_steps(kinds)
    modules, models, setups = jobserver.warm_plan(kinds)
    got_modules, got_models, got_setups = _covered(steps)
    assert got_modules == set(modules) and got_models == set(models)
    assert got_setups - {"asdf", "numba cache"} == setups - {"gwcs"}
    assert len({label for label, _, _ in steps}) == len(steps)
    planned = {k.removesuffix("_variant") for k in kinds} if kinds else set(jobserver.STAGE_ORDER)
    first = min(planned & set(jobserver.STAGE_ORDER), key=jobserver.STAGE_ORDER.index,
                default=min(planned))
    first_steps = [label for label, needed, _ in steps if first in needed]
    assert [label for label, _, _ in steps][:len(first_steps)] == first_steps  # the first kind's come first
    for kind in planned & jobserver.WARM_KINDS.keys():
        k_modules, k_models, _ = jobserver.warm_plan([kind])
        if kinds is None and not set(k_modules) <= set(jobserver.PRELOAD):  # e.g. tso3_phot: waits for all
            assert all(kind in needed for _, needed, _ in steps)
            continue
        own = _covered([step for step in steps if kind in step[1]])
        assert own[0] == set(k_modules) and own[1] == set(k_models), (kind, own)
    # the kind is the client's (job_kind of its rule and outputs), never guessed from the job function
    # and its arguments: a request without one is of no known kind
    assert jobserver._request_kind({"kind": "tso3_phot", "qualname": "tso3", "kwargs": {}}) == "tso3_phot"
    assert jobserver._request_kind({"qualname": "tso3", "kwargs": {"phot": "p.ecsv"}}) is None
    assert jobserver._request_kind({"qualname": "image2", "args": ("a_rateints.fits", "a_calints.fits")}) is None
    # an image2 job writing a calints needs image2's steps but the ImageModel one
    ints = {"kind": jobserver.job_kind("image2", ["a_calints.fits"]), "qualname": "image2"}
    assert jobserver._request_kind(ints) == "image2_ints"
    assert jobserver.job_kind("image2_variant", ["v/a_calints.fits"]) == "image2_ints"
    assert jobserver.job_kind("image2", ["a_cal.fits"]) == "image2" and jobserver.job_kind("tso3", []) == "tso3"
    assert jobserver.job_kind("image2_variant", ["v/a_cal.fits"]) == "image2"  # a variant: its rule's kind
    assert jobserver.job_kind("detector1_variant", ["v/a_rate.fits"]) == "detector1"
    # a coron3 job that draws no contrast plot needs coron3's steps but matplotlib
    fits_only = {"kind": jobserver.job_kind("coron3", ["p_psfstack.fits", "p_i2d.fits", "p_psfshifts.ecsv"])}
    assert fits_only["kind"] == "coron3_fits" and jobserver.job_kind("coron3", []) == "coron3"
    assert jobserver.job_kind("coron3", ["p_i2d.fits", "p_contrast.ecsv", "p_contrast.png"]) == "coron3"
    for label, needed, _ in steps:
        if kinds is None or "coron3" in planned:
            assert jobserver._needs(fits_only, kinds is None, needed) == (
                jobserver._needs({"kind": "coron3"}, kinds is None, needed) and label != "matplotlib")
    if kinds and "image2_ints" in kinds and not any("ImageModel" in jobserver.WARM_KINDS[k][1] for k in kinds):
        # a time-series run's server never warms the ImageModel (a coron run's coron3 needs it: its i2d)
        assert "datamodel ImageModel" not in [label for label, _, _ in steps]
    if kinds and "coron3_fits" in kinds and "coron3" not in kinds:  # the jwst line's coron run: no plot
        assert "matplotlib" not in [label for label, _, _ in steps]
    for label, needed, _ in steps:
        if kinds is None or "image2" in planned:
            assert jobserver._needs(ints, kinds is None, needed) == (
                jobserver._needs({"kind": "image2"}, kinds is None, needed) and label != "datamodel ImageModel")
    for unknown in ({"kind": "report"}, {"kind": None}, {"qualname": "tso3", "kwargs": {"phot": "p.ecsv"}}):
        assert all(jobserver._needs(unknown, kinds is None, needed) == (kinds is None) for _, needed, _ in steps)
    assert jobserver._every_kind(kinds) == (kinds is None) and jobserver._every_kind(["detector1", "not_a_rule"])


def test_image3_warm_up_leaves_out_scipy_signal_and_loads_the_kernels():
    """A server warmed for image3 imports neither scipy.signal nor scipy.stats (photutils.segmentation
    without them: webbflow.steps._photutils) nor photutils' PSF modules, but what image3's steps
    import when they run (scipy.interpolate, skimage's watershed, photutils' version metadata's
    matplotlib); image3's lazily compiled kernels have their dispatchers, with what numba's cache
    held loaded, and no numba thread runs (the server can fork)."""
    code = ("import json, sys\n"
            "from webbflow import jobserver\n"
            "jobserver._warm(['image3'])\n"
            "from webbflow.steps import _peaks, outlier_detection, skymatch\n"
            "kernels = [k.dispatcher is not None for k in (skymatch._moments_passes, outlier_detection._kth_key,\n"
            "                                              _peaks._verify_ring)]\n"
            "mods = [m in sys.modules for m in ('scipy.signal', 'scipy.stats', 'photutils.psf', 'scipy.interpolate',\n"
            "                                   'skimage.segmentation', 'matplotlib', 'webbflow.steps._drizzle_square')]\n"
            "print(json.dumps([mods, kernels, jobserver.fork_safe()]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    mods, kernels, fork_safe = json.loads(out.stdout)
    assert mods == [False, False, False, True, True, True, True] and all(kernels) and fork_safe


@pytest.mark.parametrize("step", ["webbflow.steps.tweakreg", "webbflow.steps.source_catalog",
                                  "webbflow.steps.tso_photometry"])
def test_photutils_import_without_its_distribution_scan(step):
    """photutils imported as webbflow imports it (webbflow.steps._photutils: by the server, and by a step
    module that imports it itself, in or out of the server) makes no scan of every distribution and
    learns the same distribution name and optional dependencies as its own import does."""
    code = ("import sys, json\n"
            "from importlib import metadata\n"
            "scans = []\n"
            "real = metadata.packages_distributions\n"
            "metadata.packages_distributions = lambda: scans.append(1) or real()\n"
            "from webbflow import jobserver\n"
            "if sys.argv[1] == 'server':\n"
            "    jobserver._import('photutils.aperture')\n"
            "elif sys.argv[1] == 'step':\n"
            "    __import__(sys.argv[2])\n"
            "    if sys.argv[2].endswith('tso_photometry'):\n"
            "        import numpy as np\n"
            "        from webbflow.steps.tso_photometry import _fit_source\n"
            "        cube = np.ones((1, 9, 9))\n"
            "        _fit_source(cube, np.zeros_like(cube, bool), np.zeros((9, 9), bool), 4.0, 4.0, 5)\n"
            "else:\n"
            "    import photutils.aperture\n"
            "from photutils.utils import _optional_deps as d\n"
            "print(json.dumps([d._pkg_dist_name, d._optional_deps, 'photutils.aperture' in sys.modules, len(scans)]))\n")
    out = [json.loads(subprocess.run([sys.executable, "-c", code, how, step], capture_output=True, text=True,
                                     timeout=300, check=True).stdout) for how in ("server", "step", "own")]
    assert out[0][:2] == out[1][:2] == out[2][:2] and out[0][0] == "photutils"
    assert [o[3] for o in out] == [0, 0, 1]  # photutils' own import scans once
    assert out[0][2]


def test_onstart_starts_the_server_warmed_for_the_planned_kinds(server_env, tmp_path, make, monkeypatch):
    """A run of the workflow (stage 1 of a user's two exposures) starts its server before the first job,
    warmed for exactly the kinds of its planned jobs (the server's environment names them)."""
    from _snakemake import run_snakemake

    data = tmp_path / "mydata"
    make.reference_set(data / "refs", detector="NRCA1", shape=(32, 32))
    (data / "uncal").mkdir()
    make.uncal(data / "uncal" / "a_uncal.fits", make.ramp(nints=1, ngroups=4, rate=50.0), EXPOSURE="1")
    config = tmp_path / "mine.yaml"
    config.write_text(f"inputs: {{uncal_dir: {data / 'uncal'}}}\nresults_dir: out\n"
                      f"references: {{dir: {data / 'refs'}}}\n")
    folder = server_env / "onstart"
    monkeypatch.setenv(jobserver.DIR_ENV, str(folder))
    monkeypatch.delenv(jobserver.ENV, raising=False)  # auto: on for a local run
    run_snakemake(tmp_path / "work", "--configfile", str(config), "--cores", "1", "stage1", timeout=600)
    assert list((tmp_path / "work" / "out").rglob("*_rate.fits"))
    servers = _servers(folder)
    assert servers
    for pid in servers:
        environ = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in e)
        assert set(environ[jobserver.SCOPE_ENV].split(",")) == {"detector1", "stage1"}


def test_dry_run_of_the_demo_starts_no_server(tmp_path, monkeypatch):
    """``snakemake -n`` with the default config (auto: on) plans the demo and starts nothing: onstart,
    which starts the servers, does not run in a dry run."""
    from _snakemake import run_snakemake

    folder = tmp_path / "sock"
    monkeypatch.setenv(jobserver.DIR_ENV, str(folder))
    monkeypatch.delenv(jobserver.ENV, raising=False)
    proc = run_snakemake(tmp_path / "work", "-n", "--cores", "2", timeout=600)
    assert "demo" in proc.stdout  # the run was planned (the demo's simulation first)
    assert not folder.exists() or not list(folder.iterdir())
    assert not _servers(folder)


@pytest.mark.slow
def test_demo_through_snakemake_with_the_server_matches_without(demo_workdir, tmp_path_factory, make):
    """The session's demo (the default config: the warm server on, started before the first job) gives
    the products of the whole demo run with every job in its own process (``WEBBFLOW_JOB_SERVER=0``)."""
    stats = demo_workdir / ".snakemake" / "webbflow_job_stats.jsonl"
    served = [json.loads(line).get("server", False) for line in stats.read_text().splitlines()]
    assert sum(served) > len(served) / 2  # most jobs ran in the server (any first ones while it started)
    workdir = tmp_path_factory.mktemp("demo_in_process")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2"]
    stats = workdir.parent / "in_process_stats.jsonl"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False,
                          env={**os.environ, jobserver.ENV: "0", "WEBBFLOW_JOB_STATS": str(stats)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "job server" not in proc.stdout + proc.stderr
    assert not any(json.loads(line).get("server") for line in stats.read_text().splitlines())
    differences, compared = make.compare_products(demo_workdir / "results", workdir / "results")
    assert compared > 20 and not differences, differences[:20]


def test_numba_cache_warm_up_leaves_out_inner_kernels_and_uncached_modules(tmp_path, monkeypatch):
    """The server loads the cached kernels a job calls, not those only other kernels call (a cached
    caller carries their code), and does not import a kernel module with nothing in numba's cache."""
    from webbflow.steps import _jit, _ramp_numba

    kernels = _jit.kernels(_ramp_numba)
    inner = jobserver._inner_kernels(_ramp_numba, kernels)
    assert {"_fit_segment", "_segments"} <= inner  # called by ols_fit only
    assert not {"ols_fit", "weight_table"} & inner  # called from the ramp_fit step's Python code
    # a module of its own: a kernel a plain function also calls is loaded, the inner one is not
    package = tmp_path / "wfjs_numba_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kern.py").write_text(
        "from numba import njit\n\n\n@njit(cache=True)\ndef helper(x):\n    return x + 1\n\n\n"
        "@njit(cache=True)\ndef shared(x):\n    return helper(x) * 2\n\n\n"
        "@njit(cache=True)\ndef entry(x):\n    return shared(x) + helper(x)\n\n\n"
        "def step(x):\n    return [shared(v) for v in x]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("numba.core.config.CACHE_DIR", "")
    (package / "__pycache__").mkdir()
    assert not jobserver._has_numba_cache("wfjs_numba_pkg.kern")  # an in-tree cache without its index
    (package / "__pycache__" / "kern.entry-12.py311.nbi").write_bytes(b"")
    assert jobserver._has_numba_cache("wfjs_numba_pkg.kern")
    monkeypatch.setattr("numba.core.config.CACHE_DIR", str(tmp_path / "elsewhere"))
    (package / "__pycache__" / "kern.entry-12.py311.nbi").unlink()
    assert jobserver._has_numba_cache("wfjs_numba_pkg.kern")  # NUMBA_CACHE_DIR: not looked into
    import importlib

    kern = importlib.import_module("wfjs_numba_pkg.kern")
    got = jobserver._inner_kernels(kern, {k: getattr(kern, k) for k in ("helper", "shared", "entry")})
    assert got == {"helper"}  # shared: also called from step's comprehension


def test_stage_imports_warm_up_in_pieces():
    """Between jobs the server imports a stage module's heavy third-party packages one at a time first
    (a job that connects meanwhile waits for one piece, not the whole module), then the module."""
    code = ("import json, sys\n"
            "from webbflow import jobserver\n"
            "step = ('import webbflow.stages.image2', frozenset({'image2'}), None)\n"
            "pieces = []\n"
            "while (piece := jobserver._smaller_unit(step)) is not None:\n"
            "    pieces.append(piece.args[0])\n"
            "    piece()\n"
            "    assert piece.args[0] in sys.modules and 'webbflow.stages.image2' not in sys.modules\n"
            "units = jobserver.IMPORT_UNITS['webbflow.stages.image2']\n"
            "assert all(unit in sys.modules for unit in units)\n"
            "import webbflow.stages.image2\n"
            "print(json.dumps([pieces, units, jobserver._smaller_unit(step), "
            "jobserver._smaller_unit(('asdf', frozenset(), None))]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    pieces, units, after, other = json.loads(out.stdout)
    assert len(pieces) >= 3 and pieces == [unit for unit in units if unit in pieces]  # in order, each once
    assert after is None and other is None


def test_blas_limit_caps_and_restores_every_loaded_openblas():
    """coron3's one-thread block: every OpenBLAS library loaded (numpy's and scipy's) runs on one thread
    inside it and is back to its own count after, and a KL basis made inside it is the same whatever
    the count outside (its ERR is round-off that OpenBLAS's split of the sums would change)."""
    import numpy as np
    import scipy.linalg  # noqa: F401  (scipy's own OpenBLAS, loaded)

    from webbflow.steps import klip

    before = jobmode.set_blas_threads(2)
    try:
        assert len(before) >= 2
        refs = np.random.default_rng(3).normal(1.0, 0.1, (20, 320, 320)).astype(np.float32)  # threaded gemv
        errs = []
        for outside in (1, 2):
            jobmode.set_blas_threads(outside)
            with jobmode.blas_limit(1):
                assert set(jobmode.set_blas_threads({}).values()) == {1}
                errs.append(klip.kl_basis(refs, truncate=50).err)
            assert set(jobmode.set_blas_threads({}).values()) == {outside}
        assert np.array_equal(errs[0], errs[1])
        jobmode.set_blas_threads(2)  # and why: unlimited, two threads give other round-off
        assert not np.array_equal(klip.kl_basis(refs, truncate=50).err, errs[0])
    finally:
        jobmode.set_blas_threads(before)


def _private_folder(tmp_path):
    folder = tmp_path / "srv"
    folder.mkdir(mode=0o700)
    return folder


def test_a_job_waits_for_a_starting_server_instead_of_running_in_process(tmp_path):
    """A server that is starting (its lock held, e.g. by the run's onstart) is waited for: the job connects
    once it listens (its first jobs ran in-process, 3.7-4 s each, while it started in ~0.5 s)."""
    import fcntl
    import socket
    import threading

    folder, key = _private_folder(tmp_path), "k1"
    with open(folder / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another's starting server
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

        def listen_later():
            time.sleep(0.3)
            listener.bind(str(folder / f"{key}.sock"))
            listener.listen(1)

        thread = threading.Thread(target=listen_later)
        thread.start()
        try:
            sock = jobserver._connect_or_start(folder, key)
            sock.close()
        finally:
            thread.join()
            listener.close()
        (folder / f"{key}.sock").unlink()  # no server listens now; the lock is still held
        # start_early's call does not wait: it only starts the server
        with pytest.raises(jobserver.ServerStarting, match="is starting"):
            jobserver._connect_or_start(folder, key, patience=0)
        with pytest.raises(jobserver.ServerStarting, match="did not listen within 0 s; this job runs in-process"):
            jobserver._connect_or_start(folder, key, patience=0.2)
        with pytest.raises(TimeoutError):
            jobserver._connect_or_start(folder, key, wait=True, patience=0.2)


def test_a_job_stops_waiting_when_the_starting_server_dies(tmp_path):
    """The lock's holder exits without ever listening: the waiting job runs in-process at once, it does
    not wait out START_WAIT_S (or fails, with ``wait``)."""
    folder, key = _private_folder(tmp_path), "k1"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(folder / (key + '.lock'))!r}, 'a')\n"
                               "fcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(0.5)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(jobserver.ServerStarting, match="that was starting exited; this job runs in-process"):
            jobserver._connect_or_start(folder, key, patience=60)
    finally:
        holder.kill()
        holder.wait()
