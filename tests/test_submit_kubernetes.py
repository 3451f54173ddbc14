"""research.submit.kubernetes with --kubernetes_kind=tfjob: TFJob manifests checked against the
TFJob API, and kubectl faked (tests/test_submit_jobset.py has the default kind, JobSet).

No Kubernetes runs here, so a manifest is checked against a JSON Schema of the TFJob built from
two published packages (the test extra installs both):
  - kubeflow-training, the training operator's Python SDK: its model classes (KubeflowOrgV1TFJob,
    ...) are generated from the operator's OpenAPI spec, itself generated from the Go types that
    the CRD's openAPIV3Schema comes from. Their fields, types and required fields give the TFJob
    levels of the schema.
  - kubernetes-validate: the Kubernetes JSON Schemas in their strict form (unknown fields
    rejected). The pod template, as in the CRD, is Kubernetes' PodTemplateSpec from there.
On top, the operator's admission checks (tensorflow_validation.go) and its enums. Negative cases
show the check rejects misspelled fields, wrong types and what the operator refuses. Where the
two sources differ the check is the stricter: the SDK requires spec.runPolicy (the CRD only
tfReplicaSpecs), and the manifest always has one.

kubectl is a stand-in script on PATH that records its arguments and answers as each test says:
by its first two arguments ('get pods'), else by its first ('apply').
"""

import copy
import importlib.resources
import json
import os
import re
import sys
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jsonschema
from kubeflow.training import models as sdk_models
from kubeflow.training.configuration import Configuration as SdkConfiguration
from kubeflow.training.constants import constants as sdk_constants
import kubernetes_validate
import referencing
import yaml

from research.core import config as config_lib
from research.core.errors import UserError
from research.infra import processes
from research.submit import job as job_lib
from research.submit import kubernetes
from tests import helpers

WORKDIR = '/runs/exp1'

# --- The TFJob schema ---------------------------------------------------------------------------

_K8S_DEFS = 'https://kubernetes.io/api/_definitions.json'
_PRIMITIVES = {'str': {'type': 'string'}, 'int': {'type': 'integer'},
               'bool': {'type': 'boolean'}, 'float': {'type': 'number'},
               'datetime': {'type': 'string'}, 'object': {}}
# Values the operator's Go API defines but its OpenAPI spec types as plain strings
# (pkg/apis/kubeflow.org/v1: common_types.go RestartPolicy, CleanPodPolicy; tensorflow_types.go
# TFJobReplicaType*).
_RESTART_POLICIES = ('Always', 'OnFailure', 'Never', 'ExitCode')
_CLEAN_POD_POLICIES = ('All', 'Running', 'None')
_TF_REPLICA_TYPES = ('PS', 'Worker', 'Chief', 'Master', 'Evaluator')


def _k8s_definitions():
  version = kubernetes_validate.latest_version()
  path = (importlib.resources.files('kubernetes_validate') / 'kubernetes-json-schema'
          / f'v{version}-local-strict' / '_definitions.json')
  return json.loads(path.read_text())


def _required(model, attribute):
  """Whether the SDK model refuses None for `attribute` (how the generator marks a required
  field: its setter raises)."""
  instance = model.__new__(model)
  instance.local_vars_configuration = SdkConfiguration()
  try:
    setattr(instance, attribute, None)
  except ValueError:
    return True
  return False


def _schema_of(type_name, k8s_defs):
  if type_name in _PRIMITIVES:
    return dict(_PRIMITIVES[type_name])
  match = re.fullmatch(r'list\[(.+)\]', type_name)
  if match:
    return {'type': 'array', 'items': _schema_of(match.group(1), k8s_defs)}
  match = re.fullmatch(r'dict\(str, (.+)\)', type_name)
  if match:
    return {'type': 'object', 'additionalProperties': _schema_of(match.group(1), k8s_defs)}
  if type_name.startswith('KubeflowOrgV1'):
    model = getattr(sdk_models, type_name)
    return {
        'type': 'object',
        'additionalProperties': False,
        'properties': {model.attribute_map[a]: _schema_of(t, k8s_defs)
                       for a, t in model.openapi_types.items()},
        'required': [model.attribute_map[a] for a in model.openapi_types if _required(model, a)],
    }
  # A Kubernetes type: V1PodTemplateSpec is io.k8s.api.core.v1.PodTemplateSpec, and so on.
  short = 'Quantity' if type_name == 'Quantity' else re.fullmatch(r'V1(\w+)', type_name).group(1)
  names = [n for n in k8s_defs['$defs']
           if n.endswith('.' + short) and (short == 'Quantity' or n.endswith('.v1.' + short))]
  assert len(names) == 1, (type_name, names)
  return {'$ref': f'{_K8S_DEFS}#/$defs/{names[0]}'}


