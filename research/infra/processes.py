"""What Linux says of a process, read from /proc/<pid>/stat without importing TensorFlow (the
local-cluster supervisor stays light)."""


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
