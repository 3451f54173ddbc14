"""TensorFlow's loading notices: once each, at TF_CPP_MIN_LOG_LEVEL, other output untouched."""

import io
import os
import subprocess
import sys

from absl.testing import absltest

from research.infra import tf_startup
from tests import helpers

_PREAMBLE = (b'WARNING: All log messages before absl::InitializeLog() is called are written to '
             b'STDERR\n')
_NOTICE = b'I0000 00:00:1796063941.586451 5767 port.cc:153] oneDNN custom operations are on\n'
_NOTICE_AGAIN = b'I0000 00:00:1796063943.312929 5767 port.cc:153] oneDNN custom operations are on\n'
_ERROR = b'E0000 00:00:1796063943.826606    5767 cuda_platform.cc:52] failed call to cuInit\n'
_OTHER = b'a line that is no log line\n'
# What every command printed on a machine without a GPU (303: no CUDA driver; 100: no device).
_NO_GPU = (b'E0000 00:00:1796459159.740158    5156 cuda_platform.cc:52] failed call to cuInit: '
           b'INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n')
_NO_DEVICE = (b'E0000 00:00:1796459159.740158    5156 cuda_platform.cc:52] failed call to cuInit: '
              b'INTERNAL: CUDA error: Failed call to cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable '
              b'device is detected (100)\n')
_BROKEN_DRIVER = (b'E0000 00:00:1796459159.740158    5156 cuda_platform.cc:52] failed call to '
                  b'cuInit: INTERNAL: CUDA error: Failed call to cuInit: CUDA_ERROR_SYSTEM_DRIVER_'
                  b'MISMATCH (803)\n')


def _filtered(lines, min_level):
  out = io.BytesIO()
  tf_startup.filter_lines(lines, out, min_level)
  return out.getvalue()


class FilterLinesTest(absltest.TestCase):

  def test_each_notice_once_without_the_preamble(self):
    lines = [_PREAMBLE, _NOTICE, _OTHER, _PREAMBLE, _NOTICE_AGAIN, _OTHER, _ERROR]
    self.assertEqual(_filtered(lines, 0), _NOTICE + _OTHER + _OTHER + _ERROR)

  def test_no_gpu_is_a_notice_and_other_cuinit_failures_errors(self):
    lines = [_NO_GPU, _NO_DEVICE, _BROKEN_DRIVER]
    self.assertEqual(_filtered(lines, 0), _NO_GPU + _NO_DEVICE + _BROKEN_DRIVER)
    self.assertEqual(_filtered(lines, 1), _BROKEN_DRIVER)
    self.assertEqual(_filtered(lines, 3), b'')

  def test_min_level_hides_lower_severities_only(self):
    lines = [_PREAMBLE, _NOTICE, _OTHER, _ERROR]
    self.assertEqual(_filtered(lines, 1), _OTHER + _ERROR)
    self.assertEqual(_filtered(lines, 3), _OTHER)


# Writes to file descriptor 2 as TensorFlow's C++ code does, inside and after the filter.
_SCRIPT = '''
import os, sys
from research.infra import tf_startup
with tf_startup.filtered_stderr():
  for line in sys.argv[1:]:
    os.write(2, line.encode() + b'\\n')
os.write(2, b'after\\n')
'''


class FilteredStderrTest(absltest.TestCase):

  def test_file_descriptor_2_is_filtered_then_restored(self):
    lines = [line.decode().rstrip('\n') for line in (_PREAMBLE, _NOTICE, _NOTICE_AGAIN, _ERROR)]
    proc = subprocess.run([sys.executable, '-c', _SCRIPT, *lines], cwd=helpers.ROOT,
                          env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '0'}, capture_output=True,
                          timeout=60, check=True)
    self.assertEqual(proc.stderr, _NOTICE + _ERROR + b'after\n')


_HOLD_SCRIPT = """
import os
from research.infra import tf_startup
held = tf_startup.HeldStderr()
with held:
  os.write(2, b'kept\\n')
with held:
  os.write(2, b'dropped\\n')
  held.drop()
os.write(2, b'after\\n')
"""


class HeldStderrTest(absltest.TestCase):

  def test_what_a_block_writes_is_passed_on_unless_dropped(self):
    proc = subprocess.run([sys.executable, '-c', _HOLD_SCRIPT], cwd=helpers.ROOT,
                          capture_output=True, timeout=60, check=True)
    self.assertEqual(proc.stderr, b'kept\nafter\n')


class EntryPointStartupTest(absltest.TestCase):

  def test_first_op_prints_no_cuinit_error_without_a_gpu(self):
    # The CUDA platform starts with the first op, after the import: the entry points start it
    # during the import, inside the filter.
    script = 'import launch, tensorflow as tf; print(int(tf.constant(1) + 1))'
    proc = subprocess.run([sys.executable, '-c', script], cwd=helpers.ROOT,
                          env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '1'}, capture_output=True,
                          text=True, timeout=120, check=True)
    self.assertEqual(proc.stdout, '2\n')
    self.assertNotIn('cuInit', proc.stderr)


if __name__ == '__main__':
  absltest.main()
