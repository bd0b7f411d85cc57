"""The repeatability proof: a release is rebuilt from its package index
alone, with every network access blocked, by buildout and by pip.

Real bin/buildout, real compoze, real pip.  "No network" is a new network
namespace (``unshare -n``): not even loopback is up.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from importlib import metadata

from packaging.utils import canonicalize_name
from collective.safedeploy.index import publish as index_publish
from collective.safedeploy.index import rebuild
from collective.safedeploy.index import records

from . import support
from .base import ReleaseTestCase
from .test_index_support import OFFLINE_PIP
from .test_index_support import manifest_from_scripts
from .test_index_support import unshare_network

NO_NETWORK = unshare_network()

APP = '''\
develop = src/hello
parts = app

[app]
recipe = zc.recipe.egg
eggs =
    hello
    ZODB
interpreter = py

[versions]
ZODB = 6.4
'''


def site_index(*args, prefix=()):
    """bin/index, run like the site runs it: with the buildout venv."""
    return support.run(list(prefix) + [
        support.SITE_PYTHON, '-m', 'collective.safedeploy.index.command'] +
        list(args), env=OFFLINE_PIP)


def has_entry_point(group, name):
    p = support.run([support.SITE_PYTHON, '-c',
                     'from importlib.metadata import entry_points as e; '
                     'print(sorted(x.value for x in e(group=%r, name=%r)))'
                     % (group, name)])
    return 'collective.safedeploy' in p.output


class PublishedSite:
    """zope.testrunner layer: one site built with plain bin/buildout, its
    distributions recorded the way the release extension records them,
    its index published -- then the release is gone (pruned)."""

    @classmethod
    def setUp(cls):
        support.require_site_venv()
        sample = cls.sample = support.SampleBuildout()
        sample.add_package('hello', '1.0')
        sample.write_config(APP)
        result = sample.buildout()
        if result.returncode:
            sample.cleanup()
            raise AssertionError(result)
        cls.indexes = sample.path('indexes')
        cls.pool = sample.path('pool')
        manifest = manifest_from_scripts(
            sample.directory, 'hello',
            support.shared_directory('download-cache'),
            develop=[('hello', '0.1', sample.path('src', 'hello', 'src'))])
        os.makedirs(sample.path('releases', 'v1'))
        env = dict(os.environ)
        os.environ.update(OFFLINE_PIP)
        try:
            cls.record = index_publish.publish(
                'v1', manifest, sample.path('releases', 'v1'), cls.pool,
                cls.indexes, fetch=True)
        finally:
            os.environ.clear()
            os.environ.update(env)
        cls.recorded = {d['name']: d['version']
                        for d in cls.record['distributions']}
        # the release is gone: its scripts, eggs links, sources
        for name in ('bin', 'parts', 'develop-eggs', 'releases', 'src',
                     '.installed.cfg'):
            path = sample.path(name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)

    @classmethod
    def tearDown(cls):
        cls.sample.cleanup()


@support.skip_unless(NO_NETWORK is not None,
                     'unshare -n (a network namespace) is not available '
                     'here: the offline rebuild cannot be proven')
class TestRebuildFromTheIndex(unittest.TestCase):

    layer = PublishedSite

    @property
    def indexes(self):
        return PublishedSite.indexes

    @property
    def pool(self):
        return PublishedSite.pool

    @property
    def record(self):
        return PublishedSite.record

    @property
    def recorded(self):
        return PublishedSite.recorded

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix='safedeploy-rebuild-')
        self.addCleanup(shutil.rmtree, self.work, True)

    def test_the_index_holds_the_whole_release(self):
        self.assertGreaterEqual(len(self.record['distributions']), 13)
        self.assertEqual(self.recorded['hello'], '0.1+tag.v1')
        self.assertEqual(self.recorded['ZODB'], '6.4')
        self.assertIn('zc.lockfile', self.recorded)   # from the environment
        files = [d['file'] for d in self.record['distributions']]
        self.assertNotIn(None, files)
        result = site_index('--verify', 'v1', '--indexes', self.indexes,
                            '--pool', self.pool)
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.last_line, 'v1: all %d files verified'
                         % len(files))

    def test_buildout_rebuilds_it_offline_identically(self):
        target = os.path.join(self.work, 'site')
        result = site_index('--rebuild', 'v1', target, '--json',
                            '--indexes', self.indexes, '--pool', self.pool,
                            '--buildout', support.BUILDOUT,
                            prefix=NO_NETWORK)
        self.assertEqual(result.returncode, 0, result)
        rows = json.loads(result.output[result.output.index('['):
                                        result.output.rindex(']') + 1])
        self.assertTrue(all(r['same'] for r in rows), rows)
        self.assertEqual({r['name']: r['rebuilt'] for r in rows},
                         self.recorded)
        with open(os.path.join(target, 'safedeploy-rebuild.log')) as f:
            log = f.read()
        # nothing came from the wheelhouse or the shared download cache
        self.assertNotIn(support.WHEELHOUSE, log)
        self.assertNotIn(support.shared_directory('download-cache'), log)
        # the rebuilt scripts run, on the rebuilt eggs
        hello = support.run(NO_NETWORK + [
            os.path.join(target, 'bin', 'hello')])
        self.assertEqual(hello.output.strip(), 'hello 1.0')
        where = support.run(NO_NETWORK + [
            os.path.join(target, 'bin', 'py'), '-c',
            'import ZODB, hello; print(ZODB.__file__); '
            'print(hello.__file__)'])
        self.assertEqual(where.returncode, 0, where)
        zodb, hello_file = where.output.split()
        self.assertTrue(zodb.startswith(os.path.join(target, 'eggs')), zodb)
        self.assertTrue(hello_file.startswith(os.path.join(target, 'eggs')),
                        hello_file)
        # and it installed exactly the release's own distributions (the
        # environment's come from the venv buildout runs in)
        own = {canonicalize_name(d['name']): d['version']
               for d in self.record['distributions'] if not d['environment']}
        self.assertEqual(rebuild.installed_versions(target), own)

    def test_pip_installs_it_offline_identically(self):
        target = os.path.join(self.work, 'target')
        pins = os.path.join(self.work, 'requirements.txt')
        with open(pins, 'w') as f:
            for name, version in sorted(self.recorded.items()):
                f.write('%s==%s\n' % (name, version))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('PIP_')}
        env.update(PIP_CONFIG_FILE=os.devnull, PYTHONPATH='')
        p = subprocess.run(NO_NETWORK + [
            sys.executable, '-m', 'pip', 'install', '--no-cache-dir', '-q',
            '--disable-pip-version-check', '--no-build-isolation',
            '--index-url', 'file://%s/v1/simple/' % self.indexes,
            '--target', target, '-r', pins],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        installed = {
            d.metadata['Name']: d.version
            for d in metadata.distributions(path=[target])}
        self.assertEqual(installed, self.recorded)
        run = subprocess.run(NO_NETWORK + [
            sys.executable, '-c', 'import hello; hello.main()'],
            env=dict(env, PYTHONPATH=target), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.assertEqual(run.stdout.strip(), 'hello 1.0')

    def test_rebuild_refuses_what_it_cannot_prove(self):
        # a missing pool file: the rebuild fails and says so
        victim = os.path.join(self.indexes, 'v1', 'hello-0.1+tag.v1.tar.gz')
        pooled = os.path.realpath(victim)
        aside = pooled + '.aside'
        os.rename(pooled, aside)
        self.addCleanup(os.rename, aside, pooled)
        target = os.path.join(self.work, 'site')
        result = site_index('--rebuild', 'v1', target,
                            '--indexes', self.indexes, '--pool', self.pool,
                            '--buildout', support.BUILDOUT,
                            prefix=NO_NETWORK)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn('index: error: rebuilding v1 failed', result.last_line)
        self.assertNotIn('Traceback', result.last_line)


class TestRecipe(unittest.TestCase):
    """bin/index is generated into the site's own bin directory."""

    def test_bin_index_lands_in_the_root_bin_directory(self):
        support.require_site_venv()
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        if has_entry_point('zc.buildout', 'index'):
            recipe, develop = 'collective.safedeploy:index', ''
        else:
            # the entry point is not registered (yet): reach the same
            # class through a one-line recipe package
            recipe, develop = 'indexrecipe', 'src/indexrecipe'
            sample.write('src/indexrecipe/pyproject.toml', '''\
                [build-system]
                requires = ["setuptools"]
                build-backend = "setuptools.build_meta"
                [project]
                name = "indexrecipe"
                version = "0.1"
                [project.entry-points."zc.buildout"]
                default = "collective.safedeploy.recipes.index:Recipe"
                [tool.setuptools]
                py-modules = []
                ''')
        # what the release extension does: bin-directory inside the
        # release, the site's own kept in safedeploy-root-bin-directory
        sample.write_config(textwrap.dedent('''\
            develop = %s
            parts = index
            bin-directory = ${buildout:directory}/releases/r1/bin
            safedeploy-root-bin-directory = ${buildout:directory}/bin

            [index]
            recipe = %s
            ''') % (develop, recipe))
        os.makedirs(sample.path('releases', 'r1'))
        result = sample.buildout()
        self.assertEqual(result.returncode, 0, result)
        # generated in the release; the release extension installs it in
        # the root bin directory when the release is published
        self.assertTrue(os.path.exists(sample.path('releases/r1/bin',
                                                   'index')))
        self.assertFalse(os.path.exists(sample.path('bin', 'index')))
        os.makedirs(sample.path('bin'), exist_ok=True)
        shutil.copy2(sample.path('releases/r1/bin', 'index'),
                     sample.path('bin', 'index'))
        with open(sample.path('bin', 'index')) as f:
            script = f.read()
        self.assertIn("indexes='%s'" % sample.path('indexes'), script)
        self.assertIn("pool='%s'" % sample.path('pool'), script)
        listing = support.run([sample.path('bin', 'index'), '--list'])
        self.assertEqual(listing.returncode, 0, listing)
        self.assertEqual(listing.output.strip(), 'no package indexes in %s'
                         % sample.path('indexes'))
        helped = support.run([sample.path('bin', 'index'), '--help'])
        self.assertEqual(helped.returncode, 0, helped)
        self.assertTrue(helped.output.startswith('usage: index'),
                        helped.output)


