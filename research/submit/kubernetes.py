"""A training job on Kubernetes: the manifest, `kubectl apply`, and the job's state.

Two kinds of manifest (`job.kubernetes_kind`): a JobSet (research.submit.jobset, the default) or
a Kubeflow TFJob (research.submit.tfjob) for clusters that still run the training operator. In
either, every pod runs `python -m launch.train` with `job.worker_args(job)` and all of its node's
GPUs, and the workdir lives on a PersistentVolumeClaim mounted in every pod.

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
from research.submit import jobset
from research.submit import tfjob

KINDS = {'jobset': jobset, 'tfjob': tfjob}
DEFAULT_KIND = 'jobset'
VOLUME = 'workdir'
MANIFEST_DIR = 'jobs'
# Lines of the chief's log searched for the last progress line: a few log periods' worth.
LOG_TAIL = 200
KUBECTL_TIMEOUT_SECONDS = 120
# A TFJob's and a JobSet's name must be a DNS-1035 label; how long depends on the pod names.
_NAME = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
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


def _check_image_and_claim(job, kind):
  if not job.image:
    raise UserError(f'a {kind.KIND} runs a container image: pass --image=REGISTRY/IMAGE:TAG, an '
                    'image with this repository and its requirements installed')
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


def check(job):
  """job_lib.check, then what a Kubernetes job needs; raises UserError before anything is
  written."""
  job_lib.check(job)
  if job.kubernetes_kind not in KINDS:
    raise UserError(f'unknown --kubernetes_kind={job.kubernetes_kind!r}: use '
                    f'{" or ".join(KINDS)}')
  kind = KINDS[job.kubernetes_kind]
  if job.tasks_per_node != 1:
    # Kubernetes places pods, not tasks on nodes: a worker is one pod holding its GPUs, so a
    # second task "on the same node" would be a second pod the scheduler may put anywhere.
    per_task = job.gpus_per_task
    raise UserError(
        f'--tasks_per_node={job.tasks_per_node}: on Kubernetes each worker is one pod with all of '
        f'its GPUs, so use --tasks_per_node=1 (the default); for one pod per task pass '
        f'--nodes={job.workers} --gpus_per_node={per_task} instead')
  _check_image_and_claim(job, kind)
  name_max = kind.name_max(job)
  if not _NAME.fullmatch(job.name) or len(job.name) > name_max:
    raise UserError(f'--name={job.name!r} is not a valid {kind.KIND} name: use at most '
                    f"{name_max} lowercase letters, digits and '-', starting with a letter"
                    + (' (its pods add their index to it)' if kind is jobset else ''))
  if not _NAMESPACE.fullmatch(job.namespace or '') or len(job.namespace) > 63:
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


def _pod_spec(job, container_name):
  container = {
      'name': container_name,
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
      'containers': [container],
      'volumes': [{'name': VOLUME, 'persistentVolumeClaim': {'claimName': job.pvc}}],
  }


def manifest(job):
  """The JobSet or TFJob for `job` as a dict; raises UserError if the job cannot run on
  Kubernetes."""
  check(job)
  kind = KINDS[job.kubernetes_kind]
  return kind.manifest(job, _pod_spec(job, kind.CONTAINER))


def manifest_path(job):
  return os.path.join(MANIFEST_DIR, f'{job.namespace}-{job.name}.yaml')


def _status_command(workdir, name, namespace, kind):
  command = ['python', '-m', 'launch.submit', '--status', '--cluster=kubernetes',
             f'--workdir={workdir}']
  if name != job_lib.default_name(workdir):
    command.append(f'--name={name}')
  if namespace != 'default':
    command.append(f'--namespace={namespace}')
  if kind != DEFAULT_KIND:
    command.append(f'--kubernetes_kind={kind}')
  return shlex.join(command)


def _job_status_command(job):
  return _status_command(job.workdir, job.name, job.namespace, job.kubernetes_kind)


def render(job):
  """The manifest as YAML, after a comment saying what wrote it and how to follow it."""
  text = yaml.safe_dump(manifest(job), sort_keys=False, default_flow_style=False, width=4096)
  return (f'# {KINDS[job.kubernetes_kind].TITLE} for {job.workdir}, written by python -m '
          f'launch.submit --cluster=kubernetes.\n'
          f'# Status: {_job_status_command(job)}\n' + text)


def _kubectl(resource):
  path = shutil.which('kubectl')
  if not path:
    raise UserError('kubectl not found: install it or put it on PATH, configured for the '
                    f'cluster (kubectl get {resource}s should work); or pass --dry_run to print '
                    'the manifest without submitting it')
  return path


def _one_line(text):
  return '; '.join(line.strip() for line in text.splitlines() if line.strip())


def _run(kubectl, args):
  return job_lib.run_command([kubectl, *args], KUBECTL_TIMEOUT_SECONDS,
                             'is the cluster reachable (kubectl cluster-info)?')


def submit(job, dry_run=False):
  """Writes the job's manifest and applies it with kubectl; returns what to tell the user.

  With dry_run, returns the manifest and the command that would apply it, and neither writes nor
  runs anything. Every check runs first: an error means nothing was written or submitted.
  """
  text = render(job)
  path = manifest_path(job)
  if dry_run:
    return (f'{text}\n# Dry run: nothing written or submitted. A submission writes the above to '
            f'{path}\n# and runs: kubectl apply -f {path}')
  kind = KINDS[job.kubernetes_kind]
  kubectl = _kubectl(kind.RESOURCE)
  os.makedirs(MANIFEST_DIR, exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
  result = _run(kubectl, ['apply', '-f', path])
  if result.returncode:
    hint = f' ({kind.MISSING_HINT})' if 'no matches for kind' in result.stderr else ''
    raise UserError(f'kubectl apply -f {path} failed (exit {result.returncode}): '
                    f'{_one_line(result.stderr) or "no message"}{hint}')
  applied = _one_line(result.stdout)
  lines = [f'submitted {kind.KIND} {job.name} in namespace {job.namespace}: {job.workers} '
           f'worker(s) ({kind.pod_names(job)})',
           f'  kubectl: {applied}',
           f'  manifest: {path}',
           f'  logs: {kind.log_hint(job.name, job.namespace, job.workers)}',
           f'  status: {_job_status_command(job)}']
  if re.search(r'\b(unchanged|configured)\b', applied):
    lines.append(f'  note: a {kind.KIND} named {job.name} already existed and was updated in '
                 f'place; a finished job does not run again: kubectl delete {kind.RESOURCE} '
                 f'{job.name} -n {job.namespace}, then submit again (or pass another --name)')
  return '\n'.join(lines)


def _trained_workdir(template, container_name):
  """The --workdir the pod template's trainer trains, if its command names one."""
  for container in (template.get('spec') or {}).get('containers', []):
    if container.get('name') == container_name:
      return argv_lib.flag_value(
          container.get('command', []) + container.get('args', []), 'workdir')
  return None


