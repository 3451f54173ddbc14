"""research.submit.kubernetes' default kind, the JobSet: manifests checked offline, the restart
rules, the cluster a JobSet pod forms, and kubectl faked.

No Kubernetes runs here. A manifest is checked against a JSON Schema in two parts:
  - JobSet's own levels, written below from its Go types (kubernetes-sigs/jobset,
    api/jobset/v1alpha2/jobset_types.go): every field of JobSet, JobSetSpec and JobSetStatus is
    named, so a misspelled field is refused; the fields the manifest uses are typed down to their
    enums (FailurePolicyAction, Operator). No JobSet package is published for Python.
  - the replicated job's template, a batch/v1 JobTemplateSpec (pod template included), and the
    metadata: Kubernetes' own strict JSON Schemas (kubernetes-validate, unknown fields refused).
On top, what the API server and JobSet's webhook refuse beyond the schema and the manifest could
run into: Job validation (podFailurePolicy needs restartPolicy Never; ordered, unique exit codes;
a containerName that names a container; Indexed needs completions) and JobSet's (rule names,
known job failure reasons, pod names that fit a DNS-1035 label). Not checked offline: the CEL
rules of the CRD and what the controllers do at run time, modelled in RestartRulesTest instead.
"""

import json
import os
import re
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jsonschema
import referencing
import yaml

from research.core import strategy as strategy_lib
from research.core.errors import UserError
from research.infra import local_cluster
from research.infra import processes
from research.submit import job as job_lib
from research.submit import jobset
from research.submit import kubernetes
from tests import helpers
from tests import test_submit_kubernetes as k8s_tests

WORKDIR = k8s_tests.WORKDIR

# --- The JobSet schema --------------------------------------------------------------------------

_K8S_DEFS = 'https://kubernetes.io/api/_definitions.json'


def _ref(name):
  return {'$ref': f'{_K8S_DEFS}#/$defs/{name}'}


def _object(properties, required=()):
  return {'type': 'object', 'additionalProperties': False, 'properties': properties,
          'required': list(required)}


_ANY = {}
_INT = {'type': 'integer'}
_BOOL = {'type': 'boolean'}
_STR = {'type': 'string'}
_STRS = {'type': 'array', 'items': _STR}
# jobset_types.go: FailurePolicyAction's and Operator's values (the CRD's enums).
_ACTIONS = ('FailJobSet', 'RestartJobSet', 'RestartJobSetAndIgnoreMaxRestarts', 'RestartJob',
            'RestartJobAndIgnoreMaxRestarts')
_OPERATORS = ('All', 'Any')
_RESTART_STRATEGIES = ('Recreate', 'BlockingRecreate', 'InPlaceRestart')

_REPLICATED_JOB = _object({
    'name': _STR, 'groupName': _STR, 'template': _ref('io.k8s.api.batch.v1.JobTemplateSpec'),
    'replicas': {'type': 'integer', 'minimum': 0}, 'dependsOn': _ANY,
}, required=('name', 'template'))
_FAILURE_POLICY = _object({
    'maxRestarts': _INT,
    'restartStrategy': {'enum': list(_RESTART_STRATEGIES)},
    'rules': {'type': 'array', 'items': _object({
        'name': _STR, 'action': {'enum': list(_ACTIONS)}, 'onJobFailureReasons': _STRS,
        'onJobFailureMessagePatterns': _STRS, 'targetReplicatedJobs': _STRS,
    }, required=('name', 'action'))},
})
_SPEC = _object({
    'replicatedJobs': {'type': 'array', 'items': _REPLICATED_JOB},
    'network': _object({'enableDNSHostnames': _BOOL, 'subdomain': _STR,
                        'publishNotReadyAddresses': _BOOL}),
    'successPolicy': _object({'operator': {'enum': list(_OPERATORS)},
                              'targetReplicatedJobs': _STRS}, required=('operator',)),
    'failurePolicy': _FAILURE_POLICY,
    'startupPolicy': _ANY, 'suspend': _BOOL, 'coordinator': _ANY, 'managedBy': _STR,
    'ttlSecondsAfterFinished': _INT, 'volumeClaimPolicies': _ANY,
})
_STATUS = _object({
    'conditions': {'type': 'array',
                   'items': _ref('io.k8s.apimachinery.pkg.apis.meta.v1.Condition')},
    'restarts': _INT, 'restartsCountTowardsMax': _INT, 'terminalState': _STR,
    'replicatedJobsStatus': {'type': 'array', 'items': _object({
        'name': _STR, 'ready': _INT, 'succeeded': _INT, 'failed': _INT, 'active': _INT,
        'suspended': _INT, 'jobRestarts': _ANY, 'jobRestartsCountTowardsMax': _ANY,
    }, required=('name', 'ready', 'succeeded', 'failed', 'active', 'suspended'))},
    'previousInPlaceRestartAttempt': _INT, 'currentInPlaceRestartAttempt': _INT,
})
_JOBSET = _object({
    'apiVersion': {'const': jobset.API_VERSION}, 'kind': {'const': 'JobSet'},
    'metadata': _ref('io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta'),
    'spec': _SPEC, 'status': _STATUS,
}, required=('apiVersion', 'kind', 'metadata', 'spec'))