def _tfjob_validator():
  k8s_defs = _k8s_definitions()
  schema = _schema_of(sdk_constants.TFJOB_MODEL, k8s_defs)
  schema['$schema'] = 'https://json-schema.org/draft/2020-12/schema'
  registry = referencing.Registry().with_resource(
      _K8S_DEFS, referencing.Resource.from_contents(k8s_defs))
  return jsonschema.Draft202012Validator(schema, registry=registry)


_VALIDATOR = None


def _admission_problems(tfjob):
  """What the API server and the operator's webhook refuse beyond the schema."""
  problems = []
  if tfjob.get('apiVersion') != sdk_constants.API_VERSION or tfjob.get('kind') != 'TFJob':
    problems.append(f'not a {sdk_constants.API_VERSION} TFJob: {tfjob.get("apiVersion")} '
                    f'{tfjob.get("kind")}')
  metadata = tfjob.get('metadata') or {}
  # ValidateV1TFJob: the name is a DNS-1035 label.
  name = metadata.get('name', '')
  if not re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', name) or len(name) > 63:
    problems.append(f'metadata.name {name!r} is not a DNS-1035 label')
  spec = tfjob.get('spec') or {}
  policy = (spec.get('runPolicy') or {}).get('cleanPodPolicy')
  if policy is not None and policy not in _CLEAN_POD_POLICIES:
    problems.append(f'runPolicy.cleanPodPolicy {policy!r} is not one of {_CLEAN_POD_POLICIES}')
  specs = spec.get('tfReplicaSpecs') or {}
  if not specs:
    problems.append('no tfReplicaSpecs')
  # validateV1TFReplicaSpecs: containers, an image in each, one named "tensorflow", one chief.
  chiefs = 0
  for rtype, replica in specs.items():
    if rtype not in _TF_REPLICA_TYPES:
      problems.append(f'replica type {rtype!r} is not one of {_TF_REPLICA_TYPES}')
    chiefs += rtype in ('Chief', 'Master')
    if replica.get('restartPolicy') not in _RESTART_POLICIES + (None,):
      problems.append(f'{rtype}.restartPolicy {replica.get("restartPolicy")!r} is not one of '
                      f'{_RESTART_POLICIES}')
    containers = (replica.get('template') or {}).get('spec', {}).get('containers') or []
    if not containers:
      problems.append(f'{rtype}: no containers')
    if any(not c.get('image') for c in containers):
      problems.append(f'{rtype}: a container without an image')
    if not any(c.get('name') == sdk_constants.TFJOB_CONTAINER for c in containers):
      problems.append(f'{rtype}: no container named {sdk_constants.TFJOB_CONTAINER!r}')
  if chiefs > 1:
    problems.append('more than 1 chief/master')
  return problems


def tfjob_problems(tfjob):
  """Everything wrong with `tfjob` as a TFJob, as messages; [] when it would be accepted."""
  global _VALIDATOR
  if _VALIDATOR is None:
    _VALIDATOR = _tfjob_validator()
  errors = sorted(_VALIDATOR.iter_errors(tfjob), key=lambda e: [str(p) for p in e.absolute_path])
  return ([f'{"/".join(map(str, e.absolute_path))}: {e.message}' for e in errors]
          + _admission_problems(tfjob))


# --- Jobs -----------------------------------------------------------------------------------------


def make_job(workdir=WORKDIR, **overrides):
  """A 2-node TFJob training cnn_mnist in `workdir`, as launch.submit would build it."""
  fields = dict(cluster='kubernetes', kubernetes_kind='tfjob', workdir=workdir,
                train_args=['--config=configs/cnn_mnist.py', f'--workdir={workdir}'],
                config=config_lib.base(), nodes=2, image='registry/img:tag', pvc='runs-claim',
                name=job_lib.default_name(workdir))
  fields.update(overrides)
  return job_lib.Job(**fields)


