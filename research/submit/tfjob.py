"""A training job as a Kubeflow TFJob: for clusters that still run the training operator.

The Kubeflow training operator runs a TFJob as one pod per replica and sets each pod's TF_CONFIG
with the task types `chief` and `worker`, which research.core.strategy reads (the chief writes
the run's outputs). A job of N workers is one `Chief` replica and N - 1 `Worker` replicas. The
operator is in maintenance only (Kubeflow Trainer v2 dropped TensorFlow), so
research.submit.jobset is the default; `--kubernetes_kind=tfjob` picks this one.
"""

API_VERSION = 'kubeflow.org/v1'
KIND = 'TFJob'
TITLE = 'Kubeflow TFJob'
RESOURCE = 'tfjob'
# The operator reads the exit code of the container with this name; in any other container an
# exit is invisible to it (pkg/controller.v1/common/pod.go reads `GetDefaultContainerName()`), and
# its admission check rejects a replica without one (tensorflow_validation.go).
CONTAINER = 'tensorflow'
# A TFJob's name must be a DNS-1035 label (the operator's ValidateV1TFJob); its pods are named
# <name>-worker-<i>, so 52 characters leave room for the suffix within the 63 of a pod's label.
NAME_MAX = 52
MISSING_HINT = 'is the Kubeflow training operator installed in the cluster?'


def name_max(job):
  del job  # the same for every size
  return NAME_MAX


def _replica(replicas, pod_spec):
  return {
      'replicas': replicas,
      # A failed pod whose exit code is >= 128 is deleted and created again; 1-127 fail the job.
      # kubeflow/training-operator: pkg/util/train/train_util.go `IsRetryableExitCode` is
      # `exitCode >= 128`, used by ReconcilePods in pkg/controller.v1/common/pod.go for
      # RestartPolicyExitCode. launch.train exits processes.PREEMPTED_EXIT_CODE (143) once a
      # SIGTERM (a node drained, a pod evicted) stopped it and the run was saved, and
      # processes.LOST_WORKER_EXIT_CODE (200) when another pod vanished (its node gone, killed,
      # frozen): either way the new pod resumes from the last checkpoint; a bug (exit 1) or a
      # bad setting (2) fails the job at once instead of crash-looping.
      'restartPolicy': 'ExitCode',
      'template': {'spec': pod_spec},
  }


def manifest(job, pod_spec):
  """The TFJob for `job` (checked) whose pods run `pod_spec`."""
  specs = {'Chief': _replica(1, pod_spec)}
  if job.workers > 1:
    specs['Worker'] = _replica(job.workers - 1, pod_spec)
  return {
      'apiVersion': API_VERSION,
      'kind': KIND,
      'metadata': {'name': job.name, 'namespace': job.namespace},
      'spec': {
          # Running: when the job ends (the chief succeeded, or a worker failed for good), pods
          # still running are deleted, so workers blocked in a collective on a dead peer do not
          # hold their GPUs; finished pods stay, so their logs remain for `status`. (The
          # operator's default, None, would leave them running.) No backoffLimit: the operator
          # counts container restarts for it, and ExitCode restarts replace the pod (restart
          # count 0), so it would not bound them; exit codes 1-127 already fail the job.
          'runPolicy': {'cleanPodPolicy': 'Running'},
          'tfReplicaSpecs': specs,
      },
  }


def pod_names(job):
  pods = f'{job.name}-chief-0'
  if job.workers > 1:
    pods += f', {job.name}-worker-0' + (f'..{job.workers - 2}' if job.workers > 2 else '')
  return pods


def chief_pod(name):
  """The pod whose log has the progress lines: the chief's name is fixed."""
  return f'{name}-chief-0'


def log_hint(name, namespace, workers):
  del workers  # the chief logs the progress
  return f'kubectl logs -f {chief_pod(name)} -n {namespace}'


def state(tfjob):
  """The TFJob's state (the type of its last true condition, as kubectl's State column) and
  that condition's message."""
  conditions = (tfjob.get('status') or {}).get('conditions') or []
  current = [c for c in conditions if c.get('status') == 'True']
  if not current:
    return 'Pending', 'the operator has not reported on it yet'
  last = current[-1]
  return last.get('type', '?'), last.get('message') or last.get('reason') or ''


def replicas(tfjob):
  statuses = (tfjob.get('status') or {}).get('replicaStatuses') or {}
  parts = []
  for rtype, counts in statuses.items():
    shown = [f'{counts[k]} {k}' for k in ('active', 'succeeded', 'failed') if counts.get(k)]
    parts.append(f'{rtype} {", ".join(shown) or "none active"}')
  return '; '.join(parts) or 'no replica status yet'


def pod_template(tfjob):
  chief = (tfjob.get('spec') or {}).get('tfReplicaSpecs', {}).get('Chief') or {}
  return chief.get('template') or {}
