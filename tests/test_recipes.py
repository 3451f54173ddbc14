"""The training recipes: EMA of the weights, gradient clipping and its norm, accumulation, and
the config files that use them with mixing and RandAugment.

Mirrored (2 devices) equals one device for all of them together: tests/test_distribute.py.
"""

import os
import signal
import time
from unittest import mock

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from configs import alexnet_imagenet
from research.apps import export
from research.core import checkpoints
from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError
from research.data import preprocess
from research.infra import preemption
from research.train import optim
from research.train import saving
from research.train import setup as setup_lib
from research.train import steps
from research.train import trainer
from tests import helpers


def _sgd_config(**overrides):
  """Plain SGD at a constant rate: the update is -lr times the applied gradient."""
  config = helpers.tiny_config(**overrides)
  config.augment.enabled = False
  config.optimizer.update(dict(name='sgd', momentum=0.0, weight_decay=0.0))
  config.schedule.update(dict(name='constant', warmup_epochs=0.0))
  return config


def _batch(size=8, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (size, 28, 28, 1), dtype=np.uint8),
          rng.integers(0, 10, size, dtype=np.int32))


def _trainer(config, strategy=None):
  """(model, optimizer, one_step(batch, *more) → the train fn's totals by name over one call of
  a step per batch)."""
  strategy = strategy or tf.distribute.get_strategy()
  model, optimizer, _, step = setup_lib.build_state(config, strategy, 10, (28, 28, 1), 10, 10)
  train = steps.make_train_fn(strategy, model, optimizer, config, step, tf.Variable(0.0))

  def one_step(batch, *more):
    dataset = tf.data.Dataset.from_tensors(batch)
    for b in more:
      dataset = dataset.concatenate(tf.data.Dataset.from_tensors(b))
    batches = strategy.experimental_distribute_dataset(dataset)
    return train(iter(batches), tf.constant(1 + len(more)))

  return model, optimizer, one_step


def _values(variables):
  return [v.numpy() for v in variables]