def rendered_and_valid(test, job, problems_of):
  """The manifest `render(job)` writes, after checking it is `manifest(job)` and valid."""
  manifest = yaml.safe_load(kubernetes.render(job))
  test.assertEqual(manifest, kubernetes.manifest(job))
  test.assertEqual(problems_of(manifest), [])
  return manifest


def _container(tfjob, rtype='Chief'):
  return tfjob['spec']['tfReplicaSpecs'][rtype]['template']['spec']['containers'][0]


class ManifestTest(parameterized.TestCase):

  @parameterized.product(nodes=(1, 2, 4), gpus_per_node=(0, 2))
  def test_manifest_is_a_valid_tfjob(self, nodes, gpus_per_node):
    job = make_job(nodes=nodes, gpus_per_node=gpus_per_node)
    tfjob = rendered_and_valid(self, job, tfjob_problems)

    self.assertEqual((tfjob['metadata']['name'], tfjob['metadata']['namespace']),
                     ('exp1', 'default'))
    specs = tfjob['spec']['tfReplicaSpecs']
    self.assertEqual(specs['Chief']['replicas'], 1)
    if nodes == 1:
      self.assertNotIn('Worker', specs)
    else:
      self.assertEqual(specs['Worker']['replicas'], nodes - 1)
    for rtype, replica in specs.items():
      self.assertEqual(replica['restartPolicy'], 'ExitCode')
      container = _container(tfjob, rtype)
      self.assertEqual(container['name'], 'tensorflow')
      self.assertEqual(container['image'], 'registry/img:tag')
      self.assertEqual(container['command'],
                       ['python', '-m', 'launch.train', *job_lib.worker_args(job)])
      self.assertIn(f'--num_gpus={gpus_per_node}', container['command'])
      self.assertIn('--preempted_exit_code=143', container['command'])
      if nodes > 1:
        self.assertIn('--strategy=multi_worker_mirrored', container['command'])
      if gpus_per_node:
        self.assertEqual(container['resources'], {'limits': {'nvidia.com/gpu': gpus_per_node}})
      else:
        self.assertNotIn('resources', container)
      self.assertEqual(container['volumeMounts'], [{'name': 'workdir', 'mountPath': '/runs'}])
      self.assertEqual(replica['template']['spec']['volumes'],
                       [{'name': 'workdir', 'persistentVolumeClaim': {'claimName': 'runs-claim'}}])

  def test_restarts_a_saved_stop_or_a_lost_worker_and_fails_a_bug(self):
    # The operator's rule for restartPolicy ExitCode (training-operator IsRetryableExitCode):
    # a pod that exits with a code >= 128 is replaced, 1-127 fail the job.
    def restarted(replica, code):
      self.assertEqual(replica['restartPolicy'], 'ExitCode')
      return code >= 128

    for replica in kubernetes.manifest(make_job(nodes=2))['spec']['tfReplicaSpecs'].values():
      for code in (processes.PREEMPTED_EXIT_CODE, processes.LOST_WORKER_EXIT_CODE):
        self.assertTrue(restarted(replica, code), code)
      for code in (1, 2):  # an error; a bad setting (UserError)
        self.assertFalse(restarted(replica, code), code)

  def test_render_says_what_made_it(self):
    text = kubernetes.render(make_job())
    self.assertStartsWith(text, '# Kubeflow TFJob for /runs/exp1')
    self.assertIn('python -m launch.submit --status --cluster=kubernetes --workdir=/runs/exp1',
                  text)


def _break(path, action, value=None):
  """A mutation of a valid manifest: `action` ('set', 'del', 'rename' to `value`) at `path`."""
  def mutate(tfjob):
    parent = tfjob
    for key in path[:-1]:
      parent = parent[key]
    if action == 'set':
      parent[path[-1]] = value
    elif action == 'del':
      del parent[path[-1]]
    else:
      parent[value] = parent.pop(path[-1])
  return mutate


def assert_rejects(test, problems_of, manifest, mutate, expected):
  """`manifest` passes `problems_of`, and after `mutate` one of its problems says `expected`."""
  test.assertEqual(problems_of(manifest), [])
  broken = copy.deepcopy(manifest)
  mutate(broken)
  problems = problems_of(broken)
  test.assertTrue(any(expected in p for p in problems), problems)


