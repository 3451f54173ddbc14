#!/bin/bash
# Usage: down.sh DIR  -- cancels all jobs, stops slurmctld + slurmd and the munged started by up.sh DIR.
D=${1:?dir}; export SLURM_CONF=$D/etc/slurm.conf
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
wait_gone() { for i in $(seq 1 "$2"); do alive "$1" || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null; }
# Jobs outlive the daemons (slurmstepd keeps running after slurmd exits): cancel them first.
if scancel -u "$(id -un)" 2>/dev/null; then
  for i in $(seq 1 400); do [ -z "$(squeue -h -u "$(id -un)" 2>/dev/null)" ] && break; sleep 0.1; done
fi
ctld=$(cat "$D/slurmctld.pid" 2>/dev/null); slurmd=$(cat "$D/slurmd.pid" 2>/dev/null)
scontrol shutdown 2>/dev/null            # stops slurmctld and every slurmd
wait_gone "$ctld" 100; wait_gone "$slurmd" 100
munged=$(cat "$D/munge/munged.pid" 2>/dev/null) && kill "$munged" 2>/dev/null && wait_gone "$munged" 50
# leftovers from jobs (should be none)
ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "slurmstepd"' | grep -q . && echo "warning: slurmstepd still running" >&2
true