class EmaTest(tf.test.TestCase, parameterized.TestCase):

  def test_average_follows_the_numpy_reference(self):
    # Keras' rule: the first update copies the weights, then avg = d·avg + (1-d)·w each step.
    decay = 0.8
    model, optimizer, one_step = _trainer(_sgd_config(ema_decay=decay))
    reference = None
    for i in range(4):
      one_step(_batch(seed=i))
      w = _values(model.trainable_variables)
      reference = w if reference is None else [decay * a + (1 - decay) * b
                                               for a, b in zip(reference, w)]
    averages = _values(optim.ema_variables(optimizer))
    self.assertLen(averages, len(w))
    for a, r in zip(averages, reference):
      self.assertAllClose(a, r, rtol=1e-6, atol=1e-7)
    self.assertFalse(all(np.array_equal(a, b) for a, b in zip(averages, w)))

  @parameterized.parameters('default', 'mirrored')
  def test_swap_uses_the_averages_then_restores_the_raw_weights_bitwise(self, strategy):
    strategy = (None if strategy == 'default' else tf.distribute.MirroredStrategy(['/cpu:0']))
    model, optimizer, one_step = _trainer(_sgd_config(ema_decay=0.5), strategy)
    for i in range(2):
      one_step(_batch(seed=i))
    raw, averages = _values(model.trainable_variables), _values(optim.ema_variables(optimizer))
    others = _values(model.non_trainable_variables)
    with optim.ema_weights(model, optimizer):
      for v, a in zip(model.trainable_variables, averages):
        self.assertAllEqual(v.numpy(), a)
    for v, r in zip(model.trainable_variables, raw):
      self.assertAllEqual(v.numpy(), r)
    for v, r in zip(model.non_trainable_variables, others):
      self.assertAllEqual(v.numpy(), r)

  def test_run_reports_both_and_evaluation_export_use_the_averages(self):
    workdir = self.create_tempdir().full_path
    config = helpers.tiny_config(num_train_steps=6, ema_decay=0.5)  # one epoch: one validation
    config.schedule.learning_rate = 1e-2  # the average then scores apart from the raw weights
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(config, workdir)
    for key in ('validation_accuracy', 'validation_accuracy_ema', 'test_accuracy',
                'test_accuracy_ema', 'test_loss_ema'):
      self.assertIn(key, results)
    self.assertNotEqual(results['test_loss'], results['test_loss_ema'])
    validation = {v.tag: tf.make_ndarray(v.tensor)
                  for path in tf.io.gfile.glob(os.path.join(workdir, 'validation', 'ev*'))
                  for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value}
    self.assertContainsSubset({'accuracy', 'accuracy_ema', 'loss', 'loss_ema'}, validation)
    # Losses, not accuracies: six steps may leave both at chance, equal.
    self.assertNotEqual(validation['loss'], validation['loss_ema'])
    best = outputs.read_json(os.path.join(workdir, 'checkpoints', 'best', 'best.json'))
    self.assertEqual(best['validation_accuracy'], results['validation_accuracy_ema'])
    _, _, model, _ = checkpoints.load_for_inference(workdir, 'latest')
    path = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))[-1]
    # Inference restores the averages the training checkpoint saved, not the raw weights.
    averages = _state(config, path)[0]
    self.assertNotEqual(outputs.weights_digest(model), results['weights_digest'])
    for v, a in zip(model.trainable_variables, averages):
      self.assertAllEqual(v.numpy(), a)
    out = os.path.join(self.create_tempdir().full_path, 'export')
    export.export(workdir, out, 'latest')
    exported = tf.saved_model.load(out).model_variables  # in the order of model.variables
    self.assertLen(exported, len(model.variables))
    for e, v in zip(exported, model.variables):
      self.assertAllEqual(e.numpy(), v.numpy(), msg=v.path)
    config.ema_eval = False
    config_lib.save(config, workdir)
    _, _, model, _ = checkpoints.load_for_inference(workdir, 'latest')
    self.assertEqual(outputs.weights_digest(model), results['weights_digest'])

  def test_inference_averages_only_the_blocks_training_left_trainable(self):
    workdir = self.create_tempdir().full_path
    config = helpers.tiny_config(ema_decay=0.5, freeze=('conv1',), image_grid_size=0)
    with helpers.mock_tfds():
      trainer.train_and_evaluate(config, workdir)
    path = checkpoints.checkpoint_paths(os.path.join(workdir, 'checkpoints'))[-1]
    averages, raw, _, weights = _state(config, path)
    _, _, model, _ = checkpoints.load_for_inference(workdir, 'latest')
    self.assertLen(model.trainable_variables, len(averages))
    for v, a, r in zip(model.trainable_variables, averages, raw):
      self.assertAllEqual(v.numpy(), a)
      self.assertFalse(np.array_equal(a, r), v.path)
    frozen = [v for v in model.weights if v.path.startswith('cnn/conv1/')]
    self.assertNotEmpty(frozen)
    for v in frozen:
      self.assertAllEqual(v.numpy(), weights[v.path])


def _state(config, path):
  """(EMA values, raw trainable values, step, {path: value} of every model weight) of training
  checkpoint `path`, restored strictly."""
  model, optimizer, _, step = setup_lib.build_state(config, tf.distribute.get_strategy(), 10,
                                                    (28, 28, 1), 10, 10)
  checkpoints.restore_newest_readable(saving.training_checkpoint(model, optimizer, step), [path])
  return (_values(optim.ema_variables(optimizer)), _values(model.trainable_variables),
          int(step.numpy()), {v.path: v.numpy() for v in model.weights})


def _gradient(model, batch):
  """(global norm, gradients) of the mean loss over `batch` at the model's weights."""
  images, labels = batch
  with tf.GradientTape() as tape:
    x = preprocess.preprocess(images)
    loss = tf.reduce_mean(steps.cross_entropy(labels, model(x, training=True)))
  grads = tape.gradient(loss, model.trainable_variables)
  return float(np.sqrt(sum(np.sum(np.square(g.numpy())) for g in grads))), grads


