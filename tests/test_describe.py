"""The describe entry point: per-layer tables and exact totals without data, and its errors."""

from absl.testing import parameterized
import tensorflow as tf

from research.apps import describe
from research.core import config as config_lib
from research.core.errors import UserError
from tests import helpers


class DescribeModelTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # Without an input size of its own, a model sees a 28×28 image with `channels` channels.
      ('cnn', {}, 10, 1, '(28, 28, 1)', '243,786'),
      ('cnn', {}, 100, 3, '(28, 28, 3)', f'{1792 + 36928 + 204928 + 12900:,}'),
      ('alexnet', {'width_divisor': 32}, 10, 1, '(227, 227, 1)', None),
      ('vgg11', {'width_divisor': 32, 'input_size': 32}, 10, 3, '(32, 32, 3)', None),
      ('resnet18', {'width_divisor': 8, 'input_size': 32, 'stem': 'small'}, 10, 1,
       '(32, 32, 1)', None),
  )
  def test_table(self, model, fields, classes, channels, shape, total):
    config = config_lib.base(model)
    config.model.update(fields)
    text = describe.describe_model(config, classes, channels)
    self.assertIn(f'model {model}: input {shape}, {classes} classes', text)
    self.assertIn('logits', text)
    last = text.splitlines()[-1].split()
    self.assertEqual(last[0], 'total')
    if total is not None:
      self.assertEqual(last[1], total)

  def test_input_too_small_for_the_pools(self):
    config = config_lib.base('vgg11')
    config.model.update(width_divisor=32, input_size=16)
    with self.assertRaisesRegex(UserError, r'\(16, 16, 1\) is too small for vgg11: block5 '
                                'cannot shrink'):
      describe.describe_model(config)

  @parameterized.parameters((0, 1), (10, 0))
  def test_needs_classes_and_channels(self, classes, channels):
    with self.assertRaisesRegex(UserError, 'must be >= 1'):
      describe.describe_model(config_lib.base('cnn'), classes, channels)

  def test_field_the_model_refuses(self):
    config = config_lib.base('alexnet')
    config.model.width_divisor = 0
    with self.assertRaisesRegex(UserError, 'width_divisor'):
      describe.describe_model(config)


class DescribeCliTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # The published architecture; configs/alexnet_mnist.py, which --model=alexnet loads, adds
      # batch norm: conv1's 96 biases give way to 4 × 96 norm parameters (11,616 weights each).
      ('alexnet', '58,299,082', ['conv1', 'pool3', 'fc2', '(6, 6, 256)', '11,712'],
       ['--config.model.batch_norm=False']),
      ('alexnet', '58,327,786', ['12,000'], []),
      ('vgg16', '134,300,362', ['block1', 'block5', '(7, 7, 512)', '102,764,544'], []),
      # Keras Applications' ResNet50 (moving statistics counted, as Keras counts them).
      ('resnet50', '25,636,712', ['stem', 'stage4', '(7, 7, 2048)', '14,998,528'],
       ['--num_classes=1000', '--channels=3']),
  )
  def test_prints_table_and_exact_total(self, model, total, expected, flags):
    proc = helpers.run_forked('launch.describe', f'--model={model}', *flags, timeout=120)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    lines = proc.stdout.strip().splitlines()
    self.assertEqual(lines[-1].split(), ['total', total])
    for text in expected:
      self.assertIn(text, proc.stdout)

  def test_unknown_model_is_one_error_line(self):
    proc = helpers.run_forked('launch.describe', '--model=resnet9', timeout=120)
    self.assertEqual(proc.returncode, 2)
    self.assertNotIn('Traceback', proc.stderr)
    self.assertEqual(proc.stdout, '')
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    self.assertLen(errors, 1)
    self.assertIn("unknown model 'resnet9'", errors[0])
    self.assertIn('vgg16', errors[0])  # names the choices
    self.assertEqual(proc.stderr.strip().splitlines()[-1], errors[0])


if __name__ == '__main__':
  tf.test.main()
