"""Hostile directories: a current that is not our link, a releases
directory that is a file or read-only.  One line saying what is wrong and
what to do, a non-zero exit code, no traceback, nothing changed.  (Every
option and flag: test_mistakes.)"""
import os

from . import support
from .base import ReleaseTestCase

class TestBadBuildInput(ReleaseTestCase):

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

    def test_hostile_current(self):
        os.unlink(self.sample.path('current'))
        os.symlink('/etc', self.sample.path('current'))
        before = self.state()
        r = self.rollback()
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn('outside', r.output)
        self.assertEqual(before, self.state())
