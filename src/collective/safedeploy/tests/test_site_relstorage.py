"""A site with ``storage = relstorage``, built with a real bin/buildout
(offline, from the wheelhouse) on a PostgreSQL cluster of the test's own:

- release 1.0; its bin/snapshot --adopt makes the site's database data
  generation 1;
- release 1.1 with ``snapshot-before-flip``: bin/buildout takes the
  snapshot holding 1.0's data (generation 2, a database ``site_g2``)
  before the flip, while a writer commits;
- bin/evolve-copy (1.1's evolve) with the writer committing: every
  acknowledged write is in the evolved generation 3;
- bin/rollback 1.0 --with-data: refused without --discard-writes (the
  writes counted, the generation keeping them named), nothing changed;
  with it, code and data are 1.0's: a copy of the snapshot is the site's
  database, generation 3 is kept, the clients' caches are empty;
- bin/snapshot --prune keeps the generations paired with the releases."""
import os
import subprocess
import sys
import tempfile
import unittest

from collective.safedeploy.release import pairing
from collective.safedeploy.tests import pgsupport
from collective.safedeploy.tests import support
from collective.safedeploy.tests.test_evolve_recipe import has_entry_point
from collective.safedeploy.tests import test_site_zeo

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = '''\
    extensions = collective.safedeploy
    develop = src/siteevolve
    parts = snapshot evolve-copy rollback

    [safedeploy]
    index = off
    %(safedeploy)s

    [snapshot]
    recipe = collective.safedeploy:snapshot
    storage = relstorage
    dsn = %(dsn)s
    data = ${buildout:directory}/var/data
    client-cache = ${buildout:directory}/var/cache
    blob-cache = ${buildout:directory}/var/blobcache
    keep = 1

    [evolve-copy]
    recipe = collective.safedeploy:evolve-copy
    storage = ${snapshot:storage}
    dsn = ${snapshot:dsn}
    data = ${snapshot:data}
    client-cache = ${snapshot:client-cache}
    blob-cache = ${snapshot:blob-cache}
    evolve = siteevolve:evolve
    eggs = siteevolve
    release = ${buildout:safedeploy-tag}

    [rollback]
    recipe = collective.safedeploy:rollback
    snapshot = snapshot
    evolve-copy = evolve-copy
    '''


