"""A site using the built-in ZEO server control, built with a real
bin/buildout from an empty directory; root scripts follow ``current``.

- the first release starts the server on a data root that does not exist
  yet (its first, empty generation is made) and is healthy;
- the server restarts on an empty database whose index was saved at
  position 4;
- release 1.1 brings a new evolve step; after bin/rollback 1.0, the root
  bin/evolve-copy runs 1.0's evolve code and the data journal records
  1.0."""
import os
import sys
import textwrap
import unittest

from collective.safedeploy.data import filestorage
from collective.safedeploy.evolve import state
from collective.safedeploy.release import pairing
from collective.safedeploy.tests import support
from collective.safedeploy.tests import zeosupport
from collective.safedeploy.tests import zodbsupport
from collective.safedeploy.tests.test_evolve_recipe import has_entry_point
from collective.safedeploy.zeo import command as zeocommand
from collective.safedeploy.zeo import server as zeoserver

EVOLVE = '''\
VERSION = %r


def evolve(root, commit):
    root['evolved_by'] = VERSION
    commit('mark the version')
%s
'''

STEP_2 = '''\
    root['step_2'] = VERSION
    commit('the step 1.1 adds')
'''

HEALTH = '''\
import sys, transaction, ZODB
from ZEO.ClientStorage import ClientStorage
host, port = sys.argv[1].rsplit(':', 1)
db = ZODB.DB(ClientStorage((host, int(port)), wait_timeout=10))
conn = db.open()
conn.root()['health'] = conn.root().get('health', 0) + 1
transaction.commit()
db.close()
'''

AFTER_FLIP = '''\
Z="$1 -m collective.safedeploy.zeo.command"
$Z status --address $2 --state var/safedeploy-zeo | grep -q ': running' ||
    $Z start --address $2 --state var/safedeploy-zeo --data var/data
'''


def read_root(fs):
    db = zodbsupport.open_db(fs, None, read_only=True)
    try:
        conn = db.open()
        return dict(conn.root())
    finally:
        db.close()


class EmptyDatabaseTests(unittest.TestCase):

    def test_server_starts_and_restarts_on_a_new_empty_database(self):
        directory = zeosupport.temporary_directory(self, 'safedeploy-zeo-')
        data = os.path.join(directory, 'data')
        address = '127.0.0.1:%d' % zeoserver.free_port()
        zeo_state = os.path.join(directory, 'zeo')
        server = zeoserver.ZEOServer(address, zeo_state)
        self.addCleanup(server.stop)
        args = ['--address', address, '--state', zeo_state, '-q']
        for _ in range(2):
            # the second start finds Data.fs.index saved at position 4
            self.assertEqual(zeocommand.main(['start', '--data', data] +
                                             args), 0)
            self.assertTrue(server.pid())
            self.assertEqual(zeocommand.main(['stop'] + args), 0)
            root = state.DataRoot(data)
            fs = root.fs(root.current())
            self.assertEqual(os.path.getsize(fs), 4)
            self.assertEqual(filestorage.saved_index_position(fs), 4)
        self.assertEqual(root.current(), '1')
        self.assertEqual(root.generations.on_disk(), ['1'])
        zeocommand.main(['start', '--data', data] + args)
        client = zeosupport.Client(address)
        self.addCleanup(client.stop)
        client.ask('wait writable')


