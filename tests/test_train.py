"""End-to-end tests of the loop: mock-data train and evaluate, resume, and real-MNIST learning."""

import json
import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from research.apps import evaluate
from research.apps import predict
from research.core import checkpoints
from research.core import config as config_lib
from research.core import outputs
from research.core.errors import UserError
from research.data import pipeline
from research.data import sources
from research.train import steps
from research.train import trainer
from tests import helpers


def _scalar_tags(logdir):
  """The summary tags written under `logdir`."""
  return {v.tag for path in tf.io.gfile.glob(os.path.join(logdir, 'events.*'))
          for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value}


class LossTest(tf.test.TestCase):

  def test_cross_entropy_matches_keras(self):
    labels = tf.constant([0, 2, 1])
    logits = tf.random.normal((3, 4), seed=1)
    import keras
    expected = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    self.assertAllClose(steps.cross_entropy(labels, logits), expected, atol=1e-6)

  def test_label_smoothing_raises_loss_of_confident_right_answers(self):
    labels = tf.constant([0])
    logits = tf.constant([[20.0, 0.0, 0.0]])
    self.assertLess(float(steps.cross_entropy(labels, logits)[0]), 1e-6)
    self.assertGreater(float(steps.cross_entropy(labels, logits, 0.1)[0]), 0.5)

  def test_replica_loss_is_divided_by_the_global_batch(self):
    # Two replicas each holding half the batch: the sum of their losses must be the mean loss.
    per_example = tf.constant([1.0, 2.0, 3.0, 4.0])
    halves = [tf.nn.compute_average_loss(per_example[i:i + 2], global_batch_size=4)
              for i in (0, 2)]
    self.assertAllClose(sum(halves), tf.reduce_mean(per_example))


def _ranked_split(label_ranks, num_classes, seed=0):
  """Images whose pixels are the logits (one row of `num_classes` distinct values each), and
  labels whose logit has the given rank (0 = the largest)."""
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for rank in label_ranks:
    pixels = rng.permutation(num_classes) * 30  # distinct: no ties at the top-k boundary
    images.append(pixels.astype(np.uint8).reshape(1, num_classes, 1))
    labels.append(np.argsort(-pixels)[rank])
  return sources.ArraySource(np.stack(images), np.array(labels, np.int32))


class EvalStepTest(tf.test.TestCase, parameterized.TestCase):
  """Exact evaluation against NumPy, on a fixed model whose logits are the image's pixels."""

  @parameterized.product(
      # Label ranks: top-1 hits only at rank 0, top-5 hits below rank 5. The last example is a
      # top-5 hit but a top-1 miss, and it is the one the padding repeats, masked out.
      case=[(7, (0, 1, 4, 5, 6, 2, 0, 3, 6, 5, 4)), (3, (0, 1, 2, 2, 0, 1, 1, 0, 2, 0, 1))],
      strategy=['default', 'mirrored'])
  def test_top1_and_top5_are_exact_with_a_padded_last_batch(self, case, strategy):
    num_classes, ranks = case
    split = _ranked_split(ranks, num_classes)
    batch = 8  # 11 examples: the second batch holds 3 of them and 5 masked copies of the last
    strategy = (tf.distribute.get_strategy() if strategy == 'default'
                else tf.distribute.MirroredStrategy(['/cpu:0']))
    config = config_lib.base()
    config.model.input_size = 0  # no resize: the logits are the pixels, rescaled to [-1, 1]
    eval_fn = steps.make_eval_fn(strategy, keras.layers.Flatten(), config, num_classes)
    ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.eval_dataset(split, batch, ctx))
    metrics = steps.evaluate_split(strategy, eval_fn, ds)

    logits = split.images.reshape(len(split), num_classes) / 255.0 * 2.0 - 1.0
    order = np.argsort(-logits, axis=1)
    top1 = np.mean(order[:, 0] == split.labels)
    top5 = np.mean([label in row[:5] for label, row in zip(split.labels, order)])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(split)), split.labels])

    self.assertEqual(metrics['num_examples'], len(split))
    self.assertAlmostEqual(metrics['accuracy'], top1, places=6)
    self.assertAlmostEqual(metrics['top5_accuracy'], top5, places=6)
    self.assertAlmostEqual(metrics['loss'], loss, places=5)
    if num_classes > 5:
      self.assertEqual((top1, top5), (2 / 11, 7 / 11))  # the ranks above, counted by hand
    else:
      self.assertEqual(top5, 1.0)  # every label is in the top 5 of 3 classes
    self.assertEqual(int(metrics['confusion'].sum()), len(split))


class MockTrainTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(('cnn', 'mnist', False), ('cnn_dropout', 'mnist', False),
                            ('cnn', 'fashion_mnist', True))
  def test_two_steps_then_evaluate_and_predict(self, model, dataset, batch_norm):
    workdir = self.create_tempdir().full_path
    config = helpers.tiny_config(model, dataset)
    config.model.batch_norm = batch_norm
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(config, workdir)
      metrics = evaluate.evaluate(workdir, 'test')
    self.assertEqual(results['step'], 2)
    for key in ('step', 'train_loss', 'test_accuracy', 'test_top5_accuracy', 'test_loss',
                'validation_accuracy', 'validation_top5_accuracy', 'wall_seconds',
                'train_seconds', 'weights_digest'):
      self.assertIsNotNone(results[key], key)
    self.assertTrue(np.isfinite(results['train_loss']))
    self.assertEqual(metrics['num_examples'], 64)
    self.assertAlmostEqual(metrics['accuracy'], results['test_accuracy'], places=6)
    self.assertAlmostEqual(metrics['top5_accuracy'], results['test_top5_accuracy'], places=6)
    self.assertGreaterEqual(metrics['top5_accuracy'], metrics['accuracy'])
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      self.assertEqual(json.load(f)['top5_accuracy'], metrics['top5_accuracy'])
    self.assertLen(metrics['per_class_accuracy'], 10)
    for name in ('config.json', 'results.json', 'inputs.png', 'eval_test.json',
                 'confusion_test.png', 'checkpoints/checkpoint'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    self.assertNotEmpty(tf.io.gfile.glob(os.path.join(workdir, 'train', 'events.*')))
    self.assertIn('top5_accuracy', _scalar_tags(os.path.join(workdir, 'validation')))
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['dataset']['name'], dataset)
    _, _, restored, _ = checkpoints.load_for_inference(workdir, 'latest')
    self.assertEqual(outputs.weights_digest(restored), results['weights_digest'])
    image = os.path.join(workdir, 'inputs.png')
    (result,) = predict.predict(workdir, [image])
    self.assertEqual(result.error, '')
    self.assertLen(result.top, 3)
    self.assertAlmostEqual(sum(p for _, p in result.top), 1.0, delta=1.0)

  @parameterized.parameters(('alexnet_mnist', 'tiny'), ('vgg16_mnist', 'tiny'),
                            ('resnet_mnist', 'tiny'))
  def test_tiny_variant_trains_end_to_end_with_on_device_resize(self, name, variant):
    config = helpers.load_config(name, variant)
    tiny = helpers.tiny_config(config.model.name)
    config.update({k: tiny[k] for k in ('batch_size', 'eval_batch_size', 'num_train_steps',
                                        'steps_per_loop', 'log_every_steps', 'image_grid_size')})
    config.dataset.validation_size = 16
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(config, workdir)
    self.assertEqual(results['step'], 2)
    self.assertTrue(np.isfinite(results['train_loss']))
    # The host shipped 28×28 digits; the grid shows them as the model saw them, resized.
    grid = tf.io.decode_png(tf.io.read_file(os.path.join(workdir, 'inputs.png')))
    self.assertGreater(grid.shape[0], config.model.input_size)

  @parameterized.parameters('default', 'mirrored')
  def test_jit_compile_trains_with_dropout_and_augmentation(self, strategy):
    # mirrored over the one CPU device here: the compiled model inside a replica context
    config = helpers.tiny_config('cnn_dropout', jit_compile=True, strategy=strategy)
    with helpers.mock_tfds():
      results = trainer.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertTrue(np.isfinite(results['train_loss']))

  def test_rerun_resumes_and_a_finished_run_is_not_retrained(self):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      first = trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=2), workdir)
      again = trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=2), workdir)
      longer = trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=4), workdir)
    self.assertEqual(again['weights_digest'], first['weights_digest'])
    self.assertEqual(longer['step'], 4)
    self.assertNotEqual(longer['weights_digest'], first['weights_digest'])

  def test_stopped_and_resumed_with_mixing_and_randaugment_ends_as_the_uninterrupted_run(self):
    config = helpers.tiny_config('cnn_dropout', num_train_steps=4, checkpoint_every_steps=4,
                                 deterministic=True)
    config.augment.update(dict(randaugment=(2, 9), color_ops=True, mixup_alpha=0.4,
                               cutmix_alpha=1.0))

    def stop_at_step_2(step, totals):  # as a preemption signal there would
      return {**totals, 'stop': np.float32(1.0)} if step == 2 else totals

    with helpers.mock_tfds():
      whole = trainer.train_and_evaluate(config, self.create_tempdir().full_path)
      workdir = self.create_tempdir().full_path
      with helpers.after_each_train_call(stop_at_step_2):
        stopped = trainer.train_and_evaluate(config, workdir)
      resumed = trainer.train_and_evaluate(config, workdir)
    self.assertEqual(stopped['step'], 2)
    self.assertEqual(resumed['step'], 4)
    self.assertEqual(resumed['weights_digest'], whole['weights_digest'])

  def test_one_line_says_what_runs_from_scratch_then_resuming(self):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      with self.assertLogs(level='INFO') as fresh:
        trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=2), workdir)
      with self.assertLogs(level='INFO') as resumed:
        trainer.train_and_evaluate(helpers.tiny_config(num_train_steps=4), workdir)
    plans = [[line for line in logs.output if 'Training cnn (' in line]
             for logs in (fresh, resumed)]
    self.assertEqual([len(p) for p in plans], [1, 1])
    self.assertRegex(plans[0][0], r'on mnist \(48 train, 16 validation, 64 test; memory '
                     r'pipeline\), strategy default with 1 replica, float32: 2 steps \(0\.33 '
                     r'epochs\) at batch 8 in .*, from scratch\.$')
    self.assertRegex(plans[1][0], r': 4 steps \(0\.67 epochs\) at batch 8 in .*, resuming at '
                     r'step 2\.$')

  def test_a_label_smoothed_training_loss_says_so(self):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds(), self.assertLogs(level='INFO') as logs:
      trainer.train_and_evaluate(helpers.tiny_config(label_smoothing=0.1), workdir)
    progress = [line for line in logs.output if ' epoch ' in line and 'img/s' in line]
    self.assertNotEmpty(progress)
    for line in progress:
      self.assertRegex(line, r': loss \(with label smoothing 0\.1\) \d')

  def test_workdir_of_another_model_is_refused_untouched(self):
    workdir = self.create_tempdir().full_path
    with helpers.mock_tfds():
      trainer.train_and_evaluate(helpers.tiny_config('cnn'), workdir)
      before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
      with open(os.path.join(workdir, 'config.json')) as f:
        saved = f.read()
      with self.assertRaisesRegex(UserError, "model.name='cnn', not 'cnn_dropout'"):
        trainer.train_and_evaluate(helpers.tiny_config('cnn_dropout'), workdir)
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'checkpoints'))), before)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(f.read(), saved)


class RealMnistTest(tf.test.TestCase):

  def test_loss_goes_down_on_a_real_mnist_subset(self):
    data_dir = helpers.real_data_dir()
    if data_dir is None:
      self.skipTest('needs prepared MNIST: set TFDS_DATA_DIR (CI uses ../shared/tfds)')
    config = helpers.tiny_config(num_train_steps=90, batch_size=32, log_every_steps=30,
                                 steps_per_loop=30)
    config.schedule.warmup_epochs = 0.0
    config.schedule.learning_rate = 3e-3
    config.dataset.data_dir = data_dir
    config.dataset.download = False
    config.dataset.validation_size = 1000
    config.eval_batch_size = 500
    workdir = self.create_tempdir().full_path
    results = trainer.train_and_evaluate(config, workdir)
    (events,) = tf.io.gfile.glob(os.path.join(workdir, 'train', 'events.*'))
    losses = [float(tf.make_ndarray(v.tensor))
              for e in tf.compat.v1.train.summary_iterator(events)
              for v in e.summary.value if v.tag == 'loss']
    self.assertLen(losses, 3)
    self.assertLess(losses[-1], 0.5 * losses[0])
    self.assertGreater(results['test_accuracy'], 0.8)
