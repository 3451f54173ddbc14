"""A training job as a Kubernetes JobSet (jobset.x-k8s.io): one Indexed Job, one pod per worker.

JobSet is the maintained Kubernetes primitive for multi-pod training (Kubeflow Trainer v2 renders
to it). The JobSet has one replicated job, `worker`, of one Job whose N pods are the completion
indexes 0..N-1; JobSet's headless service, named after the JobSet, gives them stable hostnames
<jobset>-worker-0-<index>.<jobset>. research.core.strategy.cluster_resolver builds the cluster from
each pod's environment: worker i is the pod of completion index i, worker 0 the chief.

Restarts, field names from kubernetes-sigs/jobset api/jobset/v1alpha2/jobset_types.go and the
Kubernetes batch/v1 Job API:
  - the Job's podFailurePolicy fails the Job (reason PodFailurePolicy) when the trainer exits
    with anything but 137, 143 or 200: a bug (1), a bad setting (2), a crash (139);
  - any other pod failure (143: a signal stopped the workers and they saved; 200: another worker
    was lost; 137: SIGKILLed; a pod evicted with its node) exhausts backoffLimit 0 (reason
    BackoffLimitExceeded);
  - the JobSet's failurePolicy turns the first into FailJobSet and the second into
    RestartJobSetAndIgnoreMaxRestarts: all pods are created again and resume from the last
    checkpoint, however often (a preemptible pool may stop a long run many times).
"""

from research.core import strategy as strategy_lib
from research.infra import processes

API_VERSION = 'jobset.x-k8s.io/v1alpha2'
KIND = 'JobSet'
TITLE = 'JobSet'
RESOURCE = 'jobset'
CONTAINER = 'trainer'
REPLICATED_JOB = 'worker'
MISSING_HINT = 'is JobSet installed in the cluster? (or pass --kubernetes_kind=tfjob)'
# Labels JobSet puts on every pod (jobset_types.go: JobSetNameKey, ReplicatedJobNameKey,
# JobIndexKey; set by labelAndAnnotateObject in pkg/controllers/jobset_controller.go).
NAME_LABEL = 'jobset.sigs.k8s.io/jobset-name'
REPLICATED_JOB_LABEL = 'jobset.sigs.k8s.io/replicatedjob-name'
JOB_INDEX_LABEL = 'jobset.sigs.k8s.io/job-index'
# The Job controller's annotation on each pod of an Indexed Job (JOB_COMPLETION_INDEX's source).
COMPLETION_INDEX_ANNOTATION = 'batch.kubernetes.io/job-completion-index'
# Exit statuses after which the JobSet starts again; any other failure of the trainer fails it.
RESTART_EXIT_CODES = (137, processes.PREEMPTED_EXIT_CODE, processes.LOST_WORKER_EXIT_CODE)
# JobSet's webhook checks that the longest pod name, <jobset>-worker-0-<N-1> plus the Job
# controller's 6-character random suffix, is a DNS-1035 label (at most 63 characters).
_POD_NAME_MAX = 63
_POD_SUFFIX = 6


def name_max(job):
  fixed = len(f'-{REPLICATED_JOB}-0-{job.workers - 1}') + _POD_SUFFIX
  return _POD_NAME_MAX - fixed


def _env():
  """The pod's cluster environment for research.core.strategy, from JobSet's labels (the
  downward API)."""
  from_label = {'JOBSET_NAME': NAME_LABEL, 'REPLICATED_JOB_NAME': REPLICATED_JOB_LABEL,
                'JOB_INDEX': JOB_INDEX_LABEL}
  return [{'name': var, 'valueFrom': {'fieldRef': {'fieldPath': f"metadata.labels['{label}']"}}}
          for var, label in from_label.items()]