_CHIEF = ('spec', 'tfReplicaSpecs', 'Chief')
_CHIEF_CONTAINER = _CHIEF + ('template', 'spec', 'containers', 0)


class SchemaRejectsTest(parameterized.TestCase):
  """The check fails on what kubectl or the operator would refuse: it can fail."""

  @parameterized.named_parameters(
      ('misspelled_spec_field', _break(('spec', 'tfReplicaSpecs'), 'rename', 'tfReplicaSpec'),
       "'tfReplicaSpec' was unexpected"),
      ('missing_required_field', _break(('spec', 'tfReplicaSpecs'), 'del'),
       "'tfReplicaSpecs' is a required property"),
      ('misspelled_run_policy_field',
       _break(('spec', 'runPolicy', 'cleanPodPolicy'), 'rename', 'cleanpodPolicy'),
       "'cleanpodPolicy' was unexpected"),
      ('replicas_as_string', _break(('spec', 'tfReplicaSpecs', 'Worker', 'replicas'), 'set', '1'),
       "'1' is not of type 'integer'"),
      ('misspelled_replica_field', _break(_CHIEF + ('restartPolicy',), 'rename', 'restartpolicy'),
       "'restartpolicy' was unexpected"),
      ('misspelled_pod_spec_field', _break(_CHIEF + ('template', 'spec', 'volumes'), 'rename',
                                           'volume'), "'volume' was unexpected"),
      ('misspelled_container_field',
       _break(_CHIEF_CONTAINER + ('volumeMounts',), 'rename', 'volumeMount'),
       "'volumeMount' was unexpected"),
      ('command_as_string',
       _break(_CHIEF_CONTAINER + ('command',), 'set', 'python -m launch.train'),
       "is not of type 'array'"),
      ('container_without_name', _break(_CHIEF_CONTAINER + ('name',), 'del'),
       "'name' is a required property"),
      ('env_value_as_number', _break(_CHIEF_CONTAINER + ('env', 0, 'value'), 'set', 1),
       "1 is not of type 'string'"),
      ('gpu_limit_as_list',
       _break(_CHIEF_CONTAINER + ('resources', 'limits', 'nvidia.com/gpu'), 'set', [2]),
       'is not valid under any of the given schemas'),
      ('claim_name_misspelled',
       _break(_CHIEF + ('template', 'spec', 'volumes', 0, 'persistentVolumeClaim', 'claimName'),
              'rename', 'claimname'), "'claimName' is a required property"),
      ('metadata_field_misspelled', _break(('metadata', 'namespace'), 'rename', 'namspace'),
       "'namspace' was unexpected"),
      ('wrong_kind', _break(('kind',), 'set', 'TfJob'), 'not a kubeflow.org/v1 TFJob'),
      ('name_not_dns_label', _break(('metadata', 'name'), 'set', 'Exp_1'), 'DNS-1035'),
      ('container_not_named_tensorflow', _break(_CHIEF_CONTAINER + ('name',), 'set', 'tf'),
       "no container named 'tensorflow'"),
      ('unknown_restart_policy', _break(_CHIEF + ('restartPolicy',), 'set', 'OnExitCode'),
       "'OnExitCode' is not one of"),
      ('unknown_clean_pod_policy',
       _break(('spec', 'runPolicy', 'cleanPodPolicy'), 'set', 'Finished'),
       "'Finished' is not one of"),
      ('unknown_replica_type',
       _break(('spec', 'tfReplicaSpecs', 'Worker'), 'rename', 'Workers'),
       "'Workers' is not one of"),
      ('chief_and_master', _break(('spec', 'tfReplicaSpecs', 'Worker'), 'rename', 'Master'),
       'more than 1 chief/master'),
  )
  def test_rejects(self, mutate, expected):
    assert_rejects(self, tfjob_problems, kubernetes.manifest(make_job(nodes=2, gpus_per_node=2)),
                   mutate, expected)

  def test_the_pod_template_is_kubernetes_strict_schema(self):
    # The nested $ref resolved to the real PodSpec: a field that exists there is accepted.
    tfjob = kubernetes.manifest(make_job())
    tfjob['spec']['tfReplicaSpecs']['Chief']['template']['spec']['nodeSelector'] = {'gpu': 'a'}
    self.assertEqual(tfjob_problems(tfjob), [])


class CheckTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('no_image', dict(image=''), '--image'),
      ('no_pvc', dict(pvc=''), '--pvc'),
      ('tasks_per_node', dict(tasks_per_node=2, gpus_per_node=2),
       '--nodes=4 --gpus_per_node=1'),
      ('workdir_off_the_volume', dict(workdir='/data/exp1'), 'is not on the volume'),
      ('workdir_beside_the_mount', dict(workdir='/runsx/exp1'), 'is not on the volume'),
      ('workdir_escapes_the_mount', dict(workdir='/runs/../etc/exp1'), 'is not on the volume'),
      ('relative_workdir', dict(workdir='runs/exp1'), 'is not on the volume'),
      ('relative_mount_path', dict(mount_path='runs'), '--mount_path'),
      ('bad_name', dict(name='Exp_1'), "--name='Exp_1'"),
      ('long_name', dict(name='a' * 53), 'at most 52'),
      ('bad_namespace', dict(namespace='Team A'), '--namespace'),
      ('name_ending_in_a_newline', dict(name='exp1\n'), "--name='exp1\\n'"),
      ('namespace_ending_in_a_newline', dict(namespace='team\n'), "--namespace='team\\n'"),
      ('batch_does_not_divide', dict(nodes=3), 'does not divide over 3 replicas'),
      ('image_with_a_space', dict(image='registry/img tag'),
       "--image='registry/img tag' is not a container image reference"),
      ('image_with_an_uppercase_path', dict(image='registry.io/Team/img:v1'),
       "--image='registry.io/Team/img:v1' is not a container image reference"),
      ('image_with_an_empty_tag', dict(image='img:'), "--image='img:' is not a container"),
      ('image_with_a_bad_digest', dict(image='img@sha256:abc'), "--image='img@sha256:abc' is"),
      ('image_with_a_scheme', dict(image='https://registry.io/img'), 'is not a container image'),
      ('pvc_with_uppercase', dict(pvc='Runs_Claim'),
       "--pvc='Runs_Claim' is not a PersistentVolumeClaim name"),
      ('pvc_with_a_slash', dict(pvc='team/runs'), "--pvc='team/runs' is not a Persistent"),
      ('pvc_too_long', dict(pvc='a' * 254), 'is not a PersistentVolumeClaim name'),
      ('pvc_ending_in_a_dash', dict(pvc='runs-'), "--pvc='runs-' is not a PersistentVolumeClaim"),
  )
  def test_error(self, overrides, expected):
    with self.assertRaisesRegex(UserError, re.escape(expected)) as raised:
      kubernetes.manifest(make_job(**overrides))
    self.assertNotIn('\n', str(raised.exception))

  @parameterized.parameters(
      'python:3.11', 'img', 'localhost:5000/team/img:v1.2', 'ghcr.io/org/repo/img:latest',
      'registry.example.com:443/a/b_c__d-e.f:Tag_1', 'img@sha256:' + 'ab' * 32,
      'docker.io/library/img:1@sha256:' + '0f' * 32, 'Registry.IO/img')
  def test_valid_image_references_pass(self, image):
    self.assertEqual(_container(kubernetes.manifest(make_job(image=image)))['image'], image)

  @parameterized.parameters('runs', 'runs-claim', 'team.runs-1', '0', 'a' * 253)
  def test_valid_claim_names_pass(self, pvc):
    volume = kubernetes.manifest(make_job(pvc=pvc))['spec']['tfReplicaSpecs']['Chief'][
        'template']['spec']['volumes'][0]
    self.assertEqual(volume['persistentVolumeClaim']['claimName'], pvc)

  def test_bad_image_from_the_command_line_is_one_line(self):
    proc = helpers.run_forked('launch.submit', '--cluster=kubernetes', '--image=my image',
                              '--pvc=runs', '--dry_run', '--', '--config=configs/cnn_mnist.py',
                              '--workdir=/runs/exp1')
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertEqual(helpers.error_line(proc),
                     f"error: --image='my image' is not a container image reference: "
                     f"{kubernetes.IMAGE_HELP}")
    self.assertNotIn('Traceback', proc.stderr)

  def test_workdir_may_be_deep_under_the_mount(self):
    job = make_job(workdir='/mnt/team/runs/exp1', mount_path='/mnt/team/')
    self.assertEqual(_container(kubernetes.manifest(job))['volumeMounts'][0]['mountPath'],
                     '/mnt/team')