@support.skip_unless(NO_NETWORK is not None,
                     'unshare -n (a network namespace) is not available '
                     'here: the offline rebuild cannot be proven')
class TestReleasesPublishTheirIndex(ReleaseTestCase):
    """The whole story with the release extension: each release publishes
    its index; a pruned release comes back from it, offline, identical,
    although the checkout has moved on."""

    parts = 'hello zodb'
    safedeploy = 'keep = 1\n'
    extra = '''
        [zodb]
        recipe = zc.recipe.egg
        eggs = ZODB
        interpreter = py
        '''

    def test_a_pruned_release_is_rebuilt_from_its_index_offline(self):
        self.configure(develop='src/hello', index='required',
                       safedeploy='keep = 1\nkeep-indexes = true\n')
        self.assertReleased(self.release('1.0'), '1.0')
        indexes = self.sample.path('indexes')
        pool = self.sample.path('pool')
        self.assertEqual(records.tags(indexes), ['1.0'])
        record = records.read_record(os.path.join(indexes, '1.0'))
        versions = {d['name']: d['version'] for d in record['distributions']}
        self.assertEqual(versions['hello'], '0.1+tag.1.0')
        self.assertEqual(versions['ZODB'], '6.4')
        self.assertTrue(os.path.exists(self.sample.path(
            'releases', '1.0', 'versions.cfg')))
        self.sample.add_package('hello', '1.1')   # the checkout moves on
        self.assertReleased(self.release('1.1'), '1.1')
        self.assertReleased(self.release('1.2'), '1.2')
        self.assertFalse(self.exists('releases', '1.0'))   # pruned
        self.assertEqual(records.tags(indexes), ['1.0', '1.1', '1.2'])
        self.assertEqual(self.hello(), 'hello 1.1')

        target = os.path.join(self.sample.directory, 'rebuilt')
        result = site_index('--rebuild', '1.0', target, '--json',
                            '--indexes', indexes, '--pool', pool,
                            '--buildout', support.BUILDOUT,
                            prefix=NO_NETWORK)
        self.assertEqual(result.returncode, 0, result)
        rows = json.loads(result.output[result.output.index('['):
                                        result.output.rindex(']') + 1])
        self.assertEqual({r['name']: r['rebuilt'] for r in rows}, versions)
        hello = support.run(NO_NETWORK + [os.path.join(target, 'bin',
                                                       'hello')])
        self.assertEqual(hello.output.strip(), 'hello 1.0')
        # the site itself did not change
        self.assertEqual(support.current_tag(self.sample.directory), '1.2')
