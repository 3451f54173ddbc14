"""The local-workers supervisor, with small stand-in workers (`python -c`) so that each case
takes about a second: output, exit codes, a failed worker stopping the rest, a lost worker
left to the others, signals."""

import io
import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import parameterized
import tensorflow as tf

from research.core.errors import UserError
from research.infra import local_cluster
from research.infra import processes
from tests import helpers

# A stand-in worker: behaviour by index from the JSON in argv[1] ({index: action}).
_WORKER = r'''
import json, os, signal, sys, time
index = json.loads(os.environ['TF_CONFIG'])['task']['index']
action = json.loads(sys.argv[1]).get(str(index), 'ok')
argv = json.dumps(sys.argv[2:], separators=(',', ':'))
print(f'pid {os.getpid()} argv {argv} tf_config {os.environ["TF_CONFIG"]}')
print(f'note from {index}', file=sys.stderr)
if action == 'ok':
  sys.exit(0)
if action.startswith('exit'):
  time.sleep(0.3)
  sys.exit(int(action[4:]))
if action in ('sigkill', 'sigstop'):
  time.sleep(0.3)
  os.kill(os.getpid(), getattr(signal, action.upper()))
if action == 'notice':  # a TensorFlow worker that lost its peer: exits by itself, signal or not
  signal.signal(signal.SIGTERM, lambda signum, frame: print('got SIGTERM', flush=True))
  time.sleep(1.5)
  sys.exit(LOST_WORKER_EXIT_CODE)
if action in ('hang', 'stubborn', 'wait_signal', 'ignore_sigint'):
  got = []
  def handler(signum, frame):
    print(f'got {signal.Signals(signum).name}', flush=True)
    got.append(signum)
  for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
    if action != 'hang':
      signal.signal(s, handler)
  ready = os.environ.get('READY_DIR')
  if ready:
    open(os.path.join(ready, str(index)), 'w').write(str(os.getpid()))
  deadline = time.time() + 60
  while time.time() < deadline:
    time.sleep(0.05)
    if got and action == 'wait_signal':
      sys.exit(0)
  sys.exit(5)
'''

_WORKER = _WORKER.replace('LOST_WORKER_EXIT_CODE', str(processes.LOST_WORKER_EXIT_CODE))
_COMMAND = [sys.executable, '-c', _WORKER]


def _pids(text):
  return {int(line.split()[1].rstrip(']')): int(line.split()[3])
          for line in text.splitlines() if line.startswith('[worker ') and ' pid ' in line}


