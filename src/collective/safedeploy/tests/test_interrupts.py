"""Ctrl-C, SIGTERM at random moments of a build, the health gate, a
rollback, a rollback with its data and a snapshot.

After each: the command said what happened in one line (no traceback,
exit 130 or 143, or it had finished), ``current`` -- and the data's
``current`` -- resolve to a complete, verified pair, and the next run
succeeds.  (bin/evolve-copy's interrupts are in test_evolve_writes.)
"""
import json
import os
import re
import random
import signal
import subprocess
import time

from collective.safedeploy.core import fsutil
from collective.safedeploy.recipes.base import EARLY_SIGNALS
from collective.safedeploy.data.layout import DataRoot
from collective.safedeploy.release import pairing

from . import support
from .base import ReleaseTestCase
from . import test_pairing
from .zodbsupport import commit
from .zodbsupport import make_site_data
from .zodbsupport import hash_tree

ROUNDS = int(os.environ.get('SAFEDEPLOY_INTERRUPT_ROUNDS', '15'))
SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class InterruptTestCase(ReleaseTestCase):

    def setUp(self):
        super().setUp()
        self.random = random.Random(os.environ.get('SAFEDEPLOY_SEED'))
        self.spread()

    def spread(self):
        """The next ROUNDS interrupts each land in a slice of their own of
        the step (support.spread)."""
        self.moments = support.spread(ROUNDS, self.random)

    def start(self, args):
        return subprocess.Popen(
            args, cwd=self.sample.directory, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=dict(os.environ, PIP_NO_BUILD_ISOLATION='0',
                     HOME='/nonexistent'))

    def interrupt(self, p, signum, ready=None, within=1.0, after=0.0):
        """Wait until ``ready()`` (default: at once), then the next moment
        (:meth:`spread`) between ``after`` and ``within`` seconds, then
        send ``signum``: SIGINT to the process group, as a terminal's
        Ctrl-C does; SIGTERM to the process, as a process manager does."""
        deadline = time.monotonic() + 60
        while ready is not None and not ready() and p.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.005)
        # (one that comes while Python itself starts, before the script's
        # first line, is Python's and not counted: assertOneLine)
        time.sleep(after + next(self.moments) * max(within - after, 0))
        try:
            if signum == signal.SIGINT:
                os.killpg(p.pid, signum)
            else:
                os.kill(p.pid, signum)
        except ProcessLookupError:
            pass
        out, err = p.communicate(timeout=120)
        return p.returncode, out, err

    def assertOneLine(self, signum, code, out, err, context):
        if 'Traceback' in out + err and not during_our_code(out + err):
            # it came while the interpreter was still importing its site
            # module: Python's own KeyboardInterrupt (or its "Fatal Python
            # error: init_import_site"), no frame of the script's; nothing
            # of ours ran (not counted)
            return False
        self.assertNotIn('Traceback', out + err, context)
        if code == 0:
            return False           # it had finished
        if code == -signum and not (out or err):
            # it came while the interpreter itself was starting, before the
            # script's first line: nothing ran (not counted)
            return False
        self.assertEqual(code, EXIT[signum], (context, out, err))
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertTrue(lines, (context, code, out, err))
        self.assertIn('interrupted', lines[-1], (context, err))
        self.assertIn(signal.Signals(signum).name if 'by' in lines[-1]
                      else 'interrupted', lines[-1], context)
        return True

    def current_release(self, context):
        """``current`` resolves to a complete release (its manifest names
        it, its scripts are there)."""
        link = self.sample.path('current')
        self.assertTrue(os.path.islink(link), context)
        target = os.path.realpath(link)
        with open(os.path.join(target, 'safedeploy-manifest.json')) as f:
            manifest = json.load(f)
        self.assertEqual(manifest['tag'], os.path.basename(target), context)
        self.assertTrue(os.path.exists(os.path.join(target, 'bin', 'hello')),
                        context)
        return manifest['tag']


