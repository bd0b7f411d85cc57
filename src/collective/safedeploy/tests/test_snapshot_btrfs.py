"""The btrfs backend on a real loop-mounted btrfs image."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from collective.safedeploy.tests import support
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
        self.options = dict(data=self.data, backend='auto')

    def snapshot_files(self, name):
        with open(os.path.join(self.data, '.snapshots', name + '.json')) as f:
            generation = json.load(f)['generation']
        path = os.path.join(self.data, '.snapshots', name, 'generations',
                            generation)
        return (os.path.join(path, 'filestorage', 'Data.fs'),
                os.path.join(path, 'blobstorage'))

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

    def test_restore_links_blobs_the_generation_still_holds(self):
        from collective.safedeploy import zodbcopy
        self.ok('s')
        self.ok('--restore', 's')
        self.assertEqual(os.readlink(os.path.join(self.data, 'current')),
                         'generations/2')
        old = os.path.join(self.data, 'generations', '1', 'blobstorage')
        new = os.path.join(self.data, 'generations', '2', 'blobstorage')
        blobs = sorted(zodbcopy.blob_files(new))
        self.assertEqual(blobs, sorted(zodbcopy.blob_files(old)))
        for rel in blobs:
            self.assertEqual(os.stat(os.path.join(new, rel)).st_ino,
                             os.stat(os.path.join(old, rel)).st_ino)