# JobSet's webhook (pkg/webhooks/jobset_webhook.go): rule names, and the job failure reasons a
# rule may name (validOnJobFailureReasons, batch/v1's JobReason* constants).
_RULE_NAME = re.compile(r'^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$')
_JOB_FAILURE_REASONS = ('BackoffLimitExceeded', 'DeadlineExceeded', 'FailedIndexes',
                        'MaxFailedIndexesExceeded', 'PodFailurePolicy')
_DNS_1035 = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')

_VALIDATOR = None


def _validator():
  global _VALIDATOR
  if _VALIDATOR is None:
    k8s_defs = k8s_tests._k8s_definitions()  # pylint: disable=protected-access
    registry = referencing.Registry().with_resource(
        _K8S_DEFS, referencing.Resource.from_contents(k8s_defs))
    schema = dict(_JOBSET, **{'$schema': 'https://json-schema.org/draft/2020-12/schema'})
    _VALIDATOR = jsonschema.Draft202012Validator(schema, registry=registry)
  return _VALIDATOR


def _job_problems(rjob):
  """What Kubernetes' Job validation refuses of the replicated job's template (the parts used)."""
  problems = []
  spec = rjob['template']['spec']
  pod = spec['template']['spec']
  names = {c['name'] for c in pod.get('containers', [])}
  if 'podFailurePolicy' in spec and pod.get('restartPolicy') != 'Never':
    problems.append('podFailurePolicy needs the pod restartPolicy Never')
  if pod.get('restartPolicy') not in ('Never', 'OnFailure'):
    problems.append(f'a Job pod restartPolicy {pod.get("restartPolicy")!r}')
  if spec.get('completionMode') == 'Indexed' and not spec.get('completions'):
    problems.append('Indexed completion mode needs completions')
  for rule in (spec.get('podFailurePolicy') or {}).get('rules', []):
    codes = rule.get('onExitCodes') or {}
    values = codes.get('values', [])
    if values != sorted(set(values)) or not values:
      problems.append(f'onExitCodes values {values} are not ordered and unique')
    if codes.get('operator') == 'In' and 0 in values:
      problems.append('onExitCodes In 0')
    if codes.get('containerName') not in names | {None}:
      problems.append(f'onExitCodes containerName {codes["containerName"]!r} is no container')
  return problems


def jobset_problems(manifest):
  """Everything wrong with `manifest` as a JobSet, as messages; [] when it would be accepted."""
  errors = sorted(_validator().iter_errors(manifest),
                  key=lambda e: [str(p) for p in e.absolute_path])
  problems = [f'{"/".join(map(str, e.absolute_path))}: {e.message}' for e in errors]
  if problems:
    return problems
  name = manifest['metadata']['name']
  if not _DNS_1035.match(name):
    problems.append(f'metadata.name {name!r} is not a DNS-1035 label')
  spec = manifest['spec']
  for rule in (spec.get('failurePolicy') or {}).get('rules', []):
    if not _RULE_NAME.match(rule['name']) or len(rule['name']) > 128:
      problems.append(f'failure policy rule name {rule["name"]!r}')
    problems += [f'unknown job failure reason {r!r}' for r in rule.get('onJobFailureReasons', [])
                 if r not in _JOB_FAILURE_REASONS]
  for rjob in spec['replicatedJobs']:
    problems += _job_problems(rjob)
    # GenPodName for the last job and pod index, plus the Job controller's random suffix.
    completions = rjob['template']['spec'].get('completions', 1)
    pod = f'{name}-{rjob["name"]}-{rjob.get("replicas", 1) - 1}-{completions - 1}-abcde'
    if not _DNS_1035.match(pod) or len(pod) > 63:
      problems.append(f'pod name {pod!r} is not a DNS-1035 label')
  return problems