# --- kubectl ------------------------------------------------------------------------------------

_FAKE_KUBECTL = '''#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
call = {{'argv': args}}
if args[:2] == ['apply', '-f']:
  with open(args[2]) as f:
    call['file'] = f.read()
with open(os.path.join(here, 'calls.jsonl'), 'a') as f:
  f.write(json.dumps(call) + '\\n')
with open(os.path.join(here, 'answers.json')) as f:
  answers = json.load(f)
answer = answers.get(' '.join(args[:2]), answers.get(args[0], {{}}))
sys.stdout.write(answer.get('stdout', ''))
sys.stderr.write(answer.get('stderr', ''))
sys.exit(answer.get('code', 0))
'''


class KubectlTestCase(parameterized.TestCase):
  """Runs in an empty current directory, with only a stand-in kubectl on PATH."""

  def setUp(self):
    super().setUp()
    root = self.create_tempdir().full_path
    self.bin = os.path.join(root, 'bin')
    self.cwd = os.path.join(root, 'cwd')
    os.makedirs(self.bin)
    os.makedirs(self.cwd)
    self.addCleanup(os.chdir, os.getcwd())
    os.chdir(self.cwd)
    self.enter_context(mock.patch.dict(os.environ, {'PATH': self.bin}))

  def fake_kubectl(self, **answers):
    """kubectl that answers `answers['get pods']` or `answers['apply']` (stdout, stderr, code) as
    its first arguments say, and records its calls."""
    path = os.path.join(self.bin, 'kubectl')
    with open(path, 'w') as f:
      f.write(_FAKE_KUBECTL.format(python=sys.executable))
    os.chmod(path, 0o755)
    with open(os.path.join(self.bin, 'answers.json'), 'w') as f:
      json.dump(answers, f)

  def calls(self):
    path = os.path.join(self.bin, 'calls.jsonl')
    if not os.path.exists(path):
      return []
    with open(path) as f:
      return [json.loads(line) for line in f]

  def cwd_files(self):
    return sorted(os.path.relpath(os.path.join(d, f), self.cwd)
                  for d, _, files in os.walk(self.cwd) for f in files)


class SubmitTest(KubectlTestCase):

  def test_applies_the_written_manifest(self):
    self.fake_kubectl(apply={'stdout': 'tfjob.kubeflow.org/exp1 created\n'})
    job = make_job()
    out = kubernetes.submit(job)
    self.assertEqual(self.cwd_files(), ['jobs/default-exp1.yaml'])
    with open('jobs/default-exp1.yaml') as f:
      self.assertEqual(f.read(), kubernetes.render(job))
    calls = self.calls()
    self.assertEqual([c['argv'] for c in calls], [['apply', '-f', 'jobs/default-exp1.yaml']])
    self.assertEqual(yaml.safe_load(calls[0]['file']), kubernetes.manifest(job))
    self.assertIn('submitted TFJob exp1 in namespace default', out)
    self.assertIn('tfjob.kubeflow.org/exp1 created', out)
    self.assertIn('kubectl logs -f exp1-chief-0 -n default', out)
    self.assertIn('python -m launch.submit --status --cluster=kubernetes --workdir=/runs/exp1',
                  out)
    self.assertNotIn('already existed', out)

  def test_another_name_and_namespace(self):
    self.fake_kubectl(apply={'stdout': 'tfjob.kubeflow.org/big created\n'})
    out = kubernetes.submit(make_job(name='big', namespace='team-a'))
    self.assertEqual(self.cwd_files(), ['jobs/team-a-big.yaml'])
    self.assertIn('kubectl logs -f big-chief-0 -n team-a', out)
    self.assertIn('--workdir=/runs/exp1 --name=big --namespace=team-a', out)

  def test_an_existing_job_is_pointed_out(self):
    self.fake_kubectl(apply={'stdout': 'tfjob.kubeflow.org/exp1 unchanged\n'})
    self.assertIn('kubectl delete tfjob exp1 -n default', kubernetes.submit(make_job()))

  def test_rejected_submission(self):
    self.fake_kubectl(apply={
        'code': 1,
        'stderr': 'error: resource mapping not found for name: "exp1" namespace: "default" '
                  'from "jobs/default-exp1.yaml": no matches for kind "TFJob" in version '
                  '"kubeflow.org/v1"\nensure CRDs are installed first\n'})
    with self.assertRaises(UserError) as caught:
      kubernetes.submit(make_job())
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    self.assertIn('kubectl apply -f jobs/default-exp1.yaml failed (exit 1)', message)
    self.assertIn('no matches for kind "TFJob" in version "kubeflow.org/v1"; ensure CRDs are '
                  'installed first', message)
    self.assertIn('training operator', message)

  def test_kubectl_not_found(self):
    with self.assertRaisesRegex(UserError, r'^kubectl not found: install it'):
      kubernetes.submit(make_job())
    self.assertEqual(self.cwd_files(), [])

  def test_dry_run_writes_and_runs_nothing(self):
    self.fake_kubectl()
    job = make_job()
    out = kubernetes.submit(job, dry_run=True)
    self.assertStartsWith(out, kubernetes.render(job))
    self.assertIn('kubectl apply -f jobs/default-exp1.yaml', out)
    self.assertEqual(self.calls(), [])
    self.assertEqual(self.cwd_files(), [])

  def test_dry_run_needs_no_kubectl(self):
    self.assertIn('kind: TFJob', kubernetes.submit(make_job(), dry_run=True))

  def test_checks_come_first(self):
    self.fake_kubectl()
    with self.assertRaisesRegex(UserError, 'batch_size 128 does not divide over 3 replicas'):
      kubernetes.submit(make_job(nodes=3))
    self.assertEqual(self.calls(), [])
    self.assertEqual(self.cwd_files(), [])


