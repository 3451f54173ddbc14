"""What Linux says of a process, read from /proc/<pid>/stat without importing TensorFlow (the
local-cluster supervisor stays light), and what launch.train's exit statuses say to whoever
started it (a scheduler, the local-cluster supervisor)."""

# launch.train's exit status after a signal stopped a worker and the run was saved. 128 + SIGTERM
# is what a shell reports for a process stopped by SIGTERM; Kubeflow's ExitCode restart policy
# retries codes >= 128 and fails on 1-127 (training-operator pkg/util/train/train_util.go,
# IsRetryableExitCode), and the Slurm script requeues on it.
PREEMPTED_EXIT_CODE = 143
# launch.train's exit status when another worker vanished mid-run (killed, frozen, its node gone;
# research.core.strategy.WorkerLostError): nothing was saved after the last checkpoint, so the job
# should start again and resume from it, like after a preemption: >= 128 for the same restart
# policy, and above 128 + every signal number (64) so that no one reads it as a death by a signal.
LOST_WORKER_EXIT_CODE = 200


def stat(pid):
  """The fields of /proc/<pid>/stat after the command name (field 3, the state, first), or
  None when the process does not exist or the system has no /proc."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # The command name, in parentheses, may itself hold spaces and parentheses.
      return f.read().rsplit(')', 1)[1].split()
  except (OSError, IndexError):
    return None


def state(pid):
  """The process' state letter: R, S, D, T (stopped), Z (zombie), ...; None when it is gone."""
  fields = stat(pid)
  return fields[0] if fields else None


def start_ticks(pid):
  """When the process started, in clock ticks since boot: with the PID it names one process,
  not a later one that reuses the PID. None when unknown."""
  fields = stat(pid)
  try:
    return int(fields[19]) if fields else None
  except (IndexError, ValueError):
    return None