# --- Jobs ---------------------------------------------------------------------------------------


def make_job(**overrides):
  return k8s_tests.make_job(**dict(dict(kubernetes_kind='jobset'), **overrides))


def _rjob(manifest):
  (rjob,) = manifest['spec']['replicatedJobs']
  return rjob


def _pod(manifest):
  return _rjob(manifest)['template']['spec']['template']['spec']


def _container(manifest):
  (container,) = _pod(manifest)['containers']
  return container


class ManifestTest(parameterized.TestCase):

  @parameterized.product(nodes=(1, 2, 4), gpus_per_node=(0, 4))
  def test_manifest_is_a_valid_jobset(self, nodes, gpus_per_node):
    job = make_job(nodes=nodes, gpus_per_node=gpus_per_node)
    manifest = k8s_tests.rendered_and_valid(self, job, jobset_problems)

    self.assertEqual((manifest['apiVersion'], manifest['kind']),
                     ('jobset.x-k8s.io/v1alpha2', 'JobSet'))
    self.assertEqual(manifest['metadata'], {'name': 'exp1', 'namespace': 'default'})
    # The headless service that gives the pods their hostnames.
    self.assertEqual(manifest['spec']['network'], {'enableDNSHostnames': True})
    self.assertEqual(manifest['spec']['successPolicy'], {'operator': 'All'})
    rjob = _rjob(manifest)
    self.assertEqual((rjob['name'], rjob['replicas']), ('worker', 1))
    spec = rjob['template']['spec']
    self.assertEqual((spec['completionMode'], spec['completions'], spec['parallelism'],
                      spec['backoffLimit']), ('Indexed', nodes, nodes, 0))
    pod = _pod(manifest)
    self.assertEqual(pod['restartPolicy'], 'Never')
    self.assertEqual(pod['volumes'],
                     [{'name': 'workdir', 'persistentVolumeClaim': {'claimName': 'runs-claim'}}])
    container = _container(manifest)
    self.assertEqual((container['name'], container['image']), ('trainer', 'registry/img:tag'))
    self.assertEqual(container['command'],
                     ['python', '-m', 'launch.train', *job_lib.worker_args(job)])
    self.assertIn(f'--num_gpus={gpus_per_node}', container['command'])
    self.assertIn('--preempted_exit_code=143', container['command'])
    self.assertEqual('--strategy=multi_worker_mirrored' in container['command'], nodes > 1)
    if gpus_per_node:
      self.assertEqual(container['resources'], {'limits': {'nvidia.com/gpu': gpus_per_node}})
    else:
      self.assertNotIn('resources', container)
    self.assertEqual(container['volumeMounts'], [{'name': 'workdir', 'mountPath': '/runs'}])
    env = {e['name']: e for e in container['env']}
    self.assertEqual(env['PYTHONUNBUFFERED']['value'], '1')
    self.assertEqual(env['RESEARCH_WORKERS']['value'], str(nodes))
    self.assertEqual(
        {k: env[k]['valueFrom']['fieldRef']['fieldPath']
         for k in ('JOBSET_NAME', 'REPLICATED_JOB_NAME', 'JOB_INDEX')},
        {'JOBSET_NAME': "metadata.labels['jobset.sigs.k8s.io/jobset-name']",
         'REPLICATED_JOB_NAME': "metadata.labels['jobset.sigs.k8s.io/replicatedjob-name']",
         'JOB_INDEX': "metadata.labels['jobset.sigs.k8s.io/job-index']"})

  def test_render_says_what_made_it(self):
    text = kubernetes.render(make_job())
    self.assertStartsWith(text, '# JobSet for /runs/exp1, written by python -m launch.submit')
    self.assertIn('# Status: python -m launch.submit --status --cluster=kubernetes '
                  '--workdir=/runs/exp1\n', text)
    self.assertIn('--kubernetes_kind=tfjob',
                  kubernetes.render(make_job(kubernetes_kind='tfjob')).splitlines()[1])

  def test_tfjob_stays_available(self):
    self.assertEqual(kubernetes.manifest(make_job(kubernetes_kind='tfjob'))['kind'], 'TFJob')
    self.assertEqual(kubernetes.manifest(make_job())['kind'], 'JobSet')

  def test_longest_name_fits_the_pod_names(self):
    # 4 workers: <name>-worker-0-3-abcde must stay within 63 characters.
    name = 'a' * jobset.name_max(make_job(nodes=4))
    self.assertLen(f'{name}-worker-0-3-abcde', 63)
    self.assertEqual(jobset_problems(kubernetes.manifest(make_job(nodes=4, name=name))), [])
    with self.assertRaisesRegex(UserError, r"--name='a+' is not a valid JobSet name: use at most "
                                r'46 .* \(its pods add their index to it\)'):
      kubernetes.manifest(make_job(nodes=4, name=name + 'a'))

  def test_unknown_kind(self):
    with self.assertRaisesRegex(UserError, r"unknown --kubernetes_kind='job': use jobset or "
                                'tfjob'):
      kubernetes.manifest(make_job(kubernetes_kind='job'))

  def test_tfjob_from_the_command_line(self):
    proc = helpers.run_forked('launch.submit', '--cluster=kubernetes', '--kubernetes_kind=tfjob',
                              '--image=img', '--pvc=runs', '--dry_run', '--',
                              '--config=configs/cnn_mnist.py', '--workdir=/runs/exp1')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('\nkind: TFJob\n', proc.stdout)
    self.assertIn('--status --cluster=kubernetes --workdir=/runs/exp1 --kubernetes_kind=tfjob',
                  proc.stdout)


