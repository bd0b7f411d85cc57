"""A release and the data snapshot taken just before its flip, and
bin/rollback --with-data, on a real buildout with real FileStorage data."""
import json
import os

from collective.safedeploy.release import pairing

from . import support
from .base import ReleaseTestCase
from .zeosupport import FUNCTION
from .zodbsupport import commit
from .zodbsupport import hash_tree
from .zodbsupport import make_site_data
from .zodbsupport import open_db
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
        pairs = [p for p in pairing.entries(self.sample.path('releases'))
                 if p.snapshot]
        # snapshot 1.1, taken just before 1.1 was flipped in, holds 1.0's
        # data
        self.assertEqual([(p.release, p.snapshot) for p in pairs],
                         [('1.0', '1.1')])
        listing = json.loads(support.run(
            [self.sample.path('bin', 'snapshot'), '--list', '--json']).output)
        self.assertIn('1.1', [row['name'] for row in listing])
        # what bin/rollback 1.0 --with-data restores is not destroyed by
        # mistake (bin/snapshot knows the releases from the recipe)
        r = support.run([self.sample.path('bin', 'snapshot'), '--destroy',
                         '1.1'])
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn('snapshot 1.1 is paired with releases 1.0, 1.1, still '
                      'in %s (bin/rollback 1.0 --with-data restores it)'
                      % self.sample.path('releases'), r.output)
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
        # restoring would discard 3 transactions: refused, nothing changed;
        # the dry run says the same
        r = self.rollback('1.0', '--with-data')
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn('would discard 3 transaction(s)', r.output)
        dry = self.rollback('1.0', '--with-data', '--dry-run')
        self.assertEqual(dry.returncode, 1, dry)
        self.assertEqual(len(dry.lines), 1, dry.output)
        self.assertTrue(r.lines[0].startswith(dry.lines[0]), (dry, r))
        dry = self.rollback('1.0', '--with-data', '--discard-writes', '-n')
        self.assertEqual(dry.returncode, 0, dry)
        self.assertIn('data would be restored from snapshot 1.1 (3 '
                      'transaction(s) would be discarded', dry.output)
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


