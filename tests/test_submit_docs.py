"""docs/cluster.md's `launch.submit --dry_run` examples are what the command prints today.

Each block marked `<!-- dry-run ... -->` in docs/cluster.md starts with `$ <command>`; the test
runs the command and compares its output with the rest of the block, after writing this
checkout's paths as the document's /home/me/research.
"""

import os
import re
import shlex
import sys

import tensorflow as tf

from tests import helpers

_BLOCK = re.compile(r'<!-- dry-run[^>]*-->\n```sh\n\$ (?P<command>[^\n]+)\n(?P<output>.*?)\n```',
                    re.S)
_DOCS_ROOT = '/home/me/research'


def _blocks():
  with open(os.path.join(helpers.ROOT, 'docs', 'cluster.md')) as f:
    return [(m['command'], m['output']) for m in _BLOCK.finditer(f.read())]


class DocsDryRunTest(tf.test.TestCase):

  def test_docs_show_both_clusters(self):
    clusters = {re.search(r'--cluster=(\w+)', command)[1] for command, _ in _blocks()}
    self.assertEqual(clusters, {'slurm', 'kubernetes'})

  def test_dry_runs_match(self):
    for command, expected in _blocks():
      with self.subTest(command=command):
        argv = shlex.split(command)
        self.assertEqual(argv[:3], ['python', '-m', 'launch.submit'])
        self.assertIn('--dry_run', argv)
        proc = helpers.run_forked('launch.submit', *argv[3:])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        actual = proc.stdout.rstrip('\n').replace(
            sys.executable, f'{_DOCS_ROOT}/.venv/bin/python').replace(helpers.ROOT, _DOCS_ROOT)
        self.assertEqual(actual, expected)


if __name__ == '__main__':
  tf.test.main()