def _break(path, action, value=None):
  return k8s_tests._break(path, action, value)  # pylint: disable=protected-access


_RJOB = ('spec', 'replicatedJobs', 0)
_JOB_SPEC = _RJOB + ('template', 'spec')
_POD = _JOB_SPEC + ('template', 'spec')
_CONTAINER = _POD + ('containers', 0)
_EXIT_CODES = _JOB_SPEC + ('podFailurePolicy', 'rules', 0, 'onExitCodes')
_RULE = ('spec', 'failurePolicy', 'rules', 0)


class SchemaRejectsTest(parameterized.TestCase):
  """The check fails on what the API server or JobSet would refuse: it can fail."""

  @parameterized.named_parameters(
      ('misspelled_spec_field', _break(('spec', 'replicatedJobs'), 'rename', 'replicatedJob'),
       "'replicatedJob' was unexpected"),
      ('misspelled_network_field', _break(('spec', 'network', 'enableDNSHostnames'), 'rename',
                                          'enableDnsHostnames'), "'enableDnsHostnames' was"),
      ('dns_hostnames_as_string', _break(('spec', 'network', 'enableDNSHostnames'), 'set', 'true'),
       "'true' is not of type 'boolean'"),
      ('unknown_action', _break(_RULE + ('action',), 'set', 'Restart'), "'Restart' is not one of"),
      ('misspelled_rule_field', _break(_RULE + ('onJobFailureReasons',), 'rename',
                                       'onJobFailureReason'), "'onJobFailureReason' was"),
      ('unknown_failure_reason', _break(_RULE + ('onJobFailureReasons',), 'set', ['Failed']),
       "unknown job failure reason 'Failed'"),
      ('rule_name_with_a_dash', _break(_RULE + ('name',), 'set', 'fail-on-error'),
       "rule name 'fail-on-error'"),
      ('unknown_success_operator', _break(('spec', 'successPolicy', 'operator'), 'set', 'Every'),
       "'Every' is not one of"),
      ('replicas_as_string', _break(_RJOB + ('replicas',), 'set', '1'),
       "'1' is not of type 'integer'"),
      ('misspelled_job_field', _break(_JOB_SPEC + ('backoffLimit',), 'rename', 'backOffLimit'),
       "'backOffLimit' was unexpected"),
      ('misspelled_exit_codes_field', _break(_EXIT_CODES + ('containerName',), 'rename',
                                             'container'), "'container' was unexpected"),
      ('exit_codes_as_strings', _break(_EXIT_CODES + ('values',), 'set', ['143']),
       "'143' is not of type 'integer'"),
      ('exit_codes_unordered', _break(_EXIT_CODES + ('values',), 'set', [200, 143]),
       'are not ordered and unique'),
      ('exit_codes_of_another_container', _break(_EXIT_CODES + ('containerName',), 'set',
                                                 'tensorflow'), 'is no container'),
      ('pod_restarts_in_place', _break(_POD + ('restartPolicy',), 'set', 'OnFailure'),
       'podFailurePolicy needs the pod restartPolicy Never'),
      ('indexed_without_completions', _break(_JOB_SPEC + ('completions',), 'del'),
       'Indexed completion mode needs completions'),
      ('misspelled_pod_field', _break(_POD + ('volumes',), 'rename', 'volume'),
       "'volume' was unexpected"),
      ('misspelled_env_source', _break(_CONTAINER + ('env', 1, 'valueFrom', 'fieldRef'), 'rename',
                                       'fieldref'), "'fieldref' was unexpected"),
      ('env_value_as_number', _break(_CONTAINER + ('env', 4, 'value'), 'set', 2),
       "2 is not of type 'string'"),
      ('name_too_long_for_the_pods', _break(('metadata', 'name'), 'set', 'a' * 48),
       'is not a DNS-1035 label'),
      ('wrong_api_version', _break(('apiVersion',), 'set', 'jobset.x-k8s.io/v1'),
       'was expected'),
  )
  def test_rejects(self, mutate, expected):
    k8s_tests.assert_rejects(self, jobset_problems,
                             kubernetes.manifest(make_job(nodes=2, gpus_per_node=2)), mutate,
                             expected)