def _get_json(kubectl, args, what):
  """`kubectl get ARGS -o json` parsed; (None, message) when kubectl fails."""
  got = _run(kubectl, ['get', *args, '-o', 'json'])
  if got.returncode:
    return None, _one_line(got.stderr) or 'no message'
  try:
    return json.loads(got.stdout), ''
  except ValueError:
    raise UserError(f'kubectl get {what} -o json printed no JSON: '
                    f'{_one_line(got.stdout)[:200]}') from None


def _chief_pod(kind, kubectl, name, namespace):
  """(the pod with the progress lines or None, a line on the pods or None)."""
  if kind is tfjob:
    return tfjob.chief_pod(name), None
  pods, message = _get_json(kubectl, ['pods', '-n', namespace, '-l', jobset.pods_selector(name)],
                            'pods')
  if pods is None:
    return None, f'pods: unknown (kubectl get pods: {message})'
  items = pods.get('items') or []
  return jobset.chief_pod(items), f'pods: {jobset.pod_phases(items)}'


def status(workdir, name='', namespace='default', kind=DEFAULT_KIND):
  """The job's state from kubectl and worker 0's last progress line, as text."""
  name = name or job_lib.default_name(workdir)
  namespace = namespace or 'default'
  module = KINDS[kind]
  kubectl = _kubectl(module.RESOURCE)
  what = f'{module.RESOURCE} {name}'
  found, message = _get_json(kubectl, [module.RESOURCE, name, '-n', namespace], what)
  if found is None:
    if 'NotFound' in message or 'not found' in message:
      raise UserError(f'no {module.KIND} {name!r} in namespace {namespace!r} ({message}): the '
                      'name defaults to the workdir\'s last component; pass the --name, '
                      '--namespace and --kubernetes_kind it was submitted with')
    raise UserError(f'kubectl get {what} -n {namespace} failed: {message}')
  state, detail = module.state(found)
  detail = _one_line(detail)
  lines = [f'{module.KIND} {name} (namespace {namespace}): {state}'
           + (f': {detail}' if detail else ''),
           f'  replicas: {module.replicas(found)}']
  trained = _trained_workdir(module.pod_template(found), module.CONTAINER)
  if trained and posixpath.normpath(trained) != posixpath.normpath(workdir):
    lines.append(f'  note: this {module.KIND} trains --workdir={trained}, not {workdir}')
  pod, pods_line = _chief_pod(module, kubectl, name, namespace)
  if pods_line:
    lines.append(f'  {pods_line}')
  if pod is None:
    lines.append('  progress: none yet (worker 0 has no pod yet)')
  else:
    logs = _run(kubectl, ['logs', pod, '-n', namespace, f'--tail={LOG_TAIL}'])
    if logs.returncode:
      lines.append(f'  progress: none yet (kubectl logs {pod}: '
                   f'{_one_line(logs.stderr) or "no message"})')
    else:
      progress = job_lib.last_progress_line(logs.stdout.splitlines())
      lines.append(f'  progress: {progress or "no progress line yet"}')
    lines.append(f'  logs: kubectl logs -f {pod} -n {namespace}')
  return '\n'.join(lines)
