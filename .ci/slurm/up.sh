#!/bin/bash
# Usage: up.sh DIR   -- starts a private munged + slurmctld + slurmd under DIR; prints export line.
# A single-node Slurm cluster on this machine for tests/test_submit_slurm.py. Needs root and
# apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge (Debian 12: Slurm
# 22.05.8; .ci/run installs them). Up in ~1 s. Ports: $SLURMCTLD_PORT and $SLURMD_PORT (default
# 6817 and 6818, Slurm's own); clusters with other ports and DIRs run side by side.
set -euo pipefail
D=${1:?dir}; CPUS=${CPUS:-$(nproc)}
CTLD_PORT=${SLURMCTLD_PORT:-6817}; SLURMD_PORT=${SLURMD_PORT:-6818}
mkdir -p "$D"/{etc,state,spool,log,munge}
chmod 755 "$D" "$D/munge"   # munged wants o+x on the socket's directory
[ -f "$D/munge/munge.key" ] || mungekey --create --keyfile="$D/munge/munge.key"   # 0600, owner = munged's user
cat > "$D/etc/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket,cred_expire=10
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# The main scheduler every second (default 60): a requeued job is eligible again 10 s after its
# requeue, and only that loop would start it.
SchedulerParameters=bf_interval=1,sched_interval=1
MpiDefault=none
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
KillWait=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$D/etc/slurm.conf
# slurmctld and slurmd exit at once when their port is taken (a daemon of an earlier cluster still
# winding down): wait for the ports, and name what holds them if they stay taken.
taken() { ss -Hltnp "( sport = :$CTLD_PORT or sport = :$SLURMD_PORT )" 2>/dev/null | grep .; }
for i in $(seq 1 150); do taken >/dev/null || break; sleep 0.2; done
if taken >/dev/null; then echo "Slurm's ports $CTLD_PORT/$SLURMD_PORT are taken:" >&2; taken >&2; exit 1; fi
/usr/sbin/munged --socket="$D/munge/munge.socket" --key-file="$D/munge/munge.key" \
  --log-file="$D/log/munged.log" --pid-file="$D/munge/munged.pid" --seed-file="$D/munge/munged.seed"
/usr/sbin/slurmctld -i        # -i: ignore missing state files on first start
/usr/sbin/slurmd -N localhost # -N: node name when it is not `hostname -s`
for i in $(seq 1 150); do
  [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] && { echo "export SLURM_CONF=$SLURM_CONF"; exit 0; }
  sleep 0.2
done
echo "slurm not ready after 30s" >&2; tail -n 20 "$D"/log/*.log >&2; exit 1
