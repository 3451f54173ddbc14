"""The import structure: imports point down the layers, no module imports itself back, and
TensorFlow stays out of what does not need it (a config's checks, the --local_workers
supervisor)."""

import ast
import os
import subprocess
import sys
import textwrap

from absl.testing import absltest

from tests import helpers

# Bottom up. A module imports from its own layer and the layers below, never above: what builds
# from a config sits above it, what trains above what it builds, entry points on top.
LAYERS = (
    # Files, errors, processes and the names of things: no TensorFlow.
    ('research', 'research.core.errors', 'research.core.outputs', 'research.core.layout',
     'research.core.plots', 'research.core.presets', 'research.infra'),
    # The experiment's settings and every check of them: no TensorFlow either.
    ('research.core.config',),
    # What a config builds: models, data, the tf.distribute strategy.
    ('research.models', 'research.data', 'research.core.strategy'),
    # A run: its checkpoints and the training that writes them.
    ('research.core.checkpoints', 'research.train'),
    # What uses runs: evaluation and serving, job submission, benchmarks.
    ('research.apps', 'research.submit', 'research.benchmark'),
    ('launch',),
)


def layer(module):
  """The index in LAYERS of `module`'s longest matching prefix."""
  best = None
  for index, prefixes in enumerate(LAYERS):
    for prefix in prefixes:
      if module == prefix or module.startswith(prefix + '.'):
        if best is None or len(prefix) > len(best[1]):
          best = index, prefix
  if best is None:
    raise AssertionError(f'{module} is in no layer: add it to LAYERS')
  return best[0]


def _module(path):
  name = os.path.relpath(path, helpers.ROOT)[:-len('.py')].replace(os.sep, '.')
  return name[:-len('.__init__')] if name.endswith('.__init__') else name


def _is_module(name):
  path = os.path.join(helpers.ROOT, *name.split('.'))
  return os.path.isdir(path) or os.path.exists(path + '.py')


def import_graph():
  """{module: {module it imports, anywhere in its code}} over research/ and launch/."""
  graph = {}
  for top in ('research', 'launch'):
    for directory, _, files in os.walk(os.path.join(helpers.ROOT, top)):
      for name in sorted(f for f in files if f.endswith('.py')):
        path = os.path.join(directory, name)
        with open(path, encoding='utf-8') as f:
          tree = ast.parse(f.read(), path)
        imported = set()
        for node in ast.walk(tree):
          if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
          elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package import module` imports the module; `from module import name`, it.
            imported.update(f'{node.module}.{a.name}' if _is_module(f'{node.module}.{a.name}')
                            else node.module for a in node.names)
        graph[_module(path)] = {m for m in imported if m.split('.')[0] in ('research', 'launch')}
  return graph


def cycle(graph):
  """One import cycle of `graph` as a list of modules, or None."""
  state = {}

  def visit(module, path):
    state[module] = 'open'
    for target in sorted(graph.get(module, ())):
      if state.get(target) == 'open':
        return path[path.index(target):] + [target]
      if target not in state:
        found = visit(target, path + [target])
        if found:
          return found
    state[module] = 'done'
    return None

  for module in sorted(graph):
    if module not in state:
      found = visit(module, [module])
      if found:
        return found
  return None


def _tensorflow_loaded_after(code):
  """Runs `code` in a fresh interpreter at the project root; whether TensorFlow got imported,
  and the process's stderr."""
  script = textwrap.dedent("""\
      import atexit, sys
      atexit.register(lambda: print('TENSORFLOW', 'tensorflow' in sys.modules))
      """) + textwrap.dedent(code)
  result = subprocess.run([sys.executable, '-c', script], cwd=helpers.ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
  return result.stdout.strip().splitlines()[-1] == 'TENSORFLOW True', result.stderr


class LayersTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.graph = import_graph()

  def test_every_import_points_down_the_layers(self):
    upward = [f'{m} (layer {layer(m)}) imports {t} (layer {layer(t)})'
              for m, targets in sorted(self.graph.items()) for t in sorted(targets)
              if layer(t) > layer(m)]
    self.assertEqual(upward, [])

  def test_no_module_imports_itself_back(self):
    self.assertIsNone(cycle(self.graph))

  def test_the_checks_see_an_upward_import_and_a_cycle(self):
    self.assertGreater(layer('research.models'), layer('research.core.config'))
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    self.assertEqual(cycle(graph), ['a', 'b', 'c', 'a'])
    self.assertIsNone(cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}))


class TensorFlowFreeTest(absltest.TestCase):
  """A bad config answers in a fraction of a second, and the supervisor of local workers leaves
  the CPU to them: neither imports TensorFlow."""

  def test_a_bad_config_is_refused_before_tensorflow_loads(self):
    for flag in ('--model=nosuch', '--config.ema_decay=1.5', '--config.batch_size=0'):
      with self.subTest(flag=flag):
        loaded, stderr = _tensorflow_loaded_after(f"""\
            import runpy, sys
            sys.argv = ['launch.train', '{flag}', '--workdir=unused']
            runpy.run_module('launch.train', run_name='__main__')
            """)
        self.assertIn('error: ', stderr)
        self.assertFalse(loaded, stderr)

  def test_the_local_workers_supervisor_does_not_load_tensorflow(self):
    loaded, stderr = _tensorflow_loaded_after("""\
        import runpy, sys
        from research.infra import local_cluster
        def supervise(argv, num_workers, lost_seconds):
          print('supervising', num_workers, file=sys.stderr)
          return 0
        local_cluster.run_local_workers = supervise
        sys.argv = ['launch.train', '--local_workers=2', '--strategy=multi_worker_mirrored',
                    '--workdir=unused']
        runpy.run_module('launch.train', run_name='__main__')
        """)
    self.assertIn('supervising 2', stderr)
    self.assertFalse(loaded, stderr)

  def test_the_check_sees_tensorflow_load(self):
    loaded, _ = _tensorflow_loaded_after("""\
        import launch
        import tensorflow as tf
        tf.constant(1)
        """)
    self.assertTrue(loaded)


if __name__ == '__main__':
  absltest.main()
