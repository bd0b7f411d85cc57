"""The ready-to-extend configurations in recipes/ build a site.

Each test plays what the top of the configuration tells a user to do: an
existing site (a database with blobs) adopted into data generations, a
buildout.cfg that ``extends`` the recipe file and names the application,
``bin/buildout``, a real release.  The ZEO site's bin/zeo is started and
a ZEO client reads and writes through it.
"""
import os
import socket
import subprocess
import textwrap
import unittest

from . import support

RECIPES = os.path.join(support.CHECKOUT, 'recipes')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class RecipeTestCase(unittest.TestCase):

    recipe = None

    def setUp(self):
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.var = self.sample.path('var')
        self.existing_site(self.var)

    def existing_site(self, var):
        """Data written by the site before it used collective.safedeploy,
        moved into data generations as the recipe's header says."""
        from collective.safedeploy.data import snapshot
        from . import zodbsupport
        _, _, self.last_tid = zodbsupport.make_site_data(
            var, transactions=3, blobs=2)
        snapshot.adopt(dict(data=var, backend='copy'))

    def write_config(self, body):
        head = self.sample.head().replace(
            'find-links = %s' % support.WHEELHOUSE,
            'find-links = %s\n    %s' % (support.WHEELHOUSE,
                                         support.built_wheels()))
        self.sample.write('buildout.cfg', head.replace(
            '[buildout]\n', '[buildout]\nextends = %s\n' % os.path.join(
                RECIPES, self.recipe), 1) + textwrap.dedent(body))

    def release(self, tag):
        r = self.sample.buildout('safedeploy:tag=%s' % tag)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.last_line, 'current -> %s' % tag, r)
        return r

    def assert_released(self, tag):
        self.assertEqual(support.current_tag(self.sample.directory), tag)
        r = support.run([self.sample.path('current', 'bin', 'hello')])
        self.assertEqual(r.output.strip(), 'hello 1.0')
        for script in ('rollback', 'snapshot'):
            self.assertTrue(os.path.exists(self.sample.path('bin', script)),
                            script)
        r = support.run([self.sample.path('bin', 'snapshot'), '--list'])
        self.assertEqual(r.returncode, 0, r)
        # the snapshot paired with the release, intact
        self.assertRegex(r.output, r'(?m)^%s\s.*\s%s\s+ok\s*$' % (
            tag.replace('.', r'\.'), tag.replace('.', r'\.')))


class TestFileStorageSite(RecipeTestCase):

    recipe = 'filestorage-site.cfg'

    def test_builds_releases_and_pairs_snapshots(self):
        self.write_config('''
            [app]
            eggs = hello
            scripts = hello
            ''')
        self.release('1.0')
        self.assert_released('1.0')
        self.release('1.1')
        self.assert_released('1.1')
        r = support.run([self.sample.path('bin', 'rollback')])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')

    def test_a_new_site_starts_in_an_empty_first_generation(self):
        # no data yet: the first release makes generation 1, empty, for
        # the application to create its database in; nothing to snapshot
        self.sample.cleanup()
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.var = self.sample.path('var')
        self.write_config('''
            [app]
            eggs = hello
            scripts = hello
            ''')
        r = self.release('1.0')
        self.assertIn('data generation 1 made, empty', r.output)
        self.assertEqual(os.readlink(os.path.join(self.var, 'current')),
                         os.path.join('generations', '1'))
        for empty in ('filestorage', 'blobstorage'):
            self.assertEqual(os.listdir(os.path.join(
                self.var, 'current', empty)), [])
        # a release before the site wrote anything has nothing to snapshot
        r = self.release('1.0.1')
        self.assertIn('no data yet in data generation 1', r.output)
        # the site writes its first data; the next release snapshots it
        from . import zodbsupport
        zodbsupport.make_site_data(os.path.join(self.var, 'current'),
                                   transactions=2, blobs=1)
        self.release('1.1')
        self.assert_released('1.1')

    def test_existing_data_not_adopted_is_refused_saying_how(self):
        self.sample.cleanup()
        self.sample = support.SampleBuildout()
        self.addCleanup(self.sample.cleanup)
        self.var = self.sample.path('var')
        from . import zodbsupport
        zodbsupport.make_site_data(self.var, transactions=2, blobs=1)
        before = support.tree_state(self.var)
        self.write_config('''
            [app]
            eggs = hello
            scripts = hello
            ''')
        r = self.sample.buildout('safedeploy:tag=1.0')
        self.assertEqual(r.returncode, 1, r)
        self.assertIn('safedeploy-snapshot --adopt --data %s' % self.var,
                      r.output)
        self.assertNotIn('Traceback', r.output)
        self.assertFalse(os.path.lexists(self.sample.path('current')))
        # refused before the build: no release was staged
        self.assertFalse(os.path.lexists(self.sample.path('releases', '1.0')))
        after = support.tree_state(self.var)
        self.assertEqual(set(after) - set(before), set())
        self.assertEqual(set(before) - set(after), set())

    def test_documented_at_its_top(self):
        with open(os.path.join(RECIPES, self.recipe)) as f:
            text = f.read()
        self.assertTrue(text.startswith('# A single-process site'))
        self.assertIn('extends = recipes/filestorage-site.cfg', text)