class BuildInterrupts(InterruptTestCase):

    def test_builds_and_health_gates(self):
        self.configure(safedeploy='keep = 2\n'
                       'health-check = sh -c "touch gating; sleep 0.6"\n'
                       'health-timeout = 10\n')
        self.assertReleased(self.release('0'), '0')
        interrupted = gated = n = 0
        while interrupted < ROUNDS and n < 3 * ROUNDS:
            n += 1
            signum = SIGNALS[n % 2]
            tag = 'b%d' % n
            gate = self.sample.path('gating')
            if os.path.exists(gate):
                os.unlink(gate)
            p = self.start([support.BUILDOUT, 'safedeploy:tag=%s' % tag])
            staged = self.sample.path('releases', tag)
            code, out, err = self.interrupt(
                p, signum, lambda: os.path.exists(staged), within=1.2)
            context = 'build %s, %s' % (tag, signal.Signals(signum).name)
            if self.assertOneLine(signum, code, out, err, context):
                interrupted += 1
                self.assertTrue(
                    'points to %s' % self.current_release(context) in
                    err.strip().splitlines()[-1] or
                    'flipped back to' in err, (context, err))
            self.current_release(context)
        self.assertGreaterEqual(interrupted, ROUNDS)
        # and the health gate itself, at random moments of it
        self.spread()
        n = 0
        while gated < ROUNDS and n < 3 * ROUNDS:
            n += 1
            signum = SIGNALS[n % 2]
            tag = 'g%d' % n
            before = self.current_release('before %s' % tag)
            gate = self.sample.path('gating')
            if os.path.exists(gate):
                os.unlink(gate)
            p = self.start([support.BUILDOUT, 'safedeploy:tag=%s' % tag])
            code, out, err = self.interrupt(
                p, signum, lambda: os.path.exists(gate), within=0.6)
            context = 'gate %s, %s' % (tag, signal.Signals(signum).name)
            if self.assertOneLine(signum, code, out, err, context):
                gated += 1
                # the unverified release is not left live
                self.assertEqual(self.current_release(context), before,
                                 (context, err))
                self.assertIn('flipped back to %s' % before, err, context)
        self.assertGreaterEqual(gated, ROUNDS)
        self.assertReleased(self.release('final'), 'final')


def during_our_code(output):
    """Whether a traceback names a frame of this package, or of a
    generated script (its file lives in a bin directory) past its first
    line: that line imports what installs the script's signal handlers,
    and an interrupt before they are installed is the interpreter's."""
    first_line = EARLY_SIGNALS.splitlines()[0]
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*'
                        r'(?:\n(?! *File )(.*))?', output)
    ours = os.path.join('collective', 'safedeploy') + os.sep
    # (line 0: the interpreter was still reading the script)
    return any(ours in f or (os.sep + 'bin' + os.sep in f and line != '0'
                             and code.strip() != first_line)
               for f, line, code in frames)


