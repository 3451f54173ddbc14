"""launch.submit --cluster=slurm: the sbatch script, the checks before submitting, and real jobs.

The script and the submission logic run against stand-in sbatch/squeue/scontrol commands; the
`SlurmClusterTest` cases start a real single-node Slurm (.ci/slurm/up.sh: munged, slurmctld,
slurmd on this machine, as root) and train real 2-worker jobs through it, one of them preempted
with Slurm's signal and requeued. CI installs Slurm and sets RESEARCH_REQUIRE_SLURM=1, which turns
a missing Slurm into a failure instead of a skip.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError
from research.infra import local_cluster
from research.infra import processes
from research.submit import job as job_lib
from research.submit import slurm
from tests import helpers


def _job(workdir, nodes=1, tasks_per_node=2, gpus_per_node=0, train_args=(), **fields):
  config = config_lib.base()
  config.update(fields.pop('config', {}))
  return job_lib.Job(cluster='slurm', workdir=workdir, config=config, nodes=nodes,
                     tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node,
                     train_args=['--config=configs/cnn_mnist.py', f'--workdir={workdir}',
                                 *train_args],
                     **{'name': 'exp', 'python': '/venv/bin/python', 'chdir': '/repo',
                        **fields})


def _directives(text):
  return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith('#SBATCH')]


def _sbatch_words(line):
  """The arguments sbatch reads from an `#SBATCH` line (src/sbatch/opt.c, _get_argument):
  whitespace separates them, single or double quotes group characters, a backslash escapes the
  next character, and an unquoted '#' starts a comment."""
  words, word, quote, escaped, started = [], '', None, False, False
  for char in line[len('#SBATCH'):]:
    if escaped:
      word, escaped, started = word + char, False, True
    elif char == '\\':
      escaped = True
    elif quote:
      if char == quote:
        quote = None
      else:
        word += char
    elif char in '"\'':
      quote, started = char, True
    elif char == '#':
      break
    elif char.isspace():
      if started:
        words.append(word)
      word, started = '', False
    else:
      word, started = word + char, True
  return words + ([word] if started else [])


def _srun_line(text):
  return next(line for line in text.splitlines() if line.startswith('srun '))


class ScriptTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # nodes, tasks per node, GPUs per node -> GPUs per task, strategy
      (1, 1, 0, 0, 'default'), (1, 2, 0, 0, 'multi_worker_mirrored'),
      (2, 1, 0, 0, 'multi_worker_mirrored'), (2, 4, 4, 1, 'multi_worker_mirrored'),
      (1, 1, 8, 8, 'mirrored'), (4, 1, 8, 8, 'multi_worker_mirrored'))
  def test_sizes_and_command(self, nodes, tasks, gpus, gpus_per_task, strategy):
    text = slurm.script(_job('/w', nodes, tasks, gpus))
    directives = _directives(text)
    self.assertContainsSubset([f'--nodes={nodes}', f'--ntasks-per-node={tasks}', '--requeue',
                               '--open-mode=append', '--chdir=/repo',
                               '--output=/w/submit/slurm-%j.out',
                               f'--signal=USR1@{slurm.SIGNAL_SECONDS}'], directives)
    self.assertEqual(f'--gpus-per-task={gpus_per_task}' in directives, gpus > 0)
    srun = _srun_line(text)
    self.assertIn('/venv/bin/python -m launch.train --config=configs/cnn_mnist.py '
                  '--workdir=/w', srun)
    self.assertIn(f'--strategy={strategy} --num_gpus={gpus_per_task} '
                  f'--preempted_exit_code={processes.PREEMPTED_EXIT_CODE}', srun)

  def test_time_and_partition(self):
    directives = _directives(slurm.script(_job('/w', time='4:00:00', partition='gpu')))
    self.assertContainsSubset(['--time=4:00:00', '--partition=gpu'], directives)
    self.assertNotIn('--time', ' '.join(_directives(slurm.script(_job('/w')))))

  def test_job_decides_strategy_and_gpus(self):
    srun = _srun_line(slurm.script(_job('/w', train_args=['--strategy', 'mirrored',
                                                          '--num_gpus=3'])))
    self.assertNotIn('mirrored --num_gpus=3', srun)
    self.assertEqual(srun.count('--strategy'), 1)

  def test_paths_with_spaces_are_quoted(self):
    srun = _srun_line(slurm.script(_job('/my runs/a')))
    self.assertIn("'--workdir=/my runs/a'", srun)

  def test_directive_values_with_spaces_quotes_or_hashes_are_one_argument(self):
    workdir = '/my runs/a "b" #1\\c'
    text = slurm.script(_job(workdir, chdir="/my repo/it's"))
    lines = [line for line in text.splitlines() if line.startswith('#SBATCH')]
    words = [_sbatch_words(line) for line in lines]
    for line, got in zip(lines, words):
      self.assertLen(got, 1, line)
    self.assertContainsSubset([f'--output={slurm.log_path(workdir)}', "--chdir=/my repo/it's"],
                              [w[0] for w in words])

  def run_script(self, status, workdir):
    """The script's own logic, with srun (exiting `status`) and scontrol stood in for; returns
    (its exit status, what it printed, scontrol's calls)."""
    bin_dir = os.path.join(self.create_tempdir().full_path, 'bin')
    helpers.fake_command(bin_dir, 'srun', status=status)
    helpers.fake_command(bin_dir, 'scontrol')
    path = os.path.join(bin_dir, 'job.sh')
    with open(path, 'w') as f:
      f.write(slurm.script(_job(workdir)))
    env = {'PATH': f'{bin_dir}:/usr/bin:/bin', 'SLURM_JOB_ID': '77'}
    proc = subprocess.run(['bash', path], env=env, capture_output=True, text=True, timeout=30)
    self.assertLen(helpers.fake_calls(bin_dir, 'srun'), 1)
    return proc.returncode, proc.stdout, helpers.fake_calls(bin_dir, 'scontrol')

  @parameterized.parameters(
      (processes.PREEMPTED_EXIT_CODE, 'saved after a signal (exit 143): requeueing job 77'),
      (processes.LOST_WORKER_EXIT_CODE, 'lost a worker (exit 200): requeueing job 77 to resume '
       'from the last checkpoint'),
      # srun's status when a worker was SIGKILLed (or frozen, then killed by srun --wait)
      (128 + 9, 'lost a worker (exit 137): requeueing job 77 to resume from the last checkpoint'),
      (0, None), (1, None), (2, None), (128 + 11, None))
  def test_requeues_only_after_a_saved_stop_or_a_lost_worker(self, status, said):
    workdir = self.create_tempdir().full_path
    os.makedirs(os.path.join(workdir, 'submit'))
    code, out, scontrol = self.run_script(status, workdir)
    self.assertEqual(code, status)
    self.assertEqual(scontrol, ['requeue 77'] if said else [])
    self.assertEqual([line for line in out.splitlines() if 'requeu' in line],
                     [said] if said else [])

  def test_a_second_loss_before_a_new_checkpoint_ends_the_job(self):
    # A worker failing alone with a bug makes the others exit 200 too: it must not requeue
    # forever.
    workdir = self.create_tempdir().full_path
    os.makedirs(os.path.join(workdir, 'submit'))
    lost = processes.LOST_WORKER_EXIT_CODE
    for latest, requeued in (('', True), ('', False), ('ckpt-40', True), ('ckpt-40', False),
                             ('ckpt-80', True)):
      if latest:
        os.makedirs(os.path.join(workdir, 'checkpoints'), exist_ok=True)
        with open(os.path.join(workdir, 'checkpoints', 'checkpoint'), 'w') as f:
          f.write(f'model_checkpoint_path: "{latest}"\nall_model_checkpoint_paths: '
                  f'"{latest}"\n')
      code, out, scontrol = self.run_script(lost, workdir)
      self.assertEqual(code, lost)
      self.assertEqual(scontrol, ['requeue 77'] if requeued else [], (latest, out))
      if not requeued:
        self.assertIn(f'lost a worker again before a new checkpoint (exit {lost}): not '
                      'requeueing', out)


class SubmitTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.get_temp_dir()
    self.bin = os.path.join(self.tmp, 'bin')
    self.workdir = os.path.join(self.tmp, 'run')
    shutil.rmtree(self.workdir, ignore_errors=True)
    shutil.rmtree(self.bin, ignore_errors=True)
    os.makedirs(self.bin)
    # Only the stand-ins: the machine's own Slurm commands must not be found.
    self.enter_context(mock.patch.dict(os.environ, {'PATH': self.bin}))

  def assert_nothing_submitted(self):
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [])
    self.assertFalse(os.path.exists(self.workdir))

  def test_submits_and_records(self):
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')
    job = _job(self.workdir)
    message = slurm.submit(job)
    script = os.path.join(self.workdir, 'submit', 'slurm.sbatch')
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [f'--parsable {script}'])
    with open(script) as f:
      self.assertEqual(f.read(), slurm.script(job))
    record = job_lib.read_record(self.workdir)
    self.assertEqual((record['cluster'], record['job_id']), ('slurm', '42'))
    self.assertIn('submitted Slurm job 42', message)
    self.assertIn(os.path.join(self.workdir, 'submit', 'slurm-42.out'), message)

  def test_a_new_submission_forgets_the_last_lost_worker(self):
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')
    lost_at = os.path.join(self.workdir, 'submit', slurm.LOST_AT_NAME)
    os.makedirs(os.path.dirname(lost_at))
    with open(lost_at, 'w') as f:
      f.write('model_checkpoint_path: "ckpt-40"\n')
    slurm.submit(_job(self.workdir))
    self.assertFalse(os.path.exists(lost_at))

  def test_dry_run_submits_and_writes_nothing(self):
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')
    text = slurm.submit(_job(self.workdir), dry_run=True)
    self.assertStartsWith(text, slurm.script(_job(self.workdir)))
    self.assertIn('would write', text)
    self.assert_nothing_submitted()

  def test_a_hanging_sbatch_is_an_error_not_a_hang(self):
    path = os.path.join(self.bin, 'sbatch')
    with open(path, 'w') as f:
      f.write('#!/bin/bash\nexec /bin/sleep 30\n')
    os.chmod(path, 0o755)
    with mock.patch.object(slurm, '_TIMEOUT_SECONDS', 1):
      # (The path is quoted when it holds a character the shell would read, as a temporary
      # directory named after the running program, <string>, does under pytest -n.)
      with self.assertRaisesRegex(UserError, r"^`sbatch --parsable '?\S+slurm.sbatch'?` did not "
                                  r'answer in 1s: is slurmctld up\?'):
        slurm.submit(_job(self.workdir))
    self.assertFalse(os.path.exists(os.path.join(self.workdir, 'submit', 'job.json')))

  def test_sbatch_not_found(self):
    with self.assertRaisesRegex(UserError, 'sbatch not found'):
      slurm.submit(_job(self.workdir))
    self.assertFalse(os.path.exists(self.workdir))

  def test_rejected_submission_quotes_sbatch(self):
    helpers.fake_command(self.bin, 'sbatch', status=1,
                         stderr='sbatch: error: invalid partition specified: gpu\n')
    with self.assertRaisesRegex(UserError, 'rejected.*invalid partition specified: gpu'):
      slurm.submit(_job(self.workdir, partition='gpu'))

  def test_checks_come_before_anything(self):
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')
    cases = [
        (dict(nodes=3, tasks_per_node=1), 'batch_size 128 does not divide over 3 replicas'),
        (dict(gpus_per_node=3), 'gpus_per_node=3 does not split over --tasks_per_node=2'),
        (dict(train_args=['--local_workers=2']), '--local_workers'),
        (dict(train_args=['--start_over']), 'start over at every requeue'),
        (dict(config=dict(strategy='mirrored')), "strategy 'mirrored'"),
    ]
    for fields, message in cases:
      with self.subTest(fields=fields), self.assertRaisesRegex(UserError, re.escape(message)):
        slurm.submit(_job(self.workdir, **fields))
      self.assert_nothing_submitted()

  @parameterized.named_parameters(
      ('percent', 'run%j', "'%'"), ('newline', 'run\nb', 'a newline'))
  def test_refuses_a_workdir_slurm_cannot_name(self, name, what):
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')
    workdir = os.path.join(self.tmp, name)
    with self.assertRaisesRegex(UserError, rf'^--workdir=.* holds {what}, which the job file '
                                'cannot carry') as raised:
      slurm.submit(_job(workdir))
    self.assertNotIn('\n', str(raised.exception))
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [])
    self.assertFalse(os.path.exists(workdir))

  def test_refuses_a_current_directory_with_a_newline(self):
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')
    with self.assertRaisesRegex(UserError, r"^the current directory '/my\\nrepo' holds a "
                                'newline, which the job file cannot carry'):
      slurm.submit(_job(self.workdir, chdir='/my\nrepo'))
    self.assert_nothing_submitted()

  def test_refuses_a_workdir_of_another_experiment(self):
    helpers.fake_command(self.bin, 'sbatch', stdout='42\n')
    os.makedirs(self.workdir)
    other = config_lib.base('alexnet')
    config_lib.save(other, self.workdir)
    with self.assertRaisesRegex(UserError, "model.name='alexnet'"):
      slurm.submit(_job(self.workdir))
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [])

  def test_refuses_while_the_workdir_has_a_live_job(self):
    helpers.fake_command(self.bin, 'sbatch', stdout='43\n')
    helpers.fake_command(self.bin, 'squeue', stdout='RUNNING|None|5:00|1\n')
    job_lib.write_record(_job(self.workdir), '7')
    with self.assertRaisesRegex(UserError, 'job 7 is RUNNING.*scancel 7'):
      slurm.submit(_job(self.workdir))
    self.assertEqual(helpers.fake_calls(self.bin, 'sbatch'), [])
    # Once it has ended, a new job may take the workdir over.
    helpers.fake_command(self.bin, 'squeue', stdout='')
    helpers.fake_command(self.bin, 'scontrol', stdout='JobId=7 JobState=COMPLETED Restarts=0 '
                         'ExitCode=0:0\n')
    self.assertIn('submitted Slurm job 43', slurm.submit(_job(self.workdir)))

  def test_status(self):
    helpers.fake_command(self.bin, 'squeue', stdout='')
    helpers.fake_command(self.bin, 'scontrol', stdout='JobId=9 JobState=COMPLETED Restarts=1 '
                         'ExitCode=0:0\n')
    job = _job(self.workdir)
    record = job_lib.write_record(job, '9', log=slurm.log_path(self.workdir, 9))
    with open(record['log'], 'w') as f:
      f.write('0: I1123 trainer.py:251] step 20/300 epoch 0.09: loss 1.5 accuracy 0.5\n'
              '1: I1123 trainer.py:251] step 40/300 epoch 0.19: loss 0.8 accuracy 0.9\n'
              '0: I1123 trainer.py:205] step 40 validation: loss 0.1 accuracy 0.99\n')
    outputs.write_json(os.path.join(self.workdir, 'results.json'),
                       dict(step=66, preempted='SIGUSR1'))
    self.assertEqual(slurm.status(record).splitlines(), [
        'Slurm job 9 (exp): COMPLETED exit code 0:0, 1 restart(s)',
        '  progress: step 40/300 epoch 0.19: loss 0.8 accuracy 0.9',
        '  run: stopped by SIGUSR1 at step 66, saved',
        f'  log: {record["log"]}'])
    helpers.fake_command(self.bin, 'squeue', stdout='PENDING|BeginTime|0:00|1\n')
    self.assertStartsWith(slurm.status(record), 'Slurm job 9 (exp): PENDING (BeginTime)')