class TestZEOSite(RecipeTestCase):

    recipe = 'zeo-site.cfg'

    def test_builds_and_serves_the_data(self):
        zeo_port = free_port()
        self.write_config('''
            [ports]
            zeo = %d
            app = %d

            [safedeploy]
            health-check =

            [app]
            eggs = hello
            scripts = hello
            ''' % (zeo_port, free_port()))
        self.release('1.0')
        self.assert_released('1.0')
        # the server and supervisord outside the releases, never in one
        for script in ('zeo', 'supervisord', 'supervisorctl'):
            self.assertTrue(os.path.exists(self.sample.path('bin', script)))
            self.assertFalse(os.path.exists(self.sample.path(
                'current', 'bin', script)))
        zeo_script = self.sample.path('bin', 'zeo')
        with open(zeo_script) as f:
            before = sorted(f)
        self.release('1.1')
        with open(zeo_script) as f:   # the same (sys.path order may vary)
            self.assertEqual(sorted(f), before)
        self.check_zeo_server(zeo_script, zeo_port)

    def check_zeo_server(self, script, port):
        import transaction
        import ZEO
        import ZODB
        from ZODB.blob import Blob
        log = open(self.sample.path('zeo.log'), 'w')
        self.addCleanup(log.close)
        server = subprocess.Popen([script], cwd=self.sample.directory,
                                  stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        storage = ZEO.client(('127.0.0.1', port), wait_timeout=30,
                             blob_dir=self.sample.path('blob-cache'),
                             shared_blob_dir=False)
        db = ZODB.DB(storage)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            root = conn.root()
            self.assertEqual(len(root['items']), 3)  # the adopted data
            root['new'] = Blob(b'written through bin/zeo')
            tm.commit()
            conn.close()
        finally:
            db.close()
        server.terminate()
        server.wait(timeout=30)
        data = os.path.join(self.var, 'current', 'filestorage', 'Data.fs')
        self.assertGreater(os.path.getsize(data), 0)
        self.assertTrue(os.path.exists(self.sample.path(
            'parts', 'zeo', 'zeo.conf')))

    def test_documented_at_its_top(self):
        with open(os.path.join(RECIPES, self.recipe)) as f:
            text = f.read()
        self.assertTrue(text.startswith('# A ZEO site'))
        self.assertIn('extends = recipes/zeo-site.cfg', text)


class TestZopeAndPloneSites(unittest.TestCase):
    """zope-site.cfg and plone-site.cfg are built by test_zope_site; here:
    what their tops say, and that pip and buildout get the same pins."""

    def read(self, name):
        with open(os.path.join(RECIPES, name)) as f:
            return f.read()

    def test_documented_at_their_tops(self):
        for name, start in (('zope-site.cfg', '# A Zope 5 site'),
                            ('plone-site.cfg', '# A Plone 6 site')):
            text = self.read(name)
            self.assertTrue(text.startswith(start), name)
            self.assertIn('extends = recipes/%s' % name, text)

    def test_requirements_pin_what_the_versions_files_pin(self):
        import configparser
        versions = configparser.ConfigParser(interpolation=None)
        versions.optionxform = str.lower
        versions.read_string(self.read('zope-versions.cfg'))
        pinned = dict(versions['versions'])
        with open(os.path.join(support.CHECKOUT,
                               'requirements-zope-site.txt')) as f:
            required = dict(line.strip().lower().split('==')
                            for line in f
                            if line.strip() and not line.startswith('#'))
        self.assertEqual(required, pinned)
        self.assertEqual(pinned['zc.recipe.egg'], '6.0.0')
        self.assertEqual(pinned['zc.lockfile'], '4.0')


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
