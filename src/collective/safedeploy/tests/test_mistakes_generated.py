"""Mistakes nobody wrote down: generated option values and argument
vectors (hypothesis) for every command and for [safedeploy].

Whenever a command refuses: a non-zero exit code, exactly one line on
stderr, no traceback, and a byte-identical tree.  Whenever it accepts: it
wrote nothing outside the directories it manages.
"""
import os
import unittest

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from . import support
from .test_mistakes import Site

EXAMPLES = int(os.environ.get('SAFEDEPLOY_GENERATED_EXAMPLES', '25'))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

# words a user might type, and values of every kind
VALUES = st.sampled_from([
    '', ' ', '0', '-1', '1.0', '0.9', '1.1', 'taken', 'nosuch', '../x', '.',
    '..', '/', '/etc', 'a b', 'nan', 'inf', '1e999', '99999', 'true',
    'maybe', '"', "'", '${buildout:directory}', '~', '-', '--', 'x' * 120,
    'http://', 'http://127.0.0.1:1/', 'ftp://x', '127.0.0.1:99999', '1',
    'var', 'releases', 'src', 'current', '.journal',
]) | st.text(alphabet='abc.-_/ 019:"\'$', max_size=12)

FLAGS = {
    'rollback': ['--list', '--json', '--dry-run', '-n', '--with-data',
                 '--discard-writes', '-q', '-v', '--bogus'],
    'snapshot': ['--list', '--json', '--restore', '--destroy', '--prune',
                 '--for-release', '--adopt', '--force', '--discard-writes',
                 '--data', '--backend', '--dataset', '--keep', '-q', '-v'],
    'index': ['--list', '--verify', '--rebuild', '--gc', '--json',
              '--indexes', '--pool', '--buildout', '-q', '-v'],
    'evolve-copy': ['--resume', '--rehearse', '--keep-sandbox', '--json',
                    '--switch-back', '--discard-writes', '--data',
                    '--evolve', '--evolve-context', '--zeo-address',
                    '--zeo-state', '--freeze-command', '--thaw-command',
                    '-q', '-v'],
}
# what a command may change when it accepts
MANAGES = {
    'rollback': ('releases', 'current', 'bin', 'var'),
    'snapshot': ('var',),
    'index': ('indexes', 'pool'),
    'evolve-copy': ('var', 'releases'),
}


def argv_for(command):
    word = st.one_of(st.sampled_from(FLAGS[command]), VALUES)
    return st.lists(word, max_size=4)


class GeneratedMistakes(unittest.TestCase):

    layer = Site

    @property
    def sample(self):
        return Site.sample

    def outside(self, command):
        keep = MANAGES[command]
        return [entry for entry in support.tree_state(self.sample.directory)
                if entry[0].split(os.sep)[0] not in keep]

    def check(self, command, argv):
        before = support.tree_state(self.sample.directory)
        outside = self.outside(command)
        r = support.run([self.sample.path('bin', command)] + argv,
                        cwd=self.sample.directory, split=True, timeout=120)
        self.assertNotIn('Traceback', r.output + r.errors, (argv, r))
        if r.returncode:
            lines = [x for x in r.errors.splitlines() if x.strip()]
            self.assertEqual(len(lines), 1, (argv, r))
            self.assertEqual(before, support.tree_state(
                self.sample.directory), (argv, r))
        else:
            self.assertEqual(outside, self.outside(command), (argv, r))

    @SETTINGS
    @given(argv_for('rollback'))
    def test_rollback(self, argv):
        self.check('rollback', argv)

    @SETTINGS
    @given(argv_for('snapshot'))
    def test_snapshot(self, argv):
        self.check('snapshot', argv)

    @SETTINGS
    @given(argv_for('index'))
    def test_index(self, argv):
        self.check('index', argv)

    @SETTINGS
    @given(argv_for('evolve-copy'))
    def test_evolve_copy(self, argv):
        self.check('evolve-copy', argv)

    @settings(max_examples=max(EXAMPLES // 2, 5), deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([
        'keep', 'health-timeout', 'health-check', 'after-flip', 'rebuild',
        'index', 'shared', 'releases-directory', 'current',
        'indexes-directory', 'pool-directory', 'exclude-parts',
        'snapshot-before-flip', 'index-fetch', 'allow-dirty', 'tag',
        'update-excluded-parts', 'through-current',
        'kep', 'healthcheck']), VALUES)
    def test_safedeploy_options(self, option, value):
        """A build with one generated [safedeploy] value either refuses
        (the four things) or builds a release inside releases/ -- and then
        the site is put back."""
        Site.configure(safedeploy='%s = %s' % (option, value))
        top = set(os.listdir(self.sample.directory))
        try:
            before = support.tree_state(self.sample.directory)
            r = support.run([support.BUILDOUT, 'safedeploy:tag=g1'],
                            cwd=self.sample.directory, split=True,
                            timeout=300)
            self.assertNotIn('Traceback', r.output + r.errors,
                             (option, value, r))
            if r.returncode and not self.built():
                lines = [x for x in r.errors.splitlines() if x.strip()]
                self.assertEqual(len(lines), 1, (option, value, r))
                self.assertEqual(before, support.tree_state(
                    self.sample.directory), (option, value, r))
        finally:
            Site.configure()
            self.restore(top)

    def built(self):
        return os.path.isdir(self.sample.path('releases', 'g1'))

    def restore(self, top):
        """Back to the site every case starts from: 1.0 current, no g1,
        nothing an accepted value made elsewhere (a releases directory of
        its own)."""
        import shutil
        from collective.safedeploy.core import fsutil
        from collective.safedeploy.release.settings import releases
        for name in set(os.listdir(self.sample.directory)) - top:
            path = self.sample.path(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        if support.current_tag(self.sample.directory) != '1.0' or \
                os.readlink(self.sample.path('current')) != 'releases/1.0':
            fsutil.atomic_symlink('releases/1.0', self.sample.path('current'))
        gens = releases(self.sample.path('releases'),
                        self.sample.path('current'))
        if gens.entry('g1'):
            with gens.lock():
                gens.discard('g1', 'generated case')
