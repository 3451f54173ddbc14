"""A training job as a Kubeflow TFJob: the manifest, `kubectl apply`, and the job's state.

The Kubeflow training operator runs a TFJob as one pod per replica and sets each pod's TF_CONFIG
with the task types `chief` and `worker`, read by research.core.strategy (the chief writes the run's
outputs). A job of N workers is one `Chief` replica and N - 1 `Worker` replicas, every pod running
`python -m launch.train` with `job.worker_args(job)` and all of its node's GPUs; the workdir lives
on a PersistentVolumeClaim mounted in every pod.

The manifest is written to jobs/<namespace>-<name>.yaml under the current directory, not into the
workdir: the workdir is a path inside the pods (on the claim), usually not reachable from the
machine that submits. No job record is kept either: the job's name defaults to
`job.default_name(workdir)`, so `status(workdir)` finds it from the workdir alone.
"""

import json
import os
import posixpath
import re
import shlex
import shutil

import yaml

from research.core.errors import UserError
from research.infra import argv as argv_lib
from research.submit import job as job_lib

API_VERSION = 'kubeflow.org/v1'
KIND = 'TFJob'
# The operator reads the exit code of the container with this name; in any other container an
# exit is invisible to it (pkg/controller.v1/common/pod.go reads `GetDefaultContainerName()`), and
# its admission check rejects a replica without one (tensorflow_validation.go).
CONTAINER = 'tensorflow'
VOLUME = 'workdir'
MANIFEST_DIR = 'jobs'
# Lines of the chief's log searched for the last progress line: a few log periods' worth.
LOG_TAIL = 200
KUBECTL_TIMEOUT_SECONDS = 120
# A TFJob's name must be a DNS-1035 label (the operator's ValidateV1TFJob); its pods are named
# <name>-worker-<i>, so 52 characters leave room for the suffix within the 63 of a pod's label.
_NAME = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
_NAME_MAX = 52
# A namespace is a DNS-1123 label.
_NAMESPACE = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
# A PersistentVolumeClaim's name is a DNS-1123 subdomain: labels joined by dots, 253 at most.
_LABEL = r'[a-z0-9]([-a-z0-9]*[a-z0-9])?'
_CLAIM = re.compile(rf'^{_LABEL}(\.{_LABEL})*$')
_CLAIM_MAX = 253
# An image reference as the container runtimes parse it (github.com/distribution/reference,
# regexp.go): [host[:port]/]path[:tag][@digest], the path of lowercase components.
_COMPONENT = r'[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*'
_HOST_PART = r'(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
_HOST = rf'(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?'
_IMAGE = re.compile(
    rf'^(?P<name>(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*)(?::[\w][\w.-]{{0,127}})?'
    r'(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$')
_IMAGE_NAME_MAX = 255
IMAGE_HELP = ('use [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST] with NAME in lowercase letters, '
              "digits and '.', '_', '-', '/' (e.g. ghcr.io/team/research:v1)")


def check(job):
  """job_lib.check, then what a TFJob needs; raises UserError before anything is written."""
  job_lib.check(job)
  if job.tasks_per_node != 1:
    # Kubernetes places pods, not tasks on nodes: a worker is one pod holding its GPUs, so a
    # second task "on the same node" would be a second pod the scheduler may put anywhere.
    per_task = job.gpus_per_task
    raise UserError(
        f'--tasks_per_node={job.tasks_per_node}: on Kubernetes each worker is one pod with all of '
        f'its GPUs, so use --tasks_per_node=1 (the default); for one pod per task pass '
        f'--nodes={job.workers} --gpus_per_node={per_task} instead')
  if not job.image:
    raise UserError('a TFJob runs a container image: pass --image=REGISTRY/IMAGE:TAG, an image '
                    'with this repository and its requirements installed')
  image = _IMAGE.fullmatch(job.image)
  if not image or len(image.group('name')) > _IMAGE_NAME_MAX:
    raise UserError(f'--image={job.image!r} is not a container image reference: {IMAGE_HELP}')
  if not job.pvc:
    raise UserError('the workdir lives on a PersistentVolumeClaim that every pod mounts: pass '
                    '--pvc=CLAIM_NAME (kubectl get pvc -n NAMESPACE lists them)')
  if not _CLAIM.fullmatch(job.pvc) or len(job.pvc) > _CLAIM_MAX:
    raise UserError(f'--pvc={job.pvc!r} is not a PersistentVolumeClaim name: use at most '
                    f"{_CLAIM_MAX} lowercase letters, digits, '-' and '.', starting and ending "
                    'with a letter or digit (kubectl get pvc -n NAMESPACE lists them)')
  if not _NAME.match(job.name) or len(job.name) > _NAME_MAX:
    raise UserError(f'--name={job.name!r} is not a valid TFJob name: use at most {_NAME_MAX} '
                    "lowercase letters, digits and '-', starting with a letter")
  if not _NAMESPACE.match(job.namespace or '') or len(job.namespace) > 63:
    raise UserError(f'--namespace={job.namespace!r} is not a Kubernetes namespace name')
  mount = posixpath.normpath(job.mount_path or '')
  if not posixpath.isabs(mount) or mount == '/':
    raise UserError(f'--mount_path={job.mount_path!r} must be an absolute path other than "/": '
                    'where the pods mount the claim')
  workdir = posixpath.normpath(job.workdir)
  if not posixpath.isabs(workdir) or posixpath.commonpath([workdir, mount]) != mount:
    raise UserError(f'--workdir={job.workdir} is not on the volume: the pods mount --pvc='
                    f'{job.pvc} at {mount}, so pass a workdir under it (e.g. '
                    f'{posixpath.join(mount, job_lib.default_name(job.workdir))}) or set '
                    '--mount_path')