# --- What the controllers do with an exit status ------------------------------------------------


def _job_failure_reason(job_spec, exit_code):
  """The Job controller on one failed pod (pkg/controller/job: the first podFailurePolicy rule
  that matches decides; FailJob fails the Job with reason PodFailurePolicy; no match counts the
  failure against backoffLimit, and past it the Job fails with BackoffLimitExceeded)."""
  for rule in job_spec['podFailurePolicy']['rules']:
    codes = rule['onExitCodes']
    matches = (exit_code in codes['values']) == (codes['operator'] == 'In')
    if matches and rule['action'] == 'FailJob':
      return 'PodFailurePolicy'
    if matches:
      raise AssertionError(f'rule action {rule["action"]} is not modelled')
  return 'BackoffLimitExceeded' if job_spec['backoffLimit'] < 1 else None


def _jobset_action(failure_policy, reason):
  """JobSet's controller on a failed Job (pkg/controllers/failure_policy.go): the first rule
  whose onJobFailureReasons holds the reason (empty: any) acts; without one, RestartJobSet,
  which fails the JobSet once restarts reach maxRestarts (default 0)."""
  for rule in failure_policy['rules']:
    if not rule.get('onJobFailureReasons') or reason in rule['onJobFailureReasons']:
      return rule['action']
  return 'RestartJobSet' if failure_policy.get('maxRestarts', 0) > 0 else 'FailJobSet'


class RestartRulesTest(parameterized.TestCase):
  """The exit-status table of docs/cluster.md, through the manifest's rules."""

  @parameterized.named_parameters(
      ('stopped_and_saved', processes.PREEMPTED_EXIT_CODE, 'RestartJobSetAndIgnoreMaxRestarts'),
      ('lost_worker', processes.LOST_WORKER_EXIT_CODE, 'RestartJobSetAndIgnoreMaxRestarts'),
      ('sigkilled', 137, 'RestartJobSetAndIgnoreMaxRestarts'),
      ('bug', 1, 'FailJobSet'),
      ('bad_setting', 2, 'FailJobSet'),
      ('crash', 139, 'FailJobSet'),
  )
  def test_exit_status(self, code, action):
    manifest = kubernetes.manifest(make_job(nodes=4, gpus_per_node=4))
    reason = _job_failure_reason(_rjob(manifest)['template']['spec'], code)
    self.assertEqual(_jobset_action(manifest['spec']['failurePolicy'], reason), action)