class RunLocalWorkersTest(tf.test.TestCase, parameterized.TestCase):

  def run_workers(self, actions, num_workers=2, argv=(), lost_seconds=1.0, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    start = time.time()
    code = local_cluster.run_local_workers(
        [json.dumps(actions), *argv], num_workers, lost_seconds, command=_COMMAND, stdout=out,
        stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue(), time.time() - start

  def test_all_succeed_with_prefixed_output_and_own_tf_config(self):
    code, out, err, _ = self.run_workers(
        {}, num_workers=3, argv=['--a=1', '--local_workers=3', '--b', '2'])
    self.assertEqual(code, 0, err)
    configs = {}
    for line in out.splitlines():
      prefix, rest = line.split('] ', 1)
      index = int(prefix[len('[worker '):])
      _, _, _, argv_json, _, tf_config = rest.split(' ', 5)
      self.assertEqual(json.loads(argv_json), ['--a=1', '--b', '2'])  # --local_workers gone
      configs[index] = json.loads(tf_config)
    self.assertEqual(sorted(configs), [0, 1, 2])
    cluster = configs[0]['cluster']['worker']
    self.assertLen(set(cluster), 3)
    for index, config in configs.items():
      self.assertEqual(config['cluster']['worker'], cluster)
      self.assertEqual(config['task'], {'type': 'worker', 'index': index})
    for address in cluster:
      self.assertStartsWith(address, '127.0.0.1:')
    self.assertCountEqual([line for line in err.splitlines() if line.startswith('[worker')],
                          [f'[worker {i}] note from {i}' for i in range(3)])

  def test_failed_worker_stops_the_others_within_the_wait(self):
    # Worker 0 catches SIGTERM and goes on, as a TensorFlow worker does: it needs SIGKILL, after
    # the time the others get to notice a lost worker, plus the grace.
    code, out, err, seconds = self.run_workers({'0': 'stubborn', '1': 'exit3'},
                                               lost_seconds=1.0, grace_seconds=1.0)
    self.assertEqual(code, 3)
    pids = _pids(out)
    self.assertEqual(err.strip().splitlines()[-1],
                     f'error: worker 1 (pid {pids[1]}) exited with status 3; stopped the other '
                     'workers')
    self.assertIn('[worker 0] got SIGTERM', out)
    self.assertBetween(seconds, 2.0, 10.0)
    self.assertFalse(helpers.alive(pids[0]))

  def test_killed_worker_leaves_the_others_to_notice_the_loss(self):
    # Worker 0 exits with the lost-worker status 1.5 s after it started, well within the wait.
    code, out, err, seconds = self.run_workers({'0': 'notice', '1': 'sigkill'},
                                               lost_seconds=5.0, grace_seconds=5.0)
    self.assertEqual(code, processes.LOST_WORKER_EXIT_CODE)
    self.assertNotIn('got SIGTERM', out)
    self.assertEqual(err.strip().splitlines()[-1],
                     f'error: worker 1 (pid {_pids(out)[1]}) was killed by SIGKILL; the others '
                     f'exited by themselves: a lost worker, exit status '
                     f'{processes.LOST_WORKER_EXIT_CODE}')
    self.assertLess(seconds, 5.0)

  def test_worker_that_does_not_notice_is_killed_after_the_wait(self):
    code, out, err, seconds = self.run_workers({'0': 'hang', '1': 'sigkill'},
                                               lost_seconds=1.0, grace_seconds=1.0)
    self.assertEqual(code, processes.LOST_WORKER_EXIT_CODE)
    pids = _pids(out)
    self.assertEqual(err.strip().splitlines()[-1],
                     f'error: worker 1 (pid {pids[1]}) was killed by SIGKILL; killed worker 0 '
                     f'still running 2s later: a lost worker, exit status '
                     f'{processes.LOST_WORKER_EXIT_CODE}')
    self.assertBetween(seconds, 2.0, 10.0)
    self.assertFalse(helpers.alive(pids[0]))

  def test_stopped_worker_is_killed_once_the_others_noticed(self):
    code, out, err, seconds = self.run_workers({'0': 'notice', '1': 'sigstop'},
                                               lost_seconds=30.0)
    self.assertEqual(code, processes.LOST_WORKER_EXIT_CODE)
    pids = _pids(out)
    self.assertEqual(err.strip().splitlines()[-1],
                     f'error: worker 0 (pid {pids[0]}) exited with status '
                     f'{processes.LOST_WORKER_EXIT_CODE}; killed worker 1 (stopped): a lost '
                     f'worker, exit status {processes.LOST_WORKER_EXIT_CODE}')
    self.assertLess(seconds, 10.0)  # not the 30 s wait
    self.assertFalse(helpers.alive(pids[1]))

  def test_no_workers(self):
    with self.assertRaisesRegex(UserError, 'local_workers=0'):
      local_cluster.run_local_workers([], 0, 1.0, command=_COMMAND)


# The supervisor in its own process, as launch.train runs it, so the test can signal it.
_SUPERVISOR = '''
import sys
from research.infra import local_cluster
sys.exit(local_cluster.run_local_workers(sys.argv[2:], 2, 1.0,
                                         command=[sys.argv[1], '-c', %r], grace_seconds=1.0))
''' % _WORKER


class SupervisorSignalsTest(tf.test.TestCase, parameterized.TestCase):

  def start(self, actions):
    ready = self.create_tempdir().full_path
    proc = subprocess.Popen(
        [sys.executable, '-c', _SUPERVISOR, sys.executable, json.dumps(actions)],
        cwd=helpers.ROOT, env={**os.environ, 'READY_DIR': ready}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    self.addCleanup(proc.kill)
    deadline = time.time() + 30
    while len(os.listdir(ready)) < 2:  # both workers have their handlers
      self.assertLess(time.time(), deadline, 'workers did not start')
      self.assertIsNone(proc.poll(), proc.communicate()[1] if proc.poll() is not None else '')
      time.sleep(0.05)
    time.sleep(0.1)  # the files are written, their pids too
    pids = [int(open(os.path.join(ready, str(i))).read()) for i in range(2)]
    return proc, pids

  @parameterized.parameters('SIGTERM', 'SIGINT', 'SIGUSR1')
  def test_signal_reaches_every_worker(self, name):
    proc, _ = self.start({'0': 'wait_signal', '1': 'wait_signal'})
    proc.send_signal(getattr(signal, name))
    out, err = proc.communicate(timeout=30)
    self.assertEqual(proc.returncode, 0, err)
    for i in range(2):
      self.assertIn(f'[worker {i}] got {name}', out)

  def test_second_sigint_kills_the_workers(self):
    proc, pids = self.start({'0': 'ignore_sigint', '1': 'ignore_sigint'})
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    self.assertEqual(proc.returncode, 128 + signal.SIGINT)
    self.assertEqual(err.strip().splitlines()[-1], 'error: interrupted twice: killed the workers')
    self.assertFalse(any(helpers.alive(pid) for pid in pids))

  def test_workers_die_with_a_killed_supervisor(self):
    proc, pids = self.start({'0': 'hang', '1': 'hang'})
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while any(helpers.alive(pid) for pid in pids) and time.time() < deadline:
      time.sleep(0.05)
    self.assertFalse(any(helpers.alive(pid) for pid in pids))
