"""launch.train's distribution flags as a user runs them: each sets its config field when given
and leaves the config file's otherwise; wrong combinations end in one line and exit 2."""

import json
import os
import textwrap

from absl.testing import parameterized
import tensorflow as tf

from tests import helpers


def _outside_any_cluster():
  """run_cli's `env` for a command outside any cluster."""
  return dict.fromkeys(helpers.cluster_variables())


# A config file whose distribution fields differ from the flags the tests pass.
_CONFIG_FILE = textwrap.dedent('''\
    from research.core import config as config_lib


    def get_config():
      c = config_lib.base('cnn', 'mnist')
      c.strategy = 'mirrored'
      c.num_gpus = -1
      c.num_cpu_devices = 2
      c.mixed_precision = 'mixed_bfloat16'
      c.jit_compile = True
      c.batch_size = 16
      c.num_train_steps = 2
      c.steps_per_loop = 1
      c.log_every_steps = 1
      c.dataset.train_split = 'train[:1000]'  # two steps: a slice of MNIST is plenty
      c.dataset.test_split = 'test[:500]'
      c.dataset.validation_size = 100
      c.eval_batch_size = 500
      c.image_grid_size = 0
      return c
    ''')


class DistributeFlagsTest(tf.test.TestCase, parameterized.TestCase):

  def config_file(self):
    return self.create_tempfile('distributed.py', content=_CONFIG_FILE).full_path

  def train(self, *args, workdir=None):
    workdir = workdir or self.create_tempdir().full_path
    return helpers.run_forked('launch.train', f'--workdir={workdir}', *args,
                              env=_outside_any_cluster())

  def assert_refused(self, proc, message, workdir):
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertIn(message, helpers.error_line(proc))
    self.assertStartsWith(helpers.error_line(proc), 'error: ')
    self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(os.listdir(workdir), [])  # nothing written

  @parameterized.named_parameters(
      ('too_many_gpus', ['--num_gpus=%d'], 'num_gpus=%d but this machine has %d GPU(s)'),
      ('no_tpu', ['--strategy=tpu'], "strategy tpu found no TPU 'local'"),
      ('local_workers_need_multi_worker', ['--local_workers=2'],
       "--local_workers=2 starts a multi-worker cluster: add --strategy=multi_worker_mirrored "
       "(the strategy is 'default')"),
      ('unknown_precision', ['--mixed_precision=float8'], 'flag --mixed_precision=float8'),
  )
  def test_refused(self, args, message):
    if '%d' in message:  # one more GPU than this machine has
      gpus = len(tf.config.list_physical_devices('GPU'))
      args, message = [args[0] % (gpus + 1)], message % (gpus + 1, gpus)
    workdir = self.create_tempdir().full_path
    self.assert_refused(self.train(*args, workdir=workdir), message, workdir)

  def test_config_file_values_stand_without_flags(self):
    # The file's mirrored strategy over 2 CPU devices: a batch of 7 cannot be split.
    workdir = self.create_tempdir().full_path
    proc = self.train(f'--config={self.config_file()}', '--config.batch_size=7',
                      workdir=workdir)
    self.assert_refused(proc, 'batch_size 7 does not divide over 2 replicas', workdir)

  def test_flags_override_the_config_file(self):
    workdir = self.create_tempdir().full_path
    proc = self.train(f'--config={self.config_file()}', '--strategy=multi_worker_mirrored',
                      '--num_cpu_devices=0', workdir=workdir)
    self.assert_refused(proc, 'needs a cluster: set TF_CONFIG, run under Slurm (srun), or start '
                        'local workers with --local_workers=N', workdir)

  def test_local_workers_form_a_cluster(self):
    # Each worker gets its TF_CONFIG, joins a 2-worker cluster (2 replicas), then refuses the
    # batch: the supervisor reports that worker's failure with its status.
    workdir = self.create_tempdir().full_path
    proc = self.train('--strategy=multi_worker_mirrored', '--local_workers=2',
                      '--config.batch_size=7', workdir=workdir)
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertRegex(proc.stderr, r'\[worker [01]\] error: batch_size 7 does not divide over 2 '
                     'replicas')
    self.assertRegex(helpers.error_line(proc),
                     r'^error: worker [01] \(pid \d+\) exited with status 2; stopped the other '
                     'workers$')
    self.assertEqual(os.listdir(workdir), [])


class DistributeFlagsTrainTest(tf.test.TestCase):

  def test_given_flags_win_the_others_keep_the_file(self):
    helpers.require_real_data()
    workdir = self.create_tempdir().full_path
    config = self.create_tempfile('distributed.py', content=_CONFIG_FILE).full_path
    proc = helpers.run_cli('launch.train', f'--workdir={workdir}', f'--config={config}',
                           '--num_gpus=0', '--mixed_precision=float32', '--nojit_compile',
                           env=_outside_any_cluster())
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn('test accuracy', proc.stdout)
    self.assertIn('Strategy mirrored with 2 replica(s)', proc.stderr)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    fields = ('strategy', 'num_gpus', 'num_cpu_devices', 'mixed_precision', 'jit_compile')
    self.assertEqual({field: saved[field] for field in fields},
                     dict(strategy='mirrored', num_cpu_devices=2,  # the file's
                          num_gpus=0, mixed_precision='float32', jit_compile=False))  # flags