# --- The cluster a JobSet pod forms -------------------------------------------------------------


def _pod_environment(manifest, index):
  """The environment of pod `index` as Kubernetes would set it: the container's env with each
  downward-API label resolved against the labels JobSet puts on its pods (labelAndAnnotateObject
  in pkg/controllers/jobset_controller.go), and JOB_COMPLETION_INDEX from the Job controller."""
  rjob = _rjob(manifest)
  labels = {'jobset.sigs.k8s.io/jobset-name': manifest['metadata']['name'],
            'jobset.sigs.k8s.io/replicatedjob-name': rjob['name'],
            'jobset.sigs.k8s.io/job-index': '0',
            'jobset.sigs.k8s.io/replicatedjob-replicas': str(rjob['replicas'])}
  env = {'JOB_COMPLETION_INDEX': str(index), 'PATH': '/nonexistent'}
  for var in _container(manifest)['env']:
    if 'value' in var:
      env[var['name']] = var['value']
    else:
      path = var['valueFrom']['fieldRef']['fieldPath']
      env[var['name']] = labels[re.fullmatch(r"metadata\.labels\['(.+)'\]", path).group(1)]
  return env


def _pod_hostnames(manifest):
  """The pods' DNS names as Kubernetes makes them: an Indexed Job's pod is <job>-<index>, JobSet
  names the Job <jobset>-<replicatedJob>-<jobIndex> (placement.GenJobName) and sets the pods'
  subdomain to its headless service, named after the JobSet when network.subdomain is unset."""
  name = manifest['metadata']['name']
  rjob = _rjob(manifest)
  subdomain = manifest['spec']['network'].get('subdomain') or name
  return [f'{name}-{rjob["name"]}-0-{i}.{subdomain}'
          for i in range(rjob['template']['spec']['completions'])]


class PodClusterTest(parameterized.TestCase):

  def resolve(self, env):
    with mock.patch.dict(os.environ, env, clear=True):
      r = strategy_lib.cluster_resolver(num_gpus=4)
      return r.cluster_spec().as_dict(), r.task_type, r.task_id, r.num_accelerators()

  @parameterized.parameters(1, 2, 4)
  def test_same_cluster_as_tf_config(self, nodes):
    manifest = kubernetes.manifest(make_job(nodes=nodes, gpus_per_node=4))
    hosts = [f'{h}:{strategy_lib.JOBSET_PORT}' for h in _pod_hostnames(manifest)]
    for index in range(nodes):
      from_tf_config = self.resolve({'TF_CONFIG': local_cluster.tf_config(hosts, index)})
      from_pod = self.resolve(_pod_environment(manifest, index))
      self.assertEqual(from_pod, from_tf_config)
      self.assertEqual(from_pod[:3], ({'worker': hosts}, 'worker', index))

  def test_tf_config_comes_first(self):
    manifest = kubernetes.manifest(make_job(nodes=2))
    env = dict(_pod_environment(manifest, 1),
               TF_CONFIG=local_cluster.tf_config(['a:1', 'b:2'], 0))
    self.assertEqual(self.resolve(env)[:3], ({'worker': ['a:1', 'b:2']}, 'worker', 0))

  @parameterized.named_parameters(
      ('no_pod_count', {'RESEARCH_WORKERS': ''}, 'the pod lacks RESEARCH_WORKERS'),
      ('no_index', {'JOB_COMPLETION_INDEX': ''}, 'the pod lacks JOB_COMPLETION_INDEX'),
      ('index_past_the_pods', {'JOB_COMPLETION_INDEX': '2'}, 'pod index 2 is not one of its 2'),
      ('count_not_a_number', {'RESEARCH_WORKERS': 'two'}, 'should be integers'),
  )
  def test_a_broken_environment_is_one_line(self, changes, expected):
    env = dict(_pod_environment(kubernetes.manifest(make_job(nodes=2)), 0), **changes)
    with self.assertRaisesRegex(UserError, f'^JobSet exp1: .*{re.escape(expected)}') as raised:
      self.resolve(env)
    self.assertNotIn('\n', str(raised.exception))


