#!/usr/bin/env bash
# Start or stop a single-node SLURM cluster on 127.0.0.1 whose files all live in DIR.
#
#   cluster.sh start DIR [CTLD_PORT [SLURMD_PORT]]   # prints `export SLURM_CONF=DIR/slurm.conf`
#   cluster.sh stop DIR
#   cluster.sh status DIR
#
# Test-only settings: AuthType=auth/none and CredType=cred/none (no munge), both
# daemons run as root, one node "localnode" with CPUS (default 8) advertised CPUs
# (config_overrides, so several small jobs run at once on a 2-core machine).
# Clients need SLURM_CONF=DIR/slurm.conf in their environment.
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf

sbin() { command -v "$1" || echo "/usr/sbin/$1"; }

stop() {
    local name pid jobs
    # Cancel what is still queued or running, and let slurmd finish the job steps.
    if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
        jobs=$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            SLURM_CONF=$conf scancel $jobs 2>/dev/null || true
            for _ in $(seq 150); do
                [ -z "$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    for name in slurmd slurmctld; do
        [ -f "$dir/$name.pid" ] || continue
        pid=$(cat "$dir/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
}

case "$cmd" in
start)
    ctld_port=${3:-6817}
    d_port=${4:-6818}
    cpus=${CPUS:-8}
    host=$(hostname -s)
    mkdir -p "$dir/state" "$dir/spool"
    cat > "$conf" <<CONF
# written by deploy/slurm/cluster.sh -- test cluster, not for production
ClusterName=psiktest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=pmi2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName=localnode NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localnode Default=YES MaxTime=INFINITE State=UP
CONF
    stop
    export SLURM_CONF=$conf
    "$(sbin slurmctld)" -f "$conf" -i
    "$(sbin slurmd)" -f "$conf" -N localnode
    for _ in $(seq 300); do
        if sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "export SLURM_CONF=$conf"
            exit 0
        fi
        sleep 0.1
    done
    echo "cluster.sh: node not idle after 30 s; logs follow" >&2
    sinfo -N >&2 || true
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    stop
    exit 1
    ;;
stop)
    stop
    ;;
status)
    SLURM_CONF=$conf sinfo -N
    ;;
*)
    usage
    ;;
esac