class RelStorageSiteTests(unittest.TestCase):

    @support.skip_unless(has_entry_point(),
                         'the site environment has no zc.buildout entry '
                         'point evolve-copy (run "bash dev.sh setup")')
    def test_release_evolve_copy_and_rollback_with_data(self):
        import transaction
        from BTrees.OOBTree import OOBTree
        from collective.safedeploy.data.relstorage import RelStorageRoot
        cluster = pgsupport.start_cluster(self)
        sample = support.SampleBuildout()
        self.addCleanup(sample.cleanup)
        dsn = cluster.dsn('site')
        root = RelStorageRoot(sample.path('var', 'data'), dsn)
        with root.admin() as cur:
            cur.execute('CREATE DATABASE site')
        cache = tempfile.mkdtemp(prefix='blobs-', dir=sample.directory)
        db = pgsupport.open_db(dsn, cache, create=True)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            conn.root()['writes'] = OOBTree()
            conn.root()['picture'] = pgsupport.blob(b'a picture')
            tm.commit()
            conn.close()
        finally:
            db.close()

        def configure(safedeploy=''):
            sample.write_config(CONFIG % dict(dsn=dsn, safedeploy=safedeploy))

        def run(*args):
            return support.run([sample.path('bin', args[0])] +
                               list(args[1:]), cwd=sample.directory)
        test_site_zeo.SiteTests.write_evolve(self, sample, '1.0', '')
        configure()
        r = sample.buildout('safedeploy:tag=1.0')
        self.assertEqual(r.returncode, 0, r.output)
        r = run('snapshot', '--adopt')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('adopted database site as data generation 1', r.output)

        writer = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'pgsupport.py'), dsn,
             tempfile.mkdtemp(prefix='writer-', dir=sample.directory),
             'false'], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=(
                os.pathsep.join(sys.path))))
        self.addCleanup(lambda: writer.poll() is None and writer.kill())
        acked = []

        def wait_for_writes(n):
            for _ in range(n):
                line = writer.stdout.readline()
                self.assertTrue(line, 'the writer died')
                acked.append(int(line))
        wait_for_writes(3)
        # release 1.1: the snapshot of 1.0's data before the flip
        test_site_zeo.SiteTests.write_evolve(self, sample, '1.1', '')
        configure('snapshot-before-flip = snapshot')
        r = sample.buildout('safedeploy:tag=1.1')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual(support.current_tag(sample.directory), '1.1')
        _, paired, _ = pairing.lookup(sample.path('releases'), '1.0')
        self.assertEqual((paired.snapshot, paired.entry['backend']),
                         ('2', 'relstorage'))
        self.assertEqual(root.current_name(), '1')
        self.assertEqual(root.databases()['site_g2'][0], '2')
        snapshot = root.facts('site_g2')
        self.assertEqual(snapshot['blobs'], 1)
        # bin/evolve-copy with the writer committing
        wait_for_writes(3)
        r = run('evolve-copy')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('read-only window:', r.output)
        self.assertEqual(root.current_name(), '3')
        wait_for_writes(3)              # writes go on, on generation 3
        out, _ = writer.communicate(b'', timeout=60)
        acked += [int(x) for x in out.split()]
        evolved = self.read(root, 'site', cache)
        self.assertEqual(evolved['evolved_by'], '1.1')
        self.assertEqual(set(acked) - set(evolved['writes']), set(),
                         'acknowledged writes lost')
        # the clients' caches, that a rollback with data must drop
        os.makedirs(sample.path('var', 'cache'), exist_ok=True)
        client_cache = sample.path('var', 'cache', 'site.rscache')
        open(client_cache, 'w').close()
        before = root.databases()

        # without consent: refused, nothing changed
        r = run('rollback', '1.0', '--with-data')
        self.assertEqual(r.returncode, 1, r.output)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertNotIn('Traceback', r.output)
        lost = len(set(evolved['writes']) - set(self.read(
            root, 'site_g2', cache)['writes']))
        self.assertGreater(lost, 0)
        self.assertIn('restoring data generation 2 would discard at least',
                      r.output)
        self.assertIn('kept in data generation 3', r.output)
        self.assertIn('--discard-writes', r.output)
        self.assertTrue(r.last_line.startswith('rollback: error: '), r.output)
        self.assertTrue(r.last_line.endswith(
            '; current still points to 1.1; the data was not changed '
            '(generation 3)'), r.output)
        self.assertEqual(support.current_tag(sample.directory), '1.1')
        self.assertEqual(root.databases(), before)
        self.assertEqual(root.current_name(), '3')
        self.assertTrue(os.path.exists(client_cache))

        # with consent: code and data are 1.0's
        r = run('rollback', '1.0', '--with-data', '--discard-writes')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('data restored from snapshot 2', r.output)
        self.assertEqual(support.current_tag(sample.directory), '1.0')
        self.assertEqual(root.current_name(), '4')
        self.assertEqual(root.databases()['site'][0], '4')
        restored = self.read(root, 'site', cache)
        self.assertNotIn('evolved_by', restored)
        self.assertEqual(restored['writes'], self.read(
            root, 'site_g2', cache)['writes'])
        self.assertEqual(restored['picture'], b'a picture')
        self.assertEqual(root.facts('site')['last_tid'],
                         snapshot['last_tid'])
        self.assertFalse(os.path.exists(client_cache))
        # what was discarded is kept
        self.assertEqual(self.read(root, 'site_g3', cache)['writes'],
                         evolved['writes'])
        generation, _, _ = pairing.lookup(sample.path('releases'), '1.0')
        self.assertEqual(generation, '4')
        # pruning to keep = 1 keeps what a release still there is paired
        # with: 1.0's snapshot (2) and the generation 1.1 ran on (3)
        r = run('snapshot', '--prune')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual(r.lines, ['pruned data generation 1'])
        self.assertEqual(sorted(root.databases()),
                         ['site', 'site_g2', 'site_g3'])

    def read(self, root, dbname, cache):
        """The writes, blob and evolve mark of database ``dbname``."""
        import transaction
        from collective.safedeploy.data.relstorage import make_dsn
        db = pgsupport.open_db(make_dsn(root.params, dbname),
                               tempfile.mkdtemp(dir=cache))
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            r = conn.root()
            with r['picture'].open() as f:
                picture = f.read()
            result = dict(writes=dict(r['writes'].items()), picture=picture)
            if 'evolved_by' in r:
                result['evolved_by'] = r['evolved_by']
            tm.abort()
            conn.close()
            return result
        finally:
            db.close()