# --- kubectl ------------------------------------------------------------------------------------


class SubmitTest(k8s_tests.KubectlTestCase):

  def test_applies_the_written_manifest(self):
    self.fake_kubectl(apply={'stdout': 'jobset.jobset.x-k8s.io/exp1 created\n'})
    job = make_job(nodes=4)
    out = kubernetes.submit(job)
    self.assertEqual(self.cwd_files(), ['jobs/default-exp1.yaml'])
    calls = self.calls()
    self.assertEqual([c['argv'] for c in calls], [['apply', '-f', 'jobs/default-exp1.yaml']])
    self.assertEqual(yaml.safe_load(calls[0]['file']), kubernetes.manifest(job))
    self.assertIn('submitted JobSet exp1 in namespace default: 4 worker(s) '
                  '(exp1-worker-0-0..3 and a suffix)', out)
    self.assertIn('logs: kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=exp1 -n default '
                  '--prefix --max-log-requests=5', out)
    self.assertIn('status: python -m launch.submit --status --cluster=kubernetes '
                  '--workdir=/runs/exp1', out)

  def test_an_existing_job_is_pointed_out(self):
    self.fake_kubectl(apply={'stdout': 'jobset.jobset.x-k8s.io/exp1 unchanged\n'})
    self.assertIn('kubectl delete jobset exp1 -n default', kubernetes.submit(make_job()))

  def test_no_jobset_in_the_cluster(self):
    self.fake_kubectl(apply={'code': 1, 'stderr': 'error: resource mapping not found for name: '
                             '"exp1" namespace: "default" from "jobs/default-exp1.yaml": no '
                             'matches for kind "JobSet" in version "jobset.x-k8s.io/v1alpha2"\n'})
    with self.assertRaisesRegex(UserError, r'no matches for kind "JobSet" .*\(is JobSet '
                                r'installed in the cluster\? \(or pass --kubernetes_kind=tfjob'):
      kubernetes.submit(make_job())


def _jobset_json(conditions=(), jobs_status=None, restarts=0, workdir=WORKDIR):
  """What `kubectl get jobset -o json` prints for a JobSet submitted from `make_job()`."""
  manifest = kubernetes.manifest(make_job(workdir=workdir, name='exp1'))
  manifest['metadata'].update(creationTimestamp='2026-11-23T01:00:00Z', generation=1,
                              resourceVersion='4242', uid='7c1a7d9e-2f0e-4c57-9a0b-1f6a3b8c9d10')
  manifest['spec']['network']['publishNotReadyAddresses'] = True  # the webhook's defaults
  manifest['spec']['replicatedJobs'][0]['groupName'] = 'default'
  manifest['spec']['failurePolicy']['restartStrategy'] = 'Recreate'
  status = {'restarts': restarts, 'replicatedJobsStatus': [dict(
      {'name': 'worker', 'ready': 0, 'succeeded': 0, 'failed': 0, 'active': 0, 'suspended': 0},
      **(jobs_status or {}))]}
  if conditions:
    status['conditions'] = [dict(type=t, status=s, reason=r, message=m,
                                 lastTransitionTime='2026-11-23T01:00:05Z')
                            for t, s, r, m in conditions]
  manifest['status'] = status
  return manifest


def _pods(*pods):
  """`kubectl get pods -o json` for (completion index, phase, creation time) of each pod."""
  return {'apiVersion': 'v1', 'kind': 'List', 'items': [
      {'metadata': {'name': f'exp1-worker-0-{i}-{created[14:16]}x9z',
                    'annotations': {'batch.kubernetes.io/job-completion-index': str(i)},
                    'creationTimestamp': created},
       'status': {'phase': phase}} for i, phase, created in pods]}


_LOG = k8s_tests._LOG  # pylint: disable=protected-access


