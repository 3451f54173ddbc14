"""launch.submit --sweep: expansion, naming, the manifest, bad specs, re-submission, and a real
Slurm job array.

The expansion and the submission logic run against stand-in sbatch/squeue/scontrol commands;
`SlurmSweepTest` starts the real single-node Slurm of tests/test_submit_slurm.py and runs a 2x2
sweep as one array of 4 tasks, at most 2 at once, one task preempted and requeued mid-run.
"""

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError
from research.infra import processes
from research.submit import job as job_lib
from research.submit import slurm
from research.submit import sweep
from tests import helpers
from tests import test_submit_slurm

_GRID = '{seed: [0, 1], schedule.learning_rate: [0.01, 0.003]}'


def _cnn_mnist():
  return helpers.load_config('cnn_mnist')


def _resolve(train_args):
  """The run's config as launch.train resolves it: the base config with the --config.* flags."""
  config = _cnn_mnist()
  for arg in train_args:
    if arg.startswith('--config.'):
      field, value = arg[len('--config.'):].split('=', 1)
      *sections, key = field.split('.')
      node = config
      for name in sections:
        node = node[name]
      node[key] = type(node[key])(eval(value))  # pylint: disable=eval-used
  return config


def _sweep_job(workdir, cluster='slurm', **fields):
  return job_lib.Job(cluster=cluster, workdir=workdir, config=_cnn_mnist(),
                     train_args=['--config=configs/cnn_mnist.py', f'--workdir={workdir}'],
                     **{'name': 'grid', 'python': '/venv/bin/python', 'chdir': '/repo',
                        **fields})


class ExpandTest(tf.test.TestCase, parameterized.TestCase):

  fields = list(config_lib.flatten(_cnn_mnist()))

  def test_grid_is_every_combination_last_field_fastest(self):
    points = sweep.expand(sweep.read_spec(_GRID), self.fields)
    self.assertEqual(points, [
        {'seed': 0, 'schedule.learning_rate': 0.01}, {'seed': 0, 'schedule.learning_rate': 0.003},
        {'seed': 1, 'schedule.learning_rate': 0.01}, {'seed': 1, 'schedule.learning_rate': 0.003}])

  def test_a_list_of_grids_and_tuple_values(self):
    spec = sweep.read_spec('[{model.filters: [[16, 32]], seed: [0, 1]}, '
                           '{model.filters: [[32, 64]], model.batch_norm: false}]')
    points = sweep.expand(spec, self.fields)
    self.assertEqual([sweep.override_text(p['model.filters']) for p in points],
                     ['(16, 32)', '(16, 32)', '(32, 64)'])
    self.assertEqual(sweep.override_text(points[2]['model.batch_norm']), 'false')
    self.assertEqual(sweep.run_names(points), [
        'filters=16x32,seed=0', 'filters=16x32,seed=1', 'filters=32x64,batch_norm=false'])

  def test_a_spec_file(self):
    path = self.create_tempfile('grid.yaml', 'seed: [3, 4]\nschedule.learning_rate: 1e-3\n')
    points = sweep.expand(sweep.read_spec(path.full_path), self.fields)
    self.assertEqual([p['seed'] for p in points], [3, 4])
    # YAML reads 1e-3 as text; the field's type decides, as on the command line.
    self.assertEqual(sweep.override_text(points[0]['schedule.learning_rate']), '1e-3')

  def test_names_are_the_fields_that_vary(self):
    points = sweep.expand(sweep.read_spec(
        '{seed: [0, 1], optimizer.name: adamw, dataset.name: [mnist], '
        'dataset.data_dir: [/a/b]}'), self.fields)
    self.assertEqual(sweep.run_names(points), ['seed=0', 'seed=1'])
    # Two fields with the same last part keep their whole names; unsafe characters go.
    points = [{'model.dropout': 0.1, 'augment.erase': 0.5, 'dataset.data_dir': '/x y/z'},
              {'model.dropout': 0.2, 'augment.erase': 0.5, 'dataset.data_dir': '/q'}]
    self.assertEqual(sweep.run_names(points), ['dropout=0.1,data_dir=_x_y_z',
                                               'dropout=0.2,data_dir=_q'])

  @parameterized.named_parameters(
      ('unknown_field', '{sed: [0, 1]}', "names 'sed', which is no config field: did you mean "
       'seed?'),
      ('empty_list', '{seed: []}', 'gives seed an empty list of values'),
      ('empty_grid', '{}', 'a sweep grid maps config fields'),
      ('nothing', '', 'the sweep is empty'),
      ('empty_list_of_grids', '[]', 'the sweep is empty'),
      ('not_a_grid', '[1, 2]', 'a sweep grid maps config fields'),
      ('section', '{augment.rotate: [{degrees: 1}]}', 'cannot be a section'),
      ('duplicate', '[{seed: 1}, {seed: [0, 1]}]', 'runs 0 and 2 of the sweep are the same'),
      ('bad_yaml', '{seed: [0, 1}', 'is neither a file nor a YAML grid'),
      ('missing_file', 'grids/seeds.yaml', "--sweep='grids/seeds.yaml' is no file, nor a grid"),
      ('too_many', '{seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], schedule.learning_rate: '
       '[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}',
       'the sweep has 110 runs, more than --max_runs=100: pass --max_runs=110'))
  def test_bad_specs(self, text, message):
    with self.assertRaisesRegex(UserError, re.escape(message)):
      sweep.expand(sweep.read_spec(text), self.fields)

  def test_max_runs_may_be_raised(self):
    spec = sweep.read_spec('{seed: [0, 1, 2]}')
    with self.assertRaisesRegex(UserError, 'the sweep has 3 runs, more than --max_runs=2'):
      sweep.expand(spec, self.fields, max_runs=2)
    self.assertLen(sweep.expand(spec, self.fields, max_runs=3), 3)

  def test_array_indices(self):
    self.assertEqual(sweep.array_indices([0, 1, 2, 3]), '0-3')
    self.assertEqual(sweep.array_indices([1, 3]), '1,3')
    self.assertEqual(sweep.array_indices([0, 1, 3, 5, 6]), '0-1,3,5-6')


