"""The project's text as a newcomer reads it: a short README, and no development history.

The README is the front door (at most 250 lines; depth goes to docs/). No file may speak of how
the project was developed: results are dated and name the hardware they ran on instead.
"""

import os
import re
import subprocess

import tensorflow as tf

from tests import helpers

_HISTORY = re.compile(r'\bsessions?\b|\bissues? #?\d|throwaway|development machine', re.I)
# A named CPU belongs to a dated result, not to the code's explanations.
_CPU = re.compile(r'EPYC|Xeon', re.I)
_DATE = re.compile(r'\b20\d\d-\d\d-\d\d\b')


def _tracked_text_files():
  files = subprocess.run(['git', 'ls-files'], cwd=helpers.ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  for name in files:
    path = os.path.join(helpers.ROOT, name)
    if name == os.path.relpath(__file__, helpers.ROOT) or not os.path.isfile(path):
      continue
    try:
      with open(path, encoding='utf-8') as f:
        yield name, f.read().splitlines()
    except UnicodeDecodeError:
      continue


class DocsTest(tf.test.TestCase):

  def test_readme_is_a_front_door(self):
    with open(os.path.join(helpers.ROOT, 'README.md')) as f:
      self.assertLessEqual(len(f.read().splitlines()), 250)
    for name in ('data', 'resume', 'cluster', 'benchmarks'):
      self.assertTrue(os.path.exists(os.path.join(helpers.ROOT, 'docs', f'{name}.md')), name)

  def test_no_file_speaks_of_how_the_project_was_developed(self):
    found = []
    for name, lines in _tracked_text_files():
      for number, line in enumerate(lines, 1):
        if _HISTORY.search(line) or (_CPU.search(line) and not _DATE.search(line)):
          found.append(f'{name}:{number}: {line.strip()}')
    self.assertEmpty(found, '\n'.join(found))

  def test_the_check_finds_what_it_looks_for(self):
    for line in ('as measured in session 7', 'issue 6 asks', 'a throwaway script',
                 'on the development machine', 'on the AMD EPYC machines'):
      self.assertTrue(_HISTORY.search(line) or _CPU.search(line), line)
    self.assertFalse(_HISTORY.search('def test_session(self):'))
    self.assertIsNotNone(_DATE.search('2026-11-30, 2-core AMD EPYC'))


if __name__ == '__main__':
  tf.test.main()