class SiteTests(unittest.TestCase):

    @support.skip_unless(has_entry_point(),
                         'the site environment has no zc.buildout entry '
                         'point evolve-copy (run "bash dev.sh setup")')
    def test_new_site_first_release_then_evolve_copy_after_rollback(self):
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        port = zeoserver.free_port()
        address = '127.0.0.1:%d' % port
        server = zeoserver.ZEOServer(address, sample.path(
            'var', 'safedeploy-zeo'))
        self.addCleanup(server.stop)
        sample.write('etc/health.py', HEALTH)
        sample.write('etc/after-flip.sh', AFTER_FLIP)
        self.write_evolve(sample, '1.0', '')
        sample.write_config('''\
            extensions = collective.safedeploy
            develop = src/siteevolve
            parts = evolve-copy rollback

            [safedeploy]
            after-flip = sh etc/after-flip.sh %(python)s %(address)s
            health-check = %(python)s etc/health.py %(address)s
            health-timeout = 20

            [zeoserver]
            zeo-address = %(address)s

            [evolve-copy]
            recipe = collective.safedeploy:evolve-copy
            data = var/data
            zeo = zeoserver
            evolve = siteevolve:evolve
            eggs = siteevolve
            # what the example site does: the tag of the release that
            # generated the script
            release = ${buildout:safedeploy-tag}

            [rollback]
            recipe = collective.safedeploy:rollback
            ''' % dict(python=sys.executable, address=address))
        # nothing but the configuration: no var/, no data, no server
        self.assertFalse(os.path.exists(sample.path('var')))
        r = sample.buildout('safedeploy:tag=1.0')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('current -> 1.0', r.output)
        self.assertNotIn('is bad', r.output)
        data = state.DataRoot(sample.path('var', 'data'))
        self.assertEqual(data.current(), '1')
        self.assertTrue(server.pid())
        # release 1.1: a new evolve step
        self.write_evolve(sample, '1.1', STEP_2)
        r = sample.buildout('safedeploy:tag=1.1')
        self.assertEqual(r.returncode, 0, r.output)
        r = support.run([sample.path('bin', 'rollback'), '1.0'],
                        cwd=sample.directory)
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual(os.path.basename(os.readlink(
            sample.path('current'))), '1.0')
        r = support.run([sample.path('bin', 'evolve-copy'), '-q'],
                        cwd=sample.directory)
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual(data.current(), '2')
        server.stop()
        root = read_root(data.fs('2'))
        self.assertEqual(root['evolved_by'], '1.0')   # 1.0's code ran
        self.assertNotIn('step_2', root)
        flipped = [e for e in data.generations.journal.entries()
                   if e['event'] == 'published'][-1]
        self.assertEqual((flipped['name'], flipped['release']), ('2', '1.0'))
        self.assertEqual(data.generations.manifest('2')['release'], '1.0')
        generation, _, _ = pairing.lookup(sample.path('releases'), '1.0')
        self.assertEqual(generation, '2')

    def write_evolve(self, sample, version, more):
        sample.write('src/siteevolve/pyproject.toml', '''\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "siteevolve"
            version = "0.1"

            [tool.setuptools.packages.find]
            where = ["src"]
            ''')
        path = sample.path('src/siteevolve/src/siteevolve/__init__.py')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(textwrap.dedent(EVOLVE % (version, more)))


class RootScriptTests(unittest.TestCase):

    def test_a_script_the_current_release_lacks_is_removed(self):
        from collective.safedeploy.core.store import RELEASE
        from collective.safedeploy.core.store import Store
        from collective.safedeploy.release import lifecycle
        directory = zeosupport.temporary_directory(self, 'safedeploy-root-')
        bin_directory = os.path.join(directory, 'bin')
        gens = Store(os.path.join(directory, 'releases'), RELEASE,
                     current=os.path.join(directory, 'current'))
        scripts = {'1.0': ['rollback'], '1.1': ['evolve-copy', 'rollback']}
        for tag, names in sorted(scripts.items()):
            path = gens.stage(tag)
            os.mkdir(os.path.join(path, 'bin'))
            for name in names:
                with open(os.path.join(path, 'bin', name), 'w') as f:
                    f.write('#!/bin/sh\necho %s %s\n' % (name, tag))
            gens.complete(tag, {'root-bin-directory': bin_directory,
                                'root-scripts': names})
        lifecycle.install_root_scripts(gens, '1.1')
        self.assertEqual(sorted(os.listdir(bin_directory)),
                         ['evolve-copy', 'rollback'])
        with open(os.path.join(bin_directory, 'operator-script'), 'w') as f:
            f.write('mine')
        lifecycle.install_root_scripts(gens, '1.0')
        # 1.1's evolve-copy would run 1.1's evolve code: gone; bin/rollback
        # is 1.0's now; what is not ours stays
        self.assertEqual(sorted(os.listdir(bin_directory)),
                         ['operator-script', 'rollback'])
        with open(os.path.join(bin_directory, 'rollback')) as f:
            self.assertIn('rollback 1.0', f.read())