class PlanTest(tf.test.TestCase):

  def test_runs_get_their_workdirs_and_overrides(self):
    runs = sweep.plan(_sweep_job('/s'), sweep.read_spec(_GRID), _resolve)
    self.assertEqual([r.job.workdir for r in runs], [
        '/s/seed=0,learning_rate=0.01', '/s/seed=0,learning_rate=0.003',
        '/s/seed=1,learning_rate=0.01', '/s/seed=1,learning_rate=0.003'])
    self.assertEqual(runs[3].job.config.schedule.learning_rate, 0.003)
    self.assertEqual(runs[3].job.config.seed, 1)
    self.assertEqual(runs[1].args[:4], [
        '--config=configs/cnn_mnist.py', '--config.seed=0',
        '--config.schedule.learning_rate=0.003', '--workdir=/s/seed=0,learning_rate=0.003'])

  def test_every_run_is_checked_before_anything(self):
    with self.assertRaisesRegex(UserError, r'^sweep run 1 \(batch_size=100\): global batch_size '
                                '100 does not divide over 3 replicas'):
      sweep.plan(_sweep_job('/s', nodes=3), sweep.read_spec('{batch_size: [99, 100]}'), _resolve)

  def test_config_checks_run_for_every_run(self):
    with self.assertRaisesRegex(UserError, r'^sweep run 1 \(label_smoothing=1.5\): config field '
                                'label_smoothing=1.5 is out of range'):
      sweep.plan(_sweep_job('/s'), sweep.read_spec('{label_smoothing: [0.1, 1.5]}'), _resolve)

  def test_a_field_given_twice_is_refused(self):
    job = _sweep_job('/s')
    job.train_args.append('--config.seed=4')
    with self.assertRaisesRegex(UserError, 'seed is set both after "--"'):
      sweep.plan(job, sweep.read_spec('{seed: [0, 1]}'), _resolve)

  def test_kubernetes_jobs_get_names_of_their_own(self):
    job = _sweep_job('/runs/grid', cluster='kubernetes', image='reg/research:1', pvc='runs')
    runs = sweep.plan(job, sweep.read_spec(_GRID), _resolve)
    self.assertEqual([r.job.name for r in runs], ['grid-0', 'grid-1', 'grid-2', 'grid-3'])


class SubmitTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.bin = os.path.join(self.tmp, 'bin')
    self.workdir = os.path.join(self.tmp, 'grid')
    os.makedirs(self.bin)
    self.enter_context(mock.patch.dict(os.environ, {'PATH': self.bin}))
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')

  def submit(self, spec=_GRID, **kwargs):
    return sweep.submit(_sweep_job(self.workdir), spec, _resolve, **kwargs)

  def test_manifest_script_and_records(self):
    message = self.submit(max_parallel=2)
    script = os.path.join(self.workdir, 'submit', 'sweep.sbatch')
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [f'--parsable {script}'])
    with open(script) as f:
      self.assertIn('#SBATCH --array=0-3%2\n', f.read())
    manifest = outputs.read_json(os.path.join(self.workdir, sweep.MANIFEST))
    self.assertEqual([(r['index'], r['job_id']) for r in manifest['runs']],
                     [(i, f'42_{i}') for i in range(4)])
    self.assertEqual(manifest['runs'][2]['overrides'],
                     {'seed': 1, 'schedule.learning_rate': 0.01})
    record = job_lib.read_record(manifest['runs'][2]['workdir'])
    self.assertEqual((record['job_id'], record['log']),
                     ('42_2', os.path.join(self.workdir, 'submit', 'slurm-42_2.out')))
    self.assertIn('submitted Slurm job array 42 (--array=0-3%2): 4 task(s)', message)

  def test_each_task_runs_its_own_run_and_requeues_itself(self):
    job = _sweep_job(self.workdir, python=sys.executable)
    runs = sweep.plan(job, sweep.read_spec(_GRID), _resolve)
    path = sweep.manifest_path(job)
    os.makedirs(os.path.dirname(path))
    outputs.write_json(path, sweep._manifest(job, {}, runs, {}))  # pylint: disable=protected-access
    script = os.path.join(self.tmp, 'sweep.sbatch')
    with open(script, 'w') as f:
      f.write(slurm.array_script(job, path, '0-3%2'))
    helpers.fake_command(self.bin, 'srun', status=processes.PREEMPTED_EXIT_CODE)
    helpers.fake_command(self.bin, 'scontrol')
    env = {'PATH': f'{self.bin}:/usr/bin:/bin', 'SLURM_JOB_ID': '78', 'SLURM_ARRAY_JOB_ID': '76',
           'SLURM_ARRAY_TASK_ID': '2'}
    proc = subprocess.run(['bash', script], env=env, capture_output=True, text=True, timeout=60)
    self.assertEqual(proc.returncode, processes.PREEMPTED_EXIT_CODE, proc.stderr)
    srun = helpers.fake_calls(self.bin, 'srun')
    self.assertLen(srun, 1)
    self.assertEndsWith(srun[0], ' '.join([sys.executable, '-m', 'launch.train', *runs[2].args]))
    self.assertEqual(helpers.fake_calls(self.bin, 'scontrol'), ['requeue 78'])
    self.assertIn(f'job 76_2 start 1 on : {runs[2].job.workdir}\n', proc.stdout)
    self.assertIn('requeueing job 76_2', proc.stdout)

  def test_the_manifest_is_written_before_sbatch_runs(self):
    helpers.fake_command(self.bin, 'sbatch', status=1, stderr='sbatch: error: no partition\n')
    with self.assertRaisesRegex(UserError, 'sbatch rejected the job: sbatch: error: no partition'):
      self.submit()
    manifest = outputs.read_json(os.path.join(self.workdir, sweep.MANIFEST))
    self.assertLen(manifest['runs'], 4)
    self.assertEqual({r['job_id'] for r in manifest['runs']}, {None})

  def test_dry_run_writes_and_submits_nothing(self):
    text = self.submit(max_parallel=2, dry_run=True)
    self.assertIn(f'  3  {self.workdir}/seed=1,learning_rate=0.003  --config.seed=1 '
                  '--config.schedule.learning_rate=0.003  [submit]', text)
    self.assertIn('#SBATCH --array=0-3%2', text)
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [])
    self.assertFalse(os.path.exists(self.workdir))

  def test_bad_spec_writes_nothing(self):
    with self.assertRaisesRegex(UserError, 'no config field'):
      self.submit('{sed: [1]}')
    self.assertFalse(os.path.exists(self.workdir))
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [])

  def test_submitting_again_skips_finished_and_live_runs(self):
    self.submit()
    manifest = outputs.read_json(os.path.join(self.workdir, sweep.MANIFEST))
    done, live = manifest['runs'][0]['workdir'], manifest['runs'][1]['workdir']
    for workdir in (done, manifest['runs'][3]['workdir']):
      config_lib.save(_resolve(manifest['runs'][0]['args']), workdir)
    outputs.write_json(os.path.join(done, 'results.json'), dict(step=60, test_accuracy=0.97,
                                                                preempted=''))
    outputs.write_json(os.path.join(manifest['runs'][3]['workdir'], 'results.json'),
                       dict(step=20, preempted='SIGUSR1'))
    # 42_1 still runs; the others ended.
    squeue = os.path.join(self.bin, 'squeue')
    with open(squeue, 'w') as f:
      f.write('#!/bin/bash\n[ "$3" = 42_1 ] && echo "RUNNING|None|1:00|1"\nexit 0\n')
    os.chmod(squeue, 0o755)
    helpers.fake_command(self.bin, 'scontrol', stdout='JobId=1 JobState=COMPLETED\n')
    helpers.fake_command(self.bin, 'sbatch', stdout='43\n')
    message = self.submit()
    self.assertIn('[finished: skip]', message.splitlines()[1])
    self.assertIn('[job 42_1 RUNNING: skip]', message.splitlines()[2])
    self.assertIn('[submit]', message.splitlines()[3])
    self.assertIn('[resume]', message.splitlines()[4])  # preempted: it resumes
    self.assertIn('--array=2-3', message)
    manifest = outputs.read_json(os.path.join(self.workdir, sweep.MANIFEST))
    self.assertEqual([r['job_id'] for r in manifest['runs']], ['42_0', '42_1', '43_2', '43_3'])
    self.assertNotIn(live, message.splitlines()[-3])
    # Everything finished: nothing more to submit.
    for run in manifest['runs']:
      outputs.write_json(os.path.join(run['workdir'], 'results.json'),
                         dict(step=60, test_accuracy=0.9, preempted=''))
    self.assertIn('nothing to submit', self.submit())
    self.assertLen(helpers.fake_calls(self.bin, 'sbatch'), 2)  # the two submissions above

  def test_another_sweep_in_the_same_workdir_is_refused(self):
    self.submit()
    with self.assertRaisesRegex(UserError, 'holds another sweep'):
      self.submit('{seed: [0, 1, 2]}')

  def test_status(self):
    self.submit()
    manifest = outputs.read_json(os.path.join(self.workdir, sweep.MANIFEST))
    runs = manifest['runs']
    outputs.write_json(os.path.join(runs[0]['workdir'], 'results.json'),
                       dict(step=60, test_accuracy=0.9712, preempted=''))
    outputs.write_json(os.path.join(runs[2]['workdir'], 'results.json'),
                       dict(step=20, preempted='SIGUSR1'))
    with open(slurm.array_log_path(self.workdir, 42, 1), 'w') as f:
      f.write('job 42_1 start 1 on node1: w\n'
              '0: I1205 trainer.py:251] step 40/60 epoch 0.4: loss 0.5 accuracy 0.9\n')
    with open(slurm.array_log_path(self.workdir, 42, 2), 'w') as f:  # its second start
      f.write('0: I1205 trainer.py:251] step 20/60 epoch 0.2: loss 0.5 accuracy 0.9\n'
              'job 42_2 start 2 on node1: w\n')
    with open(slurm.array_log_path(self.workdir, 42, 3), 'w') as f:
      f.write('0: error: config field seed=-1 is out of range\n')
    squeue = os.path.join(self.bin, 'squeue')
    with open(squeue, 'w') as f:
      f.write('#!/bin/bash\ncase "$3" in 42_1) echo "RUNNING|None|1:00|1";;\n'
              f'42_2) echo "$(< {self.tmp}/state2)";; esac\nexit 0\n')
    with open(os.path.join(self.tmp, 'state2'), 'w') as f:
      f.write('PENDING|BeginTime|0:00|1\n')
    os.chmod(squeue, 0o755)
    helpers.fake_command(self.bin, 'scontrol', stdout='JobId=45 JobState=FAILED ExitCode=2:0 '
                         'Restarts=0\n')
    lines = sweep.status(sweep.find_manifest(self.workdir)).splitlines()
    self.assertEqual(lines[0], f'sweep {self.workdir}: 4 run(s), 1 done, 1 running, '
                     '1 preempted, 1 failed')
    self.assertEqual(lines[1:], [
        '  0  seed=0,learning_rate=0.01  done: test accuracy 0.9712 at step 60',
        '  1  seed=0,learning_rate=0.003  running: step 40/60 (job 42_1)',
        '  2  seed=1,learning_rate=0.01  preempted at step 20, saved, requeued: PENDING '
        '(job 42_2)',
        '  3  seed=1,learning_rate=0.003  failed: job 42_3 FAILED exit code 2:0, 0 restart(s): '
        '0: error: config field seed=-1 is out of range'])
    # Started again: no progress line since its latest start yet.
    with open(os.path.join(self.tmp, 'state2'), 'w') as f:
      f.write('RUNNING|None|0:05|1\n')
    self.assertEqual(sweep.status(sweep.find_manifest(self.workdir)).splitlines()[3],
                     '  2  seed=1,learning_rate=0.01  running: starting (job 42_2)')