def _tfjob_json(conditions, replica_statuses, workdir=WORKDIR):
  """What `kubectl get tfjob -o json` prints for a job submitted from `make_job()`."""
  tfjob = kubernetes.manifest(make_job(workdir=workdir, name='exp1'))
  tfjob['metadata'].update(creationTimestamp='2026-11-23T01:00:00Z', generation=1,
                           resourceVersion='4242', uid='7c1a7d9e-2f0e-4c57-9a0b-1f6a3b8c9d10')
  tfjob['spec']['successPolicy'] = ''
  for replica in tfjob['spec']['tfReplicaSpecs'].values():
    container = replica['template']['spec']['containers'][0]
    container['ports'] = [{'containerPort': 2222, 'name': 'tfjob-port'}]  # the operator's default
  tfjob['status'] = {
      'conditions': [dict(type=t, status=s, reason=f'TFJob{t}', message=m,
                          lastTransitionTime='2026-11-23T01:00:05Z',
                          lastUpdateTime='2026-11-23T01:00:05Z') for t, s, m in conditions],
      'replicaStatuses': replica_statuses,
      'startTime': '2026-11-23T01:00:01Z',
  }
  return tfjob


_CREATED = ('Created', 'True', 'TFJob exp1 is created.')
_RUNNING = ('Running', 'True', 'TFJob default/exp1 is running.')
_LOG = '''\
I1123 01:00:10.000000 140 trainer.py:140] Training 1000 steps.
I1123 01:02:03.456789 140 trainer.py:251] step 100/1000 epoch 0.21: loss 0.4121 accuracy 0.8700 \
lr 1.00e-03 1200 img/s ETA 120s
I1123 01:02:13.456789 140 trainer.py:251] step 120/1000 epoch 0.26: loss 0.3121 accuracy 0.9000 \
lr 1.00e-03 1234 img/s ETA 100s
I1123 01:02:14.000000 140 checkpoints.py:88] Saved checkpoint for step 120.
'''


