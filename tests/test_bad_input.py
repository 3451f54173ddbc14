"""Every bad input of docs/reliability.md, run as the table writes it: one line, exit 2, no damage.

The table is the test's data, so the page cannot drift from what the entry points say. Rows run
as commands, one at a time: each is `python -m <entry point> <arguments>` in a process of its
own, forked from a helpers.CommandServer that imported TensorFlow and the library once (a fresh
process spends 3-4 s of a row's ~4 s on those imports); one row also runs as a fresh process,
and must end the same way.
"""

import os
import re
import shlex
import shutil
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

from research.train import trainer
from tests import helpers

_PAGE = os.path.join(helpers.ROOT, 'docs', 'reliability.md')
_MARK = '<!-- bad-input table'
_CELL = re.compile(r'`(.*)`')


def rows(page=_PAGE):
  """(entry point, arguments, excerpt) of each row of the page's bad-input table."""
  with open(page) as f:
    text = f.read()
  found = []
  for line in text[text.index(_MARK):].splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) != 3 or not all(_CELL.fullmatch(c) for c in cells):
      continue
    found.append(tuple(_CELL.fullmatch(c).group(1) for c in cells))
  return found


def _finished_run(workdir):
  """A 2-step run of configs/cnn_mnist.py (on mock MNIST) whose other settings the rows may
  change freely on resume: steps, cadence and the precision `auto` keeps."""
  config = helpers.load_config('cnn_mnist')
  config.update(dict(num_train_steps=2, steps_per_loop=1, log_every_steps=1, image_grid_size=0,
                     eval_batch_size=1000, mixed_precision='float32'))
  with helpers.mock_tfds(num_examples=5300):
    trainer.train_and_evaluate(config, workdir)


class BadInputTableTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.run_dir = os.path.join(cls.tmp, 'finished')
    helpers.command_server()  # its imports while the finished run trains
    _finished_run(cls.run_dir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _scratch(self, index):
    """The row's own scratch directory with its placeholders' paths."""
    root = os.path.join(self.tmp, f'row{index}')
    os.makedirs(os.path.join(root, 'images'))
    for i in range(3):
      Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(
          os.path.join(root, 'images', f'{i}.png'))
    with open(os.path.join(root, 'file'), 'w') as f:
      f.write('a file\n')
    shutil.copytree(self.run_dir, os.path.join(root, 'run'))
    return {'W': os.path.join(root, 'w'), 'RUN': os.path.join(root, 'run'),
            'FILE': os.path.join(root, 'file'), 'IMAGES': os.path.join(root, 'images'),
            'LONG': os.path.join(root, 'x' * 300)}

  def _run_row(self, index, module, arguments, fresh=False):
    """Runs the row in a process forked from a server, or in a fresh one when `fresh`."""
    paths = self._scratch(index)
    pattern = re.compile(r'\b(' + '|'.join(paths) + r')\b')
    args = [pattern.sub(lambda m: paths[m.group(1)], a) for a in shlex.split(arguments)]
    before = {k: helpers.snapshot(paths[k]) for k in ('RUN', 'IMAGES')}
    proc = (helpers.run_cli if fresh else helpers.run_forked)(module, *args)
    after = {k: helpers.snapshot(paths[k]) for k in ('RUN', 'IMAGES')}
    return proc, before, after, paths

  def test_the_table_has_every_entry_point_with_bad_input(self):
    modules = {module for module, _, _ in rows()}
    self.assertContainsSubset({'launch.train', 'launch.evaluate', 'launch.predict',
                               'launch.describe', 'launch.prepare', 'launch.results',
                               'launch.export', 'launch.submit'}, modules)
    self.assertGreaterEqual(len(rows()), 30)

  def test_each_row_is_one_line_exit_2_and_nothing_written(self):
    for i, (module, args, excerpt) in enumerate(rows()):
      with self.subTest(command=f'{module} {args}'):
        proc, before, after, paths = self._run_row(i, module, args)
        line = helpers.error_line(proc)
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        self.assertTrue(line.startswith('error: '), line)
        self.assertIn(excerpt, line)
        self.assertNotIn('Traceback', proc.stderr)
        self.assertFalse(os.path.exists(paths['W']), 'W was created')
        self.assertEqual(after, before, 'RUN or IMAGES changed')

  def test_a_forked_row_ends_as_in_a_fresh_process(self):
    # A row that reads a finished run: the furthest any row gets into the library.
    index, (module, args, _) = next((i, row) for i, row in enumerate(rows())
                                    if row[0] == 'launch.train' and 'RUN' in row[1])
    forked, fresh = (self._run_row(f'{index}-{how}', module, args, fresh=how == 'fresh')[0]
                     for how in ('forked', 'fresh'))
    self.assertEqual(forked.returncode, fresh.returncode)
    self.assertEqual(helpers.error_line(forked).replace('forked', 'fresh'),
                     helpers.error_line(fresh))
    self.assertEqual(forked.stdout, fresh.stdout)


class TableParserTest(tf.test.TestCase):

  def test_rows_are_read_from_the_marked_table_only(self):
    page = os.path.join(self.create_tempdir().full_path, 'page.md')
    with open(page, 'w') as f:
      f.write('| word | what |\n| `W` | `a dir` | `x` |\n' + _MARK + ' -->\n\n'
              '| entry point | arguments | the line says |\n| --- | --- | --- |\n'
              '| `launch.train` | `--workdir=W --config.seed=-1` | `seed=-1` |\n')
    self.assertEqual(rows(page), [('launch.train', '--workdir=W --config.seed=-1', 'seed=-1')])


if __name__ == '__main__':
  tf.test.main()
