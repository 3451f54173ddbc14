"""`.ci/avx2/run` shows a program a CPU without AVX-512: in cpuid and in /proc/cpuinfo, with
the program's own SIGSEGV handling intact."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from absl.testing import absltest

from research.train import precision
from tests import helpers

RUN = os.path.join(helpers.ROOT, '.ci', 'avx2', 'run')

# Prints the cpuid bits the tool hides: AVX512F (leaf 7 EBX bit 16), AVX512_BF16 (leaf 7.1 EAX
# bit 5), AMX_BF16 (leaf 7 EDX bit 22).
PROBE = r'''
#include <cpuid.h>
#include <stdio.h>
int main(void) {
  unsigned a, b, c, d, a1, b1, c1, d1;
  __cpuid_count(7, 0, a, b, c, d);
  __cpuid_count(7, 1, a1, b1, c1, d1);
  printf("avx512f=%u avx512_bf16=%u amx_bf16=%u\n", (b >> 16) & 1, (a1 >> 5) & 1, (d >> 22) & 1);
  return 0;
}
'''


class Avx2RunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    flags = precision.cpu_flags()
    missing = [why for why, ok in [
        ('gcc', shutil.which('gcc')), ('unshare', shutil.which('unshare')),
        ('root (a private mount namespace)', os.geteuid() == 0),
        ('the cpuid_fault CPU flag', 'cpuid_fault' in flags),
        ('AVX-512 on this CPU (nothing to hide)', 'avx512f' in flags)] if not ok]
    if missing:
      raise unittest.SkipTest('.ci/avx2/run needs ' + ', '.join(missing))
    cls.tmp = tempfile.mkdtemp()
    source = os.path.join(cls.tmp, 'probe.c')
    with open(source, 'w') as f:
      f.write(PROBE)
    cls.probe = os.path.join(cls.tmp, 'probe')
    subprocess.run(['gcc', '-O2', '-o', cls.probe, source], check=True)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _run(self, *command):
    env = dict(os.environ, TMPDIR=self.tmp)
    return subprocess.run([RUN, *command], capture_output=True, text=True, env=env, timeout=120)

  def test_cpuid_and_cpuinfo_lose_avx512_and_keep_avx2(self):
    host = subprocess.run([self.probe], capture_output=True, text=True, check=True).stdout
    self.assertIn('avx512f=1', host)
    proc = self._run('sh', '-c', f'{self.probe} && grep -m1 ^flags /proc/cpuinfo')
    self.assertEqual(proc.returncode, 0, proc.stderr)
    probe_line, flags_line = proc.stdout.splitlines()
    self.assertEqual(probe_line, 'avx512f=0 avx512_bf16=0 amx_bf16=0')
    flags = set(flags_line.split())
    self.assertIn('avx2', flags)
    self.assertIn('fma', flags)
    self.assertFalse({f for f in flags if f.startswith(('avx512', 'amx'))}, flags_line)
    self.assertIn('avx512f', precision.cpu_flags())  # the host's file is untouched

  def test_a_python_crash_still_reports_and_dies_by_sigsegv(self):
    proc = self._run(sys.executable, '-X', 'faulthandler', '-c',
                     'import ctypes; ctypes.string_at(0)')
    self.assertEqual(proc.returncode, -11, proc.stderr)
    self.assertIn('Fatal Python error: Segmentation fault', proc.stderr)


if __name__ == '__main__':
  absltest.main()