class KubernetesSweepTest(tf.test.TestCase):

  def test_one_job_per_run_after_the_manifest(self):
    tmp = self.create_tempdir().full_path
    bin_dir = os.path.join(tmp, 'bin')
    helpers.fake_command(bin_dir, 'kubectl', stdout='tfjob.kubeflow.org/x created\n')
    self.enter_context(mock.patch.dict(os.environ, {'PATH': bin_dir}))
    job = _sweep_job('/runs/grid', cluster='kubernetes', image='reg/research:1', pvc='runs')
    os.chdir(tmp)
    self.addCleanup(os.chdir, helpers.ROOT)
    sweep.submit(job, _GRID, _resolve)
    self.assertEqual(helpers.fake_calls(bin_dir, 'kubectl'),
                     [f'apply -f jobs/default-grid-{i}.yaml' for i in range(4)])
    manifest = outputs.read_json(sweep.find_manifest('/runs/grid', 'kubernetes', name='grid'))
    self.assertEqual([(r['workdir'], r['job_name']) for r in manifest['runs']], [
        ('/runs/grid/seed=0,learning_rate=0.01', 'grid-0'),
        ('/runs/grid/seed=0,learning_rate=0.003', 'grid-1'),
        ('/runs/grid/seed=1,learning_rate=0.01', 'grid-2'),
        ('/runs/grid/seed=1,learning_rate=0.003', 'grid-3')])


