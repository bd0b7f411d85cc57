"""The btrfs backend on a real loop-mounted btrfs image."""
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from collective.safedeploy.core.store import MARKER
from collective.safedeploy.data.layout import DataRoot
from collective.safedeploy.tests import support
from collective.safedeploy.tests import zodbsupport as zs
from collective.safedeploy.tests.snapshotsupport import BackendContract
from collective.safedeploy.tests.snapshotsupport import make_data_root

CAN_BTRFS = (os.geteuid() == 0 and shutil.which('mkfs.btrfs') is not None
             and shutil.which('btrfs') is not None
             and os.path.exists('/dev/loop-control'))
WHY = ('btrfs tests need root, mkfs.btrfs/btrfs (apt: btrfs-progs) and '
       'loop devices')


def mount_btrfs(test, size='200M'):
    """A fresh btrfs mounted on a temporary directory; returns the path
    of a subvolume ``data`` in it.  Unmounted and removed on cleanup."""
    work = tempfile.mkdtemp(prefix='safedeploy-btrfs-')
    test.addCleanup(shutil.rmtree, work, True)
    image = os.path.join(work, 'btrfs.img')
    mnt = os.path.join(work, 'mnt')
    os.mkdir(mnt)
    subprocess.run(['truncate', '-s', size, image], check=True)
    subprocess.run(['mkfs.btrfs', '-q', image], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = subprocess.run(['mount', '-o', 'loop', image, mnt],
                       stderr=subprocess.PIPE, text=True)
    if p.returncode:
        raise unittest.SkipTest('cannot loop-mount btrfs: %s' % p.stderr)
    test.addCleanup(subprocess.run, ['umount', mnt])
    data = os.path.join(mnt, 'data')
    subprocess.run(['btrfs', 'subvolume', 'create', data], check=True,
                   stdout=subprocess.DEVNULL)
    return data


@support.skip_unless(CAN_BTRFS, WHY)
class BtrfsBackendTests(BackendContract, unittest.TestCase):

    backend = 'btrfs'

    def setUp(self):
        self.data = make_data_root(mount_btrfs(self))
        # keep every data generation: the tests count them
        self.options = dict(data=self.data, backend='auto',
                            keep_generations='0')

    def snapshot_files(self, name):
        path = self.snapshot_generation(name)
        return (os.path.join(path, 'filestorage', 'Data.fs'),
                os.path.join(path, 'blobstorage'))

    def snapshot_generation(self, name):
        """Where the data generation is in snapshot ``name``."""
        meta = self.meta(name)
        path = os.path.join(self.data, '.snapshots', name)
        if meta.get('of', 'root') == 'generation':
            return path
        return os.path.join(path, 'generations', meta['generation'])

    def write_meta(self, name, meta):
        """Change a snapshot's manifest (in its read-only subvolume)."""
        path = os.path.join(self.data, '.snapshots', name)
        subprocess.run(['btrfs', 'property', 'set', '-ts', path, 'ro',
                        'false'], check=True)
        with open(os.path.join(path, 'safedeploy-manifest.json'), 'w') as f:
            json.dump(meta, f)
        subprocess.run(['btrfs', 'property', 'set', '-ts', path, 'ro',
                        'true'], check=True)

    def meta(self, name):
        with open(os.path.join(self.data, '.snapshots', name,
                               'safedeploy-manifest.json')) as f:
            return json.load(f)

    def test_snapshots_are_read_only_subvolumes(self):
        self.ok('ro')
        out = subprocess.run(['btrfs', 'property', 'get', os.path.join(
            self.data, '.snapshots', 'ro'), 'ro'], stdout=subprocess.PIPE,
            text=True).stdout
        self.assertIn('ro=true', out)

    def test_not_a_subvolume(self):
        inner = os.path.join(self.data, 'plain')
        os.mkdir(inner)
        self.options['data'] = inner
        self.assertIn('btrfs subvolume', self.fails('--backend', 'btrfs'))

    # -- restore: a writable snapshot of the snapshot ------------------------

    def generation(self, name):
        return os.path.join(self.data, 'generations', name)

    def is_subvolume(self, path):
        return os.stat(path).st_ino == 256

    def check_restore(self, name, expected, replaced, discarded=0):
        """Restore snapshot ``name`` (holding ``expected``) over data
        generation ``replaced`` (holding ``discarded`` transactions after
        it); check the result; return the new generation's name."""
        kept = zs.hash_tree(self.generation(replaced))
        snapshot = zs.hash_tree(os.path.join(self.data, '.snapshots', name))
        self.ok('--restore', name, '--discard-writes')
        root = DataRoot(self.data)
        new = root.current_name()
        self.assertNotEqual(new, replaced)
        path = self.generation(new)
        # a complete generation, a subvolume of its own, laid out like any
        # other and holding exactly the snapshot's data
        self.assertTrue(root.generations.is_complete(new))
        self.assertTrue(self.is_subvolume(path))
        self.assertEqual(
            sorted(n for n in os.listdir(path) if not n.startswith('.')),
            ['blobstorage', 'filestorage', 'safedeploy-manifest.json'])
        self.assertEqual(zs.read_all(self.current_fs(),
                                     self.current_blobs()), expected)
        self.assertEqual(zs.transaction_ids(self.current_fs())[-1].hex(),
                         self.meta(name)['last_tid'])
        manifest = root.generations.manifest(new)
        self.assertEqual(manifest['snapshot'], name)
        self.assertEqual(manifest['replaced'], replaced)
        self.assertEqual(manifest['discarded'], discarded)
        # the replaced generation is kept as it was, the snapshot too
        self.assertEqual(zs.hash_tree(self.generation(replaced)), kept)
        self.assertIn(name, [r['name'] for r in self.listing()])
        # the site writes to the restored generation; the snapshot does
        # not change
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        self.assertEqual(zs.hash_tree(os.path.join(
            self.data, '.snapshots', name)), snapshot)
        return new

    def test_restore_of_a_root_snapshot(self):
        # generation 1 (made by --adopt) is a plain directory: the
        # snapshot is of the data root
        before = zs.read_all(self.current_fs(), self.current_blobs())
        # what else the data root holds is no part of the generation
        os.mkdir(os.path.join(self.data, 'log'))
        with open(os.path.join(self.data, 'log', 'site.log'), 'w') as f:
            f.write('started\n')
        self.ok('r')
        self.assertEqual(self.meta('r')['of'], 'root')
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        second = self.check_restore('r', before, '1', discarded=2)
        self.assertEqual(second, '2')
        # restorable again, over the generation it made
        third = self.check_restore('r', before, second, discarded=2)
        self.assertEqual(third, '3')
        self.assertEqual(
            [r['name'] for r in DataRoot(self.data).generations.history()],
            ['1', '2', '3'])

    def test_restore_of_old_details_without_of(self):
        before = zs.read_all(self.current_fs(), self.current_blobs())
        self.ok('old')
        meta = self.meta('old')
        del meta['of']
        self.write_meta('old', meta)
        self.check_restore('old', before, '1')

    def test_snapshot_and_restore_of_a_restored_generation(self):
        self.ok('r')
        self.check_restore('r', zs.read_all(self.current_fs(),
                                            self.current_blobs()), '1')
        # generation 2 is a subvolume: the snapshot is of it alone
        state = zs.read_all(self.current_fs(), self.current_blobs())
        self.ok('g')
        meta = self.meta('g')
        self.assertEqual((meta['of'], meta['generation']), ('generation', '2'))
        inside = os.path.join(self.data, '.snapshots', 'g')
        self.assertTrue(os.path.isfile(os.path.join(
            inside, 'filestorage', 'Data.fs')))
        self.assertFalse(os.path.exists(os.path.join(inside, 'generations')))
        # it was verified like any other (its blobs after the snapshot the
        # generation was restored from)
        self.assertEqual(meta['storages'][0]['checked_blobs'], 2)
        fs, blobs = self.snapshot_files('g')
        self.assertEqual(zs.read_all(fs, blobs), state)
        # its size is the generation's, nothing else
        row = [r for r in self.listing() if r['name'] == 'g'][0]
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, files in os.walk(inside) for f in files)
        self.assertEqual(row['size'], size)
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        third = self.check_restore('g', state, '2', discarded=1)
        # and a snapshot of that one, restored too
        state = zs.read_all(self.current_fs(), self.current_blobs())
        self.ok('h')
        self.assertEqual(self.meta('h')['generation'], third)
        self.check_restore('h', state, third)
        # the older snapshots still restore
        self.check_restore('r', self.snapshot_state('r'), '4', discarded=6)

    def snapshot_state(self, name):
        return zs.read_all(*self.snapshot_files(name))

    def test_restore_cuts_a_transaction_being_committed(self):
        # a snapshot taken while the site was committing a transaction (voted,
        # not finished) holds its unfinished record: the restored Data.fs
        # ends before it
        from ZODB.Connection import TransactionMetaData
        from ZODB.FileStorage import FileStorage
        state = zs.read_all(self.current_fs(), self.current_blobs())
        storage = FileStorage(self.current_fs(), blob_dir=self.current_blobs())
        try:
            t = TransactionMetaData()
            storage.tpc_begin(t)
            storage.store(storage.new_oid(), b'\0' * 8, b'unfinished', '', t)
            storage.tpc_vote(t)
            self.ok('voted')
            storage.tpc_abort(t)
        finally:
            storage.close()
        fs, _ = self.snapshot_files('voted')
        end = self.meta('voted')['storages'][0]['copy']['end']
        self.assertGreater(os.path.getsize(fs), end)
        self.ok('--restore', 'voted')
        self.assertEqual(os.path.getsize(self.current_fs()), end)
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         state)
        zs.commit(self.current_fs(), self.current_blobs())
        self.assertEqual([n for n in os.listdir(os.path.dirname(
            self.current_fs())) if '.tr' in n], [])

    def test_restore_refuses_a_snapshot_that_changed(self):
        self.ok('r')
        meta = self.meta('r')
        self.original = json.loads(json.dumps(meta))
        meta['storages'][0]['last_tid'] = '00' * 8
        meta['storages'][0]['copy']['last_tid'] = '00' * 8
        meta['last_tid'] = '00' * 8
        self.write_meta('r', meta)
        message = self.fails('--restore', 'r', '--discard-writes')
        self.assertIn('as recorded for snapshot r', message)
        root = DataRoot(self.data)
        self.assertEqual(root.current_name(), '1')
        self.assertFalse(root.generations.is_complete('2'))
        self.write_meta('r', self.original)
        # the next run removes the failed generation (and its subvolume)
        self.ok('--restore', 'r', '--discard-writes')
        self.assertEqual(root.current_name(), '3')
        self.assertEqual(self.subvolumes(), ['data', 'data/.snapshots/r',
                                             'data/generations/3'])

    def subvolumes(self):
        top = os.path.dirname(self.data)
        out = subprocess.run(['btrfs', 'subvolume', 'list', top],
                             stdout=subprocess.PIPE, text=True,
                             check=True).stdout
        return sorted(line.split(' path ')[1] for line in out.splitlines())

    def test_prune_and_discard_subvolume_generations(self):
        self.ok('r')
        for i in range(3):
            self.ok('--restore', 'r', '--discard-writes')
        gens = DataRoot(self.data).generations
        self.assertEqual(gens.current_name(), '4')
        self.assertEqual(gens.prune(keep=3), ['1'])
        gens.discard('2', 'test')
        self.assertEqual(gens.on_disk(), ['3', '4'])
        self.assertEqual(self.subvolumes(), [
            'data', 'data/.snapshots/r', 'data/generations/3',
            'data/generations/4'])

    def test_copies_from_a_subvolume_generation(self):
        # hard links cannot cross subvolumes: blobs are cloned
        self.ok('r')
        self.ok('--restore', 'r')
        content = zs.read_all(self.current_fs(), self.current_blobs())
        root = DataRoot(self.data)
        with root.lock():
            name = root.new_generation(flip=True)
        self.assertFalse(self.is_subvolume(self.generation(name)))
        self.assertEqual(zs.read_all(self.current_fs(),
                                     self.current_blobs()), content)
        # evolve-copy's first step: a copy of production's generation
        from collective.safedeploy.evolve import procedure
        self.ok('--restore', 'r')
        run = procedure.EvolveCopy(self.data, 'evolve.module:evolve',
                                    progress=False, out=io.StringIO())
        run.source = DataRoot(self.data).current_name()
        run.prepare()
        copy = self.generation(run.name)
        self.assertEqual(
            zs.read_all(os.path.join(copy, 'filestorage', 'Data.fs'),
                        os.path.join(copy, 'blobstorage')), content)


