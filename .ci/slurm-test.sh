#!/usr/bin/env bash
# The cluster path, tested like the laptop path: bring up a one-node SLURM (slurmctld, slurmd,
# slurmdbd on a private MariaDB, munge) on this host from Debian packages, run the workflow's
# default target on the demo with `snakemake --profile profiles/slurm` in a temporary copy of the
# repository, cancel one SLURM job while it runs, and check that
#   1. every job ran as a SLURM job: each product is named in the kept log of a COMPLETED job,
#      and sacct lists every job id snakemake submitted;
#   2. the cancelled job was resubmitted with twice its memory (attempt 2) and the run completed;
#   3. every product is identical to a local run's (all image and table data; headers differ only
#      by date keywords).
# Needs root and apt-get (skips with a printed reason otherwise); any real failure exits non-zero.
# Uses the `python` on PATH (the CI venv; the slurm extra is installed into it when missing).
# Everything it writes lives in one temporary folder (slurm.conf via SLURM_CONF, state, logs, the
# database), plus a link /etc/slurm/slurm.conf to it for job steps; on exit it cancels leftover
# jobs, stops the daemons it started by PID and removes the link.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${SLURM_TEST_PYTHON:-python}"   # the CI venv (activated by .ci/run)
RUN_TIMEOUT="${SLURM_TEST_RUN_TIMEOUT:-900}"   # seconds per snakemake run

say() { echo "slurm-test: $*"; }
skip() { say "SKIPPED: $*"; exit 0; }
fail() { say "FAILED: $*" >&2; exit 1; }

# ---- can it run here? ------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (to install Debian packages and start slurm daemons)"
command -v apt-get >/dev/null || skip "no apt-get on this machine (Debian packages slurm-wlm, munge needed)"
"$python" -c "import snakemake" 2>/dev/null || fail "'$python' has no snakemake: run from the CI venv"
if ! "$python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    say "installing the slurm extra: pip install -e '$repo[slurm]'"
    "$python" -m pip install --quiet -e "$repo[slurm]" \
        || skip "could not pip install the slurm extra (snakemake-executor-plugin-slurm)"
fi

packages=(slurm-wlm munge slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || skip "apt-get could not install ${missing[*]}"
fi

# The plugin clears SLURM_* variables before it submits, so job steps (srun inside a job) find the
# configuration only at the default path: link it there for the test, and remove the link on exit.
if [ -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    case "$(readlink /etc/slurm/slurm.conf)" in
        */webbflow-slurm.*/etc/slurm.conf) rm -f /etc/slurm/slurm.conf ;;   # left by a killed run
        *) skip "/etc/slurm/slurm.conf exists (a configured SLURM here): not replacing it" ;;
    esac
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/webbflow-slurm.XXXXXX")"
say "working folder $work"
started_pids=()   # daemons this script started, stopped in reverse order on exit
run_pids=()       # snakemake runs in the background (timeout processes), interrupted on exit