def _replica(job, replicas):
  container = {
      'name': CONTAINER,
      'image': job.image,
      # The image's python (job.python is the submitting machine's, for Slurm's shared disks).
      'command': ['python', '-m', 'launch.train', *job_lib.worker_args(job)],
      # Progress lines reach `kubectl logs` (and so `status`) as they are written.
      'env': [{'name': 'PYTHONUNBUFFERED', 'value': '1'}],
      'volumeMounts': [{'name': VOLUME, 'mountPath': posixpath.normpath(job.mount_path)}],
  }
  if job.gpus_per_node:
    # Extended resources take their request from the limit.
    container['resources'] = {'limits': {'nvidia.com/gpu': job.gpus_per_node}}
  return {
      'replicas': replicas,
      # A failed pod whose exit code is >= 128 is deleted and created again; 1-127 fail the job.
      # kubeflow/training-operator: pkg/util/train/train_util.go `IsRetryableExitCode` is
      # `exitCode >= 128`, used by ReconcilePods in pkg/controller.v1/common/pod.go for
      # RestartPolicyExitCode. launch.train exits job_lib.PREEMPTED_EXIT_CODE (143) once a
      # SIGTERM (a node drained, a pod evicted) stopped it and the run was saved, and
      # job_lib.LOST_WORKER_EXIT_CODE (200) when another pod vanished (its node gone, killed,
      # frozen): either way the new pod resumes from the last checkpoint; a bug (exit 1) or a
      # bad setting (2) fails the job at once instead of crash-looping.
      'restartPolicy': 'ExitCode',
      'template': {'spec': {
          'containers': [container],
          'volumes': [{'name': VOLUME, 'persistentVolumeClaim': {'claimName': job.pvc}}],
      }},
  }


def manifest(job):
  """The TFJob for `job` as a dict; raises UserError if the job cannot run on Kubernetes."""
  check(job)
  specs = {'Chief': _replica(job, 1)}
  if job.workers > 1:
    specs['Worker'] = _replica(job, job.workers - 1)
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


def manifest_path(job):
  return os.path.join(MANIFEST_DIR, f'{job.namespace}-{job.name}.yaml')


def _status_command(workdir, name, namespace):
  command = ['python', '-m', 'launch.submit', '--status', '--cluster=kubernetes',
             f'--workdir={workdir}']
  if name != job_lib.default_name(workdir):
    command.append(f'--name={name}')
  if namespace != 'default':
    command.append(f'--namespace={namespace}')
  return shlex.join(command)


def render(job):
  """The manifest as YAML, after a comment saying what wrote it and how to follow it."""
  text = yaml.safe_dump(manifest(job), sort_keys=False, default_flow_style=False, width=4096)
  return (f'# Kubeflow TFJob for {job.workdir}, written by python -m launch.submit '
          f'--cluster=kubernetes.\n'
          f'# Status: {_status_command(job.workdir, job.name, job.namespace)}\n' + text)


def _kubectl():
  path = shutil.which('kubectl')
  if not path:
    raise UserError('kubectl not found: install it or put it on PATH, configured for the '
                    'cluster (kubectl get tfjobs should work); or pass --dry_run to print the '
                    'manifest without submitting it')
  return path


def _one_line(text):
  return '; '.join(line.strip() for line in text.splitlines() if line.strip())


def _run(kubectl, args):
  return job_lib.run_command([kubectl, *args], KUBECTL_TIMEOUT_SECONDS,
                             'is the cluster reachable (kubectl cluster-info)?')