def manifest(job, pod_spec):
  """The JobSet for `job` (checked) whose pods run `pod_spec`."""
  container = pod_spec['containers'][0]
  container['env'] += _env() + [{'name': strategy_lib.JOBSET_WORKERS_ENV,
                                 'value': str(job.workers)}]
  pod_spec['restartPolicy'] = 'Never'  # the Job replaces pods; podFailurePolicy requires Never
  return {
      'apiVersion': API_VERSION,
      'kind': KIND,
      'metadata': {'name': job.name, 'namespace': job.namespace},
      'spec': {
          # The headless service and the pods' subdomain (JobSet's default, relied upon).
          'network': {'enableDNSHostnames': True},
          'successPolicy': {'operator': 'All'},
          'failurePolicy': {'rules': [
              {'name': 'fail_on_error', 'action': 'FailJobSet',
               'onJobFailureReasons': ['PodFailurePolicy']},
              {'name': 'restart_on_stop_or_lost_worker',
               'action': 'RestartJobSetAndIgnoreMaxRestarts',
               'onJobFailureReasons': ['BackoffLimitExceeded']},
          ]},
          'replicatedJobs': [{
              'name': REPLICATED_JOB,
              'replicas': 1,
              'template': {'spec': {
                  'completionMode': 'Indexed',
                  'completions': job.workers,
                  'parallelism': job.workers,
                  # One failed pod fails the Job: the survivors cannot go on without it.
                  'backoffLimit': 0,
                  'podFailurePolicy': {'rules': [{
                      'action': 'FailJob',
                      'onExitCodes': {'containerName': CONTAINER, 'operator': 'NotIn',
                                      'values': sorted(RESTART_EXIT_CODES)},
                  }]},
                  'template': {'spec': pod_spec},
              }},
          }],
      },
  }


def pod_names(job):
  pods = f'{job.name}-{REPLICATED_JOB}-0-0'
  if job.workers > 1:
    pods += f'..{job.workers - 1}'
  return pods + ' and a suffix'


def log_hint(name, namespace, workers):
  """Every pod's log, prefixed by its name: the pods' names end in a random suffix."""
  return (f'kubectl logs -f -l {NAME_LABEL}={name} -n {namespace} --prefix '
          f'--max-log-requests={max(5, workers)}')


def state(jobset):
  """The JobSet's state (its last true condition, else whether Jobs are active) and detail."""
  status = jobset.get('status') or {}
  current = [c for c in status.get('conditions') or [] if c.get('status') == 'True']
  restarts = status.get('restarts') or 0
  detail = f'restarted {restarts} time(s)' if restarts else ''
  if current:
    last = current[-1]
    message = last.get('message') or last.get('reason') or ''
    return last.get('type', '?'), '; '.join(p for p in (message, detail) if p)
  active = any(s.get('active') for s in status.get('replicatedJobsStatus') or [])
  if active:
    return 'Running', detail
  return 'Pending', detail or 'the JobSet controller has not started its Job yet'


def replicas(jobset):
  parts = []
  for counts in (jobset.get('status') or {}).get('replicatedJobsStatus') or []:
    shown = [f'{counts[k]} {k}' for k in ('active', 'ready', 'succeeded', 'failed')
             if counts.get(k)]
    parts.append(f'{counts.get("name", "?")} job {", ".join(shown) or "none active"}')
  return '; '.join(parts) or 'no job status yet'


def pod_template(jobset):
  jobs = (jobset.get('spec') or {}).get('replicatedJobs') or [{}]
  return ((jobs[0].get('template') or {}).get('spec') or {}).get('template') or {}


def pods_selector(name):
  return f'{NAME_LABEL}={name}'


def chief_pod(pods):
  """The newest pod of completion index 0 among `pods` (kubectl's items): worker 0 logs the
  progress lines. None before it exists."""
  chiefs = [p for p in pods
            if (p.get('metadata') or {}).get('annotations', {}).get(
                COMPLETION_INDEX_ANNOTATION) == '0']
  if not chiefs:
    return None
  return max(chiefs, key=lambda p: p['metadata'].get('creationTimestamp', ''))['metadata']['name']


def pod_phases(pods):
  """'2 Running, 1 Pending' over `pods`."""
  counts = {}
  for pod in pods:
    phase = (pod.get('status') or {}).get('phase') or 'Unknown'
    counts[phase] = counts.get(phase, 0) + 1
  return ', '.join(f'{n} {phase}' for phase, n in sorted(counts.items())) or 'none yet'