stop_daemons() {
    local rc=$?
    set +e
    for pid in "${run_pids[@]}"; do   # timeout passes SIGINT on: snakemake cancels its jobs, exits
        kill -0 "$pid" 2>/dev/null || continue
        kill -INT "$pid" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null
    done
    if [ -n "${SLURM_CONF:-}" ] && [ -f "${SLURM_CONF}" ]; then
        # no job may outlive its slurmd (slurmstepd would keep it running)
        scancel --user "$(id -un)" >/dev/null 2>&1
        for _ in $(seq 30); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    for (( i=${#started_pids[@]}-1; i>=0; i-- )); do
        local pid="${started_pids[$i]}"
        kill "$pid" 2>/dev/null
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    [ "${#started_pids[@]}" -gt 0 ] && say "stopped daemons (pids ${started_pids[*]})"
    [ -n "${etc_link:-}" ] && rm -f "$etc_link"
    if [ "$rc" -eq 0 ] && [ -z "${SLURM_TEST_KEEP:-}" ]; then rm -rf "$work"; fi
    exit "$rc"
}
trap stop_daemons EXIT

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() {  # seconds description command...
    local n="$1" what="$2"; shift 2
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    fail "$what did not come up within ${n}s"
}

pid_of() {  # pidfile
    for _ in $(seq 20); do [ -s "$1" ] && { cat "$1"; return 0; }; sleep 0.5; done
    fail "no pid file $1"
}

# ---- the local reference run (in the background while the cluster comes up) ------------------
copy_repo() {  # destination: tracked + untracked-not-ignored files, as a clean clone would have
    mkdir -p "$1"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) \
        | tar -xf - -C "$1"
}
copy_repo "$work/local"
copy_repo "$work/slurm"
say "local reference run: snakemake --cores 2 (log $work/local.log)"
# Each copy imports its own src/ (PYTHONPATH beats an editable install of another checkout; SLURM
# jobs inherit it), so both runs use the same code even while someone edits the original tree.
(cd "$work/local" && PYTHONPATH="$work/local/src${PYTHONPATH:+:$PYTHONPATH}" \
    exec timeout -k 30 "$RUN_TIMEOUT" "$python" -m snakemake --cores 2 >"$work/local.log" 2>&1) &
local_run=$!
run_pids+=("$local_run")

# ---- munge ---------------------------------------------------------------------------------------
if [ -S /run/munge/munge.socket.2 ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running: using it"
else
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    started_pids+=("$(pid_of /run/munge/munged.pid)")
    wait_for 10 munged sh -c 'munge -n | unmunge'
fi

# ---- MariaDB for the accounting database (private datadir, socket and port) ----------------------
db_port="$(free_port)"
mkdir -p "$work/mysql"
mariadb-install-db --user=root --datadir="$work/mysql/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$work/mysql/install.log" 2>&1 || fail "mariadb-install-db (see $work/mysql/install.log)"
/usr/sbin/mariadbd --user=root --datadir="$work/mysql/data" --socket="$work/mysql/sock" \
    --pid-file="$work/mysql/pid" --bind-address=127.0.0.1 --port="$db_port" \
    >"$work/mysql/server.log" 2>&1 &
started_pids+=("$!")
wait_for 30 MariaDB mariadb --socket="$work/mysql/sock" -e "select 1"
mariadb --socket="$work/mysql/sock" -e "CREATE USER 'slurm'@'%' IDENTIFIED BY 'ci'; \
    CREATE DATABASE slurm_acct_db; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%'; FLUSH PRIVILEGES;"

# ---- slurm.conf: this host, its CPUs and memory as slurmd -C sees them ---------------------------
host="$(hostname -s)"
node_hw="$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')"   # CPUs=.. Boards=.. RealMemory=..
cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_hw")"
conf="$work/etc"
mkdir -p "$conf" "$work/spool/ctld" "$work/spool/d" "$work/log"
export SLURM_CONF="$conf/slurm.conf"
cat >"$SLURM_CONF" <<CONF
ClusterName=webbflowci
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups in containers
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
StateSaveLocation=$work/spool/ctld
SlurmdSpoolDir=$work/spool/d
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$(free_port)
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 ${node_hw} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
dbd_port="$(sed -n 's/^AccountingStoragePort=//p' "$SLURM_CONF")"
cat >"$conf/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=${dbd_port}
SlurmUser=root
PidFile=$work/slurmdbd.pid
LogFile=$work/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${db_port}
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=ci
CONF
chmod 600 "$conf/slurmdbd.conf"
mkdir -p /etc/slurm
ln -s "$SLURM_CONF" /etc/slurm/slurm.conf
etc_link="/etc/slurm/slurm.conf"

# ---- daemons (slurmdbd reads slurmdbd.conf next to $SLURM_CONF) ----------------------------------
/usr/sbin/slurmdbd
started_pids+=("$(pid_of "$work/slurmdbd.pid")")
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster webbflowci >/dev/null
/usr/sbin/slurmctld
started_pids+=("$(pid_of "$work/slurmctld.pid")")
/usr/sbin/slurmd -N "$host"
started_pids+=("$(pid_of "$work/slurmd.pid")")
sacctmgr -i add account webbflowci Cluster=webbflowci >/dev/null
sacctmgr -i add user "$(id -un)" Account=webbflowci >/dev/null
wait_for 30 "node $host (idle)" sh -c "sinfo -h -N -o '%T' | grep -q idle"
say "cluster up: $(sinfo -h -o '%P %a %D nodes %c cpus %m MB %T')"

# ---- the site block of profiles/slurm, edited as a site would (account, partition, cores) ---------
"$python" - "$work/slurm/profiles/slurm/profile.v9+.yaml" "$cpus" <<'PY'
import sys, yaml
path, cpus = sys.argv[1], int(sys.argv[2])
profile = yaml.safe_load(open(path))
profile["default-resources"].update(slurm_account="webbflowci", slurm_partition="debug")
profile["cores"] = cpus                      # one node's CPUs per allocation
profile["group-components"] = {"per_exposure": 4}   # 16 demo exposures -> 4 group jobs
yaml.safe_dump(profile, open(path, "w"), sort_keys=False)
PY

if ! wait "$local_run"; then
    tail -40 "$work/local.log"
    fail "the local reference run failed (log above)"
fi
say "local reference run done"

# ---- the SLURM run, with one job cancelled while it runs -------------------------------------------
say "SLURM run: snakemake --profile profiles/slurm (log $work/slurm.log)"
(cd "$work/slurm" && PYTHONPATH="$work/slurm/src${PYTHONPATH:+:$PYTHONPATH}" \
    exec timeout -k 30 "$RUN_TIMEOUT" "$python" -m snakemake --profile profiles/slurm \
    --slurm-init-seconds-before-status-checks 2 >"$work/slurm.log" 2>&1) &
slurm_run=$!
run_pids+=("$slurm_run")

killed=""
for _ in $(seq 240); do
    kill -0 "$slurm_run" 2>/dev/null || break
    running="$(squeue -h -t RUNNING -o '%i' | head -1)"
    if [ -n "$running" ]; then
        log="$(find "$work/slurm/.snakemake/slurm_logs" -name "$running.log" 2>/dev/null | head -1)"
        # cancel once the job has started a detector1 job (mid-run, not before it began)
        if [ -n "$log" ] && grep -q "rule detector1" "$log"; then
            scancel "$running"
            killed="$running"
            say "cancelled SLURM job $killed while it ran"
            break
        fi
    fi
    sleep 0.5
done
set +e
wait "$slurm_run"
slurm_rc=$?
set -e
if [ "$slurm_rc" -ne 0 ]; then
    tail -60 "$work/slurm.log"
    for f in "$work"/log/*.log; do echo "== $f"; tail -5 "$f"; done
    fail "snakemake --profile profiles/slurm exited with $slurm_rc (log above)"
fi
[ -n "$killed" ] || fail "no SLURM job was seen running with a detector1 job to cancel"

# ---- evidence ------------------------------------------------------------------------------------
mapfile -t jobids < <(sed -n "s/.*submitted with SLURM jobid \([0-9]*\).*/\1/p" "$work/slurm.log" | sort -un)
[ "${#jobids[@]}" -gt 0 ] || fail "no 'submitted with SLURM jobid' lines in $work/slurm.log"
say "SLURM job ids of the demo workflow: ${jobids[*]}"
ids_csv="$(IFS=,; echo "${jobids[*]}")"
sacct -X -j "$ids_csv" -o JobID,Account,Partition,AllocCPUS,ReqMem,Timelimit,Elapsed,State,ExitCode \
    | tee "$work/sacct.txt"
sacct -X -n -P -j "$ids_csv" -o JobID,ReqMem,State > "$work/sacct.psv"

"$python" - "$work" "$killed" "${jobids[@]}" <<'PY'
"""Check the SLURM evidence and compare every product with the local run's."""
import re
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

work, killed, submitted = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
problems = []

# sacct: every submitted job is known; the cancelled one CANCELLED, all others COMPLETED
rows = {}
for line in (work / "sacct.psv").read_text().split("\n"):
    if line:
        jobid, reqmem, state = line.split("|")
        rows[jobid] = (reqmem, state.split()[0])
for jobid in submitted:
    if jobid not in rows:
        problems.append(f"sacct does not know SLURM job {jobid}")
    elif jobid == killed:
        if rows[jobid][1] != "CANCELLED":
            problems.append(f"cancelled job {jobid} is {rows[jobid][1]} in sacct")
    elif rows[jobid][1] != "COMPLETED":
        problems.append(f"SLURM job {jobid} is {rows[jobid][1]}, not COMPLETED")


def mem_mb(reqmem):
    value = float(re.match(r"[\d.]+", reqmem).group())
    return value * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}.get(reqmem.rstrip("nc")[-1:], 1)


# the retry of the cancelled job: submitted after it, with twice its memory
log = (work / "slurm.log").read_text()
later = [j for j in submitted if int(j) > int(killed)]
retry = [j for j in later if j in rows and abs(mem_mb(rows[j][0]) - 2 * mem_mb(rows[killed][0])) < 1]
if not retry:
    problems.append(f"no job after {killed} asked for twice its memory ({rows[killed][0]}): "
                    f"{[(j, rows.get(j)) for j in later]}")
else:
    print(f"slurm-test: job {killed} ({rows[killed][0]}) was retried as job {retry[0]} ({rows[retry[0]][0]})")

# every product was written by a COMPLETED SLURM job: its kept log names the product
logs = {p.stem: p.read_text(errors="replace") for p in (work / "slurm/.snakemake/slurm_logs").rglob("*.log")}
completed_text = "\n".join(text for jobid, text in logs.items() if rows.get(jobid, ("", ""))[1] == "COMPLETED")
slurm_results, local_results = work / "slurm/results", work / "local/results"
products = sorted(p.relative_to(slurm_results) for p in slurm_results.rglob("*.fits"))
local_products = sorted(p.relative_to(local_results) for p in local_results.rglob("*.fits"))
if not products:
    problems.append("the SLURM run wrote no products")
if products != local_products:
    problems.append(f"product sets differ: only SLURM {sorted(set(products) - set(local_products))}, "
                    f"only local {sorted(set(local_products) - set(products))}")
# outputs named by the jobs those allocations ran ("output: a, b, ..."); a product inside a
# directory() output is covered by that directory
outputs = {path.strip() for line in re.findall(r"^\s*output: (.*)$", completed_text, re.M)
           for path in line.split(",")}
not_in_slurm_log = [str(p) for p in products
                    if not {f"results/{q.as_posix()}" for q in (p, *p.parents[:-1])} & outputs]
if not_in_slurm_log:
    problems.append(f"{len(not_in_slurm_log)} products not named in a COMPLETED job's SLURM log, "
                    f"e.g. {not_in_slurm_log[:3]}")

# identical data in every HDU; headers differ only by keywords that record when a file was written.
# The ASDF extension (stdatamodels' serialized metadata) is not compared: it holds the write date,
# and the same metadata is compared as FITS keywords.
VOLATILE = {"DATE", "IRAF-TLM", "CHECKSUM", "DATASUM"}
n_arrays = 0
for rel in set(products) & set(local_products):
    with fits.open(slurm_results / rel) as a, fits.open(local_results / rel) as b:
        a = [h for h in a if h.name != "ASDF"]
        b = [h for h in b if h.name != "ASDF"]
        if [h.name for h in a] != [h.name for h in b]:
            problems.append(f"{rel}: HDUs {[h.name for h in a]} vs {[h.name for h in b]}")
            continue
        for ha, hb in zip(a, b):
            if ha.data is not None or hb.data is not None:
                if isinstance(ha, fits.BinTableHDU):
                    same = ha.data.tobytes() == hb.data.tobytes()
                else:
                    same = ha.data.shape == hb.data.shape and np.array_equal(ha.data, hb.data, equal_nan=True)
                n_arrays += 1
                if not same:
                    problems.append(f"{rel}[{ha.name}]: data differ")
            keys = (set(ha.header) | set(hb.header)) - VOLATILE
            changed = sorted(k for k in keys if ha.header.get(k) != hb.header.get(k))
            if changed:
                problems.append(f"{rel}[{ha.name}]: header keywords differ: {changed}")
print(f"slurm-test: compared {len(products)} products ({n_arrays} data arrays/tables) with the local run")

if problems:
    print("slurm-test: FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"slurm-test: all {len(products)} products identical to the local run's; every one written by a SLURM job")
PY
say "PASSED"