class SubmitCliTest(tf.test.TestCase):

  def test_dry_run(self):
    workdir = os.path.join(self.get_temp_dir(), 'cli run')
    proc = helpers.run_forked('launch.submit', '--cluster=slurm', '--nodes=2', '--dry_run', '--',
                              '--config=configs/cnn_mnist.py', f'--workdir={workdir}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('#SBATCH --nodes=2\n', proc.stdout)
    self.assertIn('# python -m launch.submit --cluster=slurm --nodes=2 --dry_run -- ', proc.stdout)
    self.assertIn(f"--chdir={helpers.ROOT}", proc.stdout)
    self.assertFalse(os.path.exists(workdir))

  def test_bad_input_is_one_line(self):
    cases = [
        (['--cluster=slurm', '--config.batch_size=8', '--', '--workdir=/tmp/x'],
         'not a launch.submit flag'),
        (['--cluster=slurm', '--nodes=3', '--', '--workdir=/tmp/x'],
         'does not divide over 3 replicas'),
        (['--status', '--workdir=/tmp/no-such-run'], 'has no submit/job.json'),
    ]
    for args, message in cases:
      proc = helpers.run_forked('launch.submit', *args)
      self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
      last = proc.stderr.strip().splitlines()[-1]
      self.assertStartsWith(last, 'error: ')
      self.assertIn(message, last)


# A few hundred steps of the small CNN, logged often enough to catch a step to preempt at.
# Small splits, evaluated at the end only: the job's start-ups and the requeue are what is tested.
_STEPS = 120
_TRAIN = ['--config=configs/cnn_mnist.py', f'--config.num_train_steps={_STEPS}',
          '--config.dataset.train_split=train[:7000]', '--config.dataset.validation_size=2000',
          '--config.dataset.test_split=test[:2000]', '--config.eval_every_epochs=100',
          '--config.steps_per_loop=10', '--config.log_every_steps=20',
          '--config.image_grid_size=0', '--deterministic']
_DONE = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY',
         'BOOT_FAIL', 'DEADLINE')