class SweepCliTest(tf.test.TestCase):

  def test_dry_run(self):
    workdir = os.path.join(self.get_temp_dir(), 'cli-grid')
    proc = helpers.run_forked('launch.submit', '--cluster=slurm', f'--sweep={_GRID}',
                              '--max_parallel=2', '--dry_run', '--',
                              '--config=configs/cnn_mnist.py', f'--workdir={workdir}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f'  2  {workdir}/seed=1,learning_rate=0.01  --config.seed=1 '
                  '--config.schedule.learning_rate=0.01  [submit]', proc.stdout)
    self.assertFalse(os.path.exists(workdir))

  def test_bad_override_values_are_one_line(self):
    for spec, message in (('{seed: [0, x]}', "sweep run 1 (seed=x): bad --config or --config.* "
                           'override'),
                          ('{model.filters: [7]}', 'sweep run 0 (filters=7): config field '
                           'model.filters is a tuple')):
      proc = helpers.run_forked('launch.submit', '--cluster=slurm', f'--sweep={spec}', '--dry_run',
                                '--', '--config=configs/cnn_mnist.py', '--workdir=/tmp/g')
      self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
      self.assertStartsWith(helpers.error_line(proc), f'error: {message}')


# The 2x2 sweep: the small CNN, 200 steps at batch 32 on 4,000 MNIST images, logged every 10
# steps to catch one to preempt at, evaluated every half epoch for the curves.
_STEPS = 200
_SETTINGS = {'num_train_steps': _STEPS, 'batch_size': 32, 'dataset.train_split': 'train[:5000]',
             'dataset.validation_size': 1000, 'dataset.test_split': 'test[:1000]',
             'eval_every_epochs': 0.5, 'steps_per_loop': 10, 'log_every_steps': 10,
             'image_grid_size': 0}
