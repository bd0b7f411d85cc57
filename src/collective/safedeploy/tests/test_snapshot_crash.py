"""SIGKILL at random moments of bin/snapshot create and restore.

After every kill: production data is byte-identical (create) or equal to
what it was or to the snapshot (restore); ``DATA/current`` resolves to a
complete generation; complete generations never change.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from collective.safedeploy.data.layout import DataRoot
from collective.safedeploy.tests import zodbsupport as zs
from collective.safedeploy.tests.snapshotsupport import make_data_root
from collective.safedeploy.tests.snapshotsupport import run_snapshot

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
ROUNDS = int(os.environ.get('SAFEDEPLOY_CRASH_ROUNDS', '20'))
SCRIPT = ('import sys; from collective.safedeploy.data.snapshot import main; '
          'sys.exit(main(sys.argv[3:], data=sys.argv[1], '
          'backend=sys.argv[2], keep_generations="0"))')


class KillTests(unittest.TestCase):

    backend = 'copy'

    def setUp(self):
        self.data = make_data_root(self.data_directory(),
                                   transactions=30, blobs=30)
        self.root = DataRoot(self.data)
        self.random = random.Random(os.environ.get('SAFEDEPLOY_SEED'))

    def data_directory(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-kill-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        return os.path.join(self.dir, 'var')

    def snapshots_directory(self):
        return os.path.join(self.data, 'snapshots')

    def start(self, *argv):
        env = dict(os.environ, PYTHONPATH=SRC)
        return subprocess.Popen(
            [sys.executable, '-c', SCRIPT, self.data, self.backend] +
            list(argv),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def duration(self, *argv):
        t = time.time()
        p = self.start(*argv)
        self.assertEqual(p.wait(), 0)
        return time.time() - t

    def moments(self, rounds, duration):
        """When to kill each of ``rounds`` runs lasting ``duration``: one
        moment in each slice of it (support.spread)."""
        return (f * duration for f in support.spread(rounds, self.random))

    def kill_after(self, argv, delay):
        p = self.start(*argv)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def complete_generations(self):
        gens = self.root.generations
        return {name: zs.hash_tree(gens.path(name))
                for name in gens.on_disk() if gens.is_complete(name)}

    def check_current(self):
        name = self.root.current_name()
        self.assertTrue(self.root.generations.is_complete(name), name)
        return name

    def current_state(self):
        return zs.read_all(
            os.path.join(self.data, 'current', 'filestorage', 'Data.fs'),
            os.path.join(self.data, 'current', 'blobstorage'))

    def snapshot_options(self):
        return dict(data=self.data, backend=self.backend, keep_generations='0')

    def kill_creates_then_take_one(self):
        """ROUNDS creates killed at random moments (production unchanged,
        current complete after each), then one that must succeed."""
        production = self.complete_generations()
        moments = self.moments(ROUNDS, self.duration('warmup'))
        for i in range(ROUNDS):
            self.kill_after(['s%d' % i], next(moments))
            self.check_current()
            self.assertEqual(self.complete_generations(), production)
        code, out, err = run_snapshot('last', **self.snapshot_options())
        self.assertEqual(code, 0, err)

    def test_kill_create(self):
        self.kill_creates_then_take_one()
        # what killed runs left is gone; every snapshot left verifies
        from collective.safedeploy.data import verify as fsverify
        left = [n for n in os.listdir(self.snapshots_directory())
                if not n.startswith('.') and not n.endswith('.json')]
        code, out, err = run_snapshot('--list', '--json',
                                      **self.snapshot_options())
        listed = [r['name'] for r in __import__('json').loads(out)]
        self.assertEqual(sorted(left), sorted(listed))
        for name in listed:
            path = self.snapshot_generation(name)
            fsverify.verify(os.path.join(path, 'filestorage', 'Data.fs'),
                            os.path.join(path, 'blobstorage'))

    def snapshot_generation(self, name):
        """A copy snapshot's files, exported (its bytes are in the pool)."""
        target = os.path.join(self.dir, 'export-%s' % name)
        if not os.path.exists(target):
            code, out, err = run_snapshot('--export', name, target,
                                          **self.snapshot_options())
            self.assertEqual(code, 0, err)
        return target

    def test_kill_append(self):
        """Creates killed while they append production's new transactions
        to the pool: every earlier snapshot stays verifiable, and the
        half-appended tail is cut by the next run."""
        from collective.safedeploy.data.backends.copy import CopyBackend
        from collective.safedeploy.data.snapshot import Config
        fs = os.path.join(self.data, 'current', 'filestorage', 'Data.fs')
        blobs = os.path.join(self.data, 'current', 'blobstorage')
        self.duration('first')
        zs.commit(fs, blobs, n=20)
        duration = self.duration('second')
        backend = CopyBackend(Config(**self.snapshot_options()))
        pool = backend.pool.fs_path('filestorage/Data.fs', 1)
        cut = 0
        moments = self.moments(ROUNDS // 2, duration)
        for i in range(ROUNDS // 2):
            zs.commit(fs, blobs, n=20)
            self.kill_after(['k%d' % i], next(moments))
            ends = [r['pool'][0]['end'] for r in backend.snapshots()]
            cut += os.path.getsize(pool) > max(ends)
        code, out, err = run_snapshot('last', **self.snapshot_options())
        self.assertEqual(code, 0, err)
        rows = backend.snapshots()
        self.assertEqual(os.path.getsize(pool), rows[-1]['pool'][0]['end'])
        self.assertEqual(rows[-1]['pool'][0]['file'], 1)
        history = zs.transaction_ids(fs)
        from collective.safedeploy.data import verify as fsverify
        for row in rows:
            entry = backend.store.manifest(row['name'])['storages'][0]
            backend.pool.check_chain(pool, entry)
            path = self.snapshot_generation(row['name'])
            copy = os.path.join(path, 'filestorage', 'Data.fs')
            tids = zs.transaction_ids(copy)
            self.assertEqual(tids, history[:len(tids)])
            fsverify.verify(copy, os.path.join(path, 'blobstorage'),
                            expected_tid=bytes.fromhex(row['last_tid']))
        # the newest, restored: its pool file and its tree as they are,
        # exactly the snapshot (no blob a killed create linked past it)
        path = self.snapshot_generation('last')
        code, out, err = run_snapshot('--restore', 'last', '--discard-writes',
                                      **self.snapshot_options())
        self.assertEqual(code, 0, err)
        self.assertEqual(os.stat(fs).st_ino, os.stat(pool).st_ino)
        from collective.safedeploy.data import copy as fscopy
        self.assertEqual(sorted(fscopy.blob_files(blobs)), sorted(
            fscopy.blob_files(os.path.join(path, 'blobstorage'))))
        self.assertEqual(zs.read_all(fs, blobs), zs.read_all(
            os.path.join(path, 'filestorage', 'Data.fs'),
            os.path.join(path, 'blobstorage')))
        print('(%d of %d killed creates left a tail to cut)'
              % (cut, ROUNDS // 2), end=' ')

    def test_kill_restore(self):
        code, out, err = run_snapshot('s', **self.snapshot_options())
        self.assertEqual(code, 0, err)
        snapshot_state = self.current_state()
        zs.commit(os.path.join(self.data, 'current', 'filestorage',
                               'Data.fs'),
                  os.path.join(self.data, 'current', 'blobstorage'), n=3)
        states = [self.current_state(), snapshot_state]
        moments = self.moments(ROUNDS, self.duration(
            '--restore', 's', '--discard-writes'))
        for i in range(ROUNDS):
            before = self.complete_generations()
            self.kill_after(['--restore', 's', '--discard-writes'],
                            next(moments))
            self.check_current()
            self.assertIn(self.current_state(), states)
            after = self.complete_generations()
            for name, tree in before.items():
                self.assertEqual(after[name], tree, name)
        code, out, err = run_snapshot('--restore', 's', '--discard-writes',
                                      **self.snapshot_options())
        self.assertEqual(code, 0, err)
        self.assertEqual(self.current_state(), snapshot_state)
        # what killed restores left half-copied is gone
        gens = self.root.generations
        self.assertEqual([n for n in gens.on_disk()
                          if not gens.is_complete(n)], [])

    def test_interrupt_restore(self):
        """Ctrl-C at any moment of a restore: the generation it was
        making is gone with it, not left for the next run.  (A database of
        some megabytes, and a snapshot older than the newest: its Data.fs
        is copied, long enough to be interrupted.)"""
        if self.backend == 'zfs':
            self.skipTest('a zfs restore is a zfs rollback of the dataset: '
                          'it makes no data generation to leave behind '
                          '(test_kill_restore covers it)')
        current = os.path.join(self.data, 'current')
        zs.make_site_data(current, transactions=1500, blobs=0, history=30)
        for name in ('s', 'newer'):
            zs.commit(os.path.join(current, 'filestorage', 'Data.fs'),
                      os.path.join(current, 'blobstorage'), n=3)
            code, out, err = run_snapshot(name, **self.snapshot_options())
            self.assertEqual(code, 0, err)
        argv = ['--restore', 's', '--discard-writes']
        rounds = 12
        moments = self.moments(rounds, self.duration(*argv))
        gens = self.root.generations
        for i in range(rounds):
            p = self.start(*argv)
            time.sleep(next(moments))
            p.send_signal(signal.SIGINT)
            p.wait()
            self.check_current()
            self.assertEqual([n for n in os.listdir(gens.directory)
                              if n.endswith('.staging.tmp')], [], i)


from collective.safedeploy.tests import support  # noqa: E402
from collective.safedeploy.tests.test_snapshot_btrfs import CAN_BTRFS  # noqa
from collective.safedeploy.tests.test_snapshot_btrfs import WHY  # noqa
from collective.safedeploy.tests.test_snapshot_btrfs import mount_btrfs  # noqa


@support.skip_unless(CAN_BTRFS, WHY)
class BtrfsKillTests(KillTests):

    backend = 'btrfs'

    def data_directory(self):
        return mount_btrfs(self)

    def snapshots_directory(self):
        return os.path.join(self.data, '.snapshots')

    def snapshot_generation(self, name):
        return os.path.join(self.snapshots_directory(), name, 'current')

    test_kill_append = None   # the pool is the copy backend's


from collective.safedeploy.tests.test_snapshot_zfs import CAN_ZFS  # noqa
from collective.safedeploy.tests.test_snapshot_zfs import WHY as ZFS_WHY  # noqa
from collective.safedeploy.tests.test_snapshot_zfs import make_pool  # noqa


@support.skip_unless(CAN_ZFS, ZFS_WHY)
class ZfsKillTests(KillTests):
    """zfs snapshot / verification clone / zfs set killed at random."""

    backend = 'zfs'

    def data_directory(self):
        pool, site = make_pool(self)
        self.dataset = pool + '/site'
        return site

    def start(self, *argv):
        return super().start(*(list(argv) + ['--dataset', self.dataset]))

    def snapshot_options(self):
        return dict(super().snapshot_options(), dataset=self.dataset)

    def test_kill_create(self):
        self.kill_creates_then_take_one()
        # no verification clone is left, every listed snapshot verified
        import subprocess as sp
        names = sp.run(['zfs', 'list', '-H', '-o', 'name', '-t', 'all'],
                       stdout=sp.PIPE, text=True).stdout.split()
        self.assertEqual([n for n in names if '-verify-' in n], [])
        code, out, err = run_snapshot('--list', '--json',
                                      **self.snapshot_options())
        listed = [r['name'] for r in __import__('json').loads(out)]
        ours = [n.partition('@')[2] for n in names
                if n.startswith(self.dataset + '@')]
        self.assertEqual(sorted(listed), sorted(ours))

    test_kill_restore = None   # zfs rollback is one command; see above
    test_kill_append = None    # the pool is the copy backend's


class ExportKillTests(unittest.TestCase):
    """bin/snapshot --export NAME DIR killed while it writes: the staging
    directory it leaves beside DIR is removed by the next export (to any
    directory) or snapshot, and nothing else is."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-kill-export-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = make_data_root(os.path.join(self.dir, 'var'),
                                   transactions=5, blobs=50)
        big_transactions(os.path.join(self.data, 'current', 'filestorage',
                                      'Data.fs'),
                         os.path.join(self.data, 'current', 'blobstorage'))
        self.options = dict(data=self.data, backend='copy')
        self.ok('s1')
        self.out = os.path.join(self.dir, 'out')
        os.mkdir(self.out)

    def ok(self, *argv):
        code, out, err = run_snapshot(*argv, **self.options)
        self.assertEqual(code, 0, out + err)
        return err

    def kill_export(self, name):
        """An export into out/NAME killed once it has begun to write the
        Data.fs; the staging directory it left."""
        target = os.path.join(self.out, name)
        staging = os.path.join(self.out, '.%s.exporting' % name)
        p = subprocess.Popen(
            [sys.executable, '-c', SCRIPT, self.data, 'copy', '--export',
             's1', target], env=dict(os.environ, PYTHONPATH=SRC),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not any('Data.fs' in files for _, _, files in os.walk(staging)):
            self.assertIsNone(p.poll(), 'the export ended before it was '
                              'killed (make the database bigger)')
            self.assertLess(time.time(), deadline)
            time.sleep(0.001)
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.assertTrue(os.path.isdir(staging))
        self.assertFalse(os.path.lexists(target))
        return staging

    def test_what_a_killed_export_leaves_is_removed_by_the_next_run(self):
        # what is not ours, beside it, stays: a directory named like a
        # staging one, and the leftover of an export by an earlier version
        # (not recorded, not marked)
        decoy = os.path.join(self.out, '.mine.exporting')
        os.mkdir(decoy)
        with open(os.path.join(decoy, 'Data.fs'), 'w') as f:
            f.write('not ours')
        left = self.kill_export('a')
        # the next export, to another directory, removes it, says so, and
        # works
        err = self.ok('--export', 's1', os.path.join(self.out, 'b'))
        self.assertFalse(os.path.lexists(left))
        self.assertIn('removed %s, left by an export of snapshot s1 that '
                      'was killed' % left, err)
        self.assertEqual(sorted(os.listdir(self.out)), ['.mine.exporting',
                                                        'b'])
        # and its record: the data root is as an export that ended leaves it
        self.assertFalse(os.path.lexists(os.path.join(
            self.data, 'generations', '.exports')))
        exported = zs.read_all(os.path.join(self.out, 'b', 'filestorage',
                                            'Data.fs'),
                               os.path.join(self.out, 'b', 'blobstorage'))
        # the next snapshot removes one too; exporting to the killed
        # export's DIR then works
        left = self.kill_export('a')
        self.ok('s2')
        self.assertFalse(os.path.lexists(left))
        self.ok('--export', 's1', os.path.join(self.out, 'a'))
        self.assertEqual(zs.read_all(
            os.path.join(self.out, 'a', 'filestorage', 'Data.fs'),
            os.path.join(self.out, 'a', 'blobstorage')), exported)
        self.assertEqual(sorted(os.listdir(self.out)), ['.mine.exporting',
                                                        'a', 'b'])
        with open(os.path.join(decoy, 'Data.fs')) as f:
            self.assertEqual(f.read(), 'not ours')
        # a staging directory nothing recorded is refused, not removed
        os.rename(decoy, os.path.join(self.out, '.c.exporting'))
        code, out, err = run_snapshot('--export', 's1', os.path.join(
            self.out, 'c'), **self.options)
        self.assertEqual(code, 1)
        self.assertIn('.c.exporting exists and is not a staging directory '
                      'of ours', err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertTrue(os.path.exists(os.path.join(
            self.out, '.c.exporting', 'Data.fs')))
        self.assertFalse(os.path.lexists(os.path.join(self.out, 'c')))


def big_transactions(fs_path, blob_dir, n=10, size=4 << 20):
    """``n`` transactions of ``size`` bytes each: a Data.fs an export takes
    a while to copy and check."""
    import transaction
    import ZODB
    from persistent.mapping import PersistentMapping
    from ZODB.FileStorage import FileStorage
    db = ZODB.DB(FileStorage(fs_path, blob_dir=blob_dir),
                 large_record_size=2 * size)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        for i in range(n):
            conn.root()['big%d' % i] = PersistentMapping(
                data=os.urandom(size))
            tm.commit()
        conn.close()
    finally:
        db.close()
