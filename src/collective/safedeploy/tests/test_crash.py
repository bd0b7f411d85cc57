"""SIGKILL at random moments of release builds and rollbacks.

After every kill, ``current`` resolves to a complete release with a
valid manifest, and the next run succeeds.
"""
import json
import collections
import os
import random
import signal
import statistics
import subprocess
import time

from . import support
from .base import ReleaseTestCase

KILLS = int(os.environ.get('SAFEDEPLOY_CRASH_KILLS', '20'))


class CrashTestCase(ReleaseTestCase):

    safedeploy = 'keep = 3\n'

    def assertCurrentComplete(self, context):
        link = self.sample.path('current')
        if not os.path.lexists(link):
            return None
        target = os.path.realpath(link)
        manifest_path = os.path.join(target, 'safedeploy-manifest.json')
        self.assertTrue(os.path.isfile(manifest_path),
                        '%s: current -> %s has no manifest' % (
                            context, target))
        with open(manifest_path) as f:
            manifest = json.load(f)
        self.assertEqual(manifest['tag'], os.path.basename(target), context)
        self.assertTrue(os.path.exists(os.path.join(target, 'bin', 'hello')),
                        context)
        return manifest['tag']

    def start(self, args):
        return subprocess.Popen(
            args, cwd=self.sample.directory, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
            env=dict(os.environ, PIP_NO_BUILD_ISOLATION='0',
                     HOME='/nonexistent'))

    def kill_after(self, p, delay):
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.002)
        try:
            os.killpg(p.pid, signal.SIGKILL)  # buildout and its children
        except ProcessLookupError:
            pass
        p.wait()


class TestKillBuild(CrashTestCase):

    def test_kill_release_builds_at_random_moments(self):
        rnd = random.Random(int(os.environ.get('SAFEDEPLOY_SEED', '0')) or
                            None)
        self.configure()
        started = time.monotonic()
        self.assertReleased(self.release('r0'), 'r0')
        # how long a whole build takes, from the builds run meanwhile (the
        # machine's load changes: one measurement is not enough)
        durations = [time.monotonic() - started]
        killed_before_end = 0
        moments = support.spread(KILLS, rnd)
        for i in range(1, KILLS + 1):
            tag = 'r%d' % i
            p = self.start([support.BUILDOUT, 'safedeploy:tag=%s' % tag])
            delay = next(moments) * statistics.median(durations[-5:]) * 1.2
            self.kill_after(p, delay)
            if p.returncode == -signal.SIGKILL:
                killed_before_end += 1
            context = 'kill %d after %.3fs' % (i, delay)
            current = self.assertCurrentComplete(context)
            self.assertIsNotNone(current, context)
            # the next run succeeds (cleaning up what the kill left)
            started = time.monotonic()
            result = self.release(tag)
            durations.append(time.monotonic() - started)
            if result.returncode and 'already exists' in result.output:
                continue  # the killed run had finished
            self.assertReleased(result, tag)
            self.assertCurrentComplete(context)
        self.assertGreaterEqual(killed_before_end, KILLS // 2)
        journal = self.journal()   # still parseable, line by line
        # a build killed after it started is recorded failed by the next
        # run (kills that land while bin/buildout itself starts leave no
        # trace: on a loaded machine that can be most of them)
        starts = collections.Counter(e.get('name') for e in journal
                                     if e['event'] == 'started')
        if any(count > 1 for count in starts.values()):
            self.assertTrue(any(e['event'] == 'failed' for e in journal))
        # no leftovers: temporary links, trash
        leftovers = [n for n in os.listdir(self.sample.directory)
                     if n.endswith('.tmp')]
        self.assertEqual(leftovers, [])


class TestKillRollback(CrashTestCase):

    def test_kill_rollbacks_at_random_moments(self):
        rnd = random.Random(int(os.environ.get('SAFEDEPLOY_SEED', '0')) or
                            None)
        self.configure()
        for tag in ('a', 'b', 'c'):
            self.assertReleased(self.release(tag), tag)
        rollback = self.sample.path('bin', 'rollback')
        started = time.monotonic()
        self.assertEqual(self.rollback('a').returncode, 0)
        duration = time.monotonic() - started
        moments = support.spread(KILLS, rnd)
        for i in range(KILLS):
            target = rnd.choice(['a', 'b', 'c'])
            before = support.current_tag(self.sample.directory)
            p = self.start([rollback, target])
            delay = next(moments) * duration * 1.2
            self.kill_after(p, delay)
            context = 'kill %d after %.3fs (%s -> %s)' % (i, delay, before,
                                                          target)
            current = self.assertCurrentComplete(context)
            self.assertIn(current, (before, target), context)
            # the next rollback succeeds
            other = rnd.choice([t for t in 'abc' if t != current])
            r = self.rollback(other)
            self.assertEqual(r.returncode, 0, (context, r))
            self.assertEqual(self.assertCurrentComplete(context), other)
        self.assertEqual(self.rollback('--list').returncode, 0)
