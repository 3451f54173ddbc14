"""Flags in a raw argv list: one is dropped in every spelling absl accepts."""

from absl.testing import absltest
from absl.testing import parameterized

from research.infra import argv as argv_lib


class StripFlagTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('equals', ['--x', '--local_workers=2', '--y'], ['--x', '--y']),
      ('separate_value', ['--local_workers', '2', '--y'], ['--y']),
      ('single_dash', ['-local_workers=2', '--y=1'], ['--y=1']),
      ('negated', ['--nolocal_workers', '--y'], ['--y']),
      ('similar_name_kept', ['--local_workers_dir=a', 'local_workers'],
       ['--local_workers_dir=a', 'local_workers']),
  )
  def test_strip_flag(self, argv, expected):
    self.assertEqual(argv_lib.strip_flag(argv, 'local_workers'), expected)


if __name__ == '__main__':
  absltest.main()
