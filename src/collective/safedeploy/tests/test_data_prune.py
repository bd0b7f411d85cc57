"""Data generations are pruned like releases: ``keep-generations``, never
the current one, the one a kept release ran on, nor one holding writes a
restore discarded; failed and killed copies first.

Twenty evolve-copy runs and ten restores in a row, in-process against a
real ZEO server and real FileStorages (a tiny database)."""
import io
import json
import os
import time

from collective.safedeploy.core.store import RELEASE
from collective.safedeploy.core.store import Store
from collective.safedeploy.data import snapshot
from collective.safedeploy.data.backends.base import disk_usage
from collective.safedeploy.data.retention import writes_only_in
from collective.safedeploy.evolve import procedure
from collective.safedeploy.release import pairing
from collective.safedeploy.tests import zeosupport
from collective.safedeploy.tests.test_evolve_copy import EvolveCopyTestCase

KEEP = 3


class PruneTests(EvolveCopyTestCase):

    documents = 2

    def setUp(self):
        super().setUp()
        self.releases = os.path.join(self.dir, 'releases')
        self.release_store = Store(self.releases, RELEASE)
        self.options = dict(data=self.data.path, backend='copy', keep='50',
                            keep_generations=str(KEEP),
                            releases=self.releases)

    def make_release(self, tag):
        """A complete release ``tag`` paired with the current data."""
        self.release_store.stage(tag)
        self.release_store.complete(tag, dict(tag=tag))
        pairing.record(self.releases, tag, 'publish',
                       generation=self.data.current())

    def evolve(self, release=None):
        out = io.StringIO()
        procedure.EvolveCopy(
            self.data.path, zeosupport.FUNCTION, self.server.control,
            release=release, out=out, progress=False,
            releases=self.releases, keep=KEEP).run()
        return out.getvalue()

    def killed_copy(self):
        """What an evolve-copy killed in prepare leaves: a staged copy."""
        gens = self.data.generations
        name = self.data.next_name()
        with self.data.lock():
            gens.stage(name, source=self.data.current(),
                       evolve=zeosupport.FUNCTION)
        return name

    def on_disk(self):
        return self.data.generations.on_disk()

    def rows(self):
        return {r['name']: r for r in snapshot.generations_listing(
            self.options)}

    def test_evolve_copies_and_restores_stay_within_keep(self):
        started = time.monotonic()
        self.make_release('1.0')          # runs on generation 1
        sizes = []
        for i in range(20):
            if i == 5:
                self.make_release('1.1')  # the data evolved for it next
            if i == 10:
                killed = self.killed_copy()
            out = self.evolve(release='1.1' if i >= 5 else None)
            gens = self.on_disk()
            # the current one, generation 1 (release 1.0 ran on it) and
            # at most KEEP in all besides it
            self.assertIn(self.data.current(), gens, out)
            self.assertIn('1', gens)
            self.assertLessEqual(len(gens), KEEP + 1, (i, gens, out))
            sizes.append(disk_usage(self.data.generations.directory)[1])
        # disk use is bounded: the last runs hold no more than the earlier
        self.assertLessEqual(max(sizes[10:]), max(sizes[3:10]) * 1.5)
        current = self.data.current()
        order = self.data.generations.order()
        kept = set(self.on_disk())
        # exactly: current, the one before it, and 1.0's generation, and
        # the 1.1 one it is (current) -- the failed run's copy is gone
        self.assertEqual(kept, {current, order[order.index(current) - 1],
                                '1'})
        rows = self.rows()
        self.assertEqual(rows['1']['kept'], 'release 1.0 ran on it')
        self.assertEqual(rows[current]['kept'], 'current')
        self.assertEqual(rows[current]['made'], 'evolve-copy')
        self.assertEqual(rows[current]['release'], '1.1')
        pruned = [e for e in self.data.generations.journal.entries()
                  if e['event'] == 'pruned']
        self.assertIn(killed, [e['name'] for e in pruned
                               if 'failed' in e['reason']])
        # a rollback to either kept release finds its data
        for tag in ('1.0', '1.1'):
            generation, _, _ = pairing.lookup(self.releases, tag)
            self.assertTrue(self.data.generations.is_complete(generation),
                            tag)

        # ten restores in a row: the generation replaced by a restore
        # that discarded writes is kept until told otherwise
        taken = snapshot.create(self.options, 'base')
        client = zeosupport.Client(self.server.address)
        self.addCleanup(client.stop)
        holder = None
        for i in range(10):
            discard = (i == 3)
            if discard:
                client.ask('wait writable')
                self.assertTrue(client.ask('write').startswith('ok'))
                holder = self.data.current()
            self.server.stop()
            result = snapshot.restore(self.options, 'base',
                                      discard_writes=discard)
            self.server.control.thaw(self.data.dir(self.data.current()))
            gens = self.on_disk()
            self.assertEqual(result['generation'], self.data.current())
            self.assertIn('1', gens)
            if holder:
                self.assertIn(holder, gens)
                self.assertEqual(writes_only_in(self.data.generations,
                                                holder), 1)
            self.assertLessEqual(len(gens), KEEP + 2, (i, gens))
        self.assertEqual(taken['name'], 'base')
        rows = self.rows()
        self.assertIn('discarded', rows[holder]['kept'])
        self.assertEqual(rows[holder]['discarded_writes'], 1)
        # the listing says what the next prune does: nothing now
        self.assertTrue(all(r['kept'] for r in rows.values()), rows)
        # the operator lets the discarded writes go
        removed = snapshot.prune_generations(self.options,
                                             discard_writes=True)
        self.assertEqual(removed, [holder])
        self.assertEqual(len(self.on_disk()), KEEP + 1)
        print('\n  %d evolve-copy runs, 10 restores: %.1f s' % (
            20, time.monotonic() - started))

    def test_the_listing_never_acts(self):
        for i in range(KEEP + 2):
            self.evolve()
        before = self.on_disk()
        self.assertEqual(len(before), KEEP)
        code, out = self.command('--list', '--generations', '--json')
        self.assertEqual(code, 0, out)
        rows = json.loads(out)
        self.assertEqual([r['name'] for r in rows], before)
        self.assertEqual(self.on_disk(), before)
        code, out = self.command('--list', '--generations')
        self.assertEqual(code, 0, out)
        self.assertIn('KEPT BECAUSE', out.splitlines()[0])
        self.assertIn('within keep-generations=3', out)
        code, out = self.command('--prune', '--keep-generations', '1')
        self.assertEqual(code, 0, out)
        # the current one and the previous good one are never pruned
        self.assertEqual(len(self.on_disk()), 2, out)
        code, out = self.command('--generations')
        self.assertEqual(code, 2)
        self.assertIn('--generations goes with --list', out)

    def command(self, *argv):
        import contextlib
        out = io.StringIO()
        with contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(out):
            try:
                code = snapshot.main(list(argv), data=self.data.path,
                                     backend='copy')
            except SystemExit as e:
                code = e.code
        return code, out.getvalue()
