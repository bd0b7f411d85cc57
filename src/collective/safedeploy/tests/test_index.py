"""Package indexes per release: pool, publish, verify, gc, bin/index.

Real wheels (the test wheelhouse, and small ones written here), real
compoze, real pip: no network (pip is pointed at the wheelhouse only).
"""
import contextlib
import io
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
from collective.safedeploy.index import pool as index_pool
from collective.safedeploy.index import publish as index_publish
from collective.safedeploy.index import records
from collective.safedeploy.index import sdist
from collective.safedeploy.index import command as index_command
from collective.safedeploy.release import distributions as release_distributions
from collective.safedeploy.core import fsutil
from collective.safedeploy.core.errors import Refused
from collective.safedeploy.core.store import MARKER
from collective.safedeploy.core.errors import SafeDeployError

from . import support
from .test_index_support import OFFLINE_PIP
from .test_index_support import entry
from .test_index_support import make_wheel
from .test_index_support import wheelhouse_distributions

ZODB_CLOSURE = ['ZODB', 'persistent', 'BTrees', 'transaction', 'ZConfig',
                'zodbpickle', 'zope.interface', 'zope.deferredimport',
                'zope.proxy', 'zc.lockfile', 'cffi', 'pycparser']


class IndexTestCase(unittest.TestCase):

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix='safedeploy-index-')
        self.addCleanup(shutil.rmtree, self.root, True)
        self.pool = os.path.join(self.root, 'pool')
        self.indexes = os.path.join(self.root, 'indexes')
        self.wheels = os.path.join(self.root, 'wheels')
        old = dict(os.environ)
        self.addCleanup(os.environ.update, old)
        self.addCleanup(os.environ.clear)
        os.environ.update(OFFLINE_PIP)

    def release_dir(self, tag):
        path = os.path.join(self.root, 'releases', tag)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(self.root, 'buildout.cfg'), 'w') as f:
            f.write('[buildout]\nparts =\n')
        return path

    def publish(self, tag, distributions, **kw):
        return index_publish.publish(tag, dict(distributions=distributions),
                             self.release_dir(tag), self.pool, self.indexes,
                             **kw)

    def files(self, tag):
        path = os.path.join(self.indexes, tag)
        return sorted(n for n in os.listdir(path)
                      if index_pool.ARCHIVE.match(n))

    def pooled(self):
        return sorted(n for n in os.listdir(self.pool)
                      if index_pool.ARCHIVE.match(n))

    def bin_index(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                defaults = ['--pool', self.pool]
                if '--indexes' not in argv:
                    defaults += ['--indexes', self.indexes]
                rc = index_command.main(list(argv) + defaults)
            except SystemExit as e:
                rc = e.code
        logger = logging.getLogger('collective.safedeploy')
        logger.handlers[:] = []
        logger.propagate = True
        return rc, out.getvalue(), err.getvalue()


class TestTagVersion(unittest.TestCase):

    def test_valid_sorted_and_unique_per_tag(self):
        from packaging.version import Version
        self.assertEqual(sdist.tag_version('0.1', 'v1'), '0.1+tag.v1')
        self.assertEqual(sdist.tag_version('1.0', '2026.11.22'),
                         '1.0+tag.2026.11.22')
        self.assertLess(Version(sdist.tag_version('1.0', '1.9')),
                        Version(sdist.tag_version('1.0', '1.10')))
        self.assertLess(Version('1.0'), Version(sdist.tag_version('1.0', 'a')))
        tags = ['v1', 'V1', 'v1-2', 'v1.2', 'v1_2', 'v1+2', 'rc.1']
        versions = [sdist.tag_version('1.0', t) for t in tags]
        self.assertEqual(len(set(versions)), len(tags), versions)
        for v in versions:
            self.assertEqual(str(Version(v)), v)

    def test_a_version_with_a_local_label_keeps_it(self):
        self.assertEqual(sdist.tag_version('1.0+local', 'v2'),
                         '1.0+local.tag.v2')


class TestPool(IndexTestCase):

    def test_each_file_once_read_only(self):
        wheel = make_wheel(self.wheels, 'alpha', '1.0')
        dist = dict(file=os.path.basename(wheel), archive=wheel,
                    sha256=fsutil.sha256(wheel))
        target = index_pool.add_to_pool(dist, self.pool)
        self.assertEqual(index_pool.add_to_pool(dist, self.pool), target)
        self.assertEqual(self.pooled(), [os.path.basename(wheel)])
        self.assertFalse(os.stat(target).st_mode & stat.S_IWUSR)

    def test_same_name_other_content_is_refused_not_overwritten(self):
        first = make_wheel(os.path.join(self.wheels, 'a'), 'alpha', '1.0',
                           payload='one')
        second = make_wheel(os.path.join(self.wheels, 'b'), 'alpha', '1.0',
                            payload='two')
        self.publish('one', [entry('alpha', '1.0', first)])
        pooled = os.path.join(self.pool, os.path.basename(first))
        before = fsutil.sha256(pooled)
        with self.assertRaises(Refused) as caught:
            self.publish('two', [entry('alpha', '1.0', second)])
        self.assertIn('never reused', str(caught.exception))
        self.assertEqual(fsutil.sha256(pooled), before)
        self.assertEqual(records.tags(self.indexes), ['one'])
        self.assertEqual([n for n in os.listdir(self.indexes)
                          if not n.startswith('.')], ['one'])


class TestPublish(IndexTestCase):

    def test_two_releases_with_different_pins(self):
        zodb = wheelhouse_distributions(ZODB_CLOSURE)
        self.assertGreaterEqual(len(zodb), 12)
        old = make_wheel(self.wheels, 'app.pins', '1.0')
        new = make_wheel(self.wheels, 'app.pins', '2.0')
        self.publish('r1', zodb + [entry('app.pins', '1.0', old)])
        waitress = wheelhouse_distributions(['waitress'])
        self.publish('r2', zodb[:5] + waitress + [
            entry('app.pins', '2.0', new)])
        r1 = sorted([os.path.basename(d['archive']) for d in zodb] +
                    [os.path.basename(old)])
        r2 = sorted([os.path.basename(d['archive'])
                     for d in zodb[:5] + waitress] + [os.path.basename(new)])
        self.assertEqual(self.files('r1'), r1)
        self.assertEqual(self.files('r2'), r2)
        # the pool holds the union, each file once
        self.assertEqual(self.pooled(), sorted(set(r1) | set(r2)))
        # PEP 503 names, one project page per distribution
        simple = os.path.join(self.indexes, 'r1', 'simple')
        projects = sorted(n for n in os.listdir(simple)
                          if os.path.isdir(os.path.join(simple, n))
                          and not os.path.islink(os.path.join(simple, n)))
        self.assertIn('zc-lockfile', projects)
        self.assertIn('app-pins', projects)
        self.assertIn('zodb', projects)
        self.assertEqual(len(projects), len(r1))
        with open(os.path.join(simple, 'app-pins', 'index.html')) as f:
            page = f.read()
        self.assertIn(os.path.basename(old) + '#sha256=' +
                      fsutil.sha256(old), page)
        self.assertNotIn('2.0', page)
        # versions.cfg in the release and in the index
        with open(os.path.join(self.root, 'releases', 'r2',
                               'versions.cfg')) as f:
            text = f.read()
        self.assertIn('[versions]\n', text)
        self.assertIn('\napp.pins = 2.0\n', text)
        self.assertIn('\nwaitress = 3.0.2\n', text)
        self.assertEqual(records.tags(self.indexes), ['r1', 'r2'])

    def test_pip_installs_exactly_the_pinned_versions_from_the_index(self):
        old = make_wheel(self.wheels, 'app.pins', '1.0')
        new = make_wheel(self.wheels, 'app.pins', '2.0')
        self.publish('r1', [entry('app.pins', '1.0', old)])
        self.publish('r2', [entry('app.pins', '2.0', new)])
        target = os.path.join(self.root, 'target')
        env = {k: v for k, v in os.environ.items()
               if k not in ('PIP_NO_INDEX', 'PIP_FIND_LINKS')}
        p = subprocess.run(
            [sys.executable, '-m', 'pip', 'install', '--no-cache-dir', '-q',
             '--index-url', 'file://%s/r1/simple/' % self.indexes,
             '--target', target, 'app-pins'],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        with open(os.path.join(target, 'app_pins.py')) as f:
            self.assertIn("VERSION = '1.0'", f.read())

    def test_develop_packages_are_released_into_the_index(self):
        source = os.path.join(self.root, 'src', 'hello')
        os.makedirs(source)
        with open(os.path.join(source, 'pyproject.toml'), 'w') as f:
            f.write('[build-system]\nrequires = ["setuptools"]\n'
                    'build-backend = "setuptools.build_meta"\n'
                    '[project]\nname = "hello"\nversion = "0.1"\n')
        with open(os.path.join(source, 'hello.py'), 'w') as f:
            f.write('VERSION = "checkout"\n')
        record = self.publish('v1', [entry('hello', '0.1', develop=True,
                                           source=source)])
        (dist,) = record['distributions']
        self.assertEqual(dist['version'], '0.1+tag.v1')
        self.assertEqual(dist['file'], 'hello-0.1+tag.v1.tar.gz')
        self.assertEqual(self.files('v1'), ['hello-0.1+tag.v1.tar.gz'])
        self.assertTrue(os.path.exists(os.path.join(
            self.pool, 'hello-0.1+tag.v1.tar.gz')))
        # the frozen source is untouched
        self.assertEqual(sorted(os.listdir(source)),
                         ['hello.py', 'pyproject.toml'])
        with open(os.path.join(self.root, 'releases', 'v1',
                               'versions.cfg')) as f:
            self.assertIn('\nhello = 0.1+tag.v1\n', f.read())
        # the sdist carries its version: building it again keeps it
        work = os.path.join(self.root, 'unpacked')
        shutil.unpack_archive(os.path.join(self.pool, dist['file']), work)
        out = os.path.join(self.root, 'wheel')
        p = subprocess.run(
            [sys.executable, '-c', 'import sys; from setuptools import '
             'build_meta as b; print(b.build_wheel(sys.argv[1]))', out],
            cwd=os.path.join(work, 'hello-0.1+tag.v1'),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout.strip().splitlines()[-1],
                         'hello-0.1+tag.v1-py3-none-any.whl')

    def test_environment_distributions_come_from_the_cache_or_pip(self):
        site = os.path.join(self.root, 'venv', 'site-packages')
        with self.assertLogs('collective.safedeploy', 'WARNING') as logs:
            record = self.publish('e1', [
                entry('zc.lockfile', '4.0', location=site),
                entry('no.such.dist', '1.0', location=site)], fetch=True)
        self.assertIn('no archive of no.such.dist 1.0', logs.output[0])
        found = {d['name']: d for d in record['distributions']}
        self.assertTrue(found['zc.lockfile']['environment'])
        self.assertEqual(found['zc.lockfile']['file'],
                         'zc_lockfile-4.0-py3-none-any.whl')
        self.assertIsNone(found['no.such.dist']['file'])
        self.assertEqual(self.files('e1'),
                         ['zc_lockfile-4.0-py3-none-any.whl'])
        with open(os.path.join(self.indexes, 'e1', 'versions.cfg')) as f:
            self.assertIn('\nno.such.dist = 1.0\n', f.read())

    def test_a_release_of_nothing_but_the_environment_has_an_empty_index(
            self):
        # every distribution came from the environment bin/buildout runs
        # in and none has an archive anywhere: nothing to serve, but the
        # index is complete (compoze itself refuses an empty directory)
        site = os.path.join(self.root, 'venv', 'site-packages')
        record = self.publish('n1', [
            entry('no.such.dist', '1.0', location=site)])
        self.assertEqual(record['tag'], 'n1')
        self.assertEqual(records.tags(self.indexes), ['n1'])
        self.assertEqual(self.files('n1'), [])
        simple = os.path.join(self.indexes, 'n1', 'simple')
        self.assertEqual(os.listdir(simple), ['index.html'])
        with open(os.path.join(self.indexes, 'n1', 'versions.cfg')) as f:
            self.assertIn('\nno.such.dist = 1.0\n', f.read())
        self.assertEqual(self.bin_index('--verify', 'n1')[0], 0)

    def test_an_existing_index_is_kept_or_refused(self):
        zodb = wheelhouse_distributions(['ZODB'])
        self.publish('v1', zodb)
        self.assertEqual(self.publish('v1', zodb)['tag'], 'v1')
        other = make_wheel(self.wheels, 'ZODB', '9.9')
        with self.assertRaises(Refused) as caught:
            self.publish('v1', [entry('ZODB', '9.9', other)])
        self.assertIn('use a new tag', str(caught.exception))

    def test_modes(self):
        missing = [entry('gone', '1.0', os.path.join(self.root, 'nope.whl'))]
        with self.assertRaises(SafeDeployError) as caught:
            self.publish('m1', missing)
        self.assertIn('gone 1.0 is missing', str(caught.exception))
        with self.assertLogs('collective.safedeploy', 'WARNING'):
            self.assertIsNone(self.publish('m1', missing, mode='best-effort'))
        self.assertIsNone(self.publish('m1', missing, mode='off'))
        self.assertEqual(records.tags(self.indexes), [])
        with self.assertRaises(SafeDeployError):
            self.publish('m1', missing, mode='sometimes')
        # no archive and not from the environment: refused in required mode
        with self.assertRaises(SafeDeployError) as caught:
            self.publish('m2', [entry('old', '1.0')])
        self.assertIn('no archive in the download cache',
                      str(caught.exception))

    def test_a_failed_build_leaves_no_index_behind(self):
        bad = os.path.join(self.root, 'broken-1.0-py3-none-any.whl')
        with open(bad, 'wb') as f:
            f.write(b'not a zip')
        with self.assertRaises(SafeDeployError):
            self.publish('b1', [entry('broken', '1.0', bad)])
        self.assertEqual([n for n in os.listdir(self.indexes)
                          if not n.startswith('.')], [])
        self.assertEqual(records.tags(self.indexes), [])


class TestVerifyAndGc(IndexTestCase):

    def test_a_corrupted_pool_file_is_found(self):
        dists = wheelhouse_distributions(['ZODB', 'transaction'])
        self.publish('v1', dists)
        rc, out, err = self.bin_index('--verify', 'v1')
        self.assertEqual(rc, 0, err)
        self.assertIn('v1: all 2 files verified', out)
        victim = os.path.join(self.pool, 'transaction-5.1-py3-none-any.whl')
        os.chmod(victim, 0o644)
        with open(victim, 'r+b') as f:
            f.seek(100)
            f.write(b'\0corrupt\0')
        rc, out, err = self.bin_index('--verify', 'v1')
        self.assertEqual(rc, 1)
        self.assertIn('BAD  transaction-5.1-py3-none-any.whl: sha256 differs',
                      out)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn('1 bad file(s) out of 2', err)
        os.unlink(victim)
        rc, out, err = self.bin_index('--verify', 'v1', '--json')
        self.assertEqual(rc, 1)
        result = json.loads(out)
        self.assertEqual([r['problem'] for r in result if not r['ok']],
                         ['missing from the pool'])

    def test_pruning_keeps_files_gc_removes_unused_ones(self):
        zodb = wheelhouse_distributions(['ZODB', 'transaction'])
        only_old = make_wheel(self.wheels, 'old.only', '1.0')
        self.publish('v1', zodb + [entry('old.only', '1.0', only_old)])
        self.publish('v2', zodb)
        self.assertFalse(records.prune('v1', self.indexes))   # index kept
        self.assertEqual(records.tags(self.indexes), ['v1', 'v2'])
        rc, out, err = self.bin_index('--gc')
        self.assertEqual((rc, out.splitlines()[-1]),
                         (0, '0 unused pool file(s) removed'))
        self.assertTrue(records.prune('v1', self.indexes, keep_index=False))
        self.assertEqual(records.tags(self.indexes), ['v2'])
        pooled = sorted(os.listdir(self.pool))
        self.assertIn('old_only-1.0-py3-none-any.whl', pooled)   # until gc
        rc, out, err = self.bin_index('--gc')
        self.assertEqual(rc, 0, err)
        self.assertIn('removed old_only-1.0-py3-none-any.whl', out)
        self.assertEqual(self.pooled(), sorted(
            os.path.basename(d['archive']) for d in zodb))
        rc, out, err = self.bin_index('--verify', 'v2')
        self.assertEqual(rc, 0, out + err)


class TestCommandLine(IndexTestCase):

    def test_list(self):
        self.publish('v1', wheelhouse_distributions(['ZODB', 'waitress']))
        rc, out, err = self.bin_index('--list')
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith('v1  (2 distributions, '), out)
        self.assertIn('waitress', out)
        rc, out, err = self.bin_index('--list', '--json')
        (item,) = json.loads(out)
        self.assertEqual(item['tag'], 'v1')
        self.assertEqual(sorted((d['name'], d['version'])
                                for d in item['distributions']),
                         [('ZODB', '6.4'), ('waitress', '3.0.2')])

    def test_list_nothing(self):
        rc, out, err = self.bin_index('--list')
        self.assertEqual((rc, out.strip()), (0, 'no package indexes in %s'
                                             % self.indexes))
        rc, out, err = self.bin_index('--list', '--json')
        self.assertEqual(json.loads(out), [])

    def test_help_and_bad_input(self):
        rc, out, err = self.bin_index('--help')
        self.assertEqual(rc, 0)
        self.assertIn('--rebuild TAG DIR', out)
        rc, out, err = self.bin_index()
        self.assertEqual(rc, 2)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        rc, out, err = self.bin_index('--verify', 'nope')
        self.assertEqual(rc, 1)
        self.assertEqual(err.strip(), 'index: error: no package index for '
                         'release nope in %s; bin/index --list shows the ones '
                         'there are' % self.indexes)
        rc, out, err = self.bin_index('--verify', '../x')
        self.assertEqual(rc, 1)
        self.assertIn('invalid tag', err)
        self.publish('v1', wheelhouse_distributions(['ZODB']))
        busy = os.path.join(self.root, 'busy')
        os.mkdir(busy)
        open(os.path.join(busy, 'x'), 'w').close()
        rc, out, err = self.bin_index('--rebuild', 'v1', busy)
        self.assertEqual(rc, 1)
        self.assertIn('is not empty', err)
        self.assertEqual(os.listdir(busy), ['x'])


class TestKilled(IndexTestCase):
    """SIGKILL at random moments of a publish: an index is complete or
    absent, the pool has no partial file under a real name, and the next
    publish (and gc) clean up."""

    def test_sigkill_at_random_moments(self):
        import random
        import signal
        import time
        source = os.path.join(self.root, 'src', 'app')
        os.makedirs(source)
        with open(os.path.join(source, 'setup.py'), 'w') as f:
            f.write('from setuptools import setup\n'
                    'setup(name="app", version="1.0", py_modules=["app"])\n')
        with open(os.path.join(source, 'app.py'), 'w') as f:
            f.write('VERSION = "1.0"\n')
        dists = wheelhouse_distributions() + [
            entry('app', '1.0', develop=True, source=source)]
        self.release_dir('k')
        manifest = os.path.join(self.root, 'manifest.json')
        with open(manifest, 'w') as f:
            json.dump(dict(distributions=dists), f)
        code = ('import json, sys\n'
                'from collective.safedeploy import index\n'
                'm = json.load(open(sys.argv[1]))\n'
                'index_publish.publish(sys.argv[2], m, sys.argv[3], sys.argv[4], '
                'sys.argv[5])\n')
        rng = random.Random(4)
        for round_ in range(6):
            tag = 'k%d' % round_
            p = subprocess.Popen(
                [sys.executable, '-c', code, manifest, tag,
                 self.release_dir(tag), self.pool, self.indexes],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 1.2))
            p.send_signal(signal.SIGKILL)
            p.wait()
            self.assertConsistent()
        # the next runs finish what was left
        for round_ in range(6):
            self.publish('k%d' % round_, dists)
        self.assertEqual(records.tags(self.indexes),
                         ['k%d' % i for i in range(6)])
        index_pool.gc(self.indexes, self.pool)
        self.assertEqual([n for n in os.listdir(self.pool)
                          if n.startswith('.') and n != MARKER], [])
        self.assertEqual([n for n in os.listdir(self.indexes)
                          if n.endswith('.tmp') or '.trash-' in n], [])
        self.assertConsistent()

    def assertConsistent(self):
        for name in os.listdir(self.indexes) if os.path.isdir(
                self.indexes) else ():
            if name.startswith('.'):
                continue
            for filename, problem in records.verify(self.indexes, self.pool,
                                                  name):
                self.assertIsNone(problem, (name, filename))
        for name in os.listdir(self.pool) if os.path.isdir(self.pool) else ():
            if name.startswith('.'):
                continue
            # whatever has a real name is a whole file
            self.assertIsNotNone(release_distributions.archive_key(name), name)
            original = os.path.join(support.WHEELHOUSE, name)
            if os.path.exists(original):
                self.assertEqual(fsutil.sha256(os.path.join(self.pool, name)),
                                 fsutil.sha256(original), name)


class TestGcRefuses(IndexTestCase):

    def test_gc_with_a_wrong_indexes_directory_changes_nothing(self):
        self.publish('v1', wheelhouse_distributions(['ZODB']))
        before = sorted(os.listdir(self.pool))
        rc, out, err = self.bin_index('--gc', '--indexes',
                                      os.path.join(self.root, 'typo'))
        self.assertEqual(rc, 1)
        self.assertIn('no package indexes in', err)
        self.assertFalse(os.path.exists(os.path.join(self.root, 'typo')))
        empty = os.path.join(self.root, 'empty')
        os.mkdir(empty)
        rc, out, err = self.bin_index('--gc', '--indexes', empty)
        self.assertEqual(rc, 1)
        self.assertIn('no package indexes in', err)
        # an indexes directory of ours with no index in it
        records.store(empty).claim()
        rc, out, err = self.bin_index('--gc', '--indexes', empty)
        self.assertEqual(rc, 1)
        self.assertIn('would remove every file of the pool', err)
        self.assertEqual(sorted(os.listdir(self.pool)), before)
