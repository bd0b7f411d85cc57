"""Bad input: one line saying what is wrong and what to do, a non-zero
exit code, no traceback, nothing changed."""
import os

from . import support
from .base import ReleaseTestCase

# (name, [safedeploy] options, buildout arguments, text in the error)
BUILD_CASES = [
    ('tag with a slash', '', ['safedeploy:tag=../etc'], 'invalid tag'),
    ('tag starting with a dot', '', ['safedeploy:tag=.hidden'],
     'invalid tag'),
    ('tag starting with a dash', '', ['safedeploy:tag=-rf'], 'invalid tag'),
    ('tag with a space', '', ['safedeploy:tag=a b'], 'invalid tag'),
    ('tag of 101 characters', '', ['safedeploy:tag=' + 'x' * 101],
     'invalid tag'),
    ('tag with a newline escape', '', ['safedeploy:tag=a\\nb'],
     'invalid tag'),
    ('no tag and no git tag', '', [], 'no tag to release'),
    ('keep of 0', 'keep = 0', ['safedeploy:tag=1.0'], 'safedeploy:keep'),
    ('keep not a number', 'keep = many', ['safedeploy:tag=1.0'],
     'safedeploy:keep'),
    ('negative health-timeout', 'health-timeout = -1',
     ['safedeploy:tag=1.0'], 'safedeploy:health-timeout'),
    ('rebuild not a boolean', 'rebuild = maybe', ['safedeploy:tag=1.0'],
     'safedeploy:rebuild'),
    ('index mode unknown', 'index = sometimes', ['safedeploy:tag=1.0'],
     'safedeploy:index'),
    ('shared absolute', 'shared = /etc', ['safedeploy:tag=1.0'],
     'safedeploy:shared'),
    ('shared escaping', 'shared = ../outside', ['safedeploy:tag=1.0'],
     'safedeploy:shared'),
    ('shared reserved', 'shared = bin', ['safedeploy:tag=1.0'],
     'safedeploy:shared'),
    ('releases-directory is the buildout', 'releases-directory = .',
     ['safedeploy:tag=1.0'], 'must not be the buildout directory'),
    ('current inside releases', 'current = ${buildout:directory}/releases/x',
     ['safedeploy:tag=1.0'], 'inside releases-directory'),
    ('empty current', 'current =', ['safedeploy:tag=1.0'],
     'safedeploy:current is empty'),
    ('exclude-parts unknown', 'exclude-parts = nosuchpart',
     ['safedeploy:tag=1.0'], 'nosuchpart'),
    ('snapshot-before-flip unknown', 'snapshot-before-flip = nosnapshot',
     ['safedeploy:tag=1.0'], 'nosnapshot'),
]


class TestBadBuildInput(ReleaseTestCase):

    def check(self, name, options, args, expected):
        self.configure(safedeploy=options)
        before = self.state()
        result = self.sample.buildout(*args)
        self.assertNotEqual(result.returncode, 0, (name, result))
        self.assertNotIn('Traceback', result.output, name)
        errors = [line for line in result.lines if 'rror' in line]
        self.assertEqual(len(result.lines), 1, (name, result.output))
        self.assertIn(expected, errors[0], name)
        self.assertEqual(before, self.state(), name)

    def test_table(self):
        self.assertGreaterEqual(len(BUILD_CASES), 20)
        for case in BUILD_CASES:
            with self.subTest(case[0]):
                self.check(*case)

    def test_hostile_current(self):
        self.configure()
        cases = {
            'a file': lambda p: open(p, 'w').close(),
            'a directory': lambda p: os.mkdir(p),
            'a link outside': lambda p: os.symlink('/etc', p),
            'a link to a sibling': lambda p: os.symlink('src', p),
        }
        for name, make in cases.items():
            with self.subTest(name):
                path = self.sample.path('current')
                make(path)
                try:
                    before = self.state()
                    result = self.release('1.0')
                    self.assertEqual(result.returncode, 1, result)
                    self.assertEqual(len(result.lines), 1, result.output)
                    self.assertIn('current', result.last_line)
                    self.assertEqual(before, self.state())
                finally:
                    if os.path.islink(path) or os.path.isfile(path):
                        os.unlink(path)
                    else:
                        os.rmdir(path)

    def test_releases_directory_is_a_file(self):
        self.configure()
        with open(self.sample.path('releases'), 'w') as f:
            f.write('not a directory')
        before = self.state()
        result = self.release('1.0')
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(len(result.lines), 1, result.output)
        self.assertIn('is not a directory', result.last_line)
        self.assertEqual(before, self.state())

    @support.skip_unless(os.geteuid() == 0,
                         'a read-only directory for root needs a read-only '
                         'bind mount (root)')
    def test_unwritable_releases_directory(self):
        self.configure()
        releases = self.sample.path('releases')
        os.mkdir(releases)
        r = support.run(['mount', '--bind', releases, releases])
        if r.returncode:
            self.skipTest('cannot bind-mount: %s' % r.output)
        self.addCleanup(support.run, ['umount', '-l', releases])
        r = support.run(['mount', '-o', 'remount,ro,bind', releases])
        self.assertEqual(r.returncode, 0, r)
        before = self.state()
        result = self.release('1.0')
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(len(result.lines), 1, result.output)
        self.assertIn('not writable', result.last_line)
        self.assertEqual(before, self.state())


class TestBadRollbackInput(ReleaseTestCase):

    def setUp(self):
        super().setUp()
        self.configure()
        self.assertReleased(self.release('1.0'), '1.0')
        self.configure(parts='hello broken rollback')
        self.assertEqual(self.release('1.1').returncode, 1)
        self.configure(safedeploy='health-check = false\nhealth-timeout = 0\n')
        self.assertEqual(self.release('1.2').returncode, 1)
        self.configure()

    CASES = [
        (['nosuch'], 'no release nosuch'),
        (['1.1'], 'was not completed'),
        (['1.2'], 'marked bad'),
        (['1.0'], 'already current'),
        ([], 'no good release older than 1.0'),
        (['../1.0'], 'invalid tag'),
        (['.journal'], 'invalid tag'),
        (['--bogus'], 'unrecognized arguments'),
        (['a', 'b'], 'unrecognized arguments'),
        (['1.0', '--with-data'], None),
    ]

    def test_table(self):
        before = self.state()
        for args, expected in self.CASES:
            with self.subTest(args):
                r = self.rollback(*args)
                self.assertNotEqual(r.returncode, 0, r)
                self.assertEqual(len(r.lines), 1, r.output)
                self.assertNotIn('Traceback', r.output)
                if expected:
                    self.assertIn(expected, r.output)
                self.assertEqual(before, self.state())

    def test_hostile_current(self):
        os.unlink(self.sample.path('current'))
        os.symlink('/etc', self.sample.path('current'))
        before = self.state()
        r = self.rollback()
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn('outside', r.output)
        self.assertEqual(before, self.state())