def _slurm_missing():
  """Why a real Slurm cannot start here, or None."""
  if shutil.which('slurmctld') is None or shutil.which('munged') is None:
    return 'Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge)'
  if os.geteuid() != 0:
    return 'the single-node Slurm of .ci/slurm/up.sh runs its daemons as root'
  return None


class _RealSlurmTest(tf.test.TestCase):
  """Starts a single-node Slurm for the class, and stops it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    missing = _slurm_missing()
    if missing:
      if os.environ.get('RESEARCH_REQUIRE_SLURM'):
        raise AssertionError(f'RESEARCH_REQUIRE_SLURM is set but {missing}')
      raise unittest.SkipTest(missing)
    cls.tmp = tempfile.mkdtemp()
    os.chmod(cls.tmp, 0o755)  # munged refuses a socket under a directory others cannot enter
    cls.slurm_dir = os.path.join(cls.tmp, 'slurm')
    # Ports of its own: classes on other pytest -n workers start their clusters meanwhile.
    ctld_port, slurmd_port = local_cluster.free_ports(2)
    up = subprocess.run(['bash', os.path.join(helpers.ROOT, '.ci', 'slurm', 'up.sh'),
                         cls.slurm_dir], capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'SLURMCTLD_PORT': str(ctld_port),
                             'SLURMD_PORT': str(slurmd_port)})
    if up.returncode:  # tearDownClass will not run: stop what did start
      subprocess.run(['bash', os.path.join(helpers.ROOT, '.ci', 'slurm', 'down.sh'),
                      cls.slurm_dir], timeout=120)
      shutil.rmtree(cls.tmp, ignore_errors=True)
      raise AssertionError(f'single-node Slurm did not start: {up.stderr[-3000:]}')
    cls.env = mock.patch.dict(os.environ, {
        'SLURM_CONF': os.path.join(cls.slurm_dir, 'etc', 'slurm.conf')})
    cls.env.start()

  @classmethod
  def tearDownClass(cls):
    if hasattr(cls, 'env'):
      subprocess.run(['bash', os.path.join(helpers.ROOT, '.ci', 'slurm', 'down.sh'),
                      cls.slurm_dir], timeout=120)
      cls.env.stop()
    shutil.rmtree(getattr(cls, 'tmp', ''), ignore_errors=True)
    super().tearDownClass()


# A stand-in for `python -m launch.train` in a job of 2 tasks: task 1 is lost to the signal named
# by $LOSE (kill -9, or frozen), task 0 notices and exits with the lost-worker status.
_LOST_WORKER = f"""#!/bin/bash
if [ "$SLURM_PROCID" = 1 ]; then sleep 1; kill -$LOSE $$; sleep 60; fi
sleep 3; exit {processes.LOST_WORKER_EXIT_CODE}
"""


class SlurmLostWorkerTest(_RealSlurmTest, parameterized.TestCase):
  """The script under a real srun with stand-in workers (seconds): what srun reports when a
  worker is lost, and that the script requeues on it."""

  @parameterized.parameters('KILL', 'STOP')
  def test_lost_worker_requeues_the_job(self, signal_name):
    workdir = os.path.join(self.tmp, signal_name)
    python = os.path.join(self.tmp, 'lost-worker-python')
    with open(python, 'w') as f:
      f.write(_LOST_WORKER)
    os.chmod(python, 0o755)
    job = _job(workdir, python=python, chdir=helpers.ROOT)
    with mock.patch.object(slurm, 'SRUN_WAIT_SECONDS', 3), \
        mock.patch.dict(os.environ, {'LOSE': signal_name}):
      slurm.submit(job)
    record = job_lib.read_record(workdir)
    self.addCleanup(subprocess.run, ['scancel', record['job_id']], timeout=60)
    deadline = time.time() + 120
    while 'requeueing' not in _read(record['log']):
      self.assertLess(time.time(), deadline, _tail(record['log']))
      time.sleep(0.5)
    self.assertIn(f'lost a worker (exit 137): requeueing job {record["job_id"]} to resume from '
                  'the last checkpoint', _read(record['log']))


class SlurmClusterTest(_RealSlurmTest):
  """Real jobs on a single-node Slurm: a 2-worker run, and one preempted then requeued."""

  @classmethod
  def setUpClass(cls):
    helpers.require_real_data()
    super().setUpClass()
    cls.reference = cls._submit('reference')
    cls.reference_state = cls._wait(cls.reference)

  @classmethod
  def _submit(cls, name):
    workdir = os.path.join(cls.tmp, name)
    proc = helpers.run_forked('launch.submit', '--cluster=slurm', '--tasks_per_node=2', '--',
                              *_TRAIN, f'--workdir={workdir}')
    if proc.returncode:
      raise AssertionError(f'launch.submit failed: {proc.stderr[-3000:]}')
    return job_lib.read_record(workdir)

  @classmethod
  def _wait(cls, record, seconds=420):
    deadline = time.time() + seconds
    while time.time() < deadline:
      state, _ = slurm.job_state(record['job_id'])
      if state in _DONE:
        return state
      time.sleep(2)
    raise AssertionError(f'job {record["job_id"]} not done after {seconds}s:\n'
                         f'{_tail(record["log"])}')

  def test_two_workers_train_and_write_the_run(self):
    record = self.reference
    log = _read(record['log'])
    self.assertEqual(self.reference_state, 'COMPLETED', log[-5000:])
    results = outputs.read_json(os.path.join(record['workdir'], 'results.json'))
    self.assertEqual(results['step'], _STEPS)
    self.assertGreater(results['test_accuracy'], 0.9)
    self.assertTrue(os.path.exists(
        os.path.join(record['workdir'], 'checkpoints', f'ckpt-{_STEPS}.index')))
    # Two tasks, one cluster: both workers logged the same final weights.
    digests = re.findall(r'^(\d): weights digest (\w+)$', log, re.M)
    self.assertCountEqual([task for task, _ in digests], ['0', '1'])
    self.assertEqual({d for _, d in digests}, {results['weights_digest']})
    status = helpers.run_forked('launch.submit', '--status', f'--workdir={record["workdir"]}')
    self.assertEqual(status.returncode, 0, status.stderr[-3000:])
    self.assertIn(f'Slurm job {record["job_id"]} (reference): COMPLETED', status.stdout)
    self.assertIn(f'  progress: step {_STEPS}/{_STEPS} epoch', status.stdout)
    self.assertIn(f'  run: finished: step {_STEPS}, test accuracy', status.stdout)

  def test_preempted_job_is_requeued_and_resumes(self):
    record = self._submit('preempted')
    deadline = time.time() + 300
    while f'step 40/{_STEPS}' not in _read(record['log']):
      self.assertLess(time.time(), deadline, _tail(record['log']))
      time.sleep(0.5)
    # What Slurm sends before the time limit (--signal=USR1@120), here at once.
    subprocess.run(['scancel', '--signal=USR1', record['job_id']], check=True, timeout=60)
    state = self._wait(record)
    log = _read(record['log'])
    self.assertEqual(state, 'COMPLETED', log[-5000:])
    stops = set(re.findall(rf'Stopped by SIGUSR1 at step (\d+) of {_STEPS}, saved', log))
    self.assertLen(stops, 1, log[-5000:])  # both workers stopped after the same step
    stop = stops.pop()
    self.assertLess(int(stop), _STEPS)
    self.assertIn(f'requeueing job {record["job_id"]}', log)
    self.assertIn(f'job {record["job_id"]} start 2 on', log)
    self.assertRegex(log, rf'Resumed from \S+/ckpt-{stop}: step {stop} of {_STEPS}')
    restarts = subprocess.run(['scontrol', 'show', 'job', '-o', record['job_id']],
                              capture_output=True, text=True, timeout=60).stdout
    self.assertIn('Restarts=1', restarts)
    results = outputs.read_json(os.path.join(record['workdir'], 'results.json'))
    self.assertEqual((results['step'], results['preempted']), (_STEPS, ''))
    # Deterministic ops: the interrupted job ends with the uninterrupted one's weights.
    reference = outputs.read_json(
        os.path.join(self.reference['workdir'], 'results.json'))
    self.assertEqual(results['weights_digest'], reference['weights_digest'])


def _read(path):
  if not os.path.exists(path):
    return ''
  with open(path, errors='replace') as f:
    return f.read()


def _tail(path, lines=40):
  return '\n'.join(_read(path).splitlines()[-lines:])


if __name__ == '__main__':
  tf.test.main()
