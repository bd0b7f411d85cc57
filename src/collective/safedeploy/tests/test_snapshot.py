"""bin/snapshot with the copy backend, adopt, and bad inputs."""
import hashlib
import os
import shutil
import subprocess
import tempfile
import unittest

from collective.safedeploy.data import snapshot
from collective.safedeploy.data.layout import DataRoot
from collective.safedeploy.tests import support
from collective.safedeploy.tests import zodbsupport as zs
from collective.safedeploy.tests.snapshotsupport import BackendContract
from collective.safedeploy.tests.snapshotsupport import make_data_root
from collective.safedeploy.tests.snapshotsupport import run_snapshot


class CopyBackendTests(BackendContract, unittest.TestCase):

    backend = 'copy'

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-snapshot-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = make_data_root(os.path.join(self.dir, 'var'))
        self.options = dict(data=self.data, backend='copy')

    def snapshot_files(self, name):
        path = os.path.join(self.data, 'snapshots', name)
        return (os.path.join(path, 'filestorage', 'Data.fs'),
                os.path.join(path, 'blobstorage'))

    def test_blobs_are_hard_links_and_production_is_untouched(self):
        before = zs.hash_tree(os.path.join(self.data, 'generations', '1'))
        self.ok('s1')
        fs, blobs = self.snapshot_files('s1')
        from collective.safedeploy.data import copy as fscopy
        for rel in fscopy.blob_files(blobs):
            self.assertEqual(
                os.stat(os.path.join(blobs, rel)).st_ino,
                os.stat(os.path.join(self.current_blobs(), rel)).st_ino)
        self.assertEqual(
            zs.hash_tree(os.path.join(self.data, 'generations', '1')),
            before)

    def test_restore_hands_the_files_over_and_the_snapshot_stays(self):
        self.ok('s1')
        fs, blobs = self.snapshot_files('s1')
        size, snapshot_hash = os.path.getsize(fs), zs.hash_file(fs)
        before = zs.read_all(fs, blobs)
        zs.commit(self.current_fs(), self.current_blobs(), n=1)
        self.ok('--restore', 's1', '--discard-writes')
        # the restored generation holds the snapshot's files: its Data.fs
        # and its blob tree, nothing copied; the snapshot keeps a link to
        # every blob file
        self.assertEqual(os.stat(self.current_fs()).st_ino,
                         os.stat(fs).st_ino)
        self.assertFalse(os.path.exists(blobs))
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         before)
        # the site writes after it, replaces every blob and packs: the old
        # blob files leave the generation, and a new Data.fs replaces it
        zs.commit(self.current_fs(), self.current_blobs(), n=2)
        rewrite_blobs_and_pack(self.current_fs(), self.current_blobs())
        written = zs.read_all(self.current_fs(), self.current_blobs())
        self.assertNotEqual(written[1], before[1])
        # ... and the snapshot is still its first bytes, listed, restorable
        with open(fs, 'rb') as f:
            self.assertEqual(hashlib.sha256(f.read(size)).hexdigest(),
                             snapshot_hash)
        self.assertEqual([r['name'] for r in self.listing()], ['s1'])
        self.ok('--restore', 's1', '--discard-writes')
        # the second time: its recorded part of Data.fs is copied (the
        # file may be shared), its blob tree rebuilt from its links
        self.assertNotEqual(os.stat(self.current_fs()).st_ino,
                            os.stat(fs).st_ino)
        self.assertEqual(os.path.getsize(self.current_fs()), size)
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         before)
        # what the first restore's site wrote is kept in its generation
        root = DataRoot(self.data)
        first = root.generations.path(root.generations.good()[-2])
        self.assertEqual(zs.read_all(
            os.path.join(first, 'filestorage', 'Data.fs'),
            os.path.join(first, 'blobstorage')), written)
        # and a third restore, of a Data.fs nothing else holds any more
        # (the packed generation has its own), hands it over again
        self.ok('--restore', 's1', '--discard-writes')
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         before)

    def test_list_shows_what_only_the_snapshot_holds(self):
        from collective.safedeploy.data import copy as fscopy
        self.ok('s')
        fs, blobs = self.snapshot_files('s')
        paths = [os.path.join(blobs, rel)
                 for rel in fscopy.blob_files(blobs)]
        blob_bytes = sum(os.stat(p).st_blocks * 512 for p in paths)
        fs_bytes = os.stat(fs).st_blocks * 512
        row = self.listing()[0]
        # each file once, though the snapshot links every blob twice
        self.assertLess(row['size'], os.path.getsize(fs) + sum(
            os.path.getsize(p) for p in paths) + 65536)
        # its Data.fs copy, not the blobs production still has
        self.assertGreaterEqual(row['holds'], fs_bytes)
        self.assertLess(row['holds'], fs_bytes + blob_bytes)
        # once production replaced them and packed, they are its alone
        rewrite_blobs_and_pack(self.current_fs(), self.current_blobs())
        self.assertGreaterEqual(self.listing()[0]['holds'],
                                fs_bytes + blob_bytes)

    def test_a_damaged_snapshot_is_listed_and_refused(self):
        # a create does not wait for its copy to reach the disk: a power
        # cut just after it can leave the snapshot's Data.fs short.  --list
        # says so; a restore refuses it and changes nothing
        self.ok('s1')
        self.ok('s2')
        fs, blobs = self.snapshot_files('s1')
        with open(fs, 'r+b') as f:
            f.truncate(os.path.getsize(fs) - 100)
        self.assertEqual([(r['name'], r['state']) for r in self.listing()],
                         [('s1', 'damaged'), ('s2', 'ok')])
        self.assertIn('STATE', self.ok('--list'))
        before = zs.hash_tree(self.data)
        error = self.fails('--restore', 's1', '--discard-writes')
        self.assertIn('snapshot s1 is damaged', error)
        self.assertIn('restore another snapshot', error)
        self.assertEqual(zs.hash_tree(self.data), before)
        self.ok('--restore', 's2', '--discard-writes')

    def test_only_what_relies_on_a_snapshot_waits_for_the_disk(self):
        from unittest import mock
        from collective.safedeploy.core import fsutil
        synced = []

        class Recorded(fsutil.BackgroundSync):
            def __init__(self, path):
                synced.append(os.path.relpath(path, self.data))
                super().__init__(path)

        Recorded.data = self.data
        with mock.patch.object(fsutil, 'BackgroundSync', Recorded):
            snapshot.create(self.options, 'plain')
            self.assertEqual(synced, [])
            snapshot.take_for_release(self.options, 'v2')
            self.assertEqual(synced, [os.path.join(
                'snapshots', 'v2', 'filestorage', 'Data.fs')])
            del synced[:]
            snapshot.restore(self.options, 'plain')
            self.assertEqual(synced, [os.path.join(
                'generations', '2', 'filestorage', 'Data.fs')])

    def test_restore_of_a_snapshot_without_kept_links(self):
        # snapshots taken before they kept their own links are restored
        # the same way: the links are made first
        self.ok('old')
        fs, blobs = self.snapshot_files('old')
        before = zs.read_all(fs, blobs)
        shutil.rmtree(blobs + '.kept')
        self.ok('--restore', 'old')
        self.assertTrue(os.path.isdir(blobs + '.kept'))
        rewrite_blobs_and_pack(self.current_fs(), self.current_blobs())
        self.ok('--restore', 'old', '--discard-writes')
        self.assertEqual(zs.read_all(self.current_fs(), self.current_blobs()),
                         before)

    def test_forced_btrfs_on_another_filesystem(self):
        message = self.fails('--backend', 'btrfs')
        self.assertIn('needs data = %s to be a btrfs subvolume' % self.data,
                      message)

    def test_zfs_dataset_that_does_not_exist(self):
        message = self.fails('--backend', 'zfs', '--dataset',
                             'nosuchpool/site')
        self.assertTrue('no ZFS dataset nosuchpool/site' in message or
                        'zfs command is not installed' in message, message)

    def test_no_data_root(self):
        code, out, err = run_snapshot(data=os.path.join(self.dir, 'nope'))
        self.assertEqual(code, 1)
        self.assertIn('bin/snapshot --adopt', err)

    def test_help(self):
        p = subprocess.run([support.sys.executable, '-c',
                            'from collective.safedeploy.data.snapshot import main;'
                            'main(["--help"])'],
                           stdout=subprocess.PIPE, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn('--restore NAME', p.stdout)


class AdoptTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-adopt-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.data = os.path.join(self.dir, 'var')
        self.fs, self.blobs, self.last = zs.make_site_data(self.data)

    def test_adopt_moves_the_data_into_generation_1(self):
        before = zs.hash_tree(self.data)
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 0, err)
        self.assertEqual(os.readlink(os.path.join(self.data, 'current')),
                         'generations/1')
        moved = zs.hash_tree(os.path.join(self.data, 'generations', '1'),
                             ignore=('tmp', 'Data.fs.index', 'Data.fs.lock',
                                     'Data.fs.tmp',
                                     'safedeploy-manifest.json'))
        self.assertEqual(moved, before)
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 1)
        self.assertIn('nothing to adopt', err)

    def test_adopt_refuses_while_the_site_runs(self):
        holder = zs.Holder(self.fs, self.blobs)
        self.addCleanup(holder.stop)
        before = sorted(os.listdir(self.data))
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 1)
        self.assertIn('stop the site', err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertEqual(sorted(os.listdir(self.data)), before)

    def test_adopt_finishes_what_a_killed_adopt_left(self):
        root = snapshot.DataRoot(self.data)
        root.generations.stage('1', adopted_from=self.data)
        os.rename(os.path.join(self.data, 'filestorage'),
                  os.path.join(self.data, 'generations', '1', 'filestorage'))
        code, out, err = run_snapshot('--adopt', data=self.data)
        self.assertEqual(code, 0, err)
        fs = os.path.join(self.data, 'current', 'filestorage', 'Data.fs')
        self.assertEqual(zs.transaction_ids(fs)[-1], self.last)

    def test_nothing_to_adopt(self):
        code, out, err = run_snapshot('--adopt', data=os.path.join(
            self.dir, 'empty'))
        self.assertEqual(code, 1)
        self.assertIn('no ', err)


@support.skip_unless(os.geteuid() == 0, 'mounting a small tmpfs needs root')
class FullDiskTests(unittest.TestCase):

    def test_full_disk_changes_nothing(self):
        self.dir = tempfile.mkdtemp(prefix='safedeploy-full-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=6m', 'tmpfs',
                        self.dir], check=True)
        self.addCleanup(subprocess.run, ['umount', '-l', self.dir])
        data = make_data_root(os.path.join(self.dir, 'var'),
                              transactions=200, blobs=4)
        # fill the disk: less room left than one Data.fs
        free = os.statvfs(self.dir)
        size = os.path.getsize(os.path.join(
            data, 'current', 'filestorage', 'Data.fs'))
        with open(os.path.join(self.dir, 'filler'), 'wb') as f:
            f.write(b'x' * (free.f_bavail * free.f_frsize - size // 2))
        before = zs.hash_tree(data)
        code, out, err = run_snapshot('big', data=data)
        self.assertEqual(code, 1, out + err)
        self.assertIn('No space left on device', err)
        self.assertEqual(len(err.strip().splitlines()), 1)
        after = zs.hash_tree(data)
        ignore = lambda tree: {k: v for k, v in tree.items()
                               if not k.startswith('snapshots')}
        self.assertEqual(ignore(after), ignore(before))
        self.assertFalse(os.path.exists(os.path.join(
            data, 'snapshots', 'big')))
        code, out, err = run_snapshot('--list', '--json', data=data)
        self.assertEqual(out.strip(), '[]')


def rewrite_blobs_and_pack(fs_path, blob_dir):
    """A new revision of every blob, then a pack: the files of the old
    revisions are removed from ``blob_dir``."""
    import time
    import transaction
    import ZODB
    from ZODB.blob import Blob
    from ZODB.FileStorage import FileStorage
    db = ZODB.DB(FileStorage(fs_path, blob_dir=blob_dir,
                             pack_keep_old=False))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        for key in list(conn.root()['blobs'].keys()):
            blob = Blob()
            with blob.open('w') as f:
                f.write(b'rewritten ' + key.encode())
            conn.root()['blobs'][key] = blob
        tm.commit()
        conn.close()
        db.pack(time.time() + 1)
    finally:
        db.close()
    assert not os.path.exists(fs_path + '.old')