class ClipTest(tf.test.TestCase, parameterized.TestCase):

  def _step(self, clip):
    """(weights before, after, reported norm, reference global norm of the mean-loss gradient)
    of one SGD step at learning rate 1."""
    model, _, one_step = _trainer(_sgd_config(clip_global_norm=clip, schedule=dict(
        name='constant', learning_rate=1.0, warmup_epochs=0.0)))
    reference, grads = _gradient(model, _batch())
    before = _values(model.trainable_variables)
    norm = float(one_step(_batch())['grad_norm_sum'])
    return before, _values(model.trainable_variables), norm, reference, grads

  def test_grad_norm_is_the_global_norm_of_the_mean_loss_gradient(self):
    _, _, norm, reference, _ = self._step(0.0)
    self.assertGreater(reference, 0.1)
    self.assertAllClose(norm, reference, rtol=1e-5)

  def test_clipping_bounds_the_update_and_reports_the_norm_before_it(self):
    clip = 0.1
    before, after, norm, reference, _ = self._step(clip)
    update = np.sqrt(sum(np.sum(np.square(a - b)) for a, b in zip(after, before)))
    self.assertGreater(reference, 2 * clip)  # so the clip acts
    self.assertLessEqual(update, clip * (1 + 1e-5))
    self.assertAllClose(update, clip, rtol=1e-3)
    self.assertAllClose(norm, reference, rtol=1e-5)

  def test_off_applies_the_gradient_unchanged(self):
    before, after, _, _, grads = self._step(0.0)
    for a, b, g in zip(after, before, grads):
      self.assertAllClose(b - a, g.numpy(), rtol=1e-4, atol=1e-6)

  @parameterized.named_parameters(('unclipped', 0.0, 1), ('clipped', 0.1, 3))
  def test_a_call_takes_the_norm_on_its_first_step_unless_it_clips(self, clip, measured):
    model, _, one_step = _trainer(_sgd_config(clip_global_norm=clip))
    first, _ = _gradient(model, _batch(seed=0))
    totals = one_step(*(_batch(seed=i) for i in range(3)))
    self.assertEqual(totals['grad_norms'], measured)
    norm_sum = totals['grad_norm_sum']
    if measured == 1:
      self.assertAllClose(norm_sum, first, rtol=1e-5)
    else:  # the later steps' norms differ from the first's: clipped, they are all in the sum
      self.assertNotAllClose(norm_sum, 3 * first, rtol=1e-3)

  def test_grad_norm_is_averaged_into_the_training_log_and_tensorboard(self):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(helpers.tiny_config(), workdir)
    self.assertGreater(results['grad_norm'], 0.0)
    tags = {v.tag for path in tf.io.gfile.glob(os.path.join(workdir, 'train', 'events.*'))
            for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value}
    self.assertIn('grad_norm', tags)


class AccumulateTest(tf.test.TestCase, parameterized.TestCase):

  # Measured: after 3 SGD steps of the tiny CNN the weights differ by at most 8e-7 of each
  # tensor's largest value (float32 rounding: the gradient is summed in another order).
  TOLERANCE = 1e-5

  def _train(self, k, batch_norm=False):
    config = _sgd_config(batch_size=16, accumulate_steps=k)
    config.schedule.learning_rate = 0.1
    config.model.batch_norm = batch_norm
    keras.utils.set_random_seed(0)  # the same initial weights for every k
    model, _, one_step = _trainer(config)
    initial = _values(model.weights)
    for i in range(3):
      sums = one_step(_batch(16, seed=i))
    return initial, _values(model.weights), sums

  def test_micro_batches_match_the_whole_batch_without_batch_norm(self):
    initial_1, whole, sums_1 = self._train(1)
    initial_4, micro, sums_4 = self._train(4)
    for a, b in zip(initial_1, initial_4):
      self.assertAllEqual(a, b)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(whole, initial_1))
    self.assertGreater(moved, 1e-3)
    for a, b in zip(whole, micro):
      self.assertAllClose(a, b, rtol=self.TOLERANCE, atol=self.TOLERANCE * np.abs(a).max())
    self.assertAllClose(sums_1, sums_4, rtol=1e-5)  # loss, correct, count, stop, grad norm


class RecipeChecksTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (dict(ema_decay=1.0), r'ema_decay=1.0 is outside \[0, 1\)'),
      (dict(ema_decay=-0.1), r'ema_decay=-0.1 is outside'),
      (dict(clip_global_norm=-1.0), r'clip_global_norm=-1.0 is negative'),
      (dict(accumulate_steps=0), r'accumulate_steps=0 must be at least 1'),
      (dict(accumulate_steps=3), r'batch_size=8 does not split into accumulate_steps=3 '
                                 r'micro-batches on each of 1 replica: make it a multiple of 3'))
  def test_bad_recipe_is_one_line_before_anything_is_written(self, overrides, message):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with helpers.mock_tfds(), self.assertRaisesRegex(UserError, '^config.' + message):
      trainer.train_and_evaluate(helpers.tiny_config(**overrides), workdir)
    self.assertFalse(os.path.exists(workdir))

  def test_a_workdir_cannot_switch_the_ema_on_midway(self):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      trainer.train_and_evaluate(helpers.tiny_config(image_grid_size=0), workdir)
      with self.assertRaisesRegex(UserError, 'ema_decay=0.0, not 0.9: an EMA cannot start'):
        trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=4, ema_decay=0.9),
                                   workdir)

  def test_batch_must_split_over_replicas_times_micro_batches(self):
    config = helpers.tiny_config(batch_size=12, accumulate_steps=2)
    config_lib.check_recipe(config, 2)
    config.batch_size = 10
    with self.assertRaisesRegex(UserError, 'on each of 2 replicas: make it a multiple of 4$'):
      config_lib.check_recipe(config, 2)


