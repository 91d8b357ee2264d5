#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine (Debian's slurm-wlm and munge), for gantry's
# Slurm test: munged, slurmctld and slurmd with their state under $1 (default target/slurm).
# Prints the `export SLURM_CONF=...` line to use it. Needs root (slurmd runs jobs as their user).
set -euo pipefail
state=$(realpath -m "${1:-target/slurm}")
mkdir -p "$state"/{spool,ctld,log,run}
host=$(hostname -s)
node=$(slurmd -C | head -1)             # NodeName=<host> CPUs=... RealMemory=...
cat > "$state/slurm.conf" <<CONF
ClusterName=gantry-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$state/slurm.conf"
# The daemons' output goes to their logs: nothing may hold this script's stdout open.
if [[ ! -S /run/munge/munge.socket.2 ]] || ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge
  chown munge:munge /run/munge 2>/dev/null || true
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create >/dev/null 2>&1 || /usr/sbin/create-munge-key -f >/dev/null 2>&1
  fi
  munged --force </dev/null >"$state/log/munged.out" 2>&1
fi
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 0.5
slurmctld -c </dev/null >/dev/null 2>&1
slurmd -c </dev/null >/dev/null 2>&1
for _ in $(seq 1 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^idle'; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "scripts/slurm-local.sh: the node did not come up; see $state/log" >&2
sinfo >&2 || true
exit 1
