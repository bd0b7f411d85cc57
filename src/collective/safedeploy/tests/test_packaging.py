"""Release hygiene: the distribution builds and passes ``twine check``;
the documentation builds with warnings as errors."""
import glob
import importlib.util
import os
import shutil
import sys
import tempfile
import unittest

from . import support


def importable(name):
    return importlib.util.find_spec(name) is not None


class TestPackaging(unittest.TestCase):

    def tmpdir(self):
        path = tempfile.mkdtemp(prefix='safedeploy-packaging-')
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    @support.skip_unless(importable('build') and importable('twine'),
                         'build and twine are not importable: '
                         'pip install build twine')
    def test_build_and_twine_check(self):
        out = self.tmpdir()
        # the sdist, then the wheel from the unpacked sdist (what a user's
        # pip does; nothing is built inside the checkout); no isolation:
        # this environment's setuptools, no network
        r = support.run([sys.executable, '-m', 'build', '--no-isolation',
                         '--outdir', out, support.CHECKOUT], timeout=300)
        self.assertEqual(r.returncode, 0, r)
        sdists = glob.glob(os.path.join(out, '*.tar.gz'))
        wheels = glob.glob(os.path.join(out, '*.whl'))
        self.assertEqual((len(sdists), len(wheels)), (1, 1), os.listdir(out))
        # the Ansible playbooks and role are installed with the package
        import zipfile
        names = zipfile.ZipFile(wheels[0]).namelist()
        for name in ('rollout.yml', 'state.yml', 'roles/safedeploy/tasks/'
                     'flip.yml', 'roles/safedeploy/defaults/main.yml'):
            self.assertIn('collective/safedeploy/ansible/' + name, names)
        r = support.run([sys.executable, '-m', 'twine', 'check', '--strict']
                        + sdists + wheels)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.output.count('PASSED'), 2, r)

    @support.skip_unless(importable('sphinx'),
                         'sphinx is not importable: pip install sphinx')
    def test_docs_build_without_warnings(self):
        out = self.tmpdir()
        r = support.run([sys.executable, '-m', 'sphinx', '-W', '-b', 'html',
                         '-d', os.path.join(out, 'doctrees'),
                         os.path.join(support.CHECKOUT, 'docs'),
                         os.path.join(out, 'html')], timeout=300)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(os.path.exists(os.path.join(out, 'html',
                                                    'index.html')))


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