class StatusTest(k8s_tests.KubectlTestCase):

  def test_canned_status_is_a_valid_jobset(self):
    jobset_json = _jobset_json([('Completed', 'True', 'AllJobsCompleted',
                                 'jobset completed successfully')], {'succeeded': 1}, restarts=2)
    self.assertEqual(jobset_problems(jobset_json), [])
    jobset_json['status']['replicatedJobsStatus'][0]['actve'] = 1
    self.assertNotEqual(jobset_problems(jobset_json), [])

  @parameterized.named_parameters(
      ('running', [], {'active': 1, 'ready': 1}, 0,
       'JobSet exp1 (namespace default): Running\n', 'replicas: worker job 1 active, 1 ready'),
      ('restarted', [], {'active': 1}, 2,
       'JobSet exp1 (namespace default): Running: restarted 2 time(s)\n',
       'replicas: worker job 1 active'),
      ('completed', [('Completed', 'True', 'AllJobsCompleted', 'jobset completed successfully')],
       {'succeeded': 1}, 0, ': Completed: jobset completed successfully\n',
       'replicas: worker job 1 succeeded'),
      ('failed', [('Failed', 'True', 'FailJobSetFailurePolicyAction',
                   'applying FailJobSet failure policy action (first failed job: '
                   'exp1-worker-0)')], {'failed': 1}, 1,
       ': Failed: applying FailJobSet failure policy action (first failed job: exp1-worker-0); '
       'restarted 1 time(s)\n', 'replicas: worker job 1 failed'),
      ('not_started', [], {}, 0, ': Pending: the JobSet controller has not started its Job yet',
       'replicas: worker job none active'),
  )
  def test_state_and_progress(self, conditions, jobs_status, restarts, state, replicas):
    pods = _pods((1, 'Running', '2026-11-23T01:00:01Z'), (0, 'Failed', '2026-11-23T01:00:01Z'),
                 (0, 'Running', '2026-11-23T01:05:00Z'))
    self.fake_kubectl(**{'get jobset': {'stdout': json.dumps(
        _jobset_json(conditions, jobs_status, restarts))},
        'get pods': {'stdout': json.dumps(pods)}, 'logs': {'stdout': _LOG}})
    out = kubernetes.status(WORKDIR)
    self.assertEqual([c['argv'] for c in self.calls()],
                     [['get', 'jobset', 'exp1', '-n', 'default', '-o', 'json'],
                      ['get', 'pods', '-n', 'default', '-l', 'jobset.sigs.k8s.io/jobset-name=exp1',
                       '-o', 'json'],
                      ['logs', 'exp1-worker-0-0-05x9z', '-n', 'default', '--tail=200']])
    self.assertIn(state, out + '\n')
    self.assertIn(replicas, out)
    self.assertIn('pods: 1 Failed, 2 Running', out)
    self.assertIn('progress: step 120/1000 epoch 0.26: loss 0.3121 accuracy 0.9000 lr 1.00e-03 '
                  '1234 img/s ETA 100s', out)
    self.assertIn('logs: kubectl logs -f exp1-worker-0-0-05x9z -n default', out)

  def test_no_pod_yet(self):
    self.fake_kubectl(**{'get jobset': {'stdout': json.dumps(_jobset_json())},
                         'get pods': {'stdout': json.dumps(_pods())}})
    out = kubernetes.status(WORKDIR, name='exp1', namespace='team-a')
    self.assertIn('pods: none yet', out)
    self.assertIn('progress: none yet (worker 0 has no pod yet)', out)
    self.assertEqual(self.calls()[1]['argv'][:4], ['get', 'pods', '-n', 'team-a'])
    self.assertLen(self.calls(), 2)

  def test_a_job_of_another_workdir_is_pointed_out(self):
    self.fake_kubectl(**{'get jobset': {'stdout': json.dumps(
        _jobset_json(workdir='/runs/old/exp1'))}, 'get pods': {'stdout': json.dumps(_pods())}})
    self.assertIn('note: this JobSet trains --workdir=/runs/old/exp1, not /runs/exp1',
                  kubernetes.status(WORKDIR))

  def test_job_not_found(self):
    self.fake_kubectl(**{'get jobset': {'code': 1, 'stderr': 'Error from server (NotFound): '
                                        'jobsets.jobset.x-k8s.io "exp1" not found\n'}})
    with self.assertRaisesRegex(UserError, r"no JobSet 'exp1' in namespace 'default' .*"
                                '--kubernetes_kind'):
      kubernetes.status(WORKDIR)
    self.assertLen(self.calls(), 1)


if __name__ == '__main__':
  absltest.main()