class RollbackInterrupts(InterruptTestCase):

    parts = test_pairing.TestPairing.parts
    safedeploy = test_pairing.TestPairing.safedeploy
    extra = test_pairing.TestPairing.extra

    def setUp(self):
        super().setUp()
        make_site_data(self.sample.path('data'), transactions=5, blobs=3)
        self.configure(safedeploy='')
        self.assertReleased(self.release('1.0'), '1.0')
        r = support.run([self.sample.path('bin', 'snapshot'), '--adopt'])
        self.assertEqual(r.returncode, 0, r)
        self.configure(safedeploy=self.safedeploy +
                       'health-check = sh -c "sleep 0.2"\n')
        self.assertReleased(self.release('1.1'), '1.1')
        self.data = DataRoot(self.sample.path('data'))

    def pair(self, context):
        """(code, data generation), checked: both complete, and the data is
        what the release runs on by the pairing record."""
        code = self.current_release(context)
        generation = self.data.current_name()
        self.assertTrue(self.data.generations.is_complete(generation),
                        context)
        ran_on, _, _ = pairing.lookup(self.sample.path('releases'), code)
        self.assertEqual(ran_on, generation, context)
        return code, generation

    def reset(self, code, generation):
        """Back to (code, generation) without running anything."""
        for link, target in ((self.sample.path('current'),
                              'releases/%s' % code),
                             (self.sample.path('data', 'current'),
                              'generations/%s' % generation)):
            fsutil.atomic_symlink(target, link)
        pairing.record(self.sample.path('releases'), code, 'test reset',
                       generation=generation)
        from collective.safedeploy.release import lifecycle
        from collective.safedeploy.release.settings import releases
        lifecycle.install_root_scripts(releases(
            self.sample.path('releases'), self.sample.path('current')), code)

    def test_rollbacks(self):
        start = self.pair('start')
        begins = self.started([self.sample.path('bin', 'rollback')])
        duration = self.timed([self.sample.path('bin', 'rollback'), '1.0'])
        self.reset(*start)
        done = n = 0
        while done < ROUNDS and n < 4 * ROUNDS:
            n += 1
            signum = SIGNALS[n % 2]
            target = '1.0' if self.current_release('round') == '1.1' \
                else '1.1'
            p = self.start([self.sample.path('bin', 'rollback'), target])
            code, out, err = self.interrupt(p, signum, within=duration,
                                            after=begins)
            context = 'rollback %d, %s' % (n, signal.Signals(signum).name)
            if self.assertOneLine(signum, code, out, err, context):
                done += 1
            self.current_release(context)
        self.assertGreaterEqual(done, ROUNDS)
        self.reset(*start)
        r = self.rollback('1.0')
        self.assertEqual(r.returncode, 0, r)

    def started(self, script):
        """About when ``script`` has started (half of what its --help
        costs: Python and the imports): interrupts before that would
        mostly be the interpreter's (not counted)."""
        return self.timed(script + ['--help']) / 2

    def timed(self, args):
        started = time.monotonic()
        r = support.run(args, cwd=self.sample.directory)
        self.assertEqual(r.returncode, 0, r)
        return time.monotonic() - started

    def test_rollbacks_with_data(self):
        start = self.pair('start')
        production = hash_tree(self.data.current_path())
        begins = self.started([self.sample.path('bin', 'rollback')])
        duration = self.timed([self.sample.path('bin', 'rollback'), '1.0',
                               '--with-data', '--discard-writes'])
        self.reset(*start)
        interrupted = n = 0
        while interrupted < ROUNDS and n < 4 * ROUNDS:
            n += 1
            signum = SIGNALS[n % 2]
            p = self.start([self.sample.path('bin', 'rollback'), '1.0',
                            '--with-data', '--discard-writes'])
            code, out, err = self.interrupt(p, signum, within=duration,
                                            after=begins)
            context = 'rollback --with-data %d, %s' % (
                n, signal.Signals(signum).name)
            if self.assertOneLine(signum, code, out, err, context):
                interrupted += 1
            pair = self.pair(context)
            if pair == start:
                # nothing of 1.1's data was changed
                self.assertEqual(hash_tree(self.data.current_path()),
                                 production, context)
            else:
                self.assertEqual(pair[0], '1.0', context)
            self.reset(*start)
        self.assertGreaterEqual(interrupted, ROUNDS)
        r = self.rollback('1.0', '--with-data', '--discard-writes')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.pair('after')[0], '1.0')

    def site_writes(self):
        """The site commits (a snapshot then has new transactions and
        blobs to take)."""
        current = self.data.current_path()
        commit(os.path.join(current, 'filestorage', 'Data.fs'),
               os.path.join(current, 'blobstorage'), n=3)

    def test_snapshots(self):
        self.timed([self.sample.path('bin', 'snapshot'), 'first'])
        begins = self.started([self.sample.path('bin', 'snapshot')])
        # what each of the others costs: the site wrote since the last one
        self.site_writes()
        duration = self.timed([self.sample.path('bin', 'snapshot'),
                               'second'])
        interrupted = n = 0
        while interrupted < ROUNDS and n < 4 * ROUNDS:
            n += 1
            signum = SIGNALS[n % 2]
            self.site_writes()
            production = hash_tree(self.data.current_path())
            p = self.start([self.sample.path('bin', 'snapshot'), 's%d' % n])
            code, out, err = self.interrupt(p, signum, within=duration,
                                            after=begins)
            context = 'snapshot %d, %s' % (n, signal.Signals(signum).name)
            if self.assertOneLine(signum, code, out, err, context):
                interrupted += 1
            self.assertEqual(hash_tree(self.data.current_path()), production,
                             context)
            r = support.run([self.sample.path('bin', 'snapshot'), '--list',
                             '--json'])
            self.assertEqual(r.returncode, 0, (context, r))
            for row in json.loads(r.output):
                self.assertEqual(row['state'], 'ok', (context, row))
        self.assertGreaterEqual(interrupted, ROUNDS)
        r = support.run([self.sample.path('bin', 'snapshot'), 'last'])
        self.assertEqual(r.returncode, 0, r)