class StatusTest(KubectlTestCase):

  def test_canned_status_is_a_valid_tfjob(self):
    tfjob = _tfjob_json([_CREATED, _RUNNING], {'Chief': {'active': 1}, 'Worker': {'active': 1}})
    self.assertEqual(tfjob_problems(tfjob), [])

  @parameterized.named_parameters(
      ('running', [_CREATED, _RUNNING], {'Chief': {'active': 1}, 'Worker': {'active': 1}},
       'TFJob exp1 (namespace default): Running: TFJob default/exp1 is running.',
       'replicas: Chief 1 active; Worker 1 active'),
      ('restarting', [_CREATED, ('Running', 'False', 'TFJob default/exp1 is running.'),
                      ('Restarting', 'True', 'job exp1 is restarting because Worker replica(s) '
                       'failed.')],
       {'Chief': {'active': 1}, 'Worker': {'failed': 1}},
       'Restarting: job exp1 is restarting because Worker replica(s) failed.',
       'replicas: Chief 1 active; Worker 1 failed'),
      ('succeeded', [_CREATED, ('Running', 'False', 'TFJob default/exp1 is running.'),
                     ('Succeeded', 'True', 'TFJob default/exp1 successfully completed.')],
       {'Chief': {'succeeded': 1}, 'Worker': {'succeeded': 1}},
       'Succeeded: TFJob default/exp1 successfully completed.',
       'replicas: Chief 1 succeeded; Worker 1 succeeded'),
      ('not_yet_seen', [], {}, 'Pending', 'replicas: no replica status yet'),
  )
  def test_state_and_progress(self, conditions, replica_statuses, state, replicas):
    tfjob = _tfjob_json(conditions, replica_statuses)
    self.fake_kubectl(get={'stdout': json.dumps(tfjob)}, logs={'stdout': _LOG})
    out = kubernetes.status(WORKDIR, kind='tfjob')
    self.assertEqual([c['argv'] for c in self.calls()],
                     [['get', 'tfjob', 'exp1', '-n', 'default', '-o', 'json'],
                      ['logs', 'exp1-chief-0', '-n', 'default', '--tail=200']])
    self.assertIn(state, out)
    self.assertIn(replicas, out)
    self.assertIn('progress: step 120/1000 epoch 0.26: loss 0.3121 accuracy 0.9000 lr 1.00e-03 '
                  '1234 img/s ETA 100s', out)
    self.assertIn('logs: kubectl logs -f exp1-chief-0 -n default', out)
    self.assertNotIn('note:', out)

  def test_name_and_namespace(self):
    self.fake_kubectl(get={'stdout': json.dumps(_tfjob_json([_CREATED], {}))}, logs={})
    kubernetes.status(WORKDIR, name='big', namespace='team-a', kind='tfjob')
    self.assertEqual([c['argv'] for c in self.calls()],
                     [['get', 'tfjob', 'big', '-n', 'team-a', '-o', 'json'],
                      ['logs', 'big-chief-0', '-n', 'team-a', '--tail=200']])

  def test_no_progress_yet(self):
    self.fake_kubectl(get={'stdout': json.dumps(_tfjob_json([_CREATED], {}))},
                      logs={'code': 1, 'stderr': 'Error from server (BadRequest): container '
                            '"tensorflow" in pod "exp1-chief-0" is waiting to start: '
                            'ContainerCreating\n'})
    out = kubernetes.status(WORKDIR, kind='tfjob')
    self.assertIn('Created: TFJob exp1 is created.', out)
    self.assertIn('progress: none yet (kubectl logs exp1-chief-0: Error from server (BadRequest)',
                  out)

  def test_a_job_of_another_workdir_is_pointed_out(self):
    tfjob = _tfjob_json([_CREATED, _RUNNING], {}, workdir='/runs/old/exp1')
    self.fake_kubectl(get={'stdout': json.dumps(tfjob)}, logs={'stdout': ''})
    out = kubernetes.status(WORKDIR, kind='tfjob')
    self.assertIn('note: this TFJob trains --workdir=/runs/old/exp1, not /runs/exp1', out)
    self.assertIn('progress: no progress line yet', out)

  def test_job_not_found(self):
    self.fake_kubectl(get={'code': 1, 'stderr': 'Error from server (NotFound): '
                           'tfjobs.kubeflow.org "exp1" not found\n'})
    with self.assertRaisesRegex(UserError, r"no TFJob 'exp1' in namespace 'default' .*--name"):
      kubernetes.status(WORKDIR, kind='tfjob')
    self.assertEqual(len(self.calls()), 1)

  def test_kubectl_not_found(self):
    with self.assertRaisesRegex(UserError, 'kubectl not found'):
      kubernetes.status(WORKDIR, kind='tfjob')


if __name__ == '__main__':
  absltest.main()