def submit(job, dry_run=False):
  """Writes the TFJob manifest and applies it with kubectl; returns what to tell the user.

  With dry_run, returns the manifest and the command that would apply it, and neither writes nor
  runs anything. Every check runs first: an error means nothing was written or submitted.
  """
  text = render(job)
  path = manifest_path(job)
  if dry_run:
    return (f'{text}\n# Dry run: nothing written or submitted. A submission writes the above to '
            f'{path}\n# and runs: kubectl apply -f {path}')
  kubectl = _kubectl()
  os.makedirs(MANIFEST_DIR, exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
  result = _run(kubectl, ['apply', '-f', path])
  if result.returncode:
    hint = ''
    if 'no matches for kind' in result.stderr:
      hint = ' (is the Kubeflow training operator installed in the cluster?)'
    raise UserError(f'kubectl apply -f {path} failed (exit {result.returncode}): '
                    f'{_one_line(result.stderr) or "no message"}{hint}')
  applied = _one_line(result.stdout)
  pods = f'{job.name}-chief-0'
  if job.workers > 1:
    pods += f', {job.name}-worker-0' + (f'..{job.workers - 2}' if job.workers > 2 else '')
  lines = [f'submitted TFJob {job.name} in namespace {job.namespace}: {job.workers} worker(s) '
           f'({pods})',
           f'  kubectl: {applied}',
           f'  manifest: {path}',
           f'  logs: kubectl logs -f {job.name}-chief-0 -n {job.namespace}',
           f'  status: {_status_command(job.workdir, job.name, job.namespace)}']
  if re.search(r'\b(unchanged|configured)\b', applied):
    lines.append(f'  note: a TFJob named {job.name} already existed and was updated in place; a '
                 f'finished job does not run again: kubectl delete tfjob {job.name} -n '
                 f'{job.namespace}, then submit again (or pass another --name)')
  return '\n'.join(lines)


def _state(tfjob):
  """The TFJob's state (the type of its last true condition, as kubectl's State column) and
  that condition's message."""
  conditions = (tfjob.get('status') or {}).get('conditions') or []
  current = [c for c in conditions if c.get('status') == 'True']
  if not current:
    return 'Pending', 'the operator has not reported on it yet'
  last = current[-1]
  return last.get('type', '?'), _one_line(last.get('message') or last.get('reason') or '')


def _replicas(tfjob):
  statuses = (tfjob.get('status') or {}).get('replicaStatuses') or {}
  parts = []
  for rtype, counts in statuses.items():
    shown = [f'{counts[k]} {k}' for k in ('active', 'succeeded', 'failed') if counts.get(k)]
    parts.append(f'{rtype} {", ".join(shown) or "none active"}')
  return '; '.join(parts) or 'no replica status yet'


def _trained_workdir(tfjob):
  """The --workdir the TFJob's chief trains, if its command names one."""
  chief = (tfjob.get('spec') or {}).get('tfReplicaSpecs', {}).get('Chief') or {}
  for container in chief.get('template', {}).get('spec', {}).get('containers', []):
    if container.get('name') == CONTAINER:
      return argv_lib.flag_value(
          container.get('command', []) + container.get('args', []), 'workdir')
  return None


def status(workdir, name='', namespace='default'):
  """The TFJob's state from kubectl and the chief's last progress line, as text."""
  name = name or job_lib.default_name(workdir)
  namespace = namespace or 'default'
  kubectl = _kubectl()
  got = _run(kubectl, ['get', 'tfjob', name, '-n', namespace, '-o', 'json'])
  if got.returncode:
    message = _one_line(got.stderr) or 'no message'
    if 'NotFound' in message or 'not found' in message:
      raise UserError(f'no TFJob {name!r} in namespace {namespace!r} ({message}): the name '
                      'defaults to the workdir\'s last component; pass the --name and '
                      '--namespace it was submitted with')
    raise UserError(f'kubectl get tfjob {name} -n {namespace} failed: {message}')
  try:
    tfjob = json.loads(got.stdout)
  except ValueError:
    raise UserError(f'kubectl get tfjob {name} -o json printed no JSON: '
                    f'{_one_line(got.stdout)[:200]}') from None
  state, detail = _state(tfjob)
  lines = [f'TFJob {name} (namespace {namespace}): {state}' + (f': {detail}' if detail else ''),
           f'  replicas: {_replicas(tfjob)}']
  trained = _trained_workdir(tfjob)
  if trained and posixpath.normpath(trained) != posixpath.normpath(workdir):
    lines.append(f'  note: this TFJob trains --workdir={trained}, not {workdir}')
  pod = f'{name}-chief-0'
  logs = _run(kubectl, ['logs', pod, '-n', namespace, f'--tail={LOG_TAIL}'])
  if logs.returncode:
    lines.append(f'  progress: none yet (kubectl logs {pod}: '
                 f'{_one_line(logs.stderr) or "no message"})')
  else:
    progress = job_lib.last_progress_line(logs.stdout.splitlines())
    lines.append(f'  progress: {progress or "no progress line yet"}')
  lines.append(f'  logs: kubectl logs -f {pod} -n {namespace}')
  return '\n'.join(lines)