class TestAllOrNothing(ReleaseTestCase):
    """bin/rollback TAG --with-data: when the code side fails after the
    data was restored, the data goes back too, and the one line says where
    code and data are."""

    parts = TestPairing.parts
    extra = TestPairing.extra
    check = 'health-check = test ! -e broken\nhealth-timeout = 1\n'

    def test_a_failing_health_gate_puts_the_data_back(self):
        make_site_data(self.sample.path('data'), transactions=5, blobs=3)
        self.configure(safedeploy=self.check)
        self.assertReleased(self.release('1.0'), '1.0')
        r = support.run([self.sample.path('bin', 'snapshot'), '--adopt'])
        self.assertEqual(r.returncode, 0, r)
        self.configure(safedeploy=self.check +
                       'snapshot-before-flip = snapshot\n')
        self.assertReleased(self.release('1.1'), '1.1')
        fs = self.sample.path('data', 'current', 'filestorage', 'Data.fs')
        commit(fs, self.sample.path('data', 'current', 'blobstorage'), n=2)
        link = self.sample.path('data', 'current')
        before = (os.readlink(link), hash_tree(link))
        with open(self.sample.path('broken'), 'w'):
            pass          # release 1.0 will not pass its health check now
        r = support.run([self.sample.path('bin', 'rollback'), '1.0',
                         '--with-data', '--discard-writes'],
                        cwd=self.sample.directory, split=True)
        self.assertEqual(r.returncode, 1, r)
        last = r.errors.strip().splitlines()[-1]
        self.assertTrue(last.startswith('rollback: error: release 1.0 is '
                                        'bad: '), r)
        self.assertTrue(last.endswith(
            '; current flipped back to 1.1; data current back on generation '
            '%s (generation 2 kept)' % os.path.basename(before[0])), r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        self.assertEqual((os.readlink(link), hash_tree(link)), before)
        generation, _, _ = pairing.lookup(self.sample.path('releases'),
                                          '1.1')
        self.assertEqual(generation, os.path.basename(before[0]))


class TestEvolvePairing(ReleaseTestCase):
    """bin/rollback to a release that ran on the data generation before
    bin/evolve-copy switched it: the data goes back too, and writes made
    since the switch are only discarded with consent (and kept)."""

    parts = 'hello snapshot evolve-copy rollback'
    extra = '''
        [snapshot]
        recipe = collective.safedeploy:snapshot
        data = ${buildout:directory}/data
        backend = copy

        [evolve-copy]
        recipe = collective.safedeploy:evolve-copy
        data = ${snapshot:data}
        evolve = collective.safedeploy.tests.evolve_example.function:noop
        freeze-command = true
        thaw-command = true

        [rollback]
        recipe = collective.safedeploy:rollback
        evolve-copy = evolve-copy
        '''

    def test_rollback_switches_the_data_back(self):
        make_site_data(self.sample.path('data'), transactions=5, blobs=3)
        self.configure()
        self.assertReleased(self.release('1.0'), '1.0')
        self.assertEqual(support.run([self.sample.path('bin', 'snapshot'),
                                      '--adopt']).returncode, 0)
        data = self.sample.path('data')
        before_gen = os.readlink(os.path.join(data, 'current'))
        fs = os.path.join(data, 'current', 'filestorage', 'Data.fs')
        blobs = os.path.join(data, 'current', 'blobstorage')
        tids_10 = transaction_ids(fs)
        self.assertReleased(self.release('1.1'), '1.1')
        r = support.run([self.sample.path('bin', 'evolve-copy')])
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('read-only window:', r.output)
        evolved_gen = os.readlink(os.path.join(data, 'current'))
        self.assertNotEqual(before_gen, evolved_gen)
        commit(fs, blobs, n=2)          # 1.1 writes on the evolved data
        state = (os.readlink(os.path.join(data, 'current')),
                 hash_tree(os.path.join(data, 'current')))
        r = self.rollback('1.0')
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(len(r.lines), 1, r.output)
        self.assertIn('2 transactions were committed', r.output)
        self.assertIn('--discard-writes', r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.1')
        self.assertEqual(state, (os.readlink(os.path.join(data, 'current')),
                                 hash_tree(os.path.join(data, 'current'))))
        r = self.rollback('1.0', '--discard-writes')
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertEqual(os.readlink(os.path.join(data, 'current')),
                         before_gen)
        self.assertEqual(transaction_ids(fs), tids_10)
        # the abandoned generation is kept
        self.assertTrue(os.path.isdir(os.path.join(
            data, os.path.dirname(before_gen), os.path.basename(evolved_gen))))

    def prune_the_evolved_generation(self):
        """The operator's sequence: releases 1.0 and 1.1 both run on data
        generation 1; bin/evolve-copy with an evolve of three commits
        (generation 2), then twice with keep-generations = 1 and nothing
        left to evolve (3, 4): generation 2, which holds the evolve's
        commits, is pruned.  Returns the data root."""
        import transaction
        from .evolve_example import model
        data = self.sample.path('data')
        os.makedirs(os.path.join(data, 'filestorage'))
        db = open_db(os.path.join(data, 'filestorage', 'Data.fs'),
                     os.path.join(data, 'blobstorage'))
        with db.transaction() as conn:
            model.make_site(conn.root(), 3)
        db.close()
        transaction.abort()
        self.configure()
        self.assertReleased(self.release('1.0'), '1.0')
        self.assertEqual(support.run([self.sample.path('bin', 'snapshot'),
                                      '--adopt']).returncode, 0)
        self.assertReleased(self.release('1.1'), '1.1')
        evolve_copy = self.sample.path('bin', 'evolve-copy')
        r = support.run([evolve_copy, '--evolve', FUNCTION,
                         '--keep-generations', '0'])
        self.assertEqual(r.returncode, 0, r.output)
        generations = os.path.join(data, 'generations')
        with open(os.path.join(generations, '2',
                               'safedeploy-manifest.json')) as f:
            self.assertEqual(len(json.load(f)['steps']), 3)
        for name in ('3', '4'):
            r = support.run([evolve_copy, '--keep-generations', '1'])
            self.assertEqual(r.returncode, 0, r.output)
            self.assertEqual(os.readlink(os.path.join(data, 'current')),
                             os.path.join('generations', name))
        self.assertIn('pruned data generation(s) 2', r.output)
        self.assertFalse(os.path.exists(os.path.join(generations, '2')))
        self.assertTrue(os.path.isdir(os.path.join(generations, '1')))
        return data

    def forget_frozen_tids(self, data):
        """The data journal as it was written before it recorded where
        each evolve-copy's own transactions began."""
        path = os.path.join(data, 'generations', '.journal')
        with open(path) as f:
            entries = [json.loads(line) for line in f]
        with open(path, 'w') as f:
            for entry in entries:
                entry.pop('frozen_tid', None)
                f.write(json.dumps(entry) + '\n')

    def test_the_evolves_commits_in_a_pruned_generation_are_not_writes(self):
        data = self.prune_the_evolved_generation()
        self.rollback_without_writes(data)
        # where the pruned generation's evolve began, in the journal
        with open(os.path.join(data, 'generations', '.journal')) as f:
            switched = [e for e in map(json.loads, f)
                        if e.get('via') == 'evolve-copy']
        self.assertEqual([(e['name'], bool(e.get('frozen_tid')))
                          for e in switched],
                         [('2', True), ('3', True), ('4', True)])

    def test_the_same_with_the_journal_of_an_earlier_version(self):
        # the operator's site: its generations were switched and pruned
        # before the journal recorded the frozen transaction; the source
        # generation, still there, says it
        data = self.prune_the_evolved_generation()
        self.forget_frozen_tids(data)
        self.rollback_without_writes(data)

    def rollback_without_writes(self, data):
        # nobody wrote: the only transactions generation 1 lacks are the
        # evolve's, committed in the pruned generation 2
        r = self.rollback('1.0', '--dry-run')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertEqual(r.output.strip().splitlines()[-1],
                         'would roll back: current 1.1 -> 1.0; data would '
                         'be switched back to generation 1')
        r = self.rollback('1.0')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('data switched back to generation 1 (0 '
                      'transaction(s) discarded', r.output)
        self.assertEqual(support.current_tag(self.sample.directory), '1.0')
        self.assertEqual(os.readlink(os.path.join(data, 'current')),
                         os.path.join('generations', '1'))

    def test_writes_across_a_pruned_generation_dry_run_refuses_too(self):
        data = self.prune_the_evolved_generation()
        db = open_db(os.path.join(data, 'current', 'filestorage', 'Data.fs'),
                     os.path.join(data, 'current', 'blobstorage'))
        for docid in (10, 11):          # 1.1 writes on the evolved data
            with db.transaction() as conn:
                conn.root()['site'].add(docid, 'written', b'new')
        db.close()
        # the clients' two writes count, the evolve's three do not; the
        # dry run refuses what the run refuses, in the same words
        refusal = ('rollback: error: 2 transactions were committed in data '
                   'generation 4 that generation 1 does not hold; going back '
                   'to 1 discards them: run again with --discard-writes '
                   '(generation 4 is kept)')
        for args in (('--dry-run',), ()):
            r = self.rollback('1.0', *args)
            self.assertEqual(r.returncode, 1, r.output)
            self.assertEqual(len(r.lines), 1, r.output)
            self.assertTrue(r.output.startswith(refusal), r.output)
            self.assertEqual(support.current_tag(self.sample.directory),
                             '1.1')
        r = self.rollback('1.0', '--dry-run', '--discard-writes')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('data would be switched back to generation 1 (2 '
                      'transaction(s) would be discarded, kept in generation '
                      '4)', r.output)
        r = self.rollback('1.0', '--discard-writes')
        self.assertEqual(r.returncode, 0, r.output)
        self.assertIn('data switched back to generation 1 (2 transaction(s) '
                      'discarded, kept in generation 4)', r.output)
        self.assertEqual(os.readlink(os.path.join(data, 'current')),
                         os.path.join('generations', '1'))
