"""How pytest -n shares the suite out: whole classes, and the real-Slurm classes as one unit."""

from absl.testing import absltest

from tests import conftest
from tests import test_submit_slurm
from tests import test_submit_sweep


def _scope(nodeid):
  return conftest.ClassScheduling._split_scope(None, nodeid)  # pylint: disable=protected-access


class ClassSchedulingTest(absltest.TestCase):

  def test_a_class_is_one_unit_and_a_group_spans_classes(self):
    self.assertEqual(_scope('tests/test_a.py::ATest::test_one'), 'tests/test_a.py::ATest')
    self.assertEqual(_scope('tests/test_a.py::ATest::test_two0'), 'tests/test_a.py::ATest')
    self.assertEqual(_scope('tests/test_a.py::test_function'), 'tests/test_a.py')
    self.assertEqual(_scope('tests/test_s.py::STest::test_x@slurm'), 'slurm')
    self.assertEqual(_scope('tests/test_w.py::WTest::test_y@slurm'), 'slurm')
    # An @ inside a parameter's id is no group.
    self.assertEqual(_scope('tests/test_a.py::ATest::test_p[a@b]'), 'tests/test_a.py::ATest')

  def test_every_real_slurm_class_is_in_the_slurm_group(self):
    classes = (test_submit_slurm.SlurmLostWorkerTest, test_submit_slurm.SlurmClusterTest,
               test_submit_sweep.SlurmSweepTest)
    for cls in classes:
      groups = [m.args for m in getattr(cls, 'pytestmark', []) if m.name == 'xdist_group']
      self.assertEqual(groups, [('slurm',)], cls.__name__)


if __name__ == '__main__':
  absltest.main()