SCRIPT = ('import sys; from collective.safedeploy.data.snapshot import main; '
          'sys.exit(main(sys.argv[2:], data=sys.argv[1], backend="btrfs", '
          'keep_generations="0"))')
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


@support.skip_unless(CAN_BTRFS, WHY)
class BtrfsRestoreKillTests(unittest.TestCase):
    """SIGKILL at random moments of restores of both kinds of snapshot."""

    rounds = 12

    def setUp(self):
        self.data = make_data_root(mount_btrfs(self), transactions=10,
                                   blobs=10)
        self.root = DataRoot(self.data)
        self.random = random.Random(os.environ.get('SAFEDEPLOY_SEED'))

    def snapshot(self, *argv):
        p = subprocess.run([sys.executable, '-c', SCRIPT, self.data] +
                           list(argv), env=dict(os.environ, PYTHONPATH=SRC),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)

    def state(self):
        current = os.path.join(self.data, 'current')
        return zs.read_all(os.path.join(current, 'filestorage', 'Data.fs'),
                           os.path.join(current, 'blobstorage'))

    def complete(self):
        gens = self.root.generations
        return {name: zs.hash_tree(gens.path(name))
                for name in gens.on_disk() if gens.is_complete(name)}

    def start_restore(self, name):
        """A restore in a process of its own, returned once it holds the
        data root's lock (the restore proper begins)."""
        p = subprocess.Popen(
            [sys.executable, '-c', SCRIPT, self.data, '--restore', name,
             '--discard-writes'], env=dict(os.environ, PYTHONPATH=SRC),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lock = os.path.join(self.root.generations.directory, '.lock')
        while p.poll() is None:
            try:
                with open(lock) as f:
                    if f.read().split()[:1] == [str(p.pid)]:
                        break
            except OSError:
                pass
            time.sleep(0.001)
        return p

    def kill_restores(self, name, states):
        p = self.start_restore(name)
        t = time.time()
        self.assertEqual(p.wait(), 0)
        duration = time.time() - t
        for i in range(self.rounds):
            before = self.complete()
            p = self.start_restore(name)
            time.sleep(self.random.uniform(0, duration))
            p.send_signal(signal.SIGKILL)
            p.wait()
            current = self.root.current_name()
            self.assertTrue(self.root.generations.is_complete(current))
            self.assertIn(self.state(), states)
            after = self.complete()
            for gen, tree in before.items():
                self.assertEqual(after[gen], tree, gen)
        # the next run cleans up and restores
        self.snapshot('--restore', name, '--discard-writes')
        self.assertEqual(self.state(), states[-1])
        gens = self.root.generations
        self.assertEqual([n for n in gens.on_disk()
                          if not gens.is_complete(n)], [])
        self.assertEqual([n for n in os.listdir(gens.directory)
                          if n.startswith('.') and n not in (
                              '.journal', '.lock', MARKER)], [])
        top = os.path.dirname(self.data)
        out = subprocess.run(['btrfs', 'subvolume', 'list', '-o',
                              self.data], stdout=subprocess.PIPE,
                             text=True, check=True).stdout
        paths = sorted(os.path.join(top, line.split(' path ')[1])
                       for line in out.splitlines())
        expected = [p for p in (os.path.join(gens.directory, n)
                                for n in gens.on_disk())
                    if os.stat(p).st_ino == 256]
        expected += [os.path.join(self.data, '.snapshots', r)
                     for r in os.listdir(os.path.join(self.data,
                                                      '.snapshots'))
                     if not r.startswith('.')]
        self.assertEqual(paths, sorted(expected))

    def test_kill_restore_of_a_root_snapshot(self):
        self.snapshot('r')
        state = self.state()
        zs.commit(os.path.join(self.data, 'current', 'filestorage',
                               'Data.fs'),
                  os.path.join(self.data, 'current', 'blobstorage'))
        self.kill_restores('r', [self.state(), state])

    def test_kill_restore_of_a_generation_snapshot(self):
        self.snapshot('r')
        self.snapshot('--restore', 'r')
        state = self.state()
        self.snapshot('g')
        zs.commit(os.path.join(self.data, 'current', 'filestorage',
                               'Data.fs'),
                  os.path.join(self.data, 'current', 'blobstorage'))
        self.kill_restores('g', [self.state(), state])