class RecipeResumeTest(tf.test.TestCase):
  """SIGTERM mid-run and resume with every recipe on (EMA, clipping, accumulation, RandAugment,
  cutmix and mixup): bitwise equal."""

  def test_sigterm_and_resume_ends_as_the_uninterrupted_run(self):
    config = helpers.tiny_config(num_train_steps=6, ema_decay=0.7, clip_global_norm=0.5,
                                 accumulate_steps=2, deterministic=True, image_grid_size=0)
    config.augment.update(dict(randaugment=(2, 9), mixup_alpha=0.4, cutmix_alpha=1.0))
    reference, workdir = (self.create_tempdir().full_path for _ in range(2))
    with helpers.mock_tfds():
      uninterrupted = trainer.train_and_evaluate(config, reference)
      watchers = []
      real_watcher = preemption.Watcher

      def watcher():
        watchers.append(real_watcher())
        return watchers[-1]

      def signal_after_step_3(step, totals):
        if step == 3:  # the signal lands between steps 3 and 4
          os.kill(os.getpid(), signal.SIGTERM)
          deadline = time.time() + 10
          while not watchers[-1].flag.numpy() and time.time() < deadline:
            time.sleep(0.01)
        return totals

      with mock.patch.object(preemption, 'Watcher', watcher), \
          helpers.after_each_train_call(signal_after_step_3):
        stopped = trainer.train_and_evaluate(config, workdir)
      resumed = trainer.train_and_evaluate(config, workdir)
    self.assertEqual((stopped['preempted'], stopped['step']), ('SIGTERM', 4))
    self.assertEqual(resumed['step'], 6)
    self.assertEqual(resumed['weights_digest'], uninterrupted['weights_digest'])
    paths = [checkpoints.checkpoint_paths(os.path.join(w, 'checkpoints'))[-1]
             for w in (reference, workdir)]
    (ema_a, raw_a, step_a, _), (ema_b, raw_b, step_b, _) = (_state(config, p) for p in paths)
    self.assertEqual((step_a, step_b), (6, 6))
    for a, b in zip(ema_a + raw_a, ema_b + raw_b):
      self.assertAllEqual(a, b)
    self.assertEqual(resumed['test_accuracy_ema'], uninterrupted['test_accuracy_ema'])


class RecipeConfigTest(tf.test.TestCase, parameterized.TestCase):
  """The configs built on the recipes train their small variants with everything on."""

  def _assert_recipe_ran(self, config, results):
    self.assertEqual(results['step'], config.num_train_steps)
    for key in ('test_accuracy', 'test_accuracy_ema', 'grad_norm'):
      self.assertIn(key, results)
    self.assertGreater(config.ema_decay, 0)
    self.assertGreater(config.augment.randaugment[0], 0)
    self.assertTrue(config.augment.mixup_alpha and config.augment.cutmix_alpha)

  def test_cifar10_vgg_trains_its_tiny_variant_on_mock_data(self):
    config = helpers.load_config('vgg16_cifar10', 'tiny')
    self.assertEqual(config.dataset.name, 'cifar10')
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(config, self.create_tempdir().full_path)
    self._assert_recipe_ran(config, results)

  @parameterized.parameters('alexnet_imagenet', 'vgg16_imagenet')
  def test_modern_imagenet_variant_trains_at_the_tiny_sizes(self, name):
    config = helpers.load_config(name, 'modern')
    self.assertTrue(config.model.batch_norm)
    self.assertGreater(config.clip_global_norm, 0)
    config.model = helpers.load_config(name, 'tiny').model
    config.model.batch_norm = True
    alexnet_imagenet.tiny(config)
    root = helpers.write_image_folder(self.create_tempdir().full_path, per_class=10)
    config.dataset.name = f'{config_lib.FOLDER_PREFIX}{root}'
    config.dataset.validation_size = 8
    results = trainer.train_and_evaluate(config, self.create_tempdir().full_path)
    self._assert_recipe_ran(config, results)
