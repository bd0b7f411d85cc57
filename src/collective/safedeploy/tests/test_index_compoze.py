"""compoze 1.0 made to work here (collective.safedeploy.compozeshim)."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from collective.safedeploy.index import compoze as compozeshim
from collective.safedeploy.core.fsutil import sha256

from . import support


def python(code):
    """Run ``code`` in a fresh interpreter (nothing imported yet)."""
    return subprocess.run([sys.executable, '-c', code],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


class TestShim(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='safedeploy-compoze-')
        self.addCleanup(shutil.rmtree, self.directory, True)
        for name in ('zodb-6.4-*.whl', 'zc_lockfile-4.0-*.whl',
                     'btrees-6.5-*.whl'):
            (path,) = glob.glob(os.path.join(support.WHEELHOUSE, name))
            os.symlink(path, os.path.join(self.directory,
                                          os.path.basename(path)))

    def test_compoze_does_not_import_without_it(self):
        import setuptools
        major = int(setuptools.__version__.split('.')[0])
        if major < 80:   # pragma: no cover
            self.skipTest('setuptools %s still has what compoze needs'
                          % setuptools.__version__)
        result = python('import compoze.compozer')
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("No module named 'pkg_resources'", result.stdout)
        result = python('import compoze.index')
        self.assertIn("No module named 'setuptools.package_index'",
                      result.stdout)

    def test_compozes_own_command_line_runs_with_it(self):
        result = python(
            'import sys\n'
            'from collective.safedeploy.index import compoze as compozeshim\n'
            'compozeshim.compozer_main(["index", "--quiet", "--path", %r])\n'
            'import compoze.index, setuptools.package_index\n'
            'print("imported")\n' % self.directory)
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn('imported', result.stdout)
        simple = os.path.join(self.directory, 'simple')
        # compoze itself names projects verbatim
        self.assertEqual(sorted(os.listdir(simple)),
                         ['BTrees', 'ZODB', 'index.html', 'zc.lockfile'])

    def test_package_index_finds_new_file_names_of_dotted_projects(self):
        compozeshim.install()
        from setuptools.package_index import PackageIndex
        from zc.buildout import _package_index as vendored

        def versions(cls):
            index = cls(index_url='file:///nonexistent/', search_path=[])
            for filename in ('zc_lockfile-4.0.tar.gz',
                             'zc.lockfile-3.0.post1.tar.gz'):
                for dist in vendored.distros_for_filename('/x/' + filename):
                    index.add(dist)
            return [str(d.version) for d in index['zc.lockfile']]

        self.assertEqual(versions(vendored.PackageIndex), ['3.0.post1'])
        self.assertEqual(versions(PackageIndex), ['4.0', '3.0.post1'])

    def test_build_index_is_pep_503(self):
        projects = compozeshim.build_index(self.directory)
        self.assertEqual(sorted(projects), ['btrees', 'zc-lockfile', 'zodb'])
        simple = os.path.join(self.directory, 'simple')
        self.assertEqual(os.readlink(os.path.join(simple, 'zc.lockfile')),
                         'zc-lockfile')
        self.assertEqual(os.readlink(os.path.join(simple, 'ZODB')), 'zodb')
        with open(os.path.join(simple, 'index.html')) as f:
            root = f.read()
        self.assertIn('<a href="zc-lockfile/">zc-lockfile</a>', root)
        with open(os.path.join(simple, 'zc-lockfile', 'index.html')) as f:
            page = f.read()
        wheel = 'zc_lockfile-4.0-py3-none-any.whl'
        digest = sha256(os.path.join(self.directory, wheel))
        self.assertIn('href="../../%s#sha256=%s"' % (wheel, digest), page)

    def test_an_unreadable_archive_is_one_error(self):
        with open(os.path.join(self.directory, 'bad-1.0-py3-none-any.whl'),
                  'wb') as f:
            f.write(b'no zip')
        with self.assertRaises(ValueError) as caught:
            compozeshim.build_index(self.directory)
        self.assertIn('File is not a zip file', str(caught.exception))