_TRAIN = ['--config=configs/cnn_mnist.py'] + [f'--config.{k}={v}' for k, v in _SETTINGS.items()]


class SlurmSweepTest(test_submit_slurm._RealSlurmTest):  # pylint: disable=protected-access
  """A 2x2 sweep as a real job array of 4 tasks, 2 at once; task 0 preempted and requeued."""

  @classmethod
  def setUpClass(cls):
    helpers.require_real_data()
    super().setUpClass()

  def _status(self, workdir):
    proc = helpers.run_forked('launch.submit', '--status', f'--workdir={workdir}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    return proc.stdout

  def _submit(self, workdir):
    proc = helpers.run_forked('launch.submit', '--cluster=slurm', f'--sweep={_GRID}',
                              '--max_parallel=2', '--', *_TRAIN, f'--workdir={workdir}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    return proc.stdout

  def _watch(self, manifest, until, seconds, seen, every=0.5):
    """Checks `until()` every 50 ms, and every `every` seconds takes the sweep's status (each
    run's states go into `seen`) and counts its running tasks, until `until()`; returns the
    most tasks seen running at once."""
    deadline, most, last = time.time() + seconds, 0, 0.0
    array_id = outputs.read_json(manifest)['runs'][0]['job_id'].split('_')[0]
    while not until():
      self.assertLess(time.time(), deadline, f'not there after {seconds}s: {seen}')
      if time.time() - last < every:
        time.sleep(0.05)
        continue
      last = time.time()
      status = sweep.status(manifest)
      seen.setdefault('snapshots', []).append(status)
      for line in status.splitlines()[1:]:
        index, _, state = line.strip().split('  ', 2)
        seen.setdefault(int(index), []).append(state)
      running = subprocess.run(['squeue', '-h', '-j', array_id, '-t', 'RUNNING', '-o', '%i'],
                               capture_output=True, text=True, timeout=60).stdout.split()
      most = max(most, len(running))
    return most

  def test_sweep_runs_preempted_task_resumes_and_results_compare(self):
    workdir = os.path.join(self.tmp, 'grid')
    said = self._submit(workdir)
    array_id = re.search(r'submitted Slurm job array (\d+) \(--array=0-3%2\)', said)[1]
    self.addCleanup(subprocess.run, ['scancel', array_id], timeout=60)
    manifest, seen = os.path.join(workdir, sweep.MANIFEST), {}
    log0 = slurm.array_log_path(workdir, array_id, 0)
    # Its first progress line: the run takes seconds at this size, so it is watched closely.
    most = self._watch(manifest, lambda: re.search(rf'step \d+/{_STEPS}', _read(log0)), 300,
                       seen, every=1)
    # What Slurm sends before a task's time limit, here at once, to task 0's workers alone.
    # (To the step: Slurm 22.05 refuses to signal a task of an array with tasks still pending,
    # "Job can not be altered now", though it does, and scancel retries until the task's next
    # start, stopping that one too.)
    subprocess.run(['scancel', '--signal=USR1', f'{array_id}_0.0'], check=True, timeout=60)
    most = max(most, self._watch(
        manifest, lambda: sweep.status(manifest).count('done: test accuracy') == 4, 600, seen))
    self.assertLessEqual(most, 2)  # %2
    log = _read(log0)
    stop = re.search(rf'Stopped by SIGUSR1 at step (\d+) of {_STEPS}, saved', log)[1]
    self.assertIn(f'requeueing job {array_id}_0', log)
    self.assertIn(f'job {array_id}_0 start 2 on', log)
    self.assertRegex(log, rf'Resumed from \S+/ckpt-{stop}: step {stop} of {_STEPS}')
    self.assertTrue(any(re.match(rf'running: step \d+/{_STEPS} \(job {array_id}_0\)', s)
                        for s in seen[0]), seen[0])
    self.assertIn(f'preempted at step {stop}, saved, requeued: PENDING (job {array_id}_0)',
                  seen[0])
    # Held back by the array's limit, not by the node's CPUs (here 2 as well).
    self.assertTrue(any(s.startswith('queued: PENDING (JobArrayTaskLimit)') for s in seen[3]),
                    seen[3])
    for index in (1, 2, 3):  # the other tasks ran once
      self.assertNotIn('requeueing', _read(slurm.array_log_path(workdir, array_id, index)))
    status = self._status(workdir)
    self.assertEqual(status.count('done: test accuracy'), 4, status)
    # Submitted again: every run finished, nothing goes to the queue.
    self.assertIn('nothing to submit', self._submit(workdir))
    self._check_results(workdir)
    if os.environ.get('RESEARCH_KEEP_SWEEP'):  # for a look at the PNG and the table
      with open(os.path.join(os.environ['RESEARCH_KEEP_SWEEP'], 'seen.txt'), 'w') as f:
        f.write('\n\n'.join(dict.fromkeys(seen['snapshots'] + [status])))

  def _check_results(self, workdir):
    manifest = outputs.read_json(os.path.join(workdir, sweep.MANIFEST))
    accuracy = {os.path.normpath(r['workdir']): outputs.read_json(
        os.path.join(r['workdir'], 'results.json'))['test_accuracy'] for r in manifest['runs']}
    table = helpers.run_forked('launch.results', workdir, '--sort=-test_accuracy')
    self.assertEqual(table.returncode, 0, table.stderr[-3000:])
    self.assertLen([line for line in table.stdout.splitlines() if 'done' in line], 4)
    csv_path, png = os.path.join(self.tmp, 'grid.csv'), os.path.join(self.tmp, 'grid.png')
    proc = helpers.run_forked('launch.results', workdir, '--format=csv', f'--output={csv_path}',
                              f'--curves={png}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(csv_path) as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, 4)
    for row in rows:
      self.assertAlmostEqual(float(row['test_accuracy']),
                             accuracy[os.path.normpath(row['run'])], places=4)
      self.assertEqual(row['step'], f'{_STEPS}/{_STEPS}')
    self.assertGreater(os.path.getsize(png), 10000)
    if os.environ.get('RESEARCH_KEEP_SWEEP'):  # for a look at the PNG and the table
      shutil.copytree(workdir, os.environ['RESEARCH_KEEP_SWEEP'], dirs_exist_ok=True)
      shutil.copy(png, os.environ['RESEARCH_KEEP_SWEEP'])
      shutil.copy(csv_path, os.environ['RESEARCH_KEEP_SWEEP'])


def _read(path):
  if not os.path.exists(path):
    return ''
  with open(path, errors='replace') as f:
    return f.read()


if __name__ == '__main__':
  tf.test.main()
