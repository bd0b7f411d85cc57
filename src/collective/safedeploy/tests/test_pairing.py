"""A release and the data snapshot taken just before its flip, and
bin/rollback --with-data, on a real buildout with real FileStorage data."""
import json
import os

from . import support
from .base import ReleaseTestCase
from .zodbsupport import commit
from .zodbsupport import hash_tree
from .zodbsupport import make_site_data
from .zodbsupport import transaction_ids


class TestPairing(ReleaseTestCase):

    parts = 'hello snapshot rollback'
    safedeploy = 'snapshot-before-flip = snapshot\n'
    extra = '''
        [snapshot]
        recipe = collective.safedeploy:snapshot
        data = ${buildout:directory}/data
        backend = copy
        '''

    def setUp(self):
        super().setUp()
        make_site_data(self.sample.path('data'), transactions=5, blobs=3)
        # the first release brings bin/snapshot; the site's data is then
        # adopted into generations (the site is stopped)
        self.configure(safedeploy='')
        self.assertReleased(self.release('1.0'), '1.0')
        snapshot = self.sample.path('bin', 'snapshot')
        r = support.run([snapshot, '--adopt'])
        self.assertEqual(r.returncode, 0, r)
        self.configure()
        self.fs = self.sample.path('data', 'current', 'filestorage',
                                   'Data.fs')
        self.blobs = self.sample.path('data', 'current', 'blobstorage')

    def test_the_snapshot_before_a_flip_is_paired_and_restorable(self):
        commit(self.fs, self.blobs, n=2)            # 1.0's data
        tids_10 = transaction_ids(self.fs)
        self.assertReleased(self.release('1.1'), '1.1')
        pairs = [e for e in self.journal() if e['event'] == 'paired']
        self.assertEqual([(p['name'], p['snapshot']) for p in pairs],
                         [('1.1', '1.1')])
        listing = json.loads(support.run(
            [self.sample.path('bin', 'snapshot'), '--list', '--json']).output)
        self.assertIn('1.1', [row['name'] for row in listing])
        commit(self.fs, self.blobs, n=3)            # 1.1 writes
        # without --with-data: code only, and it says which snapshot
        r = self.rollback('1.0')
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('snapshot 1.1 holds the data as it was when 1.0 was '
                      'current', r.output)
        self.assertEqual(self.rollback('1.1').returncode, 0)
        def data():
            return (hash_tree(self.sample.path('data', 'current')),
                    os.readlink(self.sample.path('data', 'current')),
                    sorted(os.listdir(self.sample.path('data',
                                                       'generations'))))
        before = data()
        # restoring would discard 3 transactions: refused, nothing changed
        r = self.rollback('1.0', '--with-data')
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn('3', r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        self.assertEqual(before, data())
        # with consent: code and data back to 1.0's
        r = self.rollback('1.0', '--with-data', '--discard-writes')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        fs = self.sample.path('data', 'current', 'filestorage', 'Data.fs')
        self.assertEqual(transaction_ids(fs), tids_10)
        # what was discarded is kept: the replaced generation
        generations = os.listdir(self.sample.path('data', 'generations'))
        self.assertGreaterEqual(len([g for g in generations
                                     if g.isdigit()]), 2)

    def test_no_snapshot_for_the_target(self):
        r = self.rollback('1.0', '--with-data')
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn('already current', r.output)
        self.assertReleased(self.release('1.1'), '1.1')
        self.configure(safedeploy='')
        self.assertReleased(self.release('1.2'), '1.2')
        r = self.rollback('1.1', '--with-data')
        self.assertEqual(r.returncode, 1, r)
        self.assertIn('no snapshot holds the data of release 1.1', r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.2')
