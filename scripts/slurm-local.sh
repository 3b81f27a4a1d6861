#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm executor's tests (`cli/tests/slurm.rs`).
# Installs Debian's slurm-wlm and munge, writes a slurm.conf for this host (all its cores and
# memory in one node, partition `debug`, memory enforced by jobacct_gather so a job over its
# `--mem` ends OUT_OF_MEMORY), and starts munged, slurmctld and slurmd as root without systemd.
# Idempotent: a running cluster is left as it is. Exit 0 when `sinfo` shows the node idle.
#
#   sudo scripts/slurm-local.sh          # or as root
#   scripts/slurm-local.sh --stop        # stop the daemons
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "slurm-local: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

if [ "${1:-}" = "--stop" ]; then
  pkill -x slurmd || true
  pkill -x slurmctld || true
  pkill -x munged || true
  exit 0
fi

if pgrep -x munged >/dev/null && pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null &&
  sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  echo "slurm-local: already running: $(sinfo -h -o '%N %T')"
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi

host="$(hostname -s)"
cpus="$(nproc)"
# leave 1 GiB to the system
mem_mb="$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))"
conf_dir=/etc/slurm
[ -d /etc/slurm-llnl ] && [ ! -d /etc/slurm ] && conf_dir=/etc/slurm-llnl
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge /etc/munge

cat >"$conf_dir/slurm.conf" <<CONF
ClusterName=whittle-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
MinJobAge=600
KillWait=10
SchedulerParameters=sched_interval=1
# a job without --mem gets its share per CPU, not the whole node (which would serialise jobs)
DefMemPerCPU=$(( mem_mb / cpus ))
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# no cgroup.conf: proctrack/linuxproc + task/none need none (22.05 has no `disabled` plugin)
rm -f "$conf_dir/cgroup.conf"

if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge

pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 1 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-local: up: $(sinfo -h -o '%P %N %T %c cpus %m MB')"
    exit 0
  fi
  sleep 1
done
echo "slurm-local: the node did not become idle; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
